//! What auditors use beyond the store's own log: the key that signs the log's checkpoints
//! (`key`), the evidence package of one record (`package`), and consistency proofs between
//! checkpoints (`consistency`).

pub mod consistency;
pub mod key;
pub mod package;
