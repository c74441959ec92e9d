//! What every platform adapter shares, and nothing more.
//!
//! Adapters speak a platform's wire protocol and hand back [`RawDocument`]s: the bytes exactly as
//! received plus where and when they came from. They classify every failure as
//! [`FaultClass::Transient`] or [`FaultClass::Permanent`] so that the pipeline can decide between
//! "retry later" and "hold for an operator" without knowing any platform's codes. Time comes from
//! an injected [`Clock`] so that tests can run quotas, lags and deadlines without sleeping.

mod clock;
pub mod events;
pub mod ids;
mod raw;
pub mod retry;
mod secret;

pub use clock::{
    Clock, ManualClock, SystemClock, beijing, beijing_today, format_beijing, format_human, format_rfc3339,
    human_from_stored, parse_beijing, parse_time,
};
pub use raw::{FaultClass, FetchMeta, RawDocument};
pub use secret::Secret;
