//! Periodic variability of a DIAObject (DMS-REQ-0319): a generalised Lomb-Scargle
//! periodogram of its forced difference-image fluxes over the past year, all bands at once.
//! The model at each trial frequency is one sinusoid shared by every band on top of a mean
//! of each band's own (the "shared phase, band offsets" base model of VanderPlas & Ivezić
//! 2015, which is Zechmeister & Kürster's 2009 floating-mean periodogram when there is one
//! band). Fitting the band means is the same as centring each band's data and sinusoid on
//! their own weighted means, so each frequency costs one pass over the points; the sines and
//! cosines of the evenly spaced frequency grid come from a rotation per point, not from a
//! trigonometric call per point and frequency.
//!
//! The power is the fraction of the chi-square about the band means that the sinusoid
//! explains (0 to 1); the false-alarm probability is Baluev's (2008) upper bound for the
//! grid's frequency range, the chance that noise alone gives a peak as high somewhere in it.
use crate::sky::BANDS;

/// Peaks of the coarse grid searched again finely, and the fine grid's steps on each side.
const REFINED_PEAKS: usize = 10;
const FINE_STEPS: i32 = 10;

/// One forced measurement: when, in which band, the flux and its error (any flux unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub mjd: f64,
    pub band: usize,
    pub flux: f64,
    pub err: f64,
}

/// Which periods are searched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeriodSearch {
    /// The shortest period searched, days.
    pub min_period: f64,
    /// The grid's frequency step is 1 / (oversampling × time span).
    pub oversampling: f64,
    /// Fewer points than this, or a span shorter than `min_span` days, gives no answer.
    pub min_points: usize,
    pub min_span: f64,
}

impl Default for PeriodSearch {
    fn default() -> Self {
        Self {
            min_period: 0.1,
            oversampling: 5.0,
            min_points: 10,
            min_span: 1.0,
        }
    }
}

/// The periodogram's highest peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Periodicity {
    /// Days.
    pub period: f64,
    /// Fraction of the chi-square about the band means the sinusoid explains.
    pub power: f64,
    pub false_alarm_probability: f64,
    /// Points used.
    pub n: usize,
}

