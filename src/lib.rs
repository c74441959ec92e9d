//! shuiwu-gateway's core: the pipeline from raw platform documents to pre-engagement records.
//!
//! See `ARCHITECTURE.md` for the map. In one line: adapters fetch raw documents, [`store`]
//! lands them, [`mapping`] turns them into facts with lineage, [`record`] assembles facts into
//! pre-engagement records, and [`sync`] drives the approval platform's incremental sync, one
//! atomic unit of work at a time.

pub mod allocator;
pub mod app;
pub mod audit;
pub mod calendar;
pub mod cli;
pub mod config;
pub mod console;
pub mod datafiles;
pub mod deadlines;
pub mod events;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod http;
pub mod joint;
pub mod linefile;
pub mod logging;
pub mod mapping;
pub mod mask;
pub mod materials;
pub mod policy;
pub mod rebuild;
pub mod record;
pub mod remap;
pub mod report;
pub mod stages;
pub mod store;
pub mod sync;
pub mod tlog;
pub mod worktime;
