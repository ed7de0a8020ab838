//! Runs the IVOA "lyonetia" ADQL validation suite (shared/adql-validation:
//! ivoa/, gavo/ and roe/ query files) through `aster_adql::validate` and
//! requires every valid/invalid verdict to match. Functions a suite file
//! declares in `<functions>` blocks (file-wide or per query) are passed to
//! the validator as user-defined functions, as a TAP service would declare
//! them in its capabilities.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aster_adql::validate::{UserFunction, check_with};

/// Number of `<query>` elements in the suite as shipped.
const EXPECTED_QUERIES: usize = 495;

/// One query of the suite.
struct SuiteQuery {
    file: String,
    uuid: String,
    adql: String,
    valid: bool,
    version: String,
    functions: Vec<String>,
}

// ---------------------------------------------------------------------------
// Minimal XML reading: enough for the suite's files (elements, attributes,
// comments, CDATA, processing instructions, the five predefined entities and
// numeric character references).
// ---------------------------------------------------------------------------

enum Event {
    Start {
        name: String,
        attrs: Vec<(String, String)>,
        empty: bool,
    },
    End(String),
    Text(String),
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        if let Some(c) = decoded {
            out.push(c);
            rest = &rest[semi + 1..];
        } else {
            out.push('&');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

fn parse_attrs(text: &str) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let body = &after[1..];
        let Some(end) = body.find(quote) else { break };
        attrs.push((name, unescape(&body[..end])));
        rest = &body[end + 1..];
    }
    attrs
}

fn xml_events(xml: &str) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let mut rest = xml;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            events.push(Event::Text(unescape(rest)));
            break;
        };
        if lt > 0 {
            events.push(Event::Text(unescape(&rest[..lt])));
        }
        rest = &rest[lt..];
        let skip_past = |rest: &str, end: &str| -> Result<usize, String> {
            rest.find(end)
                .map(|i| i + end.len())
                .ok_or_else(|| format!("unterminated markup, missing {end}"))
        };
        if rest.starts_with("<!--") {
            rest = &rest[skip_past(rest, "-->")?..];
        } else if let Some(body) = rest.strip_prefix("<![CDATA[") {
            let end = body.find("]]>").ok_or("unterminated CDATA section")?;
            events.push(Event::Text(body[..end].to_string()));
            rest = &body[end + 3..];
        } else if rest.starts_with("<?") {
            rest = &rest[skip_past(rest, "?>")?..];
        } else if rest.starts_with("<!") {
            rest = &rest[skip_past(rest, ">")?..];
        } else if let Some(body) = rest.strip_prefix("</") {
            let end = body.find('>').ok_or("unterminated end tag")?;
            events.push(Event::End(body[..end].trim().to_string()));
            rest = &body[end + 1..];
        } else {
            let body = &rest[1..];
            let end = body.find('>').ok_or("unterminated start tag")?;
            let mut inner = &body[..end];
            let empty = inner.ends_with('/');
            if empty {
                inner = &inner[..inner.len() - 1];
            }
            let name_end = inner
                .find(|c: char| c.is_whitespace())
                .unwrap_or(inner.len());
            events.push(Event::Start {
                name: inner[..name_end].to_string(),
                attrs: parse_attrs(&inner[name_end..]),
                empty,
            });
            rest = &body[end + 1..];
        }
    }
    Ok(events)
}

