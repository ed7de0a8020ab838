//! From pixel values to what a screen shows: a cut (the values mapped to black and white),
//! a stretch between them (linear, square root, logarithmic or asinh), and colour
//! composites of three bands by the asinh method of Lupton et al. (2004, PASP 116, 133),
//! which keeps the colour of bright objects instead of saturating them to white.

/// How values between the cut's ends map to grey levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stretch {
    Linear,
    Sqrt,
    Log,
    Asinh,
}

impl Stretch {
    pub const ALL: [Stretch; 4] = [Self::Linear, Self::Sqrt, Self::Log, Self::Asinh];

    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Sqrt => "sqrt",
            Self::Log => "log",
            Self::Asinh => "asinh",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// The grey level of `v` within `cut`; None for a missing value (NaN).
    pub fn level(self, v: f32, cut: Cut) -> Option<u8> {
        if !v.is_finite() {
            return None;
        }
        let t = ((v - cut.lo) / (cut.hi - cut.lo)).clamp(0.0, 1.0);
        let s = match self {
            Self::Linear => t,
            Self::Sqrt => t.sqrt(),
            Self::Log => (1.0 + 1000.0 * t).ln() / 1001f32.ln(),
            // Linear for the faintest tenth of the range, logarithmic above.
            Self::Asinh => (t / 0.1).asinh() / 10f32.asinh(),
        };
        Some((s * 255.0).round() as u8)
    }
}

impl Stretch {
    /// The grey levels of many values.
    pub fn levels(self, values: &[f32], cut: Cut) -> Vec<Option<u8>> {
        values.iter().map(|&v| self.level(v, cut)).collect()
    }
}

/// The values shown as black (`lo`) and white (`hi`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    lo: f32,
    hi: f32,
}

impl Cut {
    /// None unless both are finite and `hi` is above `lo`.
    pub fn new(lo: f32, hi: f32) -> Option<Self> {
        (lo.is_finite() && hi.is_finite() && hi > lo).then_some(Self { lo, hi })
    }
    pub fn lo(self) -> f32 {
        self.lo
    }
    pub fn hi(self) -> f32 {
        self.hi
    }

    /// The cut between two percentiles of the finite values (reordered in place).
    pub fn from_percentiles(values: &mut [f32], lo_pct: f64, hi_pct: f64) -> Option<Self> {
        let mut finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.len() < 2
            || !(0.0..100.0).contains(&lo_pct)
            || !(lo_pct < hi_pct && hi_pct <= 100.0)
        {
            return None;
        }
        let at = |p: f64, v: &mut Vec<f32>| {
            let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
            *v.select_nth_unstable_by(i, f32::total_cmp).1
        };
        let lo = at(lo_pct, &mut finite);
        let hi = at(hi_pct, &mut finite);
        Self::new(lo, hi).or_else(|| Self::new(lo, lo + 1.0))
    }
}

/// A Lupton asinh colour composite of three bands (red, green, blue in that order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColourComposite {
    /// Values taken as black, per band.
    pub minimum: [f32; 3],
    /// The linear range of the stretch, in band units.
    pub stretch: f32,
    /// The softening: higher shows faint structure brighter.
    pub q: f32,
    /// Per-band multipliers that balance the colours.
    pub scale: [f32; 3],
}

impl ColourComposite {
    /// The colour of one pixel; None where any band is missing.
    pub fn rgb(&self, bands: [f32; 3]) -> Option<[u8; 3]> {
        if bands.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let v: [f32; 3] =
            std::array::from_fn(|k| ((bands[k] - self.minimum[k]) * self.scale[k]).max(0.0));
        let intensity = (v[0] + v[1] + v[2]) / 3.0;
        if intensity <= 0.0 {
            return Some([0, 0, 0]);
        }
        let f = (self.q * intensity / self.stretch).asinh() / self.q;
        let mut c = v.map(|x| x * f / intensity);
        // Keep the hue of what would saturate.
        let max = c[0].max(c[1]).max(c[2]);
        if max > 1.0 {
            c = c.map(|x| x / max);
        }
        Some(c.map(|x| (x * 255.0).round() as u8))
    }
}

impl ColourComposite {
    /// The colours of pixels of three planes (red, green, blue; a plane may be missing):
    /// None where no plane has data, a missing value counting as zero where another has.
    pub fn compose(&self, planes: [Option<&[f32]>; 3], n: usize) -> Vec<Option<[u8; 3]>> {
        (0..n)
            .map(|i| {
                let v: [f32; 3] = std::array::from_fn(|k| planes[k].map_or(f32::NAN, |p| p[i]));
                if v.iter().all(|x| !x.is_finite()) {
                    return None;
                }
                self.rgb(v.map(|x| if x.is_finite() { x } else { 0.0 }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_run_from_black_to_white_across_the_cut_and_grow_with_the_value() {
        let cut = Cut::new(10.0, 110.0).unwrap();
        for s in Stretch::ALL {
            assert_eq!(s.level(0.0, cut), Some(0), "{s:?}");
            assert_eq!(s.level(500.0, cut), Some(255), "{s:?}");
            assert!(s.level(30.0, cut) < s.level(60.0, cut), "{s:?}");
            assert_eq!(s.level(f32::NAN, cut), None);
            assert_eq!(Stretch::parse(&s.name().to_uppercase()), Some(s));
        }
        // Non-linear stretches lift the faint end.
        assert!(Stretch::Asinh.level(20.0, cut) > Stretch::Linear.level(20.0, cut));
        assert!(Cut::new(1.0, 1.0).is_none());
    }

    #[test]
    fn percentile_cuts_ignore_missing_values() {
        let mut v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        v.push(f32::NAN);
        let c = Cut::from_percentiles(&mut v, 1.0, 99.0).unwrap();
        assert_eq!((c.lo(), c.hi()), (1.0, 99.0));
        assert!(Cut::from_percentiles(&mut [f32::NAN], 1.0, 99.0).is_none());
    }

    #[test]
    fn colour_composites_keep_the_hue_of_bright_objects() {
        let c = ColourComposite {
            minimum: [0.0; 3],
            stretch: 5.0,
            q: 8.0,
            scale: [1.0; 3],
        };
        let faint = c.rgb([2.0, 1.0, 0.5]).unwrap();
        let bright = c.rgb([2000.0, 1000.0, 500.0]).unwrap();
        assert!(faint[0] > faint[1] && faint[1] > faint[2]);
        assert_eq!(bright[0], 255);
        // The ratio of red to green stays two to one when bright.
        assert!((f32::from(bright[1]) - 127.5).abs() <= 1.0, "{bright:?}");
        assert_eq!(c.rgb([1.0, f32::NAN, 1.0]), None);
        assert_eq!(c.rgb([-1.0, -1.0, -1.0]), Some([0, 0, 0]));
        let red = [5.0, f32::NAN];
        let px = c.compose([Some(&red), None, None], 2);
        assert!(px[0].unwrap()[0] > 0 && px[0].unwrap()[1] == 0);
        assert_eq!(px[1], None);
    }
}
