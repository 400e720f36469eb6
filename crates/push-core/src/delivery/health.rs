//! What the delivery loop knows of each subscriber's health, published for the operations
//! API (`GET /v1/subscribers`) and the `voice_push_subscriber_state` gauge; and the handle
//! through which the API pauses, resumes and reloads subscribers in the running loop.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use tokio::sync::mpsc;

use crate::subscribers::Routes;

/// A subscriber's state as the operations API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberState {
    /// Attempts go.
    Closed,
    /// Its breaker is open: only probes go.
    Open,
    /// Paused by the operator: nothing goes, nothing dies.
    Paused,
    /// No longer in the configuration: its deliveries are kept, not attempted.
    Removed,
}

impl SubscriberState {
    /// Its value on the `voice_push_subscriber_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            SubscriberState::Closed => 0.0,
            SubscriberState::Open => 1.0,
            SubscriberState::Paused => 2.0,
            SubscriberState::Removed => 3.0,
        }
    }
}

/// One subscriber's health, as last published by the loop.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Closed, open, paused or removed.
    pub state: SubscriberState,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// The last failed attempt's error (HTTP status or transport error).
    pub last_error: Option<String>,
    /// When the next probe may go (ms), while the breaker is open.
    pub next_probe_at: Option<i64>,
    /// Failed attempts since the program started.
    pub failed_attempts: u64,
    /// Its in-flight limit.
    pub max_in_flight: usize,
    /// Its pushes per second at most (0: no limit).
    pub rate_limit_per_second: u32,
}

/// What the operations API asks of the running loop.
#[derive(Debug)]
pub enum Control {
    /// Stop attempting a subscriber (its deliveries wait).
    Pause(String),
    /// Attempt it again.
    Resume(String),
    /// A reloaded configuration's subscribers.
    Routes(Arc<Routes>),
}

/// The published health of every subscriber the loop has a lane for, and the way to steer
/// the loop: shared by the loop, the API and the reload.
#[derive(Debug, Clone)]
pub struct Board {
    health: Arc<Mutex<BTreeMap<String, Health>>>,
    control: mpsc::UnboundedSender<Control>,
}

impl Board {
    /// A board, and the receiving end of its control channel (the loop's).
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Control>) {
        let (control, rx) = mpsc::unbounded_channel();
        (Board { health: Arc::default(), control }, rx)
    }

    /// Publishes `subscriber`'s health.
    pub fn publish(&self, subscriber: &str, health: Health) {
        let mut map = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(subscriber) {
            Some(h) => *h = health,
            None => {
                map.insert(subscriber.to_string(), health);
            }
        }
    }

    /// Every published subscriber's health, by id.
    pub fn snapshot(&self) -> BTreeMap<String, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends the loop a command; false if it has stopped.
    pub fn send(&self, control: Control) -> bool {
        self.control.send(control).is_ok()
    }
}
