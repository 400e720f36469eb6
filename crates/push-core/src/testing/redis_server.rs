//! A real `redis-server` (Debian's `redis-server` package) for the Redis source's tests: on
//! a free port of 127.0.0.1, in a temporary directory, killed when dropped. Without the
//! program the tests fail and say how to install it.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use redis::aio::MultiplexedConnection;

/// One redis-server process this test started.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A server keeping nothing on disk (`--save '' --appendonly no`).
    pub async fn start() -> RedisServer {
        Self::spawn(false).await
    }

    /// A server whose data survives a kill and a [`RedisServer::restart`]: an append-only
    /// file synced at every write (`--appendonly yes --appendfsync always`).
    pub async fn start_persistent() -> RedisServer {
        Self::spawn(true).await
    }

    async fn spawn(persistent: bool) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = tempfile::tempdir().expect("a directory for redis-server");
        let mut server = RedisServer { port, dir, persistent, child: None };
        server.launch().await;
        server
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A new connection, as another client (mod_cti) would open.
    pub async fn connect(&self) -> MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("a redis URL");
        client.get_multiplexed_async_connection().await.expect("connect to the test redis-server")
    }

    /// LPUSHes `items` onto `list`, as mod_cti does with each CDR (for tests without the
    /// redis crate of their own).
    pub async fn lpush(&self, list: &str, items: &[String]) {
        let mut conn = self.connect().await;
        redis::cmd("LPUSH").arg(list).arg(items).query_async::<()>(&mut conn).await.expect("LPUSH");
    }

    /// `LLEN list`.
    pub async fn llen(&self, list: &str) -> usize {
        let mut conn = self.connect().await;
        redis::cmd("LLEN").arg(list).query_async(&mut conn).await.expect("LLEN")
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (after [`RedisServer::kill`]).
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    async fn launch(&mut self) {
        let log = self.dir.path().join("redis.log");
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        command.args(["--dir", &self.dir.path().display().to_string(), "--logfile", &log.display().to_string()]);
        match self.persistent {
            true => command.args(["--appendonly", "yes", "--appendfsync", "always"]),
            false => command.args(["--appendonly", "no"]),
        };
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: install it (Debian: apt-get install -y redis-server); \
                 the Redis source's tests need a real one"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        self.wait_for_ping(log).await;
    }

    async fn wait_for_ping(&mut self, log: PathBuf) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).expect("a redis URL");
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                    return;
                }
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("redis-server on port {} did not answer PING ({exited:?}); its log:\n{log}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
