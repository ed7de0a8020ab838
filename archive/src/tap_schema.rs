//! The archive's table metadata as TAP publishes it: one model built from the catalog's
//! Felis definitions, rendered as the TAP_SCHEMA 1.1 tables and used for VOSI-tables.
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;

use crate::schema::{FelisTable, meta};

#[derive(Debug, Clone)]
pub struct ColumnDesc {
    pub name: String,
    pub datatype: String,
    pub arraysize: Option<String>,
    pub xtype: Option<String>,
    pub unit: Option<String>,
    pub ucd: Option<String>,
    pub utype: Option<String>,
    pub description: Option<String>,
    pub principal: bool,
    pub indexed: bool,
    pub std: bool,
}

#[derive(Debug, Clone)]
pub struct KeyDesc {
    pub id: String,
    pub from_table: String,
    pub target_table: String,
    pub description: Option<String>,
    pub columns: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct TableDesc {
    /// Schema-qualified, as TAP_SCHEMA.tables.table_name gives it.
    pub name: String,
    pub description: Option<String>,
    pub table_type: String,
    pub columns: Vec<ColumnDesc>,
    pub keys: Vec<KeyDesc>,
}

#[derive(Debug, Clone)]
pub struct SchemaDesc {
    pub name: String,
    pub description: Option<String>,
    pub tables: Vec<TableDesc>,
}

/// VOTable datatype and arraysize for an Arrow type (with its DALI xtype, and the datatype
/// text was declared with), as TAP_SCHEMA and VOSI declare them. The result writers declare the same (a test in the protocols crate
/// holds the two together).
pub fn votable_type(
    dt: &DataType,
    xtype: Option<&str>,
    declared: Option<&str>,
) -> (&'static str, Option<String>) {
    let any = || Some("*".to_string());
    match dt {
        DataType::Boolean => ("boolean", None),
        DataType::Int8 | DataType::Int16 => ("short", None),
        DataType::UInt8 => ("unsignedByte", None),
        DataType::Int32 | DataType::UInt16 => ("int", None),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ("long", None),
        DataType::Float16 | DataType::Float32 => ("float", None),
        DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => ("double", None),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Null => {
            ("char", any())
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => ("unsignedByte", any()),
        DataType::List(item) | DataType::LargeList(item) => match array_element(item.data_type()) {
            // DALI fixes the shape of points and circles even when stored as plain lists.
            Some(elem) => match xtype.map(str::to_ascii_lowercase).as_deref() {
                Some("point") => (elem, Some("2".into())),
                Some("circle") => (elem, Some("3".into())),
                _ => (elem, any()),
            },
            None => ("unicodeChar", any()),
        },
        DataType::FixedSizeList(item, n) => match array_element(item.data_type()) {
            Some(elem) if *n > 0 => (elem, Some(n.to_string())),
            Some(elem) => (elem, any()),
            None => ("unicodeChar", any()),
        },
        DataType::Dictionary(_, value) => votable_type(value, xtype, declared),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if declared == Some("char") => {
            ("char", any())
        }
        // Strings may hold any Unicode, so results carry them as unicodeChar; other types
        // are written as their display text.
        _ => ("unicodeChar", any()),
    }
}

/// The VOTable element type of numeric arrays.
fn array_element(dt: &DataType) -> Option<&'static str> {
    match dt {
        DataType::Float16 | DataType::Float32 => Some("float"),
        DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Some("double"),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Some("long"),
        _ => None,
    }
}

impl ColumnDesc {
    pub fn from_field(f: &Field, principal: bool, indexed: bool, std: bool) -> Self {
        let md = f.metadata();
        let get = |k: &str| md.get(k).filter(|v| !v.is_empty()).cloned();
        let xtype = get(meta::XTYPE).or_else(|| {
            matches!(f.data_type(), DataType::Timestamp(..)).then(|| "timestamp".to_string())
        });
        let (datatype, arraysize) = votable_type(
            f.data_type(),
            xtype.as_deref(),
            get(meta::DATATYPE).as_deref(),
        );
        Self {
            name: f.name().clone(),
            datatype: datatype.to_string(),
            arraysize,
            xtype,
            unit: get(meta::UNIT),
            ucd: get(meta::UCD),
            utype: get(meta::UTYPE),
            description: get(meta::DESCRIPTION),
            principal: principal || get(meta::PRINCIPAL).as_deref() == Some("1"),
            indexed,
            std,
        }
    }
}

impl TableDesc {
    pub fn from_felis(schema: &str, t: &FelisTable) -> Self {
        let arrow = t.arrow_schema();
        let pk = t.primary_key_columns();
        let pos = t.position_columns();
        let columns = arrow
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let is_pos = pos
                    .as_ref()
                    .is_some_and(|(r, d)| r == f.name() || d == f.name());
                let is_key = pk.contains(f.name());
                ColumnDesc::from_field(f, i < 8 || is_key || is_pos, is_key || is_pos, false)
            })
            .collect();
        let keys = t
            .foreign_keys
            .iter()
            .map(|k| {
                let target_table = k
                    .referenced_columns
                    .first()
                    .and_then(|c| c.trim_start_matches('#').split('.').next())
                    .unwrap_or_default();
                KeyDesc {
                    id: format!("{schema}.{}", k.name),
                    from_table: format!("{schema}.{}", t.name),
                    target_table: format!("{schema}.{target_table}"),
                    description: k.description.clone(),
                    columns: k
                        .columns
                        .iter()
                        .zip(&k.referenced_columns)
                        .map(|(a, b)| (col_of(a), col_of(b)))
                        .collect(),
                }
            })
            .collect();
        Self {
            name: format!("{schema}.{}", t.name),
            description: t.description.clone(),
            table_type: "table".into(),
            columns,
            keys,
        }
    }
}

