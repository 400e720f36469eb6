//! Slow and idle clients (issue 12, point 6): a request head sent in part is cut off after
//! `server.header_read_timeout`, an idle connection after `server.idle_timeout`, and idle
//! connections beyond `server.max_connections` do not keep another client's ingest out.
//! Raw TCP, since a client library would complete the head or reuse its connections.

use std::time::{Duration, Instant};

use push_core::testing::{seed_cdr, TestApp};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::hardening::{addr, spawn};

const WAIT: Duration = Duration::from_secs(10);

/// Connects, writes `sent`, and waits until the server closes the connection; answers how
/// long that took (after the write), or panics after `WAIT`.
async fn closed_after(app: &TestApp, sent: &[u8]) -> Duration {
    let mut stream = TcpStream::connect(addr(app)).await.expect("connect");
    stream.write_all(sent).await.expect("write");
    let start = Instant::now();
    let mut got = Vec::new();
    // A clean close or a reset: either way the server let go of the connection.
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept the connection open for {WAIT:?}");
    assert!(got.is_empty(), "no answer to an unfinished head: {}", String::from_utf8_lossy(&got));
    start.elapsed()
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_head_is_disconnected_after_the_header_read_timeout() {
    let (_dir, _receiver, app) = spawn(|s| {
        s.server.header_read_timeout = Duration::from_millis(300);
        s.server.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let took = closed_after(&app, b"POST /v1/cdrs HTTP/1.1\r\nhost: x\r\ncontent-type: appl").await;
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
    // A whole head is served as usual.
    assert_eq!(app.ingest(&seed_cdr("whole")).await.status(), 202);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let (_dir, _receiver, app) = spawn(|s| {
        s.server.header_read_timeout = Duration::from_secs(60);
        s.server.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let took = closed_after(&app, b"").await;
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_do_not_keep_another_clients_ingest_out() {
    let (_dir, _receiver, app) = spawn(|s| {
        s.server.max_connections = 8;
        s.server.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(addr(&app)).await.expect("connect"));
    }
    // Far sooner than any idle connection times out: the cap makes room by closing the
    // connection idle longest. A new connection for each request (no pooled one from before).
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let start = Instant::now();
    for i in 0..5 {
        let request = client.post(format!("{}/v1/cdrs", app.url)).json(&seed_cdr(&format!("busy-{i}")));
        let response = tokio::time::timeout(WAIT, request.send()).await.expect("ingest answered in time");
        assert_eq!(response.expect("ingest request").status(), 202);
    }
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    drop(idle);
}
