//! `status-pusher`: Accepts call status events (POST /v1/status-events), keeps them in its SQLite outbox and pushes them to subscribers in per-call order.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use push_core::Service;

/// Accepts call status events (POST /v1/status-events), keeps them in its SQLite outbox and pushes them to subscribers in per-call order.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// YAML configuration file (default: config/config.yaml if present, else built-in defaults).
    #[arg(long, env = "VOICE_PUSH_CONFIG")]
    config: Option<PathBuf>,
}

/// mimalloc: the delivery path allocates per request; glibc malloc cost ~20% CPU there
/// (see `push_core::allocator`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    push_core::allocator::return_freed_memory_promptly();
    let args = Args::parse();
    match push_core::app::run_program(Service::Status, args.config.as_deref()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("status-pusher: {e:#}");
            ExitCode::FAILURE
        }
    }
}
