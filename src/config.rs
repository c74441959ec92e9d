//! The gateway's configuration: one TOML file, with secrets (and a few deployment settings)
//! taken from the environment so they never need to be written into a file.
//!
//! | variable | overrides |
//! |---|---|
//! | `GATEWAY_APPROVAL_APP_SECRET` | `approval.app_secret` |
//! | `GATEWAY_APPROVAL_APP_ID` | `approval.app_id` |
//! | `GATEWAY_APPROVAL_BASE_URL` | `approval.base_url` |
//! | `GATEWAY_LICENCES_APP_SECRET` | `licences.app_secret` |
//! | `GATEWAY_POWER_CLIENT_SECRET` | `power.client_secret` |
//! | `GATEWAY_POWER_WEBHOOK_SECRET` | the key of the power side's webhook signatures (no file key) |
//! | `GATEWAY_STORE_PATH` | `store.path` |
//! | `GATEWAY_AUDIT_KEY` | the audit log's signing key (instead of `audit.key_file`) |

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use shuiwu_approval::ClientConfig;
use shuiwu_wire::Secret;

/// A configuration that cannot be used; the message names the file and line where it can.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Setting(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    pub approval: ClientConfig,
    /// The licence library, for the zero-materials check; without it no check runs.
    #[serde(default)]
    pub licences: Option<shuiwu_licences::LicenceConfig>,
    /// The power utility's joint-application interface; without it nothing is sent to the
    /// power side or polled from it.
    #[serde(default)]
    pub power: Option<shuiwu_power::PowerConfig>,
    /// The daemon's HTTP server (the power side's webhooks).
    #[serde(default)]
    pub http: HttpConfig,
    /// The key the power side signs its webhook events with, from
    /// `GATEWAY_POWER_WEBHOOK_SECRET` only; without it `POST /webhooks/power` is not served
    /// and polling alone keeps the water side informed.
    #[serde(skip)]
    pub power_webhook_secret: Option<Secret>,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub mappings: MappingsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
}

