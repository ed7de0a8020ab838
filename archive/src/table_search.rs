//! Full-text search over the published tables and columns (tantivy, in memory): names
//! (camelCase split into words, so `diaObjectId` is found by "object"), descriptions, units
//! and UCDs, ranked by BM25 with names weighted above descriptions. Queries take the
//! tantivy syntax (words, "phrases", +required, -excluded, prefix*); malformed ones are
//! read leniently rather than refused, as users type them letter by letter.
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, TantivyDocument, doc};

use crate::tap_schema::SchemaDesc;

#[derive(Debug, thiserror::Error)]
#[error("table search: {0}")]
pub struct SearchError(#[from] tantivy::TantivyError);

/// What a search found: a table, or a column of one.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub table: String,
    pub column: Option<String>,
    pub description: String,
    pub score: f32,
}

/// An index of tables and columns.
pub struct TableIndex {
    index: Index,
    reader: IndexReader,
    table: Field,
    column: Field,
    name: Field,
    text: Field,
    description: Field,
}

/// "diaObjectId" -> "dia object id", "coord_ra" -> "coord ra": the words of a name.
fn name_words(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let mut prev_lower = false;
    for c in name.chars() {
        if c == '_' || c == '.' {
            out.push(' ');
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        out.push(c);
    }
    format!("{name} {out}")
}

impl TableIndex {
    pub fn build(schemas: &[SchemaDesc]) -> Result<Self, SearchError> {
        let mut sb = Schema::builder();
        let table = sb.add_text_field("table", STRING | STORED);
        let column = sb.add_text_field("column", STRING | STORED);
        let name = sb.add_text_field("name", TEXT);
        let text = sb.add_text_field("text", TEXT);
        let description = sb.add_text_field("description", STORED);
        let index = Index::create_in_ram(sb.build());
        let mut writer = index.writer_with_num_threads(1, 15_000_000)?;
        for s in schemas {
            for t in &s.tables {
                let d = t.description.clone().unwrap_or_default();
                writer.add_document(doc!(
                    table => t.name.clone(),
                    name => name_words(&t.name),
                    text => d.clone(),
                    description => d,
                ))?;
                for c in &t.columns {
                    let d = c.description.clone().unwrap_or_default();
                    let extra = [c.unit.as_deref(), c.ucd.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ");
                    writer.add_document(doc!(
                        table => t.name.clone(),
                        column => c.name.clone(),
                        name => name_words(&c.name),
                        text => format!("{d} {extra}"),
                        description => d,
                    ))?;
                }
            }
        }
        writer.commit()?;
        let reader = index.reader()?;
        Ok(Self {
            index,
            reader,
            table,
            column,
            name,
            text,
            description,
        })
    }

    /// The best `limit` matches of `query`.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, SearchError> {
        if query.trim().is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut parser = QueryParser::for_index(&self.index, vec![self.name, self.text]);
        parser.set_field_boost(self.name, 3.0);
        // Every word must match, as users narrow a search by typing more.
        parser.set_conjunction_by_default();
        let (q, _) = parser.parse_query_lenient(query);
        let searcher = self.reader.searcher();
        let top = searcher.search(&q, &TopDocs::with_limit(limit).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let d: TantivyDocument = searcher.doc(address)?;
            let text = |f: Field| d.get_first(f).and_then(|v| v.as_str()).map(str::to_string);
            hits.push(Hit {
                table: text(self.table).unwrap_or_default(),
                column: text(self.column),
                description: text(self.description).unwrap_or_default(),
                score,
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tap_schema::{ColumnDesc, TableDesc};

    fn col(name: &str, description: &str, ucd: &str) -> ColumnDesc {
        ColumnDesc {
            name: name.into(),
            datatype: "double".into(),
            arraysize: None,
            xtype: None,
            unit: None,
            ucd: Some(ucd.into()),
            utype: None,
            description: Some(description.into()),
            principal: false,
            indexed: false,
            std: false,
        }
    }

    fn schemas() -> Vec<SchemaDesc> {
        let table = |name: &str, d: &str, columns| TableDesc {
            name: name.into(),
            description: Some(d.into()),
            table_type: "table".into(),
            columns,
            keys: Vec::new(),
        };
        vec![SchemaDesc {
            name: "ap".into(),
            description: None,
            tables: vec![
                table(
                    "ap.DiaSource",
                    "Sources detected on difference images",
                    vec![
                        col(
                            "diaObjectId",
                            "The DiaObject this source belongs to",
                            "meta.id",
                        ),
                        col(
                            "psfFlux",
                            "Flux by PSF fitting on the difference image",
                            "phot.flux",
                        ),
                    ],
                ),
                table(
                    "ap.SSObject",
                    "Solar system objects: orbits and phase curves",
                    vec![col("ssObjectId", "Identifier", "meta.id;meta.main")],
                ),
            ],
        }]
    }

    #[test]
    fn names_split_into_words_and_descriptions_are_searched() {
        let idx = TableIndex::build(&schemas()).unwrap();
        let hits = idx.search("object", 10).unwrap();
        assert!(
            hits.iter()
                .any(|h| h.column.as_deref() == Some("diaObjectId")),
            "{hits:?}"
        );
        let hits = idx.search("difference flux", 10).unwrap();
        assert_eq!(hits[0].column.as_deref(), Some("psfFlux"), "{hits:?}");
        let hits = idx.search("orbits", 10).unwrap();
        assert_eq!(
            (hits[0].table.as_str(), hits[0].column.as_deref()),
            ("ap.SSObject", None)
        );
        assert!(
            idx.search("phot.flux", 5)
                .unwrap()
                .iter()
                .any(|h| h.column.as_deref() == Some("psfFlux"))
        );
        // Malformed queries are read leniently, empty ones find nothing.
        assert!(idx.search("flux AND (", 5).is_ok());
        assert!(idx.search("  ", 5).unwrap().is_empty());
        assert_eq!(name_words("diaObjectId"), "diaObjectId dia Object Id");
    }
}
