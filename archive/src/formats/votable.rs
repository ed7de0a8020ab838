//! VOTable reader: the first TABLE of a document, in TABLEDATA, BINARY or BINARY2 (inline base64
//! STREAM) serialization, with FIELD metadata carried into Arrow field metadata.
//!
//! Type mapping: boolean/bit → Boolean; unsignedByte → UInt8; short → Int16; int → Int32;
//! long → Int64; float → Float32; double → Float64; char/unicodeChar (any arraysize) → Utf8;
//! arrays of booleans → List<Boolean>, of integers → List<Int64>, of floats and complex numbers
//! → List<Float64>. Nulls come from empty TDs, BINARY2 null flags, `<VALUES null="...">` and,
//! for float scalars, NaN.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

use arrow::datatypes::DataType;

use super::builder::{ColumnBuilder, ColumnMeta, Datum, Item, TableBuilder, list_of};
use super::{FormatError, ImportedTable};

/// Deeper element nesting than any real VOTable has; beyond it the input is rejected.
const MAX_DEPTH: usize = 64;

fn err(message: impl Into<String>) -> FormatError {
    FormatError::Votable(message.into())
}

/// VOTable primitive datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VoType {
    Boolean,
    Bit,
    UByte,
    Short,
    Int,
    Long,
    Float,
    Double,
    FloatComplex,
    DoubleComplex,
    Char,
    UnicodeChar,
}

impl VoType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "boolean" => Self::Boolean,
            "bit" => Self::Bit,
            "unsignedByte" => Self::UByte,
            "short" => Self::Short,
            "int" => Self::Int,
            "long" => Self::Long,
            "float" => Self::Float,
            "double" => Self::Double,
            "floatComplex" => Self::FloatComplex,
            "doubleComplex" => Self::DoubleComplex,
            "char" => Self::Char,
            "unicodeChar" => Self::UnicodeChar,
            _ => return None,
        })
    }

    /// Bytes per element in the binary serializations (bits are packed separately).
    fn size(self) -> usize {
        match self {
            Self::Boolean | Self::Bit | Self::UByte | Self::Char => 1,
            Self::Short | Self::UnicodeChar => 2,
            Self::Int | Self::Float => 4,
            Self::Long | Self::Double | Self::FloatComplex => 8,
            Self::DoubleComplex => 16,
        }
    }

    fn is_text(self) -> bool {
        matches!(self, Self::Char | Self::UnicodeChar)
    }

    fn is_int(self) -> bool {
        matches!(self, Self::UByte | Self::Short | Self::Int | Self::Long)
    }

    fn is_complex(self) -> bool {
        matches!(self, Self::FloatComplex | Self::DoubleComplex)
    }
}

/// Number of elements per cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Scalar,
    Fixed(usize),
    /// Variable, with an optional upper bound on the element count.
    Variable(Option<usize>),
}

/// Parses `arraysize`: "n", "n*", "*", or multidimensional "nxm", "nxm*", "nx*".
fn parse_arraysize(s: &str) -> Result<Shape, String> {
    let bad = || format!("invalid arraysize '{s}'");
    let dims: Vec<&str> = s.trim().split('x').collect();
    let mut fixed: usize = 1;
    for (i, dim) in dims.iter().enumerate() {
        let dim = dim.trim();
        if let Some(bound) = dim.strip_suffix('*') {
            if i + 1 != dims.len() {
                return Err(bad());
            }
            if bound.is_empty() {
                return Ok(Shape::Variable(None));
            }
            let n: usize = bound.parse().map_err(|_| bad())?;
            return Ok(Shape::Variable(Some(fixed.checked_mul(n).ok_or_else(bad)?)));
        }
        let n: usize = dim.parse().map_err(|_| bad())?;
        fixed = fixed.checked_mul(n).ok_or_else(bad)?;
    }
    Ok(Shape::Fixed(fixed))
}

/// The `<VALUES null>` value of a field, parsed for its datatype.
#[derive(Debug, Clone, PartialEq)]
enum NullValue {
    Int(i128),
    Float(f64),
    Text(String),
}

