//! The column model shared by every text and binary writer: how an Arrow field maps to an
//! output column (VOTable-style datatype, array shape, metadata, a unique name), and per-batch
//! access to cell values normalized to a handful of physical types.
//!
//! Normalizing here (casting every integer to i64, decimals to f64, lists to `LargeList`,
//! timestamps to ISO 8601 strings, ...) keeps each writer a simple match over [`Cell`].

use std::collections::HashSet;
use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, BooleanArray, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int64Array, LargeBinaryArray, LargeListArray, LargeStringArray,
    StringArray, StringViewArray,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDate};

use super::FormatError;

/// Integer storage types, named after VOTable datatypes; each holds every value of the Arrow
/// integer types mapped to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntType {
    /// `unsignedByte`: UInt8.
    UByte,
    /// `short`: Int8, Int16.
    Short,
    /// `int`: UInt16, Int32.
    Int,
    /// `long`: UInt32, Int64, and UInt64 values up to `i64::MAX`.
    Long,
}

/// Element type of numeric array columns. Integer elements are always written as `long` so a
/// single sentinel ([`ARRAY_NULL_LONG`]) can flag null elements in every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ElemType {
    Float,
    Double,
    Long,
}

/// The value written for a null element inside an integer array, declared as the column's
/// VOTable `<VALUES null>` and FITS `TNULL`.
pub(crate) const ARRAY_NULL_LONG: i64 = i64::MIN;

/// How a column is written, decided once from the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Boolean,
    Int(IntType),
    Float,
    Double,
    /// Strings, and everything rendered as text (timestamps, dates, unsupported types).
    /// `ascii` marks text Aster renders itself and knows to be ASCII (timestamps, all-null
    /// columns) and text that arrived declared as ASCII (VOTable `char`, FITS `A`; any
    /// other character in it is written as '?'). Other text may hold any Unicode and is
    /// written as VOTable `unicodeChar`, because VOTable 1.4 `char` is ASCII-only and
    /// astropy rejects anything else in it.
    Text {
        ascii: bool,
    },
    /// Opaque bytes, written as `unsignedByte` arrays.
    Bytes,
    /// Numeric arrays; `fixed` is the element count when every cell has the same length.
    Array {
        elem: ElemType,
        fixed: Option<usize>,
    },
}

/// Output description of one column.
#[derive(Debug, Clone)]
pub(crate) struct ColumnSpec {
    /// Non-empty and unique within the result.
    pub name: String,
    pub kind: Kind,
    pub unit: Option<String>,
    pub ucd: Option<String>,
    pub utype: Option<String>,
    pub xtype: Option<String>,
    pub description: Option<String>,
}

impl ColumnSpec {
    /// The VOTable `datatype` attribute (also used by the JSON metadata).
    pub fn votable_datatype(&self) -> &'static str {
        match self.kind {
            Kind::Boolean => "boolean",
            Kind::Int(IntType::UByte) | Kind::Bytes => "unsignedByte",
            Kind::Int(IntType::Short) => "short",
            Kind::Int(IntType::Int) => "int",
            Kind::Int(IntType::Long) => "long",
            Kind::Float => "float",
            Kind::Double => "double",
            Kind::Text { ascii: true } => "char",
            Kind::Text { ascii: false } => "unicodeChar",
            Kind::Array { elem, .. } => match elem {
                ElemType::Float => "float",
                ElemType::Double => "double",
                ElemType::Long => "long",
            },
        }
    }

    /// The VOTable `arraysize` attribute, if the column holds arrays (strings are char arrays).
    pub fn votable_arraysize(&self) -> Option<String> {
        match self.kind {
            Kind::Text { .. } | Kind::Bytes | Kind::Array { fixed: None, .. } => {
                Some("*".to_owned())
            }
            Kind::Array { fixed: Some(n), .. } => Some(n.to_string()),
            _ => None,
        }
    }

    pub fn value_error(&self, message: impl Into<String>) -> FormatError {
        FormatError::Value {
            column: self.name.clone(),
            message: message.into(),
        }
    }
}

