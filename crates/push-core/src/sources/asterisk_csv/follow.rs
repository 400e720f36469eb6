//! Following one file as Asterisk appends to it (it opens, writes one line and closes the
//! file for every CDR): a look every 200 ms, every complete line taken in batches of up to
//! 500, each batch stored with the position after it in one transaction, so a restart
//! resumes exactly there. A rotated file (renamed, a new one created) is finished first; a
//! truncated one is read again from the start.

use std::{io, path::PathBuf, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    file::{find_rotated, identity, lines, Opened, Position},
    mapping::Mapping,
};
use crate::{
    intake::IntakeError,
    sources::{Feed, Mapped, SourceState},
};

/// How often the file is looked at.
const POLL: Duration = Duration::from_millis(200);
/// Bytes read at once.
const CHUNK: usize = 512 * 1024;
/// Lines stored in one transaction at most.
const BATCH: usize = 500;

/// Why a step did not finish.
#[derive(Debug)]
enum Stop {
    /// The program is stopping.
    Stopping,
    /// Something to show as the source's error; the next look tries again.
    Failed(String),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Failed(e.to_string())
    }
}

impl From<IntakeError> for Stop {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::ShuttingDown => Stop::Stopping,
            e => Stop::Failed(e.to_string()),
        }
    }
}

/// One configured file's follower.
pub struct Follower {
    path: PathBuf,
    feed: Feed,
    mapping: Arc<Mapping>,
    current: Option<Opened>,
    shutdown: CancellationToken,
}

impl Follower {
    /// A follower of `path`, feeding `feed`, until `shutdown`.
    pub fn new(path: PathBuf, feed: Feed, mapping: Arc<Mapping>, shutdown: CancellationToken) -> Follower {
        Follower { path, feed, mapping, current: None, shutdown }
    }

    /// Resumes at the kept position, then follows until the program stops.
    pub async fn run(mut self) {
        loop {
            match self.resume().await {
                Ok(()) => break,
                Err(Stop::Stopping) => return,
                Err(Stop::Failed(e)) => self.feed.handle().set_state(SourceState::Error(e)),
            }
            if self.pause().await {
                return;
            }
        }
        loop {
            match self.step().await {
                Ok(()) => self.feed.handle().set_state(SourceState::Following),
                Err(Stop::Stopping) => return,
                Err(Stop::Failed(e)) => self.feed.handle().set_state(SourceState::Error(e)),
            }
            if self.pause().await {
                return;
            }
        }
    }

    /// Waits for the next look; true if the program stops meanwhile.
    async fn pause(&self) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => true,
            _ = tokio::time::sleep(POLL) => false,
        }
    }

    /// Takes up where the outbox's mark says: the same file at its offset; or, if the file was
    /// rotated meanwhile, the rest of the old one (found in the same directory by its inode),
    /// then the new one from the start; or a truncated file from the start.
    async fn resume(&mut self) -> Result<(), Stop> {
        let name = self.feed.handle().name().to_string();
        let store = self.feed.intake().store();
        let mark = store.source_mark(&name).await.map_err(|e| Stop::Failed(e.to_string()))?;
        let Some(mark) = mark else { return Ok(()) };
        let Ok(position) = serde_json::from_str::<Position>(&mark) else {
            tracing::warn!(source = %name, %mark, "kept position unreadable; following from the start");
            return Ok(());
        };
        if let Ok(mut opened) = Opened::open(&self.path, position.offset) {
            if opened.continues(&position).await? {
                opened.head = Some(position.head).filter(|h| !h.is_empty());
                self.current = Some(opened);
                return Ok(());
            }
        }
        if let Some(old) = find_rotated(&self.path, &position).await {
            let mut opened = Opened::open(&old, position.offset)?;
            opened.head = Some(position.head).filter(|h| !h.is_empty());
            self.drain(&mut opened, true).await?;
            tracing::info!(source = %name, file = %old.display(), "finished the rotated file");
        } else {
            tracing::info!(source = %name, "file rotated or truncated since the kept position; reading it from the start");
        }
        Ok(())
    }

    /// One look: everything new in the file, then whether it was rotated or truncated.
    async fn step(&mut self) -> Result<(), Stop> {
        let mut current = match self.current.take() {
            Some(current) => current,
            None => Opened::open(&self.path, 0)
                .map_err(|e| Stop::Failed(format!("cannot open {}: {e}", self.path.display())))?,
        };
        let drained = self.drain(&mut current, false).await;
        let current = self.current.insert(current);
        drained?;
        match identity(&self.path) {
            // Renamed away and not created again yet (Asterisk creates it with its next CDR):
            // the old file is still followed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
            Ok((id, _)) if id != current.id => {
                let mut old = self.current.take().expect("current file");
                if let Err(stop) = self.drain(&mut old, true).await {
                    self.current = Some(old); // finished at the next look, before the new file
                    return Err(stop);
                }
                tracing::info!(source = %self.feed.handle().name(), "file rotated; following the new one");
            }
            Ok(_) => {
                let head = current.head.clone().unwrap_or_default();
                let at = Position { dev: current.id.0, ino: current.id.1, offset: current.offset, head };
                if !current.continues(&at).await? {
                    tracing::info!(source = %self.feed.handle().name(), "file truncated; reading it from the start");
                    (current.offset, current.head) = (0, None);
                }
            }
        }
        Ok(())
    }

    /// Takes every complete line after `file.offset` (with `last_too`, a final line without
    /// its newline as well), in batches, each stored with the position after it.
    async fn drain(&self, file: &mut Opened, last_too: bool) -> Result<(), Stop> {
        loop {
            if self.shutdown.is_cancelled() {
                return Err(Stop::Stopping);
            }
            let base = file.offset;
            let bytes = file.read_from(base, CHUNK).await?;
            let at_end = bytes.len() < CHUNK;
            let cut = lines(&bytes, last_too && at_end);
            if cut.is_empty() && !at_end {
                self.set_aside_overlong(file, &bytes).await?;
                continue;
            }
            for batch in cut.chunks(BATCH) {
                let end = base + batch.last().expect("a batch has lines").end as u64;
                let records: Vec<Mapped> =
                    batch.iter().filter(|l| !l.text.trim().is_empty()).map(|l| self.mapping.map(&l.text)).collect();
                if !records.is_empty() {
                    let mark = serde_json::to_string(&file.position(end).await?).expect("a position serializes");
                    self.feed.take_or_set_aside(records, Some(mark)).await?;
                }
                file.offset = end;
            }
            if at_end {
                return Ok(());
            }
        }
    }

    /// A "line" longer than a whole read (no newline in 512 KiB): not a CDR Asterisk writes.
    /// Its start is set aside and following goes on after it.
    async fn set_aside_overlong(&self, file: &mut Opened, bytes: &[u8]) -> Result<(), Stop> {
        let end = file.offset + bytes.len() as u64;
        let reason = format!("no line end within {} KiB at offset {}", CHUNK / 1024, file.offset);
        let raw = String::from_utf8_lossy(&bytes[..4096]).into_owned();
        let mark = serde_json::to_string(&file.position(end).await?).expect("a position serializes");
        self.feed.take_or_set_aside(vec![Mapped::new(raw, Err(reason))], Some(mark)).await?;
        file.offset = end;
        Ok(())
    }
}
