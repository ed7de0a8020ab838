//! DataFusion scalar functions behind ADQL's geometry, the IVOA `ivo_*` functions and the
//! survey's derived quantities. The ADQL translator rewrites calls onto these names.
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, Int32Array, Int64Array, ListBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};

use crate::geometry::{Circle, Polygon, SkyPosition, angular_distance_deg};

/// 1 when the point (args 0, 1) lies in the circle (args 2, 3, 4), else 0.
pub const IN_CIRCLE: &str = "adql_in_circle";
/// 1 when the point (args 0, 1) lies in the polygon given by the remaining vertex pairs.
pub const IN_POLYGON: &str = "adql_in_polygon";
/// Angular distance in degrees between two positions (ra1, dec1, ra2, dec2).
pub const DISTANCE: &str = "adql_distance";
pub const POINT: &str = "adql_point";
pub const CIRCLE: &str = "adql_circle";
pub const POLYGON: &str = "adql_polygon";
pub const POLYGON_AREA: &str = "adql_polygon_area";
pub const HEALPIX_INDEX: &str = "ivo_healpix_index";
pub const HEALPIX_CENTER: &str = "ivo_healpix_center";
pub const EPOCH_PROP: &str = "ivo_epoch_prop";
pub const EPOCH_PROP_POS: &str = "ivo_epoch_prop_pos";

/// Field-metadata key the writers read to label geometry columns (DALI xtypes).
const XTYPE: &str = "xtype";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Arity {
    Exact(usize),
    /// At least n, and an even count beyond the first `skip` arguments.
    Pairs {
        min: usize,
        skip: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    Float,
    Flag,
    Long,
    /// A list of doubles labelled with a DALI xtype.
    List(&'static str),
}

/// How a row's doubles become the result: most outputs are doubles; HEALPix indices
/// need all 64 bits, which a double cannot carry beyond order 26.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Values(fn(&[f64]) -> Option<Vec<f64>>),
    Long(fn(&[f64]) -> Option<i64>),
}

/// A function of doubles evaluated row by row; NULL in gives NULL out.
#[derive(Debug)]
struct RowUdf {
    name: &'static str,
    arity: Arity,
    output: Output,
    kernel: Kernel,
    signature: Signature,
}

// Function names are unique, so they identify the function (DataFusion compares UDFs).
impl PartialEq for RowUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for RowUdf {}
impl std::hash::Hash for RowUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl RowUdf {
    /// The DataFusion function for this row kernel.
    fn udf(name: &'static str, arity: Arity, output: Output, kernel: Kernel) -> ScalarUDF {
        let signature = match arity {
            Arity::Exact(n) => {
                Signature::uniform(n, vec![DataType::Float64], Volatility::Immutable)
            }
            Arity::Pairs { .. } => Signature::one_of(
                vec![TypeSignature::Variadic(vec![DataType::Float64])],
                Volatility::Immutable,
            ),
        };
        ScalarUDF::new_from_impl(Self {
            name,
            arity,
            output,
            kernel,
            signature,
        })
    }

    fn check_arity(&self, n: usize) -> Result<()> {
        let ok = match self.arity {
            Arity::Exact(k) => n == k,
            Arity::Pairs { min, skip } => n >= min && (n - skip).is_multiple_of(2),
        };
        if ok {
            Ok(())
        } else {
            plan_err!("{}: wrong number of arguments ({n})", self.name)
        }
    }
}

impl ScalarUDFImpl for RowUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.check_arity(arg_types.len())?;
        Ok(match self.output {
            Output::Float => DataType::Float64,
            Output::Flag => DataType::Int32,
            Output::Long => DataType::Int64,
            Output::List(_) => list_type(),
        })
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let field = Field::new(self.name, self.return_type(&types)?, true);
        Ok(Arc::new(match self.output {
            Output::List(xtype) if !xtype.is_empty() => {
                field.with_metadata([(XTYPE.to_string(), xtype.to_string())].into())
            }
            _ => field,
        }))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check_arity(args.args.len())?;
        let columns = float64_columns(&args.args)?;
        let rows = args.number_rows;
        let mut row = vec![0.0; columns.len()];
        // Loads row i into `row`; false when any argument is NULL.
        let fill = |row: &mut [f64], i: usize| -> bool {
            for (slot, col) in row.iter_mut().zip(&columns) {
                if col.is_null(i) {
                    return false;
                }
                *slot = col.value(i);
            }
            true
        };
        let out: ArrayRef = match (self.kernel, self.output) {
            (Kernel::Long(f), _) => Arc::new(
                (0..rows)
                    .map(|i| if fill(&mut row, i) { f(&row) } else { None })
                    .collect::<Int64Array>(),
            ),
            (Kernel::Values(f), output) => {
                let mut eval = |i: usize| if fill(&mut row, i) { f(&row) } else { None };
                match output {
                    Output::Float => Arc::new(
                        (0..rows)
                            .map(|i| eval(i).map(|v| v[0]))
                            .collect::<Float64Array>(),
                    ),
                    Output::Flag => Arc::new(
                        (0..rows)
                            .map(|i| eval(i).map(|v| v[0] as i32))
                            .collect::<Int32Array>(),
                    ),
                    Output::Long => {
                        return exec_err!("{}: integer output needs an integer kernel", self.name);
                    }
                    Output::List(_) => {
                        let mut b = ListBuilder::new(Float64Builder::new()).with_field(list_item());
                        for i in 0..rows {
                            match eval(i) {
                                Some(v) => {
                                    b.values().append_slice(&v);
                                    b.append(true);
                                }
                                None => b.append(false),
                            }
                        }
                        Arc::new(b.finish())
                    }
                }
            }
        };
        if out.len() != rows {
            return exec_err!("{}: produced {} rows for {rows}", self.name, out.len());
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// The arguments of a call as columns of doubles (scalars expanded); values that do not
/// cast to a double are NULL.
pub(crate) fn float64_columns(args: &[ColumnarValue]) -> Result<Vec<Float64Array>> {
    ColumnarValue::values_to_arrays(args)?
        .iter()
        .map(|a| {
            let c = cast(a, &DataType::Float64)?;
            Ok(c.as_any()
                .downcast_ref::<Float64Array>()
                .cloned()
                .unwrap_or_else(|| Float64Array::new_null(c.len())))
        })
        .collect()
}

fn list_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Float64, true))
}
fn list_type() -> DataType {
    DataType::List(list_item())
}

