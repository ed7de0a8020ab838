//! The alert filtering service (DMS-REQ-0342, 0343, 0348): users choose alerts with an ADQL
//! condition over the alert's `diaSource` and `diaObject` records (the columns of Rubin's
//! alert schema, e.g. `diaSource.snr > 20 AND diaObject.nDiaSources = 1`; ADQL's functions
//! and geometry included) and its `host` (the galaxy most likely the DIASource's, of the
//! data release's Objects near it, which the alert schema does not carry: `host.objectId`,
//! `host.dist` in arcsec, `host.lnP`; null without one), or take a predefined filter, and
//! receive the alerts that pass as a Server-Sent Events stream, live and, after a
//! reconnection, from where they left.
//!
//! A filter is validated by the ADQL validator and planned against the alert tables when
//! it is given, so a wrong one is refused at once with the reason; its condition is kept
//! as a physical expression. The hub decodes each new run of alerts from the archive once,
//! into one batch, and evaluates each distinct filter on it once; each subscriber has a bounded queue, and one that falls
//! too far behind is ended with an `error` event rather than slowing the others (it can
//! resume with `Last-Event-ID` and lose nothing).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use aster_adql::translate::{NameMap, translate};
use aster_archive::alerts::decode::{alert_tables, arrow_schema};
use aster_archive::alerts::{
    AlertArchive, AlertQuery, AlertRef, AlertSchema, AlertTable, Host, confluent_frame,
};
use datafusion::common::DFSchemaRef;
use datafusion::common::tree_node::TreeNode;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};

/// The row key joining an alert's two tables.
const ROW: &str = "alert_row";
const MAX_FILTER: usize = 4_000;
/// Alerts a subscriber may have waiting before it is cut off.
const QUEUE: usize = 10_000;
const POLL: Duration = Duration::from_millis(100);
const BATCH: usize = 500;

/// Filters anyone may use, by name: (name, what it selects, the condition).
pub const PREDEFINED: &[(&str, &str, &str)] = &[
    (
        "bright-new-transients",
        "First detections of new objects brightening by more than 20th magnitude's flux, likely real",
        "diaObject.nDiaSources = 1 AND diaSource.psfFlux > 36300 AND diaSource.reliability >= 0.5",
    ),
    (
        "variables-brightening",
        "Objects seen at least three times, brighter than the template by 5 sigma",
        "diaObject.nDiaSources >= 3 AND diaSource.psfFlux > 5 * diaSource.psfFluxErr",
    ),
    (
        "nuclear-transients",
        "Brightenings at signal-to-noise 10 or more, likely real, within 0.5 arcsec of the centre of the galaxy most likely their host",
        "host.dist < 0.5 AND host.lnP > -0.69 AND diaSource.psfFlux > 0 AND diaSource.snr >= 10 AND diaSource.reliability >= 0.5",
    ),
    (
        "moving-objects",
        "DIASources associated with a solar system object",
        "diaSource.ssObjectId IS NOT NULL",
    ),
    (
        "high-snr",
        "Any change at signal-to-noise 50 or more",
        "diaSource.snr >= 50",
    ),
    (
        "fading",
        "Decreases in brightness at signal-to-noise 10 or more",
        "diaSource.psfFlux < 0 AND diaSource.snr >= 10",
    ),
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    #[error("the filter is empty")]
    Empty,
    #[error("the filter is longer than {MAX_FILTER} characters")]
    TooLong,
    #[error("the filter at column {column}: {message}")]
    Syntax { column: usize, message: String },
    #[error("the filter: {0}")]
    Invalid(String),
    #[error("no predefined filter '{0}'")]
    UnknownPredefined(String),
}