/// Builds the output column descriptions of a schema, making names non-empty and unique (TAP
/// results may repeat a name, e.g. `SELECT a.ra, b.ra`, which most readers reject).
pub(crate) fn column_specs(schema: &Schema) -> Vec<ColumnSpec> {
    let mut seen = HashSet::new();
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let base = if field.name().trim().is_empty() {
                format!("col{}", i + 1)
            } else {
                field.name().clone()
            };
            let mut name = base.clone();
            let mut n = 2;
            while !seen.insert(name.to_ascii_lowercase()) {
                name = format!("{base}_{n}");
                n += 1;
            }
            spec_for(field, name)
        })
        .collect()
}

fn spec_for(field: &Field, name: String) -> ColumnSpec {
    let meta = |key: &str| field.metadata().get(key).filter(|v| !v.is_empty()).cloned();
    let xtype = meta("xtype");
    let (kind, implied_xtype) = kind_of(
        field.data_type(),
        xtype.as_deref(),
        meta("datatype").as_deref(),
    );
    ColumnSpec {
        name,
        kind,
        unit: meta("unit"),
        ucd: meta("ucd"),
        utype: meta("utype"),
        // DALI's timestamp xtype belongs on char columns only; text of unknown content goes
        // out as unicodeChar, so a stored timestamp xtype is dropped there.
        xtype: xtype
            .filter(|x| {
                !(x.eq_ignore_ascii_case("timestamp")
                    && matches!(kind, Kind::Text { ascii: false }))
            })
            .or(implied_xtype.map(str::to_owned)),
        description: meta("description"),
    }
}

/// Free text.
const TEXT: Kind = Kind::Text { ascii: false };

/// The output kind of an Arrow type, and the xtype the type itself implies (timestamps).
fn kind_of(
    data_type: &DataType,
    xtype: Option<&str>,
    declared: Option<&str>,
) -> (Kind, Option<&'static str>) {
    match data_type {
        // Text that arrived as VOTable char or FITS A goes out as char again.
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if declared == Some("char") => {
            (Kind::Text { ascii: true }, None)
        }
        DataType::Boolean => (Kind::Boolean, None),
        DataType::Int8 | DataType::Int16 => (Kind::Int(IntType::Short), None),
        DataType::UInt8 => (Kind::Int(IntType::UByte), None),
        DataType::UInt16 | DataType::Int32 => (Kind::Int(IntType::Int), None),
        DataType::UInt32 | DataType::Int64 | DataType::UInt64 => (Kind::Int(IntType::Long), None),
        DataType::Float16 | DataType::Float32 => (Kind::Float, None),
        DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => (Kind::Double, None),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            (Kind::Text { ascii: true }, Some("timestamp"))
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => (Kind::Bytes, None),
        DataType::List(item) | DataType::LargeList(item) => {
            match elem_type(item.data_type()) {
                // DALI fixes the shape of points and circles even when stored as plain lists.
                Some(elem) => {
                    let fixed = match xtype {
                        Some(x) if x.eq_ignore_ascii_case("point") => Some(2),
                        Some(x) if x.eq_ignore_ascii_case("circle") => Some(3),
                        _ => None,
                    };
                    (Kind::Array { elem, fixed }, None)
                }
                None => (TEXT, None),
            }
        }
        DataType::FixedSizeList(item, n) => {
            match (elem_type(item.data_type()), usize::try_from(*n)) {
                (Some(elem), Ok(n)) if n > 0 => (
                    Kind::Array {
                        elem,
                        fixed: Some(n),
                    },
                    None,
                ),
                (Some(elem), _) => (Kind::Array { elem, fixed: None }, None),
                (None, _) => (TEXT, None),
            }
        }
        DataType::Dictionary(_, value) => kind_of(value, xtype, declared),
        DataType::Null => (Kind::Text { ascii: true }, None),
        // Intervals, structs, ...: written as their display text.
        _ => (TEXT, None),
    }
}

