//! Test support shared by the processing tests: deterministic normal deviates and fields
//! of stars drawn as a detector records them.
use crate::image::{Exposure, Image, Mask};

/// Deterministic standard normal deviates (Box-Muller over an LCG).
pub(crate) struct Normal(pub u64);

impl Normal {
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn next(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// The counts pixel (px, py) receives from a round Gaussian star of total `flux` and
/// width `sigma` at (x, y), integrated over the pixel (4 x 4 samples).
fn star_pixel(px: usize, py: usize, x: f64, y: f64, flux: f64, sigma: f64) -> f64 {
    let mut acc = 0.0;
    for sy in 0..4 {
        for sx in 0..4 {
            let dx = px as f64 - x + (sx as f64 + 0.5) / 4.0 - 0.5;
            let dy = py as f64 - y + (sy as f64 + 0.5) / 4.0 - 0.5;
            acc += (-0.5 * (dx * dx + dy * dy) / (sigma * sigma)).exp();
        }
    }
    flux * acc / 16.0 / (2.0 * std::f64::consts::PI * sigma * sigma)
}

/// An exposure of round Gaussian stars, (x, y, flux) each, drawn out to 7 sigma, plus
/// Gaussian noise of `noise` counts with the matching constant variance plane.
pub(crate) fn star_field(
    (w, h): (usize, usize),
    stars: &[(f64, f64, f64)],
    sigma: f64,
    noise: f64,
    rng: &mut Normal,
) -> Exposure {
    let mut data = vec![0.0f32; w * h];
    for (py, row) in data.chunks_mut(w).enumerate() {
        for (px, v) in row.iter_mut().enumerate() {
            let mut s = noise * rng.next();
            for &(x, y, f) in stars {
                if (px as f64 - x).hypot(py as f64 - y) <= 7.0 * sigma {
                    s += star_pixel(px, py, x, y, f, sigma);
                }
            }
            *v = s as f32;
        }
    }
    Exposure::new(
        Image::from_vec(w, h, data).expect("w x h pixels"),
        Mask::new(w, h),
        Image::filled(w, h, (noise * noise) as f32),
    )
    .expect("one shape")
}
