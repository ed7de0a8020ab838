//! Spherical geometry on the ICRS sphere: positions, the ADQL shapes (circle, polygon, box)
//! and the predicates and measures ADQL needs (distance, containment, area).
use std::f64::consts::PI;

/// A position on the celestial sphere, in degrees; only constructible in range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkyPosition {
    ra: f64,
    dec: f64,
}

impl SkyPosition {
    /// `ra` is wrapped into [0, 360); `dec` must lie in [-90, 90] and both must be finite.
    pub fn new(ra: f64, dec: f64) -> Option<Self> {
        if !ra.is_finite() || !dec.is_finite() || !(-90.0..=90.0).contains(&dec) {
            return None;
        }
        Some(Self {
            ra: ra.rem_euclid(360.0),
            dec,
        })
    }
    pub fn ra(&self) -> f64 {
        self.ra
    }
    pub fn dec(&self) -> f64 {
        self.dec
    }
    pub fn ra_rad(&self) -> f64 {
        self.ra.to_radians()
    }
    pub fn dec_rad(&self) -> f64 {
        self.dec.to_radians()
    }
    fn unit_vector(&self) -> [f64; 3] {
        let (sa, ca) = self.ra_rad().sin_cos();
        let (sd, cd) = self.dec_rad().sin_cos();
        [cd * ca, cd * sa, sd]
    }
    /// Great-circle distance in degrees (haversine: accurate at small separations).
    pub fn distance(&self, other: &SkyPosition) -> f64 {
        angular_distance_deg(self.ra, self.dec, other.ra, other.dec)
    }
}

/// Great-circle distance in degrees between two (ra, dec) pairs given in degrees.
pub fn angular_distance_deg(ra1: f64, dec1: f64, ra2: f64, dec2: f64) -> f64 {
    let (d1, d2) = (dec1.to_radians(), dec2.to_radians());
    let dd = d2 - d1;
    let da = (ra2 - ra1).to_radians();
    let h = (dd / 2.0).sin().powi(2) + d1.cos() * d2.cos() * (da / 2.0).sin().powi(2);
    (2.0 * h.sqrt().min(1.0).asin()).to_degrees()
}

/// A cone on the sky: centre and radius in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    pub center: SkyPosition,
    pub radius: f64,
}

impl Circle {
    pub fn new(center: SkyPosition, radius: f64) -> Option<Self> {
        (radius.is_finite() && (0.0..=180.0).contains(&radius)).then_some(Self { center, radius })
    }
    pub fn contains(&self, p: &SkyPosition) -> bool {
        self.center.distance(p) <= self.radius
    }
    /// Solid angle in square degrees.
    pub fn area(&self) -> f64 {
        2.0 * PI * (1.0 - self.radius.to_radians().cos()) * (180.0 / PI).powi(2)
    }
}

/// A spherical polygon with great-circle edges; vertices in order (either orientation).
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    vertices: Vec<SkyPosition>,
}

impl Polygon {
    /// At least three vertices.
    pub fn new(vertices: Vec<SkyPosition>) -> Option<Self> {
        (vertices.len() >= 3).then_some(Self { vertices })
    }

    /// ADQL BOX: centre, full width along RA and full height along Dec, with edges
    /// as great circles through the corners (as ADQL 2.0 defines it).
    pub fn from_box(center: SkyPosition, width: f64, height: f64) -> Option<Self> {
        if !(width.is_finite() && height.is_finite() && width > 0.0 && height > 0.0) {
            return None;
        }
        let (hw, hh) = (width / 2.0, height / 2.0);
        let dec_lo = (center.dec() - hh).max(-90.0);
        let dec_hi = (center.dec() + hh).min(90.0);
        let scale = |dec: f64| {
            let c = dec.to_radians().cos();
            if c > 1e-9 { hw / c } else { 180.0 }
        };
        let corner = |dra: f64, dec: f64| SkyPosition::new(center.ra() + dra, dec);
        Self::new(vec![
            corner(-scale(dec_lo), dec_lo)?,
            corner(scale(dec_lo), dec_lo)?,
            corner(scale(dec_hi), dec_hi)?,
            corner(-scale(dec_hi), dec_hi)?,
        ])
    }

    pub fn vertices(&self) -> &[SkyPosition] {
        &self.vertices
    }

    /// Point in spherical polygon: the winding of edge cross products around the
    /// point, computed in 3-D so the RA wrap at 0/360 and the poles need no special case.
    pub fn contains(&self, p: &SkyPosition) -> bool {
        let q = p.unit_vector();
        let vs: Vec<[f64; 3]> = self.vertices.iter().map(SkyPosition::unit_vector).collect();
        let n = vs.len();
        // Sum of signed angles subtended by each edge as seen from q.
        let mut total = 0.0;
        for i in 0..n {
            let a = sub(vs[i], scale3(q, dot(vs[i], q)));
            let b = sub(vs[(i + 1) % n], scale3(q, dot(vs[(i + 1) % n], q)));
            let cross_ab = cross(a, b);
            let sin = dot(cross_ab, q);
            let cos = dot(a, b);
            total += sin.atan2(cos);
        }
        // Projection perpendicular to q cannot tell q from its antipode: the point must
        // also lie on the polygon's side of the sphere (polygons are below a hemisphere).
        let mut c = [0.0; 3];
        for v in &vs {
            c = add(c, *v);
        }
        total.abs() > PI && dot(c, q) > 0.0
    }

