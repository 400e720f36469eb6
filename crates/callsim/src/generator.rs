//! The call generator: pure and seeded. The same seed, configuration and begin times give
//! byte-identical calls, so a run can be reproduced and tests can check thousands of calls.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::mix::{default_scenario_mix, default_service_mix, Mix};
use crate::model::{
    Call, CallCommon, Cdr, Direction, Disposition, Party, Payload, Privacy, ScheduledPost, Status, StatusEvent,
    SECRET_A_CALLS_B, SECRET_B_CALLS_A, SECRET_INTERCEPTED, SERVICE_PRIVACY, SUB_AXB, SUB_AXN, SUB_AXNE, SUB_AXYB,
    SUB_CLICK_TO_CALL, SUB_DUAL_CALL, SUB_NOTIFICATION, SUB_PAXYB, SUB_SIP, SUB_SMART_OUTBOUND,
};
use crate::numbers;
use crate::timeline::{intercepted, plan_callback, plan_leg, CallbackParties, LegPlan};

/// What kind of calls to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    /// Share of service types 100 and 200.
    pub service_mix: Mix<u16>,
    /// Share of outcomes.
    pub scenario_mix: Mix<Disposition>,
    /// Account ids to spread calls over; empty means no `accountId`.
    pub accounts: Vec<String>,
    /// Share (0..=1) of service-100 calls that are two-leg callbacks (sub-service 105).
    pub callback_share: f64,
    /// Prefix of every call id; the generator appends a 6-digit counter.
    pub call_id_prefix: String,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            service_mix: default_service_mix(),
            scenario_mix: default_scenario_mix(),
            accounts: Vec::new(),
            callback_share: 0.1,
            call_id_prefix: "sim-".to_string(),
        }
    }
}

impl GenConfig {
    /// Checks what the SPEC would otherwise reject: call-id prefix (printable ASCII, short
    /// enough for 128 characters), account ids (1-64 characters), callback share.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.call_id_prefix;
        if p.len() > 100 || !p.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(format!("call id prefix `{p}` must be at most 100 printable ASCII characters"));
        }
        if let Some(bad) = self.accounts.iter().find(|a| a.is_empty() || a.chars().count() > 64) {
            return Err(format!("account id `{bad}` must be 1-64 characters"));
        }
        if !(0.0..=1.0).contains(&self.callback_share) {
            return Err("callback share must be between 0 and 1".to_string());
        }
        Ok(())
    }
}

/// Generates calls one after the other from a seeded random stream.
#[derive(Clone, Debug)]
pub struct CallGenerator {
    config: GenConfig,
    rng: ChaCha8Rng,
    generated: u64,
}

impl CallGenerator {
    /// A generator for `config`, reproducible from `seed`.
    pub fn new(config: GenConfig, seed: u64) -> Self {
        Self { config, rng: ChaCha8Rng::seed_from_u64(seed), generated: 0 }
    }

    /// How many calls were generated so far.
    pub fn generated(&self) -> u64 {
        self.generated
    }

    /// The next call, placed at simulated epoch ms `begin_time`.
    pub fn next_call(&mut self, begin_time: i64) -> Call {
        self.generated += 1;
        let call_id = format!("{}{:06}", self.config.call_id_prefix, self.generated);
        let service_type = self.config.service_mix.pick(&mut self.rng);
        let scenario = self.config.scenario_mix.pick(&mut self.rng);
        let common = CallCommon {
            call_id: call_id.clone(),
            service_type,
            account_id: self.account(),
            user_data: user_data(&mut self.rng),
        };
        let shape = self.shape(service_type, scenario, begin_time);
        let legs: Vec<(Vec<StatusEvent>, Cdr)> =
            shape.legs.iter().map(|leg| self.leg_records(&common, &shape, leg)).collect();
        Call {
            call_id,
            service_type,
            sub_service_type: shape.sub_service_type,
            scenario: shape.scenario,
            begin_time,
            posts: assemble(legs),
        }
    }

    /// Picks an account id, if any are configured.
    fn account(&mut self) -> Option<String> {
        let accounts = &self.config.accounts;
        (!accounts.is_empty()).then(|| accounts[self.rng.random_range(0..accounts.len())].clone())
    }

