//! What the operations API reads from a store: listings, one delivery's attempt log, counts.
//! The same records whatever backend keeps them.

use serde::Serialize;

/// Filter and page of a delivery listing.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// `pending`, `delivered`, `dead` or `superseded`.
    pub state: Option<String>,
    /// Subscriber id.
    pub subscriber: Option<String>,
    /// Call id.
    pub call_id: Option<String>,
    /// Items per page.
    pub limit: u32,
    /// Continue after this delivery id (from the previous page's `next`).
    pub before_id: Option<i64>,
}

/// One delivery as the operations API lists it (SPEC §5).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// Delivery id.
    pub id: i64,
    /// The event's id (`webhook-id`).
    pub event_id: String,
    /// Subscriber id.
    pub subscriber: String,
    /// Call id.
    pub call_id: String,
    /// `pending`, `delivered`, `dead` or `superseded`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (ms), while pending.
    pub next_attempt_at: Option<i64>,
    /// Last HTTP status.
    pub last_status: Option<i64>,
    /// Last error text.
    pub last_error: Option<String>,
    /// When the delivery was created (ms).
    pub created_at: i64,
    /// When it succeeded (ms).
    pub delivered_at: Option<i64>,
}

/// One attempt in a delivery's log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: i64,
    /// When it started (ms).
    pub at: i64,
    /// HTTP status, if the subscriber answered.
    pub status: Option<i64>,
    /// Error text, if it failed.
    pub error: Option<String>,
    /// Time to the answer or failure.
    pub latency_ms: i64,
}

/// A delivery with its attempt log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDetail {
    /// The listed fields.
    #[serde(flatten)]
    pub delivery: DeliveryRecord,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptRecord>,
}

/// A page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The items, newest first.
    pub items: Vec<DeliveryRecord>,
    /// Cursor of the next page, if there is one.
    pub next: Option<String>,
}

/// Count of deliveries of one subscriber in one state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsRow {
    /// Subscriber id.
    pub subscriber: String,
    /// State.
    pub state: String,
    /// How many.
    pub count: i64,
}

/// A record a source set aside, for the operator to list and re-drive.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RejectRecord {
    /// Its id.
    pub id: i64,
    /// The source that received it.
    pub source: String,
    /// Why it was set aside.
    pub reason: String,
    /// The record as received.
    pub raw: String,
    /// When (ms).
    pub created_at: i64,
}

/// What moving a removed subscriber's pending deliveries to another one did.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct MoveReport {
    /// Deliveries that are now the other subscriber's.
    pub moved: u64,
    /// Deliveries left where they were: the other subscriber already has their event.
    pub skipped: u64,
}
