//! Calibration products (DMS-REQ-0130, 0059-0063, 0282, 0283): the bias residual, dark
//! current, flat field per filter, monochromatic flat cube, illumination correction and
//! fringe frame of each CCD, the crosstalk matrix measured from projector spots, and a
//! 32-bit bad pixel map; each built from raw calibration exposures through the ISR steps
//! that precede it, combined pixel by pixel with outliers (cosmic rays, stars) rejected, and
//! carrying its provenance (DMS-REQ-0132): the input exposures and their dates, the
//! parameters, the calibration products used, the software and the creation date.
use std::collections::BTreeMap;

use crate::background::{Background, median};
use crate::camera::PRESCAN;
use crate::image::{Exposure, HeaderValue, Image, Mask, MaskPlane, for_rows};
use crate::isr::{IsrCalibrations, IsrConfig, IsrError, isr_snap, overscan_subtracted};
use crate::raw::{ObsType, RawExposure, mjd_to_iso};
use crate::sky::{BANDS, band_index};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CalibError {
    #[error("{product}: {message}")]
    Inputs {
        product: &'static str,
        message: String,
    },
    #[error("{product}: {source}")]
    Isr {
        product: &'static str,
        source: IsrError,
    },
    #[error("provenance card {0} is missing or invalid")]
    Provenance(String),
}

/// The kinds of calibration product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CalibType {
    Bias,
    Dark,
    Flat,
    MonoFlat,
    Illumination,
    Fringe,
    Crosstalk,
    Defects,
}

impl CalibType {
    pub const ALL: [CalibType; 8] = [
        Self::Bias,
        Self::Dark,
        Self::Flat,
        Self::MonoFlat,
        Self::Illumination,
        Self::Fringe,
        Self::Crosstalk,
        Self::Defects,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Self::Bias => "bias",
            Self::Dark => "dark",
            Self::Flat => "flat",
            Self::MonoFlat => "monoflat",
            Self::Illumination => "illumination",
            Self::Fringe => "fringe",
            Self::Crosstalk => "crosstalk",
            Self::Defects => "defects",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s.trim())
    }
}

/// Who made a product and when; the caller stamps it so products stay reproducible.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    /// "aster <version>".
    pub software: String,
    /// ISO 8601 creation time.
    pub created: String,
}

/// The provenance of one calibration product (DMS-REQ-0132).
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub calib_type: CalibType,
    pub detector: i64,
    /// The filter the product is for, if any.
    pub band: Option<usize>,
    /// Names (OBSID) of the input exposures, and the range of their start times (MJD TAI).
    pub inputs: Vec<String>,
    pub input_dates: (f64, f64),
    /// Processing parameters as (name, value).
    pub parameters: Vec<(String, String)>,
    /// Calibration products used to make it, by type.
    pub calibrations_used: Vec<CalibType>,
    pub stamp: Stamp,
}

impl Provenance {
    fn new(
        calib_type: CalibType,
        inputs: &[&RawExposure],
        parameters: &[(&str, String)],
        used: &[CalibType],
        stamp: &Stamp,
    ) -> Self {
        let first = inputs.first().map(|r| &r.info);
        Self {
            calib_type,
            detector: first.map_or(0, |i| i.detector),
            band: first.and_then(|i| i.band),
            inputs: inputs.iter().map(|r| r.info.obs_id.clone()).collect(),
            input_dates: (
                inputs
                    .iter()
                    .map(|r| r.info.tai_start)
                    .fold(f64::INFINITY, f64::min),
                inputs
                    .iter()
                    .map(|r| r.info.tai_start)
                    .fold(f64::NEG_INFINITY, f64::max),
            ),
            parameters: parameters
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            calibrations_used: used.to_vec(),
            stamp: stamp.clone(),
        }
    }

    /// Header cards: CALTYPE, DETECTOR, FILTER, NINPUT and INPUTnnn, CALDATE0/1 (the
    /// inputs' date range), CALDATE (creation), SOFTWARE, PARNAMn/PARVALn, USEDCALn.
    pub fn to_cards(&self) -> Vec<(String, HeaderValue)> {
        use HeaderValue::{Float, Int, Text};
        let mut c = vec![
            ("CALTYPE".to_string(), Text(self.calib_type.name().into())),
            ("DETECTOR".into(), Int(self.detector)),
            ("NINPUT".into(), Int(self.inputs.len() as i64)),
            ("CALDATE0".into(), Text(mjd_to_iso(self.input_dates.0))),
            ("CALDATE1".into(), Text(mjd_to_iso(self.input_dates.1))),
            ("CALMJD0".into(), Float(self.input_dates.0)),
            ("CALMJD1".into(), Float(self.input_dates.1)),
            ("CALDATE".into(), Text(self.stamp.created.clone())),
            ("SOFTWARE".into(), Text(self.stamp.software.clone())),
            ("NPARAM".into(), Int(self.parameters.len() as i64)),
            ("NUSEDCAL".into(), Int(self.calibrations_used.len() as i64)),
        ];
        if let Some(b) = self.band {
            c.push(("FILTER".into(), Text(BANDS[b].into())));
        }
        for (i, name) in self.inputs.iter().enumerate() {
            c.push((format!("INPUT{:03}", i + 1), Text(name.clone())));
        }
        for (i, (k, v)) in self.parameters.iter().enumerate() {
            c.push((format!("PARNAM{}", i + 1), Text(k.clone())));
            c.push((format!("PARVAL{}", i + 1), Text(v.clone())));
        }
        for (i, t) in self.calibrations_used.iter().enumerate() {
            c.push((format!("USEDCAL{}", i + 1), Text(t.name().into())));
        }
        c
    }

