//! Bulk ingest in PostgreSQL: every request of one writer group is planned in memory against
//! a few bulk lookups, then written with one statement per table (`unnest` of arrays), so a
//! group's round trips do not grow with its events. The group's calls are locked first (see
//! [`lock_calls`]): another replica's transaction on the same call waits for this commit, so
//! sequences, duplicates, the 409 after HANGUP and the chains are decided on committed truth.

use std::collections::{HashMap, HashSet};

use sqlx::{Postgres, Row as _, Transaction};

use super::{IngestItem, IngestOutcome, Shared, SourceNotes};
use crate::outbox::{stale, Accepted};

/// The advisory-lock namespace of a call (the first key of `pg_advisory_xact_lock(int, int)`).
pub(super) const CALL_LOCKS: i32 = 0x5650; // "VP"
/// The lock every call-locking transaction shares and a re-chaining operator action
/// ([`lock_all_calls`]) takes alone.
const ALL_CALLS: (i32, i32) = (0x5651, 0);

/// One ingest request of the group.
pub(super) struct Request<'a> {
    pub items: &'a [IngestItem],
    pub notes: &'a SourceNotes,
    pub now: i64,
}

/// Takes the transaction-scoped advisory lock of each of `calls`, in the order of their
/// hashes, so two transactions locking overlapping calls never deadlock. Held to the commit.
/// The shared lock of [`ALL_CALLS`] comes first: an operator's redelivery or move, which
/// touches delivery rows of calls it cannot know in advance, waits for these transactions
/// instead of locking calls after its rows (which could deadlock with one of them).
pub(super) async fn lock_calls(tx: &mut Transaction<'_, Postgres>, calls: &[&str]) -> sqlx::Result<()> {
    if calls.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT CASE WHEN x.every THEN pg_advisory_xact_lock_shared($3, $4) ELSE pg_advisory_xact_lock($1, x.h) END
         FROM (SELECT TRUE AS every, 0 AS h
               UNION ALL SELECT DISTINCT FALSE, hashtext(c) FROM unnest($2::text[]) AS c
               ORDER BY every DESC, h) AS x",
    )
    .bind(CALL_LOCKS)
    .bind(calls)
    .bind(ALL_CALLS.0)
    .bind(ALL_CALLS.1)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes every call at once (the exclusive lock of [`ALL_CALLS`]): for an operator action
/// that re-chains calls it finds by updating their rows. It waits for every transaction
/// holding call locks to commit, and they wait for it.
pub(super) async fn lock_all_calls(tx: &mut Transaction<'_, Postgres>) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)").bind(ALL_CALLS.0).bind(ALL_CALLS.1).execute(&mut **tx).await?;
    Ok(())
}

/// What the database holds about the group's events.
#[derive(Default)]
struct Known {
    keys: HashMap<String, String>,
    calls: HashMap<String, i64>,
    chains: HashSet<(String, String)>,
}

/// Rows to write.
#[derive(Default)]
struct Rows {
    events: Vec<EventRow>,
    deliveries: Vec<DeliveryRow>,
}

struct EventRow {
    event_id: String,
    dedup_key: String,
    call_id: String,
    party: String,
    status: Option<String>,
    sequence: Option<i64>,
    payload: String,
    now: i64,
}

struct DeliveryRow {
    /// Index of its event in [`Rows::events`].
    event: usize,
    subscriber: String,
    call_id: String,
    sequence: i64,
    blocked: bool,
    now: i64,
}

/// Plans and writes every request in `tx`; returns one outcome per request, in order, and
/// the subscribers that got new deliveries.
pub(super) async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[Request<'_>],
    shared: &Shared,
) -> anyhow::Result<(Vec<IngestOutcome>, Vec<String>)> {
    let ordered = shared.ordered;
    let events = || requests.iter().flat_map(|r| r.items.iter().map(|i| &i.event));
    let mut calls: Vec<&str> = events().map(|e| e.call_id.as_str()).collect();
    calls.sort_unstable();
    calls.dedup();
    lock_calls(tx, &calls).await?;
    let mut keys: Vec<&str> = events().map(|e| e.dedup_key()).collect();
    if ordered {
        keys.extend(events().filter_map(|e| e.hangup_key()));
    }
    let mut known = Known { keys: pairs(tx, KNOWN_KEYS, &keys).await?.into_iter().collect(), ..Known::default() };
    if ordered {
        // A join, not `call_id = ANY($1)`: on a young table the planner may scan it, and a
        // scan with `ANY` compares every row with every key (9 ms per group at 25,000 calls).
        let rows = sqlx::query(
            "SELECT c.call_id, c.next_sequence FROM unnest($1::text[]) AS k(id) JOIN calls c ON c.call_id = k.id",
        )
        .bind(&calls)
        .fetch_all(&mut **tx)
        .await?;
        known.calls = super::two_columns(&rows)?;
        known.chains = pairs(tx, PENDING_CHAINS, &calls).await?.into_iter().collect();
    }
    let mut rows = Rows::default();
    let mut planner = Planner { known: &mut known, rows: &mut rows, ordered };
    let mut outcomes: Vec<IngestOutcome> = requests.iter().map(|r| planner.request(r)).collect();
    write(tx, &rows, &known, ordered).await?;
    if ordered && shared.supersede {
        supersede_behind(tx, shared, requests, &rows, &mut outcomes).await?;
    }
    for (request, outcome) in requests.iter().zip(&outcomes) {
        if matches!(outcome, IngestOutcome::Accepted { .. }) && !request.notes.is_empty() {
            write_notes(tx, request.notes, request.now).await?;
        }
    }
    let mut subscribers: Vec<String> = rows.deliveries.iter().map(|d| d.subscriber.clone()).collect();
    subscribers.sort_unstable();
    subscribers.dedup();
    Ok((outcomes, subscribers))
}

