//! Row-by-row construction of Arrow record batches for the VOTable and FITS readers: typed
//! column builders fed with format-neutral values, range-checked, cut into batches of bounded
//! size, with unique column names.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int8Builder, Int16Builder,
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, UInt8Builder, UInt16Builder,
    UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::{FormatError, ImportedTable};

/// Rows per output record batch.
const BATCH_ROWS: usize = 65_536;

/// A scalar cell value as decoded from a file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Datum<'a> {
    Null,
    Bool(bool),
    /// Wide enough for every signed and unsigned 64-bit integer.
    Int(i128),
    Float(f64),
    Text(&'a str),
}

/// One element of an array cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Item {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
}

/// Arrow builder of one column; the variant fixes the column's Arrow type.
#[derive(Debug)]
pub(crate) enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int8(Int8Builder),
    UInt8(UInt8Builder),
    Int16(Int16Builder),
    UInt16(UInt16Builder),
    Int32(Int32Builder),
    UInt32(UInt32Builder),
    Int64(Int64Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    BoolList(ListBuilder<BooleanBuilder>),
    IntList(ListBuilder<Int64Builder>),
    FloatList(ListBuilder<Float64Builder>),
}

/// The list types readers produce: `List<Boolean>`, `List<Int64>`, `List<Float64>`.
pub(crate) fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

impl ColumnBuilder {
    fn new(data_type: &DataType) -> Result<Self, String> {
        Ok(match data_type {
            DataType::Boolean => Self::Boolean(BooleanBuilder::new()),
            DataType::Int8 => Self::Int8(Int8Builder::new()),
            DataType::UInt8 => Self::UInt8(UInt8Builder::new()),
            DataType::Int16 => Self::Int16(Int16Builder::new()),
            DataType::UInt16 => Self::UInt16(UInt16Builder::new()),
            DataType::Int32 => Self::Int32(Int32Builder::new()),
            DataType::UInt32 => Self::UInt32(UInt32Builder::new()),
            DataType::Int64 => Self::Int64(Int64Builder::new()),
            DataType::UInt64 => Self::UInt64(UInt64Builder::new()),
            DataType::Float32 => Self::Float32(Float32Builder::new()),
            DataType::Float64 => Self::Float64(Float64Builder::new()),
            DataType::Utf8 => Self::Utf8(StringBuilder::new()),
            DataType::List(item) => match item.data_type() {
                DataType::Boolean => Self::BoolList(ListBuilder::new(BooleanBuilder::new())),
                DataType::Int64 => Self::IntList(ListBuilder::new(Int64Builder::new())),
                DataType::Float64 => Self::FloatList(ListBuilder::new(Float64Builder::new())),
                other => return Err(format!("unsupported list item type {other}")),
            },
            other => return Err(format!("unsupported column type {other}")),
        })
    }

    /// Appends a scalar; a value of the wrong kind or out of the column type's range is an
    /// error (the message names the value, the caller adds row and column).
    pub fn append(&mut self, datum: Datum<'_>) -> Result<(), String> {
        fn int<T: TryFrom<i128>>(v: i128) -> Result<T, String> {
            T::try_from(v).map_err(|_| format!("value {v} out of range"))
        }
        match (self, datum) {
            (Self::Boolean(b), Datum::Null) => b.append_null(),
            (Self::Int8(b), Datum::Null) => b.append_null(),
            (Self::UInt8(b), Datum::Null) => b.append_null(),
            (Self::Int16(b), Datum::Null) => b.append_null(),
            (Self::UInt16(b), Datum::Null) => b.append_null(),
            (Self::Int32(b), Datum::Null) => b.append_null(),
            (Self::UInt32(b), Datum::Null) => b.append_null(),
            (Self::Int64(b), Datum::Null) => b.append_null(),
            (Self::UInt64(b), Datum::Null) => b.append_null(),
            (Self::Float32(b), Datum::Null) => b.append_null(),
            (Self::Float64(b), Datum::Null) => b.append_null(),
            (Self::Utf8(b), Datum::Null) => b.append_null(),
            (Self::BoolList(b), Datum::Null) => b.append_null(),
            (Self::IntList(b), Datum::Null) => b.append_null(),
            (Self::FloatList(b), Datum::Null) => b.append_null(),
            (Self::Boolean(b), Datum::Bool(v)) => b.append_value(v),
            (Self::Int8(b), Datum::Int(v)) => b.append_value(int(v)?),
            (Self::UInt8(b), Datum::Int(v)) => b.append_value(int(v)?),
            (Self::Int16(b), Datum::Int(v)) => b.append_value(int(v)?),
            (Self::UInt16(b), Datum::Int(v)) => b.append_value(int(v)?),
            (Self::Int32(b), Datum::Int(v)) => b.append_value(int(v)?),
            (Self::UInt32(b), Datum::Int(v)) => b.append_value(int(v)?),
            (Self::Int64(b), Datum::Int(v)) => b.append_value(int(v)?),
            (Self::UInt64(b), Datum::Int(v)) => b.append_value(int(v)?),
            // Narrowing is intended: the column is single precision.
            (Self::Float32(b), Datum::Float(v)) => b.append_value(v as f32),
            (Self::Float64(b), Datum::Float(v)) => b.append_value(v),
            (Self::Utf8(b), Datum::Text(v)) => b.append_value(v),
            (_, other) => return Err(format!("value {other:?} does not match the column type")),
        }
        Ok(())
    }

