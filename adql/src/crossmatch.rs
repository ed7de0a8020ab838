//! Positional crossmatch joins. A join whose condition says "these two positions lie within
//! r of each other" (`CONTAINS(POINT(a), CIRCLE(b, r)) = 1` or `DISTANCE(a, b) < r`) is a
//! nested loop over every pair of rows. [`CrossmatchJoin`] rewrites it into a hash join on
//! HEALPix cells: one side is expanded into the cells its r-disc may touch, the other side
//! keys on its own cell, and the original condition still decides each candidate pair.
use std::sync::Arc;

use arrow::array::{Array, Int64Builder, ListBuilder};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, Join, JoinConstraint, JoinType, LogicalPlan,
    LogicalPlanBuilder, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, lit,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use crate::geometry::SkyPosition;
use crate::udf;

/// HEALPix cells (nested, at the given order) that a disc may touch: (order, ra, dec,
/// radius), degrees. A superset: candidates are checked exactly afterwards.
pub const HEALPIX_COVER: &str = "adql_healpix_cover";

/// Name of the cell column added to the expanded side of a rewritten join.
const CELL: &str = "__aster_xmatch_cell";

/// The schema of tables uploaded with a query: small by nature, so the side to expand.
const UPLOAD_SCHEMA: &str = "tap_upload";

/// The HEALPix order whose cells are at least twice as wide as the match radius, so a
/// disc touches a handful of cells and a cell holds few candidates.
pub fn order_for_radius(radius_deg: f64) -> u8 {
    // Mean cell width at order k: sqrt(4π / (12·4^k)) rad ≈ 58.63° / 2^k.
    let mut order = 0u8;
    while order < 29 && 58.63 / f64::from(1u32 << (order + 1)) >= 2.0 * radius_deg {
        order += 1;
    }
    order
}

/// The disc-cover function behind the expanded side of a crossmatch.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HealpixCover {
    signature: Signature,
}

impl HealpixCover {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::uniform(4, vec![DataType::Float64], Volatility::Immutable),
        })
    }
}

fn cell_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Int64, true))
}

