//! The file side of following: which file is which (device and inode, and a fingerprint of
//! its first line so a new file that got an old inode is not taken for the old one), reading
//! from an offset, and cutting what was read into complete lines.

use std::{
    fs::File,
    io,
    os::unix::fs::{FileExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where a follower is, as kept in the outbox's source mark (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file's device.
    pub dev: u64,
    /// The file's inode.
    pub ino: u64,
    /// Bytes taken: every line before it is stored or set aside.
    pub offset: u64,
    /// Fingerprint of the file's first line (empty while nothing was taken).
    pub head: String,
}

/// A file open for following.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The open file (it stays the same file when the path is renamed away).
    pub file: Arc<File>,
    /// Its device and inode.
    pub id: (u64, u64),
    /// Bytes taken so far.
    pub offset: u64,
    /// Its first line's fingerprint, once computed.
    pub head: Option<String>,
}

impl Opened {
    /// Opens `path` at `offset`.
    pub fn open(path: &Path, offset: u64) -> io::Result<Opened> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        Ok(Opened { file: Arc::new(file), id: (meta.dev(), meta.ino()), offset, head: None })
    }

    /// The mark to keep once `offset` is taken.
    pub async fn position(&mut self, offset: u64) -> io::Result<Position> {
        let head = match &self.head {
            Some(head) => head.clone(),
            None if offset == 0 => String::new(),
            None => {
                let head = head_of(self.file.clone()).await?;
                self.head = Some(head.clone());
                head
            }
        };
        Ok(Position { dev: self.id.0, ino: self.id.1, offset, head })
    }

    /// Whether this is the file `position` was taken from: same inode and first line, and not
    /// shorter than the position (else it was truncated).
    pub async fn continues(&self, position: &Position) -> io::Result<bool> {
        if self.id != (position.dev, position.ino) || self.file.metadata()?.len() < position.offset {
            return Ok(false);
        }
        Ok(position.head.is_empty() || head_of(self.file.clone()).await? == position.head)
    }

    /// Up to `max` bytes from `offset`.
    pub async fn read_from(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || read_at(&file, offset, max)).await.map_err(io::Error::other)?
    }
}

/// The device and inode now at `path`, and its length.
pub fn identity(path: &Path) -> io::Result<((u64, u64), u64)> {
    let meta = std::fs::metadata(path)?;
    Ok(((meta.dev(), meta.ino()), meta.len()))
}

/// The file of `position` if it is still in `path`'s directory under another name (rotated:
/// `Master.csv` renamed to `Master.csv.1` while the follower was down).
pub async fn find_rotated(path: &Path, position: &Position) -> Option<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let candidate = entry.path();
        let Ok((id, _)) = identity(&candidate) else { continue };
        if id != (position.dev, position.ino) {
            continue;
        }
        let opened = Opened::open(&candidate, position.offset).ok()?;
        return opened.continues(position).await.ok().filter(|same| *same).map(|_| candidate);
    }
    None
}

fn read_at(file: &File, offset: u64, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; max];
    let mut filled = 0;
    while filled < max {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Fingerprint of the first line (at most its first 1 KiB).
async fn head_of(file: Arc<File>) -> io::Result<String> {
    let first = tokio::task::spawn_blocking(move || read_at(&file, 0, 1024)).await.map_err(io::Error::other)??;
    let line = first.iter().position(|b| *b == b'\n').map_or(&first[..], |end| &first[..=end]);
    let digest = Sha256::digest(line);
    Ok(digest[..12].iter().map(|b| format!("{b:02x}")).collect())
}

/// One line cut from what was read: its text (line end removed; invalid UTF-8 replaced) and
/// the offset just after it, relative to the start of the bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// The line without `\n` / `\r\n`.
    pub text: String,
    /// Relative offset after its line end.
    pub end: usize,
}

/// The complete lines of `bytes`; with `last_too`, the bytes after the last newline count as
/// a line as well (a file that will not grow any more). An incomplete last line is left for
/// the next read: Asterisk may be writing it.
pub fn lines(bytes: &[u8], last_too: bool) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            lines.push(line(&bytes[start..i], i + 1));
            start = i + 1;
        }
    }
    if last_too && start < bytes.len() {
        lines.push(line(&bytes[start..], bytes.len()));
    }
    lines
}

fn line(bytes: &[u8], end: usize) -> Line {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    Line { text: String::from_utf8_lossy(bytes).into_owned(), end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_last_line_waits_unless_the_file_is_finished() {
        let cut = lines(b"a,1\r\nb,2\nc,", false);
        assert_eq!(cut, [Line { text: "a,1".into(), end: 5 }, Line { text: "b,2".into(), end: 9 }]);
        assert_eq!(lines(b"a\nc,", true).last().unwrap(), &Line { text: "c,".into(), end: 4 });
        assert!(lines(b"no newline yet", false).is_empty());
    }
}