/// A FIELD as declared.
#[derive(Debug, Clone)]
struct VoField {
    meta: ColumnMeta,
    ty: VoType,
    shape: Shape,
    null: Option<NullValue>,
}

impl VoField {
    /// Whether cells are Arrow lists (strings are not, whatever their arraysize).
    fn is_list(&self) -> bool {
        !self.ty.is_text() && (self.shape != Shape::Scalar || self.ty.is_complex())
    }

    fn arrow_type(&self) -> DataType {
        if self.ty.is_text() {
            return DataType::Utf8;
        }
        if self.is_list() {
            return list_of(match self.ty {
                VoType::Boolean | VoType::Bit => DataType::Boolean,
                t if t.is_int() => DataType::Int64,
                _ => DataType::Float64,
            });
        }
        match self.ty {
            VoType::Boolean | VoType::Bit => DataType::Boolean,
            VoType::UByte => DataType::UInt8,
            VoType::Short => DataType::Int16,
            VoType::Int => DataType::Int32,
            VoType::Long => DataType::Int64,
            VoType::Float => DataType::Float32,
            _ => DataType::Float64,
        }
    }

    fn is_null_int(&self, v: i128) -> bool {
        self.null == Some(NullValue::Int(v))
    }

    fn is_null_text(&self, v: &str) -> bool {
        matches!(&self.null, Some(NullValue::Text(n)) if n == v)
    }

    fn is_null_float(&self, v: f64) -> bool {
        matches!(self.null, Some(NullValue::Float(n)) if n == v)
    }
}

/// FIELD attributes and children gathered while parsing.
#[derive(Debug, Default)]
struct FieldDecl {
    meta: ColumnMeta,
    datatype: String,
    arraysize: Option<String>,
    null: Option<String>,
}

impl FieldDecl {
    fn resolve(self) -> Result<VoField, FormatError> {
        let name = self.meta.name.clone();
        let ty = VoType::parse(&self.datatype).ok_or_else(|| {
            err(format!(
                "FIELD '{name}' has unknown datatype '{}'",
                self.datatype
            ))
        })?;
        let mut shape = match &self.arraysize {
            Some(a) => parse_arraysize(a).map_err(|e| err(format!("FIELD '{name}': {e}")))?,
            None => Shape::Scalar,
        };
        // arraysize="1" on a number is a plain scalar for every practical purpose.
        if shape == Shape::Fixed(1) && !ty.is_text() {
            shape = Shape::Scalar;
        }
        let null = match self.null {
            None => None,
            Some(text) if ty.is_int() => {
                Some(NullValue::Int(parse_int(&text).ok_or_else(|| {
                    err(format!("FIELD '{name}' has invalid null value '{text}'"))
                })?))
            }
            Some(text) if ty.is_text() => Some(NullValue::Text(text)),
            Some(text) => text.trim().parse().ok().map(NullValue::Float),
        };
        Ok(VoField {
            meta: self.meta,
            ty,
            shape,
            null,
        })
    }
}

/// Where the parser is inside the first TABLE.
#[derive(Debug)]
enum Data {
    /// No DATA seen yet.
    None,
    /// Inside TABLEDATA, with the next cell index of the current row.
    Tabledata { cell: usize },
    /// Inside BINARY or BINARY2, collecting the base64 STREAM text.
    Binary { binary2: bool, stream: Vec<u8> },
}

/// Text being gathered for the element currently open.
#[derive(Debug, PartialEq, Eq)]
enum Collect {
    Nothing,
    Description,
    Cell,
    Stream,
}

