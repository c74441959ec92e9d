//! Every way a call to the platform can fail, each classified per the contract's table.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shuiwu_wire::{FaultClass, RawDocument};

/// A failed call. [`ApprovalError::class`] says whether the same request may succeed later.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("rate limit exceeded (4290); retry after {retry_after:?}")]
    RateLimited { retry_after: Option<Duration> },
    #[error("daily call quota used up (4291); no call before {until}")]
    QuotaExhausted { until: DateTime<Utc> },
    #[error("platform under maintenance (5030); resumes at {until:?}")]
    Maintenance { until: Option<DateTime<Utc>> },
    #[error("timestamp rejected (4011): clock skew against the platform")]
    TimestampRejected,
    #[error("nonce rejected as reused (4012)")]
    NonceRejected,
    #[error("platform internal error (5000, HTTP {status}): {msg}")]
    Internal { status: u16, msg: String },
    #[error("unusable response (HTTP {status}): {detail}")]
    BadBody { status: u16, detail: String },
    #[error("transport failure: {0}")]
    Transport(String),
    #[error("signature rejected (4010): check appId, appSecret and sign method")]
    BadSignature,
    #[error("bad parameter (4001): {msg}")]
    BadParameter { msg: String },
    #[error("project outside the account's service area (4030)")]
    OutsideServiceArea { raw: Box<RawDocument> },
    #[error("project not found or not yet visible (4040)")]
    NotFound { raw: Box<RawDocument> },
    #[error("unknown envelope code {code} (HTTP {status}): {msg}")]
    UnknownCode { code: String, status: u16, msg: String },
    #[error("attachment content hash {got} does not match the announced {expected}")]
    HashMismatch { expected: String, got: String },
    /// The answer is larger than the client accepts (a document limit, or an attachment's
    /// announced size); it was not read further.
    #[error("the answer is larger than the {limit} bytes accepted ({seen} bytes read or announced)")]
    TooLarge { limit: u64, seen: u64 },
}

impl ApprovalError {
    /// Transient or permanent, as the contract's table says. `4040` is permanent for the
    /// request; whether that means "not visible yet" is for the sync to judge.
    pub fn class(&self) -> FaultClass {
        use ApprovalError::*;
        match self {
            RateLimited { .. }
            | QuotaExhausted { .. }
            | Maintenance { .. }
            | TimestampRejected
            | NonceRejected
            | Internal { .. }
            | BadBody { .. }
            | HashMismatch { .. }
            | Transport(_) => FaultClass::Transient,
            UnknownCode { code, .. } if code.starts_with('5') => FaultClass::Transient,
            BadSignature
            | BadParameter { .. }
            | OutsideServiceArea { .. }
            | NotFound { .. }
            | UnknownCode { .. }
            | TooLarge { .. } => FaultClass::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == FaultClass::Transient
    }

    /// The earliest instant at which the platform said a call may succeed again, if it said.
    pub fn not_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            ApprovalError::RateLimited { retry_after: Some(d) } => {
                Some(now + chrono::Duration::from_std(*d).unwrap_or_default())
            }
            ApprovalError::QuotaExhausted { until } => Some(*until),
            ApprovalError::Maintenance { until } => *until,
            _ => None,
        }
    }

    /// A short stable label, for logs, metrics and the failure queue.
    pub fn kind(&self) -> &'static str {
        use ApprovalError::*;
        match self {
            RateLimited { .. } => "rate_limited",
            QuotaExhausted { .. } => "quota_exhausted",
            Maintenance { .. } => "maintenance",
            TimestampRejected => "timestamp_rejected",
            NonceRejected => "nonce_rejected",
            Internal { .. } => "internal_error",
            BadBody { .. } => "bad_body",
            Transport(_) => "transport",
            BadSignature => "bad_signature",
            BadParameter { .. } => "bad_parameter",
            OutsideServiceArea { .. } => "outside_service_area",
            NotFound { .. } => "not_found",
            UnknownCode { .. } => "unknown_code",
            HashMismatch { .. } => "hash_mismatch",
            TooLarge { .. } => "too_large",
        }
    }
}
