//! Running a compiled program (`CARGO_BIN_EXE_...`) as a child process and signalling it.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::config::Service;

/// Writes a config file for a test run: port 0, a database and logs in `dir`, retries every
/// 100 ms, one subscriber `demo` posting to `receiver_url` (`/cdr`, `/status`).
pub fn write_config(dir: &Path, receiver_url: &str) -> PathBuf {
    let d = dir.display();
    let yaml = format!(
        "log: {{level: info, dir: \"{d}/logs\"}}\n\
         retry: {{schedule: [100ms, 100ms, 100ms, 100ms, 100ms]}}\n\
         delivery: {{timeout: 2s, shutdown_grace: 2s}}\n\
         cdr: {{listen: \"127.0.0.1:0\", database: \"sqlite://{d}/cdr.db\"}}\n\
         status: {{listen: \"127.0.0.1:0\", database: \"sqlite://{d}/status.db\"}}\n\
         subscribers:\n  - id: demo\n    cdr_url: {receiver_url}/cdr\n    status_url: {receiver_url}/status\n    service_types: [100, 200]\n"
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).expect("write test config");
    path
}

/// A compiled pusher running as a child process.
pub struct Program {
    child: Child,
    /// Base URL it listens on, read from its "listening on" log line.
    pub url: String,
    output: Arc<Mutex<Vec<String>>>,
}

impl Program {
    /// Starts `exe --config config` with extra environment, and waits for it to listen.
    pub fn start(exe: &str, service: Service, config: &Path, env: &[(&str, &str)]) -> Program {
        let mut child = spawn(exe, config, env);
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        let mut program = Program { child, url: String::new(), output };
        program.url = program.wait_for_listening(service);
        program
    }

    fn wait_for_listening(&mut self, service: Service) -> String {
        let marker = format!("{} listening on ", service.program());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.output.lock().unwrap().iter().find_map(|l| {
                l.split(&marker).nth(1).map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            });
            if let Some(url) = found {
                return url;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("program exited with {status} before listening:\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "program did not listen in time:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id (what a refusal message names, for instance).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `exe --config config` with extra environment, expecting it to stop by itself (a
    /// refused start): waits up to `timeout` for it to exit, killing it and panicking if it is
    /// still running then. Returns how it exited and what it printed (stdout, then stderr).
    pub fn run_to_exit(exe: &str, config: &Path, env: &[(&str, &str)], timeout: Duration) -> (ExitStatus, String) {
        let mut child = spawn(exe, config, env);
        let deadline = Instant::now() + timeout;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!("program still running after {timeout:?}:\n{}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("output");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status, text)
    }

    /// Sends a signal (SIGTERM, SIGINT, SIGKILL).
    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal program");
    }

    /// Waits for the process to exit, panicking after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "program did not exit in {timeout:?}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it printed so far (stdout and stderr lines).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `exe --config config` with extra environment and its output piped.
fn spawn(exe: &str, config: &Path, env: &[(&str, &str)]) -> std::process::Child {
    Command::new(exe)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn program")
}
