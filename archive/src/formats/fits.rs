//! FITS reader: the first BINTABLE extension of a file (the primary HDU and image or ASCII-table
//! extensions before it are skipped), big-endian throughout.
//!
//! TFORM codes L, B, I, J, K, A, E, D, C, M with repeat counts, plus P/Q variable-length arrays in
//! the heap; X (bit) columns and zero-repeat columns are skipped. TZEROn with TSCALn = 1 marks the
//! standard unsigned (and signed-byte) conventions, giving UInt16/UInt32/UInt64/Int8; any other
//! scaling gives Float64. TNULLn compares against the stored integer. TUNITn, TUCDn, TUTYPn,
//! TXTYPn and TCOMMn become column metadata. Every size in the header is validated against the
//! bytes actually present before anything is read or allocated.

use arrow::datatypes::DataType;

use super::builder::{ColumnBuilder, ColumnMeta, Datum, Item, TableBuilder, list_of};
use super::{FormatError, ImportedTable};

const BLOCK: usize = 2880;
const CARD: usize = 80;

fn err(message: impl Into<String>) -> FormatError {
    FormatError::Fits(message.into())
}

/// A header keyword's value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Int(i128),
    Float(f64),
    /// Complex numbers and malformed values, which no keyword used here needs.
    Other,
}

/// The keyword = value cards of one header, in order.
#[derive(Debug, Default)]
struct Header {
    cards: Vec<(String, Value)>,
}

impl Header {
    /// Parses a header at the start of `data`; returns it and its length in whole blocks.
    fn parse(data: &[u8]) -> Result<(Self, usize), FormatError> {
        let mut header = Self::default();
        for (i, card) in data.chunks(CARD).enumerate() {
            if card.len() < CARD {
                break;
            }
            let key = String::from_utf8_lossy(card.get(..8).unwrap_or_default())
                .trim()
                .to_owned();
            if key == "END" {
                let len = ((i + 1) * CARD).div_ceil(BLOCK) * BLOCK;
                if len > data.len() {
                    return Err(err("file truncated inside a header"));
                }
                return Ok((header, len));
            }
            if card.get(8..10) == Some(b"= ") {
                let text = String::from_utf8_lossy(card.get(10..).unwrap_or_default());
                header.cards.push((key, parse_value(&text)));
            }
        }
        Err(err("header without END card (truncated or not FITS)"))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.cards.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn int(&self, key: &str) -> Result<Option<i128>, FormatError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Int(v)) => Ok(Some(*v)),
            Some(_) => Err(err(format!("keyword {key} is not an integer"))),
        }
    }

    /// A required non-negative integer keyword, as usize.
    fn size(&self, key: &str) -> Result<usize, FormatError> {
        let v = self
            .int(key)?
            .ok_or_else(|| err(format!("missing keyword {key}")))?;
        usize::try_from(v).map_err(|_| err(format!("keyword {key} = {v} is out of range")))
    }

    fn float(&self, key: &str) -> Result<Option<f64>, FormatError> {
        match self.get(key) {
            None => Ok(None),
            // Integers above 2^53 (TZERO = 2^63) lose nothing that matters: they are compared
            // against exact powers of two.
            Some(Value::Int(v)) => Ok(Some(*v as f64)),
            Some(Value::Float(v)) => Ok(Some(*v)),
            Some(_) => Err(err(format!("keyword {key} is not a number"))),
        }
    }

    fn string(&self, key: &str) -> Option<String> {
        match self.get(key) {
            Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }

    fn boolean(&self, key: &str) -> bool {
        self.get(key) == Some(&Value::Bool(true))
    }
}

/// Parses the value field of a card (columns 11-80).
fn parse_value(text: &str) -> Value {
    let text = text.trim_start();
    if let Some(rest) = text.strip_prefix('\'') {
        let mut value = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    value.push('\'');
                } else {
                    return Value::Str(value.trim_end().to_owned());
                }
            } else {
                value.push(c);
            }
        }
        return Value::Other;
    }
    let token = text.split('/').next().unwrap_or_default().trim();
    match token {
        "T" => Value::Bool(true),
        "F" => Value::Bool(false),
        _ => {
            if let Ok(v) = token.parse::<i128>() {
                Value::Int(v)
            } else if let Ok(v) = token.replace(['D', 'd'], "E").parse::<f64>() {
                Value::Float(v)
            } else {
                Value::Other
            }
        }
    }
}

