//! Alerts read back into tables: the `diaSource` and `diaObject` records of a run of alert
//! bodies become two Arrow record batches (one row per alert, the columns of the schema's
//! records, every one nullable), which the filter service queries and the VOEvent writer
//! reads. Everything else in an alert (histories, cutouts) is stepped over.
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::avro::{AvroError, AvroType, RecordSchema};
use super::packet::{AlertSchema, AlertTable};

/// Where decoding stopped and why.
fn bad(message: impl Into<String>) -> AvroError {
    AvroError::Field {
        field: "alert".into(),
        message: message.into(),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], AvroError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| bad("the alert ends too early"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn long(&mut self) -> Result<i64, AvroError> {
        let (mut z, mut shift) = (0u64, 0u32);
        loop {
            let byte = self.take(1)?[0];
            if shift > 63 {
                return Err(bad("an integer is too long"));
            }
            z |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn len(&mut self) -> Result<usize, AvroError> {
        usize::try_from(self.long()?).map_err(|_| bad("a negative length"))
    }

    /// The branch of a union (or the type itself).
    fn resolve<'t>(&mut self, ty: &'t AvroType) -> Result<&'t AvroType, AvroError> {
        match ty {
            AvroType::Union(b) => {
                let i = self.long()?;
                usize::try_from(i)
                    .ok()
                    .and_then(|i| b.get(i))
                    .ok_or_else(|| bad(format!("union branch {i} does not exist")))
            }
            t => Ok(t),
        }
    }

    fn skip(&mut self, ty: &AvroType) -> Result<(), AvroError> {
        match self.resolve(ty)? {
            AvroType::Null => {}
            AvroType::Boolean => drop(self.take(1)?),
            AvroType::Int | AvroType::Long => drop(self.long()?),
            AvroType::Float => drop(self.take(4)?),
            AvroType::Double => drop(self.take(8)?),
            AvroType::Bytes | AvroType::String => {
                let n = self.len()?;
                self.take(n)?;
            }
            AvroType::Array(items) => loop {
                let n = self.long()?;
                if n == 0 {
                    break;
                }
                if n < 0 {
                    // A block with its byte size: skip it whole.
                    let size = self.len()?;
                    self.take(size)?;
                    continue;
                }
                for _ in 0..n {
                    self.skip(items)?;
                }
            },
            AvroType::Record(r) => {
                for f in &r.fields {
                    self.skip(&f.ty)?;
                }
            }
            AvroType::Union(_) => return Err(bad("a union inside a union")),
        }
        Ok(())
    }
}

/// One column being filled.
enum Column {
    Bool(BooleanBuilder),
    Int(Int32Builder),
    Long(Int64Builder),
    Float(Float32Builder),
    Double(Float64Builder),
    Text(StringBuilder),
}

impl Column {
    fn null(&mut self) {
        match self {
            Column::Bool(b) => b.append_null(),
            Column::Int(b) => b.append_null(),
            Column::Long(b) => b.append_null(),
            Column::Float(b) => b.append_null(),
            Column::Double(b) => b.append_null(),
            Column::Text(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Bool(mut b) => Arc::new(b.finish()),
            Column::Int(mut b) => Arc::new(b.finish()),
            Column::Long(mut b) => Arc::new(b.finish()),
            Column::Float(mut b) => Arc::new(b.finish()),
            Column::Double(mut b) => Arc::new(b.finish()),
            Column::Text(mut b) => Arc::new(b.finish()),
        }
    }
}

/// The primitive a flat record's field holds, null aside.
fn primitive(ty: &AvroType) -> Option<&AvroType> {
    match ty {
        AvroType::Union(b) => {
            let mut non_null = b.iter().filter(|t| **t != AvroType::Null);
            let t = non_null.next()?;
            non_null.next().is_none().then_some(t)
        }
        t => Some(t),
    }
}

/// The Arrow schema of a flat record: fields of records, arrays and bytes are left out.
pub fn arrow_schema(record: &RecordSchema) -> SchemaRef {
    Arc::new(Schema::new(
        record
            .fields
            .iter()
            .filter_map(|f| {
                let t = match primitive(&f.ty)? {
                    AvroType::Boolean => DataType::Boolean,
                    AvroType::Int => DataType::Int32,
                    AvroType::Long => DataType::Int64,
                    AvroType::Float => DataType::Float32,
                    AvroType::Double => DataType::Float64,
                    AvroType::String => DataType::Utf8,
                    _ => return None,
                };
                Some(Field::new(&f.name, t, true))
            })
            .collect::<Vec<_>>(),
    ))
}

/// Fills the columns of one flat record.
struct Table<'s> {
    record: &'s RecordSchema,
    schema: SchemaRef,
    /// Per field of the record, its column (None: stepped over).
    columns: Vec<Option<Column>>,
}

impl<'s> Table<'s> {
    fn new(record: &'s RecordSchema, rows: usize) -> Self {
        let schema = arrow_schema(record);
        let columns = record
            .fields
            .iter()
            .map(|f| {
                schema
                    .field_with_name(&f.name)
                    .ok()
                    .map(|c| match c.data_type() {
                        DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(rows)),
                        DataType::Int32 => Column::Int(Int32Builder::with_capacity(rows)),
                        DataType::Int64 => Column::Long(Int64Builder::with_capacity(rows)),
                        DataType::Float32 => Column::Float(Float32Builder::with_capacity(rows)),
                        DataType::Float64 => Column::Double(Float64Builder::with_capacity(rows)),
                        _ => Column::Text(StringBuilder::with_capacity(rows, rows * 8)),
                    })
            })
            .collect();
        Self {
            record,
            schema,
            columns,
        }
    }

    fn null_row(&mut self) {
        self.columns.iter_mut().flatten().for_each(Column::null);
    }

    fn read_row(&mut self, r: &mut Reader) -> Result<(), AvroError> {
        for (f, col) in self.record.fields.iter().zip(&mut self.columns) {
            let Some(col) = col else {
                r.skip(&f.ty)?;
                continue;
            };
            match (r.resolve(&f.ty)?, col) {
                (AvroType::Null, c) => c.null(),
                (AvroType::Boolean, Column::Bool(b)) => b.append_value(r.take(1)?[0] != 0),
                (AvroType::Int, Column::Int(b)) => b.append_value(
                    i32::try_from(r.long()?).map_err(|_| bad(format!("{}: not an int", f.name)))?,
                ),
                (AvroType::Long, Column::Long(b)) => b.append_value(r.long()?),
                (AvroType::Float, Column::Float(b)) => {
                    b.append_value(f32::from_le_bytes(r.take(4)?.try_into().unwrap_or([0; 4])))
                }
                (AvroType::Double, Column::Double(b)) => {
                    b.append_value(f64::from_le_bytes(r.take(8)?.try_into().unwrap_or([0; 8])))
                }
                (AvroType::String, Column::Text(b)) => {
                    let n = r.len()?;
                    let s = std::str::from_utf8(r.take(n)?)
                        .map_err(|_| bad(format!("{}: not UTF-8", f.name)))?;
                    b.append_value(s);
                }
                _ => return Err(bad(format!("{}: unexpected type", f.name))),
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<RecordBatch, AvroError> {
        let columns: Vec<ArrayRef> = self
            .columns
            .into_iter()
            .flatten()
            .map(Column::finish)
            .collect();
        RecordBatch::try_new(self.schema, columns).map_err(|e| bad(e.to_string()))
    }
}

/// The `diaSource` and `diaObject` records of `bodies` (alert datums, no framing) as two
/// batches with one row per alert, in order; an alert without a DIAObject has a null row.
pub fn alert_tables(bodies: &[&[u8]]) -> Result<(RecordBatch, RecordBatch), AvroError> {
    let schema = AlertSchema::v11_1()?;
    let alert = schema.alert_record();
    let mut sources = Table::new(schema.record(AlertTable::DiaSource), bodies.len());
    let mut objects = Table::new(schema.record(AlertTable::DiaObject), bodies.len());
    for body in bodies {
        let mut r = Reader { b: body, at: 0 };
        let mut has_object = false;
        for f in &alert.fields {
            match f.name.as_str() {
                "diaSource" => match r.resolve(&f.ty)? {
                    AvroType::Record(_) => sources.read_row(&mut r)?,
                    _ => return Err(bad("an alert without its diaSource")),
                },
                "diaObject" => {
                    if let AvroType::Record(_) = r.resolve(&f.ty)? {
                        objects.read_row(&mut r)?;
                        has_object = true;
                    }
                }
                _ => r.skip(&f.ty)?,
            }
        }
        if !has_object {
            objects.null_row();
        }
        if r.at != body.len() {
            return Err(bad(format!("{} bytes after the alert", body.len() - r.at)));
        }
    }
    Ok((sources.finish()?, objects.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_garbled_alerts_are_errors_not_panics() {
        for body in [
            &[][..],
            &[0x02][..],
            &[0xff; 20][..],
            &[0x02, 0x00, 0x00, 0x09][..],
        ] {
            assert!(alert_tables(&[body]).is_err());
        }
    }
}
