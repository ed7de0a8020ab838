//! SIAv2 `{query}` (IVOA SIA 2.0): the registry's images selected by POS, BAND, TIME, POL,
//! FOV, SPATRES, EXPTIME, TIMERES, SPECRP, ID, COLLECTION, FACILITY, INSTRUMENT, DPTYPE,
//! CALIB, TARGET and FORMAT (values of one parameter ORed, parameters ANDed, a null field
//! never matching), answered as ObsCore records with DataLink and SODA service descriptors.
//! POS goes through the registry's HEALPix index before footprints are tested exactly.
use aster_adql::geometry::{Polygon, SkyRegion};
use aster_archive::registry::obscore::{DATALINK_FORMAT, obscore_batch};
use aster_archive::registry::{Dataset, FACILITY, Registry, RegistryError};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::params::{Interval, Params, interval, pos};
use super::{ImageServices, read_params};
use crate::formats::{OutputFormat, QueryStatus, ResultInfo, encoder};

pub const STANDARD_ID: &str = "ivo://ivoa.net/std/SIA#query-2.0";

/// A parsed SIAv2 query.
#[derive(Debug, Default)]
struct SiaQuery {
    pos: Vec<SkyRegion>,
    band: Vec<Interval>,
    time: Vec<Interval>,
    pol: Vec<String>,
    fov: Vec<Interval>,
    spatres: Vec<Interval>,
    exptime: Vec<Interval>,
    timeres: Vec<Interval>,
    specrp: Vec<Interval>,
    id: Vec<String>,
    collection: Vec<String>,
    facility: Vec<String>,
    instrument: Vec<String>,
    dptype: Vec<String>,
    calib: Vec<i32>,
    target: Vec<String>,
    format: Vec<String>,
    maxrec: usize,
}

fn strings(p: &Params, name: &str) -> Vec<String> {
    p.all(name).into_iter().map(str::to_string).collect()
}

fn intervals(p: &Params, name: &str) -> Result<Vec<Interval>, String> {
    p.all(name).into_iter().map(|v| interval(name, v)).collect()
}

