//! Reloading the configuration of a running program (`POST /v1/reload`, SIGHUP): the
//! `subscribers` section takes effect at once (added, removed, changed: URL, secret,
//! filters, limits); every other section is read, validated and reported when it differs,
//! and takes effect at the next start. An invalid file changes nothing.

use std::sync::{Arc, Mutex};

use crate::{
    config::{ConfigError, Service, Settings, Subscriber},
    delivery::health::{Board, Control},
    outbox::Store,
    subscribers::{Roster, Routes},
};

/// Reads the configuration again, as the program read it at start.
pub type Loader = Arc<dyn Fn() -> Result<Settings, ConfigError> + Send + Sync>;

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// Subscribers of this program that are new.
    pub added: Vec<String>,
    /// Subscribers no longer configured (their deliveries are kept, not attempted).
    pub removed: Vec<String>,
    /// Subscribers whose settings changed.
    pub changed: Vec<String>,
    /// Other sections that differ from the running ones: they need a restart.
    pub restart_needed: Vec<String>,
}

/// A running program's reload.
pub struct Reloader {
    service: Service,
    load: Loader,
    running: Mutex<Settings>,
    roster: Roster,
    board: Board,
    outbox: Arc<dyn Store>,
    /// One reload at a time.
    gate: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader of `service` running with `settings`.
    pub fn new(
        service: Service,
        settings: Settings,
        load: Loader,
        roster: Roster,
        board: Board,
        outbox: Arc<dyn Store>,
    ) -> Self {
        Reloader { service, load, running: Mutex::new(settings), roster, board, outbox, gate: Default::default() }
    }

    /// Reads and validates the configuration, and puts its subscribers in force.
    pub async fn reload(&self) -> Result<ReloadReport, ConfigError> {
        let _one = self.gate.lock().await;
        let new = (self.load)()?;
        let report = {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            diff(self.service, &running, &new)
        };
        let routes = Arc::new(Routes::new(&new.subscribers, self.service));
        self.board.send(Control::Routes(routes.clone()));
        self.roster.replace(routes.clone());
        self.set_gauges(&routes, &report.added).await;
        for id in &report.removed {
            tracing::warn!(subscriber = %id, "subscriber removed by a reload: its pending deliveries are kept, not attempted");
        }
        tracing::info!(added = ?report.added, removed = ?report.removed, changed = ?report.changed,
            restart_needed = ?report.restart_needed, "configuration reloaded");
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(report)
    }

    /// Sets the queue-depth gauges of added subscribers (one may come back with a queue).
    async fn set_gauges(&self, routes: &Routes, added: &[String]) {
        if added.is_empty() {
            return;
        }
        let counts = self.outbox.pending_counts().await.unwrap_or_default();
        for id in added {
            if let Some(route) = routes.get(id) {
                let depth = counts.iter().find(|(s, _)| s == id).map_or(0, |(_, n)| *n);
                route.metrics.queue_depth.set(depth as f64);
            }
        }
    }
}

/// What differs between the running settings and new ones, for `service`.
fn diff(service: Service, old: &Settings, new: &Settings) -> ReloadReport {
    let mine = |subs: &[Subscriber]| -> Vec<Subscriber> {
        subs.iter().filter(|s| s.url_for(service).is_some()).cloned().collect()
    };
    let (before, after) = (mine(&old.subscribers), mine(&new.subscribers));
    let find = |list: &[Subscriber], id: &str| list.iter().find(|s| s.id == id).cloned();
    let mut report = ReloadReport::default();
    for s in &after {
        match find(&before, &s.id) {
            None => report.added.push(s.id.clone()),
            Some(b) if &b != s => report.changed.push(s.id.clone()),
            Some(_) => {}
        }
    }
    report.removed = before.iter().filter(|b| find(&after, &b.id).is_none()).map(|b| b.id.clone()).collect();
    // Compared by value: a `Debug` form would hide a changed token or password (redacted).
    let sections: [(&str, bool); 10] = [
        ("log", old.log != new.log),
        ("retry", old.retry != new.retry),
        ("delivery", old.delivery != new.delivery),
        ("breaker", old.breaker != new.breaker),
        ("ingest", old.ingest != new.ingest),
        ("admin", old.admin != new.admin),
        ("server", old.server != new.server),
        ("outbox", old.outbox != new.outbox),
        ("sources", old.sources != new.sources),
        (program_section(service), old.service(service) != new.service(service)),
    ];
    report.restart_needed = sections.into_iter().filter(|(_, differs)| *differs).map(|(k, _)| k.to_string()).collect();
    report
}

fn program_section(service: Service) -> &'static str {
    match service {
        Service::Cdr => "cdr",
        Service::Status => "status",
    }
}
