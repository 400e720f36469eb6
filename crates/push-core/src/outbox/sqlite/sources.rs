//! What sources keep in the outbox besides events: their positions and their rejects, read on
//! the reader pool (they are written with the events, in `ingest`).

use sqlx::Row as _;

use super::{Outbox, RejectRecord};

impl Outbox {
    /// A source's last kept position.
    pub async fn source_mark(&self, source: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT mark FROM source_marks WHERE source = ?1")
            .bind(source)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Rejects, newest first, of one source if given.
    pub async fn rejects(&self, source: Option<String>, limit: u32) -> anyhow::Result<Vec<RejectRecord>> {
        let rows = sqlx::query(
            "SELECT id, source, reason, raw, created_at FROM rejects
             WHERE ?1 IS NULL OR source = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .bind(source)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(record).collect()
    }

    /// One reject.
    pub async fn reject(&self, id: i64) -> anyhow::Result<Option<RejectRecord>> {
        let row = sqlx::query("SELECT id, source, reason, raw, created_at FROM rejects WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(record).transpose()
    }
}

fn record(r: &sqlx::sqlite::SqliteRow) -> anyhow::Result<RejectRecord> {
    Ok(RejectRecord {
        id: r.try_get(0)?,
        source: r.try_get(1)?,
        reason: r.try_get(2)?,
        raw: r.try_get(3)?,
        created_at: r.try_get(4)?,
    })
}
