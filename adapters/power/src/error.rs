//! Every way a call to the power side can fail, classified per the interface.

use std::time::Duration;

use shuiwu_wire::{FaultClass, RawDocument};

use crate::wire::Application;

/// A failed call. [`PowerError::class`] says whether the same request may succeed later.
/// Answers the caller acts on (a version conflict, a duplicate external id, a permanent
/// refusal) carry the raw answer, so that what the power side said is kept as evidence.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("rate limit exceeded (HTTP 429); retry after {retry_after:?}")]
    RateLimited { retry_after: Option<Duration> },
    #[error("power side failed (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    #[error("transport failure: {0}")]
    Transport(String),
    #[error("unusable answer (HTTP {status}): {detail}")]
    BadBody { status: u16, detail: String },
    /// The access token expired or was revoked: the client gets a new one and repeats the
    /// call once; a second refusal is reported as it is.
    #[error("access token refused (invalid_token)")]
    InvalidToken,
    #[error("client credentials refused ({error}): check client_id and GATEWAY_POWER_CLIENT_SECRET")]
    InvalidClient { error: String },
    /// 412: the application changed since the version sent in `If-Match`.
    #[error("version mismatch: the application is at version {}", current.version)]
    VersionMismatch {
        current: Box<Application>,
        raw: Box<RawDocument>,
    },
    /// 409 on a create: another key already created an application for this `externalId`.
    #[error("duplicate external id: application {existing} already has it")]
    DuplicateExternalId { existing: String, raw: Box<RawDocument> },
    /// 422 on a create: the key was used before with a different body.
    #[error("idempotency key reused with a different body")]
    KeyReused { raw: Box<RawDocument> },
    /// Any other 4xx answer: permanent for this request.
    #[error("refused (HTTP {status}, {error}): {message}")]
    Refused {
        status: u16,
        error: String,
        message: String,
        raw: Box<RawDocument>,
    },
    /// The answer is larger than the client accepts; it was not read further.
    #[error("the answer is larger than the {limit} bytes accepted ({seen} bytes read or announced)")]
    TooLarge { limit: u64, seen: u64 },
    #[error("configuration: {0}")]
    Config(String),
}

impl PowerError {
    pub fn class(&self) -> FaultClass {
        use PowerError::*;
        match self {
            RateLimited { .. } | Server { .. } | Transport(_) | BadBody { .. } | InvalidToken => {
                FaultClass::Transient
            }
            InvalidClient { .. }
            | VersionMismatch { .. }
            | DuplicateExternalId { .. }
            | KeyReused { .. }
            | Refused { .. }
            | TooLarge { .. }
            | Config(_) => FaultClass::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == FaultClass::Transient
    }

    /// The interface's error code (`invalid_transition`, `already_linked`, …), where the
    /// power side gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            PowerError::Refused { error, .. } | PowerError::InvalidClient { error } => Some(error),
            PowerError::VersionMismatch { .. } => Some("version_mismatch"),
            PowerError::DuplicateExternalId { .. } => Some("duplicate_external_id"),
            PowerError::KeyReused { .. } => Some("idempotency_key_reused"),
            PowerError::InvalidToken => Some("invalid_token"),
            _ => None,
        }
    }

    /// The raw answer behind the error, where there was a readable one.
    pub fn raw(&self) -> Option<&RawDocument> {
        match self {
            PowerError::VersionMismatch { raw, .. }
            | PowerError::DuplicateExternalId { raw, .. }
            | PowerError::KeyReused { raw }
            | PowerError::Refused { raw, .. } => Some(raw),
            _ => None,
        }
    }
}