fn flag(b: bool) -> Option<Vec<f64>> {
    Some(vec![if b { 1.0 } else { 0.0 }])
}

fn in_circle(a: &[f64]) -> Option<Vec<f64>> {
    let p = SkyPosition::new(a[0], a[1])?;
    let c = Circle::new(SkyPosition::new(a[2], a[3])?, a[4])?;
    flag(c.contains(&p))
}

fn polygon_of(v: &[f64]) -> Option<Polygon> {
    Polygon::new(
        v.chunks_exact(2)
            .map(|c| SkyPosition::new(c[0], c[1]))
            .collect::<Option<Vec<_>>>()?,
    )
}

fn in_polygon(a: &[f64]) -> Option<Vec<f64>> {
    let p = SkyPosition::new(a[0], a[1])?;
    flag(polygon_of(&a[2..])?.contains(&p))
}

fn distance(a: &[f64]) -> Option<Vec<f64>> {
    SkyPosition::new(a[0], a[1])?;
    SkyPosition::new(a[2], a[3])?;
    Some(vec![angular_distance_deg(a[0], a[1], a[2], a[3])])
}

fn point(a: &[f64]) -> Option<Vec<f64>> {
    let p = SkyPosition::new(a[0], a[1])?;
    Some(vec![p.ra(), p.dec()])
}

fn circle(a: &[f64]) -> Option<Vec<f64>> {
    let c = Circle::new(SkyPosition::new(a[0], a[1])?, a[2])?;
    Some(vec![c.center.ra(), c.center.dec(), c.radius])
}

fn polygon(a: &[f64]) -> Option<Vec<f64>> {
    let p = polygon_of(a)?;
    Some(
        p.vertices()
            .iter()
            .flat_map(|v| [v.ra(), v.dec()])
            .collect(),
    )
}

