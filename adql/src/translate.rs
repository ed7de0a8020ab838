//! ADQL to DataFusion: parses a validated ADQL query into a SQL syntax tree and rewrites it
//! into the dialect DataFusion plans (TOP to LIMIT, geometry and `ivo_*` calls onto the
//! functions of [`crate::udf`], ADQL's math names, case-insensitive identifiers). The result
//! is a statement DataFusion turns into a logical plan; no SQL text is produced on the way.
use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::Spanned;
use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CaseWhen, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, LimitClause, ObjectName, ObjectNamePart, Query, Select, SelectItem,
    SetExpr, Statement, TableFactor, TopQuantity, UnaryOperator, Value, ValueWithSpan, VisitMut,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Span;

use crate::geometry::{Polygon, SkyPosition};
use crate::udf;
use crate::validate::{self, AdqlError};

/// Canonical spellings of the schema, table and column names a query may use: ADQL
/// identifiers are case-insensitive unless quoted, while the catalog keeps mixed case
/// (`u_psfFlux`), so unquoted names are mapped onto their canonical quoted form.
#[derive(Debug, Default, Clone)]
pub struct NameMap {
    canonical: HashMap<String, String>,
    /// Schema and table names, kept apart: a table `Visit` and a column `visit` coexist.
    relations: HashMap<String, String>,
}

impl NameMap {
    /// A column (or other name used in expressions).
    pub fn insert(&mut self, name: &str) {
        self.canonical
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| name.to_string());
    }
    /// A schema or table name.
    pub fn insert_relation(&mut self, name: &str) {
        self.relations
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| name.to_string());
    }
    fn resolve_relation(&self, ident: &mut Ident) {
        Self::apply(&self.relations, ident);
    }
    fn resolve(&self, ident: &mut Ident) {
        Self::apply(&self.canonical, ident);
    }
    fn apply(map: &HashMap<String, String>, ident: &mut Ident) {
        if ident.quote_style.is_some() {
            return;
        }
        if let Some(c) = map.get(&ident.value.to_ascii_lowercase()) {
            // All-lowercase names need nothing: DataFusion lowercases unquoted identifiers.
            if c.chars().any(|ch| ch.is_ascii_uppercase()) {
                ident.value = c.clone();
                ident.quote_style = Some('"');
            }
        }
    }
}

/// Validates `adql` and rewrites it into a statement for DataFusion's planner.
pub fn translate(adql: &str, names: &NameMap) -> Result<Statement, AdqlError> {
    validate::check(adql)?;
    let mut statements = Parser::parse_sql(&GenericDialect {}, adql).map_err(|e| AdqlError {
        line: 1,
        column: 1,
        message: format!("unsupported query form: {e}"),
    })?;
    if statements.len() != 1 {
        return Err(at_start("exactly one query is expected"));
    }
    let mut stmt = statements.remove(0);
    if !matches!(stmt, Statement::Query(_)) {
        return Err(at_start("only SELECT queries are allowed"));
    }
    let mut rewriter = Rewriter { names, error: None };
    let _ = stmt.visit(&mut rewriter);
    match rewriter.error {
        Some(e) => Err(e),
        None => Ok(stmt),
    }
}

fn at_start(message: &str) -> AdqlError {
    AdqlError {
        line: 1,
        column: 1,
        message: message.to_string(),
    }
}