impl ScalarUDFImpl for HealpixCover {
    fn name(&self) -> &str {
        HEALPIX_COVER
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(cell_item()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let cols = udf::float64_columns(&args.args)?;
        let [order, ra, dec, radius] = cols.as_slice() else {
            return exec_err!("{HEALPIX_COVER} takes order, ra, dec and radius");
        };
        let mut out = ListBuilder::new(Int64Builder::new()).with_field(cell_item());
        for i in 0..args.number_rows {
            let row = [order, ra, dec, radius].map(|c| (!c.is_null(i)).then(|| c.value(i)));
            match row {
                [Some(o), Some(ra), Some(dec), Some(r)] => {
                    let cells = disc_cells(o, ra, dec, r);
                    out.values().append_slice(&cells);
                    out.append(true);
                }
                _ => out.append(false),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Cells at `order` that the disc of `radius` degrees around (ra, dec) may touch; empty for
/// an invalid position or a negative radius, which match nothing.
fn disc_cells(order: f64, ra: f64, dec: f64, radius: f64) -> Vec<i64> {
    let Some(p) = SkyPosition::new(ra, dec) else {
        return Vec::new();
    };
    // A NaN radius fails the range test too.
    if !(0.0..=29.0).contains(&order) || order.fract() != 0.0 || !(0.0..).contains(&radius) {
        return Vec::new();
    }
    let depth = order as u8;
    if radius >= 90.0 {
        return (0..12i64 << (2 * u32::from(depth))).collect();
    }
    // cdshealpix wants a radius above zero; a tiny one still covers the centre's cell.
    let radius = radius.max(1e-9).to_radians();
    cdshealpix::nested::cone_coverage_approx(depth, p.ra_rad(), p.dec_rad(), radius)
        .flat_iter()
        .map(|c| c as i64)
        .collect()
}

/// A proximity condition between two positions: |a − b| within `radius` degrees.
struct Proximity {
    a: (Expr, Expr),
    b: (Expr, Expr),
    radius: f64,
}

fn literal_f64(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Float64).ok()? {
            ScalarValue::Float64(Some(x)) => Some(x),
            _ => None,
        },
        Expr::Cast(c) => literal_f64(&c.expr),
        Expr::TryCast(c) => literal_f64(&c.expr),
        _ => None,
    }
}

fn call_of<'a>(e: &'a Expr, name: &str) -> Option<&'a [Expr]> {
    match e {
        Expr::ScalarFunction(f) if f.func.name() == name => Some(&f.args),
        Expr::Cast(c) => call_of(&c.expr, name),
        _ => None,
    }
}

/// Recognises `adql_in_circle(a, b, r) = 1` and `adql_distance(a, b) < r` (or `<=`), in
/// either operand order, with a literal radius.
fn proximity(e: &Expr) -> Option<Proximity> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let (l, r) = (left.as_ref(), right.as_ref());
    let in_circle = |f: &Expr, one: &Expr| {
        let args = call_of(f, udf::IN_CIRCLE)?;
        (literal_f64(one)? == 1.0).then_some(())?;
        let [px, py, cx, cy, rad] = args else {
            return None;
        };
        Some(Proximity {
            a: (px.clone(), py.clone()),
            b: (cx.clone(), cy.clone()),
            radius: literal_f64(rad)?,
        })
    };
    let within = |d: &Expr, rad: &Expr| {
        let [x1, y1, x2, y2] = call_of(d, udf::DISTANCE)? else {
            return None;
        };
        Some(Proximity {
            a: (x1.clone(), y1.clone()),
            b: (x2.clone(), y2.clone()),
            radius: literal_f64(rad)?,
        })
    };
    match op {
        Operator::Eq => in_circle(l, r).or_else(|| in_circle(r, l)),
        Operator::Lt | Operator::LtEq => within(l, r),
        Operator::Gt | Operator::GtEq => within(r, l),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// The join input that every column of `exprs` comes from, if there is exactly one.
fn side_of(exprs: [&Expr; 2], left: &DFSchema, right: &DFSchema) -> Option<Side> {
    let cols: Vec<&Column> = exprs.iter().flat_map(|e| e.column_refs()).collect();
    if cols.is_empty() {
        None
    } else if cols.iter().all(|c| left.has_column(c)) {
        Some(Side::Left)
    } else if cols.iter().all(|c| right.has_column(c)) {
        Some(Side::Right)
    } else {
        None
    }
}

fn reads_upload(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|p| {
        if let LogicalPlan::TableScan(s) = p
            && s.table_name
                .schema()
                .is_some_and(|n| n.eq_ignore_ascii_case(UPLOAD_SCHEMA))
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Which input to expand into cells. The expanded side's rows are repeated once per cell,
/// so it must not be a side whose unmatched rows the join preserves.
fn side_to_expand(join: &Join) -> Option<Side> {
    match join.join_type {
        JoinType::Inner => {
            if reads_upload(&join.right) || !reads_upload(&join.left) {
                Some(Side::Right)
            } else {
                Some(Side::Left)
            }
        }
        JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti => Some(Side::Right),
        JoinType::Right | JoinType::RightSemi | JoinType::RightAnti => Some(Side::Left),
        _ => None,
    }
}

/// The optimizer rule that turns proximity joins into HEALPix-cell hash joins.
#[derive(Debug, Default)]
pub struct CrossmatchJoin;

impl OptimizerRule for CrossmatchJoin {
    fn name(&self) -> &str {
        "aster_crossmatch_join"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match plan {
            // Joins that already have equality keys are hash joins; ours add one, so a
            // rewritten join is never rewritten again.
            LogicalPlan::Join(join) if join.on.is_empty() && join.filter.is_some() => {
                match rewrite_join(&join)? {
                    Some(p) => Ok(Transformed::yes(p)),
                    None => Ok(Transformed::no(LogicalPlan::Join(join))),
                }
            }
            other => Ok(Transformed::no(other)),
        }
    }
}

fn rewrite_join(join: &Join) -> Result<Option<LogicalPlan>> {
    let Some(filter) = &join.filter else {
        return Ok(None);
    };
    let Some(expand) = side_to_expand(join) else {
        return Ok(None);
    };
    let (ls, rs) = (join.left.schema(), join.right.schema());
    let found = split_conjunction(filter).into_iter().find_map(|c| {
        let p = proximity(c)?;
        let sa = side_of([&p.a.0, &p.a.1], ls, rs)?;
        let sb = side_of([&p.b.0, &p.b.1], ls, rs)?;
        (sa != sb).then_some((p, sa))
    });
    let Some((p, side_a)) = found else {
        return Ok(None);
    };
    // Either position may be the centre of the disc: |a − b| ≤ r is symmetric.
    let (expanded_pos, keyed_pos) = if side_a == expand {
        (p.a, p.b)
    } else {
        (p.b, p.a)
    };
    let order = order_for_radius(p.radius);
    let order_lit = lit(f64::from(order));
    let expanded_plan = if expand == Side::Left {
        &join.left
    } else {
        &join.right
    };
    let mut exprs: Vec<Expr> = expanded_plan
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    exprs.push(
        Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(HealpixCover::udf()),
            vec![
                order_lit.clone(),
                expanded_pos.0,
                expanded_pos.1,
                lit(p.radius),
            ],
        ))
        .alias(CELL),
    );
    let expanded = LogicalPlanBuilder::from(expanded_plan.as_ref().clone())
        .project(exprs)?
        .unnest_column(CELL)?
        .build()?;
    let Some(index) = udf::by_name(udf::HEALPIX_INDEX) else {
        return Ok(None);
    };
    let keyed_cell = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(index),
        vec![order_lit, keyed_pos.0, keyed_pos.1],
    ));
    let cell = Expr::Column(Column::from_name(CELL));
    let (left, right, on) = match expand {
        Side::Left => (Arc::new(expanded), join.right.clone(), (cell, keyed_cell)),
        Side::Right => (join.left.clone(), Arc::new(expanded), (keyed_cell, cell)),
    };
    let rewritten = Join::try_new(
        left,
        right,
        vec![on],
        join.filter.clone(),
        join.join_type,
        JoinConstraint::On,
        join.null_equality,
        join.null_aware,
    )?;
    // The same columns as before, without the cell.
    let columns: Vec<Expr> = join
        .schema
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let plan = LogicalPlanBuilder::from(LogicalPlan::Join(rewritten))
        .project(columns)?
        .build()?;
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::angular_distance_deg;

