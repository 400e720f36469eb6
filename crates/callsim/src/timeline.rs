//! Timelines of call legs: when each leg dials, rings, answers and hangs up, and how it is
//! released, for every outcome and for two-leg callback calls.
//!
//! All times are simulated epoch milliseconds. Within a leg the times are strictly
//! increasing, so its statuses are always DIALING < RINGING < ANSWERED < HANGUP.

use rand::Rng;

use crate::model::{Disposition, Party, Release, ReleaseDirection};

/// Longest talk time generated: one hour.
pub const MAX_TALK_MS: i64 = 60 * 60 * 1000;
/// Shortest ring of a ringing leg.
pub const MIN_RING_MS: i64 = 2_000;
/// Longest ring of a ringing leg.
pub const MAX_RING_MS: i64 = 30_000;

/// The planned life of one leg, before it is turned into records.
#[derive(Clone, Debug, PartialEq)]
pub struct LegPlan {
    /// Leg of a two-leg call; `None` for ordinary calls.
    pub party: Option<Party>,
    /// Calling number of the leg.
    pub caller: String,
    /// Called number of the leg.
    pub callee: String,
    /// When the leg was placed (DIALING).
    pub dial: i64,
    /// When the callee started ringing (RINGING), if it did.
    pub ring: Option<i64>,
    /// When the callee answered (ANSWERED), if it did.
    pub answer: Option<i64>,
    /// When the leg was released (HANGUP).
    pub hangup: i64,
    /// How it ended.
    pub release: Release,
}

/// The times and release of one leg, without numbers or party.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Times {
    /// DIALING time.
    pub dial: i64,
    /// RINGING time, if reached.
    pub ring: Option<i64>,
    /// ANSWERED time, if reached.
    pub answer: Option<i64>,
    /// HANGUP time.
    pub hangup: i64,
    /// How the leg ended.
    pub release: Release,
}

impl Times {
    /// Attaches numbers and party to make a leg plan.
    pub fn into_leg(self, party: Option<Party>, caller: String, callee: String) -> LegPlan {
        LegPlan {
            party,
            caller,
            callee,
            dial: self.dial,
            ring: self.ring,
            answer: self.answer,
            hangup: self.hangup,
            release: self.release,
        }
    }
}

/// Builds a release record.
fn release(disposition: Disposition, dir: ReleaseDirection, cause: u8, sip: u16) -> Release {
    Release { disposition, release_direction: dir, hangup_cause: cause, sip_code: sip }
}

/// Post-dial delay: from DIALING to RINGING.
fn post_dial_delay<R: Rng + ?Sized>(rng: &mut R) -> i64 {
    rng.random_range(300..=3_000)
}

/// A ring of 2-30 s, skewed towards short rings (most people answer quickly).
pub fn ring_ms<R: Rng + ?Sized>(rng: &mut R) -> i64 {
    let u: f64 = rng.random();
    MIN_RING_MS + ((MAX_RING_MS - MIN_RING_MS) as f64 * u * u) as i64
}

/// Talk time: log-normal with a median of 45 s (seconds to many minutes), capped at an hour.
pub fn talk_ms<R: Rng + ?Sized>(rng: &mut R) -> i64 {
    // Box-Muller: one standard normal from two uniforms.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    let seconds = (45f64.ln() + 1.2 * z).exp();
    ((seconds * 1000.0) as i64).clamp(1_000, MAX_TALK_MS)
}