/// The best period of `samples` (those with a finite flux and a positive error), or none
/// when there are too few of them or they span too short a time.
pub fn periodicity(samples: &[Sample], search: &PeriodSearch) -> Option<Periodicity> {
    let points: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.mjd.is_finite()
                && s.flux.is_finite()
                && s.err.is_finite()
                && s.err > 0.0
                && s.band < BANDS.len()
        })
        .collect();
    let n = points.len();
    let (t0, t1) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| {
            (a.min(s.mjd), b.max(s.mjd))
        });
    let span = t1 - t0;
    if n < search.min_points.max(4) || span < search.min_span {
        return None;
    }
    let w: Vec<f64> = points.iter().map(|s| s.err.powi(-2)).collect();
    let t: Vec<f64> = points.iter().map(|s| s.mjd - t0).collect();
    let bands: Vec<usize> = points.iter().map(|s| s.band).collect();
    // Each band's weighted mean flux, and the chi-square about them.
    let mut sw = [0.0; BANDS.len()];
    let mut swy = [0.0; BANDS.len()];
    for i in 0..n {
        sw[bands[i]] += w[i];
        swy[bands[i]] += w[i] * points[i].flux;
    }
    let y: Vec<f64> = (0..n)
        .map(|i| points[i].flux - swy[bands[i]] / sw[bands[i]])
        .collect();
    let chi0: f64 = (0..n).map(|i| w[i] * y[i] * y[i]).sum();
    let used_bands = sw.iter().filter(|&&x| x > 0.0).count();
    if chi0 <= 0.0 || n <= used_bands + 2 {
        return None;
    }
    let f_min = 1.0 / span;
    let f_max = 1.0 / search.min_period;
    let df = 1.0 / (search.oversampling.max(1.0) * span);
    let steps = ((f_max - f_min) / df).floor() as usize + 1;
    // Each point's phase rotation per step, and its sine and cosine at the first frequency.
    let tau = std::f64::consts::TAU;
    let (step_sin, step_cos): (Vec<f64>, Vec<f64>) =
        t.iter().map(|&ti| (tau * df * ti).sin_cos()).unzip();
    let (mut s, mut c): (Vec<f64>, Vec<f64>) =
        t.iter().map(|&ti| (tau * f_min * ti).sin_cos()).unzip();
    let mut powers = Vec::with_capacity(steps);
    for k in 0..steps {
        powers.push(power_at(&w, &y, &bands, &s, &c, chi0));
        for i in 0..n {
            let (si, ci) = (s[i], c[i]);
            s[i] = si * step_cos[i] + ci * step_sin[i];
            c[i] = ci * step_cos[i] - si * step_sin[i];
        }
        // The rotation's rounding grows slowly; a fresh start now and then keeps it small.
        if k % 512 == 511 {
            let next = f_min + (k + 1) as f64 * df;
            for i in 0..n {
                (s[i], c[i]) = (tau * next * t[i]).sin_cos();
            }
        }
    }
    // Well-measured light curves have peaks so sharp at the top that the grid can miss the
    // true one's summit by more than an alias's height: the highest few peaks are searched
    // again on a grid ten times finer.
    let mut peaks: Vec<usize> = (0..steps)
        .filter(|&k| {
            (k == 0 || powers[k] >= powers[k - 1]) && (k + 1 == steps || powers[k] >= powers[k + 1])
        })
        .collect();
    peaks.sort_by(|a, b| powers[*b].total_cmp(&powers[*a]));
    let mut best = (0.0, f_min);
    for &k in peaks.iter().take(REFINED_PEAKS) {
        for j in -FINE_STEPS..=FINE_STEPS {
            let f = f_min + (k as f64 + f64::from(j) / f64::from(FINE_STEPS)) * df;
            if f <= 0.0 {
                continue;
            }
            for i in 0..n {
                (s[i], c[i]) = (tau * f * t[i]).sin_cos();
            }
            let power = power_at(&w, &y, &bands, &s, &c, chi0);
            if power > best.0 {
                best = (power, f);
            }
        }
    }
    let (power, f) = best;
    Some(Periodicity {
        period: 1.0 / f,
        power,
        false_alarm_probability: baluev_fap(power, n, used_bands, f_max, &t, &w),
        n,
    })
}