    /// Solid angle in square degrees, from the spherical excess; the smaller of
    /// the two regions the boundary splits the sphere into.
    pub fn area(&self) -> f64 {
        let vs: Vec<[f64; 3]> = self.vertices.iter().map(SkyPosition::unit_vector).collect();
        let n = vs.len();
        let mut excess = 0.0;
        // Triangulate from vertex 0 with the Van Oosterom-Strackee formula.
        for i in 1..n - 1 {
            let (a, b, c) = (vs[0], vs[i], vs[i + 1]);
            let num = dot(a, cross(b, c));
            let den = 1.0 + dot(a, b) + dot(b, c) + dot(c, a);
            excess += 2.0 * num.atan2(den);
        }
        let sr = excess.abs().min(4.0 * PI - excess.abs());
        sr * (180.0 / PI).powi(2)
    }

    pub fn centroid(&self) -> SkyPosition {
        let mut s = [0.0; 3];
        for v in &self.vertices {
            s = add(s, v.unit_vector());
        }
        let norm = dot(s, s).sqrt();
        if norm < 1e-15 {
            return self.vertices[0];
        }
        let dec = (s[2] / norm).clamp(-1.0, 1.0).asin().to_degrees();
        let ra = s[1].atan2(s[0]).to_degrees();
        SkyPosition::new(ra, dec).unwrap_or(self.vertices[0])
    }
}

impl Polygon {
    /// Whether the two polygons share a point: a vertex of one inside the other, or two
    /// edges crossing.
    pub fn intersects(&self, other: &Polygon) -> bool {
        if self.vertices.iter().any(|v| other.contains(v))
            || other.vertices.iter().any(|v| self.contains(v))
        {
            return true;
        }
        let edges = |p: &Polygon| -> Vec<([f64; 3], [f64; 3])> {
            let vs: Vec<[f64; 3]> = p.vertices.iter().map(SkyPosition::unit_vector).collect();
            (0..vs.len())
                .map(|i| (vs[i], vs[(i + 1) % vs.len()]))
                .collect()
        };
        let mine = edges(self);
        edges(other)
            .iter()
            .any(|&(c, d)| mine.iter().any(|&(a, b)| arcs_cross(a, b, c, d)))
    }

    /// The smallest angular distance (degrees) from `p` to the polygon's boundary.
    pub fn boundary_distance(&self, p: &SkyPosition) -> f64 {
        let q = p.unit_vector();
        let vs: Vec<[f64; 3]> = self.vertices.iter().map(SkyPosition::unit_vector).collect();
        (0..vs.len())
            .map(|i| arc_distance(q, vs[i], vs[(i + 1) % vs.len()]))
            .fold(f64::INFINITY, f64::min)
    }
}

impl Circle {
    /// Whether the circle and the polygon share a point.
    pub fn intersects_polygon(&self, p: &Polygon) -> bool {
        p.contains(&self.center) || p.boundary_distance(&self.center) <= self.radius
    }
}

fn normalize(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(a, a).sqrt();
    (n > 1e-300).then(|| scale3(a, 1.0 / n))
}

/// Whether `x` (on the great circle through a and b, with pole n = a x b) lies on the
/// shorter arc from a to b.
fn on_arc(x: [f64; 3], a: [f64; 3], b: [f64; 3], n: [f64; 3]) -> bool {
    dot(cross(a, x), n) >= 0.0 && dot(cross(x, b), n) >= 0.0
}

/// Whether the great-circle arcs a-b and c-d cross.
fn arcs_cross(a: [f64; 3], b: [f64; 3], c: [f64; 3], d: [f64; 3]) -> bool {
    let (n1, n2) = (cross(a, b), cross(c, d));
    let Some(t) = normalize(cross(n1, n2)) else {
        return false; // the same great circle: overlapping arcs share a vertex inside
    };
    [t, scale3(t, -1.0)]
        .into_iter()
        .any(|x| on_arc(x, a, b, n1) && on_arc(x, c, d, n2))
}