/// Plans a single leg that ends with `outcome`, dialled at `dial`.
pub fn plan_leg<R: Rng + ?Sized>(rng: &mut R, outcome: Disposition, dial: i64) -> Times {
    let ring_at = dial + post_dial_delay(rng);
    let (ring, answer, hangup, rel) = match outcome {
        Disposition::Answered => {
            let (answer, hangup, rel) = answered(rng, ring_at);
            (Some(ring_at), Some(answer), hangup, rel)
        }
        Disposition::NoAnswer => {
            let hangup = ring_at + rng.random_range(15_000..=MAX_RING_MS);
            (Some(ring_at), None, hangup, no_answer_release(rng))
        }
        Disposition::Busy if rng.random_bool(0.3) => {
            // Rang, then the callee declined it: call rejected (Q.850 21, SIP 603 Decline).
            let hangup = ring_at + rng.random_range(MIN_RING_MS..=15_000);
            (Some(ring_at), None, hangup, release(outcome, ReleaseDirection::Callee, 21, 603))
        }
        Disposition::Busy => {
            let rel = release(outcome, ReleaseDirection::Callee, 17, 486);
            (None, None, dial + rng.random_range(300..=2_500), rel)
        }
        Disposition::Failed => {
            let (cause, sip) = failure_cause(rng);
            let rel = release(outcome, ReleaseDirection::Platform, cause, sip);
            // A number that does not exist (or has no route) is refused before anything rings.
            if ![1, 3].contains(&cause) && rng.random_bool(0.1) {
                let hangup = ring_at + rng.random_range(MIN_RING_MS..=10_000);
                (Some(ring_at), None, hangup, rel)
            } else {
                (None, None, dial + rng.random_range(100..=8_000), rel)
            }
        }
        Disposition::Cancelled => {
            let hangup = ring_at + ring_ms(rng);
            let rel = release(outcome, ReleaseDirection::Caller, 16, 487);
            (Some(ring_at), None, hangup, rel)
        }
    };
    Times { dial, ring, answer, hangup, release: rel }
}

/// Answer time, hangup time and release of an answered leg that started ringing at `ring_at`.
fn answered<R: Rng + ?Sized>(rng: &mut R, ring_at: i64) -> (i64, i64, Release) {
    let answer = ring_at + ring_ms(rng);
    let dir = if rng.random_bool(0.55) { ReleaseDirection::Caller } else { ReleaseDirection::Callee };
    let rel = release(Disposition::Answered, dir, 16, 200);
    (answer, answer + talk_ms(rng), rel)
}

/// 480 from the callee's device (Q.850 19, no answer), or the platform's no-answer timer:
/// 408 with Q.850 18, no user responding (RFC 3398 section 7).
fn no_answer_release<R: Rng + ?Sized>(rng: &mut R) -> Release {
    if rng.random_bool(0.6) {
        release(Disposition::NoAnswer, ReleaseDirection::Callee, 19, 480)
    } else {
        release(Disposition::NoAnswer, ReleaseDirection::Platform, 18, 408)
    }
}

/// A call the platform intercepted (privacy number, secretCallType 12): refused before it
/// rings, as a call rejected by the network (Q.850 21, SIP 403 Forbidden; the callee's own
/// refusal is 21 / 603 Decline).
pub fn intercepted<R: Rng + ?Sized>(rng: &mut R, dial: i64) -> Times {
    let hangup = dial + rng.random_range(100..=1_000);
    let rel = release(Disposition::Failed, ReleaseDirection::Platform, 21, 403);
    Times { dial, ring: None, answer: None, hangup, release: rel }
}

/// A (Q.850 cause, SIP code) pair of a failed call, as RFC 3398 section 7 pairs them.
fn failure_cause<R: Rng + ?Sized>(rng: &mut R) -> (u8, u16) {
    const FAILURES: [(u8, u16); 7] = [
        (34, 503),  // no circuit/channel available
        (41, 503),  // temporary failure
        (127, 500), // interworking, unspecified
        (31, 480),  // normal, unspecified
        (1, 404),   // unallocated (unassigned) number
        (3, 404),   // no route to destination
        (27, 502),  // destination out of order
    ];
    FAILURES[rng.random_range(0..FAILURES.len())]
}

