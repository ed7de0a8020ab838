//! DataLink 1.1 `{links}`: for each ID, the dataset itself (#this), the raws it was made
//! from (#progenitor), the calibration products (#calibration, #bias, #dark, #flat), what
//! was made from it (#derivation; the background model as #auxiliary), a quick look
//! (#preview), its provenance record (#documentation) and, for processed images, a SODA
//! cutout service descriptor (#cutout). Unknown IDs get a NotFoundFault row.
use aster_archive::registry::obscore::DATALINK_FORMAT;
use aster_archive::registry::{Dataset, DatasetType};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ImageServices, read_params};
use crate::xml::escape;

pub const STANDARD_ID: &str = "ivo://ivoa.net/std/DataLink#links-1.1";
/// IDs answered in one request; more are left for the next (with an OVERFLOW status).
const MAX_IDS: usize = 1000;

/// One row of a links table.
struct Link {
    id: String,
    access_url: Option<String>,
    service_def: Option<String>,
    error_message: Option<String>,
    description: String,
    semantics: &'static str,
    content_type: Option<String>,
    content_length: Option<u64>,
    local_semantics: Option<String>,
}

fn file_link(base: &str, id: &str, d: &Dataset, semantics: &'static str, what: String) -> Link {
    Link {
        id: id.to_string(),
        access_url: Some(format!("{base}/files/{}", d.id)),
        service_def: None,
        error_message: None,
        description: what,
        semantics,
        content_type: Some(d.format.clone()),
        content_length: Some(d.size),
        local_semantics: Some(d.dataset_type.name().to_string()),
    }
}

fn describe(d: &Dataset) -> String {
    let t = d.dataset_type;
    let mut s = match t {
        DatasetType::Raw => "raw exposure".to_string(),
        DatasetType::Calexp => "processed visit image".to_string(),
        DatasetType::Background => "background model".to_string(),
        DatasetType::SourceTable => "source table".to_string(),
        DatasetType::RefCat => "reference catalogue".to_string(),
        DatasetType::DifferenceImage => "difference image".to_string(),
        DatasetType::Coadd => "coadd".to_string(),
        other => format!("{} calibration", other.name()),
    };
    let id = &d.data_id;
    if let Some(v) = id.visit.or(id.exposure) {
        s.push_str(&format!(" {v}"));
    }
    if let Some(det) = &id.detector_name {
        s.push_str(&format!(" {det}"));
    }
    if let Some(b) = &id.band {
        s.push_str(&format!(" {b}"));
    }
    s
}

fn calibration_semantics(t: DatasetType) -> &'static str {
    match t {
        DatasetType::Bias => "#bias",
        DatasetType::Dark => "#dark",
        DatasetType::Flat | DatasetType::MonoFlat => "#flat",
        _ => "#calibration",
    }
}

/// Whether SODA can cut the dataset (an exposure file: image, mask and variance).
pub(super) fn cuttable(d: &Dataset) -> bool {
    matches!(
        d.dataset_type,
        DatasetType::Calexp | DatasetType::DifferenceImage | DatasetType::Coadd
    )
}

/// The links of one dataset.
fn links_of(
    base: &str,
    id: &str,
    d: &Dataset,
    inputs: &[Dataset],
    outputs: &[Dataset],
) -> Vec<Link> {
    let mut v = vec![file_link(base, id, d, "#this", describe(d))];
    for i in inputs {
        let semantics = match i.dataset_type {
            t if t.is_calibration() => calibration_semantics(t),
            DatasetType::RefCat => "#auxiliary",
            _ => "#progenitor",
        };
        v.push(file_link(base, id, i, semantics, describe(i)));
    }
    for o in outputs {
        let semantics = match o.dataset_type {
            DatasetType::Background => "#auxiliary",
            _ => "#derivation",
        };
        v.push(file_link(base, id, o, semantics, describe(o)));
    }
    if cuttable(d) {
        v.push(Link {
            id: id.to_string(),
            access_url: Some(format!("{base}/preview/{}", d.id)),
            service_def: None,
            error_message: None,
            description: format!("quick-look PNG of the {}", describe(d)),
            semantics: "#preview",
            content_type: Some("image/png".into()),
            content_length: None,
            local_semantics: None,
        });
    }
    v.push(Link {
        id: id.to_string(),
        access_url: Some(format!("{base}/api/datasets/{}", d.id)),
        service_def: None,
        error_message: None,
        description: "the dataset's registry record: data ID, checksum and provenance (task, configuration, software, inputs)".into(),
        semantics: "#documentation",
        content_type: Some("application/json".into()),
        content_length: None,
        local_semantics: Some("provenance".into()),
    });
    if cuttable(d) {
        v.push(Link {
            id: id.to_string(),
            access_url: None,
            service_def: Some(format!("soda-{}", d.id)),
            error_message: None,
            description: "SODA cutout of this image (CIRCLE, POLYGON or POS)".into(),
            semantics: "#cutout",
            content_type: Some("application/fits".into()),
            content_length: None,
            local_semantics: None,
        });
    }
    v
}

