//! Parquet output: Arrow batches through `parquet`'s `ArrowWriter` (snappy, Arrow schema with
//! field metadata embedded), with the written bytes drained to the caller after every batch.
//!
//! Row groups are capped in bytes so the writer's in-progress buffer stays bounded. The query
//! status goes into the footer's key-value metadata as `QUERY_STATUS`; a mid-stream error is
//! returned instead, since a Parquet file without its footer is already visibly broken.

use std::sync::Arc;

use arrow::compute::cast;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::columns::column_specs;
use super::{FormatError, QueryStatus, ResultInfo, TableEncoder};

/// Upper bound of a row group's estimated encoded size before it is flushed.
const MAX_ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// Streaming Parquet encoder.
pub(crate) struct ParquetEncoder {
    writer: Option<ArrowWriter<Vec<u8>>>,
    schema: Option<SchemaRef>,
}

impl std::fmt::Debug for ParquetEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetEncoder")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl ParquetEncoder {
    pub fn new() -> Self {
        Self {
            writer: None,
            schema: None,
        }
    }

    /// Moves whatever the writer has produced so far into `out`.
    fn drain(writer: &mut ArrowWriter<Vec<u8>>, out: &mut Vec<u8>) -> Result<(), FormatError> {
        // `sync` empties the writer's internal BufWriter into the Vec; taking the Vec's bytes
        // does not disturb the writer's own offset bookkeeping.
        writer.sync()?;
        out.append(writer.inner_mut());
        Ok(())
    }
}

impl TableEncoder for ParquetEncoder {
    fn begin(
        &mut self,
        schema: &Schema,
        _info: &ResultInfo,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if self.schema.is_some() {
            return Err(FormatError::State("begin called twice"));
        }
        // Same unique, non-empty column names as the other formats.
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .zip(column_specs(schema))
            .map(|(field, spec)| Arc::new(field.as_ref().clone().with_name(spec.name)))
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_bytes(Some(MAX_ROW_GROUP_BYTES))
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props))?;
        Self::drain(&mut writer, out)?;
        self.writer = Some(writer);
        self.schema = Some(schema);
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let (Some(writer), Some(schema)) = (self.writer.as_mut(), self.schema.as_ref()) else {
            return Err(FormatError::State("batch outside begin/finish"));
        };
        if batch.num_columns() != schema.fields().len() {
            return Err(FormatError::State("batch column count differs from schema"));
        }
        // Batches may carry other names or physically different types than the schema given
        // to `begin` (e.g. Utf8View for Utf8); the writer insists on an exact match.
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(array, field)| {
                if array.data_type() == field.data_type() {
                    Ok(Arc::clone(array))
                } else {
                    cast(array, field.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(Arc::clone(schema), columns)?;
        writer.write(&batch)?;
        Self::drain(writer, out)
    }

    fn finish(&mut self, status: &QueryStatus, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(FormatError::State("finish without begin, or twice"));
        };
        let value = match status {
            QueryStatus::Ok => "OK",
            QueryStatus::Overflow => "OVERFLOW",
            QueryStatus::Error(message) => {
                return Err(FormatError::StatusNotRepresentable {
                    format: "Parquet",
                    message: message.clone(),
                });
            }
        };
        writer.append_key_value_metadata(KeyValue::new("QUERY_STATUS".into(), value.to_owned()));
        writer.finish()?;
        Self::drain(&mut writer, out)
    }

    fn drain_tail(&mut self, _out: &mut Vec<u8>) -> Result<bool, FormatError> {
        Ok(false)
    }
}
