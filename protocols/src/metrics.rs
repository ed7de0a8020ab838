//! Prometheus metrics of the services, exposed at /metrics.
use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

static QUERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new("aster_tap_queries_total", "TAP queries by mode and outcome"),
        &["mode", "status"],
    )
    .expect("valid metric");
    let _ = REGISTRY.register(Box::new(c.clone()));
    c
});

static QUERY_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new("aster_tap_query_seconds", "TAP query duration").buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ]),
        &["mode"],
    )
    .expect("valid metric");
    let _ = REGISTRY.register(Box::new(h.clone()));
    h
});

static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new("aster_http_requests_total", "HTTP requests by status class"),
        &["status"],
    )
    .expect("valid metric");
    let _ = REGISTRY.register(Box::new(c.clone()));
    c
});

pub fn query_done(mode: &str, status: &str, elapsed: Duration) {
    QUERIES.with_label_values(&[mode, status]).inc();
    QUERY_SECONDS
        .with_label_values(&[mode])
        .observe(elapsed.as_secs_f64());
}

pub fn http_response(status: u16) {
    let class = format!("{}xx", status / 100);
    HTTP_REQUESTS.with_label_values(&[class.as_str()]).inc();
}

/// The text exposition of every metric.
pub fn render() -> String {
    LazyLock::force(&QUERIES);
    LazyLock::force(&QUERY_SECONDS);
    LazyLock::force(&HTTP_REQUESTS);
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&REGISTRY.gather(), &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