/// Reads the first BINTABLE extension of a FITS file.
pub fn read_fits_table(bytes: &[u8]) -> Result<ImportedTable, FormatError> {
    if !bytes.starts_with(b"SIMPLE  =") {
        return Err(err("not a FITS file (no SIMPLE card)"));
    }
    let mut pos = 0usize;
    let mut primary = true;
    loop {
        let rest = match bytes.get(pos..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => return Err(err("no BINTABLE extension in the file")),
        };
        let (header, header_len) = Header::parse(rest)?;
        let data = rest.get(header_len..).unwrap_or_default();
        if !primary && header.string("XTENSION").as_deref() == Some("BINTABLE") {
            return read_bintable(&header, data);
        }
        let data_len = hdu_data_len(&header, primary)?;
        if data_len > data.len() {
            return Err(err("file truncated inside an HDU's data"));
        }
        let padded = data_len.div_ceil(BLOCK) * BLOCK;
        pos = pos
            .checked_add(header_len)
            .and_then(|p| p.checked_add(padded))
            .ok_or_else(|| err("HDU size overflows"))?;
        primary = false;
    }
}

/// Data bytes of an HDU: |BITPIX|/8 × GCOUNT × (PCOUNT + NAXIS1 × ... × NAXISn).
fn hdu_data_len(header: &Header, primary: bool) -> Result<usize, FormatError> {
    let bitpix = header
        .int("BITPIX")?
        .ok_or_else(|| err("missing keyword BITPIX"))?;
    if !matches!(bitpix, 8 | 16 | 32 | 64 | -32 | -64) {
        return Err(err(format!("invalid BITPIX {bitpix}")));
    }
    let naxis = header.size("NAXIS")?;
    if naxis > 999 {
        return Err(err(format!("invalid NAXIS {naxis}")));
    }
    if naxis == 0 {
        return Ok(0);
    }
    // Random groups (primary only): NAXIS1 = 0 is a marker, not a dimension.
    let first = if primary && header.boolean("GROUPS") && header.size("NAXIS1")? == 0 {
        2
    } else {
        1
    };
    let overflow = || err("HDU data size overflows");
    let mut elements: usize = 1;
    for i in first..=naxis {
        elements = elements
            .checked_mul(header.size(&format!("NAXIS{i}"))?)
            .ok_or_else(overflow)?;
    }
    let pcount = match header.int("PCOUNT")? {
        Some(v) => usize::try_from(v).map_err(|_| err("invalid PCOUNT"))?,
        None => 0,
    };
    let gcount = match header.int("GCOUNT")? {
        Some(v) => usize::try_from(v).map_err(|_| err("invalid GCOUNT"))?,
        None => 1,
    };
    (bitpix.unsigned_abs() as usize / 8)
        .checked_mul(gcount)
        .and_then(|n| n.checked_mul(pcount.checked_add(elements)?))
        .ok_or_else(overflow)
}

/// TFORM data type letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    L,
    X,
    B,
    I,
    J,
    K,
    A,
    E,
    D,
    C,
    M,
}

impl Code {
    fn parse(c: char) -> Option<Self> {
        Some(match c {
            'L' => Self::L,
            'X' => Self::X,
            'B' => Self::B,
            'I' => Self::I,
            'J' => Self::J,
            'K' => Self::K,
            'A' => Self::A,
            'E' => Self::E,
            'D' => Self::D,
            'C' => Self::C,
            'M' => Self::M,
            _ => return None,
        })
    }

    /// Bytes per element (bits are handled apart).
    fn size(self) -> usize {
        match self {
            Self::L | Self::X | Self::B | Self::A => 1,
            Self::I => 2,
            Self::J | Self::E => 4,
            Self::K | Self::D | Self::C => 8,
            Self::M => 16,
        }
    }

    fn is_int(self) -> bool {
        matches!(self, Self::B | Self::I | Self::J | Self::K)
    }

