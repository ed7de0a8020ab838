//! CSV (RFC 4180) and TSV output: a header row of column names, then one line per row.
//!
//! Nulls are empty fields; arrays are space-separated numbers in one field; non-finite floats
//! are "NaN", "Infinity", "-Infinity" (spellings Rust, Python and Java all parse). Neither
//! format can carry a query status, so a mid-stream error is returned to the caller, which must
//! abort the response rather than let a truncated file look complete.

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;

use super::columns::{
    ARRAY_NULL_LONG, Cell, ColumnSpec, Elem, Values, column_specs, prepare, write_f32, write_f64,
    write_int,
};
use super::{FormatError, QueryStatus, ResultInfo, TableEncoder};

/// Which delimited-text flavour to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Csv,
    Tsv,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Self::Csv => "CSV",
            Self::Tsv => "TSV",
        }
    }

    fn separator(self) -> u8 {
        match self {
            Self::Csv => b',',
            Self::Tsv => b'\t',
        }
    }

    /// RFC 4180 ends records with CRLF; TSV (IANA text/tab-separated-values) with LF.
    fn line_end(self) -> &'static [u8] {
        match self {
            Self::Csv => b"\r\n",
            Self::Tsv => b"\n",
        }
    }
}

/// Streaming CSV/TSV encoder.
#[derive(Debug)]
pub(crate) struct DelimitedEncoder {
    dialect: Dialect,
    specs: Option<Vec<ColumnSpec>>,
    field: Vec<u8>,
}

impl DelimitedEncoder {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            specs: None,
            field: Vec::new(),
        }
    }

    /// Appends one field's text, quoted or escaped as the dialect requires.
    fn write_field(&self, text: &[u8], out: &mut Vec<u8>) {
        match self.dialect {
            Dialect::Csv => {
                let needs_quotes = text
                    .iter()
                    .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
                    || text.first().is_some_and(u8::is_ascii_whitespace)
                    || text.last().is_some_and(u8::is_ascii_whitespace);
                if needs_quotes {
                    out.push(b'"');
                    for &b in text {
                        if b == b'"' {
                            out.push(b'"');
                        }
                        out.push(b);
                    }
                    out.push(b'"');
                } else {
                    out.extend_from_slice(text);
                }
            }
            Dialect::Tsv => {
                for &b in text {
                    match b {
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        _ => out.push(b),
                    }
                }
            }
        }
    }
}

impl TableEncoder for DelimitedEncoder {
    fn begin(
        &mut self,
        schema: &Schema,
        _info: &ResultInfo,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if self.specs.is_some() {
            return Err(FormatError::State("begin called twice"));
        }
        let specs = column_specs(schema);
        for (i, spec) in specs.iter().enumerate() {
            if i > 0 {
                out.push(self.dialect.separator());
            }
            self.write_field(spec.name.as_bytes(), out);
        }
        out.extend_from_slice(self.dialect.line_end());
        self.specs = Some(specs);
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let specs = self
            .specs
            .as_ref()
            .ok_or(FormatError::State("batch before begin"))?;
        if batch.num_columns() != specs.len() {
            return Err(FormatError::State("batch column count differs from schema"));
        }
        let columns = specs
            .iter()
            .zip(batch.columns())
            .map(|(spec, array)| prepare(spec, array))
            .collect::<Result<Vec<Values>, _>>()?;
        let mut field = std::mem::take(&mut self.field);
        for row in 0..batch.num_rows() {
            for (i, values) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(self.dialect.separator());
                }
                field.clear();
                cell_text(values.cell(row), &mut field);
                self.write_field(&field, out);
            }
            out.extend_from_slice(self.dialect.line_end());
        }
        self.field = field;
        Ok(())
    }

    fn finish(&mut self, status: &QueryStatus, _out: &mut Vec<u8>) -> Result<(), FormatError> {
        if self.specs.is_none() {
            return Err(FormatError::State("finish before begin"));
        }
        match status {
            // The row limit is the client's own MAXREC; the text formats have no place to say
            // it was reached.
            QueryStatus::Ok | QueryStatus::Overflow => Ok(()),
            QueryStatus::Error(message) => Err(FormatError::StatusNotRepresentable {
                format: self.dialect.name(),
                message: message.clone(),
            }),
        }
    }

    fn drain_tail(&mut self, _out: &mut Vec<u8>) -> Result<bool, FormatError> {
        Ok(false)
    }
}

/// The unquoted text of a cell; empty for null.
fn cell_text(cell: Cell<'_>, out: &mut Vec<u8>) {
    match cell {
        Cell::Null => {}
        Cell::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Cell::Int(v) => write_int(out, v),
        Cell::Float(v) => float_text(out, f64::from(v), |out| write_f32(out, v)),
        Cell::Double(v) => float_text(out, v, |out| write_f64(out, v)),
        Cell::Text(s) => out.extend_from_slice(s.as_bytes()),
        Cell::Bytes(b) => {
            for (j, byte) in b.iter().enumerate() {
                if j > 0 {
                    out.push(b' ');
                }
                write_int(out, i64::from(*byte));
            }
        }
        Cell::Array(a) => {
            for j in 0..a.len() {
                if j > 0 {
                    out.push(b' ');
                }
                match a.elem(j) {
                    Elem::Float(v) => {
                        let v = v.unwrap_or(f32::NAN);
                        float_text(out, f64::from(v), |out| write_f32(out, v));
                    }
                    Elem::Double(v) => {
                        let v = v.unwrap_or(f64::NAN);
                        float_text(out, v, |out| write_f64(out, v));
                    }
                    Elem::Long(v) => write_int(out, v.unwrap_or(ARRAY_NULL_LONG)),
                }
            }
        }
    }
}

fn float_text(out: &mut Vec<u8>, v: f64, finite: impl FnOnce(&mut Vec<u8>)) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        finite(out);
    }
}
