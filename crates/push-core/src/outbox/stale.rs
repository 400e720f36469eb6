//! What both backends' `status.supersede` share (issue 14): how a superseded status counts in
//! the rest of a round, and where its count is reported. The statements are each backend's
//! (`sqlite::supersede`, `postgres::supersede`).

use std::borrow::Cow;

use super::{Completion, IngestItem, IngestOutcome, NextState};

/// `done` as the chains see it: a superseded status (its id in `superseded`) finishes like a
/// dead one, so the next status of its call is let go.
pub(super) fn as_finished<'d>(done: &'d [Completion], superseded: &[(i64, String)]) -> Cow<'d, [Completion]> {
    if superseded.is_empty() {
        return Cow::Borrowed(done);
    }
    let mut finished = done.to_vec();
    for c in finished.iter_mut().filter(|c| superseded.iter().any(|(id, _)| *id == c.id)) {
        c.next = NextState::Dead;
    }
    Cow::Owned(finished)
}

/// How many of `subscribers` there are of each.
pub(super) fn per_subscriber<'s>(subscribers: impl Iterator<Item = &'s str>) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for s in subscribers {
        match counts.iter_mut().find(|(x, _)| x == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s.to_string(), 1)),
        }
    }
    counts
}

/// Counts a chain head superseded at ingest (`subscriber`'s, of `call_id`) in the outcome of
/// the first accepted request that stored a status of its call for that subscriber, so the
/// queue-depth gauges stay right. `requests` gives each request's items, in outcome order.
pub(super) fn credit<'a>(
    requests: impl Iterator<Item = &'a [IngestItem]>,
    outcomes: &mut [IngestOutcome],
    subscriber: &str,
    call_id: &str,
) {
    let stored_it = |items: &[IngestItem]| {
        items.iter().any(|i| i.event.call_id == call_id && i.subscribers.iter().any(|s| s == subscriber))
    };
    let found = requests
        .zip(outcomes.iter_mut())
        .find(|(items, o)| matches!(o, IngestOutcome::Accepted { .. }) && stored_it(items));
    if let Some((_, IngestOutcome::Accepted { superseded, .. })) = found {
        match superseded.iter_mut().find(|(s, _)| s == subscriber) {
            Some((_, n)) => *n += 1,
            None => superseded.push((subscriber.to_string(), 1)),
        }
    }
}