/// The tables a filter sees (`diaSource`, `diaObject`, `host`), each with the row key.
fn tables() -> Result<[SchemaRef; 3], FilterError> {
    let schema = AlertSchema::v11_1().map_err(|e| FilterError::Invalid(e.to_string()))?;
    let keyed = |base: &Schema| {
        let mut fields: Vec<Field> = base.fields().iter().map(|f| (**f).clone()).collect();
        fields.push(Field::new(ROW, DataType::Int64, false));
        Arc::new(Schema::new(fields))
    };
    let host = Schema::new(vec![
        Field::new("objectId", DataType::Int64, true),
        Field::new("dist", DataType::Float64, true),
        Field::new("lnP", DataType::Float64, true),
    ]);
    Ok([
        keyed(&arrow_schema(schema.record(AlertTable::DiaSource))),
        keyed(&arrow_schema(schema.record(AlertTable::DiaObject))),
        keyed(&host),
    ])
}

/// A validated filter, ready to run: its condition as a physical expression over the
/// two tables side by side (a run of alerts' `diaSource` and `diaObject` rows, row for
/// row), so running it on a batch is one vectorised evaluation, with no planning.
#[derive(Debug, Clone)]
pub struct Filter {
    pub expression: String,
    predicate: Arc<dyn PhysicalExpr>,
}

impl Filter {
    pub async fn compile(expression: &str) -> Result<Self, FilterError> {
        let expression = expression.trim();
        if expression.is_empty() {
            return Err(FilterError::Empty);
        }
        if expression.chars().count() > MAX_FILTER {
            return Err(FilterError::TooLong);
        }
        if expression.contains('\n') || expression.contains('\r') {
            return Err(FilterError::Invalid("a filter is one line".into()));
        }
        let [sources, objects, hosts] = tables()?;
        let mut names = NameMap::default();
        for t in ["diaSource", "diaObject", "host"] {
            names.insert_relation(t);
        }
        for f in [&sources, &objects, &hosts]
            .iter()
            .flat_map(|s| s.fields().iter())
        {
            names.insert(f.name());
        }
        // The condition is checked as part of the whole query it runs in, on a line of its
        // own, so the validator's columns on line 2 are the condition's.
        let adql = format!(
            "SELECT diaSource.{ROW} FROM diaSource LEFT OUTER JOIN diaObject ON diaSource.{ROW} = diaObject.{ROW} LEFT OUTER JOIN host ON diaSource.{ROW} = host.{ROW} WHERE (\n{expression}\n) ORDER BY diaSource.{ROW}"
        );
        let statement = translate(&adql, &names).map_err(|e| match e.line {
            2 => FilterError::Syntax {
                column: e.column,
                message: e.message,
            },
            // The closing parenthesis after the condition: the condition stopped short.
            3 => FilterError::Syntax {
                column: expression.chars().count() + 1,
                message: e
                    .message
                    .replace("found ')'", "found the end of the filter"),
            },
            _ => FilterError::Invalid(format!(
                "{} (the condition must be one complete boolean expression)",
                e.message
            )),
        })?;
        // One SELECT: a condition that closes the parenthesis and adds a UNION is refused.
        let single =
            matches!(&statement, Statement::Query(q) if matches!(*q.body, SetExpr::Select(_)));
        if !single {
            return Err(FilterError::Invalid(
                "the condition must be one boolean expression".into(),
            ));
        }
        // Planned against empty tables: unknown columns and wrong types show now.
        let ctx = context([
            RecordBatch::new_empty(sources),
            RecordBatch::new_empty(objects),
            RecordBatch::new_empty(hosts),
        ])?;
        let err = |e: datafusion::error::DataFusionError| FilterError::Invalid(e.strip_backtrace());
        let plan = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                statement,
            )))
            .await
            .map_err(err)?;
        let (condition, joined) = condition_of(&plan).ok_or_else(|| {
            FilterError::Invalid("the condition must be one boolean expression".into())
        })?;
        if condition
            .exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ))
            })
            .unwrap_or(true)
        {
            return Err(FilterError::Invalid(
                "a filter reads one alert at a time: subqueries are not allowed".into(),
            ));
        }
        let predicate = ctx
            .state()
            .create_physical_expr(condition, &joined)
            .map_err(err)?;
        Ok(Self {
            expression: expression.to_string(),
            predicate,
        })
    }

    pub async fn predefined(name: &str) -> Result<Self, FilterError> {
        let (_, _, expression) = PREDEFINED
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or_else(|| FilterError::UnknownPredefined(name.into()))?;
        Self::compile(expression).await
    }

    /// The rows of a run of alerts (see [`AlertRows`]) that pass.
    pub fn rows(&self, alerts: &AlertRows) -> Result<Vec<usize>, FilterError> {
        let err = |e: datafusion::error::DataFusionError| FilterError::Invalid(e.strip_backtrace());
        let n = alerts.0.num_rows();
        let values = self
            .predicate
            .evaluate(&alerts.0)
            .and_then(|v| v.into_array(n))
            .map_err(err)?;
        let mask = values
            .as_boolean_opt()
            .ok_or_else(|| FilterError::Invalid("the condition is not true or false".into()))?;
        Ok((0..n)
            .filter(|&i| mask.is_valid(i) && mask.value(i))
            .collect())
    }
}

