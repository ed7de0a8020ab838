//! Alerts as IVOA VOEvent 2.0 (DMS-REQ-0002), sent as an author over the VOEvent Transport
//! Protocol to a broker such as Comet: one connection per event, the XML framed by its
//! length (4 bytes, big-endian), then the broker's Transport ack or nak.
//!
//! An event's bytes depend only on its alert (its `Date` is the DIASource's processing
//! time), so a retry after a lost ack is byte-identical, and a broker that saw it answers
//! "previously seen": delivered, not lost and not doubled. A broker that cannot be reached
//! holds the stream until it can; an event the broker refuses for what it is (a nak) is
//! logged and passed over, since sending it again would not change the answer.
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::xml::escape;

/// The most VTP brokers accept (Comet refuses longer frames).
const MAX_EVENT: usize = 99_999;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum VoEventError {
    #[error("VOEvent broker {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("VOEvent broker {0}: no answer within 20 s")]
    Timeout(String),
    #[error("VOEvent broker {addr} refused {ivorn}: {reason}")]
    Refused {
        addr: String,
        ivorn: String,
        reason: String,
    },
    #[error("VOEvent {0}: longer than the {MAX_EVENT} bytes VTP allows")]
    TooLong(String),
}

/// Where events go and how they are named.
#[derive(Debug, Clone)]
pub struct VoEventAuthor {
    /// The broker's host:port.
    pub broker: String,
    /// The stream's IVORN (`ivo://authority/path`); events are `<stream>#diaSource-<id>`.
    pub stream: String,
    /// Base URL of the archive, for each event's link to its Avro alert.
    pub public_url: String,
}

/// Reads one cell of a decoded alert table as text, None when null or absent.
fn cell(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let c = batch.column_by_name(name)?;
    if c.is_null(row) {
        return None;
    }
    Some(match c.data_type() {
        DataType::Int64 => c.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Int32 => c.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Float32 => c.as_primitive::<Float32Type>().value(row).to_string(),
        DataType::Float64 => c.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Boolean => c.as_boolean().value(row).to_string(),
        DataType::Utf8 => c.as_string::<i32>().value(row).to_string(),
        _ => return None,
    })
}

fn number(batch: &RecordBatch, name: &str, row: usize) -> Option<f64> {
    cell(batch, name, row)?.parse().ok()
}

