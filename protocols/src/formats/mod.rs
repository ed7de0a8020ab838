//! Result serializations: VOTable (BINARY2, TABLEDATA), FITS binary table, CSV/TSV, JSON, Parquet.
//!
//! This module owns the choice of output format (TAP `RESPONSEFORMAT`), the mapping from Arrow
//! column types and field metadata to each format's column descriptions, and the incremental
//! encoders that turn a stream of Arrow record batches into bytes. Encoders never hold a whole
//! result: each call appends a bounded amount of output to a caller-owned buffer that the caller
//! drains into the HTTP body.

mod columns;
mod delimited;
mod fits;
mod json;
mod parquet_file;
mod votable;

use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

pub use votable::error_votable;

/// A table serialization the service can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// VOTable 1.4 with the BINARY2 serialization (the TAP default).
    VotableBinary2,
    /// VOTable 1.4 with the TABLEDATA (XML) serialization.
    VotableTabledata,
    /// Comma-separated values (RFC 4180) with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// FITS file: an empty primary HDU followed by a BINTABLE extension.
    Fits,
    /// Apache Parquet, snappy-compressed, keeping the Arrow field metadata.
    Parquet,
    /// JSON document `{"metadata": [...], "data": [[...], ...]}`.
    Json,
}

impl OutputFormat {
    /// Parses a TAP `RESPONSEFORMAT` (or `FORMAT`) value: a short alias or a MIME type, with
    /// optional MIME parameters. Matching is case-insensitive; `None` for unknown formats.
    pub fn from_param(s: &str) -> Option<Self> {
        let mut parts = s.split(';');
        let base = parts.next()?.trim().to_ascii_lowercase();
        let mut serialization = None;
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("serialization") {
                serialization = Some(value.trim().trim_matches('"').to_ascii_lowercase());
            }
        }
        match base.as_str() {
            "votable" | "application/x-votable+xml" | "text/xml" | "text/x-votable+xml" => {
                match serialization.as_deref() {
                    None | Some("binary2") | Some("b2") => Some(Self::VotableBinary2),
                    Some("tabledata") | Some("td") => Some(Self::VotableTabledata),
                    // BINARY and FITS-in-VOTable serializations are not written by Aster.
                    Some(_) => None,
                }
            }
            "votable/b2" | "votable/binary2" => Some(Self::VotableBinary2),
            "votable/td" | "votable/tabledata" => Some(Self::VotableTabledata),
            "csv" | "text/csv" => Some(Self::Csv),
            "tsv" | "text/tab-separated-values" => Some(Self::Tsv),
            "fits" | "application/fits" | "application/x-fits-bintable" => Some(Self::Fits),
            "parquet" | "application/vnd.apache.parquet" | "application/x-parquet" => {
                Some(Self::Parquet)
            }
            "json" | "application/json" => Some(Self::Json),
            _ => None,
        }
    }

    /// The exact `Content-Type` to send with a result in this format. STILTS taplint accepts any
    /// type starting with `application/x-votable+xml`, so the VOTable serialization is stated as
    /// a MIME parameter as TAPRegExt suggests.
    pub fn media_type(&self) -> &'static str {
        match self {
            Self::VotableBinary2 => "application/x-votable+xml;serialization=BINARY2",
            Self::VotableTabledata => "application/x-votable+xml;serialization=TABLEDATA",
            Self::Csv => "text/csv;header=present",
            Self::Tsv => "text/tab-separated-values",
            Self::Fits => "application/fits",
            Self::Parquet => "application/vnd.apache.parquet",
            Self::Json => "application/json",
        }
    }

    /// File name extension (without the dot) for `Content-Disposition` and stored results.
    pub fn file_extension(&self) -> &'static str {
        match self {
            Self::VotableBinary2 | Self::VotableTabledata => "vot",
            Self::Csv => "csv",
            Self::Tsv => "tsv",
            Self::Fits => "fits",
            Self::Parquet => "parquet",
            Self::Json => "json",
        }
    }

    /// Every format, in the order the capabilities document lists them.
    pub fn all() -> &'static [OutputFormat] {
        &[
            Self::VotableBinary2,
            Self::VotableTabledata,
            Self::Csv,
            Self::Tsv,
            Self::Fits,
            Self::Parquet,
            Self::Json,
        ]
    }

    /// The `<mime>` of this format's TAPRegExt `outputFormat` in the capabilities document.
    /// BINARY2 is the default VOTable, so it is advertised under the bare VOTable MIME type
    /// that TAP requires every service to list.
    pub fn capability_mime(&self) -> &'static str {
        match self {
            Self::VotableBinary2 => "application/x-votable+xml",
            Self::Csv => "text/csv",
            other => other.media_type(),
        }
    }

    /// The `<alias>` values of this format's TAPRegExt `outputFormat`; each is accepted by
    /// [`OutputFormat::from_param`].
    pub fn capability_aliases(&self) -> &'static [&'static str] {
        match self {
            Self::VotableBinary2 => &["votable", "votable/b2"],
            Self::VotableTabledata => &["votable/td"],
            Self::Csv => &["csv"],
            Self::Tsv => &["tsv"],
            Self::Fits => &["fits"],
            Self::Parquet => &["parquet"],
            Self::Json => &["json"],
        }
    }

    /// The TAPRegExt standard identifier (`ivo-id` attribute) of formats that have one.
    pub fn standard_id(&self) -> Option<&'static str> {
        match self {
            Self::VotableBinary2 => Some("ivo://ivoa.net/std/TAPRegExt#output-votable-binary2"),
            Self::VotableTabledata => Some("ivo://ivoa.net/std/TAPRegExt#output-votable-td"),
            _ => None,
        }
    }
}