fn not_found(id: &str, message: String) -> Link {
    Link {
        id: id.to_string(),
        access_url: None,
        service_def: None,
        error_message: Some(message),
        description: String::new(),
        semantics: "#this",
        content_type: None,
        content_length: None,
        local_semantics: None,
    }
}

const FIELDS: &str = r#"<FIELD name="ID" datatype="char" arraysize="*" ucd="meta.id;meta.main"/>
<FIELD name="access_url" datatype="char" arraysize="*" ucd="meta.ref.url"/>
<FIELD name="service_def" datatype="char" arraysize="*" ucd="meta.ref"/>
<FIELD name="error_message" datatype="char" arraysize="*" ucd="meta.code.error"/>
<FIELD name="description" datatype="char" arraysize="*" ucd="meta.note"/>
<FIELD name="semantics" datatype="char" arraysize="*" ucd="meta.code"/>
<FIELD name="content_type" datatype="char" arraysize="*" ucd="meta.code.mime"/>
<FIELD name="content_length" datatype="long" unit="byte" ucd="phys.size;meta.file"/>
<FIELD name="local_semantics" datatype="char" arraysize="*" ucd="meta.id.assoc"/>
"#;

/// The SODA service descriptor of one image, its ID fixed and its bounds given.
fn soda_descriptor(base: &str, d: &Dataset) -> String {
    let did = escape(&d.publisher_did()).into_owned();
    let mut bounds = String::new();
    if let Some(o) = &d.observation {
        if let (Some(c), Some(fov)) = (o.centre(), o.fov()) {
            bounds.push_str(&format!(
                "<PARAM name=\"CIRCLE\" datatype=\"double\" arraysize=\"3\" xtype=\"circle\" unit=\"deg\" ucd=\"pos.outline;obs\" value=\"\"><VALUES><MAX value=\"{} {} {}\"/></VALUES></PARAM>\n",
                c.ra(),
                c.dec(),
                fov / 2.0
            ));
        }
        if !o.footprint.is_empty() {
            let v: Vec<String> = o
                .footprint
                .iter()
                .map(|p| format!("{} {}", p.ra(), p.dec()))
                .collect();
            bounds.push_str(&format!(
                "<PARAM name=\"POLYGON\" datatype=\"double\" arraysize=\"*\" xtype=\"polygon\" unit=\"deg\" ucd=\"pos.outline;obs\" value=\"\"><VALUES><MAX value=\"{}\"/></VALUES></PARAM>\n",
                v.join(" ")
            ));
        }
        if let (Some(lo), Some(hi)) = (o.em_min, o.em_max) {
            bounds.push_str(&format!(
                "<PARAM name=\"BAND\" datatype=\"double\" arraysize=\"2\" xtype=\"interval\" unit=\"m\" ucd=\"em.wl;stat.interval\" value=\"\"><VALUES><MIN value=\"{lo:e}\"/><MAX value=\"{hi:e}\"/></VALUES></PARAM>\n"
            ));
        }
        bounds.push_str(&format!(
            "<PARAM name=\"TIME\" datatype=\"double\" arraysize=\"2\" xtype=\"interval\" unit=\"d\" ucd=\"time.interval;obs.exposure\" value=\"\"><VALUES><MIN value=\"{}\"/><MAX value=\"{}\"/></VALUES></PARAM>\n",
            o.t_min, o.t_max
        ));
    }
    format!(
        r#"<RESOURCE type="meta" utype="adhoc:service" ID="soda-{id}" name="soda-{id}">
<DESCRIPTION>SODA cutouts of {what}</DESCRIPTION>
<PARAM name="standardID" datatype="char" arraysize="*" value="ivo://ivoa.net/std/SODA#sync-1.0"/>
<PARAM name="accessURL" datatype="char" arraysize="*" value="{url}"/>
<GROUP name="inputParams">
<PARAM name="ID" datatype="char" arraysize="*" ucd="meta.ref.url;meta.curation" value="{did}"/>
<PARAM name="POS" datatype="char" arraysize="*" ucd="pos.outline;obs" value=""/>
{bounds}<PARAM name="RESPONSEFORMAT" datatype="char" arraysize="*" value="application/fits"><VALUES><OPTION value="application/fits"/><OPTION value="image/png"/><OPTION value="image/jpeg"/></VALUES></PARAM>
</GROUP>
</RESOURCE>
"#,
        id = escape(&d.id),
        what = escape(&describe(d)),
        url = escape(&format!("{base}/soda/sync")),
    )
}

