//! VOSpace 2.1 documents: nodes (with properties and child listings) and transfers, written
//! in the `vos` namespace and read by local name, since clients mix prefixes freely.
use std::collections::BTreeMap;
use std::fmt::Write;

use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::reader::Reader;

use crate::node::{
    Kind, Node, PROP_CREATOR, PROP_CTIME, PROP_DATE, PROP_GROUPREAD, PROP_GROUPWRITE,
    PROP_ISPUBLIC, PROP_LENGTH, PROP_MD5, PROP_PUBLICREAD, PROP_TYPE, format_groups,
};

pub const NS: &str = "http://www.ivoa.net/xml/VOSpace/v2.0";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

pub const PROTOCOLS: [&str; 4] = [
    "ivo://ivoa.net/vospace/core#httpget",
    "ivo://ivoa.net/vospace/core#httpput",
    "ivo://ivoa.net/vospace/core#httpsget",
    "ivo://ivoa.net/vospace/core#httpsput",
];
pub const VIEW_DEFAULT: &str = "ivo://ivoa.net/vospace/core#defaultview";

/// How node documents name nodes: `vos://<authority>/<path>`.
#[derive(Debug, Clone)]
pub struct Naming {
    pub authority: String,
}

impl Naming {
    pub fn uri(&self, node: &Node) -> String {
        format!("vos://{}/{}", self.authority, node.path.encoded())
    }
}

/// Extra properties of a home container: its quota and free space.
pub struct Space {
    pub quota: u64,
    pub available: u64,
}

fn property(out: &mut String, indent: &str, uri: &str, value: &str, read_only: bool) {
    let _ = writeln!(
        out,
        r#"{indent}<vos:property uri="{}" readOnly="{read_only}">{}</vos:property>"#,
        escape(uri),
        escape(value)
    );
}

/// The properties of a node: the computed ones, then those clients set.
fn properties(out: &mut String, n: &Node, indent: &str, space: Option<&Space>) {
    let _ = writeln!(out, "{indent}<vos:properties>");
    let i = format!("{indent}  ");
    // The CADC client parses dates to the second and requires one on every node.
    property(out, &i, PROP_DATE, &n.modified, true);
    property(out, &i, PROP_CTIME, &n.created, true);
    property(out, &i, PROP_LENGTH, &n.length.to_string(), true);
    if let Some(o) = &n.owner {
        property(out, &i, PROP_CREATOR, o, true);
    }
    if let Some(m) = &n.md5 {
        property(out, &i, PROP_MD5, m, true);
    }
    if let Some(t) = &n.content_type {
        property(out, &i, PROP_TYPE, t, false);
    }
    property(
        out,
        &i,
        PROP_PUBLICREAD,
        if n.access.public { "true" } else { "false" },
        false,
    );
    property(
        out,
        &i,
        PROP_ISPUBLIC,
        if n.access.public { "true" } else { "false" },
        false,
    );
    // Absent rather than empty when unset: the CADC client shows an empty value as granted.
    if !n.access.group_read.is_empty() {
        property(
            out,
            &i,
            PROP_GROUPREAD,
            &format_groups(&n.access.group_read),
            false,
        );
    }
    if !n.access.group_write.is_empty() {
        property(
            out,
            &i,
            PROP_GROUPWRITE,
            &format_groups(&n.access.group_write),
            false,
        );
    }
    if let Some(s) = space {
        property(out, &i, crate::node::PROP_QUOTA, &s.quota.to_string(), true);
        property(
            out,
            &i,
            crate::node::PROP_AVAILABLE,
            &s.available.to_string(),
            true,
        );
    }
    for (k, v) in &n.props {
        if k != PROP_TYPE {
            property(out, &i, k, v, false);
        }
    }
    let _ = writeln!(out, "{indent}</vos:properties>");
}

fn node_body(out: &mut String, n: &Node, indent: &str, space: Option<&Space>) {
    properties(out, n, indent, space);
    match &n.kind {
        Kind::Data => {
            let _ = writeln!(
                out,
                r#"{indent}<vos:accepts><vos:view uri="{VIEW_DEFAULT}"/></vos:accepts>
{indent}<vos:provides><vos:view uri="{VIEW_DEFAULT}"/></vos:provides>
{indent}<vos:busy>false</vos:busy>"#
            );
        }
        Kind::Container => {
            let _ = writeln!(out, "{indent}<vos:accepts/>\n{indent}<vos:provides/>");
        }
        Kind::Link { target } => {
            let _ = writeln!(
                out,
                "{indent}<vos:accepts/>\n{indent}<vos:provides/>\n{indent}<vos:target>{}</vos:target>",
                escape(target)
            );
        }
    }
}

/// A node document; for a container, with `children` listed (each with its properties).
/// How much a listing says of each child (`detail=min`: its URI and type only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    Min,
    Max,
}