    /// The cell a position falls in, as the keyed side computes it.
    fn cell_of(order: u8, ra: f64, dec: f64) -> i64 {
        cdshealpix::nested::hash(order, ra.to_radians(), dec.to_radians()) as i64
    }

    #[test]
    fn orders_give_cells_wider_than_the_disc() {
        assert_eq!(order_for_radius(30.0), 0);
        let o = order_for_radius(1.0 / 3600.0);
        assert!((14..=17).contains(&o), "{o}");
        assert_eq!(order_for_radius(0.0), 29);
    }

    #[test]
    fn every_point_within_the_radius_falls_in_a_cover_cell() {
        // Points on a ring just inside r around centres everywhere, poles included.
        let r = 0.01;
        let order = order_for_radius(r);
        for &(ra, dec) in &[
            (0.0, 0.0),
            (45.0, 41.8),
            (359.99, -89.99),
            (180.0, 89.995),
            (90.0, -30.0),
        ] {
            let cells = disc_cells(f64::from(order), ra, dec, r);
            assert!(cells.len() <= 16, "{} cells", cells.len());
            for k in 0..36 {
                let pa = f64::from(k) * 10f64.to_radians();
                let d = r * 0.999;
                let dec2 = (dec + d * pa.cos()).clamp(-90.0, 90.0);
                let ra2 = (ra + d * pa.sin() / dec2.to_radians().cos().max(1e-6)).rem_euclid(360.0);
                if angular_distance_deg(ra, dec, ra2, dec2) <= r {
                    assert!(
                        cells.contains(&cell_of(order, ra2, dec2)),
                        "({ra2}, {dec2}) around ({ra}, {dec})"
                    );
                }
            }
        }
        assert!(disc_cells(10.0, 10.0, 95.0, 0.1).is_empty());
        assert!(disc_cells(10.0, 10.0, 10.0, -1.0).is_empty());
        for r in [0.0, 1e-300, f64::MIN_POSITIVE] {
            assert!(disc_cells(3.0, 10.0, 10.0, r).contains(&cell_of(3, 10.0, 10.0)));
        }
    }
}

#[cfg(test)]
mod plan_tests {
    use std::collections::BTreeSet;

    use arrow::array::{Float64Array, Int64Array, RecordBatch};
    use arrow::datatypes::Schema;
    use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::geometry::angular_distance_deg;