    pub fn from_cards(cards: &BTreeMap<String, HeaderValue>) -> Result<Self, CalibError> {
        let text = |k: &str| match cards.get(k) {
            Some(HeaderValue::Text(t)) => Ok(t.clone()),
            _ => Err(CalibError::Provenance(k.to_string())),
        };
        let int = |k: &str| match cards.get(k) {
            Some(HeaderValue::Int(i)) if *i >= 0 => Ok(*i),
            _ => Err(CalibError::Provenance(k.to_string())),
        };
        let float = |k: &str| match cards.get(k) {
            Some(HeaderValue::Float(x)) => Ok(*x),
            Some(HeaderValue::Int(i)) => Ok(*i as f64),
            _ => Err(CalibError::Provenance(k.to_string())),
        };
        let calib_type = CalibType::from_name(&text("CALTYPE")?)
            .ok_or_else(|| CalibError::Provenance("CALTYPE".into()))?;
        let band = match cards.get("FILTER") {
            None => None,
            Some(_) => {
                let f = text("FILTER")?;
                Some(band_index(&f).ok_or_else(|| CalibError::Provenance("FILTER".into()))?)
            }
        };
        let limit = |n: i64| (n as usize).min(10_000);
        Ok(Self {
            calib_type,
            detector: int("DETECTOR")?,
            band,
            inputs: (1..=limit(int("NINPUT")?))
                .map(|i| text(&format!("INPUT{i:03}")))
                .collect::<Result<_, _>>()?,
            input_dates: (float("CALMJD0")?, float("CALMJD1")?),
            parameters: (1..=limit(int("NPARAM")?))
                .map(|i| Ok((text(&format!("PARNAM{i}"))?, text(&format!("PARVAL{i}"))?)))
                .collect::<Result<_, CalibError>>()?,
            calibrations_used: (1..=limit(int("NUSEDCAL")?))
                .map(|i| {
                    CalibType::from_name(&text(&format!("USEDCAL{i}"))?)
                        .ok_or_else(|| CalibError::Provenance(format!("USEDCAL{i}")))
                })
                .collect::<Result<_, _>>()?,
            stamp: Stamp {
                software: text("SOFTWARE")?,
                created: text("CALDATE")?,
            },
        })
    }
}

/// An image calibration: bias, dark, flat, illumination correction or fringe frame.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibImage {
    pub image: Image<f32>,
    pub variance: Image<f32>,
    pub provenance: Provenance,
}

impl CalibImage {
    /// The product as ISR applies it: the image with its variance.
    pub fn plane(&self) -> crate::isr::CalibPlane<'_> {
        crate::isr::CalibPlane {
            image: &self.image,
            variance: Some(&self.variance),
        }
    }
}

/// Flats at several wavelengths (DMS-REQ-0063), in increasing wavelength.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoFlatCube {
    pub wavelengths: Vec<f64>,
    pub planes: Vec<Image<f32>>,
    pub provenance: Provenance,
}

impl MonoFlatCube {
    /// The flat for light of wavelength `nm`, interpolated linearly between planes: the
    /// flat for a source of any colour follows by weighting with its spectrum.
    pub fn at(&self, nm: f64) -> Image<f32> {
        let n = self.wavelengths.len();
        let i = self
            .wavelengths
            .partition_point(|&w| w < nm)
            .clamp(1, n.max(2) - 1);
        if n == 1 {
            return self.planes[0].clone();
        }
        let (w0, w1) = (self.wavelengths[i - 1], self.wavelengths[i]);
        let f = (((nm - w0) / (w1 - w0)).clamp(0.0, 1.0)) as f32;
        let (a, b) = (&self.planes[i - 1], &self.planes[i]);
        let data = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(x, y)| x + f * (y - x))
            .collect();
        Image::from_vec(a.width(), a.height(), data).expect("planes share a shape")
    }
}

/// The crosstalk matrix (DMS-REQ-0061): `coefficients[victim * amps + source]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CrosstalkMatrix {
    pub amps: usize,
    pub coefficients: Vec<f64>,
    pub errors: Vec<f64>,
    pub provenance: Provenance,
}

