//! `cdr-pusher`: Accepts call detail records (POST /v1/cdrs), keeps them in its SQLite outbox and pushes each to its subscribers.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use push_core::Service;

mod import;

/// Accepts call detail records (POST /v1/cdrs), keeps them in its SQLite outbox and pushes each to its subscribers.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// YAML configuration file (default: config/config.yaml if present, else built-in defaults).
    #[arg(long, env = "VOICE_PUSH_CONFIG")]
    config: Option<PathBuf>,
    /// Without a command: run the pusher.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a switch's saved CDRs into the running cdr-pusher (see `import --help`).
    Import {
        #[command(subcommand)]
        what: import::Import,
        #[command(flatten)]
        target: import::Target,
    },
}

/// mimalloc: the delivery path allocates per request; glibc malloc cost ~20% CPU there
/// (see `push_core::allocator`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    push_core::allocator::return_freed_memory_promptly();
    let args = Args::parse();
    if let Some(Command::Import { what, target }) = args.command {
        return import_main(args.config.as_deref(), what, &target).await;
    }
    match push_core::app::run_program(Service::Cdr, args.config.as_deref()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cdr-pusher: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cdr-pusher import …`: prints the counts; fails if nothing could be posted, or anything
/// was refused.
async fn import_main(config: Option<&std::path::Path>, what: import::Import, target: &import::Target) -> ExitCode {
    let settings = match push_core::config::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cdr-pusher: {e}");
            return ExitCode::FAILURE;
        }
    };
    match import::run(&settings, what, target).await {
        Ok(counts) => {
            println!("{counts}");
            if counts.rejected == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("cdr-pusher import: {e:#}");
            ExitCode::FAILURE
        }
    }
}
