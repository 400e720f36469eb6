//! Nothing to use: this crate exists for its `Cargo.toml`. It depends on every third-party
//! dependency of the voice-push programs with the union of their features, and every program
//! depends on it, so `cargo run -p callsim`, `-p cdr-pusher` and `-p status-pusher` resolve
//! the same features and share one build of their dependencies (see its `Cargo.toml`).
