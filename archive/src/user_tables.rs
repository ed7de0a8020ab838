//! Users' own tables (Level 3, DMS-REQ-0290, 0122, 0123, 0124): catalog-store tables in the
//! schema `user_<name>`, partitioned by position like the releases when they have one, so
//! they join with the releases in TAP. Who else may read each (DMS-REQ-0340) is kept here,
//! in SQLite; the owner always may.
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogStore, DEFAULT_MAX_ROWS};
use crate::formats::ImportedTable;
use crate::identity::{GroupName, Principal, UserName};
use crate::schema::{felis_from_arrow, meta};

/// The schema of a user's tables.
pub fn schema_of(user: &UserName) -> String {
    format!("user_{user}")
}

/// The owner of a user schema (`user_alice` -> `alice`); None for the releases' schemas.
pub fn owner_of(schema: &str) -> Option<&str> {
    schema
        .strip_prefix("user_")
        .filter(|u| UserName::new(u).is_ok())
}

#[derive(Debug, thiserror::Error)]
pub enum UserTableError {
    #[error("user tables: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("user tables lock poisoned")]
    Poisoned,
    #[error("'{0}' is not a table name: 1 to 64 letters, digits and '_', a letter first")]
    Name(String),
    #[error("you already have a table named {0}; drop it first or choose another name")]
    Exists(String),
    #[error("you have no table named {0}")]
    NoTable(String),
    #[error("the metadata sidecar: {0}")]
    Sidecar(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// Who besides the owner may read a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableAccess {
    pub public: bool,
    pub groups: Vec<GroupName>,
}

impl TableAccess {
    /// Whether `p` may read a table of schema `schema` with these settings.
    pub fn allows(&self, schema: &str, p: Option<&Principal>) -> bool {
        if self.public {
            return true;
        }
        let Some(p) = p else { return false };
        p.admin
            || owner_of(schema) == Some(p.user.as_str())
            || self.groups.iter().any(|g| p.in_group(g.as_str()))
    }
}

/// A table name a user may give.
pub fn valid_table_name(s: &str) -> Result<(), UserTableError> {
    let ok = (1..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(UserTableError::Name(s.to_string()))
    }
}

/// The access settings of every user table.
#[derive(Clone)]
pub struct UserTables {
    conn: Arc<Mutex<Connection>>,
}

impl UserTables {
    pub fn open(path: &Path) -> Result<Self, UserTableError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS table_access (
               schema TEXT NOT NULL, name TEXT NOT NULL, public INTEGER NOT NULL DEFAULT 0,
               groups TEXT NOT NULL DEFAULT '', PRIMARY KEY (schema, name));",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, UserTableError> {
        self.conn.lock().map_err(|_| UserTableError::Poisoned)
    }

    /// Every table's settings; tables not listed are private to their owner.
    pub fn all(&self) -> Result<HashMap<(String, String), TableAccess>, UserTableError> {
        let conn = self.conn()?;
        let mut st = conn.prepare("SELECT schema, name, public, groups FROM table_access")?;
        let rows = st.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                TableAccess {
                    public: r.get(2)?,
                    groups: r
                        .get::<_, String>(3)?
                        .split(' ')
                        .filter_map(|g| GroupName::new(g).ok())
                        .collect(),
                },
            ))
        })?;
        Ok(rows.collect::<Result<HashMap<_, _>, _>>()?)
    }

    pub fn set(&self, schema: &str, name: &str, a: &TableAccess) -> Result<(), UserTableError> {
        let groups: Vec<&str> = a.groups.iter().map(GroupName::as_str).collect();
        self.conn()?.execute(
            "INSERT INTO table_access (schema, name, public, groups) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(schema, name) DO UPDATE SET public = excluded.public, groups = excluded.groups",
            params![schema, name, a.public, groups.join(" ")],
        )?;
        Ok(())
    }

    pub fn remove(&self, schema: &str, name: &str) -> Result<(), UserTableError> {
        self.conn()?.execute(
            "DELETE FROM table_access WHERE schema = ?1 AND name = ?2",
            params![schema, name],
        )?;
        Ok(())
    }
}

/// What a CSV's metadata sidecar (JSON or YAML) may say: the table's description, which
/// columns hold the position, and each column's unit, UCD and description.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub ra: Option<String>,
    #[serde(default)]
    pub dec: Option<String>,
    #[serde(default)]
    pub columns: HashMap<String, ColumnMeta>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMeta {
    pub unit: Option<String>,
    pub ucd: Option<String>,
    pub description: Option<String>,
}

impl Sidecar {
    pub fn parse(text: &str) -> Result<Self, UserTableError> {
        serde_yaml::from_str(text).map_err(|e| UserTableError::Sidecar(e.to_string()))
    }

