//! Apache Avro 1.11, as much of it as alert packets need: schemas parsed from their JSON
//! (named records with namespaces, unions, arrays, primitives with logical types), the
//! binary encoding of Arrow rows under a record schema (columns matched to fields by name),
//! and object container files (header with the schema, blocks of datums, sync markers).
//!
//! Rows are encoded once and kept as bytes: a DIASource's row is written into its own alert
//! and, unchanged, into the `prvDiaSources` of later ones.
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, LargeStringArray, RecordBatch,
    StringArray, StringViewArray,
};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AvroError {
    #[error("Avro schema: {0}")]
    Schema(String),
    #[error("field {field}: {message}")]
    Field { field: String, message: String },
}

/// An Avro type; named records are shared.
#[derive(Debug, Clone, PartialEq)]
pub enum AvroType {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(Box<AvroType>),
    Union(Vec<AvroType>),
    Record(Arc<RecordSchema>),
}

impl AvroType {
    /// Whether null is one of the union's branches (the field may be left out).
    pub fn nullable(&self) -> bool {
        matches!(self, AvroType::Union(b) if b.contains(&AvroType::Null))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordSchema {
    /// Full name: namespace.name.
    pub name: String,
    pub fields: Vec<FieldSchema>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldSchema {
    pub name: String,
    pub ty: AvroType,
}

/// Named types parsed so far, by full name, with their JSON definitions (to write
/// self-contained schemas into container files).
#[derive(Debug, Default)]
pub struct Names {
    records: HashMap<String, (Arc<RecordSchema>, serde_json::Value)>,
}

impl Names {
    /// Parses a schema document (one named record) and keeps it for later references.
    pub fn parse(&mut self, json: &str) -> Result<Arc<RecordSchema>, AvroError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| AvroError::Schema(e.to_string()))?;
        match self.parse_type(&value, "")? {
            AvroType::Record(r) => Ok(r),
            other => Err(AvroError::Schema(format!(
                "the document is a {other:?}, not a record"
            ))),
        }
    }

    pub fn record(&self, full_name: &str) -> Option<Arc<RecordSchema>> {
        self.records.get(full_name).map(|(r, _)| r.clone())
    }

    fn parse_type(
        &mut self,
        v: &serde_json::Value,
        namespace: &str,
    ) -> Result<AvroType, AvroError> {
        use serde_json::Value;
        match v {
            Value::String(name) => self.named(name, namespace),
            Value::Array(branches) => {
                let branches = branches
                    .iter()
                    .map(|b| self.parse_type(b, namespace))
                    .collect::<Result<Vec<_>, _>>()?;
                if branches.iter().any(|b| matches!(b, AvroType::Union(_))) {
                    return Err(AvroError::Schema("a union directly inside a union".into()));
                }
                Ok(AvroType::Union(branches))
            }
            Value::Object(o) => {
                let kind = o
                    .get("type")
                    .ok_or_else(|| AvroError::Schema(format!("a type without \"type\": {v}")))?;
                match kind.as_str() {
                    Some("record") => {
                        let name = o
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| AvroError::Schema("a record without a name".into()))?;
                        let ns = o
                            .get("namespace")
                            .and_then(Value::as_str)
                            .unwrap_or(namespace);
                        let full = full_name(name, ns);
                        let inner_ns = full.rsplit_once('.').map_or("", |(n, _)| n).to_string();
                        let fields = o
                            .get("fields")
                            .and_then(Value::as_array)
                            .ok_or_else(|| AvroError::Schema(format!("record {full}: no fields")))?
                            .iter()
                            .map(|f| {
                                let name =
                                    f.get("name").and_then(Value::as_str).ok_or_else(|| {
                                        AvroError::Schema(format!(
                                            "record {full}: a field without a name"
                                        ))
                                    })?;
                                let ty = f.get("type").ok_or_else(|| {
                                    AvroError::Schema(format!("{full}.{name}: no type"))
                                })?;
                                Ok(FieldSchema {
                                    name: name.to_string(),
                                    ty: self.parse_type(ty, &inner_ns)?,
                                })
                            })
                            .collect::<Result<Vec<_>, AvroError>>()?;
                        let record = Arc::new(RecordSchema {
                            name: full.clone(),
                            fields,
                        });
                        let mut definition = v.clone();
                        // Written with its full name, so it reads the same wherever it lands.
                        if let Some(d) = definition.as_object_mut() {
                            d.insert("name".into(), Value::String(full.clone()));
                            d.remove("namespace");
                        }
                        if self
                            .records
                            .insert(full.clone(), (record.clone(), definition))
                            .is_some()
                        {
                            return Err(AvroError::Schema(format!("{full} is defined twice")));
                        }
                        Ok(AvroType::Record(record))
                    }
                    Some("array") => {
                        let items = o
                            .get("items")
                            .ok_or_else(|| AvroError::Schema("an array without items".into()))?;
                        Ok(AvroType::Array(Box::new(
                            self.parse_type(items, namespace)?,
                        )))
                    }
                    // A primitive, perhaps with a logical type (timestamp-micros is a long).
                    Some(p) => self.named(p, namespace),
                    None => self.parse_type(kind, namespace),
                }
            }
            other => Err(AvroError::Schema(format!("not a type: {other}"))),
        }
    }

