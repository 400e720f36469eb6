//! push-core: everything the two voice-push programs share.
//!
//! # Layout
//! - [`schema`]: payloads and validation (SPEC §2); pure.
//! - [`config`]: layered configuration, validated at start (SPEC §7).
//! - [`retry`]: the retry policy, a pure function of config and attempt number.
//! - [`outbox`]: the SQLite outbox and its single group-committing writer; the only SQL.
//! - [`delivery`]: the delivery loop and the webhook client; the only outbound HTTP.
//! - [`retention`]: the background job that purges finished events.
//! - [`sources`]: the switches read natively (FreeSWITCH, Asterisk, UCM, Redis), each a module.
//! - [`intake`]: the one way in for events from every source (ids, routing, store, wake).
//! - [`api`]: ingest and operations HTTP API.
//! - [`subscribers`]: who receives which event.
//! - [`signature`]: Standard Webhooks signing.
//! - [`telemetry`]: logs and metrics.
//! - [`shutdown`], [`clock`]: injected signals and time.
//! - [`app`]: wires it all into a runnable [`app::Application`].

pub mod allocator;
pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod intake;
pub mod outbox;
pub mod reload;
pub mod retention;
pub mod retry;
pub mod schema;
mod server;
pub mod shutdown;
pub mod signature;
pub mod slots;
pub mod sources;
pub mod subscribers;
pub mod telemetry;

#[cfg(test)]
mod module_graph_tests;
#[cfg(feature = "test-util")]
pub mod testing;

pub use app::Application;
pub use config::{Service, Settings};
