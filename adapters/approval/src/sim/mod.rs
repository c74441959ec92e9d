//! A simulator of the approval platform, over real HTTP on loopback.
//!
//! It follows `contracts/approval-platform.md`, faults included: it verifies signatures
//! (HMAC-SHA256 and HMAC-SM3), timestamps and nonces, enforces the rate limit and the daily
//! quota, computes pages at request time (so they drift when projects change), makes each
//! version visible up to the lag after its `GXSJ`, and injects on demand every fault the
//! contract lists ([`Fault`]). Tests and `gateway demo` run against it.

mod faults;
mod fixtures;
mod generate;
mod server;
mod state;

pub use faults::{Fault, Injection, Target};
pub use fixtures::{FIXTURES, fixtures_at};
pub use generate::{Generator, Malformation, attachment_content};
pub use server::{SimConfig, SimServer, SimStats, Simulator};
