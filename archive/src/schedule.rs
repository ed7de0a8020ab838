//! The predicted visit schedule (DMS-REQ-0353): what the observatory plans to observe next,
//! as published by `aster schedule publish` or POSTed by the observatory control system.
//! Every document is validated whole before it replaces the current one, which is kept
//! as `<data dir>/schedule.json` (written atomically).
use std::path::{Path, PathBuf};

use aster_adql::geometry::SkyPosition;
use serde::{Deserialize, Serialize};

const BANDS: [&str; 6] = ["u", "g", "r", "i", "z", "y"];
/// The most visits one schedule may hold (a few nights).
pub const MAX_VISITS: usize = 10_000;

/// One planned visit, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedVisit {
    /// Start of the visit, MJD (TAI).
    pub mjd: f64,
    /// Pointing, degrees (ICRS).
    pub ra: f64,
    pub dec: f64,
    pub band: String,
    /// Exposure time, seconds.
    pub exptime: f64,
    /// Camera position angle, degrees east of north.
    #[serde(default)]
    pub rotation: Option<f64>,
    /// The scheduler's name for the visit's program or field.
    #[serde(default)]
    pub target: Option<String>,
}

/// A published schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Who published it (e.g. the scheduler's name and version).
    pub source: String,
    /// When it was published (ISO 8601, set by the archive).
    #[serde(default)]
    pub published: Option<String>,
    pub visits: Vec<PlannedVisit>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("not a schedule document: {0}")]
    Format(String),
    #[error("the schedule is not valid:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Schedule {
    /// Parses and checks a JSON document: every problem is reported, by visit.
    pub fn parse(json: &[u8]) -> Result<Self, ScheduleError> {
        let s: Schedule =
            serde_json::from_slice(json).map_err(|e| ScheduleError::Format(e.to_string()))?;
        let problems = s.problems();
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ScheduleError::Invalid(problems))
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.source.trim().is_empty() {
            p.push("source: say who published the schedule".into());
        }
        if self.visits.len() > MAX_VISITS {
            p.push(format!(
                "{} visits: at most {MAX_VISITS} in one schedule",
                self.visits.len()
            ));
        }
        let mut last: Option<f64> = None;
        for (i, v) in self.visits.iter().enumerate() {
            let at = format!("visit {i}");
            if !(v.mjd.is_finite() && (40_000.0..100_000.0).contains(&v.mjd)) {
                p.push(format!("{at}: mjd {} is not a date", v.mjd));
            } else if let Some(prev) = last
                && v.mjd < prev
            {
                p.push(format!(
                    "{at}: starts at {} before the visit before it ({prev})",
                    v.mjd
                ));
            }
            last = Some(v.mjd).filter(|m| m.is_finite());
            if SkyPosition::new(v.ra, v.dec).is_none() || !(0.0..360.0).contains(&v.ra) {
                p.push(format!(
                    "{at}: ({}, {}) is not a position (0 <= ra < 360, -90 <= dec <= 90)",
                    v.ra, v.dec
                ));
            }
            if !BANDS.contains(&v.band.as_str()) {
                p.push(format!("{at}: band '{}' is not one of u g r i z y", v.band));
            }
            if !(v.exptime.is_finite() && v.exptime > 0.0 && v.exptime <= 3600.0) {
                p.push(format!(
                    "{at}: exptime {} must be in (0, 3600] s",
                    v.exptime
                ));
            }
            if let Some(r) = v.rotation
                && !(r.is_finite() && (-360.0..=360.0).contains(&r))
            {
                p.push(format!("{at}: rotation {r} is not an angle"));
            }
            if v.target.as_ref().is_some_and(|t| t.len() > 200) {
                p.push(format!("{at}: target is longer than 200 characters"));
            }
        }
        p
    }

    /// The visits starting at or after `mjd`, at most `limit`.
    pub fn upcoming(&self, mjd: f64, limit: usize) -> Vec<&PlannedVisit> {
        self.visits
            .iter()
            .filter(|v| v.mjd >= mjd)
            .take(limit)
            .collect()
    }
}

/// Where the current schedule is kept.
#[derive(Debug, Clone)]
pub struct ScheduleStore {
    path: PathBuf,
}

impl ScheduleStore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("schedule.json"),
        }
    }

    /// Replaces the current schedule, stamping when it was published.
    pub fn publish(&self, mut s: Schedule) -> Result<Schedule, ScheduleError> {
        let problems = s.problems();
        if !problems.is_empty() {
            return Err(ScheduleError::Invalid(problems));
        }
        s.published = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let io = |source| ScheduleError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&s).expect("serializes")).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(s)
    }

    /// The current schedule, if one was published.
    pub fn current(&self) -> Result<Option<Schedule>, ScheduleError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Schedule::parse(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ScheduleError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_by_visit() {
        let doc = br#"{"source": "sched 1.0", "visits": [
            {"mjd": 61000.1, "ra": 62.0, "dec": -37.0, "band": "r", "exptime": 30},
            {"mjd": 61000.0, "ra": 400.0, "dec": -37.0, "band": "q", "exptime": 0},
            {"mjd": 61000.2, "ra": 62.0, "dec": -37.0, "band": "g", "exptime": 30, "rotation": 12.5}
        ]}"#;
        let Err(ScheduleError::Invalid(p)) = Schedule::parse(doc) else {
            panic!("accepted a bad schedule")
        };
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p.iter().all(|m| m.starts_with("visit 1")));
        assert!(matches!(
            Schedule::parse(br#"{"source": "x", "visits": [], "extra": 1}"#),
            Err(ScheduleError::Format(_))
        ));
        let good = Schedule::parse(
            br#"{"source": "s", "visits": [{"mjd": 61000.1, "ra": 1, "dec": 2, "band": "y", "exptime": 15}]}"#,
        )
        .unwrap();
        assert_eq!(good.upcoming(61000.0, 10).len(), 1);
        assert!(good.upcoming(61000.2, 10).is_empty());
    }

    #[test]
    fn publishing_stamps_and_keeps_the_schedule() {
        let dir = std::env::temp_dir().join(format!("aster-schedule-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = ScheduleStore::new(&dir);
        assert!(store.current().unwrap().is_none());
        let s = Schedule::parse(
            br#"{"source": "s", "visits": [{"mjd": 61000.1, "ra": 1, "dec": 2, "band": "y", "exptime": 15}]}"#,
        )
        .unwrap();
        let published = store.publish(s).unwrap();
        assert!(published.published.is_some());
        assert_eq!(store.current().unwrap(), Some(published));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
