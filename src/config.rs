//! Configuration: defaults, overridden by a TOML file (`--config` or `ASTER_CONFIG`), then by
//! `ASTER_*` environment variables, then by command-line flags.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// Every setting, with its default. The TOML file uses the same names.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the archive keeps its metadata (SQLite) and, by default, its catalogs.
    pub data_dir: PathBuf,
    /// Address the server listens on.
    pub addr: SocketAddr,
    /// Where catalogs live: a directory or `file://` URL, or `s3://bucket/prefix`.
    /// Default: `<data_dir>/catalogs`.
    pub catalog_url: Option<String>,
    /// Public base URL of the service as clients see it (for links in job documents and
    /// capabilities). Default: taken from each request's Host header.
    pub public_url: Option<String>,
    /// Where the dataset registry's tables are: `postgresql://user:password@host/db`.
    /// Default: SQLite at `<data_dir>/registry.sqlite3`.
    pub registry_url: Option<String>,
    /// Bearer token the observatory control system POSTs the predicted visit schedule
    /// with; unset, `/api/schedule` is read-only and `aster schedule publish` feeds it.
    pub schedule_token: Option<String>,
    pub tap: TapConfig,
    pub images: ImagesConfig,
    pub demo: DemoConfig,
    pub auth: AuthConfig,
    pub vospace: VospaceConfig,
    pub limits: LimitsConfig,
    pub alerts: AlertsConfig,
}

/// Alert distribution (DMS-REQ-0002): where the alert archive's alerts go as they arrive.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Kafka brokers (`host:port,host:port`), or `mock` for librdkafka's mock cluster
    /// inside the server. Unset: no Kafka, except that `serve --demo` starts the mock.
    pub kafka_brokers: Option<String>,
    pub kafka_topic: String,
    /// A VOEvent broker's VTP address (`host:port`; Comet's `--receive-port`) that alerts
    /// are submitted to as VOEvent 2.0. Unset: none.
    pub voevent_broker: Option<String>,
    /// The IVORN of the alert stream. Default: `ivo://<public host>/alerts`.
    pub voevent_stream: Option<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            kafka_brokers: None,
            kafka_topic: "alerts".into(),
            voevent_broker: None,
            voevent_stream: None,
        }
    }
}

/// Resource allocation (DMS-REQ-0119): async jobs at once and waiting, per signed-in user
/// (anonymous callers share one allocation), with overrides per group (the most generous
/// group wins) and per user. Execution time and storage default to `tap` and `vospace`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub async_jobs: usize,
    pub queued_jobs: usize,
    pub priority: i32,
    pub anonymous_async_jobs: usize,
    pub anonymous_queued_jobs: usize,
    pub users: std::collections::HashMap<String, aster_archive::identity::limits::LimitOverrides>,
    pub groups: std::collections::HashMap<String, aster_archive::identity::limits::LimitOverrides>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            async_jobs: 4,
            queued_jobs: 100,
            priority: 0,
            anonymous_async_jobs: 2,
            anonymous_queued_jobs: 20,
            users: Default::default(),
            groups: Default::default(),
        }
    }
}

/// Users' own storage (VOSpace).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VospaceConfig {
    /// Where the bytes go: a directory or `s3://bucket/prefix`.
    /// Default: `<data_dir>/vospace/objects`.
    pub url: Option<String>,
    /// How node URIs name this service: `vos://<authority>/...`, e.g.
    /// `archive.example.org!vospace`. Default: the public URL's host, else `localhost`.
    pub authority: Option<String>,
    /// GiB each user's home may hold.
    pub quota_gib: u64,
}

impl Default for VospaceConfig {
    fn default() -> Self {
        Self {
            url: None,
            authority: None,
            quota_gib: 20,
        }
    }
}

