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