/// Bits of the bad pixel map (DMS-REQ-0059); downstream software may add more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefectBit {
    /// Dark current far above the CCD's.
    Hot = 0,
    /// Responds to light far less than its neighbours.
    Dead = 1,
    /// Part of a run of low-response pixels along a column.
    BadColumn = 2,
}

impl DefectBit {
    pub const ALL: [DefectBit; 3] = [Self::Hot, Self::Dead, Self::BadColumn];
    pub fn bit(self) -> i32 {
        1 << self as u32
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Hot => "HOT",
            Self::Dead => "DEAD",
            Self::BadColumn => "BAD_COLUMN",
        }
    }
}

/// The bad pixel map of a CCD.
#[derive(Debug, Clone, PartialEq)]
pub struct DefectMap {
    pub bits: Image<i32>,
    pub provenance: Provenance,
}

/// Checks that `raws` are at least `min` exposures of `kind`, of one detector and size.
fn check_inputs(
    product: &'static str,
    raws: &[&RawExposure],
    kind: &[ObsType],
    min: usize,
) -> Result<(), CalibError> {
    let fail = |message: String| Err(CalibError::Inputs { product, message });
    if raws.len() < min {
        return fail(format!(
            "{} exposures given, at least {min} needed",
            raws.len()
        ));
    }
    let first = &raws[0].info;
    for r in raws {
        let i = &r.info;
        if !kind.contains(&i.obs_type) {
            return fail(format!("{} is a {} exposure", i.obs_id, i.obs_type.name()));
        }
        if (i.detector, i.ccd_size) != (first.detector, first.ccd_size) {
            return fail(format!(
                "{} is detector {} ({} px), {} is detector {} ({} px)",
                i.obs_id, i.detector, i.ccd_size, first.obs_id, first.detector, first.ccd_size
            ));
        }
    }
    Ok(())
}

/// Pixel-by-pixel mean of `images` after rejecting values more than `k` sigma (each from
/// its own variance) from the median, and the variance of that mean.
pub fn combine(images: &[Exposure], k: f32) -> (Image<f32>, Image<f32>) {
    let (w, h) = (images[0].width(), images[0].height());
    let mut out = vec![0.0f32; w * h];
    let mut var = vec![0.0f32; w * h];
    // Mean and variance are computed together, row by row.
    let mut both: Vec<(f32, f32)> = vec![(0.0, 0.0); w * h];
    for_rows(&mut both, w, |y, row| {
        let mut v = Vec::with_capacity(images.len());
        for (x, slot) in row.iter_mut().enumerate() {
            v.clear();
            v.extend(images.iter().filter_map(|e| {
                let i = y * w + x;
                let p = e.image().data()[i];
                p.is_finite()
                    .then(|| (p, e.variance().data()[i].max(1e-12)))
            }));
            if v.is_empty() {
                *slot = (f32::NAN, f32::INFINITY);
                continue;
            }
            let mut values: Vec<f32> = v.iter().map(|p| p.0).collect();
            let med = median(&mut values);
            let kept: Vec<&(f32, f32)> = v
                .iter()
                .filter(|(p, s2)| v.len() < 3 || (p - med).abs() <= k * s2.sqrt())
                .collect();
            let kept = if kept.is_empty() {
                v.iter().collect()
            } else {
                kept
            };
            let n = kept.len() as f32;
            *slot = (
                kept.iter().map(|p| p.0).sum::<f32>() / n,
                kept.iter().map(|p| p.1).sum::<f32>() / (n * n),
            );
        }
    });
    for (i, (m, s)) in both.into_iter().enumerate() {
        out[i] = m;
        var[i] = s;
    }
    (
        Image::from_vec(w, h, out).expect("w x h"),
        Image::from_vec(w, h, var).expect("w x h"),
    )
}

fn run_isr(
    product: &'static str,
    raws: &[&RawExposure],
    calibs: &IsrCalibrations,
    config: &IsrConfig,
) -> Result<Vec<Exposure>, CalibError> {
    raws.iter()
        .map(|r| isr_snap(r, calibs, config).map_err(|source| CalibError::Isr { product, source }))
        .collect()
}

/// Rejection threshold of the combinations, sigma.
const REJECT: f32 = 4.0;

/// The bias residual left after overscan subtraction (DMS-REQ-0060), electrons: the
/// clipped mean of at least three zero-second exposures.
pub fn build_bias(raws: &[&RawExposure], stamp: &Stamp) -> Result<CalibImage, CalibError> {
    check_inputs("bias", raws, &[ObsType::Bias], 3)?;
    let images = run_isr(
        "bias",
        raws,
        &IsrCalibrations::default(),
        &IsrConfig::overscan_only(),
    )?;
    let (image, variance) = combine(&images, REJECT);
    Ok(CalibImage {
        image,
        variance,
        provenance: Provenance::new(
            CalibType::Bias,
            raws,
            &[("reject_sigma", REJECT.to_string())],
            &[],
            stamp,
        ),
    })
}

