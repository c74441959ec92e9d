//! The console: server-rendered pages for operators, supervisors and auditors on the daemon's
//! HTTP server, under `/console`, when `[http] console_accounts_file` names its accounts.
//! `accounts.rs` holds the people and their roles, `session.rs` who is signed in (with each
//! session's CSRF token), `pages.rs` the routes and pages (templates in `templates/console/`).

pub mod accounts;
pub mod boards;
mod lineage;
pub mod pages;
mod queue;
mod records;
pub mod report_cache;
pub mod session;