fn elem_type(data_type: &DataType) -> Option<ElemType> {
    match data_type {
        DataType::Float16 | DataType::Float32 => Some(ElemType::Float),
        DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Some(ElemType::Double),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Some(ElemType::Long),
        _ => None,
    }
}

/// String column storage, borrowed from the batch where possible.
#[derive(Debug)]
pub(crate) enum TextArray {
    Utf8(StringArray),
    Large(LargeStringArray),
    View(StringViewArray),
}

/// Byte-string column storage.
#[derive(Debug)]
pub(crate) enum BytesArray {
    Binary(BinaryArray),
    Large(LargeBinaryArray),
    View(BinaryViewArray),
    Fixed(FixedSizeBinaryArray),
}

/// One batch's column, normalized to the physical type its [`Kind`] is written from.
#[derive(Debug)]
pub(crate) enum Values {
    /// Arrow `Null` type: every cell is null.
    Null,
    Bool(BooleanArray),
    Int(Int64Array),
    Float(Float32Array),
    Double(Float64Array),
    Text(TextArray),
    Bytes(BytesArray),
    Array(LargeListArray),
}

/// One cell of a prepared column.
#[derive(Debug, Clone)]
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f32),
    Double(f64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Array(ArrayCell<'a>),
}

/// The elements of one array cell.
#[derive(Debug, Clone)]
pub(crate) enum ArrayCell<'a> {
    Float(&'a Float32Array, Range<usize>),
    Double(&'a Float64Array, Range<usize>),
    Long(&'a Int64Array, Range<usize>),
}

impl ArrayCell<'_> {
    pub fn len(&self) -> usize {
        match self {
            Self::Float(_, r) | Self::Double(_, r) | Self::Long(_, r) => r.len(),
        }
    }

    /// Element `j` (0-based within the cell); `None` when null.
    pub fn elem(&self, j: usize) -> Elem {
        match self {
            Self::Float(a, r) => Elem::Float(opt(*a, r.start + j).map(|i| a.value(i))),
            Self::Double(a, r) => Elem::Double(opt(*a, r.start + j).map(|i| a.value(i))),
            Self::Long(a, r) => Elem::Long(opt(*a, r.start + j).map(|i| a.value(i))),
        }
    }
}

/// One array element.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Elem {
    Float(Option<f32>),
    Double(Option<f64>),
    Long(Option<i64>),
}

/// `Some(i)` when element `i` exists and is valid.
fn opt(array: &dyn Array, i: usize) -> Option<usize> {
    (i < array.len() && array.is_valid(i)).then_some(i)
}

impl Values {
    /// Cell `row`; rows past the end read as null so a short column cannot cause a panic.
    pub fn cell(&self, row: usize) -> Cell<'_> {
        match self {
            Self::Null => Cell::Null,
            Self::Bool(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Bool(a.value(i))),
            Self::Int(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Int(a.value(i))),
            Self::Float(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Float(a.value(i))),
            Self::Double(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Double(a.value(i))),
            Self::Text(t) => match t {
                TextArray::Utf8(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Text(a.value(i))),
                TextArray::Large(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Text(a.value(i))),
                TextArray::View(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Text(a.value(i))),
            },
            Self::Bytes(b) => match b {
                BytesArray::Binary(a) => {
                    opt(a, row).map_or(Cell::Null, |i| Cell::Bytes(a.value(i)))
                }
                BytesArray::Large(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Bytes(a.value(i))),
                BytesArray::View(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Bytes(a.value(i))),
                BytesArray::Fixed(a) => opt(a, row).map_or(Cell::Null, |i| Cell::Bytes(a.value(i))),
            },
            Self::Array(list) => {
                let Some(i) = opt(list, row) else {
                    return Cell::Null;
                };
                let offsets = list.value_offsets();
                let (Some(&start), Some(&end)) = (offsets.get(i), offsets.get(i + 1)) else {
                    return Cell::Null;
                };
                let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
                    return Cell::Null;
                };
                let range = start..end.max(start);
                let values = list.values();
                if let Some(a) = values.as_any().downcast_ref::<Float32Array>() {
                    Cell::Array(ArrayCell::Float(a, range))
                } else if let Some(a) = values.as_any().downcast_ref::<Float64Array>() {
                    Cell::Array(ArrayCell::Double(a, range))
                } else if let Some(a) = values.as_any().downcast_ref::<Int64Array>() {
                    Cell::Array(ArrayCell::Long(a, range))
                } else {
                    Cell::Null
                }
            }
        }
    }
}

