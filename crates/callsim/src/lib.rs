//! callsim: a carrier call simulator, a subscriber's test receiver and a load driver for
//! voice-push, talking to the pushers only through the ingest API of the SPEC.
//!
//! The library exposes the pieces so that tests and benchmarks can reuse them:
//! [`generator::CallGenerator`] (pure, seeded call generation), [`calls::CallsDriver`]
//! (posts calls in real time to the pushers) and [`receive::Receiver`] (the webhook
//! receiver with signature, order and duplicate checks); [`bench`] measures the pushers.

#![warn(missing_docs)]

pub mod bench;
pub mod calls;
pub mod cli;
pub mod commands;
pub mod generator;
pub mod ingest;
pub mod mix;
pub mod model;
pub mod native;
pub mod numbers;
pub mod progress;
pub mod receive;
pub mod report;
pub mod signature;
pub mod stats;
pub mod timeline;
