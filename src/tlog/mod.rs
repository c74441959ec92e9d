//! The audit log's cryptography, independent of where its entries are kept: the Merkle tree of
//! RFC 9162 over stored subtree hashes (`tree`), and checkpoints of it signed as C2SP signed
//! notes with Ed25519 or SM2 (`checkpoint`). An auditor's checks need only these and a public
//! key: no database, no network.

pub mod checkpoint;
pub mod tree;
