//! Raw documents and fault classes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where and when a document was fetched. The URL never carries a secret: every platform the
/// gateway talks to authenticates in headers, and adapters strip anything else before filling
/// this in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchMeta {
    pub source: String,
    pub method: String,
    pub url: String,
    pub status: u16,
    pub request_id: Option<String>,
    pub content_type: Option<String>,
    pub fetched_at: DateTime<Utc>,
}

/// A response body exactly as received, with its fetch metadata. The bytes are the evidence an
/// auditor traces a value back to, so nothing here ever re-encodes or pretty-prints them.
#[derive(Debug, Clone)]
pub struct RawDocument {
    pub bytes: bytes_like::Bytes,
    pub meta: FetchMeta,
}

/// Whether repeating the same request can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultClass {
    /// The same request may succeed later: retry with backoff.
    Transient,
    /// Retrying the same request cannot help: hold the item for an operator.
    Permanent,
}

mod bytes_like {
    /// Raw bodies are shared between the store and the mapper without copying.
    pub type Bytes = std::sync::Arc<[u8]>;
}