    fn named(&self, name: &str, namespace: &str) -> Result<AvroType, AvroError> {
        Ok(match name {
            "null" => AvroType::Null,
            "boolean" => AvroType::Boolean,
            "int" => AvroType::Int,
            "long" => AvroType::Long,
            "float" => AvroType::Float,
            "double" => AvroType::Double,
            "bytes" => AvroType::Bytes,
            "string" => AvroType::String,
            _ => {
                let full = full_name(name, namespace);
                let found = self
                    .records
                    .get(&full)
                    .or_else(|| self.records.get(name))
                    .ok_or_else(|| AvroError::Schema(format!("unknown type {name}")))?;
                AvroType::Record(found.0.clone())
            }
        })
    }

    /// The JSON of `record` with every named type defined where it is first used, as an
    /// object container file's header needs it.
    pub fn self_contained(&self, record: &str) -> Result<String, AvroError> {
        let (_, def) = self
            .records
            .get(record)
            .ok_or_else(|| AvroError::Schema(format!("unknown type {record}")))?;
        let mut defined = std::collections::HashSet::new();
        defined.insert(record.to_string());
        let expanded = self.expand(def, &mut defined);
        Ok(expanded.to_string())
    }

    fn expand(
        &self,
        v: &serde_json::Value,
        defined: &mut std::collections::HashSet<String>,
    ) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(name) => match self.records.get(name.as_str()) {
                Some((_, def)) if defined.insert(name.clone()) => self.expand(def, defined),
                _ => v.clone(),
            },
            Value::Array(items) => {
                Value::Array(items.iter().map(|i| self.expand(i, defined)).collect())
            }
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| {
                        // Only types hold names; docs and defaults are left as they are.
                        let x = match k.as_str() {
                            "type" | "items" | "fields" => self.expand(x, defined),
                            _ => x.clone(),
                        };
                        (k.clone(), x)
                    })
                    .collect(),
            ),
            _ => v.clone(),
        }
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// Avro's variable-length zig-zag integer.
pub fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// A union's branch for a null value.
pub fn write_null_branch(ty: &AvroType, field: &str, out: &mut Vec<u8>) -> Result<(), AvroError> {
    match ty {
        AvroType::Null => Ok(()),
        AvroType::Union(b) => match b.iter().position(|t| *t == AvroType::Null) {
            Some(i) => {
                write_long(out, i as i64);
                Ok(())
            }
            None => Err(not_nullable(field)),
        },
        _ => Err(not_nullable(field)),
    }
}

fn not_nullable(field: &str) -> AvroError {
    AvroError::Field {
        field: field.into(),
        message: "has no value and may not be null".into(),
    }
}

/// The (union index, type) a non-null value of `ty` is written as: `accept` says which
/// types the value can take, the first accepted branch wins.
pub fn branch<'t>(
    ty: &'t AvroType,
    field: &str,
    accept: impl Fn(&AvroType) -> bool,
) -> Result<(Option<usize>, &'t AvroType), AvroError> {
    match ty {
        AvroType::Union(b) => b
            .iter()
            .enumerate()
            .find(|(_, t)| accept(t))
            .map(|(i, t)| (Some(i), t)),
        t if accept(t) => Some((None, t)),
        _ => None,
    }
    .ok_or_else(|| AvroError::Field {
        field: field.into(),
        message: format!("no branch of {ty:?} takes this value"),
    })
}