impl SiaQuery {
    fn parse(p: &Params, default_maxrec: usize, max_maxrec: usize) -> Result<Self, String> {
        let maxrec = match p.single("MAXREC")? {
            None => default_maxrec,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("MAXREC '{v}' is not a non-negative integer"))?
                .min(max_maxrec),
        };
        Ok(Self {
            pos: p
                .all("POS")
                .into_iter()
                .map(pos)
                .collect::<Result<_, _>>()?,
            band: intervals(p, "BAND")?,
            time: intervals(p, "TIME")?,
            pol: strings(p, "POL"),
            fov: intervals(p, "FOV")?,
            spatres: intervals(p, "SPATRES")?,
            exptime: intervals(p, "EXPTIME")?,
            timeres: intervals(p, "TIMERES")?,
            specrp: intervals(p, "SPECRP")?,
            id: strings(p, "ID"),
            collection: strings(p, "COLLECTION"),
            facility: strings(p, "FACILITY"),
            instrument: strings(p, "INSTRUMENT"),
            dptype: strings(p, "DPTYPE"),
            calib: p
                .all("CALIB")
                .into_iter()
                .map(|v| {
                    v.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|c| (0..=4).contains(c))
                        .ok_or_else(|| format!("CALIB '{v}' is not a calibration level 0 to 4"))
                })
                .collect::<Result<_, _>>()?,
            target: strings(p, "TARGET"),
            format: strings(p, "FORMAT"),
            maxrec,
        })
    }

    /// Whether an image passes every constraint but POS.
    fn matches(&self, d: &Dataset) -> bool {
        let Some(o) = &d.observation else {
            return false;
        };
        let any_interval = |ivs: &[Interval], v: Option<f64>| {
            ivs.is_empty() || v.is_some_and(|v| ivs.iter().any(|i| i.contains(v)))
        };
        let overlap = |ivs: &[Interval], lo: Option<f64>, hi: Option<f64>| {
            ivs.is_empty()
                || matches!((lo, hi), (Some(a), Some(b)) if ivs.iter().any(|i| i.overlaps(a, b)))
        };
        let any_text = |vals: &[String], v: Option<&str>| {
            vals.is_empty() || v.is_some_and(|v| vals.iter().any(|x| x == v))
        };
        let res_power = match (o.em_min, o.em_max) {
            (Some(a), Some(b)) if b > a => Some((a + b) / 2.0 / (b - a)),
            _ => None,
        };
        let did = d.publisher_did();
        overlap(&self.band, o.em_min, o.em_max)
            && overlap(&self.time, Some(o.t_min), Some(o.t_max))
            // Aster's images carry no polarization: any POL excludes them.
            && self.pol.is_empty()
            && any_interval(&self.fov, o.fov())
            && any_interval(&self.spatres, o.resolution)
            && any_interval(&self.exptime, Some(o.exptime))
            && any_interval(&self.timeres, Some(o.exptime))
            && any_interval(&self.specrp, res_power)
            && (self.id.is_empty() || self.id.iter().any(|i| i.eq_ignore_ascii_case(&did)))
            && any_text(&self.collection, Some(&d.collection))
            && any_text(&self.facility, Some(FACILITY))
            && any_text(&self.instrument, Some(&d.data_id.instrument))
            && any_text(&self.dptype, Some("image"))
            && (self.calib.is_empty() || self.calib.contains(&d.dataset_type.calib_level()))
            && any_text(&self.target, o.target_name.as_deref())
            && any_text(&self.format, Some(DATALINK_FORMAT))
    }

    /// The matching images in ID order, at most MAXREC, and whether more matched.
    fn run(&self, registry: &Registry) -> Result<(Vec<Dataset>, bool), RegistryError> {
        let mut candidates = if self.pos.is_empty() {
            registry.observations()?
        } else {
            let mut all = Vec::new();
            for region in &self.pos {
                all.extend(registry.overlapping(region)?);
            }
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all.dedup_by(|a, b| a.id == b.id);
            all
        };
        candidates.retain(|d| self.matches(d));
        let overflow = candidates.len() > self.maxrec;
        candidates.truncate(self.maxrec);
        Ok((candidates, overflow))
    }
}

/// A DALI error document in the protocol's words (`UsageFault: ...`).
fn sia_error(status: StatusCode, message: &str) -> Response {
    crate::tap::error_response(status, message)
}

/// The DataLink and SODA service descriptors of a results table whose
/// `obs_publisher_did` FIELD has the XML ID `obs_publisher_did`.
pub(super) fn descriptors(base: &str) -> String {
    let esc = |s: &str| crate::xml::escape(s).into_owned();
    format!(
        r#"<RESOURCE type="meta" utype="adhoc:service" name="datalink">
<DESCRIPTION>DataLink: each image's file, progenitors, calibrations, derived products, preview and cutout service</DESCRIPTION>
<PARAM name="standardID" datatype="char" arraysize="*" value="ivo://ivoa.net/std/DataLink#links-1.1"/>
<PARAM name="accessURL" datatype="char" arraysize="*" value="{links}"/>
<PARAM name="contentType" datatype="char" arraysize="*" value="{DATALINK_FORMAT}"/>
<GROUP name="inputParams">
<PARAM name="ID" datatype="char" arraysize="*" ucd="meta.id;meta.main" ref="obs_publisher_did" value=""/>
</GROUP>
</RESOURCE>
<RESOURCE type="meta" utype="adhoc:service" name="soda">
<DESCRIPTION>SODA cutouts of processed images (FITS with image, mask and variance; PNG quick looks)</DESCRIPTION>
<PARAM name="standardID" datatype="char" arraysize="*" value="ivo://ivoa.net/std/SODA#sync-1.0"/>
<PARAM name="accessURL" datatype="char" arraysize="*" value="{soda}"/>
<GROUP name="inputParams">
<PARAM name="ID" datatype="char" arraysize="*" ucd="meta.ref.url;meta.curation" ref="obs_publisher_did" value=""/>
<PARAM name="POS" datatype="char" arraysize="*" ucd="pos.outline;obs" value=""/>
<PARAM name="CIRCLE" datatype="double" arraysize="3" xtype="circle" unit="deg" ucd="pos.outline;obs" value=""/>
<PARAM name="POLYGON" datatype="double" arraysize="*" xtype="polygon" unit="deg" ucd="pos.outline;obs" value=""/>
<PARAM name="BAND" datatype="double" arraysize="2" xtype="interval" unit="m" ucd="em.wl;stat.interval" value=""/>
<PARAM name="TIME" datatype="double" arraysize="2" xtype="interval" unit="d" ucd="time.interval;obs.exposure" value=""/>
</GROUP>
</RESOURCE>
"#,
        links = esc(&format!("{base}/datalink/links")),
        soda = esc(&format!("{base}/soda/sync")),
    )
}

