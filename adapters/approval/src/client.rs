//! The approval platform's client: signing, timeouts, rate limit, quota, retries.
//!
//! One [`ApprovalClient`] per account. Every call goes through [`ApprovalClient::get`], which
//! waits for the client-side limiter, refuses to call while a quota or maintenance gate is shut,
//! signs afresh on every attempt (new timestamp and nonce), and retries transient faults with
//! exponential backoff and jitter, never sooner than the platform asked (`Retry-After`,
//! `resumeAt`). A wait longer than [`RetryPolicy::max_wait`] is not slept through here: the error
//! goes back to the caller, whose unit of work ends and is tried again on a later pass.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use backon::Retryable;
use chrono::{DateTime, Days, TimeZone, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use shuiwu_wire::{Clock, FetchMeta, RawDocument, Secret, beijing, format_beijing, parse_beijing};

use crate::error::ApprovalError;
use crate::sign::{SignMethod, canonical_query, encode_component, sign, string_to_sign};
use crate::wire::{Envelope, ListPage};

/// The platform's largest page.
pub const MAX_PAGE_SIZE: u32 = 100;

/// How one account reaches the platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Scheme, host and optional port, e.g. `https://tzxm.yn.gov.cn`; no trailing path.
    pub base_url: String,
    pub app_id: String,
    #[serde(default)]
    pub app_secret: Secret,
    #[serde(default)]
    pub sign_method: SignMethod,
    /// Requests per second the client allows itself. The platform counts 10 over any one-second
    /// window; the default leaves room for network jitter bunching requests at its end.
    /// `0` turns the limiter off (benchmarks against a simulator without a limit).
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    #[serde(default = "default_connect_timeout", with = "secs")]
    pub connect_timeout: Duration,
    #[serde(default = "default_read_timeout", with = "secs")]
    pub read_timeout: Duration,
    #[serde(default = "default_total_timeout", with = "secs")]
    pub total_timeout: Duration,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The largest listing or detail answer read, in bytes; a larger one is refused unread
    /// (an attachment's limit is its announced size).
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: u64,
    /// The platform's daily call quota, when the utility knows it: the calls left are then
    /// reported beside the calls used (`gateway_quota_left`).
    #[serde(default)]
    pub daily_quota: Option<u64>,
}

fn default_rate() -> u32 {
    8
}
/// 16 MiB: a project detail is a few kilobytes; far more is a platform fault, not data.
pub fn default_max_document_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_total_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Retries inside one call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    #[serde(with = "millis")]
    pub min_delay: Duration,
    #[serde(with = "millis")]
    pub max_delay: Duration,
    /// The longest wait the client sleeps through itself; a longer `Retry-After`, a quota reset
    /// or a maintenance window ends the call with the error instead.
    #[serde(with = "secs")]
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            max_wait: Duration::from_secs(60),
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?.max(0.0)))
    }
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A successful response: the raw document and its parsed body (parsed once, here, from
/// exactly the bytes that are kept).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub raw: RawDocument,
    /// The whole envelope as parsed JSON; mapping paths point into it (`/data/...`).
    pub body: serde_json::Value,
}

impl Fetched {
    /// The envelope's `data`.
    pub fn data(&self) -> &serde_json::Value {
        &self.body["data"]
    }
}

/// Why calls are held back locally.
#[derive(Debug, Clone, Copy)]
enum Gate {
    Quota(DateTime<Utc>),
    Maintenance(DateTime<Utc>),
}

/// A client of one account.
pub struct ApprovalClient {
    http: reqwest::Client,
    cfg: ClientConfig,
    clock: Arc<dyn Clock>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Platform clock minus ours, learnt from the `Date` header after a `4011`.
    skew_ms: AtomicI64,
    gate: Mutex<Option<Gate>>,
    /// Calls counted against the platform's daily quota on its day (Beijing date): every answer
    /// that passed authentication and the rate limit, business errors included. Counted by this
    /// process since it started, so a restart during the day counts from zero again.
    quota_used: Mutex<(chrono::NaiveDate, u64)>,
}

static CRYPTO: Once = Once::new();

