//! DALI request parameters: names case-insensitive, values as given, each name possibly
//! repeated; and the value syntaxes the image protocols share (numeric intervals with
//! open ends, and the POS/CIRCLE/POLYGON shapes).
use aster_adql::geometry::{Circle, Polygon, SkyPosition, SkyRegion};

#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), v))
                .collect(),
        }
    }

    /// Every value of `name` (upper case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of a single-valued parameter; repeating it is an error.
    pub fn single(&self, name: &str) -> Result<Option<&str>, String> {
        match self.all(name).as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => Err(format!("{name} is given more than once")),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(k, _)| k.as_str())
    }
}

/// A closed numeric interval; either end may be infinite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// Whether [a, b] shares a point with the interval.
    pub fn overlaps(&self, a: f64, b: f64) -> bool {
        a <= self.hi && b >= self.lo
    }
    pub fn contains(&self, v: f64) -> bool {
        v >= self.lo && v <= self.hi
    }
}

fn number(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        t => t.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

/// `lo hi` (DALI interval, ends may be -Inf/+Inf) or a single value v meaning [v, v].
pub fn interval(name: &str, text: &str) -> Result<Interval, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let nums: Option<Vec<f64>> = parts.iter().map(|p| number(p)).collect();
    match nums.as_deref() {
        Some([v]) if v.is_finite() => Ok(Interval { lo: *v, hi: *v }),
        Some([lo, hi]) if lo <= hi => Ok(Interval { lo: *lo, hi: *hi }),
        Some([_, _]) => Err(format!(
            "{name} '{text}': the lower bound exceeds the upper"
        )),
        _ => Err(format!(
            "{name} '{text}': expected a number or two numbers (lower upper; -Inf and +Inf allowed)"
        )),
    }
}

fn numbers(name: &str, text: &str) -> Result<Vec<f64>, String> {
    text.split_whitespace()
        .map(|t| {
            number(t)
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{name}: '{t}' is not a number"))
        })
        .collect()
}

fn position(name: &str, ra: f64, dec: f64) -> Result<SkyPosition, String> {
    SkyPosition::new(ra, dec)
        .filter(|_| (0.0..=360.0).contains(&ra))
        .ok_or_else(|| {
            format!("{name}: ({ra}, {dec}) is not a position (0 <= ra <= 360, -90 <= dec <= 90)")
        })
}

pub fn circle(name: &str, v: &[f64]) -> Result<SkyRegion, String> {
    let [ra, dec, r] = v else {
        return Err(format!("{name}: a circle takes ra dec radius (degrees)"));
    };
    if !(*r > 0.0 && *r <= 180.0) {
        return Err(format!(
            "{name}: the radius {r} must be in (0, 180] degrees"
        ));
    }
    let c = Circle::new(position(name, *ra, *dec)?, *r)
        .ok_or_else(|| format!("{name}: not a circle"))?;
    Ok(SkyRegion::Circle(c))
}

pub fn polygon(name: &str, v: &[f64]) -> Result<SkyRegion, String> {
    if v.len() < 6 || !v.len().is_multiple_of(2) {
        return Err(format!(
            "{name}: a polygon takes at least three ra dec pairs (degrees)"
        ));
    }
    let vertices = v
        .chunks_exact(2)
        .map(|c| position(name, c[0], c[1]))
        .collect::<Result<Vec<_>, _>>()?;
    let p = Polygon::new(vertices).ok_or_else(|| format!("{name}: not a polygon"))?;
    if p.area() <= 0.0 {
        return Err(format!("{name}: the polygon encloses no area"));
    }
    Ok(SkyRegion::Polygon(p))
}