/// Who may sign in, and how (DMS-REQ-0340).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The OpenID Connect provider browsers sign in with (its issuer URL; discovery is at
    /// `<issuer>/.well-known/openid-configuration`). Unset: no browser sign-in, only
    /// personal tokens made with `aster token create`.
    pub oidc_issuer: Option<String>,
    pub oidc_client_id: Option<String>,
    pub oidc_client_secret: Option<String>,
    /// Scopes to ask for beyond `openid profile email`.
    pub oidc_scopes: Vec<String>,
    /// Serve a development OpenID provider at `/dev-idp` that signs anyone in as one of
    /// `dev_users` without a password, and use it. For development and the demo only
    /// (`serve --demo` turns it on when no provider is configured).
    pub dev_provider: bool,
    pub dev_users: Vec<String>,
    /// Users who are administrators (they read every log and job).
    pub admins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Days a regenerated image (DMS-REQ-0311) stays in the cache after its last use.
    pub cache_lifetime_days: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            cache_lifetime_days: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TapConfig {
    /// Rows returned when a query gives no MAXREC.
    pub default_maxrec: u64,
    /// The most rows any query may return.
    pub max_maxrec: u64,
    /// Seconds a synchronous query may run before it is cancelled with an error.
    pub sync_timeout_secs: u64,
    /// Default and maximum run time of async jobs, seconds.
    pub async_default_duration_secs: u64,
    pub async_max_duration_secs: u64,
    /// Days async jobs and their results are kept.
    pub job_lifetime_days: i64,
    /// Largest request body (uploads), bytes; also the largest table fetched from a URL.
    pub max_upload_bytes: usize,
    /// URL prefixes under which UPLOAD may name tables for the service to fetch (TAP's
    /// upload-http). The archive's own base URL is always allowed, so a finished job's
    /// result can be uploaded into the next query; nothing else is fetched unless listed.
    pub upload_url_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    pub objects: u64,
    pub visits: u64,
    pub seed: u64,
    /// The demo's simulated raws processed by the pipelines: visits (0 for none), CCDs
    /// and CCD size in pixels.
    pub image_visits: usize,
    pub image_ccds: usize,
    pub image_ccd_size: usize,
    /// The demo's night of alert production (`aster night run`): visits (0 for none) and
    /// CCD size in pixels.
    pub night_visits: usize,
    pub night_ccd_size: usize,
    /// Nights of the season before the demo's night, and visits in each: the night goes on
    /// from their DIAObjects, whose light curves are then long enough for periods.
    pub night_season: u32,
    pub night_season_visits: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("aster-data"),
            addr: "127.0.0.1:8080".parse().expect("valid default address"),
            catalog_url: None,
            public_url: None,
            registry_url: None,
            schedule_token: None,
            tap: TapConfig::default(),
            images: ImagesConfig::default(),
            demo: DemoConfig::default(),
            auth: AuthConfig::default(),
            vospace: VospaceConfig::default(),
            limits: LimitsConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

impl Default for TapConfig {
    fn default() -> Self {
        Self {
            default_maxrec: 100_000,
            max_maxrec: 50_000_000,
            sync_timeout_secs: 600,
            async_default_duration_secs: 3600,
            async_max_duration_secs: 86_400,
            job_lifetime_days: 7,
            max_upload_bytes: 256 << 20,
            upload_url_prefixes: Vec::new(),
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            objects: 100_000,
            visits: 24,
            seed: 2026,
            image_visits: 4,
            image_ccds: 2,
            image_ccd_size: 2048,
            night_visits: 4,
            night_ccd_size: 1024,
            night_season: 8,
            night_season_visits: 2,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file if one is named, then `ASTER_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading configuration {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing configuration {}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn parse<T: std::str::FromStr>(name: &str, v: String) -> Result<T>
        where
            T::Err: std::fmt::Display,
        {
            v.parse::<T>()
                .map_err(|e| anyhow::anyhow!("{name}={v}: {e}"))
        }
        if let Some(v) = get("ASTER_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("ASTER_ADDR") {
            self.addr = parse("ASTER_ADDR", v)?;
        }
        if let Some(v) = get("ASTER_CATALOG_URL") {
            self.catalog_url = Some(v);
        }
        if let Some(v) = get("ASTER_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = get("ASTER_REGISTRY_URL") {
            self.registry_url = Some(v);
        }
        if let Some(v) = get("ASTER_SCHEDULE_TOKEN") {
            self.schedule_token = Some(v);
        }
        if let Some(v) = get("ASTER_OIDC_ISSUER") {
            self.auth.oidc_issuer = Some(v);
        }
        if let Some(v) = get("ASTER_OIDC_CLIENT_ID") {
            self.auth.oidc_client_id = Some(v);
        }
        if let Some(v) = get("ASTER_OIDC_CLIENT_SECRET") {
            self.auth.oidc_client_secret = Some(v);
        }
        if let Some(v) = get("ASTER_TAP_DEFAULT_MAXREC") {
            self.tap.default_maxrec = parse("ASTER_TAP_DEFAULT_MAXREC", v)?;
        }
        if let Some(v) = get("ASTER_TAP_MAX_MAXREC") {
            self.tap.max_maxrec = parse("ASTER_TAP_MAX_MAXREC", v)?;
        }
        if let Some(v) = get("ASTER_TAP_SYNC_TIMEOUT_SECS") {
            self.tap.sync_timeout_secs = parse("ASTER_TAP_SYNC_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("ASTER_IMAGES_CACHE_LIFETIME_DAYS") {
            self.images.cache_lifetime_days = parse("ASTER_IMAGES_CACHE_LIFETIME_DAYS", v)?;
        }
        if let Some(v) = get("ASTER_TAP_UPLOAD_URL_PREFIXES") {
            self.tap.upload_url_prefixes = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
        }
        Ok(())
    }

    /// Base URLs clients reach this server at: the configured public URL, and the listen
    /// address itself (as localhost too, when it is a loopback address).
    pub fn own_base_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self.public_url.iter().cloned().collect();
        let ip = self.addr.ip();
        if !ip.is_unspecified() {
            urls.push(format!("http://{}/", self.addr));
        }
        if ip.is_loopback() || ip.is_unspecified() {
            urls.push(format!("http://localhost:{}/", self.addr.port()));
            urls.push(format!("http://127.0.0.1:{}/", self.addr.port()));
        }
        urls.dedup();
        urls
    }

    /// The base URL links in stored metadata (ObsCore's access_url) start with: the
    /// public URL, or the listening address.
    pub fn links_base(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if self.addr.ip().is_unspecified() => {
                format!("http://127.0.0.1:{}", self.addr.port())
            }
            None => format!("http://{}", self.addr),
        }
    }

    /// The dataset registry of the data directory, in SQLite or at `registry_url`.
    pub fn open_registry(&self) -> Result<aster_archive::registry::Registry> {
        let r = match &self.registry_url {
            Some(url) => aster_archive::registry::Registry::connect(&self.data_dir, url),
            None => aster_archive::registry::Registry::open(&self.data_dir),
        };
        r.context("opening the dataset registry")
    }

    /// The resource allocation policy of this configuration.
    pub fn limit_policy(
        &self,
        identity: aster_archive::identity::IdentityStore,
    ) -> aster_archive::identity::limits::LimitPolicy {
        use aster_archive::identity::limits::{LimitPolicy, Limits};
        let l = &self.limits;
        let base = |jobs, queued, source: &str| Limits {
            async_jobs: jobs,
            queued_jobs: queued,
            execution_secs: self.tap.async_max_duration_secs,
            quota_bytes: self.vospace.quota_gib << 30,
            priority: l.priority,
            source: source.into(),
        };
        LimitPolicy::new(
            base(l.async_jobs, l.queued_jobs, "default"),
            base(l.anonymous_async_jobs, l.anonymous_queued_jobs, "anonymous"),
            l.users.clone(),
            l.groups.clone(),
            Some(identity),
        )
    }

    pub fn vospace_location(&self) -> String {
        self.vospace.url.clone().unwrap_or_else(|| {
            self.data_dir
                .join("vospace")
                .join("objects")
                .display()
                .to_string()
        })
    }

    pub fn vospace_authority(&self) -> String {
        if let Some(a) = &self.vospace.authority {
            return a.clone();
        }
        let host = self
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(String::from))
            .unwrap_or_else(|| "localhost".into());
        format!("{host}!vospace")
    }

    pub fn catalog_location(&self) -> String {
        self.catalog_url
            .clone()
            .unwrap_or_else(|| self.data_dir.join("catalogs").display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_then_env_override_defaults() {
        let mut c: Config =
            toml::from_str("addr = \"0.0.0.0:9000\"\n[tap]\ndefault_maxrec = 10\n").unwrap();
        assert_eq!(c.addr.port(), 9000);
        assert_eq!(c.tap.default_maxrec, 10);
        assert_eq!(c.tap.max_maxrec, TapConfig::default().max_maxrec);
        c.apply_env(|k| (k == "ASTER_TAP_DEFAULT_MAXREC").then(|| "20".to_string()))
            .unwrap();
        assert_eq!(c.tap.default_maxrec, 20);
        assert!(
            c.apply_env(|k| (k == "ASTER_ADDR").then(|| "nonsense".to_string()))
                .is_err()
        );
        assert!(toml::from_str::<Config>("unknown_key = 1").is_err());
    }
}
