//! VOTable 1.4 output: the streaming BINARY2 and TABLEDATA encoders and the DALI error document.
//!
//! Layout follows DALI 1.1 / TAP 1.1: `<RESOURCE type="results">` opens with
//! `<INFO name="QUERY_STATUS" value="OK"/>`; when MAXREC truncated the rows, or the query failed
//! after rows were sent, a second QUERY_STATUS INFO (OVERFLOW or ERROR) follows the TABLE, which
//! the VOTable 1.3+ schema allows and which is the only option once data has been streamed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;

use super::columns::{
    ARRAY_NULL_LONG, ArrayCell, Cell, ColumnSpec, Elem, ElemType, IntType, Kind, Values,
    column_specs, prepare, write_f32, write_f64, write_int,
};
use super::{FormatError, QueryStatus, ResultInfo, TableEncoder};
use crate::xml::{escape_attr, escape_text};

const VOTABLE_OPEN: &str = concat!(
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
    "<VOTABLE version=\"1.4\" xmlns=\"http://www.ivoa.net/xml/VOTable/v1.3\"",
    " xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"",
    " xsi:schemaLocation=\"http://www.ivoa.net/xml/VOTable/v1.3",
    " http://www.ivoa.net/xml/VOTable/v1.3\">\n",
    "<RESOURCE type=\"results\">\n",
);

const VOTABLE_CLOSE: &str = "</RESOURCE>\n</VOTABLE>\n";

/// A complete DALI error document: VOTable 1.4 with
/// `<RESOURCE type="results"><INFO name="QUERY_STATUS" value="ERROR">message</INFO>`.
pub fn error_votable(message: &str) -> String {
    let mut out = Vec::with_capacity(VOTABLE_OPEN.len() + message.len() + 100);
    out.extend_from_slice(VOTABLE_OPEN.as_bytes());
    write_status_info(&mut out, &QueryStatus::Error(message.to_owned()));
    out.extend_from_slice(VOTABLE_CLOSE.as_bytes());
    // Only valid UTF-8 (the constants and escaped message) was written.
    String::from_utf8_lossy(&out).into_owned()
}

/// Which VOTable data serialization an encoder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serialization {
    Binary2,
    Tabledata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    /// Header written; `table` is false for a schema without columns (no TABLE is written,
    /// as the schema requires at least one FIELD in a TABLE).
    Open {
        table: bool,
    },
    Finished,
}

/// Streaming VOTable encoder.
#[derive(Debug)]
pub(crate) struct VotableEncoder {
    serialization: Serialization,
    specs: Vec<ColumnSpec>,
    state: State,
    stream: Base64Lines,
    row: Vec<u8>,
}

impl VotableEncoder {
    pub fn new(serialization: Serialization) -> Self {
        Self {
            serialization,
            specs: Vec::new(),
            state: State::New,
            stream: Base64Lines::default(),
            row: Vec::new(),
        }
    }

