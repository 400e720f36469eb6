//! The per-call chains' bookkeeping both backends share (status-pusher): which chains a
//! round finished, which of their next heads are claimed at once, and what is left to claim.
//! The statements are each backend's `release_chains`.

use super::{Claimed, Completion};

/// `(subscriber, call)` of each finished (delivered or dead) completion, once each, sorted.
pub(super) fn finished(done: &[Completion]) -> Vec<(&str, &str)> {
    let mut finished: Vec<(&str, &str)> =
        done.iter().filter(|c| c.next.finishes()).map(|c| (c.subscriber.as_str(), c.call_id.as_str())).collect();
    finished.sort_unstable();
    finished.dedup();
    finished
}

/// Each finished chain with whether its next head is claimed in the same write: each
/// subscriber's claims go to its first chains, as far as the loop asked for (`wants`).
pub(super) fn plan<'a>(finished: &[(&'a str, &'a str)], wants: &[(String, usize)]) -> Vec<(&'a str, &'a str, bool)> {
    let mut room: Vec<usize> = wants.iter().map(|(_, n)| *n).collect();
    finished
        .iter()
        .map(|&(subscriber, call_id)| {
            let claim = match wants.iter().position(|(s, _)| s == subscriber) {
                Some(i) if room[i] > 0 => {
                    room[i] -= 1;
                    true
                }
                _ => false,
            };
            (subscriber, call_id, claim)
        })
        .collect()
}

/// Lowers `wants` by the heads claimed: the claim that follows asks for the rest (a claim set
/// aside for a call with nothing left to send included).
pub(super) fn took(wants: &mut [(String, usize)], claimed: &[Claimed]) {
    for c in claimed {
        if let Some((_, n)) = wants.iter_mut().find(|(s, _)| *s == c.subscriber) {
            *n -= 1;
        }
    }
}