/// The condition of a planned filter query, and the schema of the rows it is applied to.
fn condition_of(plan: &LogicalPlan) -> Option<(Expr, DFSchemaRef)> {
    match plan {
        LogicalPlan::Filter(f) => Some((f.predicate.clone(), f.input.schema().clone())),
        other => other.inputs().into_iter().find_map(condition_of),
    }
}

/// A run of alerts as one batch: its `diaSource` columns, its `diaObject` columns and its
/// `host` columns, one row per alert, as the filters' condition reads them.
pub struct AlertRows(RecordBatch);

/// A session holding the alert's tables, with ADQL's functions.
fn context([sources, objects, hosts]: [RecordBatch; 3]) -> Result<SessionContext, FilterError> {
    let ctx = SessionContext::new();
    for f in aster_adql::udf::all() {
        ctx.register_udf(f);
    }
    let err = |e: datafusion::error::DataFusionError| FilterError::Invalid(e.strip_backtrace());
    for (name, batch) in [
        ("diaSource", sources),
        ("diaObject", objects),
        ("host", hosts),
    ] {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(err)?;
        // By its exact name: a plain string would be taken as SQL and lowercased.
        ctx.register_table(
            datafusion::common::TableReference::bare(name),
            Arc::new(table),
        )
        .map_err(err)?;
    }
    Ok(ctx)
}

impl AlertRows {
    /// Decodes `bodies` (alert datums) into rows, beside each alert's host.
    pub fn decode(bodies: &[&[u8]], hosts: &[Option<Host>]) -> Result<Self, FilterError> {
        if hosts.len() != bodies.len() {
            return Err(FilterError::Invalid("a host for each alert".into()));
        }
        let (sources, objects) =
            alert_tables(bodies).map_err(|e| FilterError::Invalid(e.to_string()))?;
        let key: ArrayRef = Arc::new(Int64Array::from_iter_values(0..bodies.len() as i64));
        let host: [ArrayRef; 3] = [
            Arc::new(Int64Array::from_iter(
                hosts.iter().map(|h| h.map(|h| h.object_id)),
            )),
            Arc::new(Float64Array::from_iter(
                hosts.iter().map(|h| h.map(|h| h.dist)),
            )),
            Arc::new(Float64Array::from_iter(
                hosts.iter().map(|h| h.map(|h| h.ln_p)),
            )),
        ];
        let schemas = tables()?;
        let fields: Vec<Field> = schemas
            .iter()
            .flat_map(|s| s.fields().iter())
            .map(|f| (**f).clone().with_nullable(true))
            .collect();
        let columns: Vec<ArrayRef> = sources
            .columns()
            .iter()
            .cloned()
            .chain([key.clone()])
            .chain(objects.columns().iter().cloned())
            .chain([key.clone()])
            .chain(host)
            .chain([key])
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map(Self)
            .map_err(|e| FilterError::Invalid(e.to_string()))
    }
}