/// Numbers of a callback call: the platform's display number and the two real parties.
#[derive(Clone, Debug)]
pub struct CallbackParties {
    /// Shown to A when the platform calls it.
    pub platform: String,
    /// The user who asked for the callback; called first.
    pub a: String,
    /// The party A wants to talk to; called once A answered.
    pub b: String,
}

/// Plans a two-leg callback call (sub-service 105): the platform calls A (party CALLER),
/// and once A answers calls B (party CALLEE) and bridges them. `outcome` is the outcome
/// of the call as a whole: for anything but ANSWERED and CANCELLED, half the time A
/// itself does not take the callback (one leg only), otherwise B's leg fails and the
/// platform releases A.
pub fn plan_callback<R: Rng + ?Sized>(
    rng: &mut R,
    outcome: Disposition,
    dial: i64,
    parties: CallbackParties,
) -> Vec<LegPlan> {
    let CallbackParties { platform, a, b } = parties;
    let a_leg_fails = !matches!(outcome, Disposition::Answered | Disposition::Cancelled) && rng.random_bool(0.5);
    if a_leg_fails {
        let times = plan_leg(rng, outcome, dial);
        return vec![times.into_leg(Some(Party::Caller), platform, a)];
    }
    let a_ring = dial + post_dial_delay(rng);
    let a_answer = a_ring + rng.random_range(MIN_RING_MS..=15_000);
    let b_dial = a_answer + rng.random_range(1_000..=3_000); // prompt played to A
    let mut b_times = plan_leg(rng, outcome, b_dial);
    let gap = rng.random_range(20..=300);
    let (a_hangup, a_dir) = match outcome {
        Disposition::Answered if b_times.release.release_direction == ReleaseDirection::Caller => {
            // A hung up first; the platform then releases B.
            let t = b_times.hangup;
            b_times.hangup = t + gap;
            (t, ReleaseDirection::Caller)
        }
        Disposition::Answered => (b_times.hangup + gap, ReleaseDirection::Callee),
        Disposition::Cancelled => {
            // A gave up while B was ringing: A's hangup cancels B a moment later (B's ring
            // keeps the length drawn for it, within 2-30 s).
            (b_times.hangup - gap, ReleaseDirection::Caller)
        }
        _ => (b_times.hangup + rng.random_range(1_000..=4_000), ReleaseDirection::Platform),
    };
    let a_times = Times {
        dial,
        ring: Some(a_ring),
        answer: Some(a_answer),
        hangup: a_hangup,
        release: release(Disposition::Answered, a_dir, 16, 200),
    };
    vec![a_times.into_leg(Some(Party::Caller), platform, a.clone()), b_times.into_leg(Some(Party::Callee), a, b)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn talk_and_ring_stay_in_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let talks: Vec<i64> = (0..20_000).map(|_| talk_ms(&mut rng)).collect();
        assert!(talks.iter().all(|t| (1_000..=MAX_TALK_MS).contains(t)));
        assert!(talks.iter().any(|t| *t < 10_000), "some short calls");
        assert!(talks.iter().any(|t| *t > 10 * 60_000), "some long calls");
        for _ in 0..10_000 {
            assert!((MIN_RING_MS..=MAX_RING_MS).contains(&ring_ms(&mut rng)));
        }
    }

    #[test]
    fn callback_legs_are_ordered() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for outcome in Disposition::ALL {
            for _ in 0..200 {
                let parties =
                    CallbackParties { platform: "4008123456".into(), a: "13800000001".into(), b: "13900000002".into() };
                let legs = plan_callback(&mut rng, outcome, 1_000, parties);
                let a = &legs[0];
                assert_eq!(a.party, Some(Party::Caller));
                if let Some(b) = legs.get(1) {
                    assert!(b.dial > a.answer.unwrap(), "B is dialled after A answered");
                    assert_eq!(b.release.disposition, outcome);
                    assert_eq!(a.release.disposition, Disposition::Answered);
                } else {
                    assert_eq!(a.release.disposition, outcome);
                }
            }
        }
    }
}
