//! The compiled `cdr-pusher`: crash safety (SIGKILL), graceful stop (SIGTERM), daily log
//! files, configuration errors, and one process per database file.

use std::{
    collections::HashSet,
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use push_core::{
    testing::{seed_cdr, write_config, Program, TestReceiver},
    Service,
};
use serde_json::{json, Value};

const EXE: &str = env!("CARGO_BIN_EXE_cdr-pusher");

/// A URL that never answers: its port stays bound (held by the caller) and nothing accepts,
/// so attempts fail by timeout, and no other test can take the port meanwhile (a port bound
/// and released was once taken by a concurrent test's server, which answered the pushes).
fn dead_url() -> (String, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (format!("http://{}", listener.local_addr().unwrap()), listener)
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Vec<String> {
    let r = client.post(format!("{url}/v1/cdrs")).json(body).send().await.expect("ingest");
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    body["accepted"].as_array().unwrap().iter().map(|a| a["eventId"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn sigkill_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (dead, _held) = dead_url();
    let config = write_config(dir.path(), &dead);
    let program = Program::start(EXE, Service::Cdr, &config, &[]);
    let client = reqwest::Client::new();
    let mut acked = HashSet::new();
    for batch in 0..10 {
        let items: Vec<Value> = (0..50).map(|i| seed_cdr(&format!("kill-{batch}-{i}"))).collect();
        acked.extend(post(&client, &program.url, &Value::Array(items)).await);
        acked.extend(post(&client, &program.url, &seed_cdr(&format!("kill-single-{batch}"))).await);
    }
    assert_eq!(acked.len(), 510);
    program.signal(Signal::SIGKILL);
    drop(program);

    let receiver = TestReceiver::start().await;
    let config = write_config(dir.path(), &receiver.url());
    let _program = Program::start(EXE, Service::Cdr, &config, &[]);
    let pushes = receiver.wait_for_successes(acked.len(), Duration::from_secs(30)).await;
    let delivered: HashSet<String> = pushes.iter().map(|p| p.header("webhook-id").unwrap().to_string()).collect();
    assert_eq!(delivered, acked, "every acknowledged event is delivered after the crash");
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_attempts_are_in_the_daily_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    let config = write_config(dir.path(), &receiver.url());
    let mut program = Program::start(EXE, Service::Cdr, &config, &[]);
    let ids = post(&reqwest::Client::new(), &program.url, &seed_cdr("term-1")).await;
    receiver.wait_for_successes(1, Duration::from_secs(10)).await;

    program.signal(Signal::SIGTERM);
    let status = program.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit 0 after SIGTERM, got {status}:\n{}", program.output());
    assert!(program.output().contains("cdr-pusher stopped"));

    let files: Vec<_> = std::fs::read_dir(dir.path().join("logs")).unwrap().map(|e| e.unwrap().file_name()).collect();
    let today = utc_date_today();
    let name = format!("cdr-pusher.{today}.log");
    assert!(files.iter().any(|f| f.to_str() == Some(name.as_str())), "{name} in {files:?}");
    let log = std::fs::read_to_string(dir.path().join("logs").join(&name)).unwrap();
    let line = log.lines().find(|l| l.contains(&ids[0])).expect("a line for the attempt");
    for field in ["call_id=\"term-1\"", "subscriber=\"demo\"", "attempt=1", "status=200", "latency_ms="] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[test]
fn invalid_configuration_stops_the_program_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9");
    for (key, value, named) in [
        ("VOICE_PUSH__DELIVERY__TIMEOUT", "soon", "delivery.timeout"),
        ("VOICE_PUSH__DELIVERY__MAX_IN_FLIGHT", "0", "delivery.max_in_flight"),
        ("VOICE_PUSH__CDR__LISTEN", "nowhere", "cdr.listen"),
    ] {
        let out = Command::new(EXE).arg("--config").arg(&config).env(key, value).output().unwrap();
        assert!(!out.status.success(), "{key}={value} must stop the program");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{key}={value}: message names `{named}`: {stderr}");
    }
}

#[tokio::test]
async fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    let config = write_config(dir.path(), &receiver.url());
    let db = format!("sqlite://{}/other.db", dir.path().display());
    let program = Program::start(EXE, Service::Cdr, &config, &[("VOICE_PUSH__CDR__DATABASE", &db)]);
    post(&reqwest::Client::new(), &program.url, &json!([seed_cdr("env-1")])).await;
    assert!(dir.path().join("other.db").exists(), "the database named by the environment was created");
    assert!(!dir.path().join("cdr.db").exists());
}

#[tokio::test]
async fn a_second_program_on_the_same_database_exits_at_once_and_a_kill_9_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (dead, _held) = dead_url();
    let config = write_config(dir.path(), &dead);
    // The same listen address too, as two starts of one configuration would have: the
    // refusal names the database, not the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let env = [("VOICE_PUSH__CDR__LISTEN", listen.as_str())];
    let first = Program::start(EXE, Service::Cdr, &config, &env);

    let started = Instant::now();
    let (status, output) = Program::run_to_exit(EXE, &config, &env, Duration::from_secs(10));
    let took = started.elapsed();
    assert!(!status.success(), "the second program must fail, got {status}:\n{output}");
    let db = dir.path().join("cdr.db");
    let named = format!("cdr-pusher: {} is in use by another process (pid {})", db.display(), first.pid());
    assert!(output.contains(&named), "`{named}` in:\n{output}");
    assert!(!output.contains("listening on"), "it never listened:\n{output}");
    assert!(took < Duration::from_secs(5), "refused at once, not after a wait ({took:?})");
    post(&reqwest::Client::new(), &first.url, &seed_cdr("still-served")).await;

    first.signal(Signal::SIGKILL);
    drop(first);
    let again = Program::start(EXE, Service::Cdr, &config, &env);
    post(&reqwest::Client::new(), &again.url, &seed_cdr("after-kill")).await;
}

/// Today's UTC date as YYYY-MM-DD (the daily file's date), from the civil-from-days algorithm.
fn utc_date_today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `text` without ANSI colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn a_subscriber_removed_from_the_config_is_named_at_start_with_its_pending_count() {
    let dir = tempfile::tempdir().unwrap();
    let (dead, _held) = dead_url();
    let config = write_config(dir.path(), &dead);
    let program = Program::start(EXE, Service::Cdr, &config, &[]);
    let client = reqwest::Client::new();
    let items: Vec<Value> = (0..5).map(|i| seed_cdr(&format!("orphan-{i}"))).collect();
    assert_eq!(post(&client, &program.url, &Value::Array(items)).await.len(), 5);
    // Attempts to the dead URL time out after 2 s: all five are still pending.
    program.signal(Signal::SIGKILL);
    drop(program);

    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, yaml.replace("id: demo", "id: other")).unwrap();
    let program = Program::start(EXE, Service::Cdr, &config, &[]);
    let output = plain(&program.output());
    let line = output.lines().find(|l| l.contains("no longer configured")).unwrap_or_else(|| panic!("{output}"));
    assert!(line.contains("subscriber=demo") && line.contains("pending=5"), "{line}");
    assert_eq!(output.matches("no longer configured").count(), 1, "one line per removed subscriber");
}
