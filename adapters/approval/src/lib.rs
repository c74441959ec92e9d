//! The Yunnan construction-project approval platform (云南省工程建设项目审批管理系统),
//! data-sharing interface: its wire types, a client, and a simulator.
//!
//! The client ([`ApprovalClient`]) speaks the contract in `contracts/approval-platform.md`
//! exactly: signed requests, envelope codes, timeouts, rate limit, quota, maintenance and clock
//! skew. It yields raw documents and knows nothing of pre-engagement records. The simulator
//! ([`sim`]) plays the platform over real HTTP on loopback, faults included, for tests and the
//! demo.

pub mod client;
pub mod error;
pub mod sign;
#[cfg(feature = "sim")]
pub mod sim;
pub mod wire;

pub use client::{
    ApprovalClient, ClientConfig, Fetched, MAX_PAGE_SIZE, RetryPolicy, default_max_document_bytes,
};
pub use error::ApprovalError;
pub use sign::SignMethod;
pub use wire::{Envelope, ListPage, Summary};