    /// Decides sub-service, numbers, binding and leg timelines of a call.
    fn shape(&mut self, service_type: u16, scenario: Disposition, begin: i64) -> Shape {
        if service_type == SERVICE_PRIVACY {
            return self.privacy_shape(scenario, begin);
        }
        let rng = &mut self.rng;
        if rng.random_bool(self.config.callback_share) {
            let parties = CallbackParties {
                platform: numbers::platform(rng),
                a: numbers::mobile(rng),
                b: numbers::subscriber(rng),
            };
            let legs = plan_callback(rng, scenario, begin, parties);
            return Shape::new(SUB_DUAL_CALL, scenario, Some(Direction::Outbound), None, legs);
        }
        let (sub, direction, caller) = match rng.random_range(0..20) {
            // The platform places notification, click-to-call and robot calls.
            0..=2 => (SUB_NOTIFICATION, Direction::Outbound, numbers::platform(rng)),
            3..=5 => (SUB_CLICK_TO_CALL, Direction::Outbound, numbers::platform(rng)),
            6..=7 => (SUB_SMART_OUTBOUND, Direction::Outbound, numbers::platform(rng)),
            8..=13 => (SUB_SIP, Direction::Outbound, numbers::subscriber(rng)),
            _ => (SUB_SIP, Direction::Inbound, numbers::subscriber(rng)),
        };
        let leg = plan_leg(rng, scenario, begin).into_leg(None, caller, numbers::subscriber(rng));
        Shape::new(sub, scenario, Some(direction), None, vec![leg])
    }

    /// A privacy-number call: its binding, sub-service and leg; an intercepted call
    /// (secretCallType 12) never rings and fails whatever the scenario drawn.
    fn privacy_shape(&mut self, scenario: Disposition, begin: i64) -> Shape {
        let rng = &mut self.rng;
        let sub = [SUB_AXB, SUB_AXB, SUB_AXB, SUB_AXN, SUB_AXNE, SUB_AXYB, SUB_PAXYB][rng.random_range(0..7)];
        let privacy = binding(rng, sub);
        let caller = match privacy.secret_call_type {
            SECRET_B_CALLS_A => privacy.phone_no_b.clone(),
            _ => privacy.phone_no_a.clone(),
        };
        let callee = privacy.phone_no_x.clone();
        if privacy.secret_call_type == SECRET_INTERCEPTED {
            let leg = intercepted(rng, begin).into_leg(None, caller, callee);
            return Shape::new(sub, Disposition::Failed, None, Some(privacy), vec![leg]);
        }
        let leg = plan_leg(rng, scenario, begin).into_leg(None, caller, callee);
        Shape::new(sub, scenario, None, Some(privacy), vec![leg])
    }

    /// The status events and the CDR of one leg.
    fn leg_records(&mut self, common: &CallCommon, shape: &Shape, leg: &LegPlan) -> (Vec<StatusEvent>, Cdr) {
        let steps = [
            (Status::Dialing, Some(leg.dial)),
            (Status::Ringing, leg.ring),
            (Status::Answered, leg.answer),
            (Status::Hangup, Some(leg.hangup)),
        ];
        let statuses = steps
            .into_iter()
            .filter_map(|(status, at)| at.map(|t| (status, t)))
            .map(|(status, timestamp)| StatusEvent {
                common: common.clone(),
                status,
                timestamp,
                party: leg.party,
                caller_number: leg.caller.clone(),
                callee_number: leg.callee.clone(),
                release: (status == Status::Hangup).then_some(leg.release),
                privacy: shape.privacy.clone(),
            })
            .collect();
        (statuses, self.cdr(common, shape, leg))
    }

