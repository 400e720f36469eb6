//! Wire records that callsim sends to the pushers (SPEC §2): CDRs and call status events.
//!
//! These are callsim's own types, written from the SPEC rather than shared with
//! `push-core`, so that the simulator is an independent check of the pushers' validation.
//! Optional fields are skipped when absent; every name is the SPEC's camelCase name.

use serde::Serialize;

/// Service type 100: voice SIP service (fixed/mobile lines, click-to-call, callback).
pub const SERVICE_SIP: u16 = 100;
/// Service type 200: privacy number service (AXB bindings).
pub const SERVICE_PRIVACY: u16 = 200;
/// Sub-service 101: plain SIP call.
pub const SUB_SIP: u16 = 101;
/// Sub-service 102: notification call (the platform calls a subscriber and plays a message).
pub const SUB_NOTIFICATION: u16 = 102;
/// Sub-service 103: click-to-call (a web button makes the platform place the call).
pub const SUB_CLICK_TO_CALL: u16 = 103;
/// Sub-service 104: smart outbound (a robot calls a list of subscribers).
pub const SUB_SMART_OUTBOUND: u16 = 104;
/// Sub-service 105: dual-call (two-leg callback: the platform calls A, then B, and bridges).
pub const SUB_DUAL_CALL: u16 = 105;
/// Sub-service 201: AXB privacy binding.
pub const SUB_AXB: u16 = 201;
/// Sub-service 202: AXN (X bound to A only; anyone may call A through X).
pub const SUB_AXN: u16 = 202;
/// Sub-service 203: AXNE (AXN with an extension E to reach A).
pub const SUB_AXNE: u16 = 203;
/// Sub-service 204: AXYB (A and B each see their own intermediate number).
pub const SUB_AXYB: u16 = 204;
/// Sub-service 205: PAXYB (AXYB placed by the platform).
pub const SUB_PAXYB: u16 = 205;
/// secretCallType 10: B calls A through X.
pub const SECRET_B_CALLS_A: u8 = 10;
/// secretCallType 11: A calls B through X.
pub const SECRET_A_CALLS_B: u8 = 11;
/// secretCallType 12: the platform intercepted the call (it never reaches the callee).
pub const SECRET_INTERCEPTED: u8 = 12;

/// The state a call entered, as carried by a status event.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The call was placed.
    Dialing,
    /// The callee is ringing.
    Ringing,
    /// The callee answered.
    Answered,
    /// The call was released.
    Hangup,
}

impl Status {
    /// The wire name (`DIALING`, ...), for log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Dialing => "DIALING",
            Status::Ringing => "RINGING",
            Status::Answered => "ANSWERED",
            Status::Hangup => "HANGUP",
        }
    }
}

/// Final outcome of a call leg (SPEC `disposition`); also the scenario the generator picks.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Disposition {
    /// Connected and talked.
    Answered,
    /// Rang until a timer or the callee's device gave up.
    NoAnswer,
    /// The callee was busy or rejected the call.
    Busy,
    /// The network could not complete the call.
    Failed,
    /// The caller hung up before the callee answered.
    Cancelled,
}

impl Disposition {
    /// All outcomes, in a fixed order (used for mixes and per-outcome counters).
    pub const ALL: [Disposition; 5] =
        [Disposition::Answered, Disposition::NoAnswer, Disposition::Busy, Disposition::Failed, Disposition::Cancelled];

    /// The lower-case name used on the command line (`answered`, `no_answer`, ...).
    pub fn cli_name(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::NoAnswer => "no_answer",
            Disposition::Busy => "busy",
            Disposition::Failed => "failed",
            Disposition::Cancelled => "cancelled",
        }
    }

    /// Parses a command-line name, case-insensitively.
    pub fn from_cli_name(name: &str) -> Option<Self> {
        let lower = name.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|d| d.cli_name() == lower)
    }

    /// Position in [`Disposition::ALL`], for array-indexed counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which leg of a two-leg (callback) call a record belongs to.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Party {
    /// The first leg: the platform calls A.
    Caller,
    /// The second leg: the platform calls B.
    Callee,
}

impl Party {
    /// The wire name (`CALLER` or `CALLEE`), for log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Caller => "CALLER",
            Party::Callee => "CALLEE",
        }
    }
}

/// Who released the call.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReleaseDirection {
    /// The calling party hung up.
    Caller,
    /// The called party hung up (or rejected).
    Callee,
    /// The network or platform released (timers, failures, callback teardown).
    Platform,
}

/// Call direction as seen by the carrier's switch.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    /// Into the customer's number.
    Inbound,
    /// Out from the customer (or the platform, for callbacks).
    Outbound,
}