    /// Bytes taken by `n` elements.
    fn bytes_for(self, n: usize) -> Option<usize> {
        match self {
            Self::X => Some(n.div_ceil(8)),
            other => n.checked_mul(other.size()),
        }
    }
}

/// Where a column's elements are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `repeat` elements inside the row.
    Fixed(usize),
    /// A P (32-bit) or Q (64-bit, `wide`) descriptor pointing into the heap.
    Heap { wide: bool },
}

/// How stored integers become values.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scaling {
    None,
    /// Integer offset (TSCAL = 1 and an integral TZERO, e.g. the unsigned conventions).
    Offset(i128),
    /// General linear scaling to float.
    Linear {
        scale: f64,
        zero: f64,
    },
}

#[derive(Debug, Clone)]
struct Column {
    meta: ColumnMeta,
    code: Code,
    layout: Layout,
    /// Byte offset in the row.
    offset: usize,
    tnull: Option<i128>,
    scaling: Scaling,
}

impl Column {
    /// Whether cells are single values rather than lists (strings are single values).
    fn is_scalar(&self) -> bool {
        self.code == Code::A
            || (self.layout == Layout::Fixed(1) && !matches!(self.code, Code::C | Code::M))
    }

    fn arrow_type(&self) -> DataType {
        if self.code == Code::A {
            return DataType::Utf8;
        }
        let scaled = matches!(self.scaling, Scaling::Linear { .. });
        if !self.is_scalar() {
            return list_of(match self.code {
                Code::L => DataType::Boolean,
                c if c.is_int() && !scaled => DataType::Int64,
                _ => DataType::Float64,
            });
        }
        match (self.code, self.scaling) {
            (Code::L, _) => DataType::Boolean,
            (_, Scaling::Linear { .. }) => DataType::Float64,
            (Code::B, Scaling::Offset(-128)) => DataType::Int8,
            (Code::I, Scaling::Offset(32_768)) => DataType::UInt16,
            (Code::J, Scaling::Offset(2_147_483_648)) => DataType::UInt32,
            (Code::K, Scaling::Offset(9_223_372_036_854_775_808)) => DataType::UInt64,
            (Code::B, Scaling::None) => DataType::UInt8,
            (Code::I, Scaling::None) => DataType::Int16,
            (Code::J, Scaling::None) => DataType::Int32,
            (Code::K, Scaling::None) => DataType::Int64,
            // Other integer offsets may leave the stored type's range.
            (c, Scaling::Offset(_)) if c.is_int() => DataType::Int64,
            (Code::E, _) => DataType::Float32,
            _ => DataType::Float64,
        }
    }

    /// The value of a stored integer.
    fn int_value(&self, raw: i128) -> Item {
        if self.tnull == Some(raw) {
            return Item::Null;
        }
        match self.scaling {
            Scaling::None => Item::Int(raw),
            // Saturating: an absurd TZERO then fails the column type's range check.
            Scaling::Offset(zero) => Item::Int(raw.saturating_add(zero)),
            Scaling::Linear { scale, zero } => Item::Float(zero + scale * raw as f64),
        }
    }

    /// The value of a stored float.
    fn float_value(&self, raw: f64) -> Item {
        match self.scaling {
            Scaling::Linear { scale, zero } => Item::Float(zero + scale * raw),
            Scaling::Offset(zero) => Item::Float(zero as f64 + raw),
            Scaling::None => Item::Float(raw),
        }
    }
}

/// Parses TFORMn: `rT`, or `rPT(max)` / `rQT(max)` for heap arrays.
fn parse_tform(tform: &str) -> Result<(Code, Layout), String> {
    let bad = || format!("unsupported TFORM '{tform}'");
    let t = tform.trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let repeat: usize = if digits == 0 {
        1
    } else {
        t[..digits].parse().map_err(|_| bad())?
    };
    let mut rest = t[digits..].chars();
    let letter = rest.next().ok_or_else(bad)?;
    match letter {
        'P' | 'Q' => {
            let code = rest.next().and_then(Code::parse).ok_or_else(bad)?;
            if repeat > 1 {
                return Err(bad());
            }
            Ok((
                code,
                if repeat == 0 {
                    Layout::Fixed(0)
                } else {
                    Layout::Heap {
                        wide: letter == 'Q',
                    }
                },
            ))
        }
        c => Ok((Code::parse(c).ok_or_else(bad)?, Layout::Fixed(repeat))),
    }
}