    /// The CDR of one leg; times and duration follow SPEC §2.1 exactly.
    fn cdr(&mut self, common: &CallCommon, shape: &Shape, leg: &LegPlan) -> Cdr {
        let start_time = leg.answer.unwrap_or(leg.hangup);
        let record_url = (leg.answer.is_some() && self.rng.random_bool(0.8)).then(|| {
            let suffix = match leg.party {
                Some(Party::Caller) => "-a",
                Some(Party::Callee) => "-b",
                None => "",
            };
            format!("https://records.example.com/{}{suffix}.wav", common.call_id)
        });
        let extra = self.rng.random_bool(0.2).then(|| {
            serde_json::json!({
                "switch": format!("sw-{:02}", self.rng.random_range(1..=8)),
                "trunk": format!("T{:03}", self.rng.random_range(1..=120)),
            })
        });
        Cdr {
            common: common.clone(),
            caller_number: leg.caller.clone(),
            callee_number: leg.callee.clone(),
            start_time,
            end_time: leg.hangup,
            duration: (leg.hangup - start_time) / 1000,
            party: leg.party,
            sub_service_type: shape.sub_service_type,
            direction: shape.direction,
            begin_call_time: leg.dial,
            ring_time: leg.ring,
            release: leg.release,
            record_url,
            extra,
            privacy: shape.privacy.clone(),
        }
    }
}

/// The planned structure of one call before records are made.
struct Shape {
    sub_service_type: u16,
    /// The outcome of the call as a whole (the drawn one, unless the call was intercepted).
    scenario: Disposition,
    direction: Option<Direction>,
    privacy: Option<Privacy>,
    legs: Vec<LegPlan>,
}

impl Shape {
    fn new(
        sub: u16,
        scenario: Disposition,
        direction: Option<Direction>,
        privacy: Option<Privacy>,
        legs: Vec<LegPlan>,
    ) -> Self {
        Self { sub_service_type: sub, scenario, direction, privacy, legs }
    }
}

/// A privacy binding of sub-service `sub`, and which way this call goes through it: A calls
/// B most often, B calls A, and now and then the platform intercepts the call.
fn binding<R: Rng + ?Sized>(rng: &mut R, sub: u16) -> Privacy {
    let phone_no_x = numbers::mobile(rng);
    let phone_no_a = numbers::mobile(rng);
    let secret_call_type = match rng.random_range(0..100) {
        0..=59 => SECRET_A_CALLS_B,
        60..=94 => SECRET_B_CALLS_A,
        _ => SECRET_INTERCEPTED,
    };
    let call_display_type = rng.random_range(1..=4);
    // Display type 2 passes the caller's real number through; the others show X.
    let called_display_number = if call_display_type == 2 { phone_no_a.clone() } else { phone_no_x.clone() };
    Privacy {
        phone_no_x,
        phone_no_a,
        phone_no_b: numbers::subscriber(rng),
        phone_no_e: (sub == SUB_AXNE).then(|| numbers::extension(rng)),
        subscription_id: numbers::subscription_id(rng),
        number_pool_no: numbers::number_pool(rng),
        secret_call_type,
        call_display_type,
        called_display_number,
    }
}

/// Customer data on about a third of the calls, sometimes with non-ASCII text.
fn user_data<R: Rng + ?Sized>(rng: &mut R) -> Option<String> {
    let n: u32 = rng.random_range(100_000..1_000_000);
    match rng.random_range(0..10) {
        0 | 1 => Some(format!("order={n}")),
        2 => Some(format!("{{\"ticket\":\"T{n}\",\"campaign\":\"spring\"}}")),
        3 => Some(format!("回访客户-{n}")),
        _ => None,
    }
}

/// Merges the legs' statuses by time (stable: the CALLER leg first on ties) and puts each
/// leg's CDR right after its HANGUP.
fn assemble(legs: Vec<(Vec<StatusEvent>, Cdr)>) -> Vec<ScheduledPost> {
    let mut statuses: Vec<StatusEvent> = legs.iter().flat_map(|(s, _)| s.clone()).collect();
    statuses.sort_by_key(|s| s.timestamp);
    let mut posts = Vec::with_capacity(statuses.len() + legs.len());
    for status in statuses {
        let hangup = (status.status == Status::Hangup).then_some((status.timestamp, status.party));
        posts.push(ScheduledPost { at: status.timestamp, payload: Payload::Status(status) });
        if let Some((at, party)) = hangup {
            let cdr = legs.iter().find(|(_, c)| c.party == party).map(|(_, c)| c.clone()).expect("every leg has a CDR");
            posts.push(ScheduledPost { at, payload: Payload::Cdr(cdr) });
        }
    }
    posts
}