pub fn node_document(
    n: &Node,
    naming: &Naming,
    children: Option<(&[Node], Detail)>,
    space: Option<&Space>,
) -> String {
    let mut out = String::with_capacity(2048);
    let _ = writeln!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vos:node xmlns:vos="{NS}" xmlns:xsi="{XSI}" version="2.1" uri="{}" xsi:type="{}">"#,
        escape(naming.uri(n)),
        n.kind.xsi_type()
    );
    node_body(&mut out, n, "  ", space);
    if n.kind == Kind::Container {
        match children {
            Some((kids, detail)) if !kids.is_empty() => {
                out.push_str("  <vos:nodes>\n");
                for c in kids {
                    let (uri, t) = (escape(naming.uri(c)), c.kind.xsi_type());
                    if detail == Detail::Min {
                        let _ = writeln!(out, r#"    <vos:node uri="{uri}" xsi:type="{t}"/>"#);
                        continue;
                    }
                    let _ = writeln!(out, r#"    <vos:node uri="{uri}" xsi:type="{t}">"#);
                    node_body(&mut out, c, "      ", None);
                    out.push_str("    </vos:node>\n");
                }
                out.push_str("  </vos:nodes>\n");
            }
            _ => out.push_str("  <vos:nodes/>\n"),
        }
    }
    out.push_str("</vos:node>\n");
    out
}

/// A node as a client sent it (PUT to create, POST to change properties).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDoc {
    pub uri: Option<String>,
    /// Local part of `xsi:type`: `ContainerNode`, `DataNode`, `LinkNode`, ...
    pub xsi_type: Option<String>,
    /// Properties; `None` for `xsi:nil="true"` (remove it).
    pub props: BTreeMap<String, Option<String>>,
    pub target: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("InvalidArgument the document is not a VOSpace {what}: {why}")]
pub struct DocError {
    what: &'static str,
    why: String,
}

fn local(name: &[u8]) -> &[u8] {
    name.rsplit(|b| *b == b':').next().unwrap_or(name)
}

/// The largest node or transfer document read.
pub const MAX_DOCUMENT: usize = 1 << 20;

