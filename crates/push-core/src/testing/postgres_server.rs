//! A real PostgreSQL for the PostgreSQL backend's tests. With `VOICE_PUSH_TEST_POSTGRES`
//! set (`postgres://user:pass@host:port/db` of a role that may create databases), that server
//! is used; otherwise Debian's PostgreSQL (`/usr/lib/postgresql/<version>/bin`) is initialized
//! and started in a temporary directory on a free port of 127.0.0.1, fsync on, as the
//! `postgres` user when the tests run as root, and stopped when dropped. Either way each test
//! gets its own database from [`PostgresServer::database`].

use std::{
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use sqlx::Connection as _;

/// The variable naming an existing server to test against.
pub const TEST_POSTGRES_VAR: &str = "VOICE_PUSH_TEST_POSTGRES";

/// One PostgreSQL server for a test: an existing one, or one this test started.
pub struct PostgresServer {
    admin_url: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl PostgresServer {
    /// The server of `VOICE_PUSH_TEST_POSTGRES`, or a new one of Debian's PostgreSQL.
    pub async fn start() -> PostgresServer {
        if let Some(url) = std::env::var(TEST_POSTGRES_VAR).ok().filter(|u| !u.is_empty()) {
            return PostgresServer { admin_url: url, child: None, _dir: None };
        }
        let bin = bin_dir();
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = tempfile::Builder::new().prefix("voice-push-pg").tempdir().expect("a directory for postgres");
        let owner = as_postgres_user(dir.path());
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"]).arg(&data);
        run_as(&mut initdb, owner);
        let out = initdb.output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut postgres = Command::new(bin.join("postgres"));
        postgres.arg("-D").arg(&data).args(["-p", &port.to_string(), "-k"]).arg(dir.path());
        postgres.args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "synchronous_commit=on"]);
        postgres.args(["-c", "max_connections=200", "-c", "shared_buffers=64MB"]);
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("a log file");
        run_as(&mut postgres, owner);
        let child = postgres.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("start postgres");
        let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let mut server = PostgresServer { admin_url, child: Some(child), _dir: Some(dir) };
        server.wait_until_ready().await;
        server
    }

    /// A new, empty database of its own on this server; its URL.
    pub async fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vp_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::now_v7().simple().to_string().get(20..).unwrap_or("x")
        );
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await.expect("connect to the test postgres");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("CREATE DATABASE");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&self.admin_url).expect("a postgres URL");
        url.set_path(&name);
        url.to_string()
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(conn) = sqlx::PgConnection::connect(&self.admin_url).await {
                let _ = conn.close().await;
                return;
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = self._dir.as_ref().map(|d| d.path().join("postgres.log"));
                let log = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
                panic!("postgres at {} did not accept connections ({exited:?}); its log:\n{log}", self.admin_url);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: PostgreSQL's immediate shutdown, which also ends its backends.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or a panic saying how to install one.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed: install it (Debian: apt-get install -y postgresql) or set \
             {TEST_POSTGRES_VAR}=postgres://user:pass@host:port/db; the PostgreSQL backend's tests need a real one"
        ),
    }
}

/// When running as root, the `postgres` user's uid and gid (PostgreSQL refuses to run as
/// root), and `dir` handed to it.
fn as_postgres_user(dir: &Path) -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres").ok().flatten().expect("a postgres user (Debian's package)");
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("hand the directory to postgres");
    Some((uid, gid))
}

fn run_as(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.gid(gid).uid(uid);
    }
}
