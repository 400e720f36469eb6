//! The compiled `cdr-pusher` with Asterisk CSV files (issue 13, points 2 and 5): SIGKILL while
//! it follows a file that is being appended to, then a restart, delivers every line exactly
//! once; `cdr-pusher import asterisk-csv` imports a whole file, and again as duplicates.

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    path::Path,
    process::Command,
    time::Duration,
};

use nix::sys::signal::Signal;
use push_core::{
    testing::{eventually, write_config, Program, TestReceiver},
    Service,
};

const EXE: &str = env!("CARGO_BIN_EXE_cdr-pusher");

/// A cdr_csv line (loguniqueid, loguserfield: 18 columns) of call `i`.
fn line(i: u32) -> String {
    format!(
        "\"\",\"1000\",\"{i}\",\"from-internal\",\"\"\"Alice\"\" <1000>\",\"PJSIP/1000-{i:08x}\",\"PJSIP/2000-{i:08x}\",\"Dial\",\"PJSIP/2000\",\"2023-12-01 00:00:00\",\"2023-12-01 00:00:10\",\"2023-12-01 00:01:10\",70,60,\"ANSWERED\",\"DOCUMENTATION\",\"1701388800.{i}\",\"\"\n"
    )
}

/// Appends as Asterisk's cdr_csv does: open in append mode, write one line, close.
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The test config with `sources.asterisk_csv` following `file`.
fn config_following(dir: &Path, receiver: &str, file: &Path) -> std::path::PathBuf {
    let config = write_config(dir, receiver);
    let source = format!("sources:\n  asterisk_csv:\n    - {{path: \"{}\", columns: cdr_csv}}\n", file.display());
    append(&config, &source);
    config
}

/// Every callId pushed so far with the webhook-ids it came with.
fn pushes_by_call(receiver: &TestReceiver) -> HashMap<String, HashSet<String>> {
    let mut by_call: HashMap<String, HashSet<String>> = HashMap::new();
    for push in receiver.received().iter().filter(|r| r.answered == 200) {
        let call = push.json()["callId"].as_str().unwrap().to_string();
        by_call.entry(call).or_default().insert(push.header("webhook-id").unwrap().to_string());
    }
    by_call
}

#[tokio::test]
async fn sigkill_mid_stream_on_a_followed_file_loses_and_doubles_nothing() {
    const LINES: u32 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    let file = dir.path().join("Master.csv");
    let config = config_following(dir.path(), &receiver.url(), &file);
    let program = Program::start(EXE, Service::Cdr, &config, &[]);

    let writer = {
        let file = file.clone();
        std::thread::spawn(move || {
            for i in 0..LINES {
                append(&file, &line(i));
                if i % 20 == 19 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    // Counting arrivals is cheap: the test's runtime also runs the receiver.
    eventually(Duration::from_secs(20), "pushes under way", || async { (receiver.arrivals() >= 200).then_some(()) })
        .await;
    assert!(!writer.is_finished(), "killed while the file is still being appended to");
    program.signal(Signal::SIGKILL);
    drop(program);
    let before_restart = pushes_by_call(&receiver).len();
    assert!(before_restart < LINES as usize, "killed mid-stream, after {before_restart} pushes");

    let program = Program::start(EXE, Service::Cdr, &config, &[]);
    writer.join().unwrap();
    let pushed = eventually(Duration::from_secs(60), "every line pushed", || async {
        if receiver.arrivals() < LINES as usize {
            return None;
        }
        let by_call = pushes_by_call(&receiver);
        (by_call.len() == LINES as usize).then_some(by_call)
    })
    .await;
    let expected: HashSet<String> = (0..LINES).map(|i| format!("1701388800.{i}")).collect();
    assert_eq!(pushed.keys().cloned().collect::<HashSet<_>>(), expected, "every line, once");
    let doubled: Vec<_> = pushed.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(doubled.is_empty(), "a line stored twice (two webhook-ids): {doubled:?}");
    // The kept position came back with the records it covered: the restart read no line
    // twice (a line read again would be counted as a duplicate, even if pushed once).
    let sources: serde_json::Value =
        reqwest::get(format!("{}/v1/sources", program.url)).await.unwrap().json().await.unwrap();
    let figures = &sources["sources"][0];
    assert_eq!((figures["duplicates"].as_u64(), figures["rejected"].as_u64()), (Some(0), Some(0)), "{figures}");
    assert!(figures["accepted"].as_u64().unwrap() < LINES as u64, "the rest, after the crash: {figures}");
}

fn import(config: &Path, url: &str, file: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(EXE)
        .arg("--config")
        .arg(config)
        .args(["import", "--url", url, "asterisk-csv"])
        .arg(file)
        .args(extra)
        .output()
        .expect("run the import");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn import_asterisk_csv_posts_every_line_and_again_as_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    let config = write_config(dir.path(), &receiver.url());
    let program = Program::start(EXE, Service::Cdr, &config, &[]);
    let fixtures = format!("{}/../fixtures", env!("CARGO_MANIFEST_DIR"));
    let sample = std::fs::read_to_string(format!("{fixtures}/asterisk_cdr_sample.csv")).unwrap();
    let (first, rest) = sample.split_once('\n').unwrap();
    let file = dir.path().join("Master.csv.1");
    std::fs::write(&file, format!("{first}\n\"not\",\"a\",\"cdr\"\n{rest}")).unwrap();

    let (code, stdout, stderr) = import(&config, &program.url, &file, &[]);
    assert_eq!(stdout.trim(), "read 4, accepted 3, duplicates 0, rejected 1", "{stderr}");
    assert_eq!(code, 2, "a rejected line makes the exit status 2");
    let named = format!("{}:2: 3 columns", file.display());
    assert!(stderr.contains(&named), "the bad line is named with its reason: {stderr}");
    let (code, stdout, _) = import(&config, &program.url, &file, &[]);
    assert_eq!((code, stdout.trim()), (2, "read 4, accepted 0, duplicates 3, rejected 1"), "idempotent");

    let custom = Path::new(&fixtures).join("asterisk_cdr_custom_sample.csv");
    let flags = ["--columns", "cdr_custom", "--timezone", "Europe/Moscow", "--service-type", "100"];
    let (code, stdout, stderr) = import(&config, &program.url, &custom, &flags);
    assert_eq!((code, stdout.trim()), (0, "read 2, accepted 2, duplicates 0, rejected 0"), "{stderr}");

    let pushes = receiver.wait_for_successes(5, Duration::from_secs(15)).await;
    let by_call = pushes_by_call(&receiver);
    assert_eq!(by_call.len(), 5, "pushed once each: {:?}", by_call.keys());
    let answered = pushes.iter().map(|p| p.json()).find(|b| b["callId"] == "1498559343.3").unwrap();
    assert_eq!((answered["startTime"].as_i64(), answered["duration"].as_i64()), (Some(1_498_559_354_000), Some(391)));
    let moscow = pushes.iter().map(|p| p.json()).find(|b| b["callId"] == "1690325492.2").unwrap();
    assert_eq!(moscow["beginCallTime"], 1_690_325_492_000_i64, "read in --timezone");
}
