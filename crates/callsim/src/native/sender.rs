//! Delivers native records as the switches do, and classifies what came back like an ingest
//! post: FreeSWITCH POSTs (2xx accepted, `"duplicate":true` a duplicate, 4xx rejected), an
//! Asterisk line appended to the file (written = accepted), a UCM TCP connection (the server's
//! orderly close = accepted, a reset or a failure = an error).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::{asterisk, freeswitch, redis as cti, ucm, CdrFormat, LegNumber};
use crate::ingest::{classify, endpoint, transport_error};
use crate::model::Cdr;
use crate::stats::PostOutcome;

/// Path of cdr-pusher's FreeSWITCH source.
pub const FREESWITCH_PATH: &str = "/v1/sources/freeswitch";

/// Where native CDRs go, for one format.
#[derive(Debug)]
pub enum NativeSender {
    /// mod_json_cdr: POST to this endpoint.
    Freeswitch {
        /// Shared client.
        http: reqwest::Client,
        /// `<base>/v1/sources/freeswitch`.
        url: String,
        /// Sent as mod_json_cdr's `cred` (HTTP Basic `freeswitch:<token>`).
        token: Option<String>,
    },
    /// cdr_csv: lines appended to this file.
    Asterisk {
        /// The open file (append mode); one line is one write.
        file: Mutex<tokio::fs::File>,
        /// Its path, for errors.
        path: PathBuf,
    },
    /// The UCM's TCP output: one connection per record.
    UcmTcp {
        /// `host:port` of `sources.ucm.tcp_listen`.
        addr: String,
        /// Per connection.
        timeout: Duration,
    },
    /// mod_cti: LPUSH onto a Redis list.
    Redis {
        /// The server.
        client: redis::Client,
        /// One multiplexed connection, made at the first send.
        conn: tokio::sync::OnceCell<redis::aio::MultiplexedConnection>,
        /// The list (`cti.json`'s `cdr.redis.list`).
        list: String,
    },
}

impl NativeSender {
    /// The sender of `format` to `target` (a base URL, a file path, `host:port`); `None` for
    /// JSON, which the ingest client posts.
    pub fn new(
        format: CdrFormat,
        target: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<Option<Self>> {
        Ok(Some(match format {
            CdrFormat::Json => return Ok(None),
            CdrFormat::Freeswitch => {
                let http = reqwest::Client::builder()
                    .timeout(timeout)
                    .user_agent("freeswitch-json/1.0")
                    .build()
                    .context("building the HTTP client")?;
                NativeSender::Freeswitch { http, url: endpoint(target, FREESWITCH_PATH), token }
            }
            CdrFormat::AsteriskCsv => {
                let path = PathBuf::from(target);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {} to append to", path.display()))?;
                NativeSender::Asterisk { file: Mutex::new(tokio::fs::File::from_std(file)), path }
            }
            CdrFormat::UcmTcp => NativeSender::UcmTcp { addr: target.to_string(), timeout },
            CdrFormat::Redis => {
                let (url, list) = match target.split_once("?list=") {
                    Some((url, list)) => (url, list.to_string()),
                    None => (target, "cdr".to_string()),
                };
                let client = redis::Client::open(url).with_context(|| format!("redis URL {url}"))?;
                NativeSender::Redis { client, conn: tokio::sync::OnceCell::new(), list }
            }
        }))
    }

    /// Sends one leg's CDR; the outcome and how long it took.
    pub async fn send(&self, cdr: &Cdr, number: LegNumber) -> (PostOutcome, Duration) {
        let started = Instant::now();
        let outcome = match self {
            NativeSender::Freeswitch { http, url, token } => {
                let body = freeswitch::document(cdr).to_string();
                let mut request = http
                    .post(url)
                    .query(&[("uuid", freeswitch::leg_uuid(cdr))])
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                if let Some(token) = token {
                    request = request.basic_auth("freeswitch", Some(token));
                }
                match request.send().await {
                    Ok(response) => classify(response).await,
                    Err(e) => PostOutcome::Error(transport_error(&e)),
                }
            }
            NativeSender::Asterisk { file, path } => {
                let line = asterisk::line(cdr, number.serial());
                let mut file = file.lock().await;
                match file.write_all(line.as_bytes()).await {
                    Ok(()) => PostOutcome::Accepted,
                    Err(e) => PostOutcome::Error(format!("appending to {}: {e}", path.display())),
                }
            }
            NativeSender::UcmTcp { addr, timeout } => {
                let record = ucm::record(cdr, number).to_string();
                match tokio::time::timeout(*timeout, send_tcp(addr, record.as_bytes())).await {
                    Ok(Ok(())) => PostOutcome::Accepted,
                    Ok(Err(e)) => PostOutcome::Error(format!("{addr}: {e}")),
                    Err(_) => PostOutcome::Error(format!("{addr}: timeout")),
                }
            }
            NativeSender::Redis { client, conn, list } => match lpush(client, conn, list, cdr).await {
                Ok(()) => PostOutcome::Accepted,
                Err(e) => PostOutcome::Error(format!("redis: {e}")),
            },
        };
        (outcome, started.elapsed())
    }
}

/// One UCM connection: connect, send the record, close our side, and wait for the server to
/// close its own (in order once the record is durable; a reset says it is not).
pub async fn send_tcp(addr: &str, record: &[u8]) -> std::io::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(record).await?;
    stream.shutdown().await?;
    let mut rest = [0u8; 64];
    loop {
        match stream.read(&mut rest).await? {
            0 => return Ok(()),
            _ => continue,
        }
    }
}

/// LPUSHes `cdr`'s mod_cti item onto `list`, connecting at the first call.
async fn lpush(
    client: &redis::Client,
    conn: &tokio::sync::OnceCell<redis::aio::MultiplexedConnection>,
    list: &str,
    cdr: &Cdr,
) -> redis::RedisResult<()> {
    let conn = conn.get_or_try_init(|| client.get_multiplexed_async_connection()).await?;
    let item = cti::item(cdr).to_string();
    redis::cmd("LPUSH").arg(list).arg(item).query_async::<i64>(&mut conn.clone()).await.map(drop)
}
