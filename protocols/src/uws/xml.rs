//! The UWS 1.1 XML documents (job list, job, results, parameters), following the element order
//! and nillability of the UWS schema, and the DALI error VOTable served at `/error`.

use std::borrow::Cow;

use aster_archive::jobs::{Job, JobRef};
use chrono::{DateTime, SecondsFormat, Utc};

use crate::xml::escape;

const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Namespace declarations of every UWS root element.
const UWS_NAMESPACES: &str = "xmlns:uws=\"http://www.ivoa.net/xml/UWS/v1.0\" \
     xmlns:xlink=\"http://www.w3.org/1999/xlink\" \
     xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"";

/// A UTC time as DALI writes it, to the millisecond: `2024-05-01T12:00:00.000Z`.
pub(super) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `<uws:jobs>`: the job list; each job links to `<list_url>/<id>`.
pub(super) fn job_list(jobs: &[JobRef], list_url: &str) -> String {
    let mut out = String::from(XML_DECLARATION);
    out.push_str(&format!("<uws:jobs {UWS_NAMESPACES} version=\"1.1\">\n"));
    for job in jobs {
        let href = format!("{list_url}/{}", path_segment(&job.id));
        out.push_str(&format!(
            "  <uws:jobref id=\"{}\" xlink:href=\"{}\">\n",
            escape(&job.id),
            escape(&href)
        ));
        out.push_str(&format!("    <uws:phase>{}</uws:phase>\n", job.phase));
        if let Some(run_id) = &job.run_id {
            out.push_str(&format!("    <uws:runId>{}</uws:runId>\n", escape(run_id)));
        }
        nillable(
            &mut out,
            "    ",
            "ownerId",
            job.owner.as_deref().map(escape),
        );
        out.push_str(&format!(
            "    <uws:creationTime>{}</uws:creationTime>\n",
            timestamp(job.creation_time)
        ));
        out.push_str("  </uws:jobref>\n");
    }
    out.push_str("</uws:jobs>\n");
    out
}

/// `<uws:job>`: the whole job; result links are under `job_url`.
pub(super) fn job(job: &Job, job_url: &str) -> String {
    let time = |t: Option<DateTime<Utc>>| t.map(|t| Cow::Owned(timestamp(t)));
    let mut out = String::from(XML_DECLARATION);
    out.push_str(&format!("<uws:job {UWS_NAMESPACES} version=\"1.1\">\n"));
    out.push_str(&format!("  <uws:jobId>{}</uws:jobId>\n", escape(&job.id)));
    if let Some(run_id) = &job.run_id {
        out.push_str(&format!("  <uws:runId>{}</uws:runId>\n", escape(run_id)));
    }
    nillable(&mut out, "  ", "ownerId", job.owner.as_deref().map(escape));
    out.push_str(&format!("  <uws:phase>{}</uws:phase>\n", job.phase));
    nillable(&mut out, "  ", "quote", time(job.quote));
    out.push_str(&format!(
        "  <uws:creationTime>{}</uws:creationTime>\n",
        timestamp(job.creation_time)
    ));
    nillable(&mut out, "  ", "startTime", time(job.start_time));
    nillable(&mut out, "  ", "endTime", time(job.end_time));
    out.push_str(&format!(
        "  <uws:executionDuration>{}</uws:executionDuration>\n",
        job.execution_duration
    ));
    out.push_str(&format!(
        "  <uws:destruction>{}</uws:destruction>\n",
        timestamp(job.destruction)
    ));
    parameters(&mut out, "  ", "", job);
    results(&mut out, "  ", "", job, job_url);
    if let Some(message) = &job.error {
        // The detail is the error VOTable at <job>/error.
        out.push_str("  <uws:errorSummary type=\"fatal\" hasDetail=\"true\">\n");
        out.push_str(&format!(
            "    <uws:message>{}</uws:message>\n",
            escape(message)
        ));
        out.push_str("  </uws:errorSummary>\n");
    }
    out.push_str("</uws:job>\n");
    out
}

/// `<uws:results>` as a document of its own (`<job>/results`).
pub(super) fn results_document(job: &Job, job_url: &str) -> String {
    let mut out = String::from(XML_DECLARATION);
    results(&mut out, "", UWS_NAMESPACES, job, job_url);
    out
}

/// `<uws:parameters>` as a document of its own (`<job>/parameters`).
pub(super) fn parameters_document(job: &Job) -> String {
    let mut out = String::from(XML_DECLARATION);
    parameters(&mut out, "", UWS_NAMESPACES, job);
    out
}

fn parameters(out: &mut String, indent: &str, namespaces: &str, job: &Job) {
    let open = if namespaces.is_empty() {
        "<uws:parameters>".to_owned()
    } else {
        format!("<uws:parameters {namespaces}>")
    };
    out.push_str(&format!("{indent}{open}\n"));
    for (name, value) in &job.parameters {
        out.push_str(&format!(
            "{indent}  <uws:parameter id=\"{}\">{}</uws:parameter>\n",
            escape(name),
            escape(value)
        ));
    }
    out.push_str(&format!("{indent}</uws:parameters>\n"));
}

fn results(out: &mut String, indent: &str, namespaces: &str, job: &Job, job_url: &str) {
    let open = if namespaces.is_empty() {
        "<uws:results>".to_owned()
    } else {
        format!("<uws:results {namespaces}>")
    };
    out.push_str(&format!("{indent}{open}\n"));
    for result in &job.results {
        let href = format!("{job_url}/results/{}", path_segment(&result.id));
        out.push_str(&format!(
            "{indent}  <uws:result id=\"{}\" xlink:href=\"{}\" size=\"{}\" mime-type=\"{}\"/>\n",
            escape(&result.id),
            escape(&href),
            result.size,
            escape(&result.media_type)
        ));
    }
    out.push_str(&format!("{indent}</uws:results>\n"));
}

/// A nillable element: its text, or `xsi:nil` when absent.
fn nillable(out: &mut String, indent: &str, name: &str, value: Option<Cow<'_, str>>) {
    match value {
        Some(value) => out.push_str(&format!("{indent}<uws:{name}>{value}</uws:{name}>\n")),
        None => out.push_str(&format!("{indent}<uws:{name} xsi:nil=\"true\"/>\n")),
    }
}

/// `s` as one URL path segment: every byte but the unreserved characters percent-encoded.
pub(super) fn path_segment(s: &str) -> Cow<'_, str> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if s.bytes().all(unreserved) {
        return Cow::Borrowed(s);
    }
    let mut encoded = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if unreserved(b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(encoded)
}
