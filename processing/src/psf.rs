//! Point-spread functions that vary over an image (DMS-REQ-0070): an elliptical Gaussian
//! whose second moments are polynomials in position, evaluable at any point as a normalised
//! kernel image. Characterisation fits it from star candidates; detection, measurement and
//! difference imaging evaluate it.
use crate::image::Image;

/// A polynomial in position over an image, in coordinates scaled to [-1, 1] across it so
/// coefficients stay comparable whatever the image size.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPolynomial {
    order: usize,
    /// Coefficients of u^i v^j in the order (0,0), (1,0), (0,1), (2,0), (1,1), (0,2), ...
    coeffs: Vec<f64>,
}

impl FieldPolynomial {
    /// Number of coefficients of a polynomial of total degree `order`.
    pub fn terms(order: usize) -> usize {
        (order + 1) * (order + 2) / 2
    }

    pub fn new(order: usize, coeffs: Vec<f64>) -> Option<Self> {
        (coeffs.len() == Self::terms(order) && coeffs.iter().all(|c| c.is_finite()))
            .then_some(Self { order, coeffs })
    }

    /// A constant.
    pub fn constant(value: f64) -> Self {
        Self {
            order: 0,
            coeffs: vec![value],
        }
    }

    pub fn order(&self) -> usize {
        self.order
    }
    pub fn coeffs(&self) -> &[f64] {
        &self.coeffs
    }

    /// The value at scaled coordinates (u, v).
    pub fn eval(&self, u: f64, v: f64) -> f64 {
        let mut k = 0;
        let mut sum = 0.0;
        for degree in 0..=self.order {
            for j in 0..=degree {
                let i = degree - j;
                sum += self.coeffs[k] * u.powi(i as i32) * v.powi(j as i32);
                k += 1;
            }
        }
        sum
    }
}

/// Second moments of a PSF in pixels²: Ixx, Iyy, Ixy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub ixx: f64,
    pub iyy: f64,
    pub ixy: f64,
}

impl Moments {
    /// Whether the moments describe an ellipse (positive definite).
    pub fn is_valid(&self) -> bool {
        self.ixx > 0.0 && self.iyy > 0.0 && self.ixx * self.iyy > self.ixy * self.ixy
    }
    /// The determinant radius (Ixx Iyy − Ixy²)^¼, in pixels.
    pub fn determinant_radius(&self) -> f64 {
        (self.ixx * self.iyy - self.ixy * self.ixy).sqrt().sqrt()
    }
    /// FWHM of the equivalent circular Gaussian, pixels.
    pub fn fwhm(&self) -> f64 {
        2.0 * (2.0 * std::f64::consts::LN_2).sqrt() * self.determinant_radius()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PsfError {
    #[error("the PSF moments at ({x:.1}, {y:.1}) are not those of an ellipse")]
    NotPositive { x: f64, y: f64 },
    #[error("kernel half-size {0} is too large")]
    TooLarge(usize),
}

/// An elliptical Gaussian PSF whose moments vary over a `width` x `height` image.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianPsf {
    width: usize,
    height: usize,
    pub ixx: FieldPolynomial,
    pub iyy: FieldPolynomial,
    pub ixy: FieldPolynomial,
}

impl GaussianPsf {
    pub fn new(
        width: usize,
        height: usize,
        ixx: FieldPolynomial,
        iyy: FieldPolynomial,
        ixy: FieldPolynomial,
    ) -> Self {
        Self {
            width,
            height,
            ixx,
            iyy,
            ixy,
        }
    }

    /// A round PSF of the given FWHM (pixels) everywhere.
    pub fn constant_fwhm(width: usize, height: usize, fwhm: f64) -> Self {
        let sigma = fwhm / (2.0 * (2.0 * std::f64::consts::LN_2).sqrt());
        Self::new(
            width,
            height,
            FieldPolynomial::constant(sigma * sigma),
            FieldPolynomial::constant(sigma * sigma),
            FieldPolynomial::constant(0.0),
        )
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }

