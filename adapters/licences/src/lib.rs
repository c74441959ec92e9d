//! The Yunnan government-services electronic licence library (云南省政务服务网 电子证照库):
//! SOAP 1.1 over HTTP, GBK or UTF-8, token authentication; a client and a simulator.
//!
//! The client speaks `contracts/licence-platform.md`: HMAC-SM3 token requests, a token cache
//! that honours expiry and early revocation, elements matched by namespace URI whatever the
//! prefix, bodies decoded strictly by their declared charset, and documents with a DTD or over
//! 10 MiB refused unread.

pub mod client;
pub mod error;
#[cfg(feature = "sim")]
pub mod sim;
pub mod soap;
pub mod xml;

pub use client::{Answer, LicenceClient, LicenceConfig, token_sign};
pub use error::LicenceError;
pub use soap::Licence;
