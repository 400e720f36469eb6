//! Delivery state changes: claim, record results, redeliver, release.

use rusqlite::{params, Connection};

use super::{bulk, writer::Settle, ClaimBatch, Claimed, Completion, MoveReport, NextState, RedeliverFilter};
use crate::outbox::chains;

/// A claimed delivery from a row of [`CLAIM`] or [`RELEASE_HEADS`]: `id, call_id, attempts,
/// round_start, _, event_id, payload`.
fn claimed_row(row: &rusqlite::Row<'_>, subscriber: String) -> rusqlite::Result<Claimed> {
    Ok(Claimed {
        id: row.get(0)?,
        call_id: row.get(1)?,
        attempts: row.get(2)?,
        round_start: row.get(3)?,
        event_id: row.get(5)?,
        payload: row.get(6)?,
        subscriber,
    })
}

/// Clears claims a previous process left behind (their attempts never finished) or that the
/// delivery loop gives up at shutdown.
pub(super) fn release_claims(conn: &Connection) -> anyhow::Result<()> {
    conn.execute("UPDATE deliveries SET claimed = 0 WHERE claimed = 1", [])?;
    Ok(())
}

/// Claims the due deliveries of subscriber `?1` at `?2`, oldest due first, at most `?3`, and
/// returns them with their events and when the subscriber's next delivery not yet due falls
/// due (the claim leaves those alone, so that value does not change while it runs): one
/// statement per subscriber. `RETURNING` gives no order;
/// [`claim`] sorts.
pub(super) const CLAIM: &str = "UPDATE deliveries SET claimed = 1
     WHERE id IN (SELECT id FROM deliveries
                  WHERE subscriber = ?1 AND state = 'pending' AND blocked = 0 AND claimed = 0
                    AND next_attempt_at <= ?2
                  ORDER BY next_attempt_at LIMIT ?3)
     RETURNING id, call_id, attempts, round_start, next_attempt_at,
               (SELECT e.event_id FROM events e WHERE e.id = deliveries.event_row),
               (SELECT e.payload FROM events e WHERE e.id = deliveries.event_row),
               (SELECT MIN(d.next_attempt_at) FROM deliveries d
                WHERE d.subscriber = ?1 AND d.state = 'pending' AND d.blocked = 0 AND d.claimed = 0
                  AND d.next_attempt_at > ?2)";

/// When the next claimable delivery of subscriber `?1` falls due, if any.
const NEXT_DUE: &str = "SELECT MIN(next_attempt_at) FROM deliveries
     WHERE subscriber = ?1 AND state = 'pending' AND blocked = 0 AND claimed = 0";

/// Lets the earliest pending status of each `(subscriber, call_id, claim)` row of `{values}`
/// go, and claims it in the same write where `claim` is 1: such a head never enters
/// `deliveries_due` and needs no claim of its own. Within one (subscriber, call), ids grow
/// with `sequence` (the single writer numbers both, in the same order), so the index order
/// of `deliveries_call (call_id, id)` is the chain's order: the first pending row is the
/// head, found without a sort. Returns every head it let go, with the
/// event of each one it claimed. Each (subscriber, call) must appear once, so that no head is
/// returned twice.
pub(super) const RELEASE_HEADS: &str = "UPDATE deliveries SET blocked = 0, claimed = v.column3
     FROM (VALUES {values}) AS v
     WHERE deliveries.claimed = 0
       AND deliveries.id = (SELECT d.id FROM deliveries d INDEXED BY deliveries_call
                            WHERE d.subscriber = v.column1 AND d.call_id = v.column2 AND d.state = 'pending'
                            ORDER BY d.id LIMIT 1)
     RETURNING id, call_id, attempts, round_start, claimed,
               (SELECT e.event_id FROM events e WHERE e.id = deliveries.event_row AND deliveries.claimed = 1),
               (SELECT e.payload FROM events e WHERE e.id = deliveries.event_row AND deliveries.claimed = 1),
               subscriber";

