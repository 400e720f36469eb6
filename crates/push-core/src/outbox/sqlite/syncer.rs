//! Durability off the writer thread.
//!
//! The connection commits with `synchronous=NORMAL`: in WAL mode a commit then writes its
//! frames to the `-wal` file without waiting for the disk, which already makes it safe from a
//! process crash. For the commits that must survive a power loss (ingest, redelivery), this
//! task fsyncs the `-wal` file and only then answers the requests (the `202`) and hands their
//! deliveries to the delivery loop. One fsync covers every commit made before it, so while it
//! runs the writer goes on committing the next groups: group commit on the fsync as well as
//! on the transaction. (A checkpoint that moves frames into the database file syncs both
//! files itself, so a frame is on disk either in the WAL or in the database.)

use std::{fs::File, path::PathBuf, sync::Arc};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    ingest,
    writer::{Finish, WriterStats},
    Claimed, Handoff, StoreError,
};

/// A committed group waiting for its fsync.
pub(super) struct Committed {
    /// Answers to the group's callers.
    pub finishes: Vec<Finish>,
    /// The commit's result.
    pub commit: Result<(), StoreError>,
    /// Deliveries stored as claimed, for the delivery loop.
    pub handed: Vec<Claimed>,
    /// Whether the group changed rows (see [`super::health`]).
    pub wrote: bool,
}

/// Starts the sync task for the database file `db_path`.
/// Each group's outcome, fsync included, is recorded in `stats.health`.
pub(super) fn spawn(
    db_path: PathBuf,
    handoff: Arc<Handoff>,
    stats: Arc<WriterStats>,
) -> (mpsc::UnboundedSender<Committed>, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut wal = db_path.into_os_string();
    wal.push("-wal");
    (tx, tokio::spawn(run(PathBuf::from(wal), rx, handoff, stats)))
}

async fn run(wal: PathBuf, mut rx: mpsc::UnboundedReceiver<Committed>, handoff: Arc<Handoff>, stats: Arc<WriterStats>) {
    let mut file: Option<Arc<File>> = None;
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, usize::MAX).await > 0 {
        let synced = sync(&wal, &mut file).await;
        if let Err(e) = &synced {
            tracing::error!(error = %e, wal = %wal.display(), "fsync of the outbox failed; answering 503");
        }
        for group in batch.drain(..) {
            let committed = group.commit.is_ok();
            hand_over(&handoff, group.handed, committed);
            let result = group.commit.and(synced.clone());
            stats.health.record(&result, group.wrote);
            group.finishes.into_iter().for_each(|f| f(result.clone()));
        }
    }
}

async fn sync(wal: &PathBuf, file: &mut Option<Arc<File>>) -> Result<(), StoreError> {
    let failed = |e: std::io::Error| StoreError::Sync(Arc::new(e));
    if file.is_none() {
        let opened =
            File::open(wal).map_err(|e| std::io::Error::new(e.kind(), format!("opening {}: {e}", wal.display())));
        *file = Some(Arc::new(opened.map_err(failed)?));
    }
    let handle = file.clone().expect("opened above");
    let joined = tokio::task::spawn_blocking(move || handle.sync_data()).await;
    joined.map_err(|e| failed(std::io::Error::other(e)))?.map_err(failed)
}

/// Sends deliveries stored as claimed to the delivery loop, once they are committed (and, for
/// ingest, on disk); otherwise gives their slots back.
pub(super) fn hand_over(handoff: &Handoff, handed: Vec<Claimed>, committed: bool) {
    if handed.is_empty() {
        return;
    }
    if !committed {
        ingest::give_back(&handoff.slots, &handed);
        return;
    }
    if let Err(unsent) = handoff.deliveries.send(handed) {
        // The loop has stopped; the rows' claims are released at the next start.
        ingest::give_back(&handoff.slots, &unsent.0);
    }
}