    /// Puts the sidecar's column metadata on the table's fields.
    fn apply(&self, t: &ImportedTable) -> Result<ImportedTable, UserTableError> {
        for name in self.columns.keys() {
            if t.schema.field_with_name(name).is_err() {
                return Err(UserTableError::Sidecar(format!(
                    "no column '{name}' in the table"
                )));
            }
        }
        let fields: Vec<arrow::datatypes::Field> = t
            .schema
            .fields()
            .iter()
            .map(|f| {
                let mut md = f.metadata().clone();
                if let Some(c) = self.columns.get(f.name()) {
                    for (k, v) in [
                        (meta::UNIT, &c.unit),
                        (meta::UCD, &c.ucd),
                        (meta::DESCRIPTION, &c.description),
                    ] {
                        if let Some(v) = v {
                            md.insert(k.to_string(), v.clone());
                        }
                    }
                }
                f.as_ref().clone().with_metadata(md)
            })
            .collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        let batches = t
            .batches
            .iter()
            .map(|b| {
                arrow::record_batch::RecordBatch::try_new(schema.clone(), b.columns().to_vec())
                    .map_err(|e| UserTableError::Sidecar(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ImportedTable {
            name: t.name.clone(),
            schema,
            batches,
        })
    }
}

/// Makes `user_<owner>.<name>` from an imported table; returns its rows and partitions.
pub async fn import(
    store: &CatalogStore,
    owner: &UserName,
    name: &str,
    table: ImportedTable,
    sidecar: Option<&Sidecar>,
) -> Result<(u64, usize), UserTableError> {
    valid_table_name(name)?;
    let schema = schema_of(owner);
    if store.manifest(&schema, name).await?.is_some() {
        return Err(UserTableError::Exists(name.to_string()));
    }
    let table = match sidecar {
        Some(s) => s.apply(&table)?,
        None => table,
    };
    let (ra, dec) = sidecar.map_or((None, None), |s| (s.ra.as_deref(), s.dec.as_deref()));
    let mut felis = felis_from_arrow(name, &table.schema, ra, dec)?;
    // The position columns place every row on the sky: they must be numbers.
    for c in &felis.columns {
        let is_position = c.ucd.as_deref().is_some_and(|u| {
            u.starts_with("pos.eq.ra;meta.main") || u.starts_with("pos.eq.dec;meta.main")
        });
        let numeric = table
            .schema
            .field_with_name(&c.name)
            .is_ok_and(|f| f.data_type().is_numeric());
        if is_position && !numeric {
            return Err(UserTableError::Invalid(format!(
                "the position column {} holds text, not degrees; name the right columns with ra= and dec=",
                c.name
            )));
        }
    }
    felis.description = Some(
        sidecar
            .and_then(|s| s.description.clone())
            .unwrap_or_else(|| format!("{owner}'s table {name}")),
    );
    // Made and loaded in one commit: a table that cannot be loaded is never seen.
    let mut commit = store.begin(&schema).await?;
    commit.create(&felis, DEFAULT_MAX_ROWS)?;
    commit.append(name, &table.batches).await?;
    let m = commit
        .commit()
        .await?
        .pop()
        .ok_or_else(|| UserTableError::Invalid(format!("{name}: nothing was written")))?;
    Ok((m.rows(), m.partitions.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Scopes;

    fn p(user: &str, groups: &[&str]) -> Principal {
        Principal {
            user: UserName::new(user).unwrap(),
            groups: groups.iter().map(|g| GroupName::new(g).unwrap()).collect(),
            admin: false,
            scopes: Scopes::ALL,
        }
    }

    #[test]
    fn who_may_read() {
        let private = TableAccess::default();
        assert!(private.allows("user_alice", Some(&p("alice", &[]))));
        assert!(!private.allows("user_alice", Some(&p("bob", &[]))));
        assert!(!private.allows("user_alice", None));
        let shared = TableAccess {
            public: false,
            groups: vec![GroupName::new("wg").unwrap()],
        };
        assert!(shared.allows("user_alice", Some(&p("bob", &["wg"]))));
        assert!(!shared.allows("user_alice", Some(&p("carol", &[]))));
        assert_eq!(owner_of("user_alice"), Some("alice"));
        assert_eq!(owner_of("dp"), None);
        assert_eq!(owner_of("user_Bad!"), None);
        assert!(valid_table_name("my_stars2").is_ok());
        assert!(valid_table_name("2x").is_err() && valid_table_name("a.b").is_err());
    }

    #[test]
    fn sidecars_parse_and_refuse_unknown_columns() {
        let s = Sidecar::parse(
            "description: my stars\nra: RA_deg\ncolumns:\n  mag: {unit: mag, ucd: phot.mag}\n",
        )
        .unwrap();
        assert_eq!(s.columns["mag"].unit.as_deref(), Some("mag"));
        assert!(Sidecar::parse("colums: {}").is_err());
        let t = crate::formats::read_csv(b"RA_deg,dec,mag\n1.0,2.0,20.5\n").unwrap();
        let applied = s.apply(&t).unwrap();
        let f = applied.schema.field_with_name("mag").unwrap();
        assert_eq!(
            f.metadata().get(meta::UCD).map(String::as_str),
            Some("phot.mag")
        );
        let bad = Sidecar::parse("columns:\n  nosuch: {unit: m}\n").unwrap();
        assert!(bad.apply(&t).is_err());
    }
}
