//! The dataset registry (DMS-REQ-0106, 0132, 0074, 0121, 0293, 0120): every file the
//! archive holds or can regenerate (raws, calibration products, processed visit images,
//! backgrounds, source tables, coadds) is a dataset with a type, a data ID, a collection,
//! a location under the data directory, a size, a SHA-256 checksum verified on read, the
//! observation it covers (for ObsCore and SIAv2) and its provenance: the task, its
//! configuration, the software version and the exact input datasets.
//!
//! `store.rs` keeps it in SQLite or PostgreSQL (through `db.rs`); `obscore.rs` publishes the images as ObsCore rows;
//! `coverage.rs` indexes footprints by HEALPix cells and writes MOCs; `exposures.rs`
//! publishes the raws' header metadata as the Exposure catalog.
use std::fmt;

use aster_adql::geometry::SkyPosition;
use serde::{Deserialize, Serialize};

pub mod coverage;
mod db;
pub mod exposures;
pub mod obscore;
mod store;

pub use db::DbError;
pub use store::{DatasetFilter, REGISTRY_FILE, Registry, RegistryError, file_checksum};

/// The instrument every simulated raw comes from.
pub const INSTRUMENT: &str = "AsterCam";
/// The observatory, as ObsCore's facility_name.
pub const FACILITY: &str = "Aster Survey Telescope";
/// The authority of publisher dataset identifiers (`ivo://<authority>/<path>?<dataset id>`).
pub const PUBLISHER_DID_BASE: &str = "ivo://aster.survey/archive";

/// What a dataset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DatasetType {
    /// One CCD of one exposure, as read out (DMS-REQ-0024).
    Raw,
    Bias,
    Dark,
    Flat,
    MonoFlat,
    Illumination,
    Fringe,
    Crosstalk,
    Defects,
    /// A processed visit image (calibrated exposure).
    Calexp,
    /// The background model subtracted from a calexp (DMS-REQ-0327).
    Background,
    /// The Source table of one calexp.
    SourceTable,
    /// A difference image.
    DifferenceImage,
    /// A coadd.
    Coadd,
    /// A reference catalog for astrometric and photometric calibration.
    RefCat,
}

impl DatasetType {
    pub const ALL: [DatasetType; 15] = [
        Self::Raw,
        Self::Bias,
        Self::Dark,
        Self::Flat,
        Self::MonoFlat,
        Self::Illumination,
        Self::Fringe,
        Self::Crosstalk,
        Self::Defects,
        Self::Calexp,
        Self::Background,
        Self::SourceTable,
        Self::DifferenceImage,
        Self::Coadd,
        Self::RefCat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Bias => "bias",
            Self::Dark => "dark",
            Self::Flat => "flat",
            Self::MonoFlat => "monoflat",
            Self::Illumination => "illumination",
            Self::Fringe => "fringe",
            Self::Crosstalk => "crosstalk",
            Self::Defects => "defects",
            Self::Calexp => "calexp",
            Self::Background => "background",
            Self::SourceTable => "sources",
            Self::DifferenceImage => "diffim",
            Self::Coadd => "coadd",
            Self::RefCat => "refcat",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Calibration products (DMS-REQ-0130): the CALIB collection.
    pub fn is_calibration(self) -> bool {
        matches!(
            self,
            Self::Bias
                | Self::Dark
                | Self::Flat
                | Self::MonoFlat
                | Self::Illumination
                | Self::Fringe
                | Self::Crosstalk
                | Self::Defects
        )
    }

    /// Datasets with pixels that SODA can cut out.
    pub fn is_image(self) -> bool {
        !matches!(
            self,
            Self::Crosstalk | Self::SourceTable | Self::Background | Self::MonoFlat | Self::RefCat
        )
    }

    /// ObsCore's dataproduct_subtype: what kind of image.
    pub fn subtype(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Calexp => "pvi",
            t => t.name(),
        }
    }

    /// ObsCore's calib_level: 1 raw instrumental data in a standard format, 2 calibrated
    /// science-ready images, 3 enhanced products made from several.
    pub fn calib_level(self) -> i32 {
        match self {
            Self::Raw => 1,
            Self::Calexp | Self::Background | Self::SourceTable => 2,
            Self::DifferenceImage | Self::Coadd => 3,
            _ => 1,
        }
    }
}

impl fmt::Display for DatasetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which data a dataset holds: the dimensions that apply to its type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataId {
    pub instrument: String,
    /// The exposure (raws) and the visit (science data).
    pub exposure: Option<i64>,
    pub visit: Option<i64>,
    pub detector: Option<i64>,
    pub detector_name: Option<String>,
    pub band: Option<String>,
    /// The sky-map patch of a coadd (a HEALPix cell, `aster_processing::skymap`).
    pub patch: Option<i64>,
}

impl DataId {
    /// The part of a dataset ID that tells data of one type and collection apart, e.g.
    /// `1042-R11`, `R11-r`.
    pub fn key(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        // A raw is one exposure (a snap of a visit); processed data are per visit.
        if let Some(e) = self.exposure {
            parts.push(e.to_string());
        } else if let Some(v) = self.visit {
            parts.push(v.to_string());
        }
        match (&self.detector_name, self.detector) {
            (Some(n), _) => parts.push(n.clone()),
            (None, Some(d)) => parts.push(d.to_string()),
            _ => {}
        }
        if let Some(p) = self.patch {
            parts.push(format!("p{p}"));
        }
        if let Some(b) = &self.band {
            parts.push(b.clone());
        }
        if parts.is_empty() {
            parts.push("all".into());
        }
        parts.join("-")
    }
}

