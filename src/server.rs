//! Wiring: opens the stores, builds the demo release when asked, assembles the HTTP services
//! and runs them until SIGINT/SIGTERM; also the catalog import command.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aster_archive::catalog::{CatalogStore, DEFAULT_MAX_ROWS};
use aster_archive::formats::read_any;
use aster_archive::jobs::JobStore;
use aster_archive::query::QueryEngine;
use aster_archive::querylog::QueryLog;
use aster_archive::schema::felis_from_arrow;
use aster_protocols::{images, metrics, schedule, tap};
use axum::Router;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};

use crate::config::Config;
use crate::demo;
use crate::regenerate::PipelineRegenerator;

pub fn open_store(config: &Config) -> Result<CatalogStore> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    CatalogStore::open(&config.catalog_location()).context("opening the catalog store")
}

/// The alert archive, under `<data dir>/alerts`.
pub fn open_alerts(config: &Config) -> Result<aster_archive::alerts::AlertArchive> {
    aster_archive::alerts::AlertArchive::open(&config.data_dir.join("alerts"))
        .context("opening the alert archive")
}

/// The alert archive's HTTP service, with the distribution sinks the configuration names
/// started on it (the demo has Kafka's mock cluster when no brokers are given).
fn alert_service(
    config: &Config,
    with_demo: bool,
) -> Result<aster_protocols::alerts::AlertService> {
    use aster_protocols::alerts::kafka::{KafkaSink, UserTopicsSink};
    use aster_protocols::alerts::{distribute, voevent};
    let archive = open_alerts(config)?;
    if with_demo && archive.filters("alice")?.is_empty() {
        // The demo's alice follows bright new transients: her topic and saved stream.
        let (name, _, expression) = aster_protocols::alerts::filter::PREDEFINED[0];
        archive.add_filter("alice", name, expression)?;
    }
    let mut streams = serde_json::Map::new();
    let brokers = config
        .alerts
        .kafka_brokers
        .clone()
        .or_else(|| with_demo.then(|| "mock".to_string()));
    if let Some(brokers) = brokers {
        let sink = KafkaSink::connect(&brokers, &config.alerts.kafka_topic)
            .context("starting the Kafka producer")?;
        tracing::info!(
            bootstrap = sink.bootstrap(),
            topic = sink.topic(),
            "alerts on Kafka"
        );
        streams.insert(
            "kafka".into(),
            serde_json::json!({
                "bootstrap_servers": sink.bootstrap(),
                "topic": sink.topic(),
                "mock_cluster": brokers.trim() == "mock",
                "format": "Confluent wire format: byte 0, the schema id (4 bytes, big-endian), the Avro alert",
                "schema_id": aster_archive::alerts::AlertSchema::SCHEMA_ID,
                "user_topics": format!(
                    "{}.<user>: the alerts a user's saved filters pass (characters a topic name cannot hold made _)",
                    sink.topic()
                ),
            }),
        );
        // Users' saved filters, each user's on a topic of their own.
        distribute::spawn(
            archive.clone(),
            std::sync::Arc::new(UserTopicsSink::new(&sink, archive.clone())),
        );
        distribute::spawn(archive.clone(), std::sync::Arc::new(sink));
    }
    if let Some(broker) = &config.alerts.voevent_broker {
        let host = url::Url::parse(&config.links_base())
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".into());
        let author = voevent::VoEventAuthor {
            broker: broker.clone(),
            stream: config
                .alerts
                .voevent_stream
                .clone()
                .unwrap_or_else(|| format!("ivo://{host}/alerts")),
            public_url: config.links_base(),
        };
        streams.insert(
            "voevent".into(),
            serde_json::json!({ "broker": author.broker, "stream": author.stream }),
        );
        distribute::spawn(
            archive.clone(),
            std::sync::Arc::new(voevent::VoEventSink(author)),
        );
    }
    Ok(aster_protocols::alerts::AlertService::new(archive)
        .with_streams(streams.into())
        .with_filtering()?)
}