fn scaling(header: &Header, n: usize) -> Result<Scaling, FormatError> {
    let scale = header.float(&format!("TSCAL{n}"))?.unwrap_or(1.0);
    let zero_int = header.int(&format!("TZERO{n}")).ok().flatten();
    let zero = header.float(&format!("TZERO{n}"))?.unwrap_or(0.0);
    Ok(match zero_int {
        _ if scale == 1.0 && zero == 0.0 => Scaling::None,
        Some(z) if scale == 1.0 => Scaling::Offset(z),
        _ => Scaling::Linear { scale, zero },
    })
}

fn read_bintable(header: &Header, data: &[u8]) -> Result<ImportedTable, FormatError> {
    let row_width = header.size("NAXIS1")?;
    let rows = header.size("NAXIS2")?;
    let pcount = match header.int("PCOUNT")? {
        Some(v) => usize::try_from(v).map_err(|_| err("invalid PCOUNT"))?,
        None => 0,
    };
    let tfields = header.size("TFIELDS")?;
    if tfields > 999 {
        return Err(err(format!("invalid TFIELDS {tfields}")));
    }
    let main_len = row_width
        .checked_mul(rows)
        .ok_or_else(|| err("table size overflows"))?;
    let total = main_len
        .checked_add(pcount)
        .ok_or_else(|| err("table size overflows"))?;
    if total > data.len() {
        return Err(err(format!(
            "file truncated: the table needs {total} bytes of data, {} are present",
            data.len()
        )));
    }
    if row_width == 0 && rows > 0 {
        return Err(err("rows of zero bytes"));
    }
    let theap = match header.int("THEAP")? {
        Some(v) => usize::try_from(v).map_err(|_| err("invalid THEAP"))?,
        None => main_len,
    };
    let heap = data
        .get(theap..total)
        .filter(|_| theap >= main_len)
        .ok_or_else(|| err("THEAP points outside the table data"))?;

    let mut columns = Vec::new();
    let mut offset = 0usize;
    for n in 1..=tfields {
        let tform = header
            .string(&format!("TFORM{n}"))
            .ok_or_else(|| err(format!("missing keyword TFORM{n}")))?;
        let (code, layout) = parse_tform(&tform).map_err(|e| err(format!("column {n}: {e}")))?;
        let width = match layout {
            Layout::Fixed(r) => code.bytes_for(r),
            Layout::Heap { wide: false } => Some(8),
            Layout::Heap { wide: true } => Some(16),
        }
        .ok_or_else(|| err(format!("column {n}: TFORM '{tform}' is too large")))?;
        let column_offset = offset;
        offset = offset
            .checked_add(width)
            .filter(|&end| end <= row_width)
            .ok_or_else(|| {
                err(format!(
                    "columns up to {n} are wider than NAXIS1 = {row_width}"
                ))
            })?;
        if code == Code::X || layout == Layout::Fixed(0) {
            continue;
        }
        let meta = ColumnMeta {
            name: header
                .string(&format!("TTYPE{n}"))
                .unwrap_or_else(|| format!("col{n}")),
            unit: header.string(&format!("TUNIT{n}")),
            ucd: header.string(&format!("TUCD{n}")),
            utype: header.string(&format!("TUTYP{n}")),
            xtype: header.string(&format!("TXTYP{n}")),
            description: header.string(&format!("TCOMM{n}")),
            datatype: (code == Code::A).then(|| "char".to_owned()),
        };
        columns.push(Column {
            meta,
            code,
            layout,
            offset: column_offset,
            tnull: header.int(&format!("TNULL{n}")).ok().flatten(),
            scaling: if code == Code::L || code == Code::A {
                Scaling::None
            } else {
                scaling(header, n)?
            },
        });
    }
    if columns.is_empty() {
        return Err(err("the table has no readable columns"));
    }

    let specs: Vec<_> = columns
        .iter()
        .map(|c| (c.meta.clone(), c.arrow_type()))
        .collect();
    let mut builder = TableBuilder::new(&specs).map_err(err)?;
    for r in 0..rows {
        let start = r * row_width;
        let row = data
            .get(start..start + row_width)
            .ok_or_else(|| err("file truncated"))?;
        for (i, column) in columns.iter().enumerate() {
            let col = builder
                .column(i)
                .ok_or_else(|| err("column count mismatch"))?;
            read_cell(column, row, heap, col)
                .map_err(|e| err(format!("row {}, column '{}': {e}", r + 1, column.meta.name)))?;
        }
        builder.end_row()?;
    }
    builder.finish(header.string("EXTNAME"))
}