/// Reads the first TABLE of a VOTable document.
pub fn read_votable(bytes: &[u8]) -> Result<ImportedTable, FormatError> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut table_depth: Option<usize> = None;
    let mut table_name: Option<String> = None;
    let mut decls: Vec<FieldDecl> = Vec::new();
    let mut current: Option<FieldDecl> = None;
    let mut fields: Vec<VoField> = Vec::new();
    let mut builder: Option<TableBuilder> = None;
    let mut data = Data::None;
    let mut collect = Collect::Nothing;
    let mut text = String::new();
    let mut row = 0usize;

    loop {
        let event = reader.read_event().map_err(|e| {
            err(format!(
                "XML error at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(e) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(err("elements nested too deeply"));
                }
                let name = e.local_name();
                let name = name.as_ref();
                match table_depth {
                    None if name == b"TABLE" => {
                        table_depth = Some(depth);
                        table_name = attr(&e, b"name")?.or(attr(&e, b"ID")?);
                    }
                    None => {}
                    Some(_) => match name {
                        b"FIELD" => current = Some(field_decl(&e)?),
                        b"DESCRIPTION" if current.is_some() => {
                            collect = Collect::Description;
                            text.clear();
                        }
                        b"TABLEDATA" => {
                            start_data(&mut decls, &mut fields, &mut builder)?;
                            data = Data::Tabledata { cell: 0 };
                        }
                        b"BINARY" | b"BINARY2" => {
                            start_data(&mut decls, &mut fields, &mut builder)?;
                            data = Data::Binary {
                                binary2: name == b"BINARY2",
                                stream: Vec::new(),
                            };
                        }
                        b"FITS" => {
                            return Err(err("FITS-serialized VOTable data is not supported"));
                        }
                        b"STREAM" => {
                            check_stream(&e)?;
                            collect = Collect::Stream;
                        }
                        b"TR" => {
                            if let Data::Tabledata { cell } = &mut data {
                                *cell = 0;
                            }
                        }
                        b"VALUES" => {
                            if let Some(decl) = current.as_mut() {
                                decl.null = attr(&e, b"null")?;
                            }
                        }
                        b"TD" => {
                            collect = Collect::Cell;
                            text.clear();
                        }
                        _ => {}
                    },
                }
            }
            Event::Empty(e) => {
                if table_depth.is_none() {
                    if e.local_name().as_ref() == b"TABLE" {
                        // An empty TABLE has no FIELDs, which the schema forbids.
                        return Err(err("the first TABLE has no FIELD"));
                    }
                    continue;
                }
                match e.local_name().as_ref() {
                    b"FIELD" => decls.push(field_decl(&e)?),
                    b"VALUES" => {
                        if let Some(decl) = current.as_mut() {
                            decl.null = attr(&e, b"null")?;
                        }
                    }
                    b"TD" => {
                        if let (Data::Tabledata { cell, .. }, Some(b)) = (&mut data, &mut builder) {
                            table_cell(&fields, b, *cell, row, None)?;
                            *cell += 1;
                        }
                    }
                    b"TR" => {
                        if let (Data::Tabledata { .. }, Some(b)) = (&data, &mut builder) {
                            end_table_row(&fields, b, 0, row)?;
                            row += 1;
                        }
                    }
                    b"STREAM" => check_stream(&e)?,
                    b"TABLEDATA" | b"BINARY" | b"BINARY2" => {
                        start_data(&mut decls, &mut fields, &mut builder)?;
                    }
                    b"FITS" => return Err(err("FITS-serialized VOTable data is not supported")),
                    _ => {}
                }
            }
            Event::Text(e) => {
                if collect != Collect::Nothing {
                    let t = e
                        .decode()
                        .map_err(|e| err(format!("invalid text encoding: {e}")))?;
                    push_text(&mut collect, &mut text, &mut data, &t);
                }
            }
            Event::CData(e) => {
                if collect != Collect::Nothing {
                    let t = e
                        .decode()
                        .map_err(|e| err(format!("invalid text encoding: {e}")))?;
                    push_text(&mut collect, &mut text, &mut data, &t);
                }
            }
            Event::GeneralRef(e) => {
                if collect != Collect::Nothing {
                    let c = resolve_entity(&e)?;
                    push_text(
                        &mut collect,
                        &mut text,
                        &mut data,
                        c.encode_utf8(&mut [0; 4]),
                    );
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if table_depth.is_none() {
                    continue;
                }
                match e.local_name().as_ref() {
                    b"FIELD" => {
                        if let Some(decl) = current.take() {
                            decls.push(decl);
                        }
                    }
                    b"DESCRIPTION" if collect == Collect::Description => {
                        if let Some(decl) = current.as_mut() {
                            decl.meta.description = Some(text.trim().to_owned());
                        }
                        collect = Collect::Nothing;
                    }
                    b"TD" => {
                        if let (Data::Tabledata { cell, .. }, Some(b)) = (&mut data, &mut builder) {
                            table_cell(&fields, b, *cell, row, Some(&text))?;
                            *cell += 1;
                        }
                        collect = Collect::Nothing;
                    }
                    b"TR" => {
                        if let (Data::Tabledata { cell }, Some(b)) = (&data, &mut builder) {
                            end_table_row(&fields, b, *cell, row)?;
                            row += 1;
                        }
                    }
                    b"STREAM" => {
                        collect = Collect::Nothing;
                        if let (Data::Binary { binary2, stream }, Some(b)) =
                            (&mut data, &mut builder)
                        {
                            let decoded = decode_base64(stream)?;
                            *stream = Vec::new();
                            read_binary(&fields, b, &decoded, *binary2)?;
                        }
                    }
                    b"TABLE" => break,
                    _ => {}
                }
            }
            Event::Eof => {
                return Err(match table_depth {
                    None => err("no TABLE found"),
                    Some(_) => err("unexpected end of file inside TABLE"),
                });
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }

    // A TABLE without DATA is a valid, empty table.
    start_data(&mut decls, &mut fields, &mut builder)?;
    match builder {
        Some(b) => b.finish(table_name),
        None => Err(err("the first TABLE has no FIELD")),
    }
}

/// Reads an optional attribute, unescaped.
fn attr(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, FormatError> {
    for a in e.attributes() {
        let a = a.map_err(|e| err(format!("bad attribute: {e}")))?;
        if a.key.local_name().as_ref() == name {
            let value = a
                .unescape_value()
                .map_err(|e| err(format!("bad attribute value: {e}")))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

fn field_decl(e: &BytesStart<'_>) -> Result<FieldDecl, FormatError> {
    let name = attr(e, b"name")?.or(attr(e, b"ID")?).unwrap_or_default();
    let datatype =
        attr(e, b"datatype")?.ok_or_else(|| err(format!("FIELD '{name}' has no datatype")))?;
    Ok(FieldDecl {
        meta: ColumnMeta {
            name,
            unit: attr(e, b"unit")?,
            ucd: attr(e, b"ucd")?,
            utype: attr(e, b"utype")?,
            xtype: attr(e, b"xtype")?,
            description: None,
            datatype: (datatype == "char").then(|| "char".to_owned()),
        },
        datatype,
        arraysize: attr(e, b"arraysize")?,
        null: None,
    })
}

/// Turns the FIELD declarations into the table's columns when its data begins.
fn start_data(
    decls: &mut Vec<FieldDecl>,
    fields: &mut Vec<VoField>,
    builder: &mut Option<TableBuilder>,
) -> Result<(), FormatError> {
    if builder.is_some() {
        return Ok(());
    }
    if decls.is_empty() {
        return Err(err("the first TABLE has no FIELD"));
    }
    *fields = std::mem::take(decls)
        .into_iter()
        .map(FieldDecl::resolve)
        .collect::<Result<_, _>>()?;
    let columns: Vec<_> = fields
        .iter()
        .map(|f| (f.meta.clone(), f.arrow_type()))
        .collect();
    *builder = Some(TableBuilder::new(&columns).map_err(err)?);
    Ok(())
}

fn check_stream(e: &BytesStart<'_>) -> Result<(), FormatError> {
    if attr(e, b"href")?.is_some() {
        return Err(err("STREAM with href (external data) is not supported"));
    }
    match attr(e, b"encoding")?.as_deref() {
        Some("base64") => Ok(()),
        Some(other) => Err(err(format!("STREAM encoding '{other}' is not supported"))),
        None => Err(err("inline STREAM must have encoding=\"base64\"")),
    }
}

fn push_text(collect: &mut Collect, text: &mut String, data: &mut Data, t: &str) {
    match collect {
        Collect::Stream => {
            if let Data::Binary { stream, .. } = data {
                stream.extend(t.bytes().filter(|b| !b.is_ascii_whitespace()));
            }
        }
        Collect::Description | Collect::Cell => text.push_str(t),
        Collect::Nothing => {}
    }
}

fn resolve_entity(e: &BytesRef<'_>) -> Result<char, FormatError> {
    if let Some(c) = e
        .resolve_char_ref()
        .map_err(|e| err(format!("bad character reference: {e}")))?
    {
        return Ok(c);
    }
    let name = e
        .decode()
        .map_err(|e| err(format!("invalid text encoding: {e}")))?;
    match name.as_ref() {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        other => Err(err(format!("unknown entity '&{other};'"))),
    }
}

fn decode_base64(stream: &[u8]) -> Result<Vec<u8>, FormatError> {
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(stream)
        .map_err(|e| err(format!("bad base64 in STREAM: {e}")))
}

fn cell_error(fields: &[VoField], column: usize, row: usize, message: &str) -> FormatError {
    let name = fields.get(column).map_or("?", |f| f.meta.name.as_str());
    err(format!("row {}, column '{name}': {message}", row + 1))
}

/// Decodes one TD (`None` for `<TD/>`) into column `column`.
fn table_cell(
    fields: &[VoField],
    builder: &mut TableBuilder,
    column: usize,
    row: usize,
    text: Option<&str>,
) -> Result<(), FormatError> {
    let (Some(field), Some(col)) = (fields.get(column), builder.column(column)) else {
        return Err(err(format!(
            "row {} has more TD cells than the {} FIELDs",
            row + 1,
            fields.len()
        )));
    };
    decode_text(field, col, text.unwrap_or("")).map_err(|e| cell_error(fields, column, row, &e))
}

/// Completes a TR: cells it did not have are null.
fn end_table_row(
    fields: &[VoField],
    builder: &mut TableBuilder,
    cells: usize,
    row: usize,
) -> Result<(), FormatError> {
    for column in cells..builder.num_columns() {
        if let Some(col) = builder.column(column) {
            col.append(Datum::Null)
                .map_err(|e| cell_error(fields, column, row, &e))?;
        }
    }
    builder.end_row()
}

fn parse_bool(token: &str) -> Result<Option<bool>, String> {
    match token {
        "T" | "t" | "1" | "true" | "TRUE" | "True" => Ok(Some(true)),
        "F" | "f" | "0" | "false" | "FALSE" | "False" => Ok(Some(false)),
        "?" | "" => Ok(None),
        other => Err(format!("invalid boolean '{other}'")),
    }
}

/// Decimal or `0x` hexadecimal integer.
fn parse_int(token: &str) -> Option<i128> {
    let token = token.trim();
    let (negative, digits) = match token.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, token.strip_prefix('+').unwrap_or(token)),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => i128::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<i128>().ok()?,
    };
    Some(if negative { -magnitude } else { magnitude })
}

fn parse_float(token: &str) -> Result<f64, String> {
    token
        .parse::<f64>()
        .map_err(|_| format!("invalid number '{token}'"))
}

/// Decodes TABLEDATA cell text.
fn decode_text(field: &VoField, col: &mut ColumnBuilder, text: &str) -> Result<(), String> {
    if field.ty.is_text() {
        let null = text.is_empty() || field.is_null_text(text);
        return col.append(if null { Datum::Null } else { Datum::Text(text) });
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return col.append(Datum::Null);
    }
    if !field.is_list() {
        let datum = match field.ty {
            VoType::Boolean | VoType::Bit => parse_bool(trimmed)?.map_or(Datum::Null, Datum::Bool),
            t if t.is_int() => {
                let v = parse_int(trimmed).ok_or_else(|| format!("invalid integer '{trimmed}'"))?;
                if field.is_null_int(v) {
                    Datum::Null
                } else {
                    Datum::Int(v)
                }
            }
            _ => {
                let v = parse_float(trimmed)?;
                if v.is_nan() || field.is_null_float(v) {
                    Datum::Null
                } else {
                    Datum::Float(v)
                }
            }
        };
        return col.append(datum);
    }
    let mut items = Vec::new();
    for token in trimmed.split_whitespace() {
        match field.ty {
            VoType::Boolean => items.push(parse_bool(token)?.map_or(Item::Null, Item::Bool)),
            // Bit arrays are often written without separators ("0110").
            VoType::Bit => {
                for c in token.chars() {
                    items.push(match c {
                        '0' => Item::Bool(false),
                        '1' => Item::Bool(true),
                        _ => return Err(format!("invalid bit '{c}'")),
                    });
                }
            }
            t if t.is_int() => {
                let v = parse_int(token).ok_or_else(|| format!("invalid integer '{token}'"))?;
                items.push(if field.is_null_int(v) {
                    Item::Null
                } else {
                    Item::Int(v)
                });
            }
            _ => items.push(Item::Float(parse_float(token)?)),
        }
    }
    let elements = if field.ty.is_complex() {
        if items.len() % 2 != 0 {
            return Err("complex values need an even number of parts".into());
        }
        items.len() / 2
    } else {
        items.len()
    };
    check_count(field, elements)?;
    col.append_list(&items)
}

/// Rejects an element count that contradicts the declared arraysize.
fn check_count(field: &VoField, count: usize) -> Result<(), String> {
    match field.shape {
        Shape::Fixed(n) if count != n => {
            Err(format!("{count} elements where arraysize requires {n}"))
        }
        Shape::Variable(Some(max)) if count > max => Err(format!(
            "{count} elements where arraysize allows at most {max}"
        )),
        Shape::Scalar if !field.ty.is_complex() && count != 1 => {
            Err(format!("{count} values in a scalar column"))
        }
        _ => Ok(()),
    }
}

/// Bounds-checked reader over decoded binary data.
#[derive(Debug)]
struct ByteCursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteCursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or("data truncated in the middle of a row")?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// Decodes BINARY / BINARY2 rows.
fn read_binary(
    fields: &[VoField],
    builder: &mut TableBuilder,
    data: &[u8],
    binary2: bool,
) -> Result<(), FormatError> {
    let mut cursor = ByteCursor { data, pos: 0 };
    let flag_bytes = fields.len().div_ceil(8);
    let mut row = 0usize;
    while !cursor.at_end() {
        let start = cursor.pos;
        let flags = if binary2 {
            cursor
                .take(flag_bytes)
                .map_err(|e| err(format!("row {}: {e}", row + 1)))?
        } else {
            &[]
        };
        for (c, field) in fields.iter().enumerate() {
            let is_null = flags
                .get(c / 8)
                .is_some_and(|byte| byte & (0x80 >> (c % 8)) != 0);
            let col = builder
                .column(c)
                .ok_or_else(|| err("column count mismatch"))?;
            decode_binary(field, col, &mut cursor, is_null, binary2)
                .map_err(|e| cell_error(fields, c, row, &e))?;
        }
        if cursor.pos == start {
            // Every FIELD has zero width: the stream could never be consumed.
            return Err(err("rows of zero bytes"));
        }
        builder.end_row()?;
        row += 1;
    }
    Ok(())
}

fn be<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(src) = bytes.get(..N) {
        a.copy_from_slice(src);
    }
    a
}

/// Decodes one cell of binary data, consuming its bytes even when it is flagged null.
fn decode_binary(
    field: &VoField,
    col: &mut ColumnBuilder,
    cursor: &mut ByteCursor<'_>,
    flagged_null: bool,
    binary2: bool,
) -> Result<(), String> {
    let count = match field.shape {
        Shape::Scalar => 1,
        Shape::Fixed(n) => n,
        Shape::Variable(max) => {
            let n = u32::from_be_bytes(be(cursor.take(4)?));
            let n = usize::try_from(n).map_err(|_| "array too long".to_owned())?;
            if let Some(max) = max
                && n > max
            {
                return Err(format!("{n} elements where arraysize allows at most {max}"));
            }
            n
        }
    };
    let bytes = match field.ty {
        VoType::Bit => count.div_ceil(8),
        t => count
            .checked_mul(t.size())
            .ok_or_else(|| "array too long".to_owned())?,
    };
    // `take` checks the length against the remaining data before anything is allocated.
    let raw = cursor.take(bytes)?;
    if flagged_null {
        return col.append(Datum::Null);
    }
    match field.ty {
        VoType::Char | VoType::UnicodeChar => {
            let mut s = if field.ty == VoType::Char {
                decode_chars(raw)
            } else {
                let units = raw.chunks_exact(2).map(|p| u16::from_be_bytes(be(p)));
                char::decode_utf16(units)
                    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .take_while(|&c| c != '\0')
                    .collect()
            };
            if matches!(field.shape, Shape::Fixed(_)) {
                s.truncate(s.trim_end().len());
            }
            // Plain BINARY has no null flags: an empty string is the only null there is.
            let null = (s.is_empty() && !binary2) || field.is_null_text(&s);
            col.append(if null { Datum::Null } else { Datum::Text(&s) })
        }
        _ if !field.is_list() => col.append(scalar_datum(field, raw)),
        VoType::Bit => {
            let items: Vec<Item> = (0..count)
                .map(|i| {
                    let byte = raw.get(i / 8).copied().unwrap_or(0);
                    Item::Bool(byte & (0x80 >> (i % 8)) != 0)
                })
                .collect();
            col.append_list(&items)
        }
        t => {
            let items: Vec<Item> = raw
                .chunks_exact(t.size())
                .flat_map(|chunk| element_items(field, chunk))
                .collect();
            col.append_list(&items)
        }
    }
}

/// Char data: UTF-8 where valid (VOTable 1.5), else Latin-1; ends at the first NUL.
fn decode_chars(raw: &[u8]) -> String {
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    }
}

fn scalar_datum<'a>(field: &VoField, raw: &[u8]) -> Datum<'a> {
    let int = |v: i128| {
        if field.is_null_int(v) {
            Datum::Null
        } else {
            Datum::Int(v)
        }
    };
    let float = |v: f64| {
        if v.is_nan() || field.is_null_float(v) {
            Datum::Null
        } else {
            Datum::Float(v)
        }
    };
    match field.ty {
        VoType::Boolean => match raw.first() {
            Some(b'T' | b't' | b'1') => Datum::Bool(true),
            Some(b'F' | b'f' | b'0') => Datum::Bool(false),
            _ => Datum::Null,
        },
        VoType::Bit => Datum::Bool(raw.first().is_some_and(|b| b & 0x80 != 0)),
        VoType::UByte => int(raw.first().copied().unwrap_or(0).into()),
        VoType::Short => int(i16::from_be_bytes(be(raw)).into()),
        VoType::Int => int(i32::from_be_bytes(be(raw)).into()),
        VoType::Long => int(i64::from_be_bytes(be(raw)).into()),
        VoType::Float => float(f32::from_be_bytes(be(raw)).into()),
        _ => float(f64::from_be_bytes(be(raw))),
    }
}

/// The list items of one binary array element (two for complex numbers).
fn element_items(field: &VoField, chunk: &[u8]) -> Vec<Item> {
    let int = |v: i128| {
        if field.is_null_int(v) {
            Item::Null
        } else {
            Item::Int(v)
        }
    };
    match field.ty {
        VoType::Boolean => vec![match chunk.first() {
            Some(b'T' | b't' | b'1') => Item::Bool(true),
            Some(b'F' | b'f' | b'0') => Item::Bool(false),
            _ => Item::Null,
        }],
        VoType::UByte => vec![int(chunk.first().copied().unwrap_or(0).into())],
        VoType::Short => vec![int(i16::from_be_bytes(be(chunk)).into())],
        VoType::Int => vec![int(i32::from_be_bytes(be(chunk)).into())],
        VoType::Long => vec![int(i64::from_be_bytes(be(chunk)).into())],
        VoType::Float => vec![Item::Float(f32::from_be_bytes(be(chunk)).into())],
        VoType::Double => vec![Item::Float(f64::from_be_bytes(be(chunk)))],
        VoType::FloatComplex => chunk
            .chunks_exact(4)
            .map(|p| Item::Float(f32::from_be_bytes(be(p)).into()))
            .collect(),
        VoType::DoubleComplex => chunk
            .chunks_exact(8)
            .map(|p| Item::Float(f64::from_be_bytes(be(p))))
            .collect(),
        VoType::Bit | VoType::Char | VoType::UnicodeChar => Vec::new(),
    }
}