/// The audit log's signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The private key, readable by the gateway's user only; made at the first start if it
    /// is not there. Default: beside the database, `<store.path>.audit-key`.
    /// `GATEWAY_AUDIT_KEY` holds the key itself instead.
    pub key_file: Option<PathBuf>,
    /// What a key made by the gateway is: `ed25519`, or `sm2` where the national algorithms
    /// are required (the log's tree hash is then SM3). A key that exists decides for itself.
    pub algorithm: crate::tlog::checkpoint::Algorithm,
    /// The log's name in its checkpoints (no spaces, no `+`).
    pub origin: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_file: None,
            algorithm: crate::tlog::checkpoint::Algorithm::Ed25519,
            origin: "shuiwu-gateway".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the daemon listens: loopback by default; put it behind the utility's reverse
    /// proxy to reach it from elsewhere.
    pub listen: std::net::SocketAddr,
    /// `/readyz` says not ready when the last pass ended longer ago than this many sync
    /// intervals (a pass that takes long or a loop that stopped).
    pub ready_max_pass_age_intervals: u32,
    /// The admin API's operators: a file of salted token hashes (`gateway admin-token NAME`
    /// makes a line); without it `/admin/v1` is not served.
    pub admin_tokens_file: Option<PathBuf>,
    /// The console's people: a file of names, roles and Argon2id password hashes
    /// (`gateway console-account NAME --role ROLE` makes a line); without it `/console` is not
    /// served.
    pub console_accounts_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8686)),
            ready_max_pass_age_intervals: 3,
            admin_tokens_file: None,
            console_accounts_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("gateway-data/gateway.db"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingsConfig {
    /// A directory whose `*.toml` files override the embedded mapping files of the same
    /// relative name.
    pub dir: Option<PathBuf>,
}

/// How the approval platform is synced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Where a first run starts its backfill, Beijing time `yyyy-MM-dd HH:mm:ss`.
    pub start: String,
    /// Seconds between passes of `gateway run`.
    pub interval_secs: u64,
    /// Width of one listing window, at most the platform's 24 h.
    pub window_hours: u32,
    /// The platform's visibility lag: a version may appear this long after its `GXSJ`.
    pub lag_secs: u64,
    /// Extra margin on top of the lag for clock error between us and the platform.
    pub settle_secs: u64,
    pub page_size: u32,
    /// Detail calls in flight at once (and twice as many zero-materials checks). The client's
    /// limiter sets the rate; this only has to cover the platform's latency and the odd hung
    /// call. On loopback, where latency is all there is, 8 backfills about a tenth faster
    /// than 4.
    pub concurrency: usize,
    /// Full listing pages' worth of new versions (`pages_in_flight × page_size`) that may be
    /// fetched, mapped or waiting to commit at once (and at most four times as many pages).
    /// Pages commit in order, so a hung request holds back the commits behind it, not the
    /// requests: with the default (300 versions), one request hanging for the whole read timeout
    /// leaves about 37 s of work at 8 requests/s to go on with. Each version is held mapped
    /// until its page commits: 4 took `sync --once` to 34 MiB at 100,000 projects, 8 to 37,
    /// over the memory budget; 3 peaked at 30–31.
    pub pages_in_flight: usize,
    /// Records whose zero-materials checklist one pass evaluates at most; a larger backlog is
    /// worked off over the next passes, oldest first.
    pub materials_per_pass: usize,
    /// How long the zero-materials check waits out a platform that does not answer
    /// (maintenance, a burst of faults) before it stops until the next pass.
    pub outage_wait_secs: u64,
    /// Passes on which a listed project may answer `4040`, or keep failing, before it is held
    /// as a failure.
    pub not_found_limit: i64,
    /// A project whose detail keeps failing is held only when its failures span this long.
    pub stuck_after_hours: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            start: "2026-01-01 00:00:00".into(),
            interval_secs: 60,
            window_hours: 24,
            lag_secs: 300,
            settle_secs: 60,
            page_size: 100,
            concurrency: 8,
            pages_in_flight: 3,
            materials_per_pass: 2_000,
            outage_wait_secs: 180,
            not_found_limit: 5,
            stuck_after_hours: 6,
        }
    }
}