fn attr(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Extracts the queries of one suite file.
fn read_suite_file(path: &Path, root: &Path) -> Result<Vec<SuiteQuery>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // One ESO query has a stray non-UTF-8 byte inside an SQL comment.
    let xml = String::from_utf8_lossy(&bytes);
    let file = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let events = xml_events(&xml).map_err(|e| format!("{file}: {e}"))?;

    let mut queries = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut file_functions = Vec::new();
    let mut current: Option<SuiteQuery> = None;
    let mut text = String::new();
    for event in events {
        match event {
            Event::Start { name, attrs, empty } => {
                text.clear();
                match name.as_str() {
                    "query" => {
                        current = Some(SuiteQuery {
                            file: file.clone(),
                            uuid: attr(&attrs, "uuid").unwrap_or_default(),
                            adql: String::new(),
                            valid: false,
                            version: String::new(),
                            functions: Vec::new(),
                        });
                    }
                    "adql" => {
                        if let Some(q) = current.as_mut() {
                            // Defaults from queries.xsd.
                            q.valid = attr(&attrs, "valid").as_deref() == Some("true");
                            q.version =
                                attr(&attrs, "version").unwrap_or_else(|| "adql-2.1".into());
                        }
                    }
                    _ => {}
                }
                if !empty {
                    stack.push(name);
                }
            }
            Event::Text(t) => text.push_str(&t),
            Event::End(name) => {
                if stack.pop().as_deref() != Some(name.as_str()) {
                    return Err(format!("{file}: mismatched </{name}>"));
                }
                match name.as_str() {
                    "adql" => {
                        if let Some(q) = current.as_mut() {
                            q.adql = std::mem::take(&mut text);
                        }
                    }
                    "form" => {
                        let form = std::mem::take(&mut text);
                        match current.as_mut() {
                            Some(q) => q.functions.push(form),
                            None => file_functions.push(form),
                        }
                    }
                    "query" => {
                        if let Some(mut q) = current.take() {
                            q.functions.extend(file_functions.iter().cloned());
                            queries.push(q);
                        }
                    }
                    _ => {}
                }
                text.clear();
            }
        }
    }
    if !stack.is_empty() {
        return Err(format!("{file}: unclosed elements {stack:?}"));
    }
    Ok(queries)
}

fn suite_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            suite_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "xml") {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn lyonetia_suite_verdicts_match() {
    // Cargo sets CARGO_MANIFEST_DIR when it runs the test too: prefer that, so a binary
    // built from another checkout sharing the target directory looks beside this one.
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let root = Path::new(&manifest_dir).join("../../shared/adql-validation");
    assert!(
        root.is_dir(),
        "the IVOA ADQL validation suite is missing: expected it at {} \
         (shared/adql-validation next to the repository)",
        root.display()
    );
    let mut files = Vec::new();
    suite_files(&root, &mut files).expect("suite directory is readable");

    let mut queries = Vec::new();
    for path in &files {
        queries.extend(read_suite_file(path, &root).expect("suite file parses"));
    }

    let mut mismatches = Vec::new();
    let mut valid = 0usize;
    let mut elapsed = Duration::ZERO;
    for q in &queries {
        assert_eq!(
            q.version, "adql-2.1",
            "{} {}: unexpected ADQL version",
            q.file, q.uuid
        );
        let udfs: Vec<UserFunction> = q
            .functions
            .iter()
            .filter_map(|f| UserFunction::from_form(f))
            .collect();
        let started = Instant::now();
        let verdict = check_with(&q.adql, &udfs);
        elapsed += started.elapsed();
        if q.valid {
            valid += 1;
        }
        match (&verdict, q.valid) {
            (Ok(()), true) | (Err(_), false) => {}
            (Ok(()), false) => mismatches.push(format!(
                "{} {}: expected INVALID but accepted\n    {}",
                q.file,
                q.uuid,
                q.adql.trim()
            )),
            (Err(e), true) => mismatches.push(format!(
                "{} {}: expected VALID but rejected: {e}\n    {}",
                q.file,
                q.uuid,
                q.adql.trim()
            )),
        }
    }

    let count = queries.len();
    let per_query = elapsed / u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    println!(
        "lyonetia: checked {count} queries from {} files ({valid} valid, {} invalid); \
         {per_query:?} per query",
        files.len(),
        count - valid,
    );
    for m in &mismatches {
        println!("MISMATCH {m}");
    }
    assert!(
        mismatches.is_empty(),
        "{} of {count} verdicts differ from the suite:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!(count, EXPECTED_QUERIES, "number of queries in the suite");
}