/// The dark current (DMS-REQ-0282), electrons per second: closed-shutter exposures with the
/// bias removed, each divided by its dark time, combined with cosmic rays rejected.
pub fn build_dark(
    raws: &[&RawExposure],
    bias: &CalibImage,
    stamp: &Stamp,
) -> Result<CalibImage, CalibError> {
    check_inputs("dark", raws, &[ObsType::Dark], 3)?;
    let config = IsrConfig {
        bias: true,
        ..IsrConfig::overscan_only()
    };
    let calibs = IsrCalibrations {
        bias: Some(bias.plane()),
        ..Default::default()
    };
    let mut images = run_isr("dark", raws, &calibs, &config)?;
    for (e, r) in images.iter_mut().zip(raws) {
        let t = r.info.dark_time.max(1e-3) as f32;
        let (p, _, v) = e.planes_mut();
        p.iter_mut().for_each(|x| *x /= t);
        v.iter_mut().for_each(|x| *x /= t * t);
    }
    let (image, variance) = combine(&images, REJECT);
    Ok(CalibImage {
        image,
        variance,
        provenance: Provenance::new(
            CalibType::Dark,
            raws,
            &[("reject_sigma", REJECT.to_string())],
            &[CalibType::Bias],
            stamp,
        ),
    })
}

/// A flat field of mean 1 from dome flats of one filter or one wavelength (DMS-REQ-0130):
/// bias, dark and crosstalk removed, each scaled by its median, combined.
pub fn build_flat(
    raws: &[&RawExposure],
    bias: &CalibImage,
    dark: &CalibImage,
    crosstalk: Option<&CrosstalkMatrix>,
    stamp: &Stamp,
) -> Result<CalibImage, CalibError> {
    check_inputs("flat", raws, &[ObsType::Flat], 3)?;
    let first = &raws[0].info;
    for r in raws {
        if (r.info.band, r.info.wavelength) != (first.band, first.wavelength) {
            return Err(CalibError::Inputs {
                product: "flat",
                message: format!(
                    "{} and {} were taken in different light",
                    first.obs_id, r.info.obs_id
                ),
            });
        }
    }
    let config = IsrConfig {
        crosstalk: crosstalk.is_some(),
        bias: true,
        dark: true,
        ..IsrConfig::overscan_only()
    };
    let calibs = IsrCalibrations {
        crosstalk: crosstalk.map(|c| c.coefficients.as_slice()),
        bias: Some(bias.plane()),
        dark: Some(dark.plane()),
        ..Default::default()
    };
    let mut images = run_isr("flat", raws, &calibs, &config)?;
    for e in &mut images {
        let mut sample: Vec<f32> = e.image().data().iter().step_by(7).copied().collect();
        let level = median(&mut sample).max(1.0);
        let (p, _, v) = e.planes_mut();
        p.iter_mut().for_each(|x| *x /= level);
        v.iter_mut().for_each(|x| *x /= level * level);
    }
    let (mut image, mut variance) = combine(&images, REJECT);
    normalise(&mut image, &mut variance);
    let mut used = vec![CalibType::Bias, CalibType::Dark];
    if crosstalk.is_some() {
        used.insert(0, CalibType::Crosstalk);
    }
    let mut provenance = Provenance::new(
        CalibType::Flat,
        raws,
        &[("reject_sigma", REJECT.to_string())],
        &used,
        stamp,
    );
    if let Some(w) = first.wavelength {
        provenance
            .parameters
            .push(("wavelength_nm".into(), w.to_string()));
    }
    Ok(CalibImage {
        image,
        variance,
        provenance,
    })
}

/// Scales `image` (and its variance) to mean 1 over its responsive pixels.
fn normalise(image: &mut Image<f32>, variance: &mut Image<f32>) {
    let good: Vec<f64> = image
        .data()
        .iter()
        .filter(|v| v.is_finite() && **v > 0.2)
        .map(|&v| v as f64)
        .collect();
    let mean = (good.iter().sum::<f64>() / good.len().max(1) as f64).max(1e-12) as f32;
    image.data_mut().iter_mut().for_each(|v| *v /= mean);
    variance
        .data_mut()
        .iter_mut()
        .for_each(|v| *v /= mean * mean);
}

