//! The receiver's bookkeeping, kept free of I/O so it can be tested directly: counters,
//! duplicate detection by webhook-id, and per-call order checks on status `sequence`.
//!
//! Duplicates and order are tracked per request path, so that two subscribers pointed at
//! one receiver on different paths (the same eventId reaches both) are not confused.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// What a push carried, judged from its path first (`/cdr`, `/status`), then its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushKind {
    /// A CDR.
    Cdr,
    /// A call status event.
    Status,
    /// Neither could be told.
    Other,
}

impl PushKind {
    /// Classifies a push by path (`cdr`/`status` in it), else by body fields.
    pub fn classify(path: &str, body: Option<&serde_json::Value>) -> Self {
        let lower = path.to_ascii_lowercase();
        if lower.contains("cdr") {
            return PushKind::Cdr;
        }
        if lower.contains("status") {
            return PushKind::Status;
        }
        match body {
            Some(b) if b.get("status").is_some() => PushKind::Status,
            Some(b) if b.get("endTime").is_some() => PushKind::Cdr,
            _ => PushKind::Other,
        }
    }

    /// Lower-case name for log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::Cdr => "cdr",
            PushKind::Status => "status",
            PushKind::Other => "other",
        }
    }
}

/// Outcome of signature verification of one push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigState {
    /// Verified against the configured secret.
    Ok,
    /// A secret is configured and the signature is missing, stale or wrong.
    Bad(String),
    /// No secret configured and no signature header.
    None,
    /// No secret configured, but the push was signed.
    Unchecked,
}

impl SigState {
    /// Short name for log lines and the JSONL file.
    pub fn as_str(&self) -> &'static str {
        match self {
            SigState::Ok => "ok",
            SigState::Bad(_) => "bad",
            SigState::None => "none",
            SigState::Unchecked => "unchecked",
        }
    }
}

/// A per-call ordering problem of status pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderIssue {
    /// A new event with a sequence at or below one already delivered.
    Backwards {
        /// Highest sequence delivered so far.
        delivered: u64,
        /// Sequence received.
        got: u64,
    },
    /// Sequence jumped past the next expected one although no failure was injected
    /// for this call (so no event could have gone dead).
    Gap {
        /// The sequence that should have come.
        expected: u64,
        /// Sequence received.
        got: u64,
    },
}

impl std::fmt::Display for OrderIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderIssue::Backwards { delivered, got } => {
                write!(f, "backwards: {got} after {delivered} was delivered")
            }
            OrderIssue::Gap { expected, got } => write!(f, "gap: expected {expected}, got {got}"),
        }
    }
}

/// One push as the tracker sees it.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// Request path.
    pub path: &'a str,
    /// CDR, status or other.
    pub kind: PushKind,
    /// `webhook-id` header.
    pub webhook_id: Option<&'a str>,
    /// `callId` of the body.
    pub call_id: Option<&'a str>,
    /// `sequence` of a status body.
    pub sequence: Option<u64>,
    /// Signature verification result.
    pub signature: &'a SigState,
    /// Whether a webhook-signature header was present.
    pub signed: bool,
    /// HTTP status the receiver answers.
    pub answer: u16,
    /// Whether that answer is an injected failure.
    pub injected: bool,
    /// Whether the body was not JSON.
    pub malformed: bool,
}

/// What the tracker concluded about one push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The webhook-id was already answered 2xx on this path.
    pub duplicate: bool,
    /// Per-call order problem, if any.
    pub order: Option<OrderIssue>,
}

/// Counters of a receiver, readable at any time and printed as the exit summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverStats {
    /// Every POST received.
    pub pushes: u64,
    /// CDR pushes.
    pub cdr: u64,
    /// Status pushes.
    pub status: u64,
    /// Pushes of unknown kind.
    pub other: u64,
    /// Answered with a 2xx.
    pub answered_2xx: u64,
    /// Answered with an injected failure status.
    pub failures_injected: u64,
    /// Redeliveries of a webhook-id already answered 2xx.
    pub duplicates: u64,
    /// Status sequences that went backwards.
    pub order_backwards: u64,
    /// Status sequences that skipped without an injected failure.
    pub order_gaps: u64,
    /// Signatures verified.
    pub signatures_ok: u64,
    /// Signatures missing, stale or wrong (with a secret configured); answered 401.
    pub bad_signatures: u64,
    /// Pushes without a webhook-signature header.
    pub unsigned: u64,
    /// Bodies that were not JSON; answered 400.
    pub malformed: u64,
}

impl ReceiverStats {
    /// Both kinds of order violation.
    pub fn order_violations(&self) -> u64 {
        self.order_backwards + self.order_gaps
    }
}

/// Delivery state of one call's status pushes on one path.
#[derive(Debug, Default)]
struct CallTrack {
    /// Highest sequence answered 2xx.
    delivered: Option<u64>,
    /// Some push of this call was answered non-2xx, so a sequence may legitimately go dead.
    failed: bool,
}

/// The receiver's memory of what it has seen and answered.
#[derive(Debug, Default)]
pub struct Tracker {
    answered: HashSet<(String, String)>,
    calls: HashMap<(String, String), CallTrack>,
    stats: ReceiverStats,
    /// Sequences may skip (a subscriber with a `statuses:` filter).
    gaps_expected: bool,
}

impl Tracker {
    /// A tracker; with `gaps_expected` a skipped sequence is not a violation.
    pub fn new(gaps_expected: bool) -> Self {
        Tracker { gaps_expected, ..Tracker::default() }
    }

