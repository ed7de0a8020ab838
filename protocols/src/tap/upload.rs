//! TAP table uploads (TAP 1.1 §3.3.4, DALI UPLOAD): `name,param:part` for a multipart part
//! sent with the request, and `name,http(s)://...` for a table the service fetches. URLs
//! are fetched only under prefixes the operator allows (by default the archive's own base
//! URL, so a previous job's result can feed the next query), without following redirects
//! and within the upload size limit: the service never becomes a proxy into the networks
//! behind it. Each table becomes `TAP_UPLOAD.<name>`.
use std::sync::Arc;
use std::time::Duration;

use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use aster_archive::formats::read_any;
use aster_archive::query::Upload;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use url::Url;

use super::run::{BadRequest, TapParams};

/// Where URL uploads may come from, and how they are fetched.
#[derive(Debug, Clone)]
pub struct UploadSources {
    prefixes: Vec<Url>,
    client: reqwest::Client,
    max_bytes: usize,
}

impl UploadSources {
    /// `prefixes` are URLs (http or https) under which tables may be fetched; a prefix that
    /// names only a host allows everything on it.
    pub fn new(prefixes: &[String], max_bytes: usize, timeout: Duration) -> Result<Self, String> {
        let prefixes = prefixes
            .iter()
            .map(|p| {
                let u = Url::parse(p).map_err(|e| format!("upload URL prefix {p}: {e}"))?;
                if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
                    return Err(format!("upload URL prefix {p}: must be an http(s) URL"));
                }
                Ok(u)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            prefixes,
            client,
            max_bytes,
        })
    }

    /// Whether `url` lies under an allowed prefix: same scheme, host and port, and a path
    /// that continues the prefix's at a segment boundary.
    fn allows(&self, url: &Url) -> bool {
        self.prefixes.iter().any(|p| {
            let path = p.path();
            p.scheme() == url.scheme()
                && p.host() == url.host()
                && p.port_or_known_default() == url.port_or_known_default()
                && url.path().starts_with(path)
                && (path.ends_with('/')
                    || url.path().len() == path.len()
                    || url.path()[path.len()..].starts_with('/'))
        })
    }

    /// The table at `url`, read in full but never past the size limit.
    async fn fetch(&self, name: &str, url: &Url) -> Result<Upload, String> {
        let fail = |m: String| format!("UPLOAD {name} from {url}: {m}");
        let resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("the server answered {}", resp.status())));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(fail(format!(
                "larger than the upload limit of {} bytes",
                self.max_bytes
            )));
        }
        let mut body = BytesMut::new();
        let mut chunks = resp.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| fail(e.to_string()))?;
            if body.len() + chunk.len() > self.max_bytes {
                return Err(fail(format!(
                    "larger than the upload limit of {} bytes",
                    self.max_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let file_name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_string();
        table(name, &file_name, body.freeze()).map_err(|e| fail(e.0))
    }
}

/// One UPLOAD item: a table already here, or one to fetch when the query runs.
pub enum PendingUpload {
    Ready(Upload),
    Remote { name: String, url: Url },
}

/// The tables named by the request's UPLOAD parameters. Inline parts are read now, so a
/// broken file is refused when the request arrives; URLs are checked against the allowed
/// prefixes now and fetched by [`resolve`].
pub fn parse(p: &TapParams, sources: &UploadSources) -> Result<Vec<PendingUpload>, BadRequest> {
    let mut out = Vec::new();
    for spec in p.all("UPLOAD") {
        for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
            let (name, uri) = item
                .split_once(',')
                .ok_or_else(|| BadRequest(format!("UPLOAD={item}: expected name,URI")))?;
            let name = name.trim();
            if name.is_empty()
                || !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(BadRequest(format!(
                    "UPLOAD table name '{name}' is not a valid ADQL identifier"
                )));
            }
            if out
                .iter()
                .any(|u: &PendingUpload| u.name().eq_ignore_ascii_case(name))
            {
                return Err(BadRequest(format!("UPLOAD table {name} is given twice")));
            }
            let uri = uri.trim();
            if let Some(part) = uri.strip_prefix("param:") {
                let bytes = p.files.get(part).ok_or_else(|| {
                    BadRequest(format!("UPLOAD {name}: no multipart part named '{part}'"))
                })?;
                out.push(PendingUpload::Ready(table(name, part, bytes.clone())?));
                continue;
            }
            let url = Url::parse(uri).map_err(|e| {
                BadRequest(format!(
                    "UPLOAD {name}: '{uri}' is neither param:<part> nor a URL ({e})"
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(BadRequest(format!(
                    "UPLOAD {name}: only param:, http: and https: sources are accepted"
                )));
            }
            if !sources.allows(&url) {
                return Err(BadRequest(format!(
                    "UPLOAD {name}: this service does not fetch tables from {url}; send the \
                     table inline (param:) or use a URL under this archive"
                )));
            }
            out.push(PendingUpload::Remote {
                name: name.to_string(),
                url,
            });
        }
    }
    Ok(out)
}

impl PendingUpload {
    fn name(&self) -> &str {
        match self {
            PendingUpload::Ready(u) => &u.name,
            PendingUpload::Remote { name, .. } => name,
        }
    }
}

/// Every upload, with URL tables fetched.
pub async fn resolve(
    pending: Vec<PendingUpload>,
    sources: &UploadSources,
) -> Result<Vec<Upload>, String> {
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        out.push(match p {
            PendingUpload::Ready(u) => u,
            PendingUpload::Remote { name, url } => sources.fetch(&name, &url).await?,
        });
    }
    Ok(out)
}

fn table(name: &str, file_name: &str, bytes: Bytes) -> Result<Upload, BadRequest> {
    let t = read_any(file_name, bytes).map_err(|e| BadRequest(format!("UPLOAD {name}: {e}")))?;
    let (schema, batches) = typed_timestamps(t.schema, t.batches);
    Ok(Upload {
        name: name.to_string(),
        schema,
        batches,
    })
}

/// Uploaded text columns marked as DALI timestamps become timestamp columns, so queries
/// compare them as times and results declare them as timestamps again. Columns whose
/// values do not parse stay text.
fn typed_timestamps(schema: SchemaRef, batches: Vec<RecordBatch>) -> (SchemaRef, Vec<RecordBatch>) {
    let target = DataType::Timestamp(TimeUnit::Microsecond, None);
    let candidates: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) && f
                .metadata()
                .get("xtype")
                .is_some_and(|x| x.eq_ignore_ascii_case("timestamp"))
        })
        .map(|(i, _)| i)
        .collect();
    let convertible: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| batches.iter().all(|b| cast(b.column(i), &target).is_ok()))
        .collect();
    if convertible.is_empty() {
        return (schema, batches);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if convertible.contains(&i) {
                f.as_ref().clone().with_data_type(target.clone())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let new_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let mut out = Vec::with_capacity(batches.len());
    for b in &batches {
        let cols: Result<Vec<_>, _> = b
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if convertible.contains(&i) {
                    cast(c, &target)
                } else {
                    Ok(c.clone())
                }
            })
            .collect();
        match cols.and_then(|c| RecordBatch::try_new(new_schema.clone(), c)) {
            Ok(nb) => out.push(nb),
            Err(_) => return (schema, batches),
        }
    }
    (new_schema, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(prefixes: &[&str]) -> UploadSources {
        let p: Vec<String> = prefixes.iter().map(|s| s.to_string()).collect();
        UploadSources::new(&p, 1 << 20, Duration::from_secs(5)).unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_urls_under_an_allowed_prefix_are_fetched() {
        let s = sources(&[
            "http://archive.example:8080",
            "https://files.example/tables",
        ]);
        assert!(s.allows(&url(
            "http://archive.example:8080/tap/async/x/results/result"
        )));
        assert!(s.allows(&url("https://files.example/tables/a.vot")));
        assert!(s.allows(&url("https://files.example:443/tables")));
        assert!(!s.allows(&url("https://files.example/tablesecret/a.vot")));
        assert!(!s.allows(&url("http://archive.example/tap")), "other port");
        assert!(
            !s.allows(&url("http://archive.example.evil:8080/")),
            "other host"
        );
        assert!(
            !s.allows(&url("http://files.example/tables/a.vot")),
            "other scheme"
        );
        assert!(!s.allows(&url("http://169.254.169.254/latest/meta-data")));
        assert!(UploadSources::new(&["file:///etc".into()], 1, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn upload_parameters_are_checked_when_the_request_arrives() {
        let s = sources(&["http://archive.example:8080"]);
        let params = |v: &str| TapParams {
            params: vec![("UPLOAD".into(), v.into())],
            files: Default::default(),
        };
        let err = |v: &str| match parse(&params(v), &s) {
            Err(e) => e.0,
            Ok(_) => panic!("{v} was accepted"),
        };
        assert!(err("t,http://10.0.0.1/x.vot").contains("does not fetch"));
        assert!(err("t,file:///etc/passwd").contains("only param:"));
        assert!(err("t,param:missing").contains("no multipart part"));
        assert!(err("1t,param:a").contains("not a valid ADQL identifier"));
        assert!(
            err("t,http://archive.example:8080/a;T,http://archive.example:8080/b")
                .contains("twice")
        );
        let Ok(ok) = parse(
            &params("t,http://archive.example:8080/tap/sync?QUERY=x"),
            &s,
        ) else {
            panic!("a URL under the archive was refused");
        };
        assert!(matches!(&ok[..], [PendingUpload::Remote { name, .. }] if name == "t"));
    }
}
