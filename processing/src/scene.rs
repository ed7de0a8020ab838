//! The expected light of the simulated sky on a pixel grid: stars as the PSF and galaxies
//! as their Gaussian-mixture profiles convolved with it, each integrated over pixel areas.
//! The calibrated-image renderer and the camera simulator both draw through it.
use crate::galaxy::Morphology;
use crate::psf::Moments;

/// A grid of expected signal, row-major, `width` x `height`.
pub struct Canvas<'a> {
    pub pixels: &'a mut [f64],
    pub width: usize,
    pub height: usize,
}

impl Canvas<'_> {
    /// Adds `flux` of a star (`morphology` None) or galaxy centred at (x, y), seen through
    /// a PSF of moments `psf`.
    pub fn draw(
        &mut self,
        x: f64,
        y: f64,
        flux: f64,
        morphology: Option<&Morphology>,
        psf: Moments,
    ) {
        match morphology {
            None => self.gaussian(x, y, flux, psf),
            Some(m) => {
                for c in m.components(psf) {
                    self.gaussian(x, y, flux * c.weight, c.moments);
                }
            }
        }
    }

    /// Adds an elliptical Gaussian of total `flux`, integrated over each pixel: sampled
    /// 3 x 3 where the Gaussian is narrow enough for that to matter, at the centre where
    /// it is wide (the error there is below 1% of the pixel's value).
    pub fn gaussian(&mut self, x: f64, y: f64, flux: f64, m: Moments) {
        let det = m.ixx * m.iyy - m.ixy * m.ixy;
        if det <= 0.0 || flux <= 0.0 || !x.is_finite() || !y.is_finite() {
            return;
        }
        let (a, b, c) = (m.iyy / det, -m.ixy / det, m.ixx / det);
        let reach = (5.0 * m.ixx.max(m.iyy).sqrt()).ceil() as i64;
        let norm = flux / (2.0 * std::f64::consts::PI * det.sqrt());
        let (w, h) = (self.width as i64, self.height as i64);
        let (cx, cy) = (x.round() as i64, y.round() as i64);
        let narrow = m.ixx.min(m.iyy) < 9.0;
        let offsets: &[f64] = if narrow {
            &[-1.0 / 3.0, 0.0, 1.0 / 3.0]
        } else {
            &[0.0]
        };
        let samples = (offsets.len() * offsets.len()) as f64;
        for py in (cy - reach).max(0)..=(cy + reach).min(h - 1) {
            for px in (cx - reach).max(0)..=(cx + reach).min(w - 1) {
                let mut acc = 0.0;
                for oy in offsets {
                    for ox in offsets {
                        let dx = px as f64 - x + ox;
                        let dy = py as f64 - y + oy;
                        acc += (-0.5 * (a * dx * dx + 2.0 * b * dx * dy + c * dy * dy)).exp();
                    }
                }
                self.pixels[py as usize * self.width + px as usize] += norm * acc / samples;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_flux_is_conserved_away_from_edges() {
        let mut px = vec![0.0; 100 * 100];
        let mut canvas = Canvas {
            pixels: &mut px,
            width: 100,
            height: 100,
        };
        let psf = Moments {
            ixx: 4.0,
            iyy: 4.0,
            ixy: 0.0,
        };
        canvas.draw(50.3, 49.7, 1000.0, None, psf);
        let galaxy = Morphology {
            disk_radius: 3.0,
            bulge_fraction: 0.3,
            axis_ratio: 0.6,
            angle: 1.0,
        };
        canvas.draw(50.0, 50.0, 500.0, Some(&galaxy), psf);
        let total: f64 = px.iter().sum();
        assert!((total - 1500.0).abs() < 15.0, "{total}");
    }
}
