//! Who gets which event (SPEC §4), resolved once from the configuration.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::watch;

use crate::{
    config::{signing_key, Service, Subscriber},
    schema::ValidEvent,
    telemetry::metrics::SubscriberMetrics,
};

/// A subscriber as one program sees it: its URL for this program and its signing key.
#[derive(Debug, Clone)]
pub struct Route {
    /// Subscriber id.
    pub id: String,
    /// Where this program posts (validated at start), as the HTTP client takes it: parsed
    /// once, not per attempt.
    pub uri: http::Uri,
    /// HMAC key, when the subscriber has a secret.
    pub key: Option<Vec<u8>>,
    /// This subscriber's metric handles, registered once.
    pub metrics: SubscriberMetrics,
    /// Its own in-flight limit, if it has one (else the program's per-subscriber limit).
    pub max_in_flight: Option<usize>,
    /// Pushes per second at most; 0: no limit.
    pub rate_limit_per_second: u32,
    service_types: Vec<u16>,
    accounts: Vec<String>,
}

/// The subscribers of one program, in configuration order, indexed by id (ingest looks up
/// every subscriber of every request, and there may be a thousand).
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<Arc<Route>>, Arc<HashMap<String, usize>>);

impl Routes {
    /// Keeps the subscribers that have a URL for `service`.
    pub fn new(subscribers: &[Subscriber], service: Service) -> Self {
        let routes: Vec<Arc<Route>> = subscribers
            .iter()
            .filter_map(|s| {
                // Normalized by the URL parser config validation uses.
                let url = url::Url::parse(s.url_for(service)?).ok()?;
                Some(Arc::new(Route {
                    id: s.id.clone(),
                    uri: url.as_str().parse().ok()?,
                    key: s.secret.as_ref().and_then(signing_key),
                    metrics: SubscriberMetrics::new(&s.id),
                    max_in_flight: s.max_in_flight,
                    rate_limit_per_second: s.rate_limit_per_second,
                    service_types: s.service_types.clone(),
                    accounts: s.accounts.clone(),
                }))
            })
            .collect();
        let index = routes.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        Routes(routes, Arc::new(index))
    }

    /// Ids of the subscribers that receive `event`: its serviceType is theirs, and their
    /// account list is empty or names the event's accountId.
    pub fn matching(&self, event: &ValidEvent) -> Vec<String> {
        self.0
            .iter()
            .filter(|r| r.service_types.contains(&event.service_type))
            .filter(|r| r.accounts.is_empty() || event.account_id.as_ref().is_some_and(|a| r.accounts.contains(a)))
            .map(|r| r.id.clone())
            .collect()
    }

    /// Every route.
    pub fn all(&self) -> &[Arc<Route>] {
        &self.0
    }

    /// One route by subscriber id.
    pub fn get(&self, id: &str) -> Option<&Arc<Route>> {
        self.1.get(id).map(|&i| &self.0[i])
    }

    /// Moves the queue-depth gauge of `subscriber` (a no-op for an unknown one).
    pub fn queue_depth_add(&self, subscriber: &str, delta: f64) {
        if let Some(route) = self.get(subscriber) {
            route.metrics.queue_depth.increment(delta);
        }
    }
}

/// The subscribers in force, replaced whole by a reload (`POST /v1/reload`, SIGHUP). Ingest
/// routes each event with the routes current when it is taken; the delivery loop learns of a
/// new set through its control channel.
#[derive(Debug, Clone)]
pub struct Roster(Arc<watch::Sender<Arc<Routes>>>);

impl Roster {
    /// A roster starting with `routes`.
    pub fn new(routes: Routes) -> Self {
        Roster(Arc::new(watch::Sender::new(Arc::new(routes))))
    }

    /// The routes in force now.
    pub fn current(&self) -> Arc<Routes> {
        self.0.borrow().clone()
    }

    /// Ids of the subscribers in force that receive `event` (see [`Routes::matching`]).
    pub fn matching(&self, event: &ValidEvent) -> Vec<String> {
        self.0.borrow().matching(event)
    }

    /// Moves the queue-depth gauge of `subscriber`, if it is in force.
    pub fn queue_depth_add(&self, subscriber: &str, delta: f64) {
        self.0.borrow().queue_depth_add(subscriber, delta);
    }

    /// Puts `routes` in force.
    pub fn replace(&self, routes: Arc<Routes>) {
        self.0.send_replace(routes);
    }
}
