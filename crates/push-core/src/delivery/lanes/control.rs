//! The operator's hand on the lanes: pause, resume, and a reloaded configuration's
//! subscribers. Each keeps every claim accounted for: a lane that stops taking work gives its
//! ready queue back to the database unattempted, and its attempts in flight finish and are
//! recorded as usual, so nothing is lost or sent twice.

use super::{Known, Lane, Lanes};
use crate::{delivery::health::Control, subscribers::Routes};

impl Lanes {
    /// Carries out one command of the operations API.
    pub fn control(&mut self, command: Control) {
        match command {
            Control::Pause(id) => self.set_paused(&id, true),
            Control::Resume(id) => self.set_paused(&id, false),
            Control::Routes(routes) => self.reload(&routes),
        }
        self.pump_all();
    }

    /// Pauses or resumes `id` (a subscriber without a lane is ignored: the API checks).
    fn set_paused(&mut self, id: &str, paused: bool) {
        let Some(&i) = self.index.get(id) else { return };
        if self.lanes[i].paused == paused {
            return;
        }
        self.lanes[i].paused = paused;
        tracing::info!(subscriber = id, paused, "subscriber {}", if paused { "paused" } else { "resumed" });
        self.stop_or_go(i);
        self.publish(i);
    }

    /// Holds lane `i` (ready claims back, nothing handed over) if it may not be attempted,
    /// or lets it go (its backlog claimed) if it may.
    fn stop_or_go(&mut self, i: usize) {
        let lane = &mut self.lanes[i];
        let id = lane.route.id.clone();
        if lane.paused || lane.removed {
            let now = self.clock.now_ms();
            self.set_aside(i, now);
            self.slots.hold(&id, true);
        } else if lane.breaker.is_closed() {
            lane.known = Known::Maybe;
            self.slots.hold(&id, false);
        }
    }

    /// Takes a reloaded configuration's subscribers: new ones get a lane, changed ones their
    /// new URL, secret and limits (ready deliveries go to the new URL; attempts in flight
    /// finish against the old one), removed ones stop being attempted and keep their
    /// deliveries.
    fn reload(&mut self, routes: &Routes) {
        let defaults = (self.per_subscriber, self.capacity);
        for route in routes.all() {
            match self.index.get(&route.id).copied() {
                Some(i) => {
                    let was_removed = self.lanes[i].removed;
                    self.lanes[i].reconfigure(route.clone(), defaults);
                    self.slots.set_capacity(&route.id, self.lanes[i].capacity);
                    if was_removed {
                        self.stop_or_go(i);
                    }
                    self.publish(i);
                }
                None => {
                    let lane = Lane::new(route.clone(), defaults, &self.breaker);
                    self.slots.set_capacity(&route.id, lane.capacity);
                    self.index.insert(route.id.clone(), self.lanes.len());
                    self.lanes.push(lane);
                    self.publish(self.lanes.len() - 1);
                }
            }
        }
        for i in 0..self.lanes.len() {
            if !self.lanes[i].removed && routes.get(&self.lanes[i].route.id).is_none() {
                self.lanes[i].removed = true;
                self.stop_or_go(i);
                self.publish(i);
            }
        }
    }

    /// Marks `ids` paused from the start (kept from a previous run).
    pub fn paused_at_start(&mut self, ids: &[String]) {
        for id in ids {
            self.set_paused(id, true);
        }
    }
}
