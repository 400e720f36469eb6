//! Bulk ingest: every ingest request of one group is planned in memory against a few bulk
//! lookups, then written with one statement per table. The statement count of a group does
//! not grow with the number of events, which is what lets durable ingest run at tens of
//! thousands of events per second.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
};

use rusqlite::Connection;

use super::{bulk, supersede, Accepted, Claimed, IngestItem, IngestOutcome, SourceNotes};
use crate::slots::Slots;

/// Next row ids. The writer is the only writer, so it hands out ids itself and never needs
/// `RETURNING` per row.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RowIds {
    pub event: i64,
    pub delivery: i64,
}

impl RowIds {
    /// Reads the highest ids in use.
    pub fn load(conn: &Connection) -> anyhow::Result<Self> {
        let max = |table: &str| conn.query_row(&format!("SELECT COALESCE(MAX(id), 0) FROM {table}"), [], |r| r.get(0));
        Ok(RowIds { event: max("events")?, delivery: max("deliveries")? })
    }
}

/// One ingest request of the group.
pub(super) struct Request<'a> {
    pub items: &'a [IngestItem],
    /// A source's rejects, re-driven rejects and position, kept if the request is accepted.
    pub notes: &'a SourceNotes,
    pub now: i64,
}

/// What the database already holds about the group's events.
#[derive(Default)]
struct Known {
    /// dedup_key → event_id, including the ones planned earlier in this group.
    keys: HashMap<String, String>,
    /// call_id → next sequence.
    calls: HashMap<String, i64>,
    /// (subscriber, call_id) with a pending delivery.
    chains: HashSet<(String, String)>,
}

/// One `events` row; the strings are borrowed from the requests.
struct EventRow<'r> {
    id: i64,
    event_id: &'r str,
    dedup_key: &'r str,
    call_id: &'r str,
    party: &'r str,
    status: Option<&'r str>,
    sequence: Option<i64>,
    payload: Cow<'r, str>,
    now: i64,
}

/// One `deliveries` row.
struct DeliveryRow<'r> {
    id: i64,
    event_row: i64,
    subscriber: &'r str,
    call_id: &'r str,
    sequence: i64,
    blocked: bool,
    now: i64,
    claimed: bool,
}

/// Rows to write, and the deliveries handed straight to the delivery loop.
#[derive(Default)]
struct Rows<'r> {
    events: Vec<EventRow<'r>>,
    deliveries: Vec<DeliveryRow<'r>>,
    handed: Vec<Claimed>,
}

/// Where new deliveries may go at once: free slots of the delivery loop.
pub(super) struct Plan<'a> {
    pub ids: &'a mut RowIds,
    pub ordered: bool,
    /// Stale statuses are superseded (`status.supersede`; only with `ordered`).
    pub supersede: bool,
    pub slots: &'a Slots,
}

/// Plans and writes every request; returns one outcome per request, in order, and the
/// deliveries stored as already claimed, to hand to the delivery loop after the commit (the
/// caller gives their slots back if the commit fails).
pub(super) fn apply<'r>(
    tx: &Connection,
    requests: &[Request<'r>],
    plan_with: Plan<'_>,
) -> anyhow::Result<(Vec<IngestOutcome>, Vec<Claimed>)> {
    let Plan { ids, ordered, supersede, slots } = plan_with;
    let mut known = lookup(tx, requests, ordered)?;
    let mut rows = Rows::default();
    let mut planner = Planner { known: &mut known, rows: &mut rows, ids, ordered, slots };
    let mut outcomes: Vec<IngestOutcome> = requests.iter().map(|r| planner.request(r)).collect();
    let written = write(tx, &rows, &known, ordered).and_then(|()| {
        if supersede {
            let behind = rows.deliveries.iter().filter(|d| d.blocked).map(|d| (d.subscriber, d.call_id));
            supersede::at_ingest(tx, requests, behind.collect(), &mut outcomes, slots)?;
        }
        let kept = requests.iter().zip(&outcomes).filter(|(_, o)| matches!(o, IngestOutcome::Accepted { .. }));
        kept.filter(|(r, _)| !r.notes.is_empty()).try_for_each(|(r, _)| write_notes(tx, r.notes, r.now))
    });
    if let Err(e) = written {
        give_back(slots, &rows.handed);
        return Err(e);
    }
    Ok((outcomes, rows.handed))
}

/// Returns the slots of deliveries that will not be handed over after all.
pub(super) fn give_back(slots: &Slots, handed: &[Claimed]) {
    handed.iter().for_each(|c| slots.give_back(&c.subscriber, 1));
}

/// (subscriber, call) pairs with a pending delivery among the calls in `?1` (JSON), found by
/// call: without statistics SQLite would walk every pending delivery instead.
pub(super) const PENDING_CHAINS: &str = "SELECT DISTINCT subscriber, call_id FROM deliveries INDEXED BY deliveries_call
     WHERE state = 'pending' AND call_id IN (SELECT value FROM json_each(?1))";