/// Casts that fail loudly: a value that does not fit (e.g. a UInt64 above `i64::MAX`) is an
/// error rather than a silent null.
fn strict_cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, FormatError> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(cast_with_options(array, to, &options)?)
}

fn downcast<T: Array + Clone + 'static>(
    spec: &ColumnSpec,
    array: &ArrayRef,
) -> Result<T, FormatError> {
    array
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| spec.value_error(format!("unexpected type {}", array.data_type())))
}

/// Normalizes one batch column for writing as `spec`.
pub(crate) fn prepare(spec: &ColumnSpec, array: &ArrayRef) -> Result<Values, FormatError> {
    let array = match array.data_type() {
        DataType::Null => return Ok(Values::Null),
        DataType::Dictionary(_, value) => strict_cast(array, value)?,
        _ => Arc::clone(array),
    };
    let typed = |to: DataType| -> Result<ArrayRef, FormatError> {
        strict_cast(&array, &to).map_err(|e| spec.value_error(e.to_string()))
    };
    Ok(match spec.kind {
        Kind::Boolean => Values::Bool(downcast(spec, &typed(DataType::Boolean)?)?),
        Kind::Int(_) => Values::Int(downcast(spec, &typed(DataType::Int64)?)?),
        Kind::Float => Values::Float(downcast(spec, &typed(DataType::Float32)?)?),
        Kind::Double => Values::Double(downcast(spec, &typed(DataType::Float64)?)?),
        Kind::Text { .. } => Values::Text(prepare_text(spec, &array)?),
        Kind::Bytes => Values::Bytes(match array.data_type() {
            DataType::Binary => BytesArray::Binary(downcast(spec, &array)?),
            DataType::LargeBinary => BytesArray::Large(downcast(spec, &array)?),
            DataType::BinaryView => BytesArray::View(downcast(spec, &array)?),
            DataType::FixedSizeBinary(_) => BytesArray::Fixed(downcast(spec, &array)?),
            _ => BytesArray::Binary(downcast(spec, &typed(DataType::Binary)?)?),
        }),
        Kind::Array { elem, fixed } => {
            let item = match elem {
                ElemType::Float => DataType::Float32,
                ElemType::Double => DataType::Float64,
                ElemType::Long => DataType::Int64,
            };
            let to = DataType::LargeList(Arc::new(Field::new_list_field(item, true)));
            let list: LargeListArray = downcast(spec, &typed(to)?)?;
            if let Some(n) = fixed {
                check_fixed_len(spec, &list, n)?;
            }
            Values::Array(list)
        }
    })
}

/// Fixed-shape columns (FixedSizeList, DALI points and circles) must have exactly `n` elements
/// in every non-null cell, or the binary formats would misalign.
fn check_fixed_len(spec: &ColumnSpec, list: &LargeListArray, n: usize) -> Result<(), FormatError> {
    for (i, pair) in list.value_offsets().windows(2).enumerate() {
        if let [start, end] = pair
            && list.is_valid(i)
            && usize::try_from(end - start).ok() != Some(n)
        {
            return Err(spec.value_error(format!(
                "row has {} elements where {n} are required",
                end - start
            )));
        }
    }
    Ok(())
}