impl SyncConfig {
    pub fn start_at(&self) -> Result<DateTime<Utc>, ConfigError> {
        shuiwu_wire::parse_beijing(&self.start).ok_or_else(|| {
            ConfigError::Setting(format!("sync.start {:?} is not yyyy-MM-dd HH:mm:ss", self.start))
        })
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs.max(1))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let start = self.start_at()?;
        if start > Utc::now() {
            return Err(ConfigError::Setting(format!(
                "sync.start {:?} is in the future: the backfill would begin after the projects it should read",
                self.start
            )));
        }
        if !(1..=24).contains(&self.window_hours) {
            return Err(ConfigError::Setting(
                "sync.window_hours must be 1 to 24 (the platform's limit)".into(),
            ));
        }
        if !(1..=100).contains(&self.page_size) {
            return Err(ConfigError::Setting(
                "sync.page_size must be 1 to 100 (the platform's limit)".into(),
            ));
        }
        if self.lag_secs < 300 {
            return Err(ConfigError::Setting(
                "sync.lag_secs must be at least 300: the platform's visibility lag is up to 5 minutes".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::Setting("sync.concurrency must be at least 1".into()));
        }
        if self.pages_in_flight == 0 {
            return Err(ConfigError::Setting(
                "sync.pages_in_flight must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a configuration file, then applies the environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&path.display().to_string(), &text, |name| {
            std::env::var(name).ok()
        })
    }

    /// Parses configuration text; `env` looks up environment variables (injected for tests).
    pub fn parse(
        name: &str,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: name.to_string(),
            line: e.span().map_or(1, |s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            }),
            message: e.message().to_string(),
        })?;
        // Secrets never sit in a file that is copied, backed up and shown to people.
        let written = |section: &str, key: &str| ConfigError::Invalid {
            path: name.to_string(),
            line: line_of_key(text, section, key),
            message: format!(
                "{section}.{key} is written in the file: secrets are not kept in files; remove it and set GATEWAY_{}_{}",
                section.to_uppercase(),
                key.to_uppercase()
            ),
        };
        if !cfg.approval.app_secret.is_empty() {
            return Err(written("approval", "app_secret"));
        }
        if cfg.licences.as_ref().is_some_and(|l| !l.app_secret.is_empty()) {
            return Err(written("licences", "app_secret"));
        }
        if cfg.power.as_ref().is_some_and(|p| !p.client_secret.is_empty()) {
            return Err(written("power", "client_secret"));
        }
        if let Some(v) = env("GATEWAY_APPROVAL_APP_SECRET") {
            cfg.approval.app_secret = Secret::new(v);
        }
        if let Some(v) = env("GATEWAY_APPROVAL_APP_ID") {
            cfg.approval.app_id = v;
        }
        if let Some(v) = env("GATEWAY_APPROVAL_BASE_URL") {
            cfg.approval.base_url = v;
        }
        if let (Some(v), Some(l)) = (env("GATEWAY_LICENCES_APP_SECRET"), cfg.licences.as_mut()) {
            l.app_secret = Secret::new(v);
        }
        if let (Some(v), Some(p)) = (env("GATEWAY_POWER_CLIENT_SECRET"), cfg.power.as_mut()) {
            p.client_secret = Secret::new(v);
        }
        if let Some(v) = env("GATEWAY_POWER_WEBHOOK_SECRET").filter(|v| !v.is_empty()) {
            if cfg.power.is_none() {
                return Err(ConfigError::Setting(
                    "GATEWAY_POWER_WEBHOOK_SECRET is set but no [power] section is configured".into(),
                ));
            }
            cfg.power_webhook_secret = Some(Secret::new(v));
        }
        if let Some(v) = env("GATEWAY_STORE_PATH") {
            cfg.store.path = PathBuf::from(v);
        }
        if cfg.approval.app_secret.is_empty() {
            return Err(ConfigError::Setting(
                "approval.app_secret is not set: put it in GATEWAY_APPROVAL_APP_SECRET".into(),
            ));
        }
        if cfg.licences.as_ref().is_some_and(|l| l.app_secret.is_empty()) {
            return Err(ConfigError::Setting(
                "[licences] is configured but its app_secret is not set: put it in GATEWAY_LICENCES_APP_SECRET".into(),
            ));
        }
        if cfg.power.as_ref().is_some_and(|p| p.client_secret.is_empty()) {
            return Err(ConfigError::Setting(
                "[power] is configured but its client_secret is not set: put it in GATEWAY_POWER_CLIENT_SECRET".into(),
            ));
        }
        let url_error = |section: &str, message: String| ConfigError::Invalid {
            path: name.to_string(),
            line: line_of_key(text, section, "base_url"),
            message,
        };
        check_base_url(&cfg.approval.base_url)
            .map_err(|m| url_error("approval", format!("approval.base_url: {m}")))?;
        if let Some(l) = &cfg.licences {
            check_base_url(&l.base_url)
                .map_err(|m| url_error("licences", format!("licences.base_url: {m}")))?;
        }
        if let Some(p) = &cfg.power {
            check_base_url(&p.base_url).map_err(|m| url_error("power", format!("power.base_url: {m}")))?;
        }
        cfg.sync.validate()?;
        Ok(cfg)
    }
}

/// A platform's address as the clients need it: http or https, a host, no path, query or
/// fragment (the service paths are fixed). Checked at load, so that a typo is a configuration
/// error now and not a "transient" fault retried for ever.
fn check_base_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?}: the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} names no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?}: give scheme, host and port only (the service paths are fixed)"
        ));
    }
    Ok(())
}

