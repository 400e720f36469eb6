//! Asterisk's CDR files (issue 13, point 2): cdr_csv's `Master.csv` and cdr_custom files,
//! followed as Asterisk appends to them (`sources.asterisk_csv`, one source per file, named
//! `asterisk_csv:<path>`), and read whole by `cdr-pusher import asterisk-csv`. Each line is
//! one CDR (INTEGRATIONS.md §2.1); a line that cannot be mapped is set aside with its reason.

mod columns;
mod file;
mod follow;
mod mapping;

use std::{path::Path, sync::Arc};

use tokio::task::JoinHandle;

pub use self::{
    columns::columns_from_flag,
    file::{lines, Line},
    mapping::Mapping,
};
use super::{Context, Feed, Parser, SourceState};
use crate::config::AsteriskCsvSettings;

/// The kind shown in `GET /v1/sources`.
pub const KIND: &str = "asterisk_csv";

/// The source name of the file at `path` (its rejects and kept position go by it).
pub fn source_name(path: &Path) -> String {
    format!("{KIND}:{}", path.display())
}

/// Registers the source of one configured file and starts following it; the task ends when
/// the program stops.
pub fn start(ctx: &Context, settings: &AsteriskCsvSettings) -> anyhow::Result<JoinHandle<()>> {
    let mapping = Mapping::new(settings)
        .map_err(|e| anyhow::anyhow!("sources.asterisk_csv ({}): timezone: {e}", settings.path.display()))?;
    let mapping = Arc::new(mapping);
    let parser: Parser = {
        let mapping = mapping.clone();
        Arc::new(move |raw: &str| mapping.map(raw))
    };
    let name = source_name(&settings.path);
    let handle = ctx.sources.register(name, KIND, SourceState::Following, Some(parser));
    let feed = Feed::new(ctx.intake.clone(), handle);
    let follower = follow::Follower::new(settings.path.clone(), feed, mapping, ctx.shutdown.clone());
    Ok(tokio::spawn(follower.run()))
}
