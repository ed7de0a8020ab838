//! JSON output in the layout several TAP services use:
//! `{"metadata":[{"name":..,"datatype":..,...}],"data":[[...],...]}`, streamed row by row, with
//! `"status":"OVERFLOW"` (or `"status":"ERROR","message":..`) appended when applicable.
//!
//! Non-finite floats become `null` (JSON has no NaN); arrays become JSON arrays.

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

use super::columns::{Cell, ColumnSpec, Elem, Values, column_specs, prepare};
use super::{FormatError, QueryStatus, ResultInfo, TableEncoder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Open { columns: usize, rows: u64 },
    Finished,
}

/// Streaming JSON encoder.
#[derive(Debug)]
pub(crate) struct JsonEncoder {
    specs: Vec<ColumnSpec>,
    state: State,
}

impl JsonEncoder {
    pub fn new() -> Self {
        Self {
            specs: Vec::new(),
            state: State::New,
        }
    }
}

fn metadata(spec: &ColumnSpec) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), spec.name.clone().into());
    m.insert("datatype".into(), spec.votable_datatype().into());
    if let Some(arraysize) = spec.votable_arraysize() {
        m.insert("arraysize".into(), arraysize.into());
    }
    for (key, value) in [
        ("xtype", &spec.xtype),
        ("unit", &spec.unit),
        ("ucd", &spec.ucd),
        ("utype", &spec.utype),
        ("description", &spec.description),
    ] {
        if let Some(value) = value {
            m.insert(key.into(), value.clone().into());
        }
    }
    Value::Object(m)
}

/// Serializes a value that is known to be representable (strings, finite numbers, nulls).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // serde_json only fails on non-string map keys or failing writers; a Vec never fails.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn write_cell(cell: Cell<'_>, out: &mut Vec<u8>) {
    match cell {
        Cell::Null => out.extend_from_slice(b"null"),
        Cell::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Cell::Int(v) => write_json(out, &v),
        // serde_json writes non-finite floats as null.
        Cell::Float(v) => write_json(out, &v),
        Cell::Double(v) => write_json(out, &v),
        Cell::Text(s) => write_json(out, s),
        Cell::Bytes(b) => write_json(out, b),
        Cell::Array(a) => {
            out.push(b'[');
            for j in 0..a.len() {
                if j > 0 {
                    out.push(b',');
                }
                match a.elem(j) {
                    Elem::Float(v) => write_json(out, &v),
                    Elem::Double(v) => write_json(out, &v),
                    Elem::Long(v) => write_json(out, &v),
                }
            }
            out.push(b']');
        }
    }
}

impl TableEncoder for JsonEncoder {
    fn begin(
        &mut self,
        schema: &Schema,
        _info: &ResultInfo,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if self.state != State::New {
            return Err(FormatError::State("begin called twice"));
        }
        self.specs = column_specs(schema);
        out.extend_from_slice(b"{\"metadata\":[");
        for (i, spec) in self.specs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"\n");
            write_json(out, &metadata(spec));
        }
        out.extend_from_slice(b"\n],\n\"data\":[");
        self.state = State::Open {
            columns: self.specs.len(),
            rows: 0,
        };
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let State::Open { columns, rows } = &mut self.state else {
            return Err(FormatError::State("batch outside begin/finish"));
        };
        if batch.num_columns() != *columns {
            return Err(FormatError::State("batch column count differs from schema"));
        }
        let prepared = self
            .specs
            .iter()
            .zip(batch.columns())
            .map(|(spec, array)| prepare(spec, array))
            .collect::<Result<Vec<Values>, _>>()?;
        for row in 0..batch.num_rows() {
            if *rows > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"\n[");
            for (i, values) in prepared.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_cell(values.cell(row), out);
            }
            out.push(b']');
            *rows += 1;
        }
        Ok(())
    }

    fn finish(&mut self, status: &QueryStatus, out: &mut Vec<u8>) -> Result<(), FormatError> {
        if !matches!(self.state, State::Open { .. }) {
            return Err(FormatError::State("finish without begin, or twice"));
        }
        out.extend_from_slice(b"\n]");
        match status {
            QueryStatus::Ok => {}
            QueryStatus::Overflow => out.extend_from_slice(b",\n\"status\":\"OVERFLOW\""),
            QueryStatus::Error(message) => {
                out.extend_from_slice(b",\n\"status\":\"ERROR\",\n\"message\":");
                write_json(out, message);
            }
        }
        out.extend_from_slice(b"\n}\n");
        self.state = State::Finished;
        Ok(())
    }

    fn drain_tail(&mut self, _out: &mut Vec<u8>) -> Result<bool, FormatError> {
        Ok(false)
    }
}
