//! Readers that turn external table files (VOTable, FITS binary tables, CSV, Parquet) into Arrow.
//!
//! They serve TAP uploads and catalog imports, so their input is untrusted: malformed files give
//! a [`FormatError`] naming the problem, never a panic, a hang or an allocation larger than the
//! input justifies. Column metadata lands in Arrow field metadata under the keys "unit", "ucd",
//! "utype", "xtype" and "description", as the rest of Aster expects.

mod builder;
mod fits;
mod votable;

use std::io::Cursor;
use std::sync::Arc;

use arrow::csv::ReaderBuilder;
use arrow::csv::reader::Format;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub use fits::read_fits_table;
pub use votable::read_votable;

/// A table read from a file.
#[derive(Debug, Clone)]
pub struct ImportedTable {
    /// The table's own name, where the format has one (VOTable TABLE name, FITS EXTNAME).
    pub name: Option<String>,
    /// Columns with unique names, unit/ucd/utype/xtype/description in field metadata.
    pub schema: SchemaRef,
    /// The rows, in batches of at most 65 536.
    pub batches: Vec<RecordBatch>,
}

/// Why a file could not be read as a table.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("invalid VOTable: {0}")]
    Votable(String),
    #[error("invalid FITS file: {0}")]
    Fits(String),
    #[error("invalid CSV file: {0}")]
    Csv(String),
    #[error("invalid Parquet file: {0}")]
    Parquet(String),
    #[error("unrecognized table file: {0}")]
    UnknownFormat(String),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// Rows per record batch for the CSV reader.
const CSV_BATCH_ROWS: usize = 65_536;

/// Reads a CSV file with a header row, inferring column types from all rows.
pub fn read_csv(bytes: &[u8]) -> Result<ImportedTable, FormatError> {
    read_delimited(bytes, b',')
}

fn read_delimited(bytes: &[u8], delimiter: u8) -> Result<ImportedTable, FormatError> {
    let csv_error = |e: ArrowError| FormatError::Csv(e.to_string());
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(FormatError::Csv("the file is empty".into()));
    }
    let format = Format::default()
        .with_header(true)
        .with_delimiter(delimiter);
    // Inferring from every row costs a second pass over data already in memory, but avoids
    // failing on row 10 001 because the first 10 000 looked like integers.
    let (inferred, _) = format
        .infer_schema(Cursor::new(bytes), None)
        .map_err(csv_error)?;
    let names = builder::unique_names(inferred.fields().iter().map(|f| f.name().as_str()));
    let schema: SchemaRef = Arc::new(Schema::new(
        inferred
            .fields()
            .iter()
            .zip(names)
            .map(|(f, name)| Field::new(name, f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let reader = ReaderBuilder::new(Arc::clone(&schema))
        .with_format(format)
        .with_batch_size(CSV_BATCH_ROWS)
        .build(Cursor::new(bytes))
        .map_err(csv_error)?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(csv_error)?;
    Ok(ImportedTable {
        name: None,
        schema,
        batches,
    })
}

/// Reads a Parquet file.
pub fn read_parquet(bytes: Bytes) -> Result<ImportedTable, FormatError> {
    let parquet_error = |e: &dyn std::fmt::Display| FormatError::Parquet(e.to_string());
    // The Parquet decoder is third-party code facing hostile input; a panic inside it must
    // become an error for the upload, not take the server thread down.
    std::panic::catch_unwind(move || {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| parquet_error(&e))?;
        let schema = Arc::clone(builder.schema());
        let reader = builder.build().map_err(|e| parquet_error(&e))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| parquet_error(&e))?;
        Ok(ImportedTable {
            name: None,
            schema,
            batches,
        })
    })
    .unwrap_or_else(|_| {
        Err(FormatError::Parquet(
            "the file is corrupt (decoder failure)".into(),
        ))
    })
}

/// Reads a table file of any supported format, recognized by its first bytes, else by the
/// file name's extension.
pub fn read_any(file_name: &str, bytes: Bytes) -> Result<ImportedTable, FormatError> {
    let head = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text_start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&[][..], |i| &head[i..]);
    if head.starts_with(b"SIMPLE  =") {
        return read_fits_table(&bytes);
    }
    if head.starts_with(b"PAR1") {
        return read_parquet(bytes);
    }
    if text_start.starts_with(b"<?xml") || text_start.starts_with(b"<VOTABLE") {
        return read_votable(&bytes);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Err(FormatError::UnknownFormat(
            "compressed (gzip) files are not supported; upload the uncompressed table".into(),
        ));
    }
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "xml" | "vot" | "votable" => read_votable(&bytes),
        "fits" | "fit" | "fts" => read_fits_table(&bytes),
        "parquet" | "pq" => read_parquet(bytes),
        "tsv" | "tab" => read_delimited(&bytes, b'\t'),
        "csv" | "txt" | "" => read_csv(&bytes),
        other => Err(FormatError::UnknownFormat(format!(
            "'{file_name}' is neither VOTable, FITS, Parquet nor CSV (extension '.{other}')"
        ))),
    }
}

#[cfg(test)]
mod tests;