/// Encodes rows through the TAP result writers; VOTable results get the service
/// descriptors.
fn encode(
    rows: &[Dataset],
    overflow: bool,
    base: &str,
    format: OutputFormat,
) -> Result<Vec<u8>, String> {
    let batch = obscore_batch(rows, &format!("{base}/datalink/links"));
    let mut enc = encoder(format);
    let mut out = Vec::new();
    let info = ResultInfo {
        query: None,
        table_name: "results".into(),
        extra_infos: vec![("standardID".into(), "ivo://ivoa.net/std/SIA".into())],
    };
    let fail = |e: crate::formats::FormatError| e.to_string();
    enc.begin(&batch.schema(), &info, &mut out).map_err(fail)?;
    enc.batch(&batch, &mut out).map_err(fail)?;
    let status = if overflow {
        QueryStatus::Overflow
    } else {
        QueryStatus::Ok
    };
    enc.finish(&status, &mut out).map_err(fail)?;
    while enc.drain_tail(&mut out).map_err(fail)? {}
    if !matches!(
        format,
        OutputFormat::VotableBinary2 | OutputFormat::VotableTabledata
    ) {
        return Ok(out);
    }
    let mut doc = String::from_utf8(out).map_err(|e| e.to_string())?;
    doc = doc.replacen(
        "<FIELD name=\"obs_publisher_did\"",
        "<FIELD ID=\"obs_publisher_did\" name=\"obs_publisher_did\"",
        1,
    );
    let end = doc.rfind("</VOTABLE>").ok_or("no VOTABLE end tag")?;
    doc.insert_str(end, &descriptors(base));
    Ok(doc.into_bytes())
}

pub(super) async fn query(
    State(s): State<ImageServices>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let base = s.base_url(&headers);
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let format = match params.single("RESPONSEFORMAT") {
        Err(e) => return sia_error(StatusCode::BAD_REQUEST, &format!("UsageFault: {e}")),
        Ok(None) => OutputFormat::VotableTabledata,
        Ok(Some(f)) => match OutputFormat::from_param(f) {
            Some(f) => f,
            None => {
                return sia_error(
                    StatusCode::BAD_REQUEST,
                    &format!("UsageFault: RESPONSEFORMAT '{f}' is not supported"),
                );
            }
        },
    };
    let q = match SiaQuery::parse(&params, s.default_maxrec, s.max_maxrec) {
        Ok(q) => q,
        Err(e) => return sia_error(StatusCode::BAD_REQUEST, &format!("UsageFault: {e}")),
    };
    let (rows, overflow) = match s.blocking(move |r| q.run(r)).await {
        Ok(r) => r,
        Err(e) => {
            return sia_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("FatalFault: {e}"),
            );
        }
    };
    match encode(&rows, overflow, &base, format) {
        Ok(body) => ([(header::CONTENT_TYPE, format.media_type())], body).into_response(),
        Err(e) => sia_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("FatalFault: {e}"),
        ),
    }
}

/// Whether a footprint meets a region (for SODA's overlap test too).
pub(super) fn footprint_meets(d: &Dataset, region: &SkyRegion) -> bool {
    d.observation
        .as_ref()
        .and_then(|o| Polygon::new(o.footprint.clone()))
        .is_some_and(|p| region.intersects(&p))
}