/// Event ids of the dedup keys in `?1` (JSON): stored events', and those of events purged
/// inside the dedup window.
const KNOWN_KEYS: &str = "WITH k(key) AS (SELECT value FROM json_each(?1))
     SELECT dedup_key, event_id FROM events WHERE dedup_key IN k
     UNION ALL SELECT dedup_key, event_id FROM purged_keys WHERE dedup_key IN k";

fn lookup(tx: &Connection, requests: &[Request<'_>], ordered: bool) -> anyhow::Result<Known> {
    let events = || requests.iter().flat_map(|r| r.items.iter().map(|i| &i.event));
    let mut keys: Vec<&str> = events().map(|e| e.dedup_key()).collect();
    if ordered {
        keys.extend(events().filter_map(|e| e.hangup_key()));
    }
    let keys = serde_json::to_string(&keys)?;
    let keys = bulk::pairs(tx, KNOWN_KEYS, &keys)?;
    if !ordered {
        return Ok(Known { keys, ..Known::default() });
    }
    let calls: HashSet<&str> = events().map(|e| e.call_id.as_str()).collect();
    let calls = serde_json::to_string(&calls)?;
    Ok(Known {
        keys,
        calls: bulk::pairs(
            tx,
            "SELECT call_id, next_sequence FROM calls WHERE call_id IN (SELECT value FROM json_each(?1))",
            &calls,
        )?,
        chains: bulk::pairs(tx, PENDING_CHAINS, &calls)?,
    })
}

/// This request's own additions, merged into [`Known`] only if the request is accepted.
#[derive(Default)]
struct Draft {
    keys: HashMap<String, String>,
    calls: HashMap<String, i64>,
    chains: HashSet<(String, String)>,
}

/// What planning one event came to.
enum Planned {
    New,
    Duplicate(String),
    AfterHangup,
}

/// How many of `rows` go to each subscriber.
fn per_subscriber(rows: &[DeliveryRow<'_>]) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for row in rows {
        match counts.iter_mut().find(|(s, _)| s == row.subscriber) {
            Some((_, n)) => *n += 1,
            None => counts.push((row.subscriber.to_string(), 1)),
        }
    }
    counts
}

/// Plans the requests of one group, in order, against what the database holds.
struct Planner<'a, 'r> {
    known: &'a mut Known,
    rows: &'a mut Rows<'r>,
    ids: &'a mut RowIds,
    ordered: bool,
    slots: &'a Slots,
}

impl<'r> Planner<'_, 'r> {
    /// Plans one request; a request refused with 409 leaves no trace (its keys, sequences,
    /// chains, ids, rows and slots are dropped).
    fn request(&mut self, request: &Request<'r>) -> IngestOutcome {
        let mark = (*self.ids, self.rows.events.len(), self.rows.deliveries.len(), self.rows.handed.len());
        let mut draft = Draft::default();
        let mut accepted = Vec::with_capacity(request.items.len());
        for (index, item) in request.items.iter().enumerate() {
            let call_id = item.event.call_id.clone();
            match self.item(item, request.now, &mut draft) {
                Planned::New => accepted.push(Accepted { call_id, event_id: item.event_id.clone(), duplicate: false }),
                Planned::Duplicate(event_id) => accepted.push(Accepted { call_id, event_id, duplicate: true }),
                Planned::AfterHangup => {
                    *self.ids = mark.0;
                    self.rows.events.truncate(mark.1);
                    self.rows.deliveries.truncate(mark.2);
                    give_back(self.slots, &self.rows.handed[mark.3..]);
                    self.rows.handed.truncate(mark.3);
                    return IngestOutcome::AfterHangup { index, call_id };
                }
            }
        }
        self.known.keys.extend(draft.keys);
        self.known.calls.extend(draft.calls);
        self.known.chains.extend(draft.chains);
        let new_deliveries = per_subscriber(&self.rows.deliveries[mark.2..]);
        IngestOutcome::Accepted { items: accepted, new_deliveries, superseded: Vec::new() }
    }

    fn find(&self, draft: &Draft, key: &str) -> Option<String> {
        draft.keys.get(key).or_else(|| self.known.keys.get(key)).cloned()
    }

    /// Plans one event: duplicate, refused after HANGUP, or new rows.
    fn item(&mut self, item: &'r IngestItem, now: i64, draft: &mut Draft) -> Planned {
        let event = &item.event;
        let key = event.dedup_key();
        if let Some(event_id) = self.find(draft, key) {
            return Planned::Duplicate(event_id);
        }
        let sequence = if self.ordered {
            if event.hangup_key().is_some_and(|k| self.find(draft, k).is_some()) {
                return Planned::AfterHangup;
            }
            let next = draft.calls.get(&event.call_id).or_else(|| self.known.calls.get(&event.call_id));
            let seq = next.copied().unwrap_or(0);
            draft.calls.insert(event.call_id.clone(), seq + 1);
            Some(seq)
        } else {
            None
        };
        self.ids.event += 1;
        let body = event.body_json(sequence);
        for subscriber in &item.subscribers {
            self.delivery(item, subscriber, sequence, &body, now, draft);
        }
        self.rows.events.push(EventRow {
            id: self.ids.event,
            event_id: &item.event_id,
            dedup_key: key,
            call_id: &event.call_id,
            party: event.party.as_deref().unwrap_or(""),
            status: event.status.as_deref(),
            sequence,
            payload: body,
            now,
        });
        draft.keys.insert(key.to_string(), item.event_id.clone());
        Planned::New
    }

    /// One delivery row; handed straight to the delivery loop when it may go now and the
    /// subscriber has a free slot.
    fn delivery(
        &mut self,
        item: &'r IngestItem,
        subscriber: &'r str,
        sequence: Option<i64>,
        body: &str,
        now: i64,
        draft: &mut Draft,
    ) {
        let call_id = &item.event.call_id;
        // Per-call chains exist only in status-pusher; a CDR builds no chain key.
        let chain = self.ordered.then(|| (subscriber.to_string(), call_id.clone()));
        let blocked = chain.as_ref().is_some_and(|c| self.known.chains.contains(c) || draft.chains.contains(c));
        let claimed = !blocked && self.slots.hand_over_one(subscriber);
        self.ids.delivery += 1;
        let (id, event_row) = (self.ids.delivery, self.ids.event);
        self.rows.deliveries.push(DeliveryRow {
            id,
            event_row,
            subscriber,
            call_id,
            sequence: sequence.unwrap_or(0),
            blocked,
            now,
            claimed,
        });
        if claimed {
            self.rows.handed.push(Claimed {
                id,
                event_id: item.event_id.clone(),
                subscriber: subscriber.to_string(),
                call_id: call_id.clone(),
                payload: body.to_string(),
                attempts: 0,
                round_start: 0,
            });
        }
        if let Some(chain) = chain {
            draft.chains.insert(chain);
        }
    }
}

