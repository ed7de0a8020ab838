//! Galaxy light profiles for the simulator: a Sersic de Vaucouleurs bulge (n = 4) and an
//! exponential disk (n = 1), each approximated by a mixture of concentric Gaussians fitted
//! once to the exact profile (non-negative least squares on the light in annuli). A Gaussian
//! mixture convolved with a Gaussian PSF stays a Gaussian mixture, so galaxies are drawn
//! exactly seeing-convolved without any numerical convolution.
use std::sync::OnceLock;

use crate::psf::Moments;

/// One Gaussian of a drawn profile: its share of the flux and its second moments, pixels².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Component {
    pub weight: f64,
    pub moments: Moments,
}

/// A circular Sersic profile of unit half-light radius as (weight, variance) pairs.
pub fn sersic_mixture(n: SersicIndex) -> &'static [(f64, f64)] {
    static DEV: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    static EXP: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    match n {
        SersicIndex::DeVaucouleurs => {
            DEV.get_or_init(|| fit_mixture(n.n(), 12, 1e-5, 12.0, n.truncation()))
        }
        SersicIndex::Exponential => {
            EXP.get_or_init(|| fit_mixture(n.n(), 8, 1e-3, 4.0, n.truncation()))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SersicIndex {
    DeVaucouleurs,
    Exponential,
}

impl SersicIndex {
    fn n(self) -> f64 {
        match self {
            Self::DeVaucouleurs => 4.0,
            Self::Exponential => 1.0,
        }
    }
    /// Radius (in half-light radii) beyond which the profile is cut, as photometric
    /// models do: the de Vaucouleurs wings would otherwise hold 10% of the light far out.
    fn truncation(self) -> f64 {
        match self {
            Self::DeVaucouleurs => 8.0,
            Self::Exponential => 5.0,
        }
    }
}

/// The shape of a simulated galaxy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Morphology {
    /// Half-light radius of the disk, pixels; the bulge's is half of it.
    pub disk_radius: f64,
    /// Fraction of the light in the bulge.
    pub bulge_fraction: f64,
    /// Minor-to-major axis ratio and position angle of the major axis from +x, radians.
    pub axis_ratio: f64,
    pub angle: f64,
}

impl Morphology {
    /// The Gaussian components of this galaxy seen through a PSF with moments `psf`.
    pub fn components(&self, psf: Moments) -> Vec<Component> {
        let mut out = Vec::new();
        for (part, fraction, radius) in [
            (
                SersicIndex::DeVaucouleurs,
                self.bulge_fraction,
                self.disk_radius / 2.0,
            ),
            (
                SersicIndex::Exponential,
                1.0 - self.bulge_fraction,
                self.disk_radius,
            ),
        ] {
            if fraction <= 0.0 {
                continue;
            }
            let (sn, cs) = self.angle.sin_cos();
            for &(w, var) in sersic_mixture(part) {
                let (a2, b2) = (
                    var * radius * radius / self.axis_ratio,
                    var * radius * radius * self.axis_ratio,
                );
                out.push(Component {
                    weight: fraction * w,
                    moments: Moments {
                        ixx: a2 * cs * cs + b2 * sn * sn + psf.ixx,
                        iyy: a2 * sn * sn + b2 * cs * cs + psf.iyy,
                        ixy: (a2 - b2) * sn * cs + psf.ixy,
                    },
                });
            }
        }
        out
    }
}

/// Sersic b_n: the half-light radius encloses half the light (Ciotti & Bertin expansion).
fn sersic_b(n: f64) -> f64 {
    2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25_515.0 * n * n)
}

/// Surface brightness of a unit-flux, unit-radius circular Sersic profile at radius r.
fn sersic(n: f64, r: f64) -> f64 {
    let b = sersic_b(n);
    let gamma_2n = gamma_integer_or_half(2.0 * n);
    let total = 2.0 * std::f64::consts::PI * n * b.exp() * b.powf(-2.0 * n) * gamma_2n;
    (-b * (r.powf(1.0 / n) - 1.0)).exp() / total
}

/// Γ(x) for the integer arguments used here.
fn gamma_integer_or_half(x: f64) -> f64 {
    (1..x.round() as u64).map(|k| k as f64).product()
}

/// Fits `k` Gaussians with variances spaced logarithmically over [v_min, v_max] to the
/// Sersic profile out to `r_max` half-light radii, weights non-negative, normalised to 1.
fn fit_mixture(n: f64, k: usize, v_min: f64, v_max: f64, r_max: f64) -> Vec<(f64, f64)> {
    let vars: Vec<f64> = (0..k)
        .map(|i| v_min * (v_max / v_min).powf(i as f64 / (k - 1) as f64))
        .collect();
    // Light in thin annuli: rows of the design matrix weighted by the annulus area, with
    // radii dense at the centre where the de Vaucouleurs cusp lives.
    let samples = 600;
    let mut gram = vec![0.0; k * k];
    let mut rhs = vec![0.0; k];
    for s in 0..samples {
        let t = (s as f64 + 0.5) / samples as f64;
        let r = r_max * t * t;
        let dr = r_max * 2.0 * t / samples as f64;
        let w = (2.0 * std::f64::consts::PI * r * dr).sqrt();
        let row: Vec<f64> = vars
            .iter()
            .map(|v| w * (-r * r / (2.0 * v)).exp() / (2.0 * std::f64::consts::PI * v))
            .collect();
        let target = w * sersic(n, r);
        for i in 0..k {
            rhs[i] += row[i] * target;
            for j in 0..k {
                gram[i * k + j] += row[i] * row[j];
            }
        }
    }
    let weights = nnls(&gram, &rhs, k);
    let total: f64 = weights.iter().sum();
    weights
        .iter()
        .zip(&vars)
        .filter(|(w, _)| **w > 0.0)
        .map(|(w, v)| (w / total, *v))
        .collect()
}