/// The fraction of `chi0` a sinusoid with these sines and cosines explains, once each band's
/// data and sinusoid are centred on their weighted means.
fn power_at(w: &[f64], y: &[f64], bands: &[usize], s: &[f64], c: &[f64], chi0: f64) -> f64 {
    let mut m = [[0.0; 3]; BANDS.len()]; // per band: Σw, Σws, Σwc
    for i in 0..w.len() {
        let b = &mut m[bands[i]];
        b[0] += w[i];
        b[1] += w[i] * s[i];
        b[2] += w[i] * c[i];
    }
    let (mut ss, mut sc, mut cc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..w.len() {
        let b = &m[bands[i]];
        let si = s[i] - b[1] / b[0];
        let ci = c[i] - b[2] / b[0];
        let wi = w[i];
        ss += wi * si * si;
        sc += wi * si * ci;
        cc += wi * ci * ci;
        ys += wi * y[i] * si;
        yc += wi * y[i] * ci;
    }
    let det = ss * cc - sc * sc;
    if det <= 1e-12 * ss.max(cc).powi(2) {
        return 0.0;
    }
    // The least-squares amplitudes, and the chi-square they remove.
    let a = (ys * cc - yc * sc) / det;
    let b = (yc * ss - ys * sc) / det;
    ((a * ys + b * yc) / chi0).clamp(0.0, 1.0)
}

/// Baluev's (2008) bound on the false-alarm probability of a peak of normalised power `z`
/// over frequencies up to `f_max`, for `n` points fitted with `bands` means and a sinusoid.
fn baluev_fap(z: f64, n: usize, bands: usize, f_max: f64, t: &[f64], w: &[f64]) -> f64 {
    let nh = (n - bands) as f64;
    let nk = nh - 2.0;
    if nk <= 0.0 || z >= 1.0 {
        return 0.0;
    }
    // The single-frequency probability, and the effective number of independent peaks from
    // the weighted spread of the times.
    let single = (1.0 - z).powf(nk / 2.0);
    let sw: f64 = w.iter().sum();
    let mean = t.iter().zip(w).map(|(t, w)| t * w).sum::<f64>() / sw;
    let var = t
        .iter()
        .zip(w)
        .map(|(t, w)| w * (t - mean).powi(2))
        .sum::<f64>()
        / sw;
    let effective_width = (4.0 * std::f64::consts::PI * var).sqrt();
    let gamma = (2.0 / nh).sqrt() * gamma_ratio(nh / 2.0);
    let tau =
        gamma * effective_width * f_max * (1.0 - z).powf((nk - 1.0) / 2.0) * (0.5 * nh * z).sqrt();
    (1.0 - (1.0 - single) * (-tau).exp()).clamp(0.0, 1.0)
}

/// Γ(x) / Γ(x − ½), by logarithms.
fn gamma_ratio(x: f64) -> f64 {
    (ln_gamma(x) - ln_gamma(x - 0.5)).exp()
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A season's sampling: a couple of visits on most nights, in two bands.
    fn light_curve(period: f64, amplitude: f64, noise: f64, seed: u64) -> Vec<Sample> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        for night in 0..60 {
            if rng.random_bool(0.3) {
                continue;
            }
            for _ in 0..2 {
                let mjd = 61_000.0 + night as f64 + rng.random_range(0.0..0.3);
                let band = if rng.random_bool(0.5) { 1 } else { 2 };
                let mean = if band == 1 { 1000.0 } else { 1500.0 };
                let phase = std::f64::consts::TAU * mjd / period;
                let gauss: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
                out.push(Sample {
                    mjd,
                    band,
                    flux: mean * (1.0 + amplitude * phase.sin()) + noise * gauss,
                    err: noise,
                });
            }
        }
        out
    }

    #[test]
    fn finds_the_period_of_a_sinusoid_across_bands() {
        for (period, seed) in [(0.37, 1), (2.9, 2), (7.5, 3)] {
            let lc = light_curve(period, 0.2, 30.0, seed);
            let p = periodicity(&lc, &PeriodSearch::default()).unwrap();
            assert!(
                (p.period - period).abs() / period < 0.01,
                "period {period}: found {p:?}"
            );
            assert!(p.power > 0.5, "{p:?}");
            assert!(p.false_alarm_probability < 1e-6, "{p:?}");
            assert_eq!(p.n, lc.len());
        }
    }

    #[test]
    fn noise_has_no_significant_period() {
        let lc = light_curve(1.0, 0.0, 30.0, 4);
        let p = periodicity(&lc, &PeriodSearch::default()).unwrap();
        assert!(p.false_alarm_probability > 0.01, "{p:?}");
        assert!(p.power < 0.3, "{p:?}");
    }

    #[test]
    fn band_offsets_are_no_variability() {
        // Constant in each band, at very different levels, with noise: nothing periodic.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut lc = light_curve(1.0, 0.0, 30.0, 5);
        for s in &mut lc {
            let gauss: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
            s.flux = if s.band == 1 { 10.0 } else { 50_000.0 } + 30.0 * gauss;
        }
        let p = periodicity(&lc, &PeriodSearch::default()).unwrap();
        assert!(p.false_alarm_probability > 0.01, "{p:?}");
    }

    #[test]
    fn too_little_data_gives_no_answer() {
        let lc = light_curve(1.0, 0.2, 30.0, 6);
        assert!(periodicity(&lc[..5], &PeriodSearch::default()).is_none());
        let same_night: Vec<Sample> = lc
            .iter()
            .map(|s| Sample {
                mjd: 61_000.0 + (s.mjd - 61_000.0) * 0.001,
                ..*s
            })
            .collect();
        assert!(periodicity(&same_night, &PeriodSearch::default()).is_none());
        let no_errors: Vec<Sample> = lc.iter().map(|s| Sample { err: 0.0, ..*s }).collect();
        assert!(periodicity(&no_errors, &PeriodSearch::default()).is_none());
    }

    #[test]
    fn ln_gamma_matches_known_values() {
        assert!((ln_gamma(1.0)).abs() < 1e-12);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }
}