/// The monochromatic flat cube (DMS-REQ-0063): one flat per monochromator wavelength.
pub fn build_mono_flat_cube(
    raws: &[&RawExposure],
    bias: &CalibImage,
    dark: &CalibImage,
    crosstalk: Option<&CrosstalkMatrix>,
    stamp: &Stamp,
) -> Result<MonoFlatCube, CalibError> {
    let mut by_wavelength: BTreeMap<i64, Vec<&RawExposure>> = BTreeMap::new();
    for r in raws {
        let Some(w) = r.info.wavelength else {
            return Err(CalibError::Inputs {
                product: "monochromatic flat cube",
                message: format!("{} has no monochromator wavelength", r.info.obs_id),
            });
        };
        by_wavelength
            .entry((w * 1000.0).round() as i64)
            .or_default()
            .push(r);
    }
    if by_wavelength.len() < 2 {
        return Err(CalibError::Inputs {
            product: "monochromatic flat cube",
            message: "flats at two wavelengths at least are needed".into(),
        });
    }
    let mut wavelengths = Vec::new();
    let mut planes = Vec::new();
    for (w, group) in &by_wavelength {
        wavelengths.push(*w as f64 / 1000.0);
        planes.push(build_flat(group, bias, dark, crosstalk, stamp)?.image);
    }
    let mut provenance = Provenance::new(
        CalibType::MonoFlat,
        raws,
        &[(
            "wavelengths_nm",
            wavelengths
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )],
        &[CalibType::Bias, CalibType::Dark],
        stamp,
    );
    provenance.band = None;
    Ok(MonoFlatCube {
        wavelengths,
        planes,
        provenance,
    })
}

/// The bad pixel map (DMS-REQ-0059) from a dark and a flat: hot pixels (dark current
/// above `hot_rate` e-/s), dead pixels (flat below `dead_level`), and runs of at least 20
/// low pixels along a column marked as bad columns.
pub fn build_defects(
    dark: &CalibImage,
    flat: &CalibImage,
    stamp: &Stamp,
) -> Result<DefectMap, CalibError> {
    let (w, h) = (dark.image.width(), dark.image.height());
    if (flat.image.width(), flat.image.height()) != (w, h) {
        return Err(CalibError::Inputs {
            product: "defects",
            message: "the dark and the flat differ in shape".into(),
        });
    }
    let (hot_rate, dead_level) = (0.5f32, 0.5f32);
    let mut bits = Image::filled(w, h, 0i32);
    for (i, (&d, &f)) in dark.image.data().iter().zip(flat.image.data()).enumerate() {
        let mut b = 0;
        if d > hot_rate {
            b |= DefectBit::Hot.bit();
        }
        // NaN (no response at all) counts as dead too.
        if f.is_nan() || f < dead_level {
            b |= DefectBit::Dead.bit();
        }
        bits.data_mut()[i] = b;
    }
    for x in 0..w {
        let mut y = 0;
        while y < h {
            if bits.get(x, y).unwrap_or(0) & DefectBit::Dead.bit() == 0 {
                y += 1;
                continue;
            }
            let start = y;
            while y < h && bits.get(x, y).unwrap_or(0) & DefectBit::Dead.bit() != 0 {
                y += 1;
            }
            if y - start >= 20 {
                for yy in start..y {
                    let v = bits.get(x, yy).unwrap_or(0);
                    bits.set(
                        x,
                        yy,
                        (v & !DefectBit::Dead.bit()) | DefectBit::BadColumn.bit(),
                    );
                }
            }
        }
    }
    let mut provenance = flat.provenance.clone();
    provenance.calib_type = CalibType::Defects;
    provenance.band = None;
    provenance.parameters = vec![
        ("hot_rate_e_per_s".into(), hot_rate.to_string()),
        ("dead_level".into(), dead_level.to_string()),
        ("bad_column_run".into(), "20".into()),
    ];
    if let Some(b) = flat.provenance.band {
        provenance
            .parameters
            .push(("flat_band".into(), BANDS[b].to_string()));
    }
    provenance.calibrations_used = vec![CalibType::Dark, CalibType::Flat];
    provenance
        .inputs
        .extend(dark.provenance.inputs.iter().cloned());
    provenance.input_dates = (
        flat.provenance
            .input_dates
            .0
            .min(dark.provenance.input_dates.0),
        flat.provenance
            .input_dates
            .1
            .max(dark.provenance.input_dates.1),
    );
    provenance.stamp = stamp.clone();
    Ok(DefectMap { bits, provenance })
}

