//! FITS output: an empty primary HDU followed by one BINTABLE extension.
//!
//! A BINTABLE header states the row count, the string widths and the heap size before any
//! data, none of which is known while rows stream in. Rows are therefore spooled to an unnamed
//! temporary file (and variable-length arrays to a second one, the future heap); `finish`
//! writes the headers and `drain_tail` then re-reads the spool, emitting the data in chunks of
//! about 1 MiB so memory stays bounded whatever the result size.
//!
//! Column mapping: booleans `L`; UInt8 `B`; Int8/Int16 `I`; UInt16/Int32 `J`; UInt32/Int64/
//! UInt64 `K` (integer nulls via `TNULLn`, declared only for columns that had nulls); floats `E`/`D`
//! with NaN for null; text (including ISO 8601 timestamps) as fixed-width `A` of the widest value;
//! bytes and variable-length arrays as `P`/`Q` heap descriptors; fixed-length arrays as `nE`/`nD`/`nK`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;

use super::columns::{
    ARRAY_NULL_LONG, Cell, ColumnSpec, Elem, ElemType, IntType, Kind, Values, column_specs, prepare,
};
use super::{FormatError, QueryStatus, ResultInfo, TableEncoder};

const BLOCK: usize = 2880;
const CARD: usize = 80;
/// Output appended per `drain_tail` call, roughly.
const CHUNK: usize = 1 << 20;
/// FITS keywords carry the column number in at most three digits.
const MAX_COLUMNS: usize = 999;

/// Physical FITS storage of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Logical,
    /// Integer scalar of `width` bytes (1 = unsigned `B`, 2 `I`, 4 `J`, 8 `K`).
    Int(usize),
    Float,
    Double,
    Text,
    /// Variable-length array in the heap; `None` elem means bytes (`PB`).
    Var(Option<ElemType>),
    Fixed(ElemType, usize),
}

impl Code {
    fn of(kind: Kind) -> Self {
        match kind {
            Kind::Boolean => Self::Logical,
            Kind::Int(IntType::UByte) => Self::Int(1),
            Kind::Int(IntType::Short) => Self::Int(2),
            Kind::Int(IntType::Int) => Self::Int(4),
            Kind::Int(IntType::Long) => Self::Int(8),
            Kind::Float => Self::Float,
            Kind::Double => Self::Double,
            Kind::Text { .. } => Self::Text,
            Kind::Bytes => Self::Var(None),
            Kind::Array { elem, fixed: None } => Self::Var(Some(elem)),
            Kind::Array {
                elem,
                fixed: Some(n),
            } => Self::Fixed(elem, n),
        }
    }

    /// Size of the column's entry in the spool file.
    fn spool_width(self) -> usize {
        match self {
            Self::Logical => 1,
            Self::Int(w) => w,
            Self::Float => 4,
            Self::Double => 8,
            // u32 length prefix; the bytes follow.
            Self::Text => 4,
            // u64 element count + u64 heap byte offset.
            Self::Var(_) => 16,
            Self::Fixed(elem, n) => elem_width(Some(elem)) * n,
        }
    }

    /// The null sentinel of integer columns, as stored.
    fn int_null(self) -> Option<i64> {
        match self {
            Self::Int(1) => Some(255),
            Self::Int(2) => Some(i16::MIN.into()),
            Self::Int(4) => Some(i32::MIN.into()),
            // Variable-length arrays get no TNULL: astropy's Table reader fails on TNULL for
            // them, so a null element stays the plain value i64::MIN there.
            Self::Int(_) | Self::Fixed(ElemType::Long, _) => Some(ARRAY_NULL_LONG),
            _ => None,
        }
    }
}

fn elem_width(elem: Option<ElemType>) -> usize {
    match elem {
        None => 1,
        Some(ElemType::Float) => 4,
        Some(ElemType::Double | ElemType::Long) => 8,
    }
}

