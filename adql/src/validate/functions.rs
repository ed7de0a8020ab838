//! The function catalogue the validator knows: ADQL 2.1 built-ins (math,
//! trigonometry, strings, conditionals, units, aggregates, geometry) and the
//! Aster service functions. [`FUNCTIONS`] is the single source of truth, also
//! meant for generating the TAP capabilities document (`TAPRegExt`
//! `languageFeature` forms), and [`UserFunction`] carries extra functions a
//! caller declares at run time.

/// What a function computes, as `TAPRegExt` groups features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// One value per row.
    Scalar,
    /// One value per group (usable with GROUP BY).
    Aggregate,
    /// Geometry constructor or geometry function (ADQL section 4.2).
    Geometry,
}

/// The broad value type of a function argument or result, as far as a
/// database-free validator can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Any numeric type.
    Numeric,
    /// Character strings.
    Text,
    /// A POINT.
    Point,
    /// Another geometry (circle, box, polygon, region).
    Shape,
    /// Anything; the validator does not constrain it.
    Any,
}

/// Signature of one function known to the validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionSig {
    /// Name as documented; matching is case-insensitive.
    pub name: &'static str,
    /// Fewest arguments accepted.
    pub min_args: usize,
    /// Most arguments accepted (`usize::MAX` for variadic functions).
    pub max_args: usize,
    /// Scalar, aggregate or geometry.
    pub kind: FunctionKind,
    /// True for service-specific functions (`TAPRegExt` `features-udf`), false
    /// for functions defined by the ADQL 2.1 standard.
    pub udf: bool,
    /// What the arguments must be; geometry functions have richer per-position
    /// rules that the parser applies itself.
    pub args: ValueType,
    /// What the function returns.
    pub returns: ValueType,
    /// TAPRegExt-style form, e.g. `ivo_hasword(haystack TEXT, needle TEXT) -> INTEGER`.
    pub form: &'static str,
    /// One-line description for humans.
    pub description: &'static str,
}

impl FunctionSig {
    /// True when `n` arguments fit this signature's arity range.
    #[must_use]
    pub fn accepts_arity(&self, n: usize) -> bool {
        n >= self.min_args && n <= self.max_args
    }
}

/// Shorthand constructor so the table below stays one entry per line group.
#[allow(clippy::too_many_arguments)]
const fn sig(
    name: &'static str,
    min_args: usize,
    max_args: usize,
    kind: FunctionKind,
    udf: bool,
    args: ValueType,
    returns: ValueType,
    form: &'static str,
    description: &'static str,
) -> FunctionSig {
    FunctionSig {
        name,
        min_args,
        max_args,
        kind,
        udf,
        args,
        returns,
        form,
        description,
    }
}

use FunctionKind::{Aggregate, Geometry, Scalar};
use ValueType::{Any, Numeric, Point, Shape, Text};

const MANY: usize = usize::MAX;