/// Blocks every waiting status of the `[subscriber, call_id]` pairs in `?1` (JSON), found by
/// call (see `ingest::PENDING_CHAINS`).
pub(super) const RECHAIN_BLOCK: &str =
    "UPDATE deliveries INDEXED BY deliveries_call SET blocked = 1 FROM json_each(?1) AS v
     WHERE deliveries.subscriber = v.value->>0 AND deliveries.call_id = v.value->>1
       AND deliveries.state = 'pending' AND deliveries.claimed = 0";

/// Claims up to each subscriber's limit of due, unblocked, unclaimed deliveries, oldest due
/// first, and tells when the next one falls due.
pub(super) fn claim(tx: &Connection, wants: &[(String, usize)], now: i64) -> anyhow::Result<ClaimBatch> {
    let mut batch = ClaimBatch::default();
    for (subscriber, limit) in wants.iter().filter(|(_, n)| *n > 0) {
        let mut stmt = tx.prepare_cached(CLAIM)?;
        let mut rows = stmt.query(params![subscriber, now, *limit as i64])?;
        let mut claimed = Vec::with_capacity(*limit);
        let mut later: Option<i64> = None;
        while let Some(row) = rows.next()? {
            let due: i64 = row.get(4)?;
            later = row.get(7)?;
            claimed.push((due, claimed_row(row, subscriber.clone())?));
        }
        drop(rows);
        claimed.sort_unstable_by_key(|(due, item)| (*due, item.id));
        let (got, filled) = (claimed.len(), claimed.len() >= *limit);
        batch.items.extend(claimed.into_iter().map(|(_, item)| item));
        if filled {
            // More may be due already: the loop claims again as soon as its queue runs low,
            // and learns when the rest falls due from a claim that is not filled.
            continue;
        }
        // Everything due was claimed, so what is left falls due later: the claim said when,
        // unless it claimed nothing (no row to say it on).
        let due: Option<i64> = match got {
            0 => tx.prepare_cached(NEXT_DUE)?.query_row([subscriber], |r| r.get(0))?,
            _ => later,
        };
        batch.unfilled.push((subscriber.clone(), due));
    }
    Ok(batch)
}

/// The statement recording attempted deliveries, with `$state` the new state's expression
/// and `$round` what happens to `round_start`.
macro_rules! record {
    ($state:literal, $round:literal) => {
        concat!(
            "UPDATE deliveries SET state = ",
            $state,
            ", claimed = 0, attempts = v.column3,",
            $round,
            " next_attempt_at = COALESCE(v.column4, next_attempt_at), last_status = v.column5,
             last_error = v.column6, delivered_at = v.column7, updated_at = v.column8,
             last_attempt_at = v.column9, last_latency_ms = v.column10
         FROM (VALUES {values}) AS v WHERE deliveries.id = v.column1"
        )
    };
}

/// Records attempted deliveries: `v.column2` is the new state.
const RECORD: &str = record!("v.column2", "");

/// As [`RECORD`], where a state may be `held`: pending again, with `round_start` moved on.
const RECORD_WITH_HELD: &str = record!(
    "CASE v.column2 WHEN 'held' THEN 'pending' ELSE v.column2 END",
    " round_start = round_start + (v.column2 = 'held'),"
);