/// The line of `key` in the table `[section]`, for messages (1 when not found).
fn line_of_key(text: &str, section: &str, key: &str) -> usize {
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t.trim_start_matches('[').trim_end_matches(']').trim() == section;
        } else if in_section && t.split('=').next().is_some_and(|k| k.trim() == key) {
            return i + 1;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[store]
path = "x.db"

[approval]
base_url = "https://approval.example"
app_id = "kmsw"
sign_method = "HMAC-SM3"

[sync]
start = "2026-10-01 00:00:00"
"#;

    #[test]
    fn secrets_come_from_the_environment() {
        let cfg = Config::parse("c.toml", TEXT, |n| {
            (n == "GATEWAY_APPROVAL_APP_SECRET").then(|| "s3".into())
        })
        .unwrap();
        assert_eq!(cfg.approval.app_secret.expose(), "s3");
        assert_eq!(
            format!("{:?}", cfg.approval).matches("s3").count(),
            0,
            "Debug must not show the secret"
        );
        let err = Config::parse("c.toml", TEXT, |_| None).unwrap_err();
        assert!(err.to_string().contains("GATEWAY_APPROVAL_APP_SECRET"));
    }

    #[test]
    fn mistakes_that_used_to_surface_at_run_time_are_load_errors() {
        let env = |n: &str| n.ends_with("APP_SECRET").then(|| "s".to_string());
        // A URL that is not one.
        let err = Config::parse(
            "c.toml",
            &TEXT.replace("https://approval.example", "htp:/not a url"),
            env,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("c.toml:6: approval.base_url"),
            "{err}"
        );
        // A secret written in the file.
        let with_secret = TEXT.replace("app_id = \"kmsw\"", "app_id = \"kmsw\"\napp_secret = \"hunter2\"");
        let err = Config::parse("c.toml", &with_secret, env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.toml:8:") && err.contains("GATEWAY_APPROVAL_APP_SECRET"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the message must not repeat the secret");
        // [licences] without its secret.
        let with_licences =
            format!("{TEXT}\n[licences]\nbase_url = \"https://lic.example\"\napp_id = \"l\"\n");
        let err = Config::parse("c.toml", &with_licences, |n| {
            (n == "GATEWAY_APPROVAL_APP_SECRET").then(|| "s".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("GATEWAY_LICENCES_APP_SECRET"), "{err}");
        assert!(Config::parse("c.toml", &with_licences, env).is_ok());
        // [power]: its secret from the environment only, its address checked.
        let with_power =
            format!("{TEXT}\n[power]\nbase_url = \"https://power.example\"\nclient_id = \"kmsw\"\n");
        let err = Config::parse("c.toml", &with_power, env).unwrap_err();
        assert!(err.to_string().contains("GATEWAY_POWER_CLIENT_SECRET"), "{err}");
        let all = |n: &str| n.ends_with("SECRET").then(|| "s".to_string());
        let cfg = Config::parse("c.toml", &with_power, all).unwrap();
        assert_eq!(
            cfg.power.map(|p| p.client_secret.expose().to_string()),
            Some("s".into())
        );
        let written = Config::parse(
            "c.toml",
            &format!("{with_power}client_secret = \"hunter2\"\n"),
            all,
        )
        .unwrap_err()
        .to_string();
        assert!(
            written.contains("power.client_secret is written in the file"),
            "{written}"
        );
        assert!(!written.contains("hunter2"), "{written}");
        let bad_url = Config::parse(
            "c.toml",
            &with_power.replace("https://power.example", "power.example"),
            all,
        )
        .unwrap_err()
        .to_string();
        assert!(bad_url.contains("power.base_url"), "{bad_url}");
        assert!(
            Config::parse("c.toml", TEXT, env).unwrap().power.is_none(),
            "no [power]: nothing sent"
        );
        // A start in the future.
        let err = Config::parse(
            "c.toml",
            &TEXT.replace("2026-10-01 00:00:00", "2999-01-01 00:00:00"),
            env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("in the future"), "{err}");
    }

    #[test]
    fn errors_name_the_line() {
        let err =
            Config::parse("c.toml", &TEXT.replace("app_id", "appid"), |_| Some("s".into())).unwrap_err();
        assert!(err.to_string().starts_with("c.toml:7: "), "{err}");
        let err = Config::parse("c.toml", &TEXT.replace("2026-10-01 00:00:00", "yesterday"), |n| {
            n.ends_with("APP_SECRET").then(|| "s".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("sync.start"), "{err}");
    }
}
