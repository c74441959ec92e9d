//! The power side's client: token cache, limiter, retries, capped reads, raw answers.
//!
//! OAuth 2.0 client credentials is one form POST and a cache; the `oauth2` crate would bring
//! a second HTTP client stack for it, so the client does it itself (RFC 6749 §4.4, both client
//! authentication methods of §2.3.1).

use std::num::NonZeroU32;
use std::sync::{Arc, Once};
use std::time::Duration;

use backon::Retryable;
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use shuiwu_wire::{Clock, FetchMeta, RawDocument, Secret};

use crate::error::PowerError;
use crate::wire::{Application, CreateApplication, ListPage, WaterStatusReport, format_time};

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as form fields.
    #[default]
    ClientSecretPost,
    /// HTTP Basic with the form-encoded id and secret.
    ClientSecretBasic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerConfig {
    /// Scheme, host and port (and a path prefix, if the partner puts one in front).
    pub base_url: String,
    pub client_id: String,
    /// From `GATEWAY_POWER_CLIENT_SECRET`; the gateway refuses one written in a file.
    #[serde(default)]
    pub client_secret: Secret,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Calls per second, token requests included. The partner allows 5; `0` turns the limiter
    /// off.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// Whole-call timeout, seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries of a transient failure within one call.
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    #[serde(default = "default_min_delay")]
    pub min_delay_ms: u64,
    /// Longest answer read; a larger one is refused unread. Applications are small; a page
    /// of 100 is some 100 KiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

fn default_rate() -> u32 {
    4
}
fn default_timeout_secs() -> u64 {
    20
}
fn default_retries() -> usize {
    4
}
fn default_min_delay() -> u64 {
    200
}
fn default_max_body_bytes() -> u64 {
    4 << 20
}

impl PowerConfig {
    /// A configuration with every default, for `base_url` and `client_id`.
    pub fn new(base_url: impl Into<String>, client_id: impl Into<String>, client_secret: Secret) -> Self {
        PowerConfig {
            base_url: base_url.into(),
            client_id: client_id.into(),
            client_secret,
            client_auth: ClientAuth::default(),
            rate_per_second: default_rate(),
            timeout_secs: default_timeout_secs(),
            max_retries: default_retries(),
            min_delay_ms: default_min_delay(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

/// An answer: the value read, and the bytes it was read from.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub value: T,
    pub raw: RawDocument,
}

/// The answer of a create.
#[derive(Debug, Clone)]
pub struct Created {
    /// The application as it is now (on a replay, possibly at a later version than when it
    /// was created).
    pub application: Application,
    /// 200: the key was used before with the same body, and nothing new was created.
    pub replayed: bool,
    pub raw: RawDocument,
}

struct Token {
    value: String,
    expires_at: DateTime<Utc>,
}

pub struct PowerClient {
    http: reqwest::Client,
    cfg: PowerConfig,
    clock: Arc<dyn Clock>,
    limiter: Option<DefaultDirectRateLimiter>,
    token: tokio::sync::Mutex<Option<Token>>,
}

static CRYPTO: Once = Once::new();

/// One request, built once and sent as many times as the retries need.
struct Request<'a> {
    method: reqwest::Method,
    path: String,
    query: Option<String>,
    body: Option<Vec<u8>>,
    if_match: Option<u64>,
    idempotency_key: Option<&'a str>,
}

const APPLICATIONS: &str = "/api/joint/v2/applications";

/// Longest idempotency key the interface accepts.
pub const MAX_KEY_LEN: usize = 64;

impl PowerClient {
    pub fn new(cfg: PowerConfig, clock: Arc<dyn Clock>) -> Result<Self, PowerError> {
        CRYPTO.call_once(|| {
            // Fails only when a provider is already installed, which serves as well.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .tcp_nodelay(true)
            // A change is never repeated at another address behind the caller's back.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PowerError::Transport(format!("building the HTTP client: {e}")))?;
        let limiter = NonZeroU32::new(cfg.rate_per_second)
            .map(|r| RateLimiter::direct(Quota::per_second(r).allow_burst(NonZeroU32::MIN)));
        Ok(PowerClient {
            http,
            cfg,
            clock,
            limiter,
            token: tokio::sync::Mutex::new(None),
        })
    }

    pub fn config(&self) -> &PowerConfig {
        &self.cfg
    }

    /// Creates an application (water → power). `key` is the idempotency key: the same key
    /// with the same body answers the application as it is now instead of a second one.
    pub async fn create(&self, key: &str, body: &CreateApplication) -> Result<Created, PowerError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(PowerError::Config(format!(
                "an idempotency key has 1 to {MAX_KEY_LEN} characters, not {}",
                key.len()
            )));
        }
        let bytes = serde_json::to_vec(body).map_err(|e| PowerError::Config(e.to_string()))?;
        let answer: Answer<Application> = self
            .call(Request {
                method: reqwest::Method::POST,
                path: APPLICATIONS.to_string(),
                query: None,
                body: Some(bytes),
                if_match: None,
                idempotency_key: Some(key),
            })
            .await?;
        Ok(Created {
            replayed: answer.raw.meta.status == 200,
            application: answer.value,
            raw: answer.raw,
        })
    }

    /// One application.
    pub async fn get(&self, application_id: &str) -> Result<Answer<Application>, PowerError> {
        self.call(Request {
            method: reqwest::Method::GET,
            path: application_path(application_id, "")?,
            query: None,
            body: None,
            if_match: None,
            idempotency_key: None,
        })
        .await
    }

    /// Applications changed strictly after `updated_after`, oldest change first; `cursor`
    /// continues a listing.
    pub async fn list(
        &self,
        updated_after: DateTime<Utc>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Answer<ListPage>, PowerError> {
        // form_urlencoded sends the `+` of the offset as `%2B`, as the interface requires (a
        // bare `+` would be read as a space).
        // (The serializer is not `Send`: it is gone before the first await.)
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("updatedAfter", &format_time(updated_after));
            q.append_pair("limit", &limit.clamp(1, 100).to_string());
            if let Some(c) = cursor {
                q.append_pair("cursor", c);
            }
            q.finish()
        };
        self.call(Request {
            method: reqwest::Method::GET,
            path: APPLICATIONS.to_string(),
            query: Some(query),
            body: None,
            if_match: None,
            idempotency_key: None,
        })
        .await
    }

    /// Links a power-origin application to the water record `external_id`.
    pub async fn link(
        &self,
        application_id: &str,
        external_id: &str,
        if_match: u64,
    ) -> Result<Answer<Application>, PowerError> {
        let body = serde_json::to_vec(&serde_json::json!({ "externalId": external_id }))
            .map_err(|e| PowerError::Config(e.to_string()))?;
        self.call(Request {
            method: reqwest::Method::PUT,
            path: application_path(application_id, "/link")?,
            query: None,
            body: Some(body),
            if_match: Some(if_match),
            idempotency_key: None,
        })
        .await
    }

    /// Reports the water side's status.
    pub async fn water_status(
        &self,
        application_id: &str,
        report: &WaterStatusReport,
        if_match: u64,
    ) -> Result<Answer<Application>, PowerError> {
        let body = serde_json::to_vec(report).map_err(|e| PowerError::Config(e.to_string()))?;
        self.call(Request {
            method: reqwest::Method::PUT,
            path: application_path(application_id, "/water-status")?,
            query: None,
            body: Some(body),
            if_match: Some(if_match),
            idempotency_key: None,
        })
        .await
    }

    /// One call with its retries. A transient failure is retried with jittered backoff, never
    /// sooner than a `Retry-After` says; a refused token is renewed and the call repeated once.
    async fn call<T: DeserializeOwned>(&self, request: Request<'_>) -> Result<Answer<T>, PowerError> {
        let backoff = shuiwu_wire::retry::jittered(
            Duration::from_millis(self.cfg.min_delay_ms),
            Duration::from_secs(20),
            self.cfg.max_retries,
        );
        (|| self.authorised(&request))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &PowerError| e.is_transient() && !matches!(e, PowerError::InvalidToken))
            .adjust(|e: &PowerError, planned: Option<Duration>| {
                let planned = planned?;
                Some(match e {
                    PowerError::RateLimited { retry_after: Some(d) } => planned.max(*d),
                    _ => planned,
                })
            })
            .notify(|e: &PowerError, wait: Duration| {
                shuiwu_wire::events::RetryScheduled {
                    platform: "power",
                    endpoint: endpoint_of(&request),
                    error: e,
                    kind: outcome_of(e),
                    wait,
                }
                .emit();
            })
            .await
    }

    async fn authorised<T: DeserializeOwned>(&self, request: &Request<'_>) -> Result<Answer<T>, PowerError> {
        let token = self.token(None).await?;
        match self.timed(request, &token).await {
            Err(PowerError::InvalidToken) => {
                tracing::info!("power token refused; getting a new one and repeating the call once");
                let token = self.token(Some(&token)).await?;
                self.timed(request, &token).await
            }
            other => other,
        }
    }

    /// One attempt, told as a request event.
    async fn timed<T: DeserializeOwned>(
        &self,
        request: &Request<'_>,
        token: &str,
    ) -> Result<Answer<T>, PowerError> {
        let started = std::time::Instant::now();
        let answer = self.attempt(request, token).await;
        shuiwu_wire::events::RequestCompleted {
            platform: "power",
            endpoint: endpoint_of(request),
            outcome: answer.as_ref().map_or_else(outcome_of, |_| "ok"),
            elapsed: started.elapsed(),
        }
        .emit();
        answer
    }

    /// The cached token, or a new one when it is (nearly) expired or is `refused` (when
    /// several calls saw the same token refused, only the first gets a new one).
    async fn token(&self, refused: Option<&str>) -> Result<String, PowerError> {
        let mut cached = self.token.lock().await;
        let now = self.clock.now();
        if let Some(t) = cached.as_ref()
            && t.expires_at > now + chrono::Duration::seconds(30)
            && refused.is_none_or(|r| r != t.value)
        {
            return Ok(t.value.clone());
        }
        let backoff = shuiwu_wire::retry::jittered(
            Duration::from_millis(self.cfg.min_delay_ms),
            Duration::from_secs(20),
            self.cfg.max_retries,
        );
        let (value, expires_in) = (|| self.fetch_token())
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(PowerError::is_transient)
            .notify(|e: &PowerError, wait: Duration| {
                tracing::warn!(error = %e, ?wait, "power token request failed; retrying");
            })
            .await?;
        *cached = Some(Token {
            value: value.clone(),
            expires_at: now + chrono::Duration::seconds(expires_in as i64),
        });
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<(String, u64), PowerError> {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let url = format!("{}/oauth2/token", self.cfg.base_url.trim_end_matches('/'));
        let form = {
            let mut f = form_urlencoded::Serializer::new(String::new());
            f.append_pair("grant_type", "client_credentials");
            if self.cfg.client_auth == ClientAuth::ClientSecretPost {
                f.append_pair("client_id", &self.cfg.client_id);
                f.append_pair("client_secret", self.cfg.client_secret.expose());
            }
            f.finish()
        };
        let mut request = self.http.post(&url);
        match self.cfg.client_auth {
            ClientAuth::ClientSecretPost => {}
            ClientAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding.
                let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                request = request.basic_auth(
                    enc(&self.cfg.client_id),
                    Some(enc(self.cfg.client_secret.expose())),
                );
            }
        }
        let response = request
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = read_capped(response, 64 * 1024).await?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        match status {
            200 => {
                let t: TokenAnswer = serde_json::from_slice(&bytes).map_err(|_| PowerError::BadBody {
                    status,
                    detail: "a token answer without access_token".into(),
                })?;
                // Without expires_in the token is kept for a minute and renewed when refused.
                Ok((t.access_token, t.expires_in.unwrap_or(60)))
            }
            429 => Err(PowerError::RateLimited {
                retry_after: retry_after(&headers, self.clock.now()),
            }),
            500..=599 => Err(PowerError::Server {
                status,
                message: error_of(&bytes).1,
            }),
            _ => {
                let (error, message) = error_of(&bytes);
                // The token endpoint's answers carry no data worth keeping, and must not be
                // kept: a success holds the token.
                Err(PowerError::InvalidClient {
                    error: if error.is_empty() {
                        format!("HTTP {status}: {message}")
                    } else {
                        error
                    },
                })
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        r: &Request<'_>,
        token: &str,
    ) -> Result<Answer<T>, PowerError> {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let mut url = format!("{}{}", self.cfg.base_url.trim_end_matches('/'), r.path);
        if let Some(q) = &r.query {
            url.push('?');
            url.push_str(q);
        }
        let mut request = self
            .http
            .request(r.method.clone(), &url)
            .bearer_auth(token)
            .header("Accept", "application/json");
        if let Some(body) = &r.body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.clone());
        }
        if let Some(v) = r.if_match {
            request = request.header("If-Match", format!("\"{v}\""));
        }
        if let Some(k) = r.idempotency_key {
            request = request.header("Idempotency-Key", k);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = read_capped(response, self.cfg.max_body_bytes).await?;
        let raw = RawDocument {
            bytes: Arc::from(bytes),
            meta: FetchMeta {
                source: "power".into(),
                method: r.method.as_str().into(),
                url,
                status,
                request_id: header(&headers, "x-request-id"),
                content_type: header(&headers, "content-type"),
                fetched_at: self.clock.now(),
            },
        };
        self.interpret(raw, &headers)
    }

    /// Classifies a complete answer per the interface.
    fn interpret<T: DeserializeOwned>(
        &self,
        raw: RawDocument,
        headers: &HeaderMap,
    ) -> Result<Answer<T>, PowerError> {
        let status = raw.meta.status;
        if (200..300).contains(&status) {
            return match serde_json::from_slice::<T>(&raw.bytes) {
                Ok(value) => Ok(Answer { value, raw }),
                Err(e) => Err(PowerError::BadBody {
                    status,
                    detail: format!("not the expected JSON ({e}); {} bytes", raw.bytes.len()),
                }),
            };
        }
        let body: serde_json::Value = serde_json::from_slice(&raw.bytes).unwrap_or(serde_json::Value::Null);
        let error = body["error"].as_str().unwrap_or_default().to_string();
        let message = body["message"].as_str().unwrap_or_default().to_string();
        match (status, error.as_str()) {
            (401, "invalid_token") => Err(PowerError::InvalidToken),
            (401, _) => Err(PowerError::InvalidClient {
                error: if error.is_empty() {
                    format!("HTTP 401: {message}")
                } else {
                    error
                },
            }),
            (429, _) => Err(PowerError::RateLimited {
                retry_after: retry_after(headers, self.clock.now()),
            }),
            (500..=599, _) => Err(PowerError::Server {
                status,
                message: if message.is_empty() {
                    format!("{} bytes", raw.bytes.len())
                } else {
                    message
                },
            }),
            (412, "version_mismatch") => match Application::deserialize(&body["current"]) {
                Ok(current) => Err(PowerError::VersionMismatch {
                    current: Box::new(current),
                    raw: Box::new(raw),
                }),
                Err(e) => Err(PowerError::BadBody {
                    status,
                    detail: format!("a version mismatch without a readable current resource: {e}"),
                }),
            },
            (409, "duplicate_external_id") => match body["existingApplicationId"].as_str() {
                Some(existing) => Err(PowerError::DuplicateExternalId {
                    existing: existing.to_string(),
                    raw: Box::new(raw),
                }),
                None => Err(PowerError::Refused {
                    status,
                    error,
                    message: "duplicate_external_id without existingApplicationId".into(),
                    raw: Box::new(raw),
                }),
            },
            (422, "idempotency_key_reused") => Err(PowerError::KeyReused { raw: Box::new(raw) }),
            (400..=499, _) => Err(PowerError::Refused {
                status,
                error: if error.is_empty() {
                    format!("http_{status}")
                } else {
                    error
                },
                message,
                raw: Box::new(raw),
            }),
            _ => Err(PowerError::BadBody {
                status,
                detail: "an answer outside the interface".into(),
            }),
        }
    }
}

/// The bounded name of a call, for metrics.
fn endpoint_of(request: &Request<'_>) -> &'static str {
    let p = request.path.as_str();
    if p.ends_with("/link") {
        "link"
    } else if p.ends_with("/water-status") {
        "water_status"
    } else if p == APPLICATIONS && request.method == reqwest::Method::POST {
        "create"
    } else if p == APPLICATIONS {
        "list"
    } else {
        "get"
    }
}

/// A failure's outcome label, for metrics.
fn outcome_of(e: &PowerError) -> &'static str {
    match e {
        PowerError::RateLimited { .. } => "rate_limited",
        PowerError::InvalidToken => "invalid_token",
        e if e.is_transient() => "transient_error",
        _ => "refused",
    }
}

/// `{APPLICATIONS}/{id}{tail}`. Application ids are letters and digits; anything else is
/// refused rather than escaped into a path the power side never issued.
fn application_path(id: &str, tail: &str) -> Result<String, PowerError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(PowerError::Config(format!("{id:?} is not an application id")));
    }
    Ok(format!("{APPLICATIONS}/{id}{tail}"))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `(error, message)` of an error body, empty where absent.
fn error_of(bytes: &[u8]) -> (String, String) {
    let body: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    (
        body["error"].as_str().unwrap_or_default().to_string(),
        body["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// `Retry-After` as a number of seconds or as an HTTP-date (RFC 9110 §10.2.3), relative to
/// `now`. A date in the past means "now".
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = header(headers, "retry-after")?;
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at: DateTime<Utc> = at.into();
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Reads a body chunk by chunk, refusing it as soon as it passes `limit` bytes (or announces
/// more).
async fn read_capped(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, PowerError> {
    if let Some(announced) = response.content_length()
        && announced > limit
    {
        return Err(PowerError::TooLarge {
            limit,
            seen: announced,
        });
    }
    let capacity = response.content_length().unwrap_or(0).min(limit) as usize;
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        let seen = (body.len() + chunk.len()) as u64;
        if seen > limit {
            return Err(PowerError::TooLarge { limit, seen });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport(e: reqwest::Error) -> PowerError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "body cut off"
    } else {
        "request failed"
    };
    // The error's Display never includes headers, so no token or secret reaches a log.
    PowerError::Transport(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_an_http_date() {
        let now = crate::wire::parse_time("2024-03-06T09:12:44+08:00").unwrap();
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        // 01:12:49 GMT is five seconds after 09:12:44 Beijing time.
        h.insert("retry-after", "Wed, 06 Mar 2024 01:12:49 GMT".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(5)));
        h.insert("retry-after", "Wed, 06 Mar 2024 01:00:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO), "a date in the past");
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn paths_take_only_application_ids() {
        assert_eq!(
            application_path("KMGD2024030500123", "/link").unwrap(),
            "/api/joint/v2/applications/KMGD2024030500123/link"
        );
        assert!(application_path("../oauth2/token", "").is_err());
        assert!(application_path("", "").is_err());
    }
}
