//! The licence library's client: token cache, signing, limiter, strict decoding, retries.

use std::num::NonZeroU32;
use std::sync::{Arc, Once};
use std::time::Duration;

use backon::Retryable;
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use shuiwu_wire::{Clock, FetchMeta, RawDocument, Secret};
use sm3::Sm3;

use crate::error::LicenceError;
use crate::soap::{self, Licence, Reply};
use crate::xml::{self, MAX_DOCUMENT_BYTES};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenceConfig {
    /// Scheme, host and port; the service path is fixed.
    pub base_url: String,
    pub app_id: String,
    #[serde(default)]
    pub app_secret: Secret,
    /// The platform allows 5 per second; `0` turns the limiter off.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    #[serde(default = "default_min_delay")]
    pub min_delay_ms: u64,
}

fn default_rate() -> u32 {
    4
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_retries() -> usize {
    4
}
fn default_min_delay() -> u64 {
    200
}

/// HMAC-SM3(appSecret, AppId + Timestamp), lower-case hex.
pub fn token_sign(secret: &str, app_id: &str, timestamp_ms: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac =
        <Hmac<Sm3> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(app_id.as_bytes());
    mac.update(timestamp_ms.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Licences of one holder, with the document they were read from.
#[derive(Debug, Clone)]
pub struct Answer {
    pub licences: Vec<Licence>,
    pub raw: RawDocument,
}

struct Token {
    value: String,
    expires_at: DateTime<Utc>,
}

pub struct LicenceClient {
    http: reqwest::Client,
    cfg: LicenceConfig,
    clock: Arc<dyn Clock>,
    limiter: Option<DefaultDirectRateLimiter>,
    token: tokio::sync::Mutex<Option<Token>>,
}

static CRYPTO: Once = Once::new();

const PATH: &str = "/services/LicenceService";

impl LicenceClient {
    pub fn new(cfg: LicenceConfig, clock: Arc<dyn Clock>) -> Result<Self, LicenceError> {
        CRYPTO.call_once(|| {
            // Fails only when a provider is already installed, which serves as well.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| LicenceError::Transport(e.to_string()))?;
        let limiter = NonZeroU32::new(cfg.rate_per_second)
            .map(|r| RateLimiter::direct(Quota::per_second(r).allow_burst(NonZeroU32::MIN)));
        Ok(LicenceClient {
            http,
            cfg,
            clock,
            limiter,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// Every licence of `holder` (of one type when given). A `TOKEN_EXPIRED` answer gets a
    /// new token and the call is repeated once.
    pub async fn query(&self, holder: &str, licence_type: Option<&str>) -> Result<Answer, LicenceError> {
        let token = self.token(false).await?;
        match self.query_with(&token, holder, licence_type).await {
            Err(LicenceError::TokenExpired) => {
                tracing::info!("licence token revoked early; getting a new one and repeating the call once");
                let token = self.token(true).await?;
                self.query_with(&token, holder, licence_type).await
            }
            other => other,
        }
    }

    async fn query_with(
        &self,
        token: &str,
        holder: &str,
        licence_type: Option<&str>,
    ) -> Result<Answer, LicenceError> {
        let body = soap::query_licence(&self.cfg.app_id, token, holder, licence_type);
        let (reply, raw) = self.call("QueryLicence", body).await?;
        match reply {
            Reply::Licences(licences) => Ok(Answer { licences, raw }),
            Reply::Token { .. } => Err(LicenceError::BadBody(
                "a token where licences were expected".into(),
            )),
        }
    }

    /// The cached token, or a new one when it is (nearly) expired or `renew` is set.
    async fn token(&self, renew: bool) -> Result<String, LicenceError> {
        let mut cached = self.token.lock().await;
        let now = self.clock.now();
        if !renew
            && let Some(t) = cached.as_ref()
            && t.expires_at > now + chrono::Duration::seconds(60)
        {
            return Ok(t.value.clone());
        }
        let timestamp = now.timestamp_millis().to_string();
        let sign = token_sign(self.cfg.app_secret.expose(), &self.cfg.app_id, &timestamp);
        let (reply, _) = self
            .call("GetToken", soap::get_token(&self.cfg.app_id, &timestamp, &sign))
            .await?;
        let Reply::Token {
            token,
            expires_in_secs,
        } = reply
        else {
            return Err(LicenceError::BadBody("GetToken answered without a token".into()));
        };
        *cached = Some(Token {
            value: token.clone(),
            expires_at: now + chrono::Duration::seconds(expires_in_secs as i64),
        });
        Ok(token)
    }

    /// One SOAP call with retries of transient faults (never of TOKEN_EXPIRED, which the
    /// caller handles by renewing the token).
    async fn call(&self, action: &str, body: String) -> Result<(Reply, RawDocument), LicenceError> {
        let backoff = shuiwu_wire::retry::jittered(
            Duration::from_millis(self.cfg.min_delay_ms),
            Duration::from_secs(20),
            self.cfg.max_retries,
        );
        let endpoint = if action == "GetToken" { "token" } else { "query" };
        (|| async {
            let started = std::time::Instant::now();
            let answer = self.attempt(action, &body).await;
            shuiwu_wire::events::RequestCompleted {
                platform: "licences",
                endpoint,
                outcome: match &answer {
                    Ok(_) => "ok",
                    Err(LicenceError::RateLimited) => "rate_limited",
                    Err(e) if e.is_transient() => "transient_error",
                    Err(_) => "refused",
                },
                elapsed: started.elapsed(),
            }
            .emit();
            answer
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &LicenceError| e.is_transient() && *e != LicenceError::TokenExpired)
        .adjust(|e: &LicenceError, d: Option<Duration>| {
            let d = d?;
            // RATE_LIMIT: wait 2 s or more.
            Some(if *e == LicenceError::RateLimited {
                d.max(Duration::from_secs(2))
            } else {
                d
            })
        })
        .notify(|e: &LicenceError, wait: Duration| {
            shuiwu_wire::events::RetryScheduled {
                platform: "licences",
                endpoint,
                error: e,
                kind: if *e == LicenceError::RateLimited {
                    "rate_limited"
                } else {
                    "transient_error"
                },
                wait,
            }
            .emit();
        })
        .await
    }

    async fn attempt(&self, action: &str, body: &str) -> Result<(Reply, RawDocument), LicenceError> {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let url = format!("{}{PATH}", self.cfg.base_url.trim_end_matches('/'));
        let mut response = self
            .http
            .post(&url)
            .header("Content-Type", "text/xml; charset=UTF-8")
            .header("SOAPAction", format!("\"{action}\""))
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| LicenceError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_DOCUMENT_BYTES)
        {
            return Err(xml::XmlError::TooLarge(response.content_length().unwrap_or(0) as usize).into());
        }
        // Read at most the limit: a hostile answer is refused, not buffered.
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| LicenceError::Transport(format!("body cut off: {e}")))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_DOCUMENT_BYTES {
                return Err(xml::XmlError::TooLarge(bytes.len()).into());
            }
        }
        if content_type
            .as_deref()
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("text/html"))
        {
            return Err(LicenceError::Maintenance);
        }
        let text = xml::decode(&bytes, content_type.as_deref())?;
        let root = xml::parse(&text)?;
        let raw = RawDocument {
            bytes: Arc::from(bytes.as_slice()),
            meta: FetchMeta {
                source: "licences".into(),
                method: format!("POST {action}"),
                url,
                status,
                request_id: None,
                content_type,
                fetched_at: self.clock.now(),
            },
        };
        Ok((soap::interpret(&root)?, raw))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_sign_fixed_vector() {
        // Computed with Python's hmac over OpenSSL's SM3, independently of this crate.
        assert_eq!(
            super::token_sign("licence-secret", "wsgs-km-001", "1709620930123"),
            include_str!("../tests/vectors/token-sign-sm3.txt").trim()
        );
    }
}
