//! Internal events of the platform clients: each request's outcome and latency, each retry, each
//! 429. Every client emits the same events, so the gateway's metrics (`docs/metrics.md`) name
//! the platform, the endpoint and the outcome alike; each event's `emit` writes its log line and
//! its metrics together. Without a metrics recorder installed only the log lines remain.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// One request to a platform ended (one attempt: retries are requests of their own).
pub struct RequestCompleted<'a> {
    /// `approval`, `licences` or `power`.
    pub platform: &'static str,
    /// A bounded name for what was asked (`list`, `detail`, `attachment`, `token`, …), never a
    /// path with ids in it.
    pub endpoint: &'static str,
    /// `ok`, or the error's kind (`rate_limited`, `timeout`, `server_error`, …).
    pub outcome: &'a str,
    pub elapsed: Duration,
}

impl RequestCompleted<'_> {
    pub fn emit(self) {
        tracing::trace!(
            platform = self.platform,
            endpoint = self.endpoint,
            outcome = self.outcome,
            ms = self.elapsed.as_millis() as u64,
            "request completed"
        );
        let outcome = self.outcome.to_string();
        counter!("gateway_requests_total", "platform" => self.platform, "endpoint" => self.endpoint, "outcome" => outcome.clone())
            .increment(1);
        histogram!("gateway_request_duration_seconds", "platform" => self.platform, "endpoint" => self.endpoint)
            .record(self.elapsed.as_secs_f64());
        if outcome == "rate_limited" {
            counter!("gateway_rate_limited_total", "platform" => self.platform).increment(1);
        }
    }
}

/// A failed request will be tried again after `wait`.
pub struct RetryScheduled<'a> {
    pub platform: &'static str,
    pub endpoint: &'static str,
    pub error: &'a dyn std::fmt::Display,
    pub kind: &'a str,
    pub wait: Duration,
}

impl RetryScheduled<'_> {
    pub fn emit(self) {
        tracing::warn!(
            platform = self.platform,
            endpoint = self.endpoint,
            error = %self.error,
            kind = self.kind,
            wait = ?self.wait,
            "{} call failed; retrying",
            self.platform
        );
        counter!("gateway_retries_total", "platform" => self.platform, "endpoint" => self.endpoint)
            .increment(1);
    }
}

/// The calls counted against a platform's daily quota so far today, and those left when the
/// quota is known (0 once the platform says it is spent).
pub struct QuotaCounted {
    pub platform: &'static str,
    pub used: u64,
    pub left: Option<u64>,
}

impl QuotaCounted {
    pub fn emit(self) {
        gauge!("gateway_quota_used", "platform" => self.platform).set(self.used as f64);
        if let Some(left) = self.left {
            gauge!("gateway_quota_left", "platform" => self.platform).set(left as f64);
            if left == 0 {
                tracing::warn!(
                    platform = self.platform,
                    used = self.used,
                    "the daily call quota is spent"
                );
            }
        }
    }
}