/// Angular distance (degrees) from the unit vector q to the arc a-b.
fn arc_distance(q: [f64; 3], a: [f64; 3], b: [f64; 3]) -> f64 {
    let angle = |u: [f64; 3], v: [f64; 3]| {
        dot(cross(u, v), cross(u, v))
            .sqrt()
            .atan2(dot(u, v))
            .to_degrees()
    };
    let ends = angle(q, a).min(angle(q, b));
    let Some(n) = normalize(cross(a, b)) else {
        return ends;
    };
    let Some(x) = normalize(sub(q, scale3(n, dot(q, n)))) else {
        return ends; // q is a pole of the arc's circle: 90 degrees from every point of it
    };
    if on_arc(x, a, b, n) {
        dot(q, n).abs().clamp(0.0, 1.0).asin().to_degrees()
    } else {
        ends
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn scale3(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// A region of the sky a query restricts rows to, as recognised in its WHERE clause;
/// the catalog store turns it into HEALPix coverage to skip partitions.
#[derive(Debug, Clone, PartialEq)]
pub enum SkyRegion {
    Circle(Circle),
    Polygon(Polygon),
}

impl SkyRegion {
    pub fn contains(&self, p: &SkyPosition) -> bool {
        match self {
            SkyRegion::Circle(c) => c.contains(p),
            SkyRegion::Polygon(poly) => poly.contains(p),
        }
    }

    /// Whether the region and the polygon share a point.
    pub fn intersects(&self, p: &Polygon) -> bool {
        match self {
            SkyRegion::Circle(c) => c.intersects_polygon(p),
            SkyRegion::Polygon(poly) => poly.intersects(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(ra: f64, dec: f64) -> SkyPosition {
        SkyPosition::new(ra, dec).unwrap()
    }

    #[test]
    fn distance_is_haversine_and_symmetric() {
        assert!((angular_distance_deg(0.0, 0.0, 90.0, 0.0) - 90.0).abs() < 1e-12);
        assert!((angular_distance_deg(10.0, 89.0, 190.0, 89.0) - 2.0).abs() < 1e-9);
        let d = pos(359.99, 0.0).distance(&pos(0.01, 0.0));
        assert!((d - 0.02).abs() < 1e-9);
    }

    #[test]
    fn positions_are_validated() {
        assert!(SkyPosition::new(10.0, 91.0).is_none());
        assert!(SkyPosition::new(f64::NAN, 0.0).is_none());
        assert_eq!(SkyPosition::new(-10.0, 0.0).unwrap().ra(), 350.0);
    }

    #[test]
    fn shapes_intersect_only_where_they_meet() {
        let square = |ra: f64, dec: f64, h: f64| {
            Polygon::new(vec![
                pos(ra - h, dec - h),
                pos(ra + h, dec - h),
                pos(ra + h, dec + h),
                pos(ra - h, dec + h),
            ])
            .unwrap()
        };
        let a = square(10.0, 0.0, 1.0);
        // A cross through the middle: no vertex of either inside the other.
        let wide = Polygon::new(vec![
            pos(8.0, -0.2),
            pos(12.0, -0.2),
            pos(12.0, 0.2),
            pos(8.0, 0.2),
        ])
        .unwrap();
        let tall = Polygon::new(vec![
            pos(9.8, -2.0),
            pos(10.2, -2.0),
            pos(10.2, 2.0),
            pos(9.8, 2.0),
        ])
        .unwrap();
        assert!(wide.intersects(&tall) && tall.intersects(&wide));
        assert!(a.intersects(&square(11.5, 0.0, 1.0)));
        assert!(!a.intersects(&square(12.5, 0.0, 1.0)));
        assert!(square(359.5, 0.0, 1.0).intersects(&square(1.0, 0.0, 1.0)));
        // A circle beside an edge, its centre outside: it meets the square only when the
        // radius reaches the edge at ra 11.
        let c = |r: f64| Circle::new(pos(11.3, 0.0), r).unwrap();
        assert!(c(0.31).intersects_polygon(&a));
        assert!(!c(0.29).intersects_polygon(&a));
        // Near a corner the nearest point is the vertex.
        let corner = pos(11.0, 1.0);
        let near = pos(11.2, 1.2);
        let d = near.distance(&corner);
        assert!(Circle::new(near, d + 1e-6).unwrap().intersects_polygon(&a));
        assert!(!Circle::new(near, d - 1e-3).unwrap().intersects_polygon(&a));
        assert!(
            Circle::new(pos(10.0, 0.0), 0.01)
                .unwrap()
                .intersects_polygon(&a)
        );
    }

    #[test]
    fn polygon_contains_across_ra_wrap() {
        let p = Polygon::new(vec![
            pos(359.0, -1.0),
            pos(1.0, -1.0),
            pos(1.0, 1.0),
            pos(359.0, 1.0),
        ])
        .unwrap();
        assert!(p.contains(&pos(0.0, 0.0)));
        assert!(p.contains(&pos(359.5, 0.5)));
        assert!(!p.contains(&pos(2.0, 0.0)));
        assert!(!p.contains(&pos(180.0, 0.0)));
        // Reversed orientation gives the same answer.
        let mut v = p.vertices().to_vec();
        v.reverse();
        assert!(Polygon::new(v).unwrap().contains(&pos(0.0, 0.0)));
    }

    #[test]
    fn areas_match_closed_forms() {
        let c = Circle::new(pos(0.0, 0.0), 1.0).unwrap();
        assert!((c.area() - 3.14155).abs() < 1e-3);
        // An octant is 1/8 of the sphere: 41252.96/8 square degrees.
        let oct = Polygon::new(vec![pos(0.0, 0.0), pos(90.0, 0.0), pos(0.0, 90.0)]).unwrap();
        assert!((oct.area() - 41252.961 / 8.0).abs() < 0.01);
        let b = Polygon::from_box(pos(10.0, 0.0), 2.0, 2.0).unwrap();
        assert!((b.area() - 4.0).abs() < 0.01);
    }
}