/// MJD (TAI) as an XML dateTime in UTC, to the millisecond.
fn iso(mjd_tai: f64) -> String {
    let unix_ms = ((mjd_tai - 40_587.0) * 86_400.0 - 37.0) * 1000.0;
    chrono::DateTime::from_timestamp_millis(unix_ms.round() as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000".into())
}

impl VoEventAuthor {
    pub fn ivorn(&self, dia_source_id: i64) -> String {
        format!("{}#diaSource-{dia_source_id}", self.stream)
    }

    /// The event of row `row` of a visit's decoded `diaSource` and `diaObject` tables.
    pub fn event(&self, sources: &RecordBatch, objects: &RecordBatch, row: usize) -> String {
        let id = cell(sources, "diaSourceId", row).unwrap_or_default();
        let ivorn = self.ivorn(id.parse().unwrap_or(0));
        let mut params = String::new();
        let mut param = |name: &str, value: Option<String>, kind: &str, unit: &str, ucd: &str| {
            if let Some(v) = value {
                let unit = if unit.is_empty() {
                    String::new()
                } else {
                    format!(" unit=\"{unit}\"")
                };
                params.push_str(&format!(
                    "    <Param name=\"{name}\" value=\"{}\" dataType=\"{kind}\"{unit} ucd=\"{ucd}\"/>\n",
                    escape(&v)
                ));
            }
        };
        param("diaSourceId", Some(id.clone()), "int", "", "meta.id");
        param(
            "diaObjectId",
            cell(sources, "diaObjectId", row),
            "int",
            "",
            "meta.id",
        );
        param(
            "ssObjectId",
            cell(sources, "ssObjectId", row),
            "int",
            "",
            "meta.id",
        );
        param(
            "visit",
            cell(sources, "visit", row),
            "int",
            "",
            "meta.id;obs",
        );
        param(
            "detector",
            cell(sources, "detector", row),
            "int",
            "",
            "meta.id;instr.det",
        );
        param(
            "band",
            cell(sources, "band", row),
            "string",
            "",
            "instr.bandpass",
        );
        param(
            "psfFlux",
            cell(sources, "psfFlux", row),
            "float",
            "nJy",
            "phot.flux",
        );
        param(
            "psfFluxErr",
            cell(sources, "psfFluxErr", row),
            "float",
            "nJy",
            "stat.error;phot.flux",
        );
        param(
            "scienceFlux",
            cell(sources, "scienceFlux", row),
            "float",
            "nJy",
            "phot.flux",
        );
        param("snr", cell(sources, "snr", row), "float", "", "stat.snr");
        param(
            "isNegative",
            cell(sources, "isNegative", row),
            "string",
            "",
            "meta.code",
        );
        param(
            "reliability",
            cell(sources, "reliability", row),
            "float",
            "",
            "stat.probability",
        );
        param(
            "nDiaSources",
            cell(objects, "nDiaSources", row),
            "int",
            "",
            "meta.number",
        );
        let ra = number(sources, "ra", row).unwrap_or(f64::NAN);
        let dec = number(sources, "dec", row).unwrap_or(f64::NAN);
        // The position's error radius, degrees: the larger of the RA and Dec errors.
        let err = number(sources, "raErr", row)
            .into_iter()
            .chain(number(sources, "decErr", row))
            .fold(0.0f64, f64::max);
        let when = iso(number(sources, "midpointMjdTai", row).unwrap_or(0.0));
        let date = iso(number(sources, "timeProcessedMjdTai", row).unwrap_or(0.0));
        let reliability = number(sources, "reliability", row)
            .unwrap_or(0.5)
            .clamp(0.0, 1.0);
        let link = format!("{}/api/alerts/{id}", self.public_url.trim_end_matches('/'));
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.ivoa.net/xml/VOEvent/v2.0 http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd" version="2.0" role="observation" ivorn="{ivorn}">
  <Who>
    <AuthorIVORN>{stream}</AuthorIVORN>
    <Date>{date}</Date>
    <Author>
      <shortName>Aster</shortName>
      <contactName>Aster alert production</contactName>
    </Author>
  </Who>
  <What>
{params}    <Reference uri="{link}" type="url" mimetype="application/avro"/>
    <Description>A change on a difference image (DIASource). The reference is the full alert: Avro, Rubin's alert schema 11.1, with cutouts.</Description>
  </What>
  <WhereWhen>
    <ObsDataLocation>
      <ObservatoryLocation id="GEOLUN"/>
      <ObservationLocation>
        <AstroCoordSystem id="UTC-ICRS-TOPO"/>
        <AstroCoords coord_system_id="UTC-ICRS-TOPO">
          <Time unit="s">
            <TimeInstant>
              <ISOTime>{when}</ISOTime>
            </TimeInstant>
          </Time>
          <Position2D unit="deg">
            <Name1>RA</Name1>
            <Name2>Dec</Name2>
            <Value2>
              <C1>{ra:.8}</C1>
              <C2>{dec:.8}</C2>
            </Value2>
            <Error2Radius>{err:.8}</Error2Radius>
          </Position2D>
        </AstroCoords>
      </ObservationLocation>
    </ObsDataLocation>
  </WhereWhen>
  <How>
    <Description>PSF-matched difference imaging (Alard-Lupton), detection at 5 sigma, PSF photometry</Description>
  </How>
  <Why importance="{reliability:.3}">
    <Inference probability="{reliability:.3}">
      <Concept>Optical transient or variable</Concept>
    </Inference>
  </Why>
</voe:VOEvent>
"#,
            stream = escape(&self.stream),
            ivorn = escape(&ivorn),
            link = escape(&link),
        )
    }

    /// Sends one event and waits for the broker's answer; a nak for an event the broker
    /// has already seen counts as delivered.
    pub async fn send(&self, ivorn: &str, xml: &str) -> Result<(), VoEventError> {
        if xml.len() > MAX_EVENT {
            return Err(VoEventError::TooLong(ivorn.into()));
        }
        let io = |source| VoEventError::Io {
            addr: self.broker.clone(),
            source,
        };
        let exchange = async {
            let mut s = TcpStream::connect(&self.broker).await.map_err(io)?;
            let mut frame = Vec::with_capacity(xml.len() + 4);
            frame.extend_from_slice(&(xml.len() as u32).to_be_bytes());
            frame.extend_from_slice(xml.as_bytes());
            s.write_all(&frame).await.map_err(io)?;
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await.map_err(io)?;
            let n = u32::from_be_bytes(len) as usize;
            if n > MAX_EVENT {
                return Err(io(std::io::Error::other(
                    "an answer longer than VTP allows",
                )));
            }
            let mut answer = vec![0; n];
            s.read_exact(&mut answer).await.map_err(io)?;
            Ok(String::from_utf8_lossy(&answer).into_owned())
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| VoEventError::Timeout(self.broker.clone()))??;
        match transport_role(&answer).as_deref() {
            Some("ack") => Ok(()),
            Some("nak") if answer.contains("Previously seen") => Ok(()),
            _ => Err(VoEventError::Refused {
                addr: self.broker.clone(),
                ivorn: ivorn.into(),
                reason: transport_result(&answer).unwrap_or(answer),
            }),
        }
    }
}

