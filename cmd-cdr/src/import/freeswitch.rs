//! `cdr-pusher import freeswitch DIR`: to be written with the FreeSWITCH source.

use std::path::Path;

use super::{Counts, Poster};

/// Posts every CDR file of the spool `dir`.
pub async fn import(_poster: &Poster, dir: &Path) -> anyhow::Result<Counts> {
    anyhow::bail!("importing {} is not available yet", dir.display())
}
