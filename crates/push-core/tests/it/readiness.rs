//! `/readyz` follows the outbox's writes (issue 12, point 6): 503 while the database cannot
//! take writes although it can still be read, 200 again once a write succeeds. The write
//! failure is real: the database file and its WAL are made immutable (`chattr +i`), which
//! refuses writes even to root (tests run as root, where `chmod` would not) and even through
//! the file descriptors SQLite already holds.

use std::{path::PathBuf, process::Command, time::Duration};

use push_core::testing::{eventually, seed_cdr, TestApp};
use serde_json::Value;

use crate::hardening::spawn;

const WAIT: Duration = Duration::from_secs(10);

/// Files made immutable until dropped (also used by the Redis source's tests).
pub(crate) struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` when `chattr` is missing or not permitted here (no CAP_LINUX_IMMUTABLE, or a
    /// file system without the flag).
    pub(crate) fn set(files: Vec<PathBuf>) -> Option<Immutable> {
        let ok = Command::new("chattr").arg("+i").args(&files).status().is_ok_and(|s| s.success());
        let guard = Immutable(files);
        ok.then_some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    app.get_json("/readyz").await
}

async fn ingest(app: &TestApp, call_id: &str) -> u16 {
    app.ingest(&seed_cdr(call_id)).await.status().as_u16()
}

#[tokio::test]
async fn readyz_is_503_while_the_outbox_cannot_take_writes_and_200_once_a_write_succeeds() {
    let (dir, receiver, app) = spawn(|_| {}).await;
    assert_eq!(ingest(&app, "before").await, 202, "the WAL exists");
    receiver.wait_for_successes(1, WAIT).await;
    eventually(WAIT, "the push recorded", || async {
        let (_, stats) = app.get_json("/v1/stats").await;
        (stats["subscribers"]["demo"]["delivered"] == 1).then_some(())
    })
    .await;
    let db = dir.path().join("cdr.db");
    let Some(immutable) = Immutable::set(vec![db.clone(), db.with_extension("db-wal")]) else {
        eprintln!("SKIPPED: `chattr +i` is not available or not permitted here");
        return;
    };
    assert_eq!(readyz(&app).await.0, 200, "the file can still be read");
    assert_eq!(ingest(&app, "refused").await, 503, "the commit fails");
    let (status, body) = readyz(&app).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("outbox cannot take writes")), "{body}");
    drop(immutable);
    assert_eq!(ingest(&app, "refused").await, 202, "the client's retry is stored");
    eventually(WAIT, "/readyz 200 again", || async { (readyz(&app).await.0 == 200).then_some(()) }).await;
    receiver.wait_for_successes(2, WAIT).await;
}
