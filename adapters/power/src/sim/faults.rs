//! Faults the simulator injects on demand or at random.

use serde::{Deserialize, Serialize};

/// One fault, as the power side (or a proxy in front of it) produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// HTTP 500.
    Internal,
    /// HTTP 503.
    Unavailable,
    /// HTTP 504.
    GatewayTimeout,
    /// The connection is dropped without a complete answer.
    Reset,
    /// No answer for this many seconds (clients time out first), then a 504.
    Hang { secs: u64 },
    /// HTTP 429 with `Retry-After` in seconds, or as an HTTP-date when `as_date`.
    RateLimited { secs: u64, as_date: bool },
    /// HTTP 401 `invalid_token`, as if the token had just been revoked.
    TokenRevoked,
}

/// Which calls a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    #[default]
    Any,
    Token,
    Create,
    List,
    Get,
    Link,
    WaterStatus,
}

/// Before the call is handled (nothing changed) or after (the change is made, the answer is
/// lost). `After` applies to the calls that change something: create, link, water-status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    #[default]
    Before,
    After,
}

/// A fault for the next `times` matching calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injection {
    pub fault: Fault,
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub when: When,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}