    fn write_field(spec: &ColumnSpec, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<FIELD name=\"");
        escape_attr(&spec.name, out);
        out.extend_from_slice(b"\" datatype=\"");
        out.extend_from_slice(spec.votable_datatype().as_bytes());
        out.push(b'"');
        if let Some(arraysize) = spec.votable_arraysize() {
            out.extend_from_slice(b" arraysize=\"");
            out.extend_from_slice(arraysize.as_bytes());
            out.push(b'"');
        }
        for (attr, value) in [
            ("unit", &spec.unit),
            ("ucd", &spec.ucd),
            ("utype", &spec.utype),
            ("xtype", &spec.xtype),
        ] {
            if let Some(value) = value {
                out.push(b' ');
                out.extend_from_slice(attr.as_bytes());
                out.extend_from_slice(b"=\"");
                escape_attr(value, out);
                out.push(b'"');
            }
        }
        let long_array = matches!(
            spec.kind,
            Kind::Array {
                elem: ElemType::Long,
                ..
            }
        );
        if spec.description.is_none() && !long_array {
            out.extend_from_slice(b"/>\n");
            return;
        }
        out.extend_from_slice(b">");
        if let Some(description) = &spec.description {
            out.extend_from_slice(b"<DESCRIPTION>");
            escape_text(description, out);
            out.extend_from_slice(b"</DESCRIPTION>");
        }
        if long_array {
            // Flags null elements inside integer arrays, which BINARY2's per-cell null flags
            // cannot express.
            out.extend_from_slice(format!("<VALUES null=\"{ARRAY_NULL_LONG}\"/>").as_bytes());
        }
        out.extend_from_slice(b"</FIELD>\n");
    }

    fn binary2_row(&mut self, columns: &[Values], row: usize) -> Result<(), FormatError> {
        let buf = &mut self.row;
        buf.clear();
        let flag_bytes = self.specs.len().div_ceil(8);
        buf.resize(flag_bytes, 0);
        for (c, (spec, values)) in self.specs.iter().zip(columns).enumerate() {
            let cell = values.cell(row);
            if matches!(cell, Cell::Null) {
                buf[c / 8] |= 0x80 >> (c % 8);
            }
            binary2_cell(spec, cell, buf)?;
        }
        Ok(())
    }

    fn tabledata_row(&self, columns: &[Values], row: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<TR>");
        for (spec, values) in self.specs.iter().zip(columns) {
            match values.cell(row) {
                // Fixed-size arrays cannot be empty; their null is all elements null.
                Cell::Null => match spec.kind {
                    Kind::Array {
                        elem,
                        fixed: Some(n),
                    } => {
                        out.extend_from_slice(b"<TD>");
                        for j in 0..n {
                            if j > 0 {
                                out.push(b' ');
                            }
                            match elem {
                                ElemType::Long => write_int(out, ARRAY_NULL_LONG),
                                ElemType::Float | ElemType::Double => {
                                    out.extend_from_slice(b"NaN");
                                }
                            }
                        }
                        out.extend_from_slice(b"</TD>");
                    }
                    _ => out.extend_from_slice(b"<TD/>"),
                },
                Cell::Text(s) if matches!(spec.kind, Kind::Text { ascii: true }) => {
                    out.extend_from_slice(b"<TD>");
                    escape_text(&ascii_only(s), out);
                    out.extend_from_slice(b"</TD>");
                }
                cell => {
                    out.extend_from_slice(b"<TD>");
                    tabledata_cell(cell, out);
                    out.extend_from_slice(b"</TD>");
                }
            }
        }
        out.extend_from_slice(b"</TR>\n");
    }
}

impl TableEncoder for VotableEncoder {
    fn begin(
        &mut self,
        schema: &Schema,
        info: &ResultInfo,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if self.state != State::New {
            return Err(FormatError::State("begin called twice"));
        }
        self.specs = column_specs(schema);
        out.extend_from_slice(VOTABLE_OPEN.as_bytes());
        write_status_info(out, &QueryStatus::Ok);
        if let Some(query) = &info.query {
            write_info(out, "QUERY", query);
        }
        for (name, value) in &info.extra_infos {
            write_info(out, name, value);
        }
        let table = !self.specs.is_empty();
        if table {
            out.extend_from_slice(b"<TABLE name=\"");
            let name = if info.table_name.trim().is_empty() {
                "result"
            } else {
                &info.table_name
            };
            escape_attr(name, out);
            out.extend_from_slice(b"\">\n");
            for spec in &self.specs {
                Self::write_field(spec, out);
            }
            out.extend_from_slice(match self.serialization {
                Serialization::Binary2 => b"<DATA><BINARY2><STREAM encoding=\"base64\">\n",
                Serialization::Tabledata => b"<DATA><TABLEDATA>\n",
            });
        }
        self.state = State::Open { table };
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let State::Open { table } = self.state else {
            return Err(FormatError::State("batch outside begin/finish"));
        };
        if !table {
            return Ok(());
        }
        if batch.num_columns() != self.specs.len() {
            return Err(FormatError::State("batch column count differs from schema"));
        }
        let columns = self
            .specs
            .iter()
            .zip(batch.columns())
            .map(|(spec, array)| prepare(spec, array))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            match self.serialization {
                Serialization::Binary2 => {
                    self.binary2_row(&columns, row)?;
                    self.stream.push(&self.row, out);
                }
                Serialization::Tabledata => self.tabledata_row(&columns, row, out),
            }
        }
        Ok(())
    }

    fn finish(&mut self, status: &QueryStatus, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let State::Open { table } = self.state else {
            return Err(FormatError::State("finish without begin, or twice"));
        };
        if table {
            match self.serialization {
                Serialization::Binary2 => {
                    self.stream.finish(out);
                    out.extend_from_slice(b"</STREAM></BINARY2></DATA>\n");
                }
                Serialization::Tabledata => out.extend_from_slice(b"</TABLEDATA></DATA>\n"),
            }
            out.extend_from_slice(b"</TABLE>\n");
        }
        if *status != QueryStatus::Ok {
            write_status_info(out, status);
        }
        out.extend_from_slice(VOTABLE_CLOSE.as_bytes());
        self.state = State::Finished;
        Ok(())
    }

    fn drain_tail(&mut self, _out: &mut Vec<u8>) -> Result<bool, FormatError> {
        Ok(false)
    }
}