pub async fn serve(config: Config, with_demo: bool) -> Result<()> {
    let store = open_store(&config)?;
    if with_demo && store.tables().await?.is_empty() {
        tracing::info!("building the demo data release");
        let t = std::time::Instant::now();
        demo::build(
            &store,
            demo::DemoSpec {
                objects: config.demo.objects,
                visits: config.demo.visits,
                seed: config.demo.seed,
            },
        )
        .await?;
        tracing::info!(seconds = t.elapsed().as_secs_f64(), "demo release ready");
    }
    let registry = Arc::new(config.open_registry()?);
    if with_demo && config.demo.image_visits > 0 {
        demo::build_images(&config, &store, &registry).await?;
    }
    let night = config.data_dir.join("night");
    if with_demo && config.demo.night_visits > 0 && !night.join("latency.jsonl").exists() {
        // A season's short nights first, then the night itself, which goes on from them.
        let alerts = open_alerts(&config)?;
        let season = config.demo.night_season;
        for k in 0..=season {
            let (visits, out) = if k == season {
                (config.demo.night_visits, night.clone())
            } else {
                let out = night.join("season").join(format!("night-{k}"));
                if out.join("latency.jsonl").exists() {
                    continue;
                }
                (config.demo.night_season_visits, out)
            };
            if visits == 0 {
                continue;
            }
            tracing::info!(night = k, visits, "the demo's alert production");
            let s = crate::night::run(
                &store,
                &alerts,
                &crate::night::NightSpec {
                    night: k,
                    // The season leads up to the night the asteroids cross the field.
                    epoch: season,
                    visits,
                    size: config.demo.night_ccd_size,
                    out,
                    ..crate::night::NightSpec::default()
                },
            )
            .await?;
            tracing::info!(
                night = k,
                dia_sources = s.dia_sources,
                dia_objects = s.dia_objects,
                "alert production done"
            );
        }
    }
    if with_demo {
        demo::publish_schedule(&config.data_dir)?;
        // The Object table as a catalog HiPS, for overlays in Aladin and the portal.
        let catalog = crate::hips_catalog::CatalogHipsOptions::default();
        let tree = aster_archive::hips::hips_dir(&config.data_dir).join(&catalog.id);
        if !tree.join("properties").exists() {
            let (rows, tiles) =
                crate::hips_catalog::build(&config.data_dir, &store, &catalog).await?;
            tracing::info!(rows, tiles, "the demo's catalog HiPS");
        }
    }
    let (auth, dev_idp) = crate::identity::build(&config, with_demo)?;
    if with_demo {
        crate::identity::seed_demo(auth.store())?;
    }
    let user_tables =
        aster_archive::user_tables::UserTables::open(&config.data_dir.join("user_tables.sqlite"))?;
    let engine = QueryEngine::new(store)
        .with_obscore(
            registry.clone(),
            format!("{}/datalink/links", config.links_base()),
        )
        .with_user_tables(user_tables.clone());
    let regenerator = Arc::new(PipelineRegenerator::new(
        &config.data_dir,
        registry.clone(),
        Duration::from_secs(config.images.cache_lifetime_days * 86_400),
    ));
    {
        // The regeneration cache is swept at start and every hour.
        let regenerator = regenerator.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                match regenerator.evict() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(files = n, "evicted regenerated images"),
                    Err(e) => tracing::warn!(error = %e, "evicting regenerated images"),
                }
            }
        });
    }
    let image_services =
        images::ImageServices::new(registry, config.public_url.clone(), Some(regenerator))
            .with_engine(engine.clone());
    let log = QueryLog::open(&config.data_dir.join("querylog.sqlite"))?;
    let jobs = JobStore::open(&config.data_dir.join("jobs.sqlite"))?;
    let policy = config.limit_policy(auth.store().clone());
    let scheduler = aster_protocols::uws::Scheduler::new(policy.clone(), jobs.clone());
    let t = &config.tap;
    let engine_for_tables = engine.clone();
    let service = tap::TapService::new(
        engine,
        log,
        tap::TapLimits {
            default_maxrec: t.default_maxrec,
            max_maxrec: t.max_maxrec,
            sync_timeout: Duration::from_secs(t.sync_timeout_secs),
        },
        t.max_upload_bytes,
        config.public_url.clone(),
        tap::UploadSources::new(
            &[config.own_base_urls(), t.upload_url_prefixes.clone()].concat(),
            t.max_upload_bytes,
            Duration::from_secs(t.sync_timeout_secs),
        )
        .map_err(anyhow::Error::msg)?,
    )
    .with_identity(auth.store().clone())
    .with_async_limits(
        tap::AsyncLimits {
            default_duration: t.async_default_duration_secs,
            max_duration: t.async_max_duration_secs,
            retention: chrono::Duration::days(t.job_lifetime_days),
        },
        Some(scheduler.clone()),
    );
    let mut soda_uws = aster_protocols::uws::UwsConfig::new("soda");
    soda_uws.default_execution_duration = t.async_default_duration_secs;
    soda_uws.max_execution_duration = t.async_max_duration_secs;
    soda_uws.default_destruction = chrono::Duration::days(t.job_lifetime_days);
    soda_uws.scheduler = Some(scheduler.clone());
    let jobs_for_soda = jobs.clone();
    let quota_policy = policy.clone();
    let nodes = aster_vospace::NodeStore::open(
        &config.data_dir.join("vospace"),
        aster_vospace::objects_at(&config.vospace_location())?,
        config.vospace.quota_gib << 30,
    )?
    .with_quotas(std::sync::Arc::new(move |home: &str| {
        quota_policy.for_user(Some(home)).quota_bytes
    }));
    if with_demo {
        demo::seed_user_space(&engine_for_tables, &user_tables, &nodes).await?;
    }
    let vospace = aster_vospace::VoSpace::new(
        nodes,
        auth.store().clone(),
        jobs.clone(),
        &config.vospace_authority(),
        config.public_url.clone(),
        config.links_base(),
    );
    let jobs_for_vospace = jobs.clone();
    // SODA cuts users' own images in VOSpace too, with their access rules.
    let image_services = image_services.with_private_images(std::sync::Arc::new(
        aster_vospace::VoSpaceImages::new(vospace.clone()),
    ));
    let tables = aster_vospace::Tables::new(engine_for_tables, user_tables, vospace.clone());
    let mut uws = tap::uws_config(
        t.async_default_duration_secs,
        t.async_max_duration_secs,
        chrono::Duration::days(t.job_lifetime_days),
        t.max_upload_bytes,
    );
    uws.scheduler = Some(scheduler.clone());
    let app = Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics::render(),
                )
            }),
        )
        .nest("/tap", tap::router(service, jobs, uws))
        .merge(images::router(image_services, jobs_for_soda, soda_uws))
        .merge(aster_protocols::portal::router())
        .merge(aster_protocols::hips::router(
            aster_protocols::hips::HipsService::new(&config.data_dir, config.public_url.clone()),
        ))
        .merge(schedule::router(schedule::ScheduleService::new(
            aster_archive::schedule::ScheduleStore::new(&config.data_dir),
            config.schedule_token.clone(),
        )))
        .merge(aster_protocols::auth::router(
            auth.clone(),
            dev_idp,
            Some(scheduler.clone()),
        ))
        .merge(aster_vospace::router(
            vospace,
            jobs_for_vospace,
            Some(scheduler.clone()),
        ))
        .merge(aster_vospace::tables_router(tables))
        .merge(aster_protocols::alerts::router(alert_service(
            &config, with_demo,
        )?))
        .layer(middleware::from_fn_with_state(
            auth,
            aster_protocols::auth::layer,
        ))
        .layer(middleware::from_fn(count_responses))
        .layer(CatchPanicLayer::custom(|_| {
            tap::error_response(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the request failed unexpectedly",
            )
        }))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods(Any)
                .allow_headers(Any)
                .expose_headers(Any),
        )
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("listening on {}", config.addr))?;
    tracing::info!(addr = %config.addr, "Aster is serving: TAP at http://{}/tap", config.addr);
    // Results stream in many small writes; without TCP_NODELAY each can wait for the
    // client's delayed ACK (40 ms on Linux) on kept-alive connections.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown().await;
        let _ = stopping.send(true);
    });
    // Long-lived responses (alert streams) never end by themselves: after the signal,
    // open connections have 10 s to finish.
    let grace = async move {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    tokio::select! {
        r = server.into_future() => r?,
        _ = grace => tracing::warn!("connections still open 10 s after the signal: stopping"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn count_responses(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    metrics::http_response(resp.status().as_u16());
    resp.headers_mut().insert(
        header::SERVER,
        axum::http::HeaderValue::from_static(concat!("Aster/", env!("CARGO_PKG_VERSION"))),
    );
    resp
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// `aster catalog import`: files into SCHEMA.NAME, creating the table from the first file's
/// columns (units, UCDs and descriptions from its metadata) when it does not exist.
pub async fn import(
    store: &CatalogStore,
    table: &str,
    ra: Option<&str>,
    dec: Option<&str>,
    files: &[PathBuf],
) -> Result<()> {
    let (schema, name) = table
        .split_once('.')
        .filter(|(s, n)| valid_ident(s) && valid_ident(n))
        .with_context(|| {
            format!("--table {table}: expected SCHEMA.NAME with letters, digits and _")
        })?;
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let t = read_any(&file.display().to_string(), bytes.into())
            .with_context(|| format!("reading {}", file.display()))?;
        if store.manifest(schema, name).await?.is_none() {
            let felis = felis_from_arrow(name, &t.schema, ra, dec)?;
            store.create_table(schema, &felis, DEFAULT_MAX_ROWS).await?;
        }
        let rows: usize = t.batches.iter().map(|b| b.num_rows()).sum();
        let m = store
            .append(schema, name, &t.batches)
            .await
            .with_context(|| format!("loading {}", file.display()))?;
        println!(
            "{}: {rows} rows into {schema}.{name} ({} rows, {} partitions)",
            file.display(),
            m.rows(),
            m.partitions.len()
        );
    }
    Ok(())
}

fn valid_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