pub fn parse_node(xml: &str) -> Result<NodeDoc, DocError> {
    let err = |why: String| DocError { what: "node", why };
    let mut r = Reader::from_str(xml);
    r.config_mut().trim_text(true);
    let mut doc = NodeDoc {
        uri: None,
        xsi_type: None,
        props: BTreeMap::new(),
        target: None,
    };
    let mut depth = 0usize;
    let mut seen_root = false;
    // Inside a child listing (<nodes>), nothing is the node's own.
    let mut in_nodes = 0usize;
    let mut current_prop: Option<(String, bool)> = None;
    let mut text = String::new();
    let mut in_target = false;
    loop {
        let ev = r.read_event().map_err(|e| err(e.to_string()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let name = e.name();
                let l = local(name.as_ref()).to_vec();
                if !seen_root {
                    if l != b"node" {
                        return Err(err("the root element is not node".into()));
                    }
                    seen_root = true;
                    for a in e.attributes().flatten() {
                        let v = a
                            .unescape_value()
                            .map_err(|e| err(e.to_string()))?
                            .into_owned();
                        match local(a.key.as_ref()) {
                            b"uri" => doc.uri = Some(v),
                            b"type" => {
                                doc.xsi_type = Some(v.rsplit(':').next().unwrap_or(&v).to_string())
                            }
                            _ => {}
                        }
                    }
                } else if l == b"nodes" {
                    if !empty {
                        in_nodes += 1;
                    }
                } else if in_nodes == 0 && l == b"property" {
                    let mut uri = None;
                    let mut nil = false;
                    for a in e.attributes().flatten() {
                        let v = a
                            .unescape_value()
                            .map_err(|e| err(e.to_string()))?
                            .into_owned();
                        match local(a.key.as_ref()) {
                            b"uri" => uri = Some(v),
                            b"nil" => nil = v == "true",
                            _ => {}
                        }
                    }
                    let uri = uri.ok_or_else(|| err("a property without uri".into()))?;
                    if empty {
                        doc.props
                            .insert(uri, if nil { None } else { Some(String::new()) });
                    } else {
                        current_prop = Some((uri, nil));
                        text.clear();
                    }
                } else if in_nodes == 0 && l == b"target" && depth == 1 && !empty {
                    in_target = true;
                    text.clear();
                }
                if !empty {
                    depth += 1;
                }
            }
            Event::Text(t) if current_prop.is_some() || in_target => {
                text.push_str(&t.decode().map_err(|e| err(e.to_string()))?);
            }
            Event::GeneralRef(g) if current_prop.is_some() || in_target => {
                text.push_str(&entity(&g).map_err(err)?);
            }
            Event::End(ref e) => {
                depth = depth.saturating_sub(1);
                let name = e.name();
                let l = local(name.as_ref());
                if l == b"nodes" {
                    in_nodes = in_nodes.saturating_sub(1);
                } else if l == b"property" {
                    if let Some((uri, nil)) = current_prop.take() {
                        doc.props.insert(
                            uri,
                            if nil {
                                None
                            } else {
                                Some(text.trim().to_string())
                            },
                        );
                    }
                } else if l == b"target" && in_target {
                    in_target = false;
                    doc.target = Some(text.trim().to_string());
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root {
        return Err(err("empty document".into()));
    }
    Ok(doc)
}

/// A transfer request.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferDoc {
    pub target: String,
    /// `pushToVoSpace`, `pullFromVoSpace`, or a `vos://` URI (move or copy).
    pub direction: String,
    pub protocols: Vec<String>,
    pub keep_bytes: bool,
    pub view: Option<String>,
}

pub fn parse_transfer(xml: &str) -> Result<TransferDoc, DocError> {
    let err = |why: String| DocError {
        what: "transfer",
        why,
    };
    let mut r = Reader::from_str(xml);
    r.config_mut().trim_text(true);
    let mut target = None;
    let mut direction = None;
    let mut protocols = Vec::new();
    let mut keep_bytes = None;
    let mut view = None;
    let mut current: Option<Vec<u8>> = None;
    let mut text = String::new();
    let mut seen_root = false;
    loop {
        match r.read_event().map_err(|e| err(e.to_string()))? {
            Event::Start(e) => {
                let name = e.name();
                let l = local(name.as_ref()).to_vec();
                if !seen_root {
                    if l != b"transfer" {
                        return Err(err("the root element is not transfer".into()));
                    }
                    seen_root = true;
                    continue;
                }
                if l == b"protocol" || l == b"view" {
                    take_uri(&e, &l, &mut protocols, &mut view);
                }
                current = Some(l);
                text.clear();
            }
            Event::Empty(e) => {
                let name = e.name();
                let l = local(name.as_ref()).to_vec();
                take_uri(&e, &l, &mut protocols, &mut view);
            }
            Event::Text(t) if current.is_some() => {
                text.push_str(&t.decode().map_err(|e| err(e.to_string()))?);
            }
            Event::GeneralRef(g) => text.push_str(&entity(&g).map_err(err)?),
            Event::End(_) => {
                match current.take().as_deref() {
                    Some(b"target") => target = Some(text.trim().to_string()),
                    Some(b"direction") => direction = Some(text.trim().to_string()),
                    Some(b"keepBytes") => keep_bytes = Some(text.trim() == "true"),
                    _ => {}
                }
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(TransferDoc {
        target: target.ok_or_else(|| err("no target".into()))?,
        direction: direction.ok_or_else(|| err("no direction".into()))?,
        protocols,
        // The standard's default: a move unless asked to keep the bytes.
        keep_bytes: keep_bytes.unwrap_or(false),
        view,
    })
}

fn take_uri(
    e: &quick_xml::events::BytesStart<'_>,
    local_name: &[u8],
    protocols: &mut Vec<String>,
    view: &mut Option<String>,
) {
    let uri = e
        .attributes()
        .flatten()
        .find(|a| local(a.key.as_ref()) == b"uri")
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()));
    match (local_name, uri) {
        (b"protocol", Some(u)) => protocols.push(u),
        (b"view", Some(u)) => *view = Some(u),
        _ => {}
    }
}

/// The text an entity reference (`&amp;`, `&#233;`) stands for.
fn entity(g: &quick_xml::events::BytesRef<'_>) -> Result<String, String> {
    let name = g.decode().map_err(|e| e.to_string())?;
    quick_xml::escape::unescape(&format!("&{name};"))
        .map(|t| t.into_owned())
        .map_err(|e| e.to_string())
}

/// A transfer document with the endpoints the client should use, one per protocol.
pub fn transfer_document(t: &TransferDoc, endpoints: &[(String, String)]) -> String {
    let mut out = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vos:transfer xmlns:vos="{NS}" version="2.1">
  <vos:target>{}</vos:target>
  <vos:direction>{}</vos:direction>
"#,
        escape(&t.target),
        escape(&t.direction)
    );
    if let Some(v) = &t.view {
        let _ = writeln!(out, r#"  <vos:view uri="{}"/>"#, escape(v));
    }
    for (protocol, endpoint) in endpoints {
        let _ = writeln!(
            out,
            r#"  <vos:protocol uri="{}"><vos:endpoint>{}</vos:endpoint></vos:protocol>"#,
            escape(protocol),
            escape(endpoint)
        );
    }
    let _ = writeln!(out, "  <vos:keepBytes>{}</vos:keepBytes>", t.keep_bytes);
    out.push_str("</vos:transfer>\n");
    out
}

#[cfg(test)]
mod tests;