/// `status.supersede` at ingest: the failed, idle head of each chain a new status was stored
/// behind is superseded, and the next status of its call goes. Only chains that already had a
/// pending head (the new statuses that wait) are looked at.
async fn supersede_behind(
    tx: &mut Transaction<'_, Postgres>,
    shared: &Shared,
    requests: &[Request<'_>],
    rows: &Rows,
    outcomes: &mut [IngestOutcome],
) -> anyhow::Result<()> {
    let mut behind: Vec<(&str, &str)> =
        rows.deliveries.iter().filter(|d| d.blocked).map(|d| (d.subscriber.as_str(), d.call_id.as_str())).collect();
    behind.sort_unstable();
    behind.dedup();
    let now = requests.first().map_or(0, |r| r.now);
    for (subscriber, call_id) in super::supersede::heads(tx, shared, &behind, now).await? {
        stale::credit(requests.iter().map(|r| r.items), outcomes, &subscriber, &call_id);
    }
    Ok(())
}

/// Event ids of the dedup keys in `$1`: stored events', and those purged inside the window.
const KNOWN_KEYS: &str = "SELECT dedup_key, event_id FROM events WHERE dedup_key = ANY($1)
     UNION ALL SELECT dedup_key, event_id FROM purged_keys WHERE dedup_key = ANY($1)";

/// (subscriber, call) pairs with a pending delivery among the calls in `$1`.
const PENDING_CHAINS: &str =
    "SELECT DISTINCT subscriber, call_id FROM deliveries WHERE state = 'pending' AND call_id = ANY($1)";

async fn pairs(tx: &mut Transaction<'_, Postgres>, sql: &str, arg: &[&str]) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query(sql).bind(arg).fetch_all(&mut **tx).await?;
    super::two_columns(&rows)
}

/// This request's own additions, merged into [`Known`] only if it is accepted.
#[derive(Default)]
struct Draft {
    keys: HashMap<String, String>,
    calls: HashMap<String, i64>,
    chains: HashSet<(String, String)>,
}

struct Planner<'a> {
    known: &'a mut Known,
    rows: &'a mut Rows,
    ordered: bool,
}

impl Planner<'_> {
    /// Plans one request; one refused with 409 leaves no rows.
    fn request(&mut self, request: &Request<'_>) -> IngestOutcome {
        let mark = (self.rows.events.len(), self.rows.deliveries.len());
        let mut draft = Draft::default();
        let mut accepted = Vec::with_capacity(request.items.len());
        for (index, item) in request.items.iter().enumerate() {
            let call_id = item.event.call_id.clone();
            match self.item(item, request.now, &mut draft) {
                Some((event_id, duplicate)) => accepted.push(Accepted { call_id, event_id, duplicate }),
                None => {
                    self.rows.events.truncate(mark.0);
                    self.rows.deliveries.truncate(mark.1);
                    return IngestOutcome::AfterHangup { index, call_id };
                }
            }
        }
        self.known.keys.extend(draft.keys);
        self.known.calls.extend(draft.calls);
        self.known.chains.extend(draft.chains);
        let mut new: Vec<(String, u64)> = Vec::new();
        for d in &self.rows.deliveries[mark.1..] {
            match new.iter_mut().find(|(s, _)| *s == d.subscriber) {
                Some((_, n)) => *n += 1,
                None => new.push((d.subscriber.clone(), 1)),
            }
        }
        IngestOutcome::Accepted { items: accepted, new_deliveries: new, superseded: Vec::new() }
    }

    fn find(&self, draft: &Draft, key: &str) -> Option<String> {
        draft.keys.get(key).or_else(|| self.known.keys.get(key)).cloned()
    }

    /// Plans one event: `(event id, duplicate)`, or `None` when refused after HANGUP.
    fn item(&mut self, item: &IngestItem, now: i64, draft: &mut Draft) -> Option<(String, bool)> {
        let event = &item.event;
        let key = event.dedup_key();
        if let Some(event_id) = self.find(draft, key) {
            return Some((event_id, true));
        }
        let sequence = match self.ordered {
            true => {
                if event.hangup_key().is_some_and(|k| self.find(draft, k).is_some()) {
                    return None;
                }
                let next = draft.calls.get(&event.call_id).or_else(|| self.known.calls.get(&event.call_id));
                let seq = next.copied().unwrap_or(0);
                draft.calls.insert(event.call_id.clone(), seq + 1);
                Some(seq)
            }
            false => None,
        };
        let index = self.rows.events.len();
        for subscriber in &item.subscribers {
            let chain = (subscriber.clone(), event.call_id.clone());
            let blocked = self.ordered && (self.known.chains.contains(&chain) || draft.chains.contains(&chain));
            self.rows.deliveries.push(DeliveryRow {
                event: index,
                subscriber: subscriber.clone(),
                call_id: event.call_id.clone(),
                sequence: sequence.unwrap_or(0),
                blocked,
                now,
            });
            if self.ordered {
                draft.chains.insert(chain);
            }
        }
        self.rows.events.push(EventRow {
            event_id: item.event_id.clone(),
            dedup_key: key.to_string(),
            call_id: event.call_id.clone(),
            party: event.party.clone().unwrap_or_default(),
            status: event.status.clone(),
            sequence,
            payload: event.body_json(sequence).into_owned(),
            now,
        });
        draft.keys.insert(key.to_string(), item.event_id.clone());
        Some((item.event_id.clone(), false))
    }
}