struct Rewriter<'a> {
    names: &'a NameMap,
    error: Option<AdqlError>,
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Err(e) = move_top(query) {
            return self.fail(e, Span::empty());
        }
        if let Some(with) = &mut query.with {
            for cte in &mut with.cte_tables {
                self.names.resolve(&mut cte.alias.name);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        for item in &mut select.projection {
            if let SelectItem::ExprWithAlias { alias, .. } = item {
                self.names.resolve(alias);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        for part in &mut relation.0 {
            if let ObjectNamePart::Identifier(id) = part {
                self.names.resolve_relation(id);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let alias = match factor {
            TableFactor::Table { alias, .. } | TableFactor::Derived { alias, .. } => alias,
            _ => return ControlFlow::Continue(()),
        };
        if let Some(a) = alias {
            self.names.resolve(&mut a.name);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(id) => self.names.resolve(id),
            Expr::CompoundIdentifier(ids) => {
                // schema.table.column: the qualifiers are relations, the last part a column.
                if let Some((last, qualifiers)) = ids.split_last_mut() {
                    qualifiers
                        .iter_mut()
                        .for_each(|id| self.names.resolve_relation(id));
                    self.names.resolve(last);
                }
            }
            Expr::Value(v) => {
                if let Value::HexStringLiteral(hex) = &v.value {
                    // ADQL 2.1 hex literals are integers; sqlparser reads them as strings.
                    match i64::from_str_radix(hex, 16) {
                        Ok(n) => *expr = num(n as f64, true),
                        Err(_) => {
                            return self
                                .fail(format!("hex literal 0x{hex} is out of range"), v.span);
                        }
                    }
                }
            }
            Expr::Function(f) => {
                let span = f.name.0.first().map(|p| p.span()).unwrap_or(Span::empty());
                match rewrite_function(f) {
                    Ok(Some(new)) => *expr = new,
                    Ok(None) => {}
                    Err(msg) => return self.fail(msg, span),
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

impl Rewriter<'_> {
    fn fail(&mut self, message: String, span: Span) -> ControlFlow<()> {
        self.error = Some(AdqlError {
            line: (span.start.line as usize).max(1),
            column: (span.start.column as usize).max(1),
            message,
        });
        ControlFlow::Break(())
    }
}

/// ADQL's `SELECT TOP n` becomes the query's LIMIT; a TOP inside one branch of a set
/// operation limits that branch only, so the branch becomes a limited subquery.
fn move_top(query: &mut Query) -> Result<(), String> {
    if let SetExpr::Select(select) = query.body.as_mut() {
        if let Some(n) = take_top(select)? {
            let offset = match query.limit_clause.take() {
                Some(LimitClause::LimitOffset { offset, .. }) => offset,
                Some(LimitClause::OffsetCommaLimit { .. }) => {
                    return Err("LIMIT is not ADQL".into());
                }
                None => None,
            };
            query.limit_clause = Some(LimitClause::LimitOffset {
                limit: Some(n),
                offset,
                limit_by: vec![],
            });
        }
        return Ok(());
    }
    limit_branches(query.body.as_mut())
}

fn limit_branches(body: &mut SetExpr) -> Result<(), String> {
    match body {
        SetExpr::SetOperation { left, right, .. } => {
            limit_branches(left)?;
            limit_branches(right)
        }
        SetExpr::Select(select) => {
            if let Some(n) = take_top(select)? {
                let inner = Query {
                    with: None,
                    body: Box::new(SetExpr::Select(select.clone())),
                    order_by: None,
                    limit_clause: Some(LimitClause::LimitOffset {
                        limit: Some(n),
                        offset: None,
                        limit_by: vec![],
                    }),
                    fetch: None,
                    locks: vec![],
                    for_clause: None,
                    settings: None,
                    format_clause: None,
                    pipe_operators: vec![],
                };
                *body = SetExpr::Query(Box::new(inner));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn take_top(select: &mut Select) -> Result<Option<Expr>, String> {
    let Some(top) = select.top.take() else {
        return Ok(None);
    };
    if top.percent || top.with_ties {
        return Err("TOP PERCENT / WITH TIES are not ADQL".into());
    }
    Ok(match top.quantity {
        Some(TopQuantity::Constant(n)) => Some(num(n as f64, true)),
        Some(TopQuantity::Expr(e)) => Some(e),
        None => None,
    })
}

// ---- small AST builders -------------------------------------------------------------

fn num(x: f64, integer: bool) -> Expr {
    let text = if integer {
        format!("{}", x as i64)
    } else {
        format!("{x:?}")
    };
    Expr::Value(ValueWithSpan {
        value: Value::Number(text, false),
        span: Span::empty(),
    })
}

fn string(s: &str) -> Expr {
    Expr::Value(ValueWithSpan {
        value: Value::SingleQuotedString(s.to_string()),
        span: Span::empty(),
    })
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn bin(left: Expr, op: BinaryOperator, right: Expr) -> Expr {
    Expr::Nested(Box::new(Expr::BinaryOp {
        left: Box::new(left),
        op,
        right: Box::new(right),
    }))
}

/// `CASE WHEN cond THEN then ELSE otherwise END`; `otherwise` None yields NULL.
fn case_when(cond: Expr, then: Expr, otherwise: Option<Expr>) -> Expr {
    Expr::Case {
        case_token: AttachedToken::empty(),
        end_token: AttachedToken::empty(),
        operand: None,
        conditions: vec![CaseWhen {
            condition: cond,
            result: then,
        }],
        else_result: otherwise.map(Box::new),
    }
}

fn flag(cond: Expr) -> Expr {
    case_when(cond, num(1.0, true), Some(num(0.0, true)))
}

// ---- function rewriting -------------------------------------------------------------

/// A geometry value written with a constructor in the query.
// Short-lived during one rewrite and never stored in bulk, so boxing the larger variants
// would only add allocations.
#[allow(clippy::large_enum_variant)]
enum Shape {
    Point(Expr, Expr),
    Circle(Expr, Expr, Expr),
    Polygon(Vec<(Expr, Expr)>),
    Box(Expr, Expr, Expr, Expr),
}

fn function_name(f: &Function) -> String {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_ascii_lowercase())
        .unwrap_or_default()
}

fn plain_args(f: &Function) -> Result<Vec<Expr>, String> {
    match &f.args {
        FunctionArguments::None => Ok(vec![]),
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.clone()),
                _ => Err(format!("{}: unexpected argument form", function_name(f))),
            })
            .collect(),
        FunctionArguments::Subquery(_) => Err(format!(
            "{}: unexpected subquery argument",
            function_name(f)
        )),
    }
}

/// Geometry constructors may start with a coordinate-system string (ADQL 2.0 style),
/// which ADQL 2.1 deprecates; every system is treated as ICRS.
fn strip_coordsys(mut args: Vec<Expr>) -> Vec<Expr> {
    if let Some(Expr::Value(v)) = args.first()
        && (matches!(v.value, Value::SingleQuotedString(_)) || matches!(v.value, Value::Null))
    {
        args.remove(0);
    }
    args
}

fn shape_of(e: &Expr) -> Result<Option<Shape>, String> {
    let Expr::Function(f) = strip_nested(e) else {
        return Ok(None);
    };
    // Calls are rewritten bottom-up, so inner constructors may already be our functions.
    let name = match function_name(f).as_str() {
        udf::POINT => "point".to_string(),
        udf::CIRCLE => "circle".to_string(),
        udf::POLYGON => "polygon".to_string(),
        other => other.to_string(),
    };
    if !matches!(name.as_str(), "point" | "circle" | "polygon" | "box") {
        return Ok(None);
    }
    let mut a = strip_coordsys(plain_args(f)?);
    let bad = || {
        Err(format!(
            "{}: wrong number of arguments ({})",
            name.to_uppercase(),
            a.len()
        ))
    };
    Ok(Some(match name.as_str() {
        "point" => {
            if a.len() != 2 {
                return bad();
            }
            let y = a.remove(1);
            Shape::Point(a.remove(0), y)
        }
        "circle" => {
            // CIRCLE(POINT(a, b), r) is ADQL 2.1's other form.
            if a.len() == 2
                && let Some(Shape::Point(x, y)) = shape_of(&a[0])?
            {
                return Ok(Some(Shape::Circle(x, y, a.remove(1))));
            }
            if a.len() != 3 {
                return bad();
            }
            let r = a.remove(2);
            let y = a.remove(1);
            Shape::Circle(a.remove(0), y, r)
        }
        "box" => {
            if a.len() != 4 {
                return bad();
            }
            let h = a.remove(3);
            let w = a.remove(2);
            let y = a.remove(1);
            Shape::Box(a.remove(0), y, w, h)
        }
        _ => {
            // POLYGON(a1, b1, a2, b2, ...) or POLYGON(POINT, POINT, POINT, ...).
            let mut pts = Vec::new();
            if a.iter()
                .all(|e| matches!(shape_of(e), Ok(Some(Shape::Point(..)))))
                && a.len() >= 3
            {
                for e in &a {
                    if let Some(Shape::Point(x, y)) = shape_of(e)? {
                        pts.push((x, y));
                    }
                }
            } else {
                if a.len() < 6 || !a.len().is_multiple_of(2) {
                    return bad();
                }
                let mut it = a.into_iter();
                while let (Some(x), Some(y)) = (it.next(), it.next()) {
                    pts.push((x, y));
                }
            }
            Shape::Polygon(pts)
        }
    }))
}

/// The shape an STC-S string describes (TAP 1.0 / STC-S 1.0 as ADQL's REGION takes it):
/// `Position`, `Circle`, `Box` and `Polygon`, in ICRS (or an unspecified frame).
fn region_shape(stcs: &str) -> Result<Shape, String> {
    let mut words = stcs.split_whitespace();
    let kind = words
        .next()
        .ok_or("REGION: empty STC-S string")?
        .to_ascii_lowercase();
    let mut numbers = Vec::new();
    for w in words {
        match w.parse::<f64>() {
            Ok(x) if x.is_finite() => numbers.push(x),
            _ if !numbers.is_empty() => {
                return Err(format!("REGION: unexpected '{w}' among the coordinates"));
            }
            _ => match w.to_ascii_uppercase().as_str() {
                "ICRS" | "J2000" | "FK5" | "UNKNOWNFRAME" | "BARYCENTER" | "GEOCENTER"
                | "TOPOCENTER" | "UNKNOWNREFPOS" | "SPHERICAL2" => {}
                other => {
                    return Err(format!(
                        "REGION: '{other}' is not supported; regions are in ICRS"
                    ));
                }
            },
        }
    }
    let n = |x: f64| num(x, false);
    let need = |k: usize| {
        if numbers.len() == k {
            Ok(())
        } else {
            Err(format!(
                "REGION: {kind} takes {k} numbers, got {}",
                numbers.len()
            ))
        }
    };
    Ok(match kind.as_str() {
        "position" => {
            need(2)?;
            Shape::Point(n(numbers[0]), n(numbers[1]))
        }
        "circle" => {
            need(3)?;
            Shape::Circle(n(numbers[0]), n(numbers[1]), n(numbers[2]))
        }
        "box" => {
            need(4)?;
            Shape::Box(n(numbers[0]), n(numbers[1]), n(numbers[2]), n(numbers[3]))
        }
        "polygon" => {
            if numbers.len() < 6 || !numbers.len().is_multiple_of(2) {
                return Err("REGION: Polygon takes at least three vertices".into());
            }
            Shape::Polygon(numbers.chunks(2).map(|c| (n(c[0]), n(c[1]))).collect())
        }
        other => {
            return Err(format!(
                "REGION: STC-S '{other}' is not supported (Position, Circle, Box and Polygon are)"
            ));
        }
    })
}

fn strip_nested(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => strip_nested(inner),
        _ => e,
    }
}

/// A numeric literal's value, with unary minus.
fn literal(e: &Expr) -> Option<f64> {
    match strip_nested(e) {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => literal(expr).map(|x| -x),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => literal(expr),
        _ => None,
    }
}

/// BOX as the polygon of its corners; needs constant arguments.
fn box_polygon(x: &Expr, y: &Expr, w: &Expr, h: &Expr) -> Result<Vec<(Expr, Expr)>, String> {
    let (Some(x), Some(y), Some(w), Some(h)) = (literal(x), literal(y), literal(w), literal(h))
    else {
        return Err("BOX is supported with constant arguments only".into());
    };
    let center = SkyPosition::new(x, y).ok_or("BOX: centre is not a valid position")?;
    let poly = Polygon::from_box(center, w, h).ok_or("BOX: width and height must be positive")?;
    Ok(poly
        .vertices()
        .iter()
        .map(|v| (num(v.ra(), false), num(v.dec(), false)))
        .collect())
}

fn flatten(points: Vec<(Expr, Expr)>) -> Vec<Expr> {
    points.into_iter().flat_map(|(x, y)| [x, y]).collect()
}

fn distance(x1: Expr, y1: Expr, x2: Expr, y2: Expr) -> Expr {
    call(udf::DISTANCE, vec![x1, y1, x2, y2])
}

/// 1 when shape `inner` lies within `outer` (ADQL CONTAINS).
fn contains(inner: Shape, outer: Shape) -> Result<Expr, String> {
    Ok(match (inner, outer) {
        (Shape::Point(px, py), Shape::Circle(cx, cy, r)) => call(udf::IN_CIRCLE, vec![px, py, cx, cy, r]),
        (Shape::Point(px, py), Shape::Polygon(pts)) => {
            let mut args = vec![px, py];
            args.extend(flatten(pts));
            call(udf::IN_POLYGON, args)
        }
        (Shape::Point(px, py), Shape::Box(x, y, w, h)) => {
            let mut args = vec![px, py];
            args.extend(flatten(box_polygon(&x, &y, &w, &h)?));
            call(udf::IN_POLYGON, args)
        }
        (Shape::Point(ax, ay), Shape::Point(bx, by)) => {
            flag(bin(distance(ax, ay, bx, by), BinaryOperator::Eq, num(0.0, false)))
        }
        (Shape::Circle(ax, ay, ar), Shape::Circle(bx, by, br)) => flag(bin(
            bin(distance(ax, ay, bx, by), BinaryOperator::Plus, ar),
            BinaryOperator::LtEq,
            br,
        )),
        _ => return Err("CONTAINS is supported for a point in a circle, polygon or box, and a circle in a circle".into()),
    })
}

fn intersects(a: Shape, b: Shape) -> Result<Expr, String> {
    Ok(match (a, b) {
        (p @ Shape::Point(..), s) | (s, p @ Shape::Point(..)) => contains(p, s)?,
        (Shape::Circle(ax, ay, ar), Shape::Circle(bx, by, br)) => flag(bin(
            distance(ax, ay, bx, by),
            BinaryOperator::LtEq,
            bin(ar, BinaryOperator::Plus, br),
        )),
        _ => {
            return Err(
                "INTERSECTS is supported between a point and a shape, or two circles".into(),
            );
        }
    })
}

fn shape_value(s: Shape) -> Result<Expr, String> {
    Ok(match s {
        Shape::Point(x, y) => call(udf::POINT, vec![x, y]),
        Shape::Circle(x, y, r) => call(udf::CIRCLE, vec![x, y, r]),
        Shape::Polygon(pts) => call(udf::POLYGON, flatten(pts)),
        Shape::Box(x, y, w, h) => call(udf::POLYGON, flatten(box_polygon(&x, &y, &w, &h)?)),
    })
}

fn need_shape(e: &Expr, what: &str) -> Result<Shape, String> {
    shape_of(e)?.ok_or_else(|| {
        format!(
            "{what}: the argument must be a geometry constructor (POINT, CIRCLE, BOX or POLYGON)"
        )
    })
}

fn exactly<const N: usize>(name: &str, args: Vec<Expr>) -> Result<[Expr; N], String> {
    let n = args.len();
    args.try_into()
        .map_err(|_| format!("{}: expected {N} arguments, got {n}", name.to_uppercase()))
}

/// Zero-point of AB magnitudes for fluxes in nJy: m = -2.5 log10(f / 3631 Jy).
const AB_ZEROPOINT_NJY: f64 = 31.4;
/// 2.5 / ln(10): the magnitude error of a relative flux error of 1.
const MAG_ERR_SCALE: f64 = 1.085_736_204_758_129_6;

/// Rewrites one call; Ok(None) leaves it to DataFusion as written.
fn rewrite_function(f: &Function) -> Result<Option<Expr>, String> {
    let name = function_name(f);
    let known = matches!(
        name.as_str(),
        "point"
            | "circle"
            | "polygon"
            | "box"
            | "region"
            | "contains"
            | "intersects"
            | "distance"
            | "area"
            | "coord1"
            | "coord2"
            | "coordsys"
            | "centroid"
            | "log"
            | "ceiling"
            | "truncate"
            | "mod"
            | "rand"
            | "ivo_healpix_index"
            | "ivo_hasword"
            | "ivo_nocasematch"
            | "ivo_string_agg"
            | "ivo_interval_overlaps"
            | "njy_to_abmag"
            | "njy_to_abmag_err"
            | "abmag_to_njy"
            | "ab_color"
            | "reduced_chi2"
            | "in_unit"
    );
    if !known {
        return Ok(None);
    }
    let args = plain_args(f)?;
    Ok(Some(match name.as_str() {
        "point" | "circle" | "polygon" | "box" => {
            shape_value(need_shape(&Expr::Function(f.clone()), &name)?)?
        }
        "region" => {
            let [text] = exactly("region", args)?;
            let stcs = match strip_nested(&text) {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    _ => return Err("REGION takes an STC-S string literal".into()),
                },
                _ => return Err("REGION takes an STC-S string literal".into()),
            };
            shape_value(region_shape(&stcs)?)?
        }
        "in_unit" => return Err("IN_UNIT is not supported".into()),
        "contains" => {
            let [a, b] = exactly("contains", args)?;
            contains(need_shape(&a, "CONTAINS")?, need_shape(&b, "CONTAINS")?)?
        }
        "intersects" => {
            let [a, b] = exactly("intersects", args)?;
            intersects(need_shape(&a, "INTERSECTS")?, need_shape(&b, "INTERSECTS")?)?
        }
        "distance" => match args.len() {
            4 => {
                let [a, b, c, d] = exactly("distance", args)?;
                distance(a, b, c, d)
            }
            _ => {
                let [p, q] = exactly("distance", args)?;
                match (need_shape(&p, "DISTANCE")?, need_shape(&q, "DISTANCE")?) {
                    (Shape::Point(a, b), Shape::Point(c, d)) => distance(a, b, c, d),
                    _ => return Err("DISTANCE takes two points".into()),
                }
            }
        },
        "coord1" | "coord2" => {
            let [p] = exactly(&name, args)?;
            match shape_of(&p)? {
                Some(Shape::Point(x, y)) => {
                    Expr::Nested(Box::new(if name == "coord1" { x } else { y }))
                }
                Some(_) => return Err(format!("{} takes a point", name.to_uppercase())),
                // A point-valued column or expression: its first or second coordinate.
                None => call(
                    "array_element",
                    vec![p, num(if name == "coord1" { 1.0 } else { 2.0 }, true)],
                ),
            }
        }
        "coordsys" => {
            let [g] = exactly("coordsys", args)?;
            need_shape(&g, "COORDSYS")?;
            string("ICRS")
        }
        "area" => {
            let [g] = exactly("area", args)?;
            match need_shape(&g, "AREA")? {
                Shape::Circle(_, _, r) => {
                    // 2π(1 − cos r) steradians, in square degrees.
                    let sr = bin(
                        num(2.0 * std::f64::consts::PI, false),
                        BinaryOperator::Multiply,
                        bin(
                            num(1.0, false),
                            BinaryOperator::Minus,
                            call("cos", vec![call("radians", vec![r])]),
                        ),
                    );
                    bin(
                        sr,
                        BinaryOperator::Multiply,
                        num((180.0 / std::f64::consts::PI).powi(2), false),
                    )
                }
                Shape::Polygon(pts) => call(udf::POLYGON_AREA, flatten(pts)),
                Shape::Box(x, y, w, h) => {
                    call(udf::POLYGON_AREA, flatten(box_polygon(&x, &y, &w, &h)?))
                }
                Shape::Point(..) => num(0.0, false),
            }
        }
        "centroid" => {
            let [g] = exactly("centroid", args)?;
            match need_shape(&g, "CENTROID")? {
                Shape::Circle(x, y, _) | Shape::Box(x, y, _, _) => call(udf::POINT, vec![x, y]),
                Shape::Point(x, y) => call(udf::POINT, vec![x, y]),
                Shape::Polygon(pts) => {
                    let verts = pts
                        .iter()
                        .map(|(x, y)| SkyPosition::new(literal(x)?, literal(y)?))
                        .collect::<Option<Vec<_>>>()
                        .and_then(Polygon::new)
                        .ok_or("CENTROID of a POLYGON needs constant vertices")?;
                    let c = verts.centroid();
                    call(udf::POINT, vec![num(c.ra(), false), num(c.dec(), false)])
                }
            }
        }
        // ADQL's LOG is the natural logarithm (DataFusion's log is base 10).
        "log" => {
            let [x] = exactly("log", args)?;
            call("ln", vec![x])
        }
        "ceiling" => call("ceil", args),
        "truncate" => call("trunc", args),
        "mod" => {
            let [a, b] = exactly("mod", args)?;
            bin(a, BinaryOperator::Modulo, b)
        }
        "rand" => call("random", vec![]),
        "ivo_healpix_index" => match args.len() {
            2 => {
                let [order, p] = exactly("ivo_healpix_index", args)?;
                match need_shape(&p, "IVO_HEALPIX_INDEX")? {
                    Shape::Point(x, y) => call(udf::HEALPIX_INDEX, vec![order, x, y]),
                    _ => return Err("IVO_HEALPIX_INDEX takes a point".into()),
                }
            }
            _ => return Ok(None),
        },
        "ivo_hasword" => {
            let [text, word] = exactly("ivo_hasword", args)?;
            let Some(Value::SingleQuotedString(w)) = (match strip_nested(&word) {
                Expr::Value(v) => Some(v.value.clone()),
                _ => None,
            }) else {
                return Err("IVO_HASWORD: the word must be a string literal".into());
            };
            let pattern = format!("(?i)(^|[^[:alnum:]]){}($|[^[:alnum:]])", regex_escape(&w));
            flag(call("regexp_like", vec![text, string(&pattern)]))
        }
        "ivo_nocasematch" => {
            let [a, b] = exactly("ivo_nocasematch", args)?;
            flag(Expr::ILike {
                negated: false,
                any: false,
                expr: Box::new(a),
                pattern: Box::new(b),
                escape_char: None,
            })
        }
        "ivo_string_agg" => {
            let [x, d] = exactly("ivo_string_agg", args)?;
            call("string_agg", vec![x, d])
        }
        "ivo_interval_overlaps" => {
            let [l1, h1, l2, h2] = exactly("ivo_interval_overlaps", args)?;
            flag(bin(
                bin(h1, BinaryOperator::GtEq, l2),
                BinaryOperator::And,
                bin(h2, BinaryOperator::GtEq, l1),
            ))
        }
        "njy_to_abmag" => {
            let [f] = exactly("nJy_to_abmag", args)?;
            let mag = bin(
                bin(
                    num(-2.5, false),
                    BinaryOperator::Multiply,
                    call("log10", vec![f.clone()]),
                ),
                BinaryOperator::Plus,
                num(AB_ZEROPOINT_NJY, false),
            );
            case_when(bin(f, BinaryOperator::Gt, num(0.0, false)), mag, None)
        }
        "njy_to_abmag_err" => {
            let [f, e] = exactly("nJy_to_abmag_err", args)?;
            let err = bin(
                num(MAG_ERR_SCALE, false),
                BinaryOperator::Multiply,
                bin(e, BinaryOperator::Divide, f.clone()),
            );
            case_when(bin(f, BinaryOperator::Gt, num(0.0, false)), err, None)
        }
        "abmag_to_njy" => {
            let [m] = exactly("abmag_to_nJy", args)?;
            call(
                "power",
                vec![
                    num(10.0, false),
                    bin(
                        bin(num(AB_ZEROPOINT_NJY, false), BinaryOperator::Minus, m),
                        BinaryOperator::Divide,
                        num(2.5, false),
                    ),
                ],
            )
        }
        "ab_color" => {
            let [f1, f2] = exactly("ab_color", args)?;
            let both = bin(
                bin(f1.clone(), BinaryOperator::Gt, num(0.0, false)),
                BinaryOperator::And,
                bin(f2.clone(), BinaryOperator::Gt, num(0.0, false)),
            );
            let color = bin(
                num(-2.5, false),
                BinaryOperator::Multiply,
                call("log10", vec![bin(f1, BinaryOperator::Divide, f2)]),
            );
            case_when(both, color, None)
        }
        "reduced_chi2" => {
            let [chi2, ndata, nparam] = exactly("reduced_chi2", args)?;
            let dof = bin(ndata, BinaryOperator::Minus, nparam);
            case_when(
                bin(dof.clone(), BinaryOperator::Gt, num(0.0, false)),
                bin(
                    chi2,
                    BinaryOperator::Divide,
                    bin(dof, BinaryOperator::Multiply, num(1.0, false)),
                ),
                None,
            )
        }
        _ => return Ok(None),
    }))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> NameMap {
        let mut n = NameMap::default();
        for s in ["coord_ra", "coord_dec", "r_psfFlux", "objectId", "visit"] {
            n.insert(s);
        }
        for s in ["dp", "Object", "Visit"] {
            n.insert_relation(s);
        }
        n
    }

    fn sql(adql: &str) -> String {
        translate(adql, &names()).unwrap().to_string()
    }

    #[test]
    fn top_becomes_limit_and_names_get_canonical_case() {
        let s = sql("SELECT TOP 5 objectid, R_PSFFLUX FROM dp.object ORDER BY r_psfflux DESC");
        assert!(s.contains("LIMIT 5"), "{s}");
        assert!(
            s.contains("\"objectId\"") && s.contains("\"r_psfFlux\"") && s.contains("\"Object\""),
            "{s}"
        );
        assert!(!s.contains("TOP"), "{s}");
    }

    #[test]
    fn geometry_predicates_become_udfs() {
        let s = sql(
            "SELECT * FROM dp.Object WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', 10, 20, 0.1))",
        );
        assert!(
            s.contains("adql_in_circle(coord_ra, coord_dec, 10, 20, 0.1)"),
            "{s}"
        );
        let s = sql("SELECT DISTANCE(POINT(coord_ra, coord_dec), POINT(1, 2)) AS d FROM dp.Object");
        assert!(
            s.contains("adql_distance(coord_ra, coord_dec, 1, 2)"),
            "{s}"
        );
        let s = sql(
            "SELECT * FROM dp.Object WHERE CONTAINS(POINT(coord_ra, coord_dec), BOX(10, 0, 2, 2)) = 1",
        );
        assert!(
            s.contains("adql_in_polygon(coord_ra, coord_dec, 8.99"),
            "{s}"
        );
    }

    #[test]
    fn top_in_union_branch_limits_that_branch() {
        let s =
            sql("SELECT TOP 1 objectId FROM dp.Object UNION SELECT TOP 2 objectId FROM dp.Object");
        assert!(s.contains("LIMIT 1") && s.contains("LIMIT 2"), "{s}");
    }

    #[test]
    fn unsupported_geometry_reports_a_position() {
        let e = translate(
            "SELECT * FROM dp.Object WHERE\n CONTAINS(REGION('Union ICRS (Circle 1 2 3)'), CIRCLE(1, 2, 3)) = 1",
            &names(),
        )
        .unwrap_err();
        assert!(e.message.contains("REGION"), "{e}");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn regions_from_stcs_and_coordinates_of_point_values() {
        let s = sql(
            "SELECT * FROM dp.Object WHERE CONTAINS(POINT(coord_ra, coord_dec), REGION('Circle ICRS 10 20 0.5')) = 1",
        );
        assert!(
            s.contains("adql_in_circle(coord_ra, coord_dec, 10.0, 20.0, 0.5)"),
            "{s}"
        );
        let s = sql("SELECT REGION('Position ICRS 1.5 -2') FROM dp.Object");
        assert!(s.contains("adql_point(1.5, -2.0)"), "{s}");
        let s = sql("SELECT COORD1(CENTROID(CIRCLE(1, 2, 3))), COORD2(p) FROM dp.Object");
        assert!(s.contains("array_element(p, 2)"), "{s}");
        for bad in [
            "Circle GALACTIC 1 2 3",
            "Circle ICRS 1 2",
            "Polygon 1 2 3 4",
            "",
        ] {
            assert!(
                translate(&format!("SELECT REGION('{bad}') FROM dp.Object"), &names()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn tables_and_columns_of_one_name_stay_apart() {
        let s = sql("SELECT visit FROM dp.visit");
        assert!(s.contains("SELECT visit FROM dp.\"Visit\""), "{s}");
    }

    #[test]
    fn log_is_natural() {
        assert!(sql("SELECT LOG(coord_ra) FROM dp.Object").contains("ln(coord_ra)"));
    }
}