/// Lawson-Hanson non-negative least squares on the normal equations (`gram` k x k).
fn nnls(gram: &[f64], rhs: &[f64], k: usize) -> Vec<f64> {
    let mut x = vec![0.0; k];
    let mut passive = vec![false; k];
    let gradient = |x: &[f64]| -> Vec<f64> {
        (0..k)
            .map(|i| rhs[i] - (0..k).map(|j| gram[i * k + j] * x[j]).sum::<f64>())
            .collect()
    };
    for _ in 0..3 * k {
        let w = gradient(&x);
        let Some(j) = (0..k)
            .filter(|&j| {
                !passive[j] && w[j] > 1e-12 * rhs.iter().fold(0.0f64, |m, v| m.max(v.abs()))
            })
            .max_by(|&a, &b| w[a].total_cmp(&w[b]))
        else {
            break;
        };
        passive[j] = true;
        loop {
            let idx: Vec<usize> = (0..k).filter(|&i| passive[i]).collect();
            let sub: Vec<f64> = idx
                .iter()
                .flat_map(|&a| idx.iter().map(move |&b| gram[a * k + b]))
                .collect();
            let sub_rhs: Vec<f64> = idx.iter().map(|&a| rhs[a]).collect();
            let Some(s) = crate::linalg::solve(sub, sub_rhs) else {
                passive[j] = false;
                break;
            };
            if s.iter().all(|&v| v > 0.0) {
                for (&i, v) in idx.iter().zip(s) {
                    x[i] = v;
                }
                break;
            }
            // Step towards s as far as feasibility allows, and drop what reaches zero.
            let alpha = idx
                .iter()
                .zip(&s)
                .filter(|(_, v)| **v <= 0.0)
                .map(|(&i, v)| x[i] / (x[i] - v))
                .fold(1.0f64, f64::min);
            for (&i, v) in idx.iter().zip(&s) {
                x[i] += alpha * (v - x[i]);
                if x[i] <= 1e-15 {
                    x[i] = 0.0;
                    passive[i] = false;
                }
            }
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fraction of a circular mixture's light inside radius r.
    fn enclosed(mix: &[(f64, f64)], r: f64) -> f64 {
        mix.iter()
            .map(|(w, v)| w * (1.0 - (-r * r / (2.0 * v)).exp()))
            .sum()
    }

    /// Fraction of the truncated Sersic profile's light inside radius r (numerically).
    fn enclosed_exact(n: SersicIndex, r: f64) -> f64 {
        let light = |to: f64| -> f64 {
            let steps = 200_000;
            (0..steps)
                .map(|i| {
                    let x = (i as f64 + 0.5) / steps as f64 * to;
                    2.0 * std::f64::consts::PI * x * sersic(n.n(), x) * to / steps as f64
                })
                .sum()
        };
        light(r) / light(n.truncation())
    }

    #[test]
    fn mixtures_hold_the_light_where_the_profile_does() {
        for n in [SersicIndex::Exponential, SersicIndex::DeVaucouleurs] {
            let mix = sersic_mixture(n);
            assert!(mix.len() >= 4, "{n:?}: {mix:?}");
            assert!(mix.iter().all(|(w, _)| *w > 0.0));
            assert!((mix.iter().map(|m| m.0).sum::<f64>() - 1.0).abs() < 1e-12);
            for r in [0.25, 0.5, 1.0, 2.0, 4.0] {
                let (got, exact) = (enclosed(mix, r), enclosed_exact(n, r));
                assert!((got - exact).abs() < 0.02, "{n:?} r {r}: {got} vs {exact}");
            }
        }
        // Untruncated, the exponential holds half its light within r_e.
        assert!((enclosed(sersic_mixture(SersicIndex::Exponential), 1.0) - 0.5).abs() < 0.01);
        // The exponential's light within 2 r_e: 1 - (1 + x) e^-x at x = 2 b_1.
        let x = 2.0 * sersic_b(1.0);
        let exact = 1.0 - (1.0 + x) * (-x).exp();
        let got = enclosed(sersic_mixture(SersicIndex::Exponential), 2.0);
        assert!((got - exact).abs() < 0.01, "{got} vs {exact}");
    }

    #[test]
    fn mixture_follows_the_exponential_profile() {
        let mix = sersic_mixture(SersicIndex::Exponential);
        for r in [0.3, 0.6, 1.0, 1.5, 2.5] {
            let model: f64 = mix
                .iter()
                .map(|(w, v)| w * (-r * r / (2.0 * v)).exp() / (2.0 * std::f64::consts::PI * v))
                .sum();
            let exact = sersic(1.0, r);
            assert!(
                (model / exact - 1.0).abs() < 0.05,
                "r {r}: {model} vs {exact}"
            );
        }
    }

    #[test]
    fn convolution_adds_the_psf_moments() {
        let m = Morphology {
            disk_radius: 4.0,
            bulge_fraction: 0.3,
            axis_ratio: 0.5,
            angle: 0.4,
        };
        let psf = Moments {
            ixx: 2.0,
            iyy: 2.5,
            ixy: 0.1,
        };
        let comps = m.components(psf);
        let total: f64 = comps.iter().map(|c| c.weight).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!(
            comps
                .iter()
                .all(|c| c.moments.ixx >= psf.ixx && c.moments.is_valid())
        );
    }
}
