//! The Kunming power utility (南方电网昆明供电局): the joint water+power application
//! interface (用水用电联合报装), its wire types, a client, and a simulator.
//!
//! The client ([`PowerClient`]) speaks the interface as `docs/power-utility.md`
//! describes it: OAuth 2.0 client credentials, idempotent creates, `If-Match` on every change,
//! a paged change listing, the partner's rate limit and its faults. Every answer comes back
//! with its raw bytes, so that power-side data has lineage like every other document. It knows
//! nothing of pre-engagement records: what to send and when is the gateway's business. The
//! simulator ([`sim`]) plays the power side over real HTTP on loopback, faults included, for
//! tests and the demo.

pub mod client;
pub mod error;
#[cfg(feature = "sim")]
pub mod sim;
pub mod webhook;
pub mod wire;

pub use client::{Answer, ClientAuth, Created, PowerClient, PowerConfig};
pub use error::PowerError;
pub use wire::{
    Applicant, ApplicantKind, Application, CreateApplication, ListItem, ListPage, Origin, PowerNeeds,
    PowerStatus, Site, Unreadable, WaterNeeds, WaterStatus, WaterStatusReport, format_time, parse_time,
};