impl ApprovalClient {
    pub fn new(cfg: ClientConfig, clock: Arc<dyn Clock>) -> Result<Self, ApprovalError> {
        CRYPTO.call_once(|| {
            // Fails only when another provider was installed first, which serves just as well.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .timeout(cfg.total_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ApprovalError::Transport(format!("building the HTTP client: {e}")))?;
        let limiter = NonZeroU32::new(cfg.rate_per_second).map(|rate| {
            // Burst of one: requests are spaced evenly, so no one-second window, wherever it
            // starts, holds more than `rate` of them.
            RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN))
        });
        Ok(ApprovalClient {
            http,
            cfg,
            clock,
            limiter,
            skew_ms: AtomicI64::new(0),
            gate: Mutex::new(None),
            quota_used: Mutex::new((chrono::NaiveDate::MIN, 0)),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Our best estimate of the platform's clock.
    pub fn platform_now(&self) -> DateTime<Utc> {
        self.clock.now() + chrono::Duration::milliseconds(self.skew_ms.load(Ordering::Relaxed))
    }

    /// The instant before which no call will be made, if a quota or maintenance gate is shut.
    pub fn blocked_until(&self) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        match *self.lock_gate() {
            Some(Gate::Quota(t)) | Some(Gate::Maintenance(t)) if t > now => Some(t),
            _ => None,
        }
    }

    /// Which gate is shut (`quota` or `maintenance`) and until when, if one is.
    pub fn gate(&self) -> Option<(&'static str, DateTime<Utc>)> {
        let now = self.clock.now();
        match *self.lock_gate() {
            Some(Gate::Quota(t)) if t > now => Some(("quota", t)),
            Some(Gate::Maintenance(t)) if t > now => Some(("maintenance", t)),
            _ => None,
        }
    }

    /// Lists projects whose `GXSJ` lies in `[start, end)`.
    pub async fn list_projects(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        page_no: u32,
        page_size: u32,
    ) -> Result<(ListPage, RawDocument), ApprovalError> {
        let query = vec![
            ("gxsjStart".to_string(), format_beijing(start)),
            ("gxsjEnd".to_string(), format_beijing(end)),
            ("pageNo".to_string(), page_no.to_string()),
            ("pageSize".to_string(), page_size.min(MAX_PAGE_SIZE).to_string()),
        ];
        let fetched = self.get("/api/v1/projects", &query).await?;
        let page: ListPage = ListPage::deserialize(fetched.data()).map_err(|e| ApprovalError::BadBody {
            status: fetched.raw.meta.status,
            detail: format!("listing data does not have the listing shape: {e}"),
        })?;
        Ok((page, fetched.raw))
    }

    /// The newest visible version of one project.
    pub async fn project(&self, xmdm: &str) -> Result<Fetched, ApprovalError> {
        let path = format!("/api/v1/projects/{}", encode_component(xmdm));
        self.get(&path, &[]).await
    }

    /// An attachment's content, checked against the SHA-256 the project detail announced: a
    /// mismatch is a transfer fault, retried like any transient one, and after the retries an
    /// error.
    ///
    /// `announced_size` is the size the project detail gave: a body larger than that (or than
    /// the document limit when none was announced) is refused unread. An error envelope is
    /// always small enough to read.
    pub async fn attachment(
        &self,
        fjid: &str,
        expected_sha256: &str,
        announced_size: Option<u64>,
    ) -> Result<RawDocument, ApprovalError> {
        let path = format!("/api/v1/attachments/{}", encode_component(fjid));
        let expected = expected_sha256.to_ascii_lowercase();
        let limit = announced_size.map_or(self.cfg.max_document_bytes, |n| n.max(ENVELOPE_ALLOWANCE));
        self.get_checked(&path, &[], Some(&expected), limit)
            .await
            .map(|f| f.raw)
    }

    /// One signed GET with the retry policy around it.
    pub async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Fetched, ApprovalError> {
        self.get_checked(path, query, None, self.cfg.max_document_bytes)
            .await
    }

    async fn get_checked(
        &self,
        path: &str,
        query: &[(String, String)],
        expected_sha256: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, ApprovalError> {
        let policy = &self.cfg.retry;
        let backoff = shuiwu_wire::retry::jittered(policy.min_delay, policy.max_delay, policy.max_retries);
        let max_wait = policy.max_wait;
        let endpoint = endpoint_of(path);
        (|| async {
            let started = std::time::Instant::now();
            let attempted = self.attempt(path, query, limit).await;
            shuiwu_wire::events::RequestCompleted {
                platform: "approval",
                endpoint,
                outcome: attempted.as_ref().map_or_else(|e| e.kind(), |_| "ok"),
                elapsed: started.elapsed(),
            }
            .emit();
            let fetched = attempted?;
            if let Some(expected) = expected_sha256 {
                use sha2::Digest;
                let got = hex::encode(sha2::Sha256::digest(&fetched.raw.bytes));
                if got != expected {
                    return Err(ApprovalError::HashMismatch {
                        expected: expected.to_string(),
                        got,
                    });
                }
            }
            Ok(fetched)
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &ApprovalError| e.is_transient() && self.wait_for(e).is_none_or(|wait| wait <= max_wait))
        .adjust(|e: &ApprovalError, planned: Option<Duration>| {
            let planned = planned?;
            Some(self.wait_for(e).map_or(planned, |w| w.max(planned)))
        })
        .notify(|e: &ApprovalError, wait: Duration| {
            shuiwu_wire::events::RetryScheduled {
                platform: "approval",
                endpoint,
                error: e,
                kind: e.kind(),
                wait,
            }
            .emit();
        })
        .await
    }

    /// How long the platform told us to wait before the next call, if it did.
    fn wait_for(&self, e: &ApprovalError) -> Option<Duration> {
        let now = self.clock.now();
        e.not_before(now)
            .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
    }

    fn lock_gate(&self) -> std::sync::MutexGuard<'_, Option<Gate>> {
        // The gate holds a plain value that stays valid even if a holder panicked.
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn attempt(
        &self,
        path: &str,
        query: &[(String, String)],
        limit: u64,
    ) -> Result<Fetched, ApprovalError> {
        let now = self.clock.now();
        match *self.lock_gate() {
            Some(Gate::Quota(until)) if until > now => {
                return Err(ApprovalError::QuotaExhausted { until });
            }
            Some(Gate::Maintenance(until)) if until > now => {
                return Err(ApprovalError::Maintenance { until: Some(until) });
            }
            _ => {}
        }
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }

        let canonical = canonical_query(query.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let timestamp = self.platform_now().timestamp_millis().to_string();
        let mut nonce_bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce_bytes);
        let nonce = hex::encode(nonce_bytes);
        let sts = string_to_sign("GET", path, &canonical, &self.cfg.app_id, &timestamp, &nonce);
        let signature = sign(
            self.cfg.sign_method,
            self.cfg.app_secret.expose().as_bytes(),
            &sts,
        );

        let mut url = format!("{}{}", self.cfg.base_url.trim_end_matches('/'), path);
        if !canonical.is_empty() {
            url.push('?');
            url.push_str(&canonical);
        }
        let mut request = self
            .http
            .get(&url)
            .header("X-App-Id", &self.cfg.app_id)
            .header("X-Timestamp", &timestamp)
            .header("X-Nonce", &nonce)
            .header("X-Signature", signature);
        if self.cfg.sign_method != SignMethod::HmacSha256 {
            request = request.header("X-Sign-Method", self.cfg.sign_method.header_value());
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = read_capped(response, limit).await?;
        let content_type = header(&headers, "content-type");
        let raw = RawDocument {
            bytes: Arc::from(bytes),
            meta: FetchMeta {
                source: "approval".into(),
                method: "GET".into(),
                url,
                status,
                request_id: None,
                content_type: content_type.clone(),
                fetched_at: self.clock.now(),
            },
        };
        let interpreted = self.interpret(raw, &headers);
        self.count_quota(&interpreted);
        interpreted
    }

    /// Counts an answer against the day's quota, as the platform counts it, and reports it.
    fn count_quota<T>(&self, answer: &Result<T, ApprovalError>) {
        use ApprovalError::*;
        let counted = match answer {
            Ok(_) => true,
            Err(RateLimited { .. } | BadSignature | TimestampRejected | NonceRejected | Transport(_)) => {
                false
            }
            Err(_) => true,
        };
        let spent = matches!(answer, Err(QuotaExhausted { .. }));
        let day = self
            .platform_now()
            .with_timezone(&shuiwu_wire::beijing())
            .date_naive();
        let used = {
            let mut q = self.quota_used.lock().unwrap_or_else(|e| e.into_inner());
            if q.0 != day {
                *q = (day, 0);
            }
            if counted {
                q.1 += 1;
            }
            q.1
        };
        let left = match (spent, self.cfg.daily_quota) {
            (true, _) => Some(0),
            (false, quota) => quota.map(|q| q.saturating_sub(used)),
        };
        shuiwu_wire::events::QuotaCounted {
            platform: "approval",
            used,
            left,
        }
        .emit();
    }

    /// Classifies a complete response per the contract.
    fn interpret(&self, mut raw: RawDocument, headers: &HeaderMap) -> Result<Fetched, ApprovalError> {
        let status = raw.meta.status;
        if status == 429 {
            return Err(ApprovalError::RateLimited {
                retry_after: retry_after(headers),
            });
        }
        let content_type = raw
            .meta
            .content_type
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let is_html = content_type.starts_with("text/html");
        // Attachment content: binary on success (errors still come as JSON envelopes).
        if status == 200 && !is_html && !content_type.is_empty() && !content_type.contains("json") {
            return Ok(Fetched {
                raw,
                body: serde_json::Value::Null,
            });
        }
        let body = if is_html {
            Err("an HTML page instead of JSON (gateway or WAF page)")
        } else {
            serde_json::from_slice::<serde_json::Value>(&raw.bytes)
                .map_err(|_| "a body that is not valid JSON (cut off?)")
        };
        let envelope = body.and_then(|body| {
            Envelope::deserialize(&body)
                .map(|envelope| (body, envelope))
                .map_err(|_| "JSON without the envelope")
        });
        let (body, envelope) = match envelope {
            Ok(both) => both,
            Err(what) => {
                return Err(ApprovalError::BadBody {
                    status,
                    detail: format!("{what}; {} bytes", raw.bytes.len()),
                });
            }
        };
        raw.meta.request_id = envelope.request_id.clone();
        let msg = envelope.msg.clone();
        match envelope.code.as_str() {
            "0000" if status == 200 => Ok(Fetched { raw, body }),
            "0000" => Err(ApprovalError::BadBody {
                status,
                detail: "success envelope with a non-200 status".into(),
            }),
            "4001" => Err(ApprovalError::BadParameter { msg }),
            "4010" => Err(ApprovalError::BadSignature),
            "4011" => {
                self.learn_skew(headers);
                Err(ApprovalError::TimestampRejected)
            }
            "4012" => Err(ApprovalError::NonceRejected),
            "4030" => Err(ApprovalError::OutsideServiceArea { raw: Box::new(raw) }),
            "4040" => Err(ApprovalError::NotFound { raw: Box::new(raw) }),
            "4290" => Err(ApprovalError::RateLimited {
                retry_after: retry_after(headers),
            }),
            "4291" => {
                let until = self.next_platform_midnight();
                *self.lock_gate() = Some(Gate::Quota(until));
                Err(ApprovalError::QuotaExhausted { until })
            }
            "5000" => Err(ApprovalError::Internal { status, msg }),
            "5030" => {
                let until = body["data"]
                    .get("resumeAt")
                    .and_then(|v| v.as_str())
                    .and_then(parse_beijing)
                    .map(|t| self.to_local(t));
                if let Some(until) = until {
                    *self.lock_gate() = Some(Gate::Maintenance(until));
                }
                Err(ApprovalError::Maintenance { until })
            }
            code => Err(ApprovalError::UnknownCode {
                code: code.to_string(),
                status,
                msg,
            }),
        }
    }

    /// Learns the platform's clock from the `Date` header of a `4011` answer.
    fn learn_skew(&self, headers: &HeaderMap) {
        let Some(date) = header(headers, "date") else {
            return;
        };
        let Ok(server) = DateTime::parse_from_rfc2822(&date) else {
            return;
        };
        let skew = server.with_timezone(&Utc) - self.clock.now();
        tracing::warn!(
            skew_ms = skew.num_milliseconds(),
            "clock skew against the approval platform; adjusting timestamps"
        );
        self.skew_ms.store(skew.num_milliseconds(), Ordering::Relaxed);
    }

    /// 00:00 Beijing time after the platform's "now", on our clock.
    fn next_platform_midnight(&self) -> DateTime<Utc> {
        let platform_now = self.platform_now().with_timezone(&beijing());
        let next_day = platform_now
            .date_naive()
            .checked_add_days(Days::new(1))
            .unwrap_or(platform_now.date_naive());
        let midnight = beijing()
            .from_local_datetime(&next_day.and_time(chrono::NaiveTime::MIN))
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| self.platform_now() + chrono::Duration::days(1));
        self.to_local(midnight)
    }

    /// Converts a platform-clock instant to ours.
    fn to_local(&self, platform: DateTime<Utc>) -> DateTime<Utc> {
        platform - chrono::Duration::milliseconds(self.skew_ms.load(Ordering::Relaxed))
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An error envelope's room: an attachment announced smaller than this can still be refused
/// with a readable JSON answer.
const ENVELOPE_ALLOWANCE: u64 = 64 * 1024;

/// Reads a body chunk by chunk, refusing it as soon as it passes `limit` bytes (or announces
/// more), so that a runaway answer never takes more memory than the limit.
async fn read_capped(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, ApprovalError> {
    if let Some(announced) = response.content_length()
        && announced > limit
    {
        return Err(ApprovalError::TooLarge {
            limit,
            seen: announced,
        });
    }
    let capacity = response.content_length().unwrap_or(0).min(limit) as usize;
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        let seen = (body.len() + chunk.len()) as u64;
        if seen > limit {
            return Err(ApprovalError::TooLarge { limit, seen });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The bounded name of what a path asks for, for metrics (never the ids in it).
fn endpoint_of(path: &str) -> &'static str {
    if path.starts_with("/api/v1/attachments/") {
        "attachment"
    } else if path.starts_with("/api/v1/projects/") {
        "detail"
    } else if path == "/api/v1/projects" {
        "list"
    } else {
        "other"
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header(headers, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn transport(e: reqwest::Error) -> ApprovalError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "body cut off"
    } else {
        "request failed"
    };
    // The error's Display never includes headers, so no signature or secret reaches a log.
    ApprovalError::Transport(format!("{what}: {e}"))
}