/// How one column is written under its field's type.
enum Writer<'a> {
    /// No such column: always null.
    Absent,
    Bool(Option<usize>, &'a BooleanArray),
    /// Integers written as int or long.
    Int(Option<usize>, IntColumn<'a>),
    /// Reals written as float or double.
    Real(Option<usize>, RealColumn<'a>, bool),
    Text(Option<usize>, TextColumn<'a>),
    Bytes(Option<usize>, &'a BinaryArray),
}

enum IntColumn<'a> {
    I8(&'a arrow::array::Int8Array),
    I16(&'a arrow::array::Int16Array),
    I32(&'a arrow::array::Int32Array),
    I64(&'a arrow::array::Int64Array),
    /// Microseconds since 1970 (Avro's timestamp-micros is a long).
    Micros(&'a arrow::array::TimestampMicrosecondArray),
}

impl IntColumn<'_> {
    fn get(&self, i: usize) -> i64 {
        match self {
            IntColumn::I8(a) => a.value(i).into(),
            IntColumn::I16(a) => a.value(i).into(),
            IntColumn::I32(a) => a.value(i).into(),
            IntColumn::I64(a) => a.value(i),
            IntColumn::Micros(a) => a.value(i),
        }
    }
}

enum RealColumn<'a> {
    F32(&'a arrow::array::Float32Array),
    F64(&'a arrow::array::Float64Array),
}

enum TextColumn<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl TextColumn<'_> {
    fn get(&self, i: usize) -> &str {
        match self {
            TextColumn::Utf8(a) => a.value(i),
            TextColumn::Large(a) => a.value(i),
            TextColumn::View(a) => a.value(i),
        }
    }
}

/// Encodes the rows of one record batch under a record schema: each field takes the column
/// of its name; a field without a column, or a null cell, is written as null, which only a
/// nullable field may be. Column types are checked once, before any row.
pub struct RowEncoder<'a> {
    fields: Vec<(&'a FieldSchema, Writer<'a>, Option<&'a ArrayRef>)>,
}

impl<'a> RowEncoder<'a> {
    pub fn new(record: &'a RecordSchema, batch: &'a RecordBatch) -> Result<Self, AvroError> {
        let fields = record
            .fields
            .iter()
            .map(|f| {
                let Some(col) = batch.column_by_name(&f.name) else {
                    if !f.ty.nullable() {
                        return Err(AvroError::Field {
                            field: f.name.clone(),
                            message: "is required and the table has no such column".into(),
                        });
                    }
                    return Ok((f, Writer::Absent, None));
                };
                let wrong = |what: &str| AvroError::Field {
                    field: f.name.clone(),
                    message: format!("a {} column cannot be written as {what}", col.data_type()),
                };
                let writer = match col.data_type() {
                    DataType::Boolean => Writer::Bool(
                        branch(&f.ty, &f.name, |t| *t == AvroType::Boolean)?.0,
                        col.as_boolean(),
                    ),
                    DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                        let wide = matches!(col.data_type(), DataType::Int64);
                        let (b, _) = branch(&f.ty, &f.name, |t| {
                            *t == AvroType::Long || (*t == AvroType::Int && !wide)
                        })
                        .map_err(|_| wrong("int or long"))?;
                        Writer::Int(
                            b,
                            match col.data_type() {
                                DataType::Int8 => IntColumn::I8(col.as_primitive::<Int8Type>()),
                                DataType::Int16 => IntColumn::I16(col.as_primitive::<Int16Type>()),
                                DataType::Int32 => IntColumn::I32(col.as_primitive::<Int32Type>()),
                                _ => IntColumn::I64(col.as_primitive::<Int64Type>()),
                            },
                        )
                    }
                    DataType::Timestamp(TimeUnit::Microsecond, _) => Writer::Int(
                        branch(&f.ty, &f.name, |t| *t == AvroType::Long)
                            .map_err(|_| wrong("a timestamp (long)"))?
                            .0,
                        IntColumn::Micros(col.as_primitive::<TimestampMicrosecondType>()),
                    ),
                    DataType::Float32 | DataType::Float64 => {
                        let (b, t) = branch(&f.ty, &f.name, |t| {
                            matches!(t, AvroType::Float | AvroType::Double)
                        })
                        .map_err(|_| wrong("float or double"))?;
                        let column = if *col.data_type() == DataType::Float32 {
                            RealColumn::F32(col.as_primitive::<Float32Type>())
                        } else {
                            RealColumn::F64(col.as_primitive::<Float64Type>())
                        };
                        Writer::Real(b, column, *t == AvroType::Double)
                    }
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                        let (b, _) = branch(&f.ty, &f.name, |t| *t == AvroType::String)
                            .map_err(|_| wrong("string"))?;
                        Writer::Text(
                            b,
                            match col.data_type() {
                                DataType::Utf8 => TextColumn::Utf8(col.as_string::<i32>()),
                                DataType::LargeUtf8 => TextColumn::Large(col.as_string::<i64>()),
                                _ => TextColumn::View(col.as_string_view()),
                            },
                        )
                    }
                    DataType::Binary => {
                        let (b, _) = branch(&f.ty, &f.name, |t| *t == AvroType::Bytes)
                            .map_err(|_| wrong("bytes"))?;
                        Writer::Bytes(b, col.as_binary::<i32>())
                    }
                    other => return Err(wrong(&format!("Avro (type {other})"))),
                };
                Ok((f, writer, Some(col)))
            })
            .collect::<Result<Vec<_>, AvroError>>()?;
        Ok(Self { fields })
    }

    /// Appends row `i` to `out`.
    pub fn encode(&self, i: usize, out: &mut Vec<u8>) -> Result<(), AvroError> {
        for (f, w, col) in &self.fields {
            if col.is_none_or(|c| c.is_null(i)) {
                write_null_branch(&f.ty, &f.name, out)?;
                continue;
            }
            let tag = |b: &Option<usize>, out: &mut Vec<u8>| {
                if let Some(b) = b {
                    write_long(out, *b as i64);
                }
            };
            match w {
                Writer::Absent => write_null_branch(&f.ty, &f.name, out)?,
                Writer::Bool(b, a) => {
                    tag(b, out);
                    out.push(u8::from(a.value(i)));
                }
                Writer::Int(b, a) => {
                    tag(b, out);
                    write_long(out, a.get(i));
                }
                Writer::Real(b, a, double) => {
                    tag(b, out);
                    let v = match a {
                        RealColumn::F32(a) => f64::from(a.value(i)),
                        RealColumn::F64(a) => a.value(i),
                    };
                    if *double {
                        out.extend_from_slice(&v.to_le_bytes());
                    } else {
                        out.extend_from_slice(&(v as f32).to_le_bytes());
                    }
                }
                Writer::Text(b, a) => {
                    tag(b, out);
                    write_bytes(out, a.get(i).as_bytes());
                }
                Writer::Bytes(b, a) => {
                    tag(b, out);
                    write_bytes(out, a.value(i));
                }
            }
        }
        Ok(())
    }

    /// Every row of the batch, each encoded on its own.
    pub fn encode_all(&self, rows: usize) -> Result<Vec<Vec<u8>>, AvroError> {
        (0..rows)
            .map(|i| {
                let mut out = Vec::with_capacity(256);
                self.encode(i, &mut out)?;
                Ok(out)
            })
            .collect()
    }
}

/// The four bytes that open an object container file.
pub const MAGIC: &[u8; 4] = b"Obj\x01";

/// An object container file's header: the schema (self-contained JSON), no compression, and
/// the sync marker that ends every block.
pub fn container_header(schema_json: &str, sync: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(schema_json.len() + 64);
    out.extend_from_slice(MAGIC);
    // The metadata map: one block of two entries, then the end of the map.
    write_long(&mut out, 2);
    write_bytes(&mut out, b"avro.schema");
    write_bytes(&mut out, schema_json.as_bytes());
    write_bytes(&mut out, b"avro.codec");
    write_bytes(&mut out, b"null");
    write_long(&mut out, 0);
    out.extend_from_slice(sync);
    out
}

/// One block of a container file holding `datums`, each an encoded value.
pub fn container_block<'d>(
    datums: impl IntoIterator<Item = &'d [u8]>,
    sync: &[u8; 16],
    out: &mut Vec<u8>,
) {
    let datums: Vec<&[u8]> = datums.into_iter().collect();
    write_long(out, datums.len() as i64);
    write_long(out, datums.iter().map(|d| d.len() as i64).sum());
    for d in datums {
        out.extend_from_slice(d);
    }
    out.extend_from_slice(sync);
}

#[cfg(test)]
mod tests;
