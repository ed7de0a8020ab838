//! Alert production from raw exposures (`aster night run --from-raw`, `aster bench night`):
//! the camera simulator reads each visit out as the camera would (two snaps, through its
//! amplifiers, with the detector's signature, cosmic rays and asteroids trailing), and the
//! chain starts from the raw files: ISR with the CCD's calibration products, then
//! characterization (PSF, WCS fitted to the field's reference stars, zeropoint) and the
//! background, as `aster pipeline run` does, before the template and the difference.
//!
//! The instrument is made once, before the night, under `<out>/instrument`: the camera's
//! calibration exposures simulated and combined into calibration products as `aster
//! simulate` and `aster calib build` make them. A rerun finds them there.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aster_archive::raw_file::write_raw;
use aster_archive::registry::Registry;
use aster_processing::camera::Camera;
use aster_processing::camsim::{
    ExposureSpec, Light, READOUT_TIME, SNAP_TIME, combine_snaps, simulate,
};
use aster_processing::characterize::ReferenceStar;
use aster_processing::image::Exposure;
use aster_processing::raw::ObsType;
use aster_processing::render::TruthEntry;
use aster_processing::sky::{Asteroid, SimObject, SimVisit, gaussian, njy_to_mag};
use rand::SeedableRng;

use crate::pipeline::definition::{self, Pipeline};
use crate::pipeline::run::{
    DataId, LoadedCalibrations, isr_and_characterize_with, load_calibrations,
};

/// Reference stars: the field's non-variable stars down to this magnitude.
const REFCAT_LIMIT: f64 = 21.5;
/// The objects the calibration simulation's sky flats see, per square degree.
const SKY_FLAT_DENSITY: f64 = 2_000.0;

/// The camera of the night, its calibration products (in memory for the night's band, as
/// prompt processing keeps them), the single-visit pipeline and the reference catalogue of
/// the field.
pub struct Instrument {
    dir: PathBuf,
    camera: Camera,
    calibrations: LoadedCalibrations,
    pipeline: Pipeline,
    refs: Vec<ReferenceStar>,
    seed: u64,
}

impl Instrument {
    /// Makes (or finds) the instrument for CCDs of `size` pixels under `out/instrument`,
    /// loads its calibration products for `band`, and makes the reference catalogue of
    /// `objects`' steady stars at `epoch` (MJD).
    pub fn prepare(
        out: &Path,
        seed: u64,
        size: usize,
        band: usize,
        objects: &[SimObject],
        epoch: f64,
    ) -> Result<Self> {
        let dir = out.join("instrument");
        let camera =
            Camera::new(seed, size, 1).with_context(|| format!("a camera of {size}-pixel CCDs"))?;
        if !dir.join("calib").exists() {
            let started = Instant::now();
            let registry = Registry::open(&dir)?;
            crate::simulate::simulate_survey(
                &dir,
                &registry,
                &crate::simulate::SurveySpec {
                    seed,
                    visits: 1,
                    ccds: 1,
                    ccd_size: size,
                    density: SKY_FLAT_DENSITY,
                },
            )
            .context("simulating the camera's calibration exposures")?;
            crate::calibrate::build_all(&dir, &registry).context("calibration products")?;
            tracing::info!(
                seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                "the night's instrument: calibration products made"
            );
        }
        let pipeline = definition::parse(include_str!("../../pipelines/single-visit.yaml"), &[])?;
        let detector = &camera.detectors[0];
        let calibrations = load_calibrations(
            &dir,
            pipeline.isr().context("the pipeline has no isr task")?,
            &DataId {
                visit: 0,
                detector: detector.id,
                detector_name: detector.name.clone(),
                band,
                snaps: Vec::new(),
            },
        )?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x4ef);
        let refs: Vec<ReferenceStar> = objects
            .iter()
            .filter(|o| o.is_star && o.variability.is_none())
            .filter_map(|o| {
                let mag = njy_to_mag(o.flux[2]);
                (mag <= REFCAT_LIMIT).then(|| {
                    // A survey catalogue's errors: 10 mas, and 0.01 mag plus the photon
                    // noise of a 21st-magnitude star.
                    let err = 0.01 + 0.02 * 10f64.powf(0.4 * (mag - 21.0));
                    let cosd = o.dec.to_radians().cos();
                    let pos = 0.010 / 3600.0;
                    ReferenceStar {
                        id: o.id,
                        ra: o.ra + pos * gaussian(&mut rng) / cosd,
                        dec: o.dec + pos * gaussian(&mut rng),
                        epoch,
                        pm_ra: 0.0,
                        pm_dec: 0.0,
                        parallax: 0.0,
                        mags: std::array::from_fn(|b| {
                            let m = njy_to_mag(o.flux[b]);
                            Some((m + err * gaussian(&mut rng), err))
                        }),
                    }
                })
            })
            .collect();
        if refs.len() < 10 {
            bail!(
                "only {} reference stars brighter than {REFCAT_LIMIT} in the field",
                refs.len()
            );
        }
        Ok(Self {
            dir,
            camera,
            calibrations,
            pipeline,
            refs,
            seed,
        })
    }

    /// Reads `visit` out: its two snaps simulated and written as raw files (the camera's
    /// work, not the pipeline's), with the truth of what was drawn on the CCD.
    pub fn expose(
        &self,
        visit: &SimVisit,
        objects: &[SimObject],
        asteroids: &[Asteroid],
    ) -> Result<(DataId, Vec<TruthEntry>)> {
        let detector = &self.camera.detectors[0];
        let obs = format!("AS_O_night_{}", visit.visit);
        let out = self.dir.join("raw").join("night").join(&obs);
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut snaps = Vec::new();
        let mut drawn = Vec::new();
        for snap in 0..2u8 {
            let spec = ExposureSpec {
                light: Light::Sky {
                    visit,
                    objects,
                    asteroids,
                },
                obs_type: ObsType::Science,
                obs_id: obs.clone(),
                exposure_id: visit.visit * 10 + snap as i64,
                snap,
                tai_start: visit.mjd_start + snap as f64 * (SNAP_TIME + READOUT_TIME) / 86_400.0,
                exposure_time: SNAP_TIME,
            };
            let sim = simulate(&self.camera, detector, &spec, self.seed);
            let path = out.join(format!("{obs}_{snap}_{}.fits", detector.name));
            write_raw(&path, &sim.raw)?;
            snaps.push((path, sim.raw.info));
            drawn.push(sim.objects);
        }
        let truth = combine_snaps(drawn)
            .into_iter()
            .map(|d| TruthEntry {
                id: d.id,
                x: d.x,
                y: d.y,
                is_star: d.is_star,
                flux_njy: d.flux_njy,
                snr: f64::NAN,
            })
            .collect();
        Ok((
            DataId {
                visit: visit.visit,
                detector: detector.id,
                detector_name: detector.name.clone(),
                band: visit.band,
                snaps,
            },
            truth,
        ))
    }

    /// The visit's calibrated, background-subtracted exposure from its raw files; each
    /// step's seconds into `stages`.
    pub fn calexp(&self, id: &DataId, stages: &mut Vec<(&'static str, f64)>) -> Result<Exposure> {
        let c =
            isr_and_characterize_with(&self.calibrations, &self.pipeline, id, &self.refs, stages)?;
        let t = Instant::now();
        // Characterization measured the background on the way; subtracted here.
        let mut exposure = c.exposure;
        let (img, _, _) = exposure.planes_mut();
        c.background.subtract_from(img).context("background")?;
        stages.push(("background", t.elapsed().as_secs_f64()));
        Ok(exposure)
    }
}