fn write(tx: &Connection, rows: &Rows<'_>, known: &Known, ordered: bool) -> anyhow::Result<()> {
    bulk::execute(
        tx,
        "INSERT INTO events (id, event_id, dedup_key, call_id, party, status, sequence, payload, created_at)
         VALUES {values}",
        9,
        &rows.events,
        |args, e| {
            args.add(e.id)?;
            args.add(e.event_id)?;
            args.add(e.dedup_key)?;
            args.add(e.call_id)?;
            args.add(e.party)?;
            args.add(e.status)?;
            args.add(e.sequence)?;
            args.add(e.payload.as_ref())?;
            args.add(e.now)
        },
    )?;
    bulk::execute(
        tx,
        "INSERT INTO deliveries (id, event_row, subscriber, call_id, sequence, blocked, next_attempt_at,
                                 created_at, updated_at, claimed)
         VALUES {values}",
        10,
        &rows.deliveries,
        |args, d| {
            args.add(d.id)?;
            args.add(d.event_row)?;
            args.add(d.subscriber)?;
            args.add(d.call_id)?;
            args.add(d.sequence)?;
            args.add(d.blocked)?;
            args.add(d.now)?;
            args.add(d.now)?;
            args.add(d.now)?;
            args.add(d.claimed)
        },
    )?;
    if ordered {
        let calls: Vec<(&String, &i64)> = known.calls.iter().collect();
        bulk::execute(
            tx,
            "INSERT INTO calls (call_id, next_sequence) VALUES {values}
             ON CONFLICT (call_id) DO UPDATE SET next_sequence = excluded.next_sequence",
            2,
            &calls,
            |args, (call, next)| {
                args.add(call.as_str())?;
                args.add(**next)
            },
        )?;
    }
    Ok(())
}

/// Keeps an accepted request's source notes: its rejects, the rejects it re-drove, its mark.
fn write_notes(tx: &Connection, notes: &SourceNotes, now: i64) -> anyhow::Result<()> {
    let mut insert =
        tx.prepare_cached("INSERT INTO rejects (source, reason, raw, created_at) VALUES (?1, ?2, ?3, ?4)")?;
    for r in &notes.rejects {
        insert.execute((&r.source, &r.reason, &r.raw, now))?;
    }
    let mut resolve = tx.prepare_cached("DELETE FROM rejects WHERE id = ?1")?;
    for id in &notes.resolved {
        resolve.execute([id])?;
    }
    if let Some(m) = &notes.mark {
        tx.prepare_cached(
            "INSERT INTO source_marks (source, mark, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (source) DO UPDATE SET mark = excluded.mark, updated_at = excluded.updated_at",
        )?
        .execute((&m.source, &m.mark, now))?;
    }
    Ok(())
}