    /// Deterministic positions in a 1-degree patch: (id, ra, dec).
    fn positions(n: i64, seed: u64) -> Vec<(i64, f64, f64)> {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n).map(|i| (i, 150.0 + next(), 2.0 + next())).collect()
    }

    fn table(rows: &[(i64, f64, f64)]) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ra", DataType::Float64, false),
            Field::new("dec", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())
    }

    fn context(objects: &[(i64, f64, f64)], upload: &[(i64, f64, f64)]) -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features()
            .with_optimizer_rule(Arc::new(CrossmatchJoin))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for f in udf::all() {
            ctx.register_udf(f);
        }
        ctx.register_table("objects", table(objects)).unwrap();
        let up = Arc::new(MemorySchemaProvider::new());
        up.register_table("t".into(), table(upload)).unwrap();
        ctx.catalog("datafusion")
            .unwrap()
            .register_schema(UPLOAD_SCHEMA, up)
            .unwrap();
        ctx
    }

    async fn pairs(
        ctx: &SessionContext,
        sql: &str,
    ) -> (BTreeSet<(i64, Option<i64>)>, usize, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df
            .clone()
            .into_optimized_plan()
            .unwrap()
            .display_indent()
            .to_string();
        let batches = df.collect().await.unwrap();
        let mut set = BTreeSet::new();
        let mut n = 0;
        for b in &batches {
            let u = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let o = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                set.insert((u.value(i), (!o.is_null(i)).then(|| o.value(i))));
                n += 1;
            }
        }
        (set, n, plan)
    }

    fn brute_force(
        objects: &[(i64, f64, f64)],
        upload: &[(i64, f64, f64)],
        r: f64,
    ) -> BTreeSet<(i64, Option<i64>)> {
        let mut set = BTreeSet::new();
        for u in upload {
            for o in objects {
                if angular_distance_deg(u.1, u.2, o.1, o.2) <= r {
                    set.insert((u.0, Some(o.0)));
                }
            }
        }
        set
    }

    #[tokio::test]
    async fn crossmatch_joins_become_cell_hash_joins_with_the_same_rows() {
        let objects = positions(4000, 1);
        let upload = positions(300, 2);
        let r = 0.01;
        let ctx = context(&objects, &upload);
        let expected = brute_force(&objects, &upload, r);
        assert!(expected.len() > 20, "the fixture should have matches");

        // CONTAINS written with the upload as the circle, and the table first.
        let (got, n, plan) = pairs(
            &ctx,
            "SELECT u.id, o.id FROM objects o JOIN tap_upload.t u \
             ON CAST(adql_in_circle(o.ra, o.dec, u.ra, u.dec, 0.01) AS BIGINT) = 1",
        )
        .await;
        assert!(
            plan.contains(HEALPIX_COVER) && plan.contains("Unnest"),
            "{plan}"
        );
        assert_eq!(got, expected);
        assert_eq!(n, expected.len(), "no pair may be repeated");

        // DISTANCE in a WHERE clause over a cross join.
        let (got, _, plan) = pairs(
            &ctx,
            "SELECT u.id, o.id FROM tap_upload.t u, objects o \
             WHERE adql_distance(u.ra, u.dec, o.ra, o.dec) <= 0.01",
        )
        .await;
        assert!(plan.contains(HEALPIX_COVER), "{plan}");
        assert_eq!(got, expected);

        // A left join keeps every upload row exactly once when it has no match.
        let (got, n, plan) = pairs(
            &ctx,
            "SELECT u.id, o.id FROM tap_upload.t u LEFT JOIN objects o \
             ON adql_distance(u.ra, u.dec, o.ra, o.dec) < 0.01",
        )
        .await;
        assert!(plan.contains(HEALPIX_COVER), "{plan}");
        let mut with_unmatched = expected.clone();
        for u in &upload {
            if !expected.iter().any(|p| p.0 == u.0) {
                with_unmatched.insert((u.0, None));
            }
        }
        assert_eq!(got, with_unmatched);
        assert_eq!(n, with_unmatched.len());
    }

    #[tokio::test]
    async fn joins_on_other_conditions_are_left_alone() {
        let ctx = context(&positions(10, 1), &positions(10, 2));
        let (_, _, plan) = pairs(
            &ctx,
            "SELECT u.id, o.id FROM tap_upload.t u JOIN objects o ON u.ra < o.ra",
        )
        .await;
        assert!(!plan.contains(HEALPIX_COVER), "{plan}");
    }
}