fn cell(v: Option<&str>) -> String {
    match v {
        Some(t) if !t.is_empty() => format!("<TD>{}</TD>", escape(t)),
        _ => "<TD/>".into(),
    }
}

fn document(links: &[Link], descriptors: &str, overflow: bool) -> String {
    let mut x = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<RESOURCE type="results">
"#,
    );
    x.push_str(&format!(
        "<INFO name=\"standardID\" value=\"{STANDARD_ID}\"/>\n<INFO name=\"QUERY_STATUS\" value=\"OK\"/>\n<TABLE name=\"links\">\n{FIELDS}<DATA><TABLEDATA>\n"
    ));
    for l in links {
        x.push_str("<TR>");
        x.push_str(&cell(Some(&l.id)));
        x.push_str(&cell(l.access_url.as_deref()));
        x.push_str(&cell(l.service_def.as_deref()));
        x.push_str(&cell(l.error_message.as_deref()));
        x.push_str(&cell(Some(&l.description)));
        x.push_str(&cell(Some(l.semantics)));
        x.push_str(&cell(l.content_type.as_deref()));
        x.push_str(&cell(l.content_length.map(|n| n.to_string()).as_deref()));
        x.push_str(&cell(l.local_semantics.as_deref()));
        x.push_str("</TR>\n");
    }
    x.push_str("</TABLEDATA></DATA>\n</TABLE>\n");
    if overflow {
        x.push_str(&format!(
            "<INFO name=\"QUERY_STATUS\" value=\"OVERFLOW\">at most {MAX_IDS} IDs are answered per request</INFO>\n"
        ));
    }
    x.push_str("</RESOURCE>\n");
    x.push_str(descriptors);
    x.push_str("</VOTABLE>\n");
    x
}

pub(super) async fn links(
    State(s): State<ImageServices>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let base = s.base_url(&headers);
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let error = |status: StatusCode, m: String| crate::tap::error_response(status, &m);
    match params.single("RESPONSEFORMAT") {
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("UsageFault: {e}")),
        Ok(Some(f)) => {
            let base_type = f
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if !["votable", "application/x-votable+xml", "text/xml"].contains(&base_type.as_str()) {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("UsageFault: RESPONSEFORMAT '{f}' is not supported (VOTable only)"),
                );
            }
        }
        Ok(None) => {}
    }
    let ids: Vec<String> = params.all("ID").into_iter().map(str::to_string).collect();
    let overflow = ids.len() > MAX_IDS;
    let ids: Vec<String> = ids.into_iter().take(MAX_IDS).collect();
    let found = s
        .blocking(move |r| {
            ids.into_iter()
                .map(|id| {
                    let key = aster_archive::registry::id_from_did(&id).to_string();
                    let d = r.get(&key)?;
                    let related = match &d {
                        Some(d) => {
                            let inputs = d
                                .provenance
                                .iter()
                                .flat_map(|p| p.inputs.iter())
                                .filter_map(|i| r.get(i).transpose())
                                .collect::<Result<Vec<_>, _>>()?;
                            (inputs, r.outputs(&d.id)?)
                        }
                        None => (Vec::new(), Vec::new()),
                    };
                    Ok::<_, aster_archive::registry::RegistryError>((id, d, related))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("FatalFault: {e}"),
            );
        }
    };
    let mut rows = Vec::new();
    let mut descriptors = String::new();
    for (id, d, (inputs, outputs)) in &found {
        match d {
            Some(d) => {
                rows.extend(links_of(&base, id, d, inputs, outputs));
                if cuttable(d) && !descriptors.contains(&format!("ID=\"soda-{}\"", d.id)) {
                    descriptors.push_str(&soda_descriptor(&base, d));
                }
            }
            None => rows.push(not_found(
                id,
                format!("NotFoundFault: {id} is not a dataset of this archive"),
            )),
        }
    }
    (
        [(header::CONTENT_TYPE, DATALINK_FORMAT)],
        document(&rows, &descriptors, overflow),
    )
        .into_response()
}
