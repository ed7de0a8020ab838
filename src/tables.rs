//! Arrow record batches built column by column (with units and descriptions as field
//! metadata, the way the catalog store and the writers read them) and written to Parquet
//! atomically: what the demo release, the simulator's truth tables and the pipelines'
//! outputs are made of.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Field, Schema};

/// Columns of one batch, by name; the store fills the table's other columns with nulls.
#[derive(Default)]
pub struct Columns(Vec<Column>);

/// A column: name, values, and unit and description if given.
type Column = (String, ArrayRef, Option<(String, String)>);

impl Columns {
    pub fn f64(&mut self, name: impl Into<String>, v: Vec<Option<f64>>) -> &mut Self {
        self.0
            .push((name.into(), Arc::new(Float64Array::from(v)), None));
        self
    }
    pub fn f32(&mut self, name: impl Into<String>, v: Vec<Option<f32>>) -> &mut Self {
        self.0
            .push((name.into(), Arc::new(Float32Array::from(v)), None));
        self
    }
    pub fn i64(&mut self, name: impl Into<String>, v: Vec<Option<i64>>) -> &mut Self {
        self.0
            .push((name.into(), Arc::new(Int64Array::from(v)), None));
        self
    }
    pub fn i32(&mut self, name: impl Into<String>, v: Vec<Option<i32>>) -> &mut Self {
        self.0
            .push((name.into(), Arc::new(Int32Array::from(v)), None));
        self
    }
    pub fn str(&mut self, name: impl Into<String>, v: Vec<Option<String>>) -> &mut Self {
        self.0
            .push((name.into(), Arc::new(StringArray::from(v)), None));
        self
    }
    pub fn bool(&mut self, name: impl Into<String>, v: Vec<Option<bool>>) -> &mut Self {
        self.0
            .push((name.into(), Arc::new(BooleanArray::from(v)), None));
        self
    }
    pub fn ts(&mut self, name: impl Into<String>, v: Vec<Option<i64>>) -> &mut Self {
        self.0.push((
            name.into(),
            Arc::new(TimestampMicrosecondArray::from(v)),
            None,
        ));
        self
    }
    /// Gives the last column a unit (may be empty) and a description.
    pub fn described(&mut self, unit: &str, description: &str) -> &mut Self {
        if let Some(last) = self.0.last_mut() {
            last.2 = Some((unit.to_string(), description.to_string()));
        }
        self
    }
    pub fn batch(self) -> Result<RecordBatch> {
        let fields: Vec<Field> = self
            .0
            .iter()
            .map(|(n, a, meta)| {
                let f = Field::new(n.as_str(), a.data_type().clone(), true);
                match meta {
                    None => f,
                    Some((unit, description)) => {
                        let mut m = std::collections::HashMap::from([(
                            "description".to_string(),
                            description.clone(),
                        )]);
                        if !unit.is_empty() {
                            m.insert("unit".into(), unit.clone());
                        }
                        f.with_metadata(m)
                    }
                }
            })
            .collect();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            self.0.into_iter().map(|(_, a, _)| a).collect(),
        )?)
    }
}

/// Writes `batches` (one schema) to `path` as Parquet, through a temporary file renamed
/// into place.
pub fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let Some(first) = batches.first() else {
        anyhow::bail!("{}: nothing to write", path.display());
    };
    let tmp: PathBuf = path.with_extension("parquet.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, first.schema(), None)?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes `batches` as a FITS file (an empty primary HDU and one BINTABLE named
/// `extname`, units and descriptions from the field metadata) through the TAP service's
/// streaming encoder, atomically: a temporary file renamed into place.
pub fn write_fits_table(path: &Path, extname: &str, batches: &[RecordBatch]) -> Result<()> {
    use std::io::Write;

    use aster_protocols::formats::{OutputFormat, QueryStatus, ResultInfo, encoder};
    let Some(first) = batches.first() else {
        anyhow::bail!("{}: nothing to write", path.display());
    };
    let tmp: PathBuf = path.with_extension("fits.tmp");
    let result = (|| -> Result<()> {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        let mut enc = encoder(OutputFormat::Fits);
        let mut out = Vec::new();
        let info = ResultInfo {
            table_name: extname.to_string(),
            ..ResultInfo::default()
        };
        enc.begin(&first.schema(), &info, &mut out)?;
        for b in batches {
            enc.batch(b, &mut out)?;
            file.write_all(&out)?;
            out.clear();
        }
        enc.finish(&QueryStatus::Ok, &mut out)?;
        loop {
            let more = enc.drain_tail(&mut out)?;
            file.write_all(&out)?;
            out.clear();
            if !more {
                break;
            }
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("writing {}", path.display())))
        }
    }
}