fn polygon_area(a: &[f64]) -> Option<Vec<f64>> {
    Some(vec![polygon_of(a)?.area()])
}

fn healpix_order(x: f64) -> Option<u8> {
    (x.fract() == 0.0 && (0.0..=29.0).contains(&x)).then_some(x as u8)
}

fn healpix_index(a: &[f64]) -> Option<i64> {
    let depth = healpix_order(a[0])?;
    let p = SkyPosition::new(a[1], a[2])?;
    i64::try_from(cdshealpix::nested::hash(depth, p.ra_rad(), p.dec_rad())).ok()
}

fn healpix_center(a: &[f64]) -> Option<Vec<f64>> {
    let depth = healpix_order(a[0])?;
    let n_cells = 12u64 << (2 * u32::from(depth));
    if a[1] < 0.0 || a[1].fract() != 0.0 || a[1] >= n_cells as f64 {
        return None;
    }
    let (lon, lat) = cdshealpix::nested::center(depth, a[1] as u64);
    point(&[lon.to_degrees(), lat.to_degrees()])
}

/// Epoch propagation of an astrometric solution (ra, dec [deg], parallax [mas], pmra, pmdec
/// [mas/yr], radial velocity [km/s], reference epoch, target epoch [Julian years]) by
/// rigorous linear space motion, as in the Hipparcos/Gaia catalogue documentation.
/// Returns ra, dec, parallax, pmra, pmdec, rv at the target epoch.
fn epoch_prop(a: &[f64]) -> Option<Vec<f64>> {
    const AU_KM_YR_PER_S: f64 = 4.740_470_446;
    let (ra, dec, plx, pmra, pmdec, rv, t0, t1) = (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    SkyPosition::new(ra, dec)?;
    let dt = t1 - t0;
    let (sa, ca) = ra.to_radians().sin_cos();
    let (sd, cd) = dec.to_radians().sin_cos();
    let p = [-sa, ca, 0.0];
    let q = [-sd * ca, -sd * sa, cd];
    let r = [cd * ca, cd * sa, sd];
    let mas = std::f64::consts::PI / 180.0 / 3.6e6;
    let (pma, pmd) = (pmra * mas, pmdec * mas); // rad/yr
    let zeta = if plx > 0.0 {
        rv * plx / AU_KM_YR_PER_S * mas
    } else {
        0.0
    }; // rad/yr
    let f = 1.0 + 2.0 * zeta * dt + (pma * pma + pmd * pmd + zeta * zeta) * dt * dt;
    let f = f.sqrt();
    let mut u = [0.0; 3];
    let mut pm = [0.0; 3];
    for i in 0..3 {
        u[i] = (r[i] * (1.0 + zeta * dt) + (p[i] * pma + q[i] * pmd) * dt) / f;
        pm[i] = ((p[i] * pma + q[i] * pmd) * (1.0 + zeta * dt)
            - r[i] * (pma * pma + pmd * pmd) * dt)
            / f.powi(3);
    }
    let zeta1 = (zeta + (pma * pma + pmd * pmd + zeta * zeta) * dt) / (f * f);
    let dec1 = u[2].clamp(-1.0, 1.0).asin();
    let ra1 = u[1].atan2(u[0]).to_degrees().rem_euclid(360.0);
    let (sa1, ca1) = ra1.to_radians().sin_cos();
    let sd1 = dec1.sin();
    let p1 = [-sa1, ca1, 0.0];
    let q1 = [-sd1 * ca1, -sd1 * sa1, dec1.cos()];
    let pmra1 = (p1[0] * pm[0] + p1[1] * pm[1] + p1[2] * pm[2]) / mas;
    let pmdec1 = (q1[0] * pm[0] + q1[1] * pm[1] + q1[2] * pm[2]) / mas;
    let plx1 = plx / f;
    let rv1 = if plx > 0.0 {
        zeta1 * AU_KM_YR_PER_S / (plx1 * mas)
    } else {
        rv
    };
    Some(vec![ra1, dec1.to_degrees(), plx1, pmra1, pmdec1, rv1])
}

fn epoch_prop_pos(a: &[f64]) -> Option<Vec<f64>> {
    let v = epoch_prop(a)?;
    Some(vec![v[0], v[1]])
}

/// The function of this name among [`all`].
pub fn by_name(name: &str) -> Option<ScalarUDF> {
    all().into_iter().find(|f| f.name() == name)
}

/// Every function this module provides (and the crossmatch cover), for registration on a
/// session.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        crate::crossmatch::HealpixCover::udf(),
        RowUdf::udf(
            IN_CIRCLE,
            Arity::Exact(5),
            Output::Flag,
            Kernel::Values(in_circle),
        ),
        RowUdf::udf(
            IN_POLYGON,
            Arity::Pairs { min: 8, skip: 2 },
            Output::Flag,
            Kernel::Values(in_polygon),
        ),
        RowUdf::udf(
            DISTANCE,
            Arity::Exact(4),
            Output::Float,
            Kernel::Values(distance),
        ),
        RowUdf::udf(
            POINT,
            Arity::Exact(2),
            Output::List("point"),
            Kernel::Values(point),
        ),
        RowUdf::udf(
            CIRCLE,
            Arity::Exact(3),
            Output::List("circle"),
            Kernel::Values(circle),
        ),
        RowUdf::udf(
            POLYGON,
            Arity::Pairs { min: 6, skip: 0 },
            Output::List("polygon"),
            Kernel::Values(polygon),
        ),
        RowUdf::udf(
            POLYGON_AREA,
            Arity::Pairs { min: 6, skip: 0 },
            Output::Float,
            Kernel::Values(polygon_area),
        ),
        RowUdf::udf(
            HEALPIX_INDEX,
            Arity::Exact(3),
            Output::Long,
            Kernel::Long(healpix_index),
        ),
        RowUdf::udf(
            HEALPIX_CENTER,
            Arity::Exact(2),
            Output::List("point"),
            Kernel::Values(healpix_center),
        ),
        RowUdf::udf(
            EPOCH_PROP,
            Arity::Exact(8),
            Output::List(""),
            Kernel::Values(epoch_prop),
        ),
        RowUdf::udf(
            EPOCH_PROP_POS,
            Arity::Exact(8),
            Output::List("point"),
            Kernel::Values(epoch_prop_pos),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_compute_expected_values() {
        assert_eq!(in_circle(&[10.0, 10.0, 10.0, 10.5, 0.6]), Some(vec![1.0]));
        assert_eq!(in_circle(&[10.0, 10.0, 10.0, 10.5, 0.4]), Some(vec![0.0]));
        assert_eq!(in_circle(&[10.0, 95.0, 10.0, 10.5, 0.4]), None);
        let sq = [359.0, -1.0, 1.0, -1.0, 1.0, 1.0, 359.0, 1.0];
        let mut args = vec![0.0, 0.0];
        args.extend_from_slice(&sq);
        assert_eq!(in_polygon(&args), Some(vec![1.0]));
        assert!((distance(&[0.0, 0.0, 0.0, 1.0]).unwrap()[0] - 1.0).abs() < 1e-12);
        let c = healpix_center(&[0.0, 4.0]).unwrap();
        assert_eq!(healpix_index(&[0.0, c[0], c[1]]), Some(4));
        assert!(healpix_index(&[29.0, 10.0, 10.0]).unwrap() > 1 << 53);
        assert_eq!(healpix_center(&[0.0, 12.0]), None);
    }

    #[test]
    fn epoch_propagation_moves_by_proper_motion() {
        // Barnard's star-like motion: 10 arcsec/yr north for 10 years = 100 arcsec.
        let v = epoch_prop(&[180.0, 0.0, 500.0, 0.0, 10_000.0, 0.0, 2000.0, 2010.0]).unwrap();
        assert!((v[1] * 3600.0 - 100.0).abs() < 0.01, "{v:?}");
        assert!((v[0] - 180.0).abs() < 1e-9);
        // No time elapsed: unchanged.
        let w = epoch_prop(&[10.0, 20.0, 5.0, 3.0, -4.0, 20.0, 2016.0, 2016.0]).unwrap();
        assert!(
            (w[0] - 10.0).abs() < 1e-12 && (w[3] - 3.0).abs() < 1e-9 && (w[5] - 20.0).abs() < 1e-6
        );
    }
}
