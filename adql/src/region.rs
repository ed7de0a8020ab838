//! Recognises the sky regions a query's filters confine a table's positions to, so the
//! catalog store can skip HEALPix partitions that cannot hold matching rows.
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::geometry::{Circle, Polygon, SkyPosition, SkyRegion};
use crate::udf;

/// The region `filter` restricts (`ra`, `dec`) to, if it is one of the forms the ADQL
/// translator produces: `adql_in_circle(ra, dec, ...) = 1`, `adql_in_polygon(...) = 1`,
/// or `adql_distance(ra, dec, a, b) < r` with constant shapes.
pub fn region_of(filter: &Expr, ra: &str, dec: &str) -> Option<SkyRegion> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
        return None;
    };
    match op {
        Operator::Eq => {
            let (call, one) = if is_one(right) {
                (left, right)
            } else {
                (right, left)
            };
            if !is_one(one) {
                return None;
            }
            flag_region(call, ra, dec)
        }
        Operator::Lt | Operator::LtEq => distance_region(left, right, ra, dec),
        Operator::Gt | Operator::GtEq => distance_region(right, left, ra, dec),
        Operator::And => region_of(left, ra, dec).or_else(|| region_of(right, ra, dec)),
        _ => None,
    }
}

fn flag_region(call: &Expr, ra: &str, dec: &str) -> Option<SkyRegion> {
    let Expr::ScalarFunction(f) = strip(call) else {
        return None;
    };
    let args = &f.args;
    if args.len() < 2 || !is_column(&args[0], ra) || !is_column(&args[1], dec) {
        return None;
    }
    let values: Vec<f64> = args[2..].iter().map(constant).collect::<Option<_>>()?;
    match f.func.name() {
        udf::IN_CIRCLE if values.len() == 3 => Some(SkyRegion::Circle(Circle::new(
            SkyPosition::new(values[0], values[1])?,
            values[2],
        )?)),
        udf::IN_POLYGON if values.len() >= 6 && values.len().is_multiple_of(2) => {
            let vertices = values
                .chunks_exact(2)
                .map(|c| SkyPosition::new(c[0], c[1]))
                .collect::<Option<Vec<_>>>()?;
            Some(SkyRegion::Polygon(Polygon::new(vertices)?))
        }
        _ => None,
    }
}

fn distance_region(call: &Expr, radius: &Expr, ra: &str, dec: &str) -> Option<SkyRegion> {
    let Expr::ScalarFunction(f) = strip(call) else {
        return None;
    };
    if f.func.name() != udf::DISTANCE || f.args.len() != 4 {
        return None;
    }
    let r = constant(radius)?;
    let a = &f.args;
    let center = if is_column(&a[0], ra) && is_column(&a[1], dec) {
        (constant(&a[2])?, constant(&a[3])?)
    } else if is_column(&a[2], ra) && is_column(&a[3], dec) {
        (constant(&a[0])?, constant(&a[1])?)
    } else {
        return None;
    };
    Some(SkyRegion::Circle(Circle::new(
        SkyPosition::new(center.0, center.1)?,
        r,
    )?))
}

fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip(&a.expr),
        Expr::Cast(c) => strip(&c.expr),
        Expr::TryCast(c) => strip(&c.expr),
        _ => e,
    }
}

fn is_column(e: &Expr, name: &str) -> bool {
    matches!(strip(e), Expr::Column(c) if c.name == name)
}

fn constant(e: &Expr) -> Option<f64> {
    match strip(e) {
        Expr::Literal(v, _) => scalar_f64(v),
        Expr::Negative(inner) => constant(inner).map(|x| -x),
        _ => None,
    }
}

fn scalar_f64(v: &ScalarValue) -> Option<f64> {
    match v {
        ScalarValue::Float64(Some(x)) => Some(*x),
        ScalarValue::Float32(Some(x)) => Some(f64::from(*x)),
        ScalarValue::Int8(Some(x)) => Some(f64::from(*x)),
        ScalarValue::Int16(Some(x)) => Some(f64::from(*x)),
        ScalarValue::Int32(Some(x)) => Some(f64::from(*x)),
        ScalarValue::Int64(Some(x)) => Some(*x as f64),
        ScalarValue::UInt64(Some(x)) => Some(*x as f64),
        _ => None,
    }
}

fn is_one(e: &Expr) -> bool {
    constant(e) == Some(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn udf_call(name: &str, args: Vec<Expr>) -> Expr {
        let f = udf::all().into_iter().find(|f| f.name() == name).unwrap();
        f.call(args)
    }

    #[test]
    fn recognises_cones_and_polygons() {
        let cone = udf_call(
            udf::IN_CIRCLE,
            vec![col("ra"), col("dec"), lit(10.0), lit(20.0), lit(0.5)],
        )
        .eq(lit(1));
        assert!(
            matches!(region_of(&cone, "ra", "dec"), Some(SkyRegion::Circle(c)) if c.radius == 0.5)
        );
        assert_eq!(region_of(&cone, "ra2", "dec"), None);
        let dist = udf_call(
            udf::DISTANCE,
            vec![lit(10.0), lit(20.0), col("ra"), col("dec")],
        )
        .lt(lit(0.2));
        assert!(
            matches!(region_of(&dist, "ra", "dec"), Some(SkyRegion::Circle(c)) if c.radius == 0.2)
        );
        let poly = lit(1).eq(udf_call(
            udf::IN_POLYGON,
            vec![
                col("ra"),
                col("dec"),
                lit(1.0),
                lit(1.0),
                lit(2.0),
                lit(1.0),
                lit(2.0),
                lit(2.0),
            ],
        ));
        assert!(matches!(
            region_of(&poly, "ra", "dec"),
            Some(SkyRegion::Polygon(_))
        ));
        // A flag compared with 0 excludes a region: no pruning.
        let outside = udf_call(
            udf::IN_CIRCLE,
            vec![col("ra"), col("dec"), lit(10.0), lit(20.0), lit(0.5)],
        )
        .eq(lit(0));
        assert_eq!(region_of(&outside, "ra", "dec"), None);
    }
}