fn col_of(reference: &str) -> String {
    reference
        .rsplit('.')
        .next()
        .unwrap_or(reference)
        .to_string()
}

const TAP_SCHEMA: &str = "TAP_SCHEMA";

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
fn i(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}

/// One of TAP_SCHEMA's own tables: name, description, fields with their descriptions.
type TapSchemaTable = (&'static str, &'static str, Vec<(Field, &'static str)>);

/// TAP_SCHEMA's own tables.
fn tap_schema_tables() -> Vec<TapSchemaTable> {
    vec![
        (
            "schemas",
            "Schemas in this service",
            vec![
                (
                    s("schema_name"),
                    "schema name for reference to tap_schema.schemas",
                ),
                (s("utype"), "lists the utypes of schemas in the tableset"),
                (s("description"), "describes schemas in the tableset"),
                (
                    i("schema_index"),
                    "recommended sort order when listing schemas",
                ),
            ],
        ),
        (
            "tables",
            "Tables in this service",
            vec![
                (s("schema_name"), "the schema this table belongs to"),
                (s("table_name"), "the fully qualified table name"),
                (s("table_type"), "one of: table or view"),
                (s("utype"), "lists the utype of tables in the tableset"),
                (s("description"), "describes tables in the tableset"),
                (
                    i("table_index"),
                    "recommended sort order when listing tables",
                ),
            ],
        ),
        (
            "columns",
            "Columns of the tables in this service",
            vec![
                (s("table_name"), "the table this column belongs to"),
                (s("column_name"), "the column name"),
                (s("utype"), "lists the utypes of columns in the tableset"),
                (s("ucd"), "lists the UCDs of columns in the tableset"),
                (
                    s("unit"),
                    "lists the unit used for column values in the tableset",
                ),
                (s("description"), "describes the columns in the tableset"),
                (
                    s("datatype"),
                    "lists the ADQL datatype of columns in the tableset",
                ),
                (
                    s("arraysize"),
                    "lists the size of variable-length columns in the tableset",
                ),
                (s("xtype"), "a DALI or custom extended type annotation"),
                (i("size"), "deprecated: use arraysize"),
                (i("principal"), "a principal column; 1 means 1, 0 means 0"),
                (i("indexed"), "an indexed column; 1 means 1, 0 means 0"),
                (i("std"), "a standard column; 1 means 1, 0 means 0"),
                (
                    i("column_index"),
                    "recommended sort order when listing columns",
                ),
            ],
        ),
        (
            "keys",
            "Foreign keys between tables",
            vec![
                (s("key_id"), "unique key to join to tap_schema.key_columns"),
                (s("from_table"), "the table with the foreign key"),
                (s("target_table"), "the table with the primary key"),
                (s("utype"), "lists the utype of keys in the tableset"),
                (s("description"), "describes keys in the tableset"),
            ],
        ),
        (
            "key_columns",
            "Columns of the foreign keys",
            vec![
                (s("key_id"), "key to join to tap_schema.keys"),
                (s("from_column"), "column in the from_table"),
                (s("target_column"), "column in the target_table"),
            ],
        ),
    ]
}

/// The foreign keys among TAP_SCHEMA's own tables that TAP 1.1 declares.
fn tap_schema_keys(table: &str) -> Vec<KeyDesc> {
    let key = |id: &str, target: &str, from: &str, to: &str| KeyDesc {
        id: format!("{TAP_SCHEMA}.{id}"),
        from_table: format!("{TAP_SCHEMA}.{table}"),
        target_table: format!("{TAP_SCHEMA}.{target}"),
        description: None,
        columns: vec![(from.into(), to.into())],
    };
    match table {
        "tables" => vec![key(
            "tables_schema_fk",
            "schemas",
            "schema_name",
            "schema_name",
        )],
        "columns" => vec![key(
            "columns_table_fk",
            "tables",
            "table_name",
            "table_name",
        )],
        "keys" => vec![
            key("keys_from_fk", "tables", "from_table", "table_name"),
            key("keys_target_fk", "tables", "target_table", "table_name"),
        ],
        "key_columns" => vec![key("key_columns_key_fk", "keys", "key_id", "key_id")],
        _ => vec![],
    }
}

/// The TAP_SCHEMA schema itself, described like any other.
pub fn tap_schema_desc() -> SchemaDesc {
    SchemaDesc {
        name: TAP_SCHEMA.into(),
        description: Some("Metadata of the tables this TAP service offers (TAP 1.1)".into()),
        tables: tap_schema_tables()
            .into_iter()
            .map(|(name, description, fields)| TableDesc {
                name: format!("{TAP_SCHEMA}.{name}"),
                description: Some(description.into()),
                table_type: "table".into(),
                columns: fields
                    .into_iter()
                    .map(|(f, d)| {
                        let f = f
                            .with_metadata([(meta::DESCRIPTION.to_string(), d.to_string())].into());
                        let mut c = ColumnDesc::from_field(&f, true, false, true);
                        // `size` is an ADQL reserved word: TAP 1.1 publishes it delimited.
                        if c.name == "size" {
                            c.name = "\"size\"".into();
                        }
                        c
                    })
                    .collect(),
                keys: tap_schema_keys(name),
            })
            .collect(),
    }
}

fn opt(v: &Option<String>) -> Option<&str> {
    v.as_deref()
}

/// The five TAP_SCHEMA tables for `schemas` (which should include [`tap_schema_desc`]).
pub fn tap_schema_tables_data(
    schemas: &[SchemaDesc],
) -> datafusion::common::Result<Vec<(String, Arc<MemTable>)>> {
    let defs = tap_schema_tables();
    let schema_of = |name: &str| -> Arc<Schema> {
        let (_, _, fields) = defs
            .iter()
            .find(|(n, _, _)| *n == name)
            .expect("defined above");
        let fields: Vec<Field> = fields
            .iter()
            .map(|(f, d)| {
                f.clone()
                    .with_metadata([(meta::DESCRIPTION.to_string(), d.to_string())].into())
            })
            .collect();
        Arc::new(Schema::new(fields))
    };
    let str_col = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let int_col = |v: Vec<Option<i32>>| Arc::new(Int32Array::from(v)) as ArrayRef;

    let mut out = Vec::new();
    let tables: Vec<(&SchemaDesc, &TableDesc)> = schemas
        .iter()
        .flat_map(|s| s.tables.iter().map(move |t| (s, t)))
        .collect();
    let columns: Vec<(&TableDesc, &ColumnDesc, usize)> = tables
        .iter()
        .flat_map(|(_, t)| {
            t.columns
                .iter()
                .enumerate()
                .map(move |(i, c)| (*t, c, i + 1))
        })
        .collect();
    let keys: Vec<&KeyDesc> = tables.iter().flat_map(|(_, t)| t.keys.iter()).collect();

    let batch =
        |name: &str, cols: Vec<ArrayRef>| -> datafusion::common::Result<(String, Arc<MemTable>)> {
            let schema = schema_of(name);
            let b = RecordBatch::try_new(schema.clone(), cols)?;
            Ok((
                name.to_string(),
                Arc::new(MemTable::try_new(schema, vec![vec![b]])?),
            ))
        };
    out.push(batch(
        "schemas",
        vec![
            str_col(schemas.iter().map(|s| Some(s.name.as_str())).collect()),
            str_col(schemas.iter().map(|_| None).collect()),
            str_col(schemas.iter().map(|s| opt(&s.description)).collect()),
            int_col((1..=schemas.len() as i32).map(Some).collect()),
        ],
    )?);
    out.push(batch(
        "tables",
        vec![
            str_col(tables.iter().map(|(s, _)| Some(s.name.as_str())).collect()),
            str_col(tables.iter().map(|(_, t)| Some(t.name.as_str())).collect()),
            str_col(
                tables
                    .iter()
                    .map(|(_, t)| Some(t.table_type.as_str()))
                    .collect(),
            ),
            str_col(tables.iter().map(|_| None).collect()),
            str_col(tables.iter().map(|(_, t)| opt(&t.description)).collect()),
            int_col((1..=tables.len() as i32).map(Some).collect()),
        ],
    )?);
    out.push(batch(
        "columns",
        vec![
            str_col(
                columns
                    .iter()
                    .map(|(t, _, _)| Some(t.name.as_str()))
                    .collect(),
            ),
            str_col(
                columns
                    .iter()
                    .map(|(_, c, _)| Some(c.name.as_str()))
                    .collect(),
            ),
            str_col(columns.iter().map(|(_, c, _)| opt(&c.utype)).collect()),
            str_col(columns.iter().map(|(_, c, _)| opt(&c.ucd)).collect()),
            str_col(columns.iter().map(|(_, c, _)| opt(&c.unit)).collect()),
            str_col(
                columns
                    .iter()
                    .map(|(_, c, _)| opt(&c.description))
                    .collect(),
            ),
            str_col(
                columns
                    .iter()
                    .map(|(_, c, _)| Some(c.datatype.as_str()))
                    .collect(),
            ),
            str_col(columns.iter().map(|(_, c, _)| opt(&c.arraysize)).collect()),
            str_col(columns.iter().map(|(_, c, _)| opt(&c.xtype)).collect()),
            int_col(columns.iter().map(|_| None).collect()),
            int_col(
                columns
                    .iter()
                    .map(|(_, c, _)| Some(c.principal as i32))
                    .collect(),
            ),
            int_col(
                columns
                    .iter()
                    .map(|(_, c, _)| Some(c.indexed as i32))
                    .collect(),
            ),
            int_col(columns.iter().map(|(_, c, _)| Some(c.std as i32)).collect()),
            int_col(columns.iter().map(|(_, _, i)| Some(*i as i32)).collect()),
        ],
    )?);
    out.push(batch(
        "keys",
        vec![
            str_col(keys.iter().map(|k| Some(k.id.as_str())).collect()),
            str_col(keys.iter().map(|k| Some(k.from_table.as_str())).collect()),
            str_col(keys.iter().map(|k| Some(k.target_table.as_str())).collect()),
            str_col(keys.iter().map(|_| None).collect()),
            str_col(keys.iter().map(|k| opt(&k.description)).collect()),
        ],
    )?);
    let kc: Vec<(&str, &str, &str)> = keys
        .iter()
        .flat_map(|k| {
            k.columns
                .iter()
                .map(move |(a, b)| (k.id.as_str(), a.as_str(), b.as_str()))
        })
        .collect();
    out.push(batch(
        "key_columns",
        vec![
            str_col(kc.iter().map(|x| Some(x.0)).collect()),
            str_col(kc.iter().map(|x| Some(x.1)).collect()),
            str_col(kc.iter().map(|x| Some(x.2)).collect()),
        ],
    )?);
    Ok(out)
}