/// A POS value: `CIRCLE ra dec r`, `RANGE ra1 ra2 dec1 dec2` or `POLYGON ra1 dec1 ...`.
/// A RANGE becomes a polygon whose edges follow its bounds (constant-declination edges
/// sampled every degree or less).
pub fn pos(text: &str) -> Result<SkyRegion, String> {
    let mut words = text.split_whitespace();
    let shape = words.next().unwrap_or_default().to_ascii_uppercase();
    let rest: Vec<&str> = words.collect();
    match shape.as_str() {
        "CIRCLE" => circle("POS", &numbers("POS", &rest.join(" "))?),
        "POLYGON" => polygon("POS", &numbers("POS", &rest.join(" "))?),
        "RANGE" => {
            let v: Option<Vec<f64>> = rest.iter().map(|t| number(t)).collect();
            let Some(&[ra1, ra2, dec1, dec2]) = v.as_deref() else {
                return Err(format!("POS '{text}': RANGE takes ra1 ra2 dec1 dec2"));
            };
            let (ra1, ra2) = (ra1.max(0.0), ra2.min(360.0));
            let (dec1, dec2) = (dec1.max(-90.0), dec2.min(90.0));
            if !(ra1 < ra2 && dec1 < dec2) {
                return Err(format!("POS '{text}': an empty range"));
            }
            if ra2 - ra1 >= 180.0 || dec2 - dec1 >= 180.0 {
                // Wider than a hemisphere: as a circle about the pole or the whole sky.
                let (dec_c, r) = if dec1 <= -90.0 && ra2 - ra1 >= 360.0 {
                    (-90.0, dec2 + 90.0)
                } else if dec2 >= 90.0 && ra2 - ra1 >= 360.0 {
                    (90.0, 90.0 - dec1)
                } else {
                    (0.0, 180.0)
                };
                return circle("POS", &[0.0, dec_c, r.clamp(1e-9, 180.0)]);
            }
            let steps = |a: f64, b: f64| ((b - a).ceil() as usize).max(1);
            let mut v = Vec::new();
            let n = steps(ra1, ra2);
            for i in 0..=n {
                v.extend([ra1 + (ra2 - ra1) * i as f64 / n as f64, dec1]);
            }
            for i in 0..=n {
                v.extend([ra2 - (ra2 - ra1) * i as f64 / n as f64, dec2]);
            }
            polygon("POS", &v)
        }
        _ => Err(format!(
            "POS '{text}': expected CIRCLE ra dec r, RANGE ra1 ra2 dec1 dec2 or POLYGON ra1 dec1 ..."
        )),
    }
}

/// CIRCLE, POLYGON or POS, whichever is given (SODA): a parameter's numbers parsed.
pub fn shape_param(name: &str, text: &str) -> Result<SkyRegion, String> {
    match name {
        "CIRCLE" => circle(name, &numbers(name, text)?),
        "POLYGON" => polygon(name, &numbers(name, text)?),
        _ => pos(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_shapes_parse_or_say_why_not() {
        assert_eq!(interval("BAND", "5e-7 6e-7").unwrap().hi, 6e-7);
        assert!(interval("BAND", "-Inf 6e-7").unwrap().contains(-1e300));
        assert!(interval("BAND", "5e-7 inf").unwrap().contains(1.0));
        assert_eq!(interval("TIME", "60000").unwrap().lo, 60000.0);
        assert!(interval("TIME", "2 1").is_err());
        assert!(interval("TIME", "a b").is_err());
        assert!(interval("TIME", "NaN").is_err());
        assert!(matches!(pos("CIRCLE 10 20 0.5"), Ok(SkyRegion::Circle(_))));
        assert!(matches!(pos("circle 10 20 0.5"), Ok(SkyRegion::Circle(_))));
        assert!(matches!(
            pos("POLYGON 10 20 11 20 11 21"),
            Ok(SkyRegion::Polygon(_))
        ));
        assert!(matches!(pos("RANGE 10 12 -5 5"), Ok(SkyRegion::Polygon(_))));
        assert!(matches!(
            pos("RANGE 0 360 89 +Inf"),
            Ok(SkyRegion::Circle(_))
        ));
        for bad in [
            "CIRCLE 10 20",
            "CIRCLE 10 95 1",
            "CIRCLE 10 20 -1",
            "BOX 1 2 3 4",
            "POLYGON 1 2 3 4",
            "RANGE 1 2 3",
            "",
            "CIRCLE 10 20 NaN",
        ] {
            assert!(pos(bad).is_err(), "{bad}");
        }
        let p = Params::new(vec![
            ("pos".into(), "a".into()),
            ("POS".into(), "b".into()),
            ("maxrec".into(), "1".into()),
        ]);
        assert_eq!(p.all("POS"), vec!["a", "b"]);
        assert!(p.single("POS").is_err());
        assert_eq!(p.single("MAXREC").unwrap(), Some("1"));
    }
}