    /// Current counters.
    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// Records one push and its answer; returns duplicate and order findings.
    pub fn observe(&mut self, obs: &Observation<'_>) -> Verdict {
        self.count(obs);
        let ok = (200..300).contains(&obs.answer);
        let duplicate = match obs.webhook_id {
            Some(id) => {
                let key = (obs.path.to_string(), id.to_string());
                let seen = self.answered.contains(&key);
                if ok && !seen {
                    self.answered.insert(key);
                }
                seen
            }
            None => false,
        };
        if duplicate {
            self.stats.duplicates += 1;
        }
        let order = match (obs.kind, obs.call_id, obs.sequence) {
            (PushKind::Status, Some(call), Some(seq)) if !duplicate => self.check_order(obs.path, call, seq, ok),
            _ => None,
        };
        match order {
            Some(OrderIssue::Backwards { .. }) => self.stats.order_backwards += 1,
            Some(OrderIssue::Gap { .. }) => self.stats.order_gaps += 1,
            None => {}
        }
        Verdict { duplicate, order }
    }

    /// Updates plain counters.
    fn count(&mut self, obs: &Observation<'_>) {
        let s = &mut self.stats;
        s.pushes += 1;
        match obs.kind {
            PushKind::Cdr => s.cdr += 1,
            PushKind::Status => s.status += 1,
            PushKind::Other => s.other += 1,
        }
        if (200..300).contains(&obs.answer) {
            s.answered_2xx += 1;
        }
        if obs.injected {
            s.failures_injected += 1;
        }
        if obs.malformed {
            s.malformed += 1;
        }
        match obs.signature {
            SigState::Ok => s.signatures_ok += 1,
            SigState::Bad(_) => s.bad_signatures += 1,
            SigState::None | SigState::Unchecked => {}
        }
        if !obs.signed {
            s.unsigned += 1;
        }
    }

    /// Checks a new status push of a call against what was delivered, then updates it.
    fn check_order(&mut self, path: &str, call: &str, seq: u64, ok: bool) -> Option<OrderIssue> {
        let track = self.calls.entry((path.to_string(), call.to_string())).or_default();
        let expected = track.delivered.map_or(0, |d| d + 1);
        let issue = match track.delivered {
            Some(delivered) if seq <= delivered => Some(OrderIssue::Backwards { delivered, got: seq }),
            _ if seq > expected && !track.failed && !self.gaps_expected => Some(OrderIssue::Gap { expected, got: seq }),
            _ => None,
        };
        if ok {
            track.delivered = Some(track.delivered.map_or(seq, |d| d.max(seq)));
        } else {
            track.failed = true;
        }
        issue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &'static str, seq: u64, answer: u16) -> Observation<'static> {
        static NONE: SigState = SigState::None;
        Observation {
            path: "/status",
            kind: PushKind::Status,
            webhook_id: Some(id),
            call_id: Some("c1"),
            sequence: Some(seq),
            signature: &NONE,
            signed: false,
            answer,
            injected: answer >= 500,
            malformed: false,
        }
    }

    #[test]
    fn a_filtered_subscriber_may_skip_sequences_but_never_go_back() {
        let mut strict = Tracker::default();
        strict.observe(&status("a", 2, 200));
        strict.observe(&status("b", 3, 200));
        assert_eq!(strict.stats().order_gaps, 1, "0 and 1 never came: a gap for an unfiltered subscriber");
        let mut filtered = Tracker::new(true);
        filtered.observe(&status("a", 2, 200));
        filtered.observe(&status("b", 3, 200));
        assert_eq!(filtered.stats().order_violations(), 0, "ANSWERED then HANGUP only");
        filtered.observe(&status("c", 1, 200));
        assert_eq!(filtered.stats().order_backwards, 1, "going back is still a violation");
    }

    #[test]
    fn in_order_retries_and_duplicates() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(&status("e0", 0, 200)), Verdict::default());
        assert_eq!(t.observe(&status("e1", 1, 500)), Verdict::default());
        assert_eq!(t.observe(&status("e1", 1, 200)), Verdict::default(), "retry");
        let dup = t.observe(&status("e1", 1, 200));
        assert!(dup.duplicate && dup.order.is_none());
        let s = t.stats();
        assert_eq!((s.pushes, s.answered_2xx, s.duplicates), (4, 3, 1));
        assert_eq!((s.failures_injected, s.order_violations()), (1, 0));
    }

    #[test]
    fn backwards_and_gaps() {
        let mut t = Tracker::default();
        t.observe(&status("e0", 0, 200));
        let gap = t.observe(&status("e2", 2, 200)).order;
        assert_eq!(gap, Some(OrderIssue::Gap { expected: 1, got: 2 }));
        let back = t.observe(&status("e1", 1, 200)).order;
        assert_eq!(back, Some(OrderIssue::Backwards { delivered: 2, got: 1 }));
        assert_eq!((t.stats().order_gaps, t.stats().order_backwards), (1, 1));
    }

    #[test]
    fn gap_after_injected_failure_is_excused() {
        let mut t = Tracker::default();
        t.observe(&status("e0", 0, 200));
        t.observe(&status("e1", 1, 503));
        assert_eq!(t.observe(&status("e2", 2, 200)).order, None, "e1 may be dead");
        assert_eq!(t.stats().order_violations(), 0);
    }

    #[test]
    fn kinds() {
        let body = serde_json::json!({"status": "DIALING"});
        assert_eq!(PushKind::classify("/cdr", None), PushKind::Cdr);
        assert_eq!(PushKind::classify("/x/status", None), PushKind::Status);
        assert_eq!(PushKind::classify("/hook", Some(&body)), PushKind::Status);
        let cdr = serde_json::json!({"endTime": 1});
        assert_eq!(PushKind::classify("/hook", Some(&cdr)), PushKind::Cdr);
        assert_eq!(PushKind::classify("/hook", None), PushKind::Other);
    }
}