fn elem_letter(elem: Option<ElemType>) -> char {
    match elem {
        None => 'B',
        Some(ElemType::Float) => 'E',
        Some(ElemType::Double) => 'D',
        Some(ElemType::Long) => 'K',
    }
}

/// What was seen of a column while spooling, needed for its header.
#[derive(Debug, Clone)]
struct ColumnStats {
    code: Code,
    had_null: bool,
    /// A real value equal to the null sentinel was written.
    sentinel_used: bool,
    /// Widest string, longest variable array.
    max_len: u64,
}

/// A temporary file that is deleted when dropped (on Unix it is unlinked at once, so it also
/// disappears if the process dies).
#[derive(Debug)]
struct SpoolFile {
    file: File,
    path: PathBuf,
}

impl SpoolFile {
    fn create(tag: &str) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "aster-fits-{}-{n}-{nanos}.{tag}",
                std::process::id()
            ));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    #[cfg(unix)]
                    let _ = std::fs::remove_file(&path);
                    return Ok(Self { file, path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        // Already gone on Unix; elsewhere this is the only clean-up.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Read for SpoolFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for SpoolFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for SpoolFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Spool files while rows stream in.
#[derive(Debug)]
struct Spooling {
    rows: BufWriter<SpoolFile>,
    heap: BufWriter<SpoolFile>,
    heap_len: u64,
    row_count: u64,
}

/// Data still to emit after `finish`.
#[derive(Debug)]
struct Tail {
    rows: BufReader<SpoolFile>,
    heap: BufReader<SpoolFile>,
    rows_left: u64,
    heap_left: u64,
    padding_left: usize,
    /// Final FITS widths of text columns, by column.
    text_widths: Vec<usize>,
    /// Heap descriptors are `Q` (64-bit) rather than `P`.
    wide_descriptors: bool,
}

#[derive(Debug)]
enum State {
    New,
    Spooling(Spooling),
    Draining(Tail),
    Done,
}

/// Spooling FITS encoder.
#[derive(Debug)]
pub(crate) struct FitsEncoder {
    specs: Vec<ColumnSpec>,
    stats: Vec<ColumnStats>,
    table_name: String,
    state: State,
    row: Vec<u8>,
}

impl FitsEncoder {
    pub fn new() -> Self {
        Self {
            specs: Vec::new(),
            stats: Vec::new(),
            table_name: String::new(),
            state: State::New,
            row: Vec::new(),
        }
    }
}

impl TableEncoder for FitsEncoder {
    fn begin(
        &mut self,
        schema: &Schema,
        info: &ResultInfo,
        _out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if !matches!(self.state, State::New) {
            return Err(FormatError::State("begin called twice"));
        }
        self.specs = column_specs(schema);
        if self.specs.len() > MAX_COLUMNS {
            return Err(FormatError::Value {
                column: String::new(),
                message: format!(
                    "FITS tables hold at most {MAX_COLUMNS} columns, the result has {}",
                    self.specs.len()
                ),
            });
        }
        self.stats = self
            .specs
            .iter()
            .map(|spec| ColumnStats {
                code: Code::of(spec.kind),
                had_null: false,
                sentinel_used: false,
                max_len: 0,
            })
            .collect();
        self.table_name = info.table_name.clone();
        self.state = State::Spooling(Spooling {
            rows: BufWriter::new(SpoolFile::create("rows")?),
            heap: BufWriter::new(SpoolFile::create("heap")?),
            heap_len: 0,
            row_count: 0,
        });
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch, _out: &mut Vec<u8>) -> Result<(), FormatError> {
        let State::Spooling(spool) = &mut self.state else {
            return Err(FormatError::State("batch outside begin/finish"));
        };
        if batch.num_columns() != self.specs.len() {
            return Err(FormatError::State("batch column count differs from schema"));
        }
        let columns = self
            .specs
            .iter()
            .zip(batch.columns())
            .map(|(spec, array)| prepare(spec, array))
            .collect::<Result<Vec<Values>, _>>()?;
        for r in 0..batch.num_rows() {
            self.row.clear();
            for ((spec, stats), values) in self.specs.iter().zip(&mut self.stats).zip(&columns) {
                spool_cell(spec, stats, values.cell(r), &mut self.row, spool)?;
            }
            spool.rows.write_all(&self.row)?;
            spool.row_count += 1;
        }
        Ok(())
    }

    fn finish(&mut self, status: &QueryStatus, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let State::Spooling(spool) = std::mem::replace(&mut self.state, State::Done) else {
            return Err(FormatError::State("finish without begin, or twice"));
        };
        let overflow = match status {
            QueryStatus::Ok => false,
            QueryStatus::Overflow => true,
            QueryStatus::Error(message) => {
                return Err(FormatError::StatusNotRepresentable {
                    format: "FITS",
                    message: message.clone(),
                });
            }
        };
        for (spec, stats) in self.specs.iter().zip(&self.stats) {
            if let (true, true, Some(sentinel)) =
                (stats.had_null, stats.sentinel_used, stats.code.int_null())
            {
                return Err(spec.value_error(format!(
                    "FITS cannot tell nulls from the value {sentinel} in the same column"
                )));
            }
        }
        let wide_descriptors = spool.heap_len > i32::MAX as u64
            || self
                .stats
                .iter()
                .any(|s| matches!(s.code, Code::Var(_)) && s.max_len > i32::MAX as u64);
        let text_widths: Vec<usize> = self
            .stats
            .iter()
            .map(|s| match s.code {
                // FITS has no zero-width strings that every reader accepts.
                Code::Text => usize::try_from(s.max_len).unwrap_or(usize::MAX).max(1),
                _ => 0,
            })
            .collect();
        let row_width = self
            .stats
            .iter()
            .zip(&text_widths)
            .try_fold(0usize, |acc, (s, &text)| {
                let w = match s.code {
                    Code::Text => text,
                    Code::Var(_) if wide_descriptors => 16,
                    Code::Var(_) => 8,
                    other => other.spool_width(),
                };
                acc.checked_add(w)
            })
            .ok_or(FormatError::State("row width overflows"))?;
        let data_len = (row_width as u64)
            .checked_mul(spool.row_count)
            .and_then(|n| n.checked_add(spool.heap_len))
            .ok_or(FormatError::State("table size overflows"))?;

        write_primary_header(out);
        let mut header = Header::default();
        header.string("XTENSION", "BINTABLE", "binary table extension");
        header.int("BITPIX", 8, "");
        header.int("NAXIS", 2, "");
        header.int("NAXIS1", row_width as i128, "bytes per row");
        header.int("NAXIS2", spool.row_count.into(), "rows");
        header.int("PCOUNT", spool.heap_len.into(), "heap bytes");
        header.int("GCOUNT", 1, "");
        header.int("TFIELDS", self.specs.len() as i128, "");
        for (i, ((spec, stats), width)) in self
            .specs
            .iter()
            .zip(&self.stats)
            .zip(&text_widths)
            .enumerate()
        {
            let n = i + 1;
            header.string(&format!("TTYPE{n}"), &spec.name, "");
            header.string(
                &format!("TFORM{n}"),
                &tform(stats, *width, wide_descriptors),
                "",
            );
            if let Some(unit) = &spec.unit {
                header.string(&format!("TUNIT{n}"), unit, "");
            }
            if let (true, Some(null)) = (stats.had_null, stats.code.int_null()) {
                header.int(&format!("TNULL{n}"), null.into(), "");
            }
            if let Some(ucd) = &spec.ucd {
                header.string(&format!("TUCD{n}"), ucd, "");
            }
            if let Some(utype) = &spec.utype {
                header.string(&format!("TUTYP{n}"), utype, "");
            }
            if let Some(xtype) = &spec.xtype {
                header.string(&format!("TXTYP{n}"), xtype, "");
            }
            if let Some(description) = &spec.description {
                header.string(&format!("TCOMM{n}"), description, "");
            }
        }
        let name = if self.table_name.trim().is_empty() {
            "result"
        } else {
            &self.table_name
        };
        header.string("EXTNAME", name, "");
        if overflow {
            header.comment("QUERY_STATUS=OVERFLOW: the row limit (MAXREC) truncated this table");
        }
        header.finish(out);

        let mut rows = spool.rows.into_inner().map_err(|e| e.into_error())?;
        let mut heap = spool.heap.into_inner().map_err(|e| e.into_error())?;
        rows.seek(SeekFrom::Start(0))?;
        heap.seek(SeekFrom::Start(0))?;
        let data_tail = usize::try_from(data_len % BLOCK as u64).unwrap_or(0);
        self.state = State::Draining(Tail {
            rows: BufReader::new(rows),
            heap: BufReader::new(heap),
            rows_left: spool.row_count,
            heap_left: spool.heap_len,
            padding_left: if data_tail == 0 { 0 } else { BLOCK - data_tail },
            text_widths,
            wide_descriptors,
        });
        Ok(())
    }

    fn drain_tail(&mut self, out: &mut Vec<u8>) -> Result<bool, FormatError> {
        let State::Draining(tail) = &mut self.state else {
            return Ok(false);
        };
        let limit = out.len().saturating_add(CHUNK);
        let mut buf = Vec::new();
        while tail.rows_left > 0 && out.len() < limit {
            for (i, stats) in self.stats.iter().enumerate() {
                let width = tail.text_widths.get(i).copied().unwrap_or_default();
                emit_cell(tail, stats.code, width, &mut buf, out)?;
            }
            tail.rows_left -= 1;
        }
        if tail.rows_left == 0 && tail.heap_left > 0 && out.len() < limit {
            let room = (limit - out.len()) as u64;
            let n = usize::try_from(tail.heap_left.min(room)).unwrap_or(CHUNK);
            let start = out.len();
            out.resize(start + n, 0);
            tail.heap.read_exact(&mut out[start..])?;
            tail.heap_left -= n as u64;
        }
        if tail.rows_left == 0 && tail.heap_left == 0 {
            out.resize(out.len() + tail.padding_left, 0);
            self.state = State::Done;
            return Ok(false);
        }
        Ok(true)
    }
}

fn tform(stats: &ColumnStats, text_width: usize, wide: bool) -> String {
    match stats.code {
        Code::Logical => "1L".into(),
        Code::Int(1) => "1B".into(),
        Code::Int(2) => "1I".into(),
        Code::Int(4) => "1J".into(),
        Code::Int(_) => "1K".into(),
        Code::Float => "1E".into(),
        Code::Double => "1D".into(),
        Code::Text => format!("{text_width}A"),
        Code::Var(elem) => format!(
            "1{}{}({})",
            if wide { 'Q' } else { 'P' },
            elem_letter(elem),
            stats.max_len
        ),
        Code::Fixed(elem, n) => format!("{n}{}", elem_letter(Some(elem))),
    }
}

/// Writes one cell into the spool row, updating the column's statistics.
fn spool_cell(
    spec: &ColumnSpec,
    stats: &mut ColumnStats,
    cell: Cell<'_>,
    row: &mut Vec<u8>,
    spool: &mut Spooling,
) -> Result<(), FormatError> {
    if matches!(cell, Cell::Null) {
        stats.had_null = true;
    }
    match (stats.code, cell) {
        (Code::Logical, Cell::Bool(b)) => row.push(if b { b'T' } else { b'F' }),
        (Code::Logical, _) => row.push(0),
        (Code::Int(width), cell) => {
            let null = stats.code.int_null().unwrap_or_default();
            let v = match cell {
                Cell::Int(v) => {
                    stats.sentinel_used |= v == null;
                    v
                }
                _ => null,
            };
            let range = || spec.value_error(format!("value {v} does not fit the column type"));
            match width {
                1 => row.push(u8::try_from(v).map_err(|_| range())?),
                2 => row.extend_from_slice(&i16::try_from(v).map_err(|_| range())?.to_be_bytes()),
                4 => row.extend_from_slice(&i32::try_from(v).map_err(|_| range())?.to_be_bytes()),
                _ => row.extend_from_slice(&v.to_be_bytes()),
            }
        }
        (Code::Float, Cell::Float(v)) => row.extend_from_slice(&v.to_be_bytes()),
        (Code::Float, _) => row.extend_from_slice(&f32::NAN.to_be_bytes()),
        (Code::Double, Cell::Double(v)) => row.extend_from_slice(&v.to_be_bytes()),
        (Code::Double, _) => row.extend_from_slice(&f64::NAN.to_be_bytes()),
        (Code::Text, cell) => {
            let bytes = match cell {
                Cell::Text(s) => s.as_bytes(),
                _ => b"",
            };
            let len = u32::try_from(bytes.len())
                .map_err(|_| spec.value_error("string longer than 4 GiB"))?;
            stats.max_len = stats.max_len.max(len.into());
            row.extend_from_slice(&len.to_le_bytes());
            row.extend_from_slice(bytes);
        }
        (Code::Var(_), cell) => {
            let start = spool.heap_len;
            let count = match cell {
                Cell::Bytes(b) => {
                    spool.heap.write_all(b)?;
                    b.len()
                }
                Cell::Array(a) => {
                    let mut elems = Vec::with_capacity(a.len() * 8);
                    for j in 0..a.len() {
                        write_elem(stats, a.elem(j), &mut elems);
                    }
                    spool.heap.write_all(&elems)?;
                    a.len()
                }
                _ => 0,
            };
            spool.heap_len = (count as u64)
                .checked_mul(elem_width_of(stats.code) as u64)
                .and_then(|bytes| spool.heap_len.checked_add(bytes))
                .ok_or(FormatError::State("heap size overflows"))?;
            let count = count as u64;
            stats.max_len = stats.max_len.max(count);
            row.extend_from_slice(&count.to_le_bytes());
            row.extend_from_slice(&start.to_le_bytes());
        }
        (Code::Fixed(elem, n), cell) => match cell {
            Cell::Array(a) => {
                for j in 0..a.len() {
                    write_elem(stats, a.elem(j), row);
                }
            }
            _ => {
                let null = match elem {
                    ElemType::Float => Elem::Float(None),
                    ElemType::Double => Elem::Double(None),
                    ElemType::Long => Elem::Long(None),
                };
                for _ in 0..n {
                    write_elem(stats, null, row);
                }
            }
        },
    }
    Ok(())
}

fn elem_width_of(code: Code) -> usize {
    match code {
        Code::Var(elem) => elem_width(elem),
        _ => 0,
    }
}

fn write_elem(stats: &mut ColumnStats, elem: Elem, buf: &mut Vec<u8>) {
    match elem {
        Elem::Float(v) => buf.extend_from_slice(&v.unwrap_or(f32::NAN).to_be_bytes()),
        Elem::Double(v) => buf.extend_from_slice(&v.unwrap_or(f64::NAN).to_be_bytes()),
        Elem::Long(v) => {
            match v {
                None => stats.had_null = true,
                Some(ARRAY_NULL_LONG) => stats.sentinel_used = true,
                Some(_) => {}
            }
            buf.extend_from_slice(&v.unwrap_or(ARRAY_NULL_LONG).to_be_bytes());
        }
    }
}

/// Re-reads one spooled cell and appends its final FITS bytes.
fn emit_cell(
    tail: &mut Tail,
    code: Code,
    text_width: usize,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    match code {
        Code::Text => {
            let mut len = [0u8; 4];
            tail.rows.read_exact(&mut len)?;
            let len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
            if len > text_width {
                return Err(FormatError::State("spool file is inconsistent"));
            }
            buf.resize(len, 0);
            tail.rows.read_exact(buf)?;
            out.extend_from_slice(buf);
            out.resize(out.len() + (text_width - len), b' ');
        }
        Code::Var(_) => {
            let mut desc = [0u8; 16];
            tail.rows.read_exact(&mut desc)?;
            let (count, offset) = desc.split_at(8);
            let count = u64::from_le_bytes(count.try_into().unwrap_or_default());
            let offset = u64::from_le_bytes(offset.try_into().unwrap_or_default());
            if tail.wide_descriptors {
                out.extend_from_slice(&count.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
            } else {
                let narrow = |v: u64| {
                    u32::try_from(v).map_err(|_| FormatError::State("spool file is inconsistent"))
                };
                out.extend_from_slice(&narrow(count)?.to_be_bytes());
                out.extend_from_slice(&narrow(offset)?.to_be_bytes());
            }
        }
        fixed => {
            let start = out.len();
            out.resize(start + fixed.spool_width(), 0);
            tail.rows.read_exact(&mut out[start..])?;
        }
    }
    Ok(())
}

fn write_primary_header(out: &mut Vec<u8>) {
    let mut h = Header::default();
    h.boolean("SIMPLE", true, "conforms to FITS standard");
    h.int("BITPIX", 8, "");
    h.int("NAXIS", 0, "no primary data");
    h.boolean("EXTEND", true, "extensions follow");
    h.finish(out);
}

/// Builds a header of 80-character cards.
#[derive(Debug, Default)]
struct Header {
    bytes: Vec<u8>,
}

impl Header {
    fn card(&mut self, text: &str) {
        // Headers are printable ASCII only; anything else would make the file invalid.
        let mut card: Vec<u8> = text
            .chars()
            .map(|c| {
                if (' '..='~').contains(&c) {
                    c as u8
                } else {
                    b'?'
                }
            })
            .take(CARD)
            .collect();
        card.resize(CARD, b' ');
        self.bytes.extend_from_slice(&card);
    }

    fn keyed(&mut self, key: &str, value: &str, comment: &str) {
        let mut text = format!("{key:<8}= {value}");
        if !comment.is_empty() && text.len() + 3 + comment.len() <= CARD {
            text.push_str(" / ");
            text.push_str(comment);
        }
        self.card(&text);
    }

    fn int(&mut self, key: &str, value: i128, comment: &str) {
        self.keyed(key, &format!("{value:>20}"), comment);
    }

    fn boolean(&mut self, key: &str, value: bool, comment: &str) {
        self.keyed(
            key,
            &format!("{:>20}", if value { 'T' } else { 'F' }),
            comment,
        );
    }

    /// A string value, quotes doubled and truncated to fit the card (FITS fixed format pads
    /// the quoted value to at least 8 characters).
    fn string(&mut self, key: &str, value: &str, comment: &str) {
        const ROOM: usize = CARD - 10 - 2;
        let mut quoted = String::new();
        for c in value.trim_end().chars() {
            let c = if (' '..='~').contains(&c) { c } else { '?' };
            let add = if c == '\'' { 2 } else { 1 };
            if quoted.len() + add > ROOM {
                break;
            }
            quoted.push(c);
            if c == '\'' {
                quoted.push('\'');
            }
        }
        self.keyed(key, &format!("'{quoted:<8}'"), comment);
    }

    fn comment(&mut self, text: &str) {
        self.card(&format!("COMMENT {text}"));
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        self.card("END");
        let tail = self.bytes.len() % BLOCK;
        if tail != 0 {
            self.bytes.resize(self.bytes.len() + BLOCK - tail, b' ');
        }
        out.append(&mut self.bytes);
    }
}
