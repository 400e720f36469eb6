//! `cdr-pusher import freeswitch DIR` with the compiled binaries: a running cdr-pusher with
//! `sources.freeswitch` on, and a mod_json_cdr `err-log-dir` spool written as `backup_cdr`
//! writes it (mod_json_cdr.c): `a_<uuid>.cdr.json` with `prefix-a-leg`, `<uuid>.cdr.json`
//! for a b-leg, the text it would have posted (JSON, or with `encode` on the percent-encoded
//! or base64 text) and a newline; with `rotate`, a dated subdirectory.

use std::{path::Path, process::Command, time::Duration};

use base64::Engine as _;
use push_core::{
    testing::{write_config, Program, TestReceiver},
    Service,
};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_cdr-pusher");
const FIXTURE: &str = include_str!("../../fixtures/freeswitch_cdr_sample.json");
const A_LEG: &str = "5a3a1d91-90d3-4db4-af5c-cc3ae15d93a4";
const B_LEG: &str = "9c1afb4f-1d4a-4e45-84a3-d25721981bf5";
const OTHER_CALL: &str = "0b6f7e7c-3c1e-4a55-9d0e-1f2a3b4c5d6e";

/// `switch_url_encode`: bytes outside ' '..'~' and `SWITCH_URL_UNSAFE` as `%XX`.
fn switch_url_encode(text: &str) -> String {
    const UNSAFE: &[u8] = b"\r\n #%&+:;<=>?@[\\]^`{|}\"";
    let escape = |b: u8| !(b' '..=b'~').contains(&b) || UNSAFE.contains(&b);
    text.bytes().map(|b| if escape(b) { format!("%{b:02X}") } else { (b as char).to_string() }).collect()
}

fn leg(uuid: &str, originator: Option<&str>) -> Value {
    let mut doc: Value = serde_json::from_str(FIXTURE).unwrap();
    doc["variables"]["uuid"] = uuid.into();
    if let Some(a) = originator {
        doc["channel_data"]["direction"] = "outbound".into();
        doc["variables"]["originating_leg_uuid"] = a.into();
        doc["variables"]["sip_hangup_disposition"] = "send_bye".into();
    }
    doc
}

fn write_spool(dir: &Path) {
    let a = format!("{FIXTURE}\n");
    std::fs::write(dir.join(format!("a_{A_LEG}.cdr.json")), a).unwrap();
    let b = switch_url_encode(&leg(B_LEG, Some(A_LEG)).to_string());
    std::fs::write(dir.join(format!("{B_LEG}.cdr.json")), format!("{b}\n")).unwrap();
    let rotated = dir.join("2026-12-02-03-00-00");
    std::fs::create_dir(&rotated).unwrap();
    let other = base64::engine::general_purpose::STANDARD.encode(leg(OTHER_CALL, None).to_string());
    std::fs::write(rotated.join(format!("a_{OTHER_CALL}.cdr.json")), format!("{other}\n")).unwrap();
    std::fs::write(dir.join("broken.cdr.json"), "{\"core-uuid\":\"x\"}\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not a CDR").unwrap();
}

fn import(config: &Path, url: &str, spool: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(EXE)
        .arg("--config")
        .arg(config)
        .args(["import", "--url", url, "freeswitch"])
        .arg(spool)
        .output()
        .expect("run the import");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test]
async fn a_spool_is_imported_once_and_a_second_run_finds_only_duplicates() {
    let (dir, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let receiver = TestReceiver::start().await;
    let config = write_config(dir.path(), &receiver.url());
    let yaml = std::fs::read_to_string(&config).unwrap() + "sources:\n  freeswitch:\n    encoded_values: false\n";
    std::fs::write(&config, yaml).unwrap();
    let program = Program::start(EXE, Service::Cdr, &config, &[]);
    write_spool(spool.path());

    let (code, stdout, stderr) = import(&config, &program.url, spool.path());
    assert_eq!(stdout.trim(), "read 4, accepted 3, duplicates 0, rejected 1", "{stderr}");
    assert_eq!(code, Some(2), "a refused file makes the import fail");
    assert!(stderr.contains("broken.cdr.json") && stderr.contains("variables"), "named with its reason: {stderr}");

    let pushes = receiver.wait_for_successes(3, Duration::from_secs(10)).await;
    let mut got: Vec<(String, String)> = pushes
        .iter()
        .map(|p| p.json())
        .map(|c| (c["callId"].as_str().unwrap().to_string(), c["party"].as_str().unwrap().to_string()))
        .collect();
    got.sort();
    let want = [(OTHER_CALL, "CALLER"), (A_LEG, "CALLEE"), (A_LEG, "CALLER")];
    assert_eq!(got, want.map(|(c, p)| (c.to_string(), p.to_string())));

    let (code, stdout, _) = import(&config, &program.url, spool.path());
    assert_eq!(stdout.trim(), "read 4, accepted 0, duplicates 3, rejected 1");
    assert_eq!(code, Some(2));
    let client = reqwest::Client::new();
    let deliveries: Value =
        client.get(format!("{}/v1/deliveries", program.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(deliveries["items"].as_array().map(Vec::len), Some(3), "stored once: {deliveries}");
}
