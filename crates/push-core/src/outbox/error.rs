//! What can go wrong in a store's writes, typed, so callers tell a stopped writer from a
//! failed statement, transaction or fsync (all of which mean nothing of the command was
//! kept). Cloned once per caller of a group that failed together.

use std::sync::Arc;

/// Why the outbox did not do what was asked; nothing of it was kept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The writer has stopped (the program is stopping, or the writer failed).
    #[error("the outbox writer has stopped")]
    Stopped,
    /// A statement of the command failed; its changes were undone.
    #[error("outbox statement failed: {0:#}")]
    Statement(Arc<anyhow::Error>),
    /// The transaction could not begin, keep a unit or commit; nothing of it was kept.
    #[error("outbox transaction failed: {0}")]
    Transaction(Arc<dyn std::error::Error + Send + Sync>),
    /// The commit could not be made durable (the fsync of the WAL failed).
    #[error("fsync of the outbox failed: {0}")]
    Sync(Arc<std::io::Error>),
}

impl StoreError {
    /// A failed statement (the database's error or one of the outbox's own checks).
    pub(super) fn statement(e: anyhow::Error) -> Self {
        StoreError::Statement(Arc::new(e))
    }

    /// A failed BEGIN, savepoint or COMMIT.
    pub(super) fn transaction(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Transaction(Arc::new(e))
    }
}