/// The crosstalk matrix (DMS-REQ-0061) from projector-spot exposures: for every pair of
/// amplifiers, the least-squares ratio of the victim's excess over its background to the
/// source's signal, over the source's pixels near saturation where the victim has no light
/// of its own. The bias residual is removed first: its column structure is as large as
/// the ghosts being measured.
pub fn measure_crosstalk(
    raws: &[&RawExposure],
    bias: &CalibImage,
    stamp: &Stamp,
) -> Result<CrosstalkMatrix, CalibError> {
    check_inputs("crosstalk", raws, &[ObsType::Spot], 1)?;
    let n = raws[0].amps.len();
    // Normal equations per victim: xx[v][s * n + t], xy[v][s].
    let mut xy = vec![vec![0.0f64; n]; n];
    let mut xx = vec![vec![0.0f64; n * n]; n];
    let mut noise = vec![0.0f64; n];
    for raw in raws {
        if raw.amps.len() != n {
            return Err(CalibError::Inputs {
                product: "crosstalk",
                message: format!(
                    "{} has {} amplifiers, not {n}",
                    raw.info.obs_id,
                    raw.amps.len()
                ),
            });
        }
        let (mut signal, ceilings) = overscan_subtracted(raw, Some(8));
        let size = raw.info.ccd_size;
        if (bias.image.width(), bias.image.height()) != (size, size) {
            return Err(CalibError::Inputs {
                product: "crosstalk",
                message: format!("the bias is not {size} x {size}"),
            });
        }
        for (a, s) in raw.amps.iter().zip(&mut signal) {
            let l = &a.layout;
            for (k, v) in s.iter_mut().enumerate() {
                let (x, y) = l
                    .to_ccd(PRESCAN + k % l.width, k / l.width)
                    .expect("a data pixel");
                *v -= bias.image.data()[y * size + x] / a.gain as f32;
            }
        }
        // Each victim's background and noise from readout positions where no amplifier
        // has light (ghosts of every source would otherwise raise it).
        let len = signal[0].len();
        let lit: Vec<bool> = (0..len)
            .map(|k| signal.iter().any(|s| s.get(k).is_some_and(|&v| v > 50.0)))
            .collect();
        let backgrounds: Vec<(f32, f32)> = signal
            .iter()
            .map(|s| {
                let mut v: Vec<f32> = s
                    .iter()
                    .zip(&lit)
                    .filter(|(_, lit)| !**lit)
                    .map(|(v, _)| *v)
                    .collect();
                if v.is_empty() {
                    return (0.0, 0.0);
                }
                let m = median(&mut v);
                let mut d: Vec<f32> = v.iter().map(|x| (x - m).abs()).collect();
                (m, 1.4826 * median(&mut d))
            })
            .collect();
        // Per victim, the normal equations of its excess against every source's signal at
        // readout positions where some source is bright and the victim has no light of its
        // own: ghosts of several sources at one position are told apart by the fit.
        let width = raw.amps[0].layout.width;
        for v in 0..n {
            let (bkg, sigma) = backgrounds[v];
            // The victim's own light, and two pixels around it (its faint edges).
            let own: Vec<bool> = signal[v]
                .iter()
                .map(|&x| x - bkg > 10.0 * sigma + 50.0)
                .collect();
            let near_own = |k: usize| {
                let (x, y) = ((k % width) as i64, (k / width) as i64);
                (-2..=2).any(|dy| {
                    (-2..=2).any(|dx| {
                        let (xx, yy) = (x + dx, y + dy);
                        xx >= 0
                            && yy >= 0
                            && xx < width as i64
                            && own.get(yy as usize * width + xx as usize) == Some(&true)
                    })
                })
            };
            #[allow(clippy::needless_range_loop)] // k indexes every amplifier's signal
            for k in 0..len {
                let bright = (0..n).any(|s| s != v && signal[s][k] >= 0.8 * ceilings[s]);
                if !bright || near_own(k) {
                    continue;
                }
                let excess = (signal[v][k] - bkg) as f64;
                let row: Vec<f64> = (0..n)
                    .map(|s| signal[s][k].clamp(0.0, ceilings[s]) as f64)
                    .collect();
                for s in (0..n).filter(|&s| s != v) {
                    xy[v][s] += excess * row[s];
                    for t in (0..n).filter(|&t| t != v) {
                        xx[v][s * n + t] += row[s] * row[t];
                    }
                }
            }
            noise[v] = noise[v].max(sigma as f64);
        }
    }
    let mut coefficients = vec![0.0; n * n];
    let mut errors = vec![0.0; n * n];
    for v in 0..n {
        let sources: Vec<usize> = (0..n).filter(|&s| s != v).collect();
        if let Some(&s) = sources.iter().find(|&&s| xx[v][s * n + s] <= 0.0) {
            return Err(CalibError::Inputs {
                product: "crosstalk",
                message: format!(
                    "amplifier {} is never bright in these exposures; take more spots",
                    raws[0].amps[s].layout.name
                ),
            });
        }
        let a: Vec<f64> = sources
            .iter()
            .flat_map(|&s| sources.iter().map(move |&t| (s, t)))
            .map(|(s, t)| xx[v][s * n + t])
            .collect();
        let b: Vec<f64> = sources.iter().map(|&s| xy[v][s]).collect();
        // Each coefficient's error: the noise times the root of its diagonal element of
        // the inverse normal matrix.
        let inverse_diagonal: Vec<f64> = (0..sources.len())
            .map(|i| {
                let unit: Vec<f64> = (0..sources.len()).map(|j| f64::from(i == j)).collect();
                crate::linalg::solve(a.clone(), unit).map_or(f64::INFINITY, |x| x[i])
            })
            .collect();
        let solution = crate::linalg::solve(a, b).ok_or_else(|| CalibError::Inputs {
            product: "crosstalk",
            message: format!(
                "the spots cannot separate the ghosts in amplifier {}; take more spots",
                raws[0].amps[v].layout.name
            ),
        })?;
        for ((&s, c), d) in sources.iter().zip(solution).zip(inverse_diagonal) {
            coefficients[v * n + s] = c;
            errors[v * n + s] = noise[v] * d.max(0.0).sqrt();
        }
    }
    let mut provenance = Provenance::new(
        CalibType::Crosstalk,
        raws,
        &[("bright_fraction_of_saturation", "0.8".into())],
        &[CalibType::Bias],
        stamp,
    );
    provenance.band = None;
    Ok(CrosstalkMatrix {
        amps: n,
        coefficients,
        errors,
        provenance,
    })
}