/// Every function the validator accepts by name. CAST and CASE are not here:
/// they are syntax (`CAST(x AS type)`), not calls.
// One entry per line reads as a table; rustfmt would explode each call.
#[rustfmt::skip]
pub const FUNCTIONS: &[FunctionSig] = &[
    // --- ADQL 2.1 mathematical functions (section 2.3) ---
    sig("ABS", 1, 1, Scalar, false, Numeric, Numeric, "ABS(x DOUBLE) -> DOUBLE", "Absolute value of x."),
    sig("CEILING", 1, 1, Scalar, false, Numeric, Numeric, "CEILING(x DOUBLE) -> DOUBLE", "Smallest integer not less than x."),
    sig("DEGREES", 1, 1, Scalar, false, Numeric, Numeric, "DEGREES(x DOUBLE) -> DOUBLE", "Converts radians to degrees."),
    sig("EXP", 1, 1, Scalar, false, Numeric, Numeric, "EXP(x DOUBLE) -> DOUBLE", "Euler's number raised to the power x."),
    sig("FLOOR", 1, 1, Scalar, false, Numeric, Numeric, "FLOOR(x DOUBLE) -> DOUBLE", "Largest integer not greater than x."),
    sig("LOG", 1, 1, Scalar, false, Numeric, Numeric, "LOG(x DOUBLE) -> DOUBLE", "Natural logarithm of x."),
    sig("LOG10", 1, 1, Scalar, false, Numeric, Numeric, "LOG10(x DOUBLE) -> DOUBLE", "Base-10 logarithm of x."),
    sig("MOD", 2, 2, Scalar, false, Numeric, Numeric, "MOD(x DOUBLE, y DOUBLE) -> DOUBLE", "Remainder of x/y."),
    sig("PI", 0, 0, Scalar, false, Numeric, Numeric, "PI() -> DOUBLE", "The constant pi."),
    sig("POWER", 2, 2, Scalar, false, Numeric, Numeric, "POWER(x DOUBLE, y DOUBLE) -> DOUBLE", "x raised to the power y."),
    sig("RADIANS", 1, 1, Scalar, false, Numeric, Numeric, "RADIANS(x DOUBLE) -> DOUBLE", "Converts degrees to radians."),
    sig("RAND", 0, 1, Scalar, false, Numeric, Numeric, "RAND([seed INTEGER]) -> DOUBLE", "Random value between 0 and 1."),
    sig("ROUND", 1, 2, Scalar, false, Numeric, Numeric, "ROUND(x DOUBLE[, n INTEGER]) -> DOUBLE", "x rounded to n decimal places (default 0)."),
    sig("SQRT", 1, 1, Scalar, false, Numeric, Numeric, "SQRT(x DOUBLE) -> DOUBLE", "Positive square root of x."),
    sig("TRUNCATE", 1, 2, Scalar, false, Numeric, Numeric, "TRUNCATE(x DOUBLE[, n INTEGER]) -> DOUBLE", "x truncated to n decimal places (default 0)."),
    // --- ADQL 2.1 trigonometric functions ---
    sig("ACOS", 1, 1, Scalar, false, Numeric, Numeric, "ACOS(x DOUBLE) -> DOUBLE", "Arc cosine, in radians."),
    sig("ASIN", 1, 1, Scalar, false, Numeric, Numeric, "ASIN(x DOUBLE) -> DOUBLE", "Arc sine, in radians."),
    sig("ATAN", 1, 1, Scalar, false, Numeric, Numeric, "ATAN(x DOUBLE) -> DOUBLE", "Arc tangent, in radians."),
    sig("ATAN2", 2, 2, Scalar, false, Numeric, Numeric, "ATAN2(y DOUBLE, x DOUBLE) -> DOUBLE", "Polar angle of the point (x, y), in radians."),
    sig("COS", 1, 1, Scalar, false, Numeric, Numeric, "COS(x DOUBLE) -> DOUBLE", "Cosine of an angle in radians."),
    sig("COT", 1, 1, Scalar, false, Numeric, Numeric, "COT(x DOUBLE) -> DOUBLE", "Cotangent of an angle in radians."),
    sig("SIN", 1, 1, Scalar, false, Numeric, Numeric, "SIN(x DOUBLE) -> DOUBLE", "Sine of an angle in radians."),
    sig("TAN", 1, 1, Scalar, false, Numeric, Numeric, "TAN(x DOUBLE) -> DOUBLE", "Tangent of an angle in radians."),
    // --- ADQL 2.1 optional string, conditional and unit functions ---
    sig("LOWER", 1, 1, Scalar, false, Text, Text, "LOWER(s VARCHAR) -> VARCHAR", "s in lower case."),
    sig("UPPER", 1, 1, Scalar, false, Text, Text, "UPPER(s VARCHAR) -> VARCHAR", "s in upper case."),
    sig("COALESCE", 1, MANY, Scalar, false, Any, Any, "COALESCE(x, ...)", "First non-NULL argument."),
    sig("NULLIF", 2, 2, Scalar, false, Any, Any, "NULLIF(x, y)", "NULL when x equals y, else x."),
    sig("IN_UNIT", 2, 2, Scalar, false, Numeric, Numeric, "IN_UNIT(x DOUBLE, unit VARCHAR) -> DOUBLE", "x converted to the VOUnit given as a string literal."),
    // --- ADQL aggregate functions ---
    sig("AVG", 1, 1, Aggregate, false, Numeric, Numeric, "AVG([DISTINCT] x)", "Average of x over the group."),
    sig("COUNT", 1, 1, Aggregate, false, Any, Numeric, "COUNT(* | [DISTINCT] x)", "Number of rows, or of non-NULL x, in the group."),
    sig("MAX", 1, 1, Aggregate, false, Any, Any, "MAX([DISTINCT] x)", "Largest x in the group."),
    sig("MIN", 1, 1, Aggregate, false, Any, Any, "MIN([DISTINCT] x)", "Smallest x in the group."),
    sig("SUM", 1, 1, Aggregate, false, Numeric, Numeric, "SUM([DISTINCT] x)", "Sum of x over the group."),
    // --- ADQL 2.1 geometry (section 4.2) ---
    sig("AREA", 1, 1, Geometry, false, Shape, Numeric, "AREA(g GEOMETRY) -> DOUBLE", "Area of a geometry in square degrees."),
    sig("BOX", 3, 5, Geometry, false, Numeric, Shape, "BOX([coordsys,] ra, dec, width, height) -> BOX", "Box centred on a position (deprecated in ADQL 2.1)."),
    sig("CENTROID", 1, 1, Geometry, false, Shape, Point, "CENTROID(g GEOMETRY) -> POINT", "Centroid of a geometry."),
    sig("CIRCLE", 2, 4, Geometry, false, Numeric, Shape, "CIRCLE([coordsys,] ra, dec | point, radius) -> CIRCLE", "Circle from a centre and a radius in degrees."),
    sig("CONTAINS", 2, 2, Geometry, false, Shape, Numeric, "CONTAINS(a GEOMETRY, b GEOMETRY) -> INTEGER", "1 when a is within b, else 0."),
    sig("COORD1", 1, 1, Geometry, false, Point, Numeric, "COORD1(p POINT) -> DOUBLE", "First coordinate (longitude) of a point, in degrees."),
    sig("COORD2", 1, 1, Geometry, false, Point, Numeric, "COORD2(p POINT) -> DOUBLE", "Second coordinate (latitude) of a point, in degrees."),
    sig("COORDSYS", 1, 1, Geometry, false, Shape, Text, "COORDSYS(g GEOMETRY) -> VARCHAR", "Coordinate system of a geometry."),
    sig("DISTANCE", 2, 4, Geometry, false, Point, Numeric, "DISTANCE(p1 POINT, p2 POINT | ra1, dec1, ra2, dec2) -> DOUBLE", "Great-circle distance in degrees."),
    sig("INTERSECTS", 2, 2, Geometry, false, Shape, Numeric, "INTERSECTS(a GEOMETRY, b GEOMETRY) -> INTEGER", "1 when a and b overlap, else 0."),
    sig("POINT", 2, 3, Geometry, false, Numeric, Point, "POINT([coordsys,] ra, dec) -> POINT", "Point from two coordinates in degrees."),
    sig("POLYGON", 3, MANY, Geometry, false, Numeric, Shape, "POLYGON([coordsys,] ra1, dec1, ra2, dec2, ra3, dec3, ... | p1, p2, p3, ...) -> POLYGON", "Polygon from at least three vertices."),
    sig("REGION", 1, 1, Geometry, false, Text, Shape, "REGION(stcs VARCHAR) -> REGION", "Geometry from an STC-S string (deprecated in ADQL 2.1)."),
    // --- Aster service functions (user-defined functions in TAP terms) ---
    sig("ivo_healpix_index", 2, 3, Scalar, true, Any, Numeric, "ivo_healpix_index(hpxOrder INTEGER, ra DOUBLE, dec DOUBLE | p POINT) -> BIGINT", "Nested HEALPix index of a position at the given order."),
    sig("ivo_healpix_center", 2, 2, Geometry, true, Numeric, Point, "ivo_healpix_center(hpxOrder INTEGER, hpxIndex BIGINT) -> POINT", "Centre of a nested HEALPix cell."),
    sig("ivo_hasword", 2, 2, Scalar, true, Text, Numeric, "ivo_hasword(haystack TEXT, needle TEXT) -> INTEGER", "1 when needle occurs as a word in haystack, case-insensitively."),
    sig("ivo_nocasematch", 2, 2, Scalar, true, Text, Numeric, "ivo_nocasematch(value TEXT, pattern TEXT) -> INTEGER", "1 when value matches the LIKE pattern, ignoring case."),
    sig("ivo_string_agg", 2, 2, Aggregate, true, Text, Text, "ivo_string_agg(expr TEXT, delimiter TEXT) -> TEXT", "Concatenation of expr over the group, separated by delimiter."),
    sig("ivo_epoch_prop", 8, 8, Scalar, true, Numeric, Any, "ivo_epoch_prop(ra DOUBLE, dec DOUBLE, parallax DOUBLE, pmra DOUBLE, pmdec DOUBLE, radial_velocity DOUBLE, ref_epoch DOUBLE, out_epoch DOUBLE) -> DOUBLE[6]", "Full astrometry propagated from ref_epoch to out_epoch."),
    sig("ivo_epoch_prop_pos", 8, 8, Scalar, true, Numeric, Point, "ivo_epoch_prop_pos(ra DOUBLE, dec DOUBLE, parallax DOUBLE, pmra DOUBLE, pmdec DOUBLE, radial_velocity DOUBLE, ref_epoch DOUBLE, out_epoch DOUBLE) -> POINT", "Position propagated from ref_epoch to out_epoch."),
    sig("ivo_interval_overlaps", 4, 4, Scalar, true, Numeric, Numeric, "ivo_interval_overlaps(l1 DOUBLE, h1 DOUBLE, l2 DOUBLE, h2 DOUBLE) -> INTEGER", "1 when the intervals [l1, h1] and [l2, h2] overlap."),
    sig("nJy_to_abmag", 1, 1, Scalar, true, Numeric, Numeric, "nJy_to_abmag(flux DOUBLE) -> DOUBLE", "AB magnitude of a flux in nanojansky."),
    sig("nJy_to_abmag_err", 2, 2, Scalar, true, Numeric, Numeric, "nJy_to_abmag_err(flux DOUBLE, flux_err DOUBLE) -> DOUBLE", "AB magnitude error from a flux and its error in nanojansky."),
    sig("abmag_to_nJy", 1, 1, Scalar, true, Numeric, Numeric, "abmag_to_nJy(mag DOUBLE) -> DOUBLE", "Flux in nanojansky of an AB magnitude."),
    sig("ab_color", 2, 2, Scalar, true, Numeric, Numeric, "ab_color(flux1 DOUBLE, flux2 DOUBLE) -> DOUBLE", "AB colour m1 - m2 of two fluxes in nanojansky."),
    sig("reduced_chi2", 3, 3, Scalar, true, Numeric, Numeric, "reduced_chi2(chi2 DOUBLE, ndata INTEGER, nparam INTEGER) -> DOUBLE", "Chi-square per degree of freedom."),
];