    /// Appends an array cell (list columns only).
    pub fn append_list(&mut self, items: &[Item]) -> Result<(), String> {
        match self {
            Self::BoolList(b) => {
                for item in items {
                    match item {
                        Item::Bool(v) => b.values().append_value(*v),
                        _ => b.values().append_null(),
                    }
                }
                b.append(true);
            }
            Self::IntList(b) => {
                for item in items {
                    match item {
                        Item::Int(v) => b.values().append_value(
                            i64::try_from(*v).map_err(|_| format!("value {v} out of range"))?,
                        ),
                        _ => b.values().append_null(),
                    }
                }
                b.append(true);
            }
            Self::FloatList(b) => {
                for item in items {
                    match item {
                        Item::Float(v) => b.values().append_value(*v),
                        // Scaled integers and the like arrive as Int; nulls stay null.
                        Item::Int(v) => b.values().append_value(*v as f64),
                        _ => b.values().append_null(),
                    }
                }
                b.append(true);
            }
            _ => return Err("array value in a scalar column".to_owned()),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Int8(b) => Arc::new(b.finish()),
            Self::UInt8(b) => Arc::new(b.finish()),
            Self::Int16(b) => Arc::new(b.finish()),
            Self::UInt16(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::UInt32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::UInt64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::BoolList(b) => Arc::new(b.finish()),
            Self::IntList(b) => Arc::new(b.finish()),
            Self::FloatList(b) => Arc::new(b.finish()),
        }
    }
}

/// Description of an imported column before its name is made unique.
#[derive(Debug, Clone, Default)]
pub(crate) struct ColumnMeta {
    pub name: String,
    pub unit: Option<String>,
    pub ucd: Option<String>,
    pub utype: Option<String>,
    pub xtype: Option<String>,
    pub description: Option<String>,
    /// `char` for text declared as ASCII (VOTable char, FITS A).
    pub datatype: Option<String>,
}

/// Builds the Arrow field of a column, with metadata under the shared keys.
fn field(meta: &ColumnMeta, name: String, data_type: DataType) -> Field {
    let metadata: HashMap<String, String> = [
        ("unit", &meta.unit),
        ("ucd", &meta.ucd),
        ("utype", &meta.utype),
        ("xtype", &meta.xtype),
        ("description", &meta.description),
        ("datatype", &meta.datatype),
    ]
    .into_iter()
    .filter_map(|(k, v)| {
        v.as_ref()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (k.to_owned(), v.clone()))
    })
    .collect();
    Field::new(name, data_type, true).with_metadata(metadata)
}

/// Makes names non-empty and unique (case-insensitively, as SQL compares them).
pub(crate) fn unique_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let base = if name.trim().is_empty() {
                format!("col{}", i + 1)
            } else {
                name.trim().to_owned()
            };
            let mut candidate = base.clone();
            let mut n = 2;
            while !seen.insert(candidate.to_lowercase()) {
                candidate = format!("{base}_{n}");
                n += 1;
            }
            candidate
        })
        .collect()
}

/// Accumulates rows into record batches.
#[derive(Debug)]
pub(crate) struct TableBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    batches: Vec<RecordBatch>,
}

impl TableBuilder {
    pub fn new(columns: &[(ColumnMeta, DataType)]) -> Result<Self, String> {
        let names = unique_names(columns.iter().map(|(m, _)| m.name.as_str()));
        let fields: Vec<Field> = columns
            .iter()
            .zip(names)
            .map(|((meta, data_type), name)| field(meta, name, data_type.clone()))
            .collect();
        let builders = columns
            .iter()
            .map(|(_, data_type)| ColumnBuilder::new(data_type))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            schema: Arc::new(Schema::new(fields)),
            columns: builders,
            rows: 0,
            batches: Vec::new(),
        })
    }

    pub fn column(&mut self, i: usize) -> Option<&mut ColumnBuilder> {
        self.columns.get_mut(i)
    }

    pub fn num_columns(&self) -> usize {
        self.columns.len()
    }

    /// Marks the end of a row whose cells were all appended.
    pub fn end_row(&mut self) -> Result<(), FormatError> {
        self.rows += 1;
        if self.rows >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FormatError> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.batches
            .push(RecordBatch::try_new(Arc::clone(&self.schema), arrays)?);
        self.rows = 0;
        Ok(())
    }

    pub fn finish(mut self, name: Option<String>) -> Result<ImportedTable, FormatError> {
        self.flush()?;
        Ok(ImportedTable {
            name,
            schema: self.schema,
            batches: self.batches,
        })
    }
}
