//! Table schemas in Felis YAML (the format `lsst-felis` validates): parsing them, and deriving
//! the Arrow schema the catalog store writes and the metadata TAP_SCHEMA publishes.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Arrow field-metadata keys under which column metadata travels from the store to the writers.
pub mod meta {
    pub const UNIT: &str = "unit";
    pub const UCD: &str = "ucd";
    pub const DESCRIPTION: &str = "description";
    pub const UTYPE: &str = "utype";
    pub const XTYPE: &str = "xtype";
    pub const PRINCIPAL: &str = "principal";
    pub const STD: &str = "std";
    /// The VOTable datatype a text column was declared with, when it is `char`: its values
    /// are ASCII and results declare it `char` again (other text is `unicodeChar`).
    pub const DATATYPE: &str = "datatype";
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid Felis schema: {source}")]
    Yaml {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A Felis schema document: one TAP schema with its tables.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FelisSchema {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub tables: Vec<FelisTable>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FelisTable {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        rename = "primaryKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub primary_key: Option<serde_yaml::Value>,
    #[serde(
        rename = "tap:table_index",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub table_index: Option<i32>,
    pub columns: Vec<FelisColumn>,
    #[serde(rename = "foreignKeys", default)]
    pub foreign_keys: Vec<FelisForeignKey>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FelisForeignKey {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Felis `@id` references of the referencing columns, e.g. `#Source.ccdVisitId`.
    pub columns: Vec<String>,
    #[serde(rename = "referencedColumns")]
    pub referenced_columns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FelisColumn {
    pub name: String,
    pub datatype: FelisType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        rename = "fits:tunit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub fits_unit: Option<String>,
    #[serde(rename = "ivoa:unit", default, skip_serializing_if = "Option::is_none")]
    pub ivoa_unit: Option<String>,
    #[serde(rename = "ivoa:ucd", default, skip_serializing_if = "Option::is_none")]
    pub ucd: Option<String>,
    #[serde(
        rename = "votable:utype",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub utype: Option<String>,
    #[serde(
        rename = "votable:xtype",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub xtype: Option<String>,
    #[serde(
        rename = "tap:principal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub principal: Option<i32>,
    #[serde(rename = "tap:std", default, skip_serializing_if = "Option::is_none")]
    pub std: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,
}

/// Felis column datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FelisType {
    Boolean,
    Byte,
    Short,
    Int,
    Long,
    Float,
    Double,
    Char,
    String,
    Unicode,
    Text,
    Binary,
    Timestamp,
}

impl FelisType {
    pub fn arrow(self) -> DataType {
        match self {
            FelisType::Boolean => DataType::Boolean,
            FelisType::Byte => DataType::Int8,
            FelisType::Short => DataType::Int16,
            FelisType::Int => DataType::Int32,
            FelisType::Long => DataType::Int64,
            FelisType::Float => DataType::Float32,
            FelisType::Double => DataType::Float64,
            FelisType::Char | FelisType::String | FelisType::Unicode | FelisType::Text => {
                DataType::Utf8
            }
            FelisType::Binary => DataType::Binary,
            FelisType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
}

impl FelisColumn {
    pub fn unit(&self) -> Option<&str> {
        self.ivoa_unit
            .as_deref()
            .or(self.fits_unit.as_deref())
            .filter(|u| !u.is_empty())
    }

    /// The Arrow field carrying this column's metadata for the writers and TAP_SCHEMA.
    pub fn arrow_field(&self) -> Field {
        let mut md = HashMap::new();
        if let Some(u) = self.unit() {
            md.insert(meta::UNIT.to_string(), u.to_string());
        }
        if let Some(u) = &self.ucd {
            md.insert(meta::UCD.to_string(), u.clone());
        }
        if let Some(d) = &self.description {
            md.insert(meta::DESCRIPTION.to_string(), d.trim().to_string());
        }
        if let Some(u) = &self.utype {
            md.insert(meta::UTYPE.to_string(), u.clone());
        }
        let xtype = self
            .xtype
            .clone()
            .or_else(|| (self.datatype == FelisType::Timestamp).then(|| "timestamp".to_string()));
        if let Some(x) = xtype {
            md.insert(meta::XTYPE.to_string(), x);
        }
        if let Some(p) = self.principal {
            md.insert(meta::PRINCIPAL.to_string(), p.to_string());
        }
        Field::new(
            &self.name,
            self.datatype.arrow(),
            self.nullable.unwrap_or(true),
        )
        .with_metadata(md)
    }
}

impl FelisTable {
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut md = HashMap::new();
        if let Some(d) = &self.description {
            md.insert(meta::DESCRIPTION.to_string(), d.trim().to_string());
        }
        Arc::new(Schema::new_with_metadata(
            self.columns
                .iter()
                .map(FelisColumn::arrow_field)
                .collect::<Vec<_>>(),
            md,
        ))
    }

    /// Primary-key column names (Felis references like `#Object.objectId`).
    pub fn primary_key_columns(&self) -> Vec<String> {
        let refs: Vec<String> = match &self.primary_key {
            Some(serde_yaml::Value::String(s)) => vec![s.clone()],
            Some(serde_yaml::Value::Sequence(v)) => v
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        };
        refs.into_iter()
            .map(|r| r.rsplit('.').next().unwrap_or(&r).to_string())
            .collect()
    }

    /// The (ra, dec) columns that position rows on the sky, found by their UCDs
    /// (`pos.eq.ra;meta.main`, preferring the main ones).
    pub fn position_columns(&self) -> Option<(String, String)> {
        let find = |prefix: &str| {
            let main = self.columns.iter().find(|c| {
                c.ucd
                    .as_deref()
                    .is_some_and(|u| u.starts_with(prefix) && u.contains("meta.main"))
            });
            main.or_else(|| {
                self.columns
                    .iter()
                    .find(|c| c.ucd.as_deref().is_some_and(|u| u == prefix))
            })
            .map(|c| c.name.clone())
        };
        Some((find("pos.eq.ra")?, find("pos.eq.dec")?))
    }
}

impl FelisSchema {
    pub fn parse(text: &str, origin: &str) -> Result<Self, SchemaError> {
        let schema: FelisSchema =
            serde_yaml::from_str(text).map_err(|source| SchemaError::Yaml {
                path: origin.to_string(),
                source,
            })?;
        schema.validate()?;
        Ok(schema)
    }

    pub fn load(path: &Path) -> Result<Self, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn validate(&self) -> Result<(), SchemaError> {
        for t in &self.tables {
            let mut seen = std::collections::HashSet::new();
            for c in &t.columns {
                if !seen.insert(c.name.to_ascii_lowercase()) {
                    return Err(SchemaError::Invalid(format!(
                        "{}.{}: column {} is declared twice",
                        self.name, t.name, c.name
                    )));
                }
            }
            for pk in t.primary_key_columns() {
                if !t.columns.iter().any(|c| c.name == pk) {
                    return Err(SchemaError::Invalid(format!(
                        "{}.{}: primary key {pk} is not a column",
                        self.name, t.name
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn table(&self, name: &str) -> Option<&FelisTable> {
        self.tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }
}

/// The survey's own schemas, compiled in so a fresh data directory needs no other files.
pub fn builtin_schemas() -> Vec<FelisSchema> {
    [
        (include_str!("../../schemas/dp.yaml"), "schemas/dp.yaml"),
        (include_str!("../../schemas/ap.yaml"), "schemas/ap.yaml"),
    ]
    .into_iter()
    .map(|(text, origin)| {
        FelisSchema::parse(text, origin)
            .unwrap_or_else(|e| panic!("built-in schema is invalid: {e}"))
    })
    .collect()
}

/// The Felis description of a table read from a file: column types from Arrow's, units,
/// UCDs and descriptions from the field metadata, and the position columns (given by name,
/// else found by UCD or by the usual names) marked `pos.eq.ra;meta.main` /
/// `pos.eq.dec;meta.main` so the catalog store partitions the table by position.
pub fn felis_from_arrow(
    name: &str,
    schema: &arrow::datatypes::Schema,
    ra: Option<&str>,
    dec: Option<&str>,
) -> Result<FelisTable, SchemaError> {
    let find = |given: Option<&str>, ucd: &str, names: &[&str]| -> Option<String> {
        if let Some(g) = given {
            return schema
                .fields()
                .iter()
                .find(|f| f.name().eq_ignore_ascii_case(g))
                .map(|f| f.name().clone());
        }
        schema
            .fields()
            .iter()
            .find(|f| {
                f.metadata()
                    .get(meta::UCD)
                    .is_some_and(|u| u.starts_with(ucd))
            })
            .or_else(|| {
                schema
                    .fields()
                    .iter()
                    .find(|f| names.iter().any(|n| f.name().eq_ignore_ascii_case(n)))
            })
            .map(|f| f.name().clone())
    };
    let ra_col = find(ra, "pos.eq.ra", &["ra", "raj2000", "ra_icrs", "coord_ra"]);
    let dec_col = find(
        dec,
        "pos.eq.dec",
        &["dec", "decl", "dej2000", "de_icrs", "coord_dec"],
    );
    if ra.is_some() && ra_col.is_none() {
        return Err(SchemaError::Invalid(format!(
            "no column {} in the file",
            ra.unwrap_or_default()
        )));
    }
    if dec.is_some() && dec_col.is_none() {
        return Err(SchemaError::Invalid(format!(
            "no column {} in the file",
            dec.unwrap_or_default()
        )));
    }
    let mut columns = Vec::new();
    for f in schema.fields() {
        let datatype = match f.data_type() {
            DataType::Boolean => FelisType::Boolean,
            DataType::Int8 | DataType::UInt8 => FelisType::Byte,
            DataType::Int16 => FelisType::Short,
            DataType::Int32 | DataType::UInt16 => FelisType::Int,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => FelisType::Long,
            DataType::Float16 | DataType::Float32 => FelisType::Float,
            DataType::Float64 | DataType::Decimal128(..) => FelisType::Double,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FelisType::String,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => FelisType::Timestamp,
            DataType::Binary | DataType::LargeBinary => FelisType::Binary,
            other => {
                return Err(SchemaError::Invalid(format!(
                    "column {}: type {other} cannot be imported",
                    f.name()
                )));
            }
        };
        let md = f.metadata();
        let mut ucd = md.get(meta::UCD).cloned();
        if Some(f.name()) == ra_col.as_ref() {
            ucd = Some("pos.eq.ra;meta.main".into());
        } else if Some(f.name()) == dec_col.as_ref() {
            ucd = Some("pos.eq.dec;meta.main".into());
        }
        columns.push(FelisColumn {
            name: f.name().clone(),
            datatype,
            length: None,
            description: md.get(meta::DESCRIPTION).cloned(),
            fits_unit: None,
            ivoa_unit: md.get(meta::UNIT).cloned(),
            ucd,
            utype: md.get(meta::UTYPE).cloned(),
            xtype: None,
            principal: None,
            std: None,
            nullable: Some(true),
        });
    }
    Ok(FelisTable {
        name: name.to_string(),
        description: Some(format!("Imported table {name}")),
        primary_key: None,
        table_index: None,
        columns,
        foreign_keys: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_parse_with_units_and_positions() {
        let schemas = builtin_schemas();
        let dp = schemas.iter().find(|s| s.name == "dp").unwrap();
        let object = dp.table("Object").unwrap();
        assert_eq!(object.primary_key_columns(), vec!["objectId"]);
        assert_eq!(
            object.position_columns(),
            Some(("coord_ra".to_string(), "coord_dec".to_string()))
        );
        let f = object.arrow_schema();
        let flux = f.field_with_name("r_psfFlux").unwrap();
        assert_eq!(
            flux.metadata().get(meta::UNIT).map(String::as_str),
            Some("nJy")
        );
        let ap = schemas.iter().find(|s| s.name == "ap").unwrap();
        assert!(ap.table("DiaSource").unwrap().position_columns().is_some());
    }

    #[test]
    fn duplicate_columns_are_refused() {
        let y = "name: s\ntables:\n- name: t\n  columns:\n  - {name: a, datatype: int}\n  - {name: A, datatype: int}\n";
        assert!(FelisSchema::parse(y, "x").is_err());
    }
}