/// What the writer says at the end of a result (DALI): OK, or OVERFLOW when MAXREC truncated
/// the rows, or ERROR when the query failed after rows were already sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryStatus {
    /// All rows were written.
    Ok,
    /// More rows matched than were written (MAXREC reached).
    Overflow,
    /// The query failed mid-stream; the message explains why.
    Error(String),
}

/// Descriptive information written with a result where the format has room for it.
#[derive(Debug, Clone, Default)]
pub struct ResultInfo {
    /// The ADQL query text, reported as a `QUERY` INFO in VOTable.
    pub query: Option<String>,
    /// Table name, e.g. "result" (VOTable TABLE name, FITS EXTNAME).
    pub table_name: String,
    /// Further (name, value) INFOs, e.g. ("request", "doQuery"), ("base", url).
    pub extra_infos: Vec<(String, String)>,
}

/// Why a result could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A value or column cannot be represented in the output format.
    #[error("column '{column}': {message}")]
    Value {
        /// Output name of the column.
        column: String,
        /// What is wrong with it.
        message: String,
    },
    /// The format has no way to report a query failure after rows were sent; the caller must
    /// abort the response so the client sees a broken transfer rather than a short table.
    #[error("{format} output cannot carry the query error, abort the response: {message}")]
    StatusNotRepresentable {
        /// Name of the output format.
        format: &'static str,
        /// The query error that was to be reported.
        message: String,
    },
    /// The encoder's methods were called out of order (a caller bug).
    #[error("encoder misuse: {0}")]
    State(&'static str),
    /// Spool-file I/O failed (FITS).
    #[error("spool file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// An Arrow cast or access failed.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// The Parquet writer failed.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// Incremental encoder: bytes go into `out`, a buffer the caller drains after each call and
/// sends as an HTTP body chunk. An encoder never holds the whole result.
///
/// Call order: `begin`, any number of `batch`, `finish`, then `drain_tail` until it returns
/// `false`. Every batch must have the columns of the schema given to `begin`.
pub trait TableEncoder: Send {
    /// Starts the document for a result with this schema.
    fn begin(
        &mut self,
        schema: &Schema,
        info: &ResultInfo,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError>;

    /// Encodes one batch of rows.
    fn batch(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), FormatError>;

    /// Ends the document, reporting `status` where the format can.
    fn finish(&mut self, status: &QueryStatus, out: &mut Vec<u8>) -> Result<(), FormatError>;

    /// Emits output that `finish` left pending, about 1 MiB per call. Returns `true` while more
    /// remains (call again after sending `out`); the call that returns `false` may still have
    /// appended the last bytes, so `out` must be sent in every case. Only formats that must know
    /// the row count before the data (FITS) have such a tail; the others return `false` at once.
    fn drain_tail(&mut self, out: &mut Vec<u8>) -> Result<bool, FormatError>;
}

/// Creates a fresh encoder for `format`.
pub fn encoder(format: OutputFormat) -> Box<dyn TableEncoder> {
    match format {
        OutputFormat::VotableBinary2 => Box::new(votable::VotableEncoder::new(
            votable::Serialization::Binary2,
        )),
        OutputFormat::VotableTabledata => Box::new(votable::VotableEncoder::new(
            votable::Serialization::Tabledata,
        )),
        OutputFormat::Csv => Box::new(delimited::DelimitedEncoder::new(delimited::Dialect::Csv)),
        OutputFormat::Tsv => Box::new(delimited::DelimitedEncoder::new(delimited::Dialect::Tsv)),
        OutputFormat::Fits => Box::new(fits::FitsEncoder::new()),
        OutputFormat::Parquet => Box::new(parquet_file::ParquetEncoder::new()),
        OutputFormat::Json => Box::new(json::JsonEncoder::new()),
    }
}

#[cfg(test)]
mod tests;