fn prepare_text(spec: &ColumnSpec, array: &ArrayRef) -> Result<TextArray, FormatError> {
    Ok(match array.data_type() {
        DataType::Utf8 => TextArray::Utf8(downcast(spec, array)?),
        DataType::LargeUtf8 => TextArray::Large(downcast(spec, array)?),
        DataType::Utf8View => TextArray::View(downcast(spec, array)?),
        DataType::Timestamp(unit, _) => {
            let unit = *unit;
            let raw: Int64Array = downcast(spec, &strict_cast(array, &DataType::Int64)?)?;
            TextArray::Utf8(render(spec, &raw, |v, buf| timestamp_iso(v, unit, buf))?)
        }
        DataType::Date32 | DataType::Date64 => {
            let days = strict_cast(array, &DataType::Date32)?;
            let raw: Int64Array = downcast(spec, &strict_cast(&days, &DataType::Int64)?)?;
            TextArray::Utf8(render(spec, &raw, date_iso)?)
        }
        _ => {
            let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())?;
            let mut buf = String::new();
            let strings: StringArray = (0..array.len())
                .map(|i| {
                    array.is_valid(i).then(|| {
                        buf.clear();
                        use std::fmt::Write as _;
                        // Formatting into a String cannot fail except inside a Display impl;
                        // a failure leaves the partial text, which is still a faithful hint.
                        let _ = write!(buf, "{}", formatter.value(i));
                        buf.clone()
                    })
                })
                .collect();
            TextArray::Utf8(strings)
        }
    })
}

/// Renders an integer-coded temporal column to text; `None` from `f` means out of range.
fn render(
    spec: &ColumnSpec,
    raw: &Int64Array,
    f: impl Fn(i64, &mut String) -> Option<()>,
) -> Result<StringArray, FormatError> {
    let mut buf = String::new();
    raw.iter()
        .map(|v| {
            v.map(|v| {
                buf.clear();
                f(v, &mut buf)
                    .map(|()| buf.clone())
                    .ok_or_else(|| spec.value_error(format!("date/time value {v} out of range")))
            })
            .transpose()
        })
        .collect()
}

/// DALI timestamp: UTC, ISO 8601 without zone, fractional seconds only when non-zero.
fn timestamp_iso(value: i64, unit: TimeUnit, buf: &mut String) -> Option<()> {
    let (per_second, nanos_per_tick) = match unit {
        TimeUnit::Second => (1, 0),
        TimeUnit::Millisecond => (1_000, 1_000_000),
        TimeUnit::Microsecond => (1_000_000, 1_000),
        TimeUnit::Nanosecond => (1_000_000_000, 1),
    };
    let secs = value.div_euclid(per_second);
    let nanos = u32::try_from(value.rem_euclid(per_second) * nanos_per_tick).ok()?;
    let t = DateTime::from_timestamp(secs, nanos)?;
    use std::fmt::Write as _;
    write!(buf, "{}", t.format("%Y-%m-%dT%H:%M:%S%.f")).ok()
}

fn date_iso(days: i64, buf: &mut String) -> Option<()> {
    const UNIX_EPOCH_FROM_CE: i64 = 719_163;
    let days = i32::try_from(days.checked_add(UNIX_EPOCH_FROM_CE)?).ok()?;
    let date = NaiveDate::from_num_days_from_ce_opt(days)?;
    use std::fmt::Write as _;
    write!(buf, "{}", date.format("%Y-%m-%d")).ok()
}

/// Writes a finite f64 in its shortest round-trip form, switching to exponent notation for
/// very large or small magnitudes (Rust's plain `{}` would print hundreds of digits).
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) {
    let a = v.abs();
    // Writing to a Vec cannot fail.
    let _ = if a != 0.0 && !(1e-5..1e16).contains(&a) {
        write!(out, "{v:e}")
    } else {
        write!(out, "{v}")
    };
}

/// [`write_f64`] for f32, keeping f32's shortest form (0.1f32 prints as "0.1").
pub(crate) fn write_f32(out: &mut Vec<u8>, v: f32) {
    let a = v.abs();
    let _ = if a != 0.0 && !(1e-5..1e16).contains(&a) {
        write!(out, "{v:e}")
    } else {
        write!(out, "{v}")
    };
}

/// Writes an integer in decimal.
pub(crate) fn write_int(out: &mut Vec<u8>, v: i64) {
    let _ = write!(out, "{v}");
}
