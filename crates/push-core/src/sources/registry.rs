//! What each configured source is doing, for `GET /v1/sources` and `/readyz`: its state, what
//! it took in, and when its last record came.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc, Mutex,
};

use serde::Serialize;

use super::feed::Parser;
use crate::clock::Clock;

/// What a source is doing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "error", rename_all = "lowercase")]
pub enum SourceState {
    /// Waits for its peer to send (an HTTP endpoint, a TCP listener).
    Listening,
    /// Connected to its peer (Redis, an event socket).
    Connected,
    /// Follows a file as it grows.
    Following,
    /// Not working: the last error; it keeps trying.
    Error(String),
}

/// One source's figures, as `GET /v1/sources` lists them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// Its name: the kind, and for a file its path.
    pub name: String,
    /// freeswitch, asterisk_csv, ucm, redis, ...
    pub kind: String,
    /// State and, in error, the last error.
    #[serde(flatten)]
    pub state: SourceState,
    /// Records stored.
    pub accepted: u64,
    /// Records that had been stored before (pushed once).
    pub duplicates: u64,
    /// Records that could not be mapped.
    pub rejected: u64,
    /// When its last record came (ms), if one did.
    pub last_record_at: Option<i64>,
    /// Where it listens, for a source that binds a socket of its own (a TCP listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One source's live figures; cheap to clone, shared by the source and the API.
#[derive(Clone)]
pub struct SourceHandle {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    kind: String,
    state: Mutex<SourceState>,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    /// 0: none yet.
    last_record_at: AtomicI64,
    clock: Arc<dyn Clock>,
    parser: Option<Parser>,
    /// `voice_push_source_records_total{source, outcome}` (accepted, duplicate, rejected),
    /// registered once: `count` runs per record for an HTTP source, so it only touches atomics.
    counters: [::metrics::Counter; 3],
    address: Mutex<Option<String>>,
}

impl SourceHandle {
    /// The source's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The source's kind.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// How it parses one raw record (to re-drive a reject), if it sets records aside.
    pub fn parser(&self) -> Option<&Parser> {
        self.inner.parser.as_ref()
    }

    /// Sets its state; a change to or from an error is logged once.
    pub fn set_state(&self, state: SourceState) {
        let mut now = self.inner.state.lock().expect("source state lock");
        if *now == state {
            return;
        }
        match &state {
            SourceState::Error(e) => tracing::warn!(source = %self.inner.name, error = %e, "source failing"),
            _ if matches!(*now, SourceState::Error(_)) => {
                tracing::info!(source = %self.inner.name, "source working again")
            }
            _ => {}
        }
        *now = state;
    }

    /// Records where it listens (the address a listener bound, port 0 resolved), for
    /// `GET /v1/sources`.
    pub fn set_address(&self, address: impl Into<String>) {
        *self.inner.address.lock().expect("source address lock") = Some(address.into());
    }

    /// Its state now.
    pub fn state(&self) -> SourceState {
        self.inner.state.lock().expect("source state lock").clone()
    }

    /// Counts records taken in: stored, duplicates, rejected.
    pub fn count(&self, accepted: u64, duplicates: u64, rejected: u64) {
        let i = &self.inner;
        i.accepted.fetch_add(accepted, Ordering::Relaxed);
        i.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        i.rejected.fetch_add(rejected, Ordering::Relaxed);
        if accepted + duplicates + rejected > 0 {
            i.last_record_at.store(i.clock.now_ms(), Ordering::Relaxed);
        }
        for (counter, n) in i.counters.iter().zip([accepted, duplicates, rejected]) {
            counter.increment(n);
        }
    }

    /// Its figures now.
    pub fn report(&self) -> SourceReport {
        let i = &self.inner;
        let last = i.last_record_at.load(Ordering::Relaxed);
        SourceReport {
            name: i.name.clone(),
            kind: i.kind.clone(),
            state: self.state(),
            accepted: i.accepted.load(Ordering::Relaxed),
            duplicates: i.duplicates.load(Ordering::Relaxed),
            rejected: i.rejected.load(Ordering::Relaxed),
            last_record_at: (last != 0).then_some(last),
            address: i.address.lock().expect("source address lock").clone(),
        }
    }
}

/// Every source of one program.
#[derive(Clone)]
pub struct Sources {
    handles: Arc<Mutex<Vec<SourceHandle>>>,
    clock: Arc<dyn Clock>,
}

impl Sources {
    /// No sources yet.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Sources { handles: Arc::default(), clock }
    }

    /// Adds a source, in `state`; its handle is shared with the API. `parser` parses one of
    /// its raw records again, to re-drive a reject.
    pub fn register(
        &self,
        name: impl Into<String>,
        kind: &str,
        state: SourceState,
        parser: Option<Parser>,
    ) -> SourceHandle {
        let name = name.into();
        let counter = |outcome: &'static str| {
            let labels = [("source", name.clone()), ("outcome", outcome.to_string())];
            ::metrics::counter!("voice_push_source_records_total", &labels)
        };
        let counters = [counter("accepted"), counter("duplicate"), counter("rejected")];
        let handle = SourceHandle {
            inner: Arc::new(Inner {
                name,
                kind: kind.to_string(),
                state: Mutex::new(state),
                accepted: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                last_record_at: AtomicI64::new(0),
                clock: self.clock.clone(),
                parser,
                counters,
                address: Mutex::new(None),
            }),
        };
        self.handles.lock().expect("sources lock").push(handle.clone());
        handle
    }

    /// The source named `name`.
    pub fn get(&self, name: &str) -> Option<SourceHandle> {
        self.handles.lock().expect("sources lock").iter().find(|h| h.name() == name).cloned()
    }

    /// Every source's figures, in the order they were configured.
    pub fn reports(&self) -> Vec<SourceReport> {
        self.handles.lock().expect("sources lock").iter().map(SourceHandle::report).collect()
    }

    /// The sources in error, with their errors (`/readyz` is 503 while there is one).
    pub fn failing(&self) -> Vec<(String, String)> {
        let handles = self.handles.lock().expect("sources lock");
        let failing = handles.iter().filter_map(|h| match h.state() {
            SourceState::Error(e) => Some((h.name().to_string(), e)),
            _ => None,
        });
        failing.collect()
    }
}
