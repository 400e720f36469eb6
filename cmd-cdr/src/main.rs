//! `cdr-pusher`: Accepts call detail records (POST /v1/cdrs), keeps them in its SQLite outbox and pushes each to its subscribers.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use push_core::Service;

/// Accepts call detail records (POST /v1/cdrs), keeps them in its SQLite outbox and pushes each to its subscribers.
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
    match push_core::app::run_program(Service::Cdr, args.config.as_deref()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cdr-pusher: {e:#}");
            ExitCode::FAILURE
        }
    }
}