/// The role attribute of a Transport message (its namespace varies between brokers).
fn transport_role(xml: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)
                if e.local_name().as_ref() == b"Transport" =>
            {
                return e
                    .try_get_attribute("role")
                    .ok()
                    .flatten()
                    .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()));
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

/// The text of a nak's Meta/Result, the broker's reason.
fn transport_result(xml: &str) -> Option<String> {
    let start = xml.find("<Result>")? + "<Result>".len();
    let end = xml[start..].find("</Result>")? + start;
    Some(xml[start..end].trim().to_string())
}

/// The VOEvent sink of the distribution: each alert as an event, one after another.
pub struct VoEventSink(pub VoEventAuthor);

#[async_trait::async_trait]
impl super::distribute::Sink for VoEventSink {
    fn name(&self) -> &str {
        "voevent"
    }

    async fn deliver(&self, batch: &[super::distribute::Delivery]) -> Result<(), String> {
        let bodies: Vec<&[u8]> = batch.iter().map(|d| d.body.as_slice()).collect();
        let (sources, objects) =
            aster_archive::alerts::decode::alert_tables(&bodies).map_err(|e| e.to_string())?;
        for (row, d) in batch.iter().enumerate() {
            let xml = self.0.event(&sources, &objects, row);
            match self.0.send(&self.0.ivorn(d.alert.alert_id), &xml).await {
                Ok(()) => {}
                // The broker judged the event itself: the same bytes would be refused
                // again (and then reported as seen), so it is logged and passed over
                // rather than holding up every later alert.
                Err(e @ VoEventError::Refused { .. }) | Err(e @ VoEventError::TooLong(_)) => {
                    tracing::error!(error = %e, "VOEvent refused by the broker")
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_answers_are_read_whatever_their_namespace() {
        let ack = r#"<?xml version='1.0' encoding='UTF-8'?>
<trn:Transport xmlns:trn="http://www.telescope-networks.org/xml/Transport/v1.1" version="1.0" role="ack"><Origin>ivo://a/b#c</Origin></trn:Transport>"#;
        assert_eq!(transport_role(ack).as_deref(), Some("ack"));
        let nak = r#"<Transport role="nak"><Meta><Result>Event rejected: Previously seen by this broker</Result></Meta></Transport>"#;
        assert_eq!(transport_role(nak).as_deref(), Some("nak"));
        assert_eq!(
            transport_result(nak).as_deref(),
            Some("Event rejected: Previously seen by this broker")
        );
        assert_eq!(transport_role("not xml <"), None);
    }

    #[test]
    fn times_are_utc_date_times() {
        // MJD 61010.5 TAI is 37 s ahead of UTC.
        assert_eq!(iso(61_010.5 + 37.0 / 86_400.0), "2025-12-01T12:00:00.000");
    }
}
