//! `callsim`: parses the command line and dispatches to the subcommand.

use clap::Parser;

use callsim::cli::{Cli, Command};
use callsim::commands;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Calls(args) => commands::calls(args).await,
        Command::Receive(args) => commands::receive(args).await,
        Command::Generate(args) => commands::generate(args),
        Command::Bench(args) => commands::bench(args).await,
        Command::Switch(args) => callsim::native::switch::run(args).await,
    }
}