    fn scaled(&self, x: f64, y: f64) -> (f64, f64) {
        let s = |p: f64, n: usize| {
            if n > 1 {
                2.0 * p / (n - 1) as f64 - 1.0
            } else {
                0.0
            }
        };
        (s(x, self.width), s(y, self.height))
    }

    /// The moments at pixel position (x, y).
    pub fn moments_at(&self, x: f64, y: f64) -> Moments {
        let (u, v) = self.scaled(x, y);
        Moments {
            ixx: self.ixx.eval(u, v),
            iyy: self.iyy.eval(u, v),
            ixy: self.ixy.eval(u, v),
        }
    }

    /// The PSF at (x, y) as a (2 half + 1)² kernel summing to 1, centred on the pixel
    /// nearest (x, y) and shifted by the sub-pixel offset, each pixel the Gaussian
    /// integrated over its area (sampled 4 x 4).
    pub fn kernel_at(&self, x: f64, y: f64, half: usize) -> Result<Image<f32>, PsfError> {
        if half > 256 {
            return Err(PsfError::TooLarge(half));
        }
        let m = self.moments_at(x, y);
        if !m.is_valid() {
            return Err(PsfError::NotPositive { x, y });
        }
        let det = m.ixx * m.iyy - m.ixy * m.ixy;
        let (a, b, c) = (m.iyy / det, -m.ixy / det, m.ixx / det);
        let (dx, dy) = (x - x.round(), y - y.round());
        let n = 2 * half + 1;
        const SUB: usize = 4;
        let h = 1.0 / SUB as f64;
        // Sample k of a row (and of a column) of the sub-pixel grid, from the kernel's
        // lower-left corner.
        let at = |k: usize, d: f64| -(half as f64) - d - 0.5 + (k as f64 + 0.5) * h;
        let samples = n * SUB;
        let mut values = vec![0.0f64; n * n];
        let q = (-a * h * h).exp();
        for sj in 0..samples {
            let py = at(sj, dy);
            let row = &mut values[(sj / SUB) * n..(sj / SUB + 1) * n];
            // Along a row the exponent is a parabola in px: from the sample nearest its
            // peak, each neighbour is the last times a ratio that itself changes by the
            // constant factor q, so a row costs three exponentials, not one a sample; going
            // outward the values only fall, so an underflow to zero is their true value.
            let f = |px: f64| -0.5 * (a * px * px + 2.0 * b * px * py + c * py * py);
            let peak = ((-b * py / a - at(0, dx)) / h).round();
            let k0 = peak.clamp(0.0, (samples - 1) as f64) as usize;
            let p0 = at(k0, dx);
            let g0 = f(p0).exp();
            row[k0 / SUB] += g0;
            let (mut g, mut r) = (g0, (-0.5 * a * h * (2.0 * p0 + h) - b * py * h).exp());
            for k in k0 + 1..samples {
                g *= r;
                r *= q;
                row[k / SUB] += g;
            }
            let (mut g, mut r) = (g0, (0.5 * a * h * (2.0 * p0 - h) + b * py * h).exp());
            for k in (0..k0).rev() {
                g *= r;
                r *= q;
                row[k / SUB] += g;
            }
        }
        let total: f64 = values.iter().sum();
        let data = values.into_iter().map(|v| (v / total) as f32).collect();
        Ok(Image::from_vec(n, n, data).expect("n x n values"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomials_evaluate_in_scaled_coordinates() {
        // 1 + 2u + 3v + 4u² + 5uv + 6v²
        let p = FieldPolynomial::new(2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(p.eval(0.0, 0.0), 1.0);
        assert_eq!(p.eval(1.0, 1.0), 21.0);
        assert_eq!(p.eval(-1.0, 0.5), 1.0 - 2.0 + 1.5 + 4.0 - 2.5 + 1.5);
        assert!(FieldPolynomial::new(2, vec![1.0; 5]).is_none());
    }

    #[test]
    fn kernels_are_normalised_centred_and_vary_over_the_field() {
        let psf = GaussianPsf::new(
            4096,
            4096,
            // Seeing worsens towards the +x edge.
            FieldPolynomial::new(1, vec![4.0, 1.0, 0.0]).unwrap(),
            FieldPolynomial::new(1, vec![4.0, 1.0, 0.0]).unwrap(),
            FieldPolynomial::constant(0.0),
        );
        let k = psf.kernel_at(2047.5, 100.0, 12).unwrap();
        let sum: f64 = k.data().iter().map(|&v| f64::from(v)).sum();
        assert!((sum - 1.0).abs() < 1e-5);
        // Centroid at the sub-pixel offset (+0.5 px in x from the central pixel 2048 ... ).
        let (mut cx, mut cy) = (0.0, 0.0);
        for j in 0..k.height() {
            for i in 0..k.width() {
                let v = f64::from(k.get(i, j).unwrap());
                cx += v * (i as f64 - 12.0);
                cy += v * (j as f64 - 12.0);
            }
        }
        assert!(
            (cx - (2047.5 - 2048.0)).abs() < 1e-3 && cy.abs() < 1e-3,
            "{cx} {cy}"
        );
        let left = psf.moments_at(0.0, 2000.0).fwhm();
        let right = psf.moments_at(4095.0, 2000.0).fwhm();
        assert!(right > left * 1.2, "{left} {right}");
        assert!(
            (GaussianPsf::constant_fwhm(10, 10, 3.5)
                .moments_at(5.0, 5.0)
                .fwhm()
                - 3.5)
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn kernels_equal_the_gaussian_integrated_sample_by_sample() {
        // Elongated and tilted, off-centre, and narrow enough that the corners underflow.
        let m = Moments {
            ixx: 3.0,
            iyy: 1.2,
            ixy: 0.9,
        };
        for (x, y, half, m) in [
            (10.3, 20.7, 7, m),
            (
                5.5,
                5.49,
                40,
                Moments {
                    ixx: 0.3,
                    iyy: 0.25,
                    ixy: -0.1,
                },
            ),
        ] {
            let psf = GaussianPsf::new(
                100,
                100,
                FieldPolynomial::constant(m.ixx),
                FieldPolynomial::constant(m.iyy),
                FieldPolynomial::constant(m.ixy),
            );
            let k = psf.kernel_at(x, y, half).unwrap();
            let det = m.ixx * m.iyy - m.ixy * m.ixy;
            let (a, b, c) = (m.iyy / det, -m.ixy / det, m.ixx / det);
            let (dx, dy) = (x - f64::round(x), y - f64::round(y));
            let n = 2 * half + 1;
            let mut direct = vec![0.0f64; n * n];
            for j in 0..n {
                for i in 0..n {
                    for sj in 0..4 {
                        for si in 0..4 {
                            let px = i as f64 - half as f64 - dx + (si as f64 + 0.5) / 4.0 - 0.5;
                            let py = j as f64 - half as f64 - dy + (sj as f64 + 0.5) / 4.0 - 0.5;
                            direct[j * n + i] +=
                                (-0.5 * (a * px * px + 2.0 * b * px * py + c * py * py)).exp();
                        }
                    }
                }
            }
            let total: f64 = direct.iter().sum();
            for (got, want) in k.data().iter().zip(&direct) {
                let want = want / total;
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-6 * want.max(1e-3),
                    "{got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn impossible_shapes_are_refused() {
        let psf = GaussianPsf::new(
            100,
            100,
            FieldPolynomial::new(1, vec![1.0, 2.0, 0.0]).unwrap(),
            FieldPolynomial::constant(1.0),
            FieldPolynomial::constant(0.0),
        );
        assert_eq!(
            psf.kernel_at(0.0, 50.0, 5),
            Err(PsfError::NotPositive { x: 0.0, y: 50.0 })
        );
        assert!(psf.kernel_at(99.0, 50.0, 5).is_ok());
        assert_eq!(
            psf.kernel_at(99.0, 50.0, 1000),
            Err(PsfError::TooLarge(1000))
        );
    }
}