/// Sky exposures processed with the dome flat, sources masked: what the illumination
/// correction and fringe frames are made from.
fn sky_images(
    product: &'static str,
    raws: &[&RawExposure],
    calibs: &IsrCalibrations,
    illumination: bool,
) -> Result<Vec<Exposure>, CalibError> {
    check_inputs(product, raws, &[ObsType::SkyFlat, ObsType::Science], 3)?;
    let band = raws[0].info.band;
    if raws.iter().any(|r| r.info.band != band) {
        return Err(CalibError::Inputs {
            product,
            message: "the sky exposures are in different filters".into(),
        });
    }
    let config = IsrConfig {
        crosstalk: calibs.crosstalk.is_some(),
        bias: true,
        dark: true,
        flat: true,
        illumination,
        ..IsrConfig::overscan_only()
    };
    let mut images = run_isr(product, raws, calibs, &config)?;
    for e in &mut images {
        mask_sources(e);
    }
    Ok(images)
}

/// Marks sources (and two pixels around them) DETECTED and sets them NaN, so sky
/// statistics ignore stars and galaxies. A source is where the 3 x 3 mean stands 5 sigma
/// and 5% above the local sky: fringes (a few per cent of the sky) are sky, not sources,
/// and faint sources left over differ between dithers, so the combination rejects them.
fn mask_sources(e: &mut Exposure) {
    let (w, h) = (e.width(), e.height());
    let bin = (w / 8).max(16);
    let Ok(bkg) = Background::estimate(e.image(), e.mask(), bin) else {
        return;
    };
    let img = e.image();
    let mut hot = vec![false; w * h];
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let mean = (y - 1..=y + 1)
                .flat_map(|yy| (x - 1..=x + 1).map(move |xx| (xx, yy)))
                .map(|(xx, yy)| img.data()[yy * w + xx])
                .sum::<f32>()
                / 9.0;
            let b = bkg.at(x as f64, y as f64) as f32;
            let sigma = e.variance().data()[y * w + x].max(1.0).sqrt() / 3.0;
            hot[y * w + x] = mean - b > 5.0 * sigma + 0.05 * b.abs();
        }
    }
    let (p, mask, _) = e.planes_mut();
    for y in 0..h {
        for x in 0..w {
            let near = (y.saturating_sub(2)..(y + 3).min(h))
                .any(|yy| (x.saturating_sub(2)..(x + 3).min(w)).any(|xx| hot[yy * w + xx]));
            if near {
                p[y * w + x] = f32::NAN;
                mask.set(x, y, MaskPlane::Detected);
            }
        }
    }
}

/// The illumination correction (DMS-REQ-0062) for one filter: sky exposures flattened by
/// the dome flat show the dome's illumination pattern inverted; their normalised median,
/// smoothed, is the correction (mean 1) that removes it.
pub fn build_illumination(
    raws: &[&RawExposure],
    calibs: &IsrCalibrations,
    stamp: &Stamp,
) -> Result<CalibImage, CalibError> {
    let mut images = sky_images("illumination", raws, calibs, false)?;
    for e in &mut images {
        let mut v: Vec<f32> = e
            .image()
            .data()
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        let level = median(&mut v).max(1.0);
        let (p, _, var) = e.planes_mut();
        p.iter_mut().for_each(|x| *x /= level);
        var.iter_mut().for_each(|x| *x /= level * level);
    }
    let (combined, _) = combine(&images, REJECT);
    let (w, h) = (combined.width(), combined.height());
    let bin = (w / 8).max(32);
    let smooth =
        Background::estimate(&combined, &Mask::new(w, h), bin).map_err(|e| CalibError::Inputs {
            product: "illumination",
            message: e.to_string(),
        })?;
    let mut image = smooth.render();
    let mut variance = Image::filled(w, h, 0.0f32);
    normalise(&mut image, &mut variance);
    Ok(CalibImage {
        image,
        variance,
        provenance: Provenance::new(
            CalibType::Illumination,
            raws,
            &[("smoothing_bin_px", bin.to_string())],
            &used(calibs),
            stamp,
        ),
    })
}

