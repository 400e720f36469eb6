//! One process per database file: an advisory exclusive lock (`flock(2)`) on a sidecar file
//! `<db>.lock`, taken before the migrations and held while the outbox runs.
//!
//! Two programs on one file would both claim and push the same deliveries. The kernel lets
//! the lock go when its holder dies, however it dies (kill -9 included), so a crash never
//! leaves a stale lock behind; the pid written into the file only names the holder in the
//! refusal message.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

/// Another process holds the database: the program must not start (one writer per file).
#[derive(Debug, thiserror::Error)]
#[error("{} is in use by another process ({}); one process per database file", .path.display(), holder(*.pid))]
pub struct DatabaseInUse {
    /// The database file, as configured.
    pub path: PathBuf,
    /// The holder's pid, from the lock file, if it had written it yet.
    pub pid: Option<u32>,
}

/// How the refusal names the holder.
fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"))
}

/// The held lock: dropping it (or the process ending) lets another process open the file.
#[derive(Debug)]
pub struct DatabaseLock {
    _flock: Flock<File>,
}

/// The sidecar lock file of a database file: `<db>.lock`, next to it.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the exclusive lock of `db` without waiting, and writes this process's pid into the
/// lock file. Fails with [`DatabaseInUse`] while another process (or another open outbox in
/// this one) holds it.
pub fn lock(db: &Path) -> anyhow::Result<DatabaseLock> {
    let path = lock_path(db);
    // Not truncated on open: the holder's pid must stay readable for the refusal message.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(flock) => flock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            return Err(DatabaseInUse { path: db.to_path_buf(), pid: holder_pid(&mut file) }.into())
        }
        Err((_, errno)) => return Err(errno).with_context(|| format!("locking {}", path.display())),
    };
    write_pid(&mut flock).with_context(|| format!("writing {}", path.display()))?;
    Ok(DatabaseLock { _flock: flock })
}

/// The pid the holder wrote, if it has written one yet.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_file_and_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cdr.db");
        let first = lock(&db).unwrap();
        assert_eq!(std::fs::read_to_string(lock_path(&db)).unwrap().trim(), std::process::id().to_string());
        let refused = lock(&db).unwrap_err();
        let in_use = refused.downcast_ref::<DatabaseInUse>().expect("DatabaseInUse");
        assert_eq!(in_use.pid, Some(std::process::id()));
        let message = refused.to_string();
        assert!(message.contains(&db.display().to_string()), "{message}");
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        drop(first);
        lock(&db).expect("free again once the holder let go");
    }
}