/// Records finished attempts in bulk: the attempt log (a successful attempt lives on the
/// delivery row only, see `read::attempts`) and the delivery's new state. For status
/// deliveries, [`release_chains`] then lets the next one of each finished call go.
pub(super) fn complete(tx: &Connection, done: &[Completion]) -> anyhow::Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let (returned, attempted): (Vec<&Completion>, Vec<&Completion>) =
        done.iter().partition(|c| c.next == NextState::Returned);
    let failed: Vec<&&Completion> = attempted.iter().filter(|c| c.next != NextState::Delivered).collect();
    bulk::execute(
        tx,
        "INSERT OR REPLACE INTO attempts (delivery_id, attempt, at, status, error, latency_ms) VALUES {values}",
        6,
        &failed,
        |args, c| {
            args.add(c.id)?;
            args.add(c.attempt)?;
            args.add(c.at)?;
            args.add(c.status)?;
            args.add(c.error.as_deref())?;
            args.add(c.latency_ms)
        },
    )?;
    // A held attempt (a failed probe) is logged, and moves `round_start` along with
    // `attempts`, so the retry schedule does not advance. Rounds without one (nearly all)
    // use the plain statement (callgrind: about 500 instructions less per recorded event).
    let held = attempted.iter().any(|c| c.next == NextState::Held);
    bulk::execute_padded(
        tx,
        match held {
            true => RECORD_WITH_HELD,
            false => RECORD,
        },
        10,
        &attempted,
        |args, c| {
            let (state, next_at, delivered_at) = match c.next {
                NextState::Delivered => ("delivered", None, Some(c.at + c.latency_ms)),
                NextState::RetryAt(at) => ("pending", Some(at), None),
                NextState::Dead => ("dead", None, None),
                NextState::Held | NextState::Returned => ("held", None, None),
            };
            args.add(c.id)?;
            args.add(state)?;
            args.add(c.attempt)?;
            args.add(next_at)?;
            args.add(c.status)?;
            args.add(c.error.as_deref())?;
            args.add(delivered_at)?;
            args.add(c.at + c.latency_ms)?;
            args.add(c.at)?;
            args.add(c.latency_ms)
        },
    )?;
    // A returned claim was never attempted: only the claim goes.
    bulk::execute(tx, "UPDATE deliveries SET claimed = 0 WHERE id IN (VALUES {values})", 1, &returned, |args, c| {
        args.add(c.id)
    })?;
    Ok(())
}

/// After [`complete`], lets the next status of each call whose delivery finished (delivered
/// or dead) go. Up to `wants` of each subscriber are claimed in the same write and returned,
/// and `wants` is lowered by as many (the claim that follows takes the rest from
/// `deliveries_due`).
pub(super) fn release_chains(
    tx: &Connection,
    done: &[Completion],
    wants: &mut [(String, usize)],
) -> anyhow::Result<Vec<Claimed>> {
    let rows = chains::plan(&chains::finished(done), wants);
    let claimed = release_heads(tx, &rows)?;
    chains::took(wants, &claimed);
    Ok(claimed)
}

/// Puts matching finished deliveries back to pending with a fresh schedule.
pub(super) fn redeliver(tx: &Connection, filter: &RedeliverFilter, now: i64, ordered: bool) -> anyhow::Result<u64> {
    // A delivered one keeps its success in the attempt log before it is attempted again.
    let (id, state, subscriber) = (filter.id, filter.state.as_deref(), filter.subscriber.as_deref());
    tx.execute(
        "INSERT OR IGNORE INTO attempts (delivery_id, attempt, at, status, error, latency_ms)
         SELECT id, attempts, last_attempt_at, last_status, NULL, last_latency_ms FROM deliveries
         WHERE state = 'delivered' AND last_attempt_at IS NOT NULL
           AND (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR subscriber = ?3)",
        params![id, state, subscriber],
    )?;
    let mut chains: Vec<(String, String)> = tx
        .prepare(
            "UPDATE deliveries SET state = 'pending', blocked = ?5, round_start = attempts,
                 next_attempt_at = ?4, updated_at = ?4, delivered_at = NULL
             WHERE state != 'pending'
               AND (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR subscriber = ?3)
             RETURNING subscriber, call_id",
        )?
        .query_map(params![id, state, subscriber, now, ordered], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let count = chains.len() as u64;
    if ordered && count > 0 {
        chains.sort();
        chains.dedup();
        rechain(tx, &serde_json::to_string(&chains)?)?;
    }
    Ok(count)
}

/// Re-chains the `[subscriber, call_id]` pairs in `chains` (JSON) after a redelivery: every
/// waiting status is blocked, then each chain's head goes unless one of its statuses is in
/// flight (that one's completion lets the head go).
fn rechain(tx: &Connection, chains: &str) -> anyhow::Result<()> {
    tx.execute(RECHAIN_BLOCK, [chains])?;
    let idle: Vec<(String, String)> = bulk::pairs(
        tx,
        "SELECT v.value->>0, v.value->>1 FROM json_each(?1) AS v
         WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber = v.value->>0
                           AND d.call_id = v.value->>1 AND d.state = 'pending' AND d.claimed = 1)",
        chains,
    )?;
    let idle: Vec<(&str, &str, bool)> = idle.iter().map(|(s, c)| (s.as_str(), c.as_str(), false)).collect();
    release_heads(tx, &idle).map(drop)
}