/// The fringe frame (DMS-REQ-0283's fringing) for a red filter, as a fraction of the sky:
/// the median of sky exposures with their smooth background removed and divided out.
pub fn build_fringe(
    raws: &[&RawExposure],
    calibs: &IsrCalibrations,
    stamp: &Stamp,
) -> Result<CalibImage, CalibError> {
    let mut images = sky_images("fringe", raws, calibs, calibs.illumination.is_some())?;
    let bin = (raws[0].info.ccd_size / 8).max(32);
    for e in &mut images {
        let (w, h) = (e.width(), e.height());
        let bkg =
            Background::estimate(e.image(), e.mask(), bin).map_err(|err| CalibError::Inputs {
                product: "fringe",
                message: err.to_string(),
            })?;
        let (p, _, var) = e.planes_mut();
        for y in 0..h {
            for x in 0..w {
                let b = bkg.at(x as f64, y as f64).max(1.0) as f32;
                p[y * w + x] = p[y * w + x] / b - 1.0;
                var[y * w + x] /= b * b;
            }
        }
    }
    let (mut image, mut variance) = combine(&images, REJECT);
    image.data_mut().iter_mut().for_each(|v| {
        if !v.is_finite() {
            *v = 0.0;
        }
    });
    // Fringes vary over tens of pixels; pixel noise does not: a light smoothing keeps the
    // pattern and cuts the noise the frame would add to every image it corrects.
    smooth(&mut image, &mut variance, FRINGE_SMOOTHING);
    Ok(CalibImage {
        image,
        variance,
        provenance: Provenance::new(
            CalibType::Fringe,
            raws,
            &[("background_bin_px", bin.to_string())],
            &used(calibs),
            stamp,
        ),
    })
}

/// Gaussian sigma (pixels) of the fringe frame's smoothing.
const FRINGE_SMOOTHING: f64 = 1.5;

/// Smooths `image` with a Gaussian of `sigma` pixels (separably, renormalised at the
/// edges), and `variance` as the smoothing propagates independent pixel noise.
fn smooth(image: &mut Image<f32>, variance: &mut Image<f32>, sigma: f64) {
    let r = (3.0 * sigma).ceil() as i64;
    let kernel: Vec<f64> = (-r..=r)
        .map(|d| (-0.5 * (d * d) as f64 / (sigma * sigma)).exp())
        .collect();
    let (w, h) = (image.width() as i64, image.height() as i64);
    let pass = |src: &[f32], horizontal: bool, squared: bool| -> Vec<f32> {
        let mut out = vec![0.0f32; src.len()];
        for y in 0..h {
            for x in 0..w {
                let (mut sum, mut norm) = (0.0, 0.0);
                for (k, &wt) in kernel.iter().enumerate() {
                    let d = k as i64 - r;
                    let (xx, yy) = if horizontal { (x + d, y) } else { (x, y + d) };
                    if xx < 0 || yy < 0 || xx >= w || yy >= h {
                        continue;
                    }
                    let v = src[(yy * w + xx) as usize] as f64;
                    if v.is_finite() {
                        let wt = if squared { wt * wt } else { wt };
                        sum += wt * v;
                        norm += wt;
                    }
                }
                // Variances scale by the square of the normalised weights.
                out[(y * w + x) as usize] = match (squared, norm > 0.0) {
                    (_, false) => 0.0,
                    (false, true) => (sum / norm) as f32,
                    (true, true) => {
                        let linear: f64 = kernel.iter().sum::<f64>();
                        (sum / (linear * linear)) as f32
                    }
                };
            }
        }
        out
    };
    let once = pass(image.data(), true, false);
    let twice = pass(&once, false, false);
    image.data_mut().copy_from_slice(&twice);
    let once = pass(variance.data(), true, true);
    let twice = pass(&once, false, true);
    variance.data_mut().copy_from_slice(&twice);
}

/// The calibration types present in `calibs`.
fn used(calibs: &IsrCalibrations) -> Vec<CalibType> {
    [
        (calibs.crosstalk.is_some(), CalibType::Crosstalk),
        (calibs.bias.is_some(), CalibType::Bias),
        (calibs.dark.is_some(), CalibType::Dark),
        (calibs.flat.is_some(), CalibType::Flat),
        (calibs.illumination.is_some(), CalibType::Illumination),
    ]
    .into_iter()
    .filter_map(|(on, t)| on.then_some(t))
    .collect()
}

/// Any calibration product, as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum CalibProduct {
    Image(CalibImage),
    Cube(MonoFlatCube),
    Crosstalk(CrosstalkMatrix),
    Defects(DefectMap),
}

impl CalibProduct {
    pub fn provenance(&self) -> &Provenance {
        match self {
            Self::Image(c) => &c.provenance,
            Self::Cube(c) => &c.provenance,
            Self::Crosstalk(c) => &c.provenance,
            Self::Defects(c) => &c.provenance,
        }
    }
}
