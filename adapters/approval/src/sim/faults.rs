//! Faults the simulator injects on demand: every one the contract lists.

use serde::{Deserialize, Serialize};

/// One fault, as the platform (or the provincial gateway in front of it) produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// HTTP 429, code `4290`, `Retry-After` in seconds.
    RateLimited { retry_after_secs: u64 },
    /// Code `4291`; the quota stays used up until 00:00 Beijing time.
    QuotaExhausted,
    /// HTTP 503, code `5030`, `resumeAt` this many seconds from now; calls until then get the
    /// same answer.
    Maintenance { for_secs: u64 },
    /// Code `5000` with HTTP 500.
    Internal500,
    /// Code `5000` with HTTP 200.
    Internal200,
    /// HTTP 502 with the provincial gateway's HTML page.
    BadGateway,
    /// HTTP 504 with the provincial gateway's HTML page.
    GatewayTimeout,
    /// HTTP 200 with `Content-Type: text/html`: a WAF page.
    WafPage,
    /// The connection closes before the announced `Content-Length`.
    CutOffConnection,
    /// `Content-Length` matches a body that is not valid JSON.
    CutOffJson,
    /// The connection is dropped without a complete response.
    Reset,
    /// No answer for this many seconds (clients must time out first).
    Hang { secs: u64 },
    /// Code `5000`, but as an unknown future code would come: `5999`.
    UnknownCode,
}

impl Fault {
    /// Every fault, for tests that walk them all.
    pub const ALL_TRANSIENT: [Fault; 11] = [
        Fault::RateLimited { retry_after_secs: 1 },
        Fault::Internal500,
        Fault::Internal200,
        Fault::BadGateway,
        Fault::GatewayTimeout,
        Fault::WafPage,
        Fault::CutOffConnection,
        Fault::CutOffJson,
        Fault::Reset,
        Fault::Hang { secs: 30 },
        Fault::UnknownCode,
    ];
}

/// Which requests a queued fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    #[default]
    Any,
    List,
    Detail,
    Attachment,
}

/// A fault to inject into the next `times` matching requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injection {
    pub fault: Fault,
    #[serde(default)]
    pub target: Target,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}
