//! What auditors use beyond the store's own log: the key that signs the log's checkpoints
//! (`key`), and the evidence package of one record (`package`).

pub mod key;
pub mod package;