/// Lets the head of each `(subscriber, call_id, claim)` chain go ([`RELEASE_HEADS`]); returns
/// the ones it claimed.
pub(super) fn release_heads(tx: &Connection, chains: &[(&str, &str, bool)]) -> anyhow::Result<Vec<Claimed>> {
    let mut claimed = Vec::new();
    let bind: bulk::Bind<(&str, &str, bool)> = |args, (subscriber, call_id, claim)| {
        args.add(*subscriber)?;
        args.add(*call_id)?;
        args.add(*claim)
    };
    bulk::query(tx, RELEASE_HEADS, 3, chains, bind, |row| {
        if row.get::<_, bool>(4)? {
            claimed.push(claimed_row(row, row.get(7)?)?);
        }
        Ok(())
    })?;
    Ok(claimed)
}

/// Keeps (or forgets) that the operator paused `subscriber`.
pub(super) fn set_paused(tx: &Connection, subscriber: &str, paused: bool, now: i64) -> anyhow::Result<()> {
    match paused {
        true => tx.execute(
            "INSERT INTO subscriber_pauses (subscriber, paused_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![subscriber, now],
        )?,
        false => tx.execute("DELETE FROM subscriber_pauses WHERE subscriber = ?1", [subscriber])?,
    };
    Ok(())
}

/// Drops or moves a removed subscriber's pending deliveries (see [`Settle`]); a drop reports
/// its count as `moved`.
pub(super) fn settle(tx: &Connection, settle: &Settle, now: i64, ordered: bool) -> anyhow::Result<MoveReport> {
    match settle {
        Settle::Drop { subscriber } => {
            let n = tx.execute(
                "UPDATE deliveries SET state = 'dead', claimed = 0, updated_at = ?2,
                     last_error = 'dropped by operator: subscriber removed'
                 WHERE subscriber = ?1 AND state = 'pending'",
                params![subscriber, now],
            )?;
            Ok(MoveReport { moved: n as u64, skipped: 0 })
        }
        Settle::Move { from, to } => {
            let mut chains: Vec<(String, String)> = tx
                .prepare(
                    "UPDATE deliveries SET subscriber = ?2, claimed = 0, blocked = ?4, updated_at = ?3
                     WHERE subscriber = ?1 AND state = 'pending'
                       AND NOT EXISTS (SELECT 1 FROM deliveries d
                                       WHERE d.event_row = deliveries.event_row AND d.subscriber = ?2)
                     RETURNING subscriber, call_id",
                )?
                .query_map(params![from, to, now, ordered], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let moved = chains.len() as u64;
            let skipped: i64 = tx.query_row(
                "SELECT COUNT(*) FROM deliveries WHERE subscriber = ?1 AND state = 'pending'",
                [from],
                |r| r.get(0),
            )?;
            if ordered && moved > 0 {
                chains.sort();
                chains.dedup();
                rechain(tx, &serde_json::to_string(&chains)?)?;
            }
            Ok(MoveReport { moved, skipped: skipped as u64 })
        }
    }
}
