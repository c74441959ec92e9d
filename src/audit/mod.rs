//! What auditors use beyond the store's own log: the key that signs the log's checkpoints
//! (`key`).

pub mod key;
