//! Wiring: opens the stores, builds the demo release when asked, assembles the HTTP services
//! and runs them until SIGINT/SIGTERM; also the catalog import command.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arrow::datatypes::DataType;
use aster_archive::catalog::{CatalogStore, DEFAULT_MAX_ROWS};
use aster_archive::formats::read_any;
use aster_archive::jobs::JobStore;
use aster_archive::query::QueryEngine;
use aster_archive::querylog::QueryLog;
use aster_archive::schema::{FelisColumn, FelisTable, FelisType, meta};
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
    let engine = QueryEngine::new(store).with_obscore(
        registry.clone(),
        format!("{}/datalink/links", config.links_base()),
    );
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
    let t = &config.tap;
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
    );
    let mut soda_uws = aster_protocols::uws::UwsConfig::new("soda");
    soda_uws.default_execution_duration = t.async_default_duration_secs;
    soda_uws.max_execution_duration = t.async_max_duration_secs;
    soda_uws.default_destruction = chrono::Duration::days(t.job_lifetime_days);
    let jobs_for_soda = jobs.clone();
    let vospace = aster_vospace::VoSpace::new(
        aster_vospace::NodeStore::open(
            &config.data_dir.join("vospace"),
            aster_vospace::objects_at(&config.vospace_location())?,
            config.vospace.quota_gib << 30,
        )?,
        auth.store().clone(),
        jobs.clone(),
        &config.vospace_authority(),
        config.public_url.clone(),
        config.links_base(),
    );
    let jobs_for_vospace = jobs.clone();
    let uws = tap::uws_config(
        t.async_default_duration_secs,
        t.async_max_duration_secs,
        chrono::Duration::days(t.job_lifetime_days),
        t.max_upload_bytes,
    );
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
        .merge(aster_protocols::auth::router(auth.clone(), dev_idp))
        .merge(aster_vospace::router(vospace, jobs_for_vospace))
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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
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

fn felis_from_arrow(
    name: &str,
    schema: &arrow::datatypes::Schema,
    ra: Option<&str>,
    dec: Option<&str>,
) -> Result<FelisTable> {
    let find = |given: Option<&str>, ucd: &str, names: &[&str]| -> Option<String> {
        if let Some(g) = given {
            return schema
                .fields()
                .iter()
                .find(|f| f.name().eq_ignore_ascii_case(g))
                .map(|f| f.name().clone());
        }
        schema
            .fields()
            .iter()
            .find(|f| {
                f.metadata()
                    .get(meta::UCD)
                    .is_some_and(|u| u.starts_with(ucd))
            })
            .or_else(|| {
                schema
                    .fields()
                    .iter()
                    .find(|f| names.iter().any(|n| f.name().eq_ignore_ascii_case(n)))
            })
            .map(|f| f.name().clone())
    };
    let ra_col = find(ra, "pos.eq.ra", &["ra", "raj2000", "ra_icrs", "coord_ra"]);
    let dec_col = find(
        dec,
        "pos.eq.dec",
        &["dec", "decl", "dej2000", "de_icrs", "coord_dec"],
    );
    if ra.is_some() && ra_col.is_none() {
        bail!("no column {} in the file", ra.unwrap_or_default());
    }
    if dec.is_some() && dec_col.is_none() {
        bail!("no column {} in the file", dec.unwrap_or_default());
    }
    let mut columns = Vec::new();
    for f in schema.fields() {
        let datatype = match f.data_type() {
            DataType::Boolean => FelisType::Boolean,
            DataType::Int8 | DataType::UInt8 => FelisType::Byte,
            DataType::Int16 => FelisType::Short,
            DataType::Int32 | DataType::UInt16 => FelisType::Int,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => FelisType::Long,
            DataType::Float16 | DataType::Float32 => FelisType::Float,
            DataType::Float64 | DataType::Decimal128(..) => FelisType::Double,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FelisType::String,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => FelisType::Timestamp,
            DataType::Binary | DataType::LargeBinary => FelisType::Binary,
            other => bail!("column {}: type {other} cannot be imported", f.name()),
        };
        let md = f.metadata();
        let mut ucd = md.get(meta::UCD).cloned();
        if Some(f.name()) == ra_col.as_ref() {
            ucd = Some("pos.eq.ra;meta.main".into());
        } else if Some(f.name()) == dec_col.as_ref() {
            ucd = Some("pos.eq.dec;meta.main".into());
        }
        columns.push(FelisColumn {
            name: f.name().clone(),
            datatype,
            length: None,
            description: md.get(meta::DESCRIPTION).cloned(),
            fits_unit: None,
            ivoa_unit: md.get(meta::UNIT).cloned(),
            ucd,
            utype: md.get(meta::UTYPE).cloned(),
            xtype: None,
            principal: None,
            std: None,
            nullable: Some(true),
        });
    }
    Ok(FelisTable {
        name: name.to_string(),
        description: Some(format!("Imported table {name}")),
        primary_key: None,
        table_index: None,
        columns,
        foreign_keys: vec![],
    })
}