/// How a leg ended: the four fields that a CDR always has and a status event carries only
/// with HANGUP.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// Final outcome.
    pub disposition: Disposition,
    /// Who hung up.
    pub release_direction: ReleaseDirection,
    /// Q.850 cause, consistent with the disposition.
    pub hangup_cause: u8,
    /// Final SIP status, consistent with the disposition.
    pub sip_code: u16,
}

/// Privacy-number (AXB) fields; present only on service type 200 records.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Privacy {
    /// The intermediate number X that was dialled.
    pub phone_no_x: String,
    /// Real number A bound to X.
    pub phone_no_a: String,
    /// Real number B bound to X.
    pub phone_no_b: String,
    /// Extension reaching A behind X (AXNE only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_no_e: Option<String>,
    /// Binding id.
    pub subscription_id: String,
    /// The number pool X comes from.
    pub number_pool_no: String,
    /// 11 = A calls B, 10 = B calls A, 12 = intercepted by the platform.
    pub secret_call_type: u8,
    /// Number pass-through mode, 1-4: which number the called party is shown.
    pub call_display_type: u8,
    /// The number shown to the called party.
    pub called_display_number: String,
}

/// Fields that every record of one call (all legs, statuses and CDRs) shares.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallCommon {
    /// Call id; the same in the CDRs and the status events.
    pub call_id: String,
    /// 100 or 200.
    pub service_type: u16,
    /// Tenant used by the pushers for routing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Opaque customer data, echoed by the pushers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

/// A call detail record (SPEC §2.1), one per call or one per leg of a callback call.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cdr {
    /// Call-wide fields.
    #[serde(flatten)]
    pub common: CallCommon,
    /// Calling number.
    pub caller_number: String,
    /// Dialled number (the X number for 200).
    pub callee_number: String,
    /// Answer time, or `end_time` if never answered.
    pub start_time: i64,
    /// Release time.
    pub end_time: i64,
    /// Whole seconds of talk time.
    pub duration: i64,
    /// Leg of a two-leg call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub party: Option<Party>,
    /// 101-105 for 100, 201-205 for 200.
    pub sub_service_type: u16,
    /// Direction, for service type 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// When the leg was placed.
    pub begin_call_time: i64,
    /// When the callee started ringing, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_time: Option<i64>,
    /// How the leg ended.
    #[serde(flatten)]
    pub release: Release,
    /// Recording of an answered leg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_url: Option<String>,
    /// Switch-specific pass-through fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
    /// AXB binding, for 200 only.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<Privacy>,
}

/// A call status event (SPEC §2.2) as posted to status-pusher (no `sequence`: the
/// pusher assigns it).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    /// Call-wide fields.
    #[serde(flatten)]
    pub common: CallCommon,
    /// The state entered.
    pub status: Status,
    /// When it happened on the switch.
    pub timestamp: i64,
    /// Leg of a two-leg call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub party: Option<Party>,
    /// Calling number of this leg.
    pub caller_number: String,
    /// Dialled number of this leg.
    pub callee_number: String,
    /// How the leg ended; only with HANGUP.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    /// AXB binding, for 200 only.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<Privacy>,
}

/// One record to post, either to status-pusher or to cdr-pusher.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Goes to `POST /v1/status-events`.
    Status(StatusEvent),
    /// Goes to `POST /v1/cdrs`.
    Cdr(Cdr),
}

impl Payload {
    /// The JSON body exactly as it is posted.
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Payload::Status(s) => serde_json::to_value(s),
            Payload::Cdr(c) => serde_json::to_value(c),
        };
        value.expect("records serialize to JSON")
    }

    /// The call id of the record.
    pub fn call_id(&self) -> &str {
        match self {
            Payload::Status(s) => &s.common.call_id,
            Payload::Cdr(c) => &c.common.call_id,
        }
    }

    /// The leg of the record, if the call has two.
    pub fn party(&self) -> Option<Party> {
        match self {
            Payload::Status(s) => s.party,
            Payload::Cdr(c) => c.party,
        }
    }
}

/// A record with the simulated time (epoch ms) at which it is due to be posted.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledPost {
    /// Simulated epoch ms; a status event is due at its timestamp, a CDR at its endTime.
    pub at: i64,
    /// The record.
    pub payload: Payload,
}

/// One generated call: its identity, outcome and every record it produces, in due order.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Call id shared by every record.
    pub call_id: String,
    /// 100 or 200.
    pub service_type: u16,
    /// 101-105 or 201-205.
    pub sub_service_type: u16,
    /// The scenario drawn from the mix (for callbacks: the outcome of the last leg).
    pub scenario: Disposition,
    /// Simulated epoch ms when the call was placed.
    pub begin_time: i64,
    /// Status events and CDRs, sorted by `at`; each leg's CDR follows its HANGUP.
    pub posts: Vec<ScheduledPost>,
}