fn be<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(src) = bytes.get(..N) {
        a.copy_from_slice(src);
    }
    a
}

/// Decodes one cell from its row (and the heap for descriptors).
fn read_cell(
    column: &Column,
    row: &[u8],
    heap: &[u8],
    col: &mut ColumnBuilder,
) -> Result<(), String> {
    let field = row.get(column.offset..).unwrap_or_default();
    let bytes = match column.layout {
        Layout::Fixed(repeat) => {
            let len = column.code.bytes_for(repeat).unwrap_or(usize::MAX);
            field.get(..len).ok_or("row too short")?
        }
        Layout::Heap { wide } => {
            let (count, offset) = if wide {
                (
                    i64::from_be_bytes(be(field)),
                    i64::from_be_bytes(be(field.get(8..).unwrap_or_default())),
                )
            } else {
                (
                    i32::from_be_bytes(be(field)).into(),
                    i32::from_be_bytes(be(field.get(4..).unwrap_or_default())).into(),
                )
            };
            let bad = || format!("array descriptor ({count}, {offset}) points outside the heap");
            let count = usize::try_from(count).map_err(|_| bad())?;
            let offset = usize::try_from(offset).map_err(|_| bad())?;
            let len = column.code.bytes_for(count).ok_or_else(bad)?;
            let end = offset.checked_add(len).ok_or_else(bad)?;
            heap.get(offset..end).ok_or_else(bad)?
        }
    };
    if column.code == Code::A {
        let text = bytes.split(|&b| b == 0).next().unwrap_or_default();
        let text = match std::str::from_utf8(text) {
            Ok(s) => s.trim_end().to_owned(),
            // FITS strings are ASCII; anything else is read as Latin-1 rather than rejected.
            Err(_) => text.iter().map(|&b| char::from(b)).collect::<String>(),
        };
        let text = text.trim_end();
        // FITS has no null string; blank is how writers (Aster's included) say null.
        return col.append(if text.is_empty() {
            Datum::Null
        } else {
            Datum::Text(text)
        });
    }
    let items: Vec<Item> = match column.code {
        Code::L => bytes
            .iter()
            .map(|b| match b {
                b'T' => Item::Bool(true),
                b'F' => Item::Bool(false),
                _ => Item::Null,
            })
            .collect(),
        Code::B => bytes.iter().map(|&b| column.int_value(b.into())).collect(),
        Code::I => bytes
            .chunks_exact(2)
            .map(|c| column.int_value(i16::from_be_bytes(be(c)).into()))
            .collect(),
        Code::J => bytes
            .chunks_exact(4)
            .map(|c| column.int_value(i32::from_be_bytes(be(c)).into()))
            .collect(),
        Code::K => bytes
            .chunks_exact(8)
            .map(|c| column.int_value(i64::from_be_bytes(be(c)).into()))
            .collect(),
        Code::E | Code::C => bytes
            .chunks_exact(4)
            .map(|c| column.float_value(f32::from_be_bytes(be(c)).into()))
            .collect(),
        Code::D | Code::M => bytes
            .chunks_exact(8)
            .map(|c| column.float_value(f64::from_be_bytes(be(c))))
            .collect(),
        Code::A | Code::X => Vec::new(),
    };
    if !column.is_scalar() {
        return col.append_list(&items);
    }
    col.append(match items.first() {
        Some(Item::Bool(b)) => Datum::Bool(*b),
        Some(Item::Int(v)) => Datum::Int(*v),
        // Floats are null as NaN in FITS.
        Some(Item::Float(v)) if !v.is_nan() => Datum::Float(*v),
        _ => Datum::Null,
    })
}