fn write_status_info(out: &mut Vec<u8>, status: &QueryStatus) {
    match status {
        QueryStatus::Ok => out.extend_from_slice(b"<INFO name=\"QUERY_STATUS\" value=\"OK\"/>\n"),
        QueryStatus::Overflow => {
            out.extend_from_slice(b"<INFO name=\"QUERY_STATUS\" value=\"OVERFLOW\"/>\n");
        }
        QueryStatus::Error(message) => {
            out.extend_from_slice(b"<INFO name=\"QUERY_STATUS\" value=\"ERROR\">");
            // taplint (and users) need a message; never leave the INFO empty.
            escape_text(
                if message.trim().is_empty() {
                    "unspecified error"
                } else {
                    message
                },
                out,
            );
            out.extend_from_slice(b"</INFO>\n");
        }
    }
}

fn write_info(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b"<INFO name=\"");
    escape_attr(name, out);
    out.extend_from_slice(b"\" value=\"");
    escape_attr(value, out);
    out.extend_from_slice(b"\"/>\n");
}

/// Encodes one cell in BINARY2 layout (big-endian; the null flag was set by the caller, the
/// bytes of a null cell are still written for fixed-size types).
fn binary2_cell(spec: &ColumnSpec, cell: Cell<'_>, buf: &mut Vec<u8>) -> Result<(), FormatError> {
    match (spec.kind, cell) {
        (Kind::Boolean, Cell::Bool(b)) => buf.push(if b { b'T' } else { b'F' }),
        (Kind::Boolean, _) => buf.push(b'?'),
        (Kind::Int(t), Cell::Int(v)) => write_binary_int(spec, t, v, buf)?,
        (Kind::Int(t), _) => write_binary_int(spec, t, 0, buf)?,
        (Kind::Float, Cell::Float(v)) => buf.extend_from_slice(&v.to_be_bytes()),
        (Kind::Float, _) => buf.extend_from_slice(&f32::NAN.to_be_bytes()),
        (Kind::Double, Cell::Double(v)) => buf.extend_from_slice(&v.to_be_bytes()),
        (Kind::Double, _) => buf.extend_from_slice(&f64::NAN.to_be_bytes()),
        (Kind::Text { ascii: true }, Cell::Text(s)) => {
            write_counted(spec, ascii_only(s).as_bytes(), buf)?;
        }
        (Kind::Text { ascii: false }, Cell::Text(s)) => {
            // unicodeChar: UTF-16 code units (characters beyond the BMP as surrogate pairs,
            // which STIL and astropy decode), counted in characters of two bytes.
            let count_at = buf.len();
            buf.extend_from_slice(&0u32.to_be_bytes());
            let mut units = 0usize;
            for unit in s.encode_utf16() {
                buf.extend_from_slice(&unit.to_be_bytes());
                units += 1;
            }
            let units = u32::try_from(units)
                .map_err(|_| spec.value_error("string longer than 2^32 characters"))?;
            buf[count_at..count_at + 4].copy_from_slice(&units.to_be_bytes());
        }
        (Kind::Bytes, Cell::Bytes(b)) => write_counted(spec, b, buf)?,
        (Kind::Text { .. } | Kind::Bytes, _) => buf.extend_from_slice(&0u32.to_be_bytes()),
        (Kind::Array { fixed, .. }, Cell::Array(a)) => {
            if fixed.is_none() {
                write_count(spec, a.len(), buf)?;
            }
            for j in 0..a.len() {
                write_binary_elem(a.elem(j), buf);
            }
        }
        (Kind::Array { elem, fixed }, _) => match fixed {
            None => buf.extend_from_slice(&0u32.to_be_bytes()),
            Some(n) => {
                let null = match elem {
                    ElemType::Float => Elem::Float(None),
                    ElemType::Double => Elem::Double(None),
                    ElemType::Long => Elem::Long(None),
                };
                for _ in 0..n {
                    write_binary_elem(null, buf);
                }
            }
        },
    }
    Ok(())
}