/// An alert on its way to subscribers: its place in the archive, and the JSON of its
/// event (made once, whoever receives it).
#[derive(Debug)]
pub struct Event {
    pub alert: AlertRef,
    /// `alertId`, `diaObjectId`, `visit`, `mjd`, `archivedAt` and `alert`: the alert in
    /// the Confluent wire format, in base64.
    pub data: String,
}

struct Subscriber {
    filter: Arc<Filter>,
    queue: tokio::sync::mpsc::Sender<Arc<Event>>,
}

#[derive(Default)]
struct HubState {
    /// The last alert the hub has handed out.
    position: i64,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
}

/// Follows the archive and hands each new alert to the subscribers whose filter it passes.
#[derive(Clone)]
pub struct FilterHub {
    archive: AlertArchive,
    state: Arc<Mutex<HubState>>,
}

/// A subscription: its live queue, and the last alert before it began.
pub struct Subscription {
    pub id: u64,
    pub position: i64,
    pub queue: tokio::sync::mpsc::Receiver<Arc<Event>>,
    hub: FilterHub,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut s) = self.hub.state.lock() {
            s.subscribers.remove(&self.id);
        }
    }
}

impl FilterHub {
    /// Starts following the archive from its newest alert.
    pub fn start(archive: AlertArchive) -> Result<Self, aster_archive::alerts::AlertArchiveError> {
        let position = archive.last_seq()?;
        let hub = Self {
            archive,
            state: Arc::new(Mutex::new(HubState {
                position,
                ..Default::default()
            })),
        };
        let running = hub.clone();
        tokio::spawn(async move {
            loop {
                match running.step().await {
                    Ok(0) => tokio::time::sleep(POLL).await,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "alert filtering");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(hub)
    }

    pub fn subscribers(&self) -> usize {
        self.state.lock().map_or(0, |s| s.subscribers.len())
    }

    pub fn subscribe(&self, filter: Arc<Filter>) -> Subscription {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.next_id += 1;
        let id = s.next_id;
        s.subscribers.insert(id, Subscriber { filter, queue: tx });
        Subscription {
            id,
            position: s.position,
            queue: rx,
            hub: self.clone(),
        }
    }

    async fn step(&self) -> Result<usize, String> {
        let position = self.state.lock().map_err(|e| e.to_string())?.position;
        let (refs, bodies) = read(&self.archive, position, None).await?;
        let Some(last) = refs.last().map(|r| r.seq) else {
            return Ok(0);
        };
        let events = events_of(&refs, &bodies);
        let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let hosts: Vec<Option<Host>> = refs.iter().map(|r| r.host).collect();
        let rows = AlertRows::decode(&slices, &hosts).map_err(|e| e.to_string())?;
        let subscribers: Vec<(u64, Arc<Filter>, tokio::sync::mpsc::Sender<Arc<Event>>)> = {
            let s = self.state.lock().map_err(|e| e.to_string())?;
            s.subscribers
                .iter()
                .map(|(id, x)| (*id, x.filter.clone(), x.queue.clone()))
                .collect()
        };
        // Each distinct filter runs once, whoever holds it.
        let mut passed: HashMap<&str, Vec<usize>> = HashMap::new();
        for (_, f, _) in &subscribers {
            if !passed.contains_key(f.expression.as_str()) {
                let pass = f.rows(&rows).unwrap_or_else(|e| {
                    tracing::warn!(filter = f.expression, error = %e, "a filter failed");
                    Vec::new()
                });
                passed.insert(&f.expression, pass);
            }
        }
        let mut s = self.state.lock().map_err(|e| e.to_string())?;
        for (id, f, queue) in &subscribers {
            for &row in &passed[f.expression.as_str()] {
                if queue.try_send(events[row].clone()).is_err() {
                    // Too far behind, or gone: it ends, and may resume from its last event.
                    s.subscribers.remove(id);
                    break;
                }
            }
        }
        s.position = last;
        Ok(refs.len())
    }

    /// The alerts after `after` up to `until` that pass `filter`, for a subscriber catching
    /// up before its live queue.
    pub async fn backlog(
        &self,
        filter: &Filter,
        mut after: i64,
        until: i64,
    ) -> Result<Vec<Arc<Event>>, String> {
        let mut out = Vec::new();
        while after < until {
            let (refs, bodies) = read(&self.archive, after, Some(until)).await?;
            let Some(last) = refs.last().map(|r| r.seq) else {
                break;
            };
            let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
            let hosts: Vec<Option<Host>> = refs.iter().map(|r| r.host).collect();
            let rows = AlertRows::decode(&slices, &hosts).map_err(|e| e.to_string())?;
            let events = events_of(&refs, &bodies);
            for row in filter.rows(&rows).map_err(|e| e.to_string())? {
                out.push(events[row].clone());
            }
            after = last;
        }
        Ok(out)
    }
}

fn events_of(refs: &[AlertRef], bodies: &[Vec<u8>]) -> Vec<Arc<Event>> {
    refs.iter()
        .zip(bodies)
        .map(|(r, b)| {
            use base64::Engine;
            let data = serde_json::json!({
                "alertId": r.alert_id,
                "diaObjectId": r.dia_object_id,
                "visit": r.visit,
                "mjd": r.mjd,
                "archivedAt": r.archived_at,
                "alert": base64::engine::general_purpose::STANDARD.encode(confluent_frame(b)),
            })
            .to_string();
            Arc::new(Event {
                alert: r.clone(),
                data,
            })
        })
        .collect()
}

/// The next alerts after `after` (up to `until`), with their bodies.
async fn read(
    archive: &AlertArchive,
    after: i64,
    until: Option<i64>,
) -> Result<(Vec<AlertRef>, Vec<Vec<u8>>), String> {
    let a = archive.clone();
    tokio::task::spawn_blocking(move || {
        let mut refs = a.find(&AlertQuery {
            after_seq: Some(after),
            limit: BATCH,
            ..Default::default()
        })?;
        if let Some(u) = until {
            refs.retain(|r| r.seq <= u);
        }
        let bodies = refs
            .iter()
            .map(|r| a.read(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, aster_archive::alerts::AlertArchiveError>((refs, bodies))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filters_are_checked_when_given() {
        let ok = [
            "diaSource.snr > 20 AND diaObject.nDiaSources = 1",
            "snr > 20",
            "CONTAINS(POINT('ICRS', diaSource.ra, diaSource.dec), CIRCLE('ICRS', 62.4, -36.6, 0.5)) = 1",
            "host.dist < 0.5 AND host.lnP > -1",
            "host.objectId IS NULL",
        ];
        for f in ok {
            assert!(Filter::compile(f).await.is_ok(), "{f}");
        }
        for p in PREDEFINED {
            assert!(Filter::predefined(p.0).await.is_ok(), "{}", p.0);
        }
        let err = |f: &str| {
            let f = f.to_string();
            async move { Filter::compile(&f).await.unwrap_err() }
        };
        assert_eq!(err("  ").await, FilterError::Empty);
        assert_eq!(err(&"x".repeat(5000)).await, FilterError::TooLong);
        assert!(matches!(
            err("diaSource.snr >").await,
            FilterError::Syntax { .. }
        ));
        let e = err("diaSource.nosuch > 3").await;
        assert!(e.to_string().contains("nosuch"), "{e}");
        // ra is in both tables.
        let e = err("ra > 3").await;
        assert!(e.to_string().contains("ra"), "{e}");
        err("1=1) UNION SELECT diaObject.alert_row FROM diaObject WHERE (1=1").await;
        err("diaSource.snr > 1; DROP TABLE x").await;
        err("diaSource.snr > 1\nOR 1=1").await;
        assert!(matches!(
            Filter::predefined("nope").await,
            Err(FilterError::UnknownPredefined(_))
        ));
    }
}