/// What an image saw: its footprint, time, band and resolution (ObsCore, SIAv2).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The exposure's name (several datasets, one per CCD, share it).
    pub obs_id: String,
    pub target_name: Option<String>,
    /// Corners of the footprint in order (a spherical polygon).
    pub footprint: Vec<SkyPosition>,
    /// FWHM of the PSF, arcsec.
    pub resolution: Option<f64>,
    pub pixels: (i64, i64),
    /// Start and end (MJD, TAI) and exposure time (s).
    pub t_min: f64,
    pub t_max: f64,
    pub exptime: f64,
    /// Wavelength range of the band, metres.
    pub em_min: Option<f64>,
    pub em_max: Option<f64>,
}

impl Observation {
    /// A footprint's corners in counter-clockwise order as drawn with right ascension
    /// increasing to the right (the inside on the left of each edge, seen from outside
    /// the sphere), whichever way the image's axes run.
    pub fn oriented(mut corners: Vec<SkyPosition>) -> Vec<SkyPosition> {
        let v: Vec<[f64; 3]> = corners
            .iter()
            .map(|p| {
                let (sa, ca) = p.ra_rad().sin_cos();
                let (sd, cd) = p.dec_rad().sin_cos();
                [cd * ca, cd * sa, sd]
            })
            .collect();
        let n = v.len();
        let (mut area, mut centre) = ([0.0; 3], [0.0; 3]);
        for i in 0..n {
            let (a, b) = (v[i], v[(i + 1) % n]);
            area[0] += a[1] * b[2] - a[2] * b[1];
            area[1] += a[2] * b[0] - a[0] * b[2];
            area[2] += a[0] * b[1] - a[1] * b[0];
            (0..3).for_each(|k| centre[k] += a[k]);
        }
        if (0..3).map(|k| area[k] * centre[k]).sum::<f64>() < 0.0 {
            corners.reverse();
        }
        corners
    }

    /// The footprint's centre (the mean of its corners' unit vectors).
    pub fn centre(&self) -> Option<SkyPosition> {
        aster_adql::geometry::Polygon::new(self.footprint.clone()).map(|p| p.centroid())
    }

    /// Diameter of the smallest circle about the centre holding the footprint, degrees.
    pub fn fov(&self) -> Option<f64> {
        let c = self.centre()?;
        self.footprint
            .iter()
            .map(|v| 2.0 * c.distance(v))
            .reduce(f64::max)
    }
}

/// How a dataset was made (DMS-REQ-0106): enough to make it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The task that wrote it (e.g. `isr+characterize+measure`, `calib.flat`).
    pub task: String,
    /// The processing run (its collection) or pipeline definition.
    pub run: String,
    /// The task's configuration as it ran.
    pub config: serde_json::Value,
    pub software: String,
    /// IDs of the exact input datasets.
    pub inputs: Vec<String>,
}

/// A dataset to record; its size and checksum are taken from the file.
#[derive(Debug, Clone)]
pub struct NewDataset {
    pub dataset_type: DatasetType,
    pub collection: String,
    pub data_id: DataId,
    /// Location relative to the data directory.
    pub path: String,
    /// MIME type of the file.
    pub format: String,
    pub observation: Option<Observation>,
    pub provenance: Option<Provenance>,
    /// Header metadata worth keeping searchable (DMS-REQ-0068), as JSON.
    pub metadata: Option<serde_json::Value>,
}

impl NewDataset {
    /// `<type>.<collection>.<data ID key>`: stable, readable and safe in URLs.
    pub fn id(&self) -> String {
        dataset_id(self.dataset_type, &self.collection, &self.data_id)
    }
}

pub fn dataset_id(t: DatasetType, collection: &str, data_id: &DataId) -> String {
    format!("{}.{}.{}", t.name(), collection, data_id.key())
}

/// A recorded dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub id: String,
    pub dataset_type: DatasetType,
    pub collection: String,
    pub data_id: DataId,
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the file's bytes.
    pub checksum: String,
    pub format: String,
    /// Whether the archive keeps the file; datasets that are not kept are regenerated from
    /// their provenance on request (DMS-REQ-0311).
    pub stored: bool,
    /// When it was recorded (ISO 8601, UTC).
    pub created: String,
    pub observation: Option<Observation>,
    pub provenance: Option<Provenance>,
    pub metadata: Option<serde_json::Value>,
}

impl Dataset {
    /// The publisher's identifier of the dataset (ObsCore obs_publisher_did).
    pub fn publisher_did(&self) -> String {
        format!("{PUBLISHER_DID_BASE}?{}", self.id)
    }
}

/// The dataset ID named by a publisher DID or given as is.
pub fn id_from_did(did: &str) -> &str {
    did.strip_prefix(PUBLISHER_DID_BASE)
        .and_then(|rest| rest.strip_prefix('?'))
        .unwrap_or(did)
}

/// MIME types of the files the archive writes.
pub mod formats {
    pub const FITS: &str = "image/fits";
    pub const PARQUET: &str = "application/vnd.apache.parquet";
}