fn write_binary_int(
    spec: &ColumnSpec,
    t: IntType,
    v: i64,
    buf: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let range_error = || spec.value_error(format!("value {v} does not fit the column type"));
    match t {
        IntType::UByte => buf.push(u8::try_from(v).map_err(|_| range_error())?),
        IntType::Short => {
            buf.extend_from_slice(&i16::try_from(v).map_err(|_| range_error())?.to_be_bytes());
        }
        IntType::Int => {
            buf.extend_from_slice(&i32::try_from(v).map_err(|_| range_error())?.to_be_bytes());
        }
        IntType::Long => buf.extend_from_slice(&v.to_be_bytes()),
    }
    Ok(())
}

fn write_binary_elem(elem: Elem, buf: &mut Vec<u8>) {
    match elem {
        Elem::Float(v) => buf.extend_from_slice(&v.unwrap_or(f32::NAN).to_be_bytes()),
        Elem::Double(v) => buf.extend_from_slice(&v.unwrap_or(f64::NAN).to_be_bytes()),
        Elem::Long(v) => buf.extend_from_slice(&v.unwrap_or(ARRAY_NULL_LONG).to_be_bytes()),
    }
}

fn write_count(spec: &ColumnSpec, n: usize, buf: &mut Vec<u8>) -> Result<(), FormatError> {
    let n = u32::try_from(n).map_err(|_| spec.value_error("array longer than 2^32 elements"))?;
    buf.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn write_counted(spec: &ColumnSpec, bytes: &[u8], buf: &mut Vec<u8>) -> Result<(), FormatError> {
    write_count(spec, bytes.len(), buf)?;
    buf.extend_from_slice(bytes);
    Ok(())
}

/// Writes a non-null cell's TABLEDATA text.
/// Text for a `char` column, which VOTable (and astropy) hold to ASCII: anything else
/// becomes '?'.
fn ascii_only(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii() {
        std::borrow::Cow::Borrowed(s)
    } else {
        s.chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect::<String>()
            .into()
    }
}

fn tabledata_cell(cell: Cell<'_>, out: &mut Vec<u8>) {
    match cell {
        Cell::Null => {}
        Cell::Bool(b) => out.push(if b { b'T' } else { b'F' }),
        Cell::Int(v) => write_int(out, v),
        Cell::Float(v) => write_td_f64(out, f64::from(v), |out| write_f32(out, v)),
        Cell::Double(v) => write_td_f64(out, v, |out| write_f64(out, v)),
        Cell::Text(s) => escape_text(s, out),
        Cell::Bytes(b) => {
            for (j, byte) in b.iter().enumerate() {
                if j > 0 {
                    out.push(b' ');
                }
                write_int(out, i64::from(*byte));
            }
        }
        Cell::Array(a) => write_td_array(a, out),
    }
}

/// Non-finite floats use the VOTable spellings "NaN", "+Inf", "-Inf".
fn write_td_f64(out: &mut Vec<u8>, v: f64, finite: impl FnOnce(&mut Vec<u8>)) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        finite(out);
    }
}

fn write_td_array(a: ArrayCell<'_>, out: &mut Vec<u8>) {
    for j in 0..a.len() {
        if j > 0 {
            out.push(b' ');
        }
        match a.elem(j) {
            Elem::Float(v) => {
                let v = v.unwrap_or(f32::NAN);
                write_td_f64(out, f64::from(v), |out| write_f32(out, v));
            }
            Elem::Double(v) => {
                let v = v.unwrap_or(f64::NAN);
                write_td_f64(out, v, |out| write_f64(out, v));
            }
            Elem::Long(v) => write_int(out, v.unwrap_or(ARRAY_NULL_LONG)),
        }
    }
}

/// Base64 text in 76-character lines, continuous across batches: bytes that do not fill a
/// line wait for the next push, and only `finish` pads.
#[derive(Debug, Default)]
struct Base64Lines {
    pending: Vec<u8>,
}

/// Raw bytes per 76-character base64 line.
const LINE_BYTES: usize = 57;

impl Base64Lines {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(bytes);
        let full = self.pending.len() / LINE_BYTES * LINE_BYTES;
        if full == 0 {
            return;
        }
        let mut line = [0u8; 76];
        for chunk in self.pending[..full].chunks_exact(LINE_BYTES) {
            // A 57-byte chunk always encodes to exactly 76 characters.
            if let Ok(n) = STANDARD.encode_slice(chunk, &mut line) {
                out.extend_from_slice(&line[..n]);
                out.push(b'\n');
            }
        }
        self.pending.drain(..full);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            out.extend_from_slice(STANDARD.encode(&self.pending).as_bytes());
            out.push(b'\n');
            self.pending.clear();
        }
    }
}