/// Looks `name` up in [`FUNCTIONS`], ignoring case.
#[must_use]
pub fn lookup(name: &str) -> Option<&'static FunctionSig> {
    FUNCTIONS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// A function declared by the caller at run time, e.g. from a `TAPRegExt`
/// `<form>` or a validation suite's `<functions>` block. Only its name and
/// arity are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFunction {
    /// Function name; matching is case-insensitive.
    pub name: String,
    /// Fewest arguments accepted.
    pub min_args: usize,
    /// Most arguments accepted.
    pub max_args: usize,
}

impl UserFunction {
    /// A function taking exactly `arity` arguments.
    pub fn new(name: impl Into<String>, arity: usize) -> Self {
        Self {
            name: name.into(),
            min_args: arity,
            max_args: arity,
        }
    }

    /// Parses a TAPRegExt-style form such as
    /// `ESO_INTERSECTION(region1 REGION, region2 REGION) -> DOUBLE`.
    /// Returns `None` when the text has no `name(...)` shape.
    #[must_use]
    pub fn from_form(form: &str) -> Option<Self> {
        let form = form.trim();
        let open = form.find('(')?;
        let name = form[..open].trim();
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return None;
        }
        // Find the parenthesis closing the parameter list; parameter types
        // may carry their own parentheses, e.g. CHAR(8).
        let mut depth = 0usize;
        let mut close = None;
        for (i, c) in form[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        close = Some(open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let params = &form[open + 1..close?];
        let mut arity = 0usize;
        let mut depth = 0usize;
        let mut current_has_text = false;
        for c in params.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    if current_has_text {
                        arity += 1;
                    }
                    current_has_text = false;
                    continue;
                }
                _ => {}
            }
            if !c.is_whitespace() {
                current_has_text = true;
            }
        }
        if current_has_text {
            arity += 1;
        }
        Some(Self::new(name, arity))
    }

    /// True when `n` arguments fit this declaration.
    #[must_use]
    pub fn accepts_arity(&self, n: usize) -> bool {
        n >= self.min_args && n <= self.max_args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        for (i, a) in FUNCTIONS.iter().enumerate() {
            for b in &FUNCTIONS[i + 1..] {
                assert!(!a.name.eq_ignore_ascii_case(b.name), "{}", a.name);
            }
        }
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(lookup("njy_TO_ABMAG").map(|f| f.name), Some("nJy_to_abmag"));
        assert!(lookup("my_undefined_function").is_none());
    }

    #[test]
    fn forms_parse() {
        let f =
            UserFunction::from_form("ESO_INTERSECTION(region1 REGION, region2 REGION) -> DOUBLE");
        assert_eq!(f, Some(UserFunction::new("ESO_INTERSECTION", 2)));
        let f = UserFunction::from_form(" f(a CHAR(8), b INTEGER, c REAL) -> REAL");
        assert_eq!(f, Some(UserFunction::new("f", 3)));
        assert_eq!(
            UserFunction::from_form("g() -> REAL"),
            Some(UserFunction::new("g", 0))
        );
        assert_eq!(UserFunction::from_form("no parens"), None);
        assert_eq!(UserFunction::from_form("(x) -> y"), None);
        assert_eq!(UserFunction::from_form("h(x"), None);
    }
}