async fn write(tx: &mut Transaction<'_, Postgres>, rows: &Rows, known: &Known, ordered: bool) -> anyhow::Result<()> {
    if !rows.events.is_empty() {
        let col = |f: fn(&EventRow) -> &str| rows.events.iter().map(f).collect::<Vec<&str>>();
        let ids = sqlx::query(
            "INSERT INTO events (event_id, dedup_key, call_id, party, status, sequence, payload, created_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                                  $7::text[], $8::bigint[])
             RETURNING id, dedup_key",
        )
        .bind(col(|e| &e.event_id))
        .bind(col(|e| &e.dedup_key))
        .bind(col(|e| &e.call_id))
        .bind(col(|e| &e.party))
        .bind(rows.events.iter().map(|e| e.status.as_deref()).collect::<Vec<_>>())
        .bind(rows.events.iter().map(|e| e.sequence).collect::<Vec<_>>())
        .bind(col(|e| &e.payload))
        .bind(rows.events.iter().map(|e| e.now).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?;
        let by_key: HashMap<String, i64> =
            ids.iter().map(|r| Ok((r.try_get(1)?, r.try_get(0)?))).collect::<sqlx::Result<_>>()?;
        let event_row = |d: &DeliveryRow| by_key.get(&rows.events[d.event].dedup_key).copied().unwrap_or_default();
        let ds = &rows.deliveries;
        sqlx::query(
            "INSERT INTO deliveries (event_row, subscriber, call_id, sequence, blocked, next_attempt_at,
                                     created_at, updated_at)
             SELECT r, s, c, q, b, n, n, n
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bool[], $6::bigint[])
                  AS v(r, s, c, q, b, n)",
        )
        .bind(ds.iter().map(event_row).collect::<Vec<_>>())
        .bind(ds.iter().map(|d| d.subscriber.as_str()).collect::<Vec<_>>())
        .bind(ds.iter().map(|d| d.call_id.as_str()).collect::<Vec<_>>())
        .bind(ds.iter().map(|d| d.sequence).collect::<Vec<_>>())
        .bind(ds.iter().map(|d| d.blocked).collect::<Vec<_>>())
        .bind(ds.iter().map(|d| d.now).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    if ordered && !known.calls.is_empty() {
        let (calls, next): (Vec<&str>, Vec<i64>) = known.calls.iter().map(|(c, n)| (c.as_str(), *n)).unzip();
        sqlx::query(
            "INSERT INTO calls (call_id, next_sequence) SELECT * FROM unnest($1::text[], $2::bigint[])
             ON CONFLICT (call_id) DO UPDATE SET next_sequence = excluded.next_sequence",
        )
        .bind(calls)
        .bind(next)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Keeps an accepted request's source notes: its rejects, the rejects it re-drove, its mark.
async fn write_notes(tx: &mut Transaction<'_, Postgres>, notes: &SourceNotes, now: i64) -> anyhow::Result<()> {
    for r in &notes.rejects {
        sqlx::query("INSERT INTO rejects (source, reason, raw, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&r.source)
            .bind(&r.reason)
            .bind(&r.raw)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    if !notes.resolved.is_empty() {
        sqlx::query("DELETE FROM rejects WHERE id = ANY($1)").bind(&notes.resolved).execute(&mut **tx).await?;
    }
    if let Some(m) = &notes.mark {
        sqlx::query(
            "INSERT INTO source_marks (source, mark, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (source) DO UPDATE SET mark = excluded.mark, updated_at = excluded.updated_at",
        )
        .bind(&m.source)
        .bind(&m.mark)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
