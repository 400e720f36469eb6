//! FreeSWITCH's event socket (mod_event_socket, INTEGRATIONS.md §1.2) read by status-pusher
//! as an inbound client: it connects to `sources.esl.host:port`, answers `auth/request` with
//! the password, subscribes with `event json` to the call-state events, and stores each
//! leg's statuses ([`map`]) through the intake: the same durability, idempotency, per-call
//! order and HANGUP rule as a posted status.
//!
//! It never reads ahead of what it stores: it reads what the socket has, frames and maps the
//! whole events in it, awaits the intake, and only then reads again, so a switch that sends
//! faster than we store fills the TCP window and waits (back-pressure), and memory holds one
//! read plus at most one unfinished event. An event cut by a dropped connection is dropped
//! with it (ESL does not replay: the CDR is the record of truth). A frame that is not a
//! message, or a body over `ingest.max_body_bytes`, is skipped with a log line. A refused
//! password, a refused connection or a dropped one puts the source in error (shown by
//! `GET /v1/sources`, `/readyz` 503) and it tries again with back-off, 100 ms doubling to 5 s.

pub(crate) mod frame;
pub mod map;

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use self::{
    frame::{Frame, Framer, Next},
    map::{EslMapping, Fields},
};
use super::connect::{FIRST_BACKOFF, MAX_BACKOFF};
use super::{Context, Feed, Mapped, Parser, SourceState};
use crate::{config::EslSettings, intake::IntakeError};

/// The kind and the name this source registers under.
pub const KIND: &str = "esl";
/// The events subscribed to (HEARTBEAT shows liveness).
pub const EVENTS: &str =
    "CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE HEARTBEAT";
/// How long connecting, the greeting and each command reply may take.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// Registers the source and starts its client; the task ends on shutdown.
pub fn start(ctx: &Context, settings: &EslSettings) -> JoinHandle<()> {
    let mapping = Arc::new(EslMapping { service_type: settings.service_type, account_id: settings.account_id.clone() });
    let parse = mapping.clone();
    let parser: Parser = Arc::new(move |raw: &str| parse.parse(raw));
    let handle = ctx.sources.register(KIND, KIND, SourceState::Error("not connected yet".into()), Some(parser));
    let address = format!("{}:{}", settings.host, settings.port);
    handle.set_address(format!("tcp://{address}"));
    let client = Client {
        address,
        password: settings.password.clone(),
        mapping,
        feed: Feed::statuses(ctx.intake.clone(), handle),
        max_body: ctx.settings.ingest.max_body_bytes,
        shutdown: ctx.shutdown.clone(),
    };
    tokio::spawn(super::connect::sessions(client, ctx.shutdown.clone()))
}

struct Client {
    address: String,
    password: String,
    mapping: Arc<EslMapping>,
    feed: Feed,
    max_body: usize,
    shutdown: CancellationToken,
}

impl super::connect::Session for Client {
    fn feed(&self) -> &Feed {
        &self.feed
    }

    /// One connection: handshake, then events until it drops (`Err`) or the program stops.
    async fn session(&self, backoff: &mut Duration) -> anyhow::Result<()> {
        let mut stream = super::connect::connect(&self.address, "the event socket", HANDSHAKE).await?;
        let mut framer = Framer::new(self.max_body);
        let greeting = self.reply(&mut stream, &mut framer).await?;
        if greeting.header("Content-Type") != Some("auth/request") {
            bail!("{} did not ask for auth (Content-Type {:?})", self.address, greeting.header("Content-Type"));
        }
        self.command(&mut stream, &mut framer, &format!("auth {}", self.password)).await.with_context(|| {
            format!("the event socket at {} refused the password (sources.esl.password)", self.address)
        })?;
        self.command(&mut stream, &mut framer, &format!("event json {EVENTS}")).await.context("subscribing")?;
        self.feed.handle().set_state(SourceState::Connected);
        tracing::info!(source = KIND, address = %self.address, "event socket connected");
        *backoff = FIRST_BACKOFF;
        self.events(&mut stream, &mut framer).await
    }
}

impl Client {
    /// Sends `command` and reads its `command/reply`: `+OK`, else the reply is the error.
    async fn command(&self, stream: &mut TcpStream, framer: &mut Framer, command: &str) -> anyhow::Result<()> {
        stream.write_all(format!("{command}\n\n").as_bytes()).await.context("writing a command")?;
        loop {
            let reply = self.reply(stream, framer).await?;
            match reply.header("Content-Type") {
                Some("command/reply") => {
                    let text = reply.header("Reply-Text").unwrap_or("");
                    return if text.starts_with("+OK") { Ok(()) } else { bail!("{text}") };
                }
                Some("text/disconnect-notice") => {
                    bail!("disconnected: {}", String::from_utf8_lossy(&reply.body).trim())
                }
                _ => continue, // an event before the reply: not subscribed yet, not ours
            }
        }
    }

    /// The next message during the handshake.
    async fn reply(&self, stream: &mut TcpStream, framer: &mut Framer) -> anyhow::Result<Frame> {
        let read = async {
            loop {
                match framer.next() {
                    Next::Frame(frame) => return Ok(frame),
                    Next::Skipped(reason) => tracing::warn!(source = KIND, %reason, "frame skipped"),
                    Next::Broken(reason) => bail!("the stream cannot be framed: {reason}"),
                    Next::More => {
                        if stream.read_buf(framer.buffer()).await? == 0 {
                            bail!("the switch closed the connection");
                        }
                    }
                }
            }
        };
        tokio::time::timeout(HANDSHAKE, read).await.map_err(|_| anyhow::anyhow!("no answer from the switch"))?
    }

    /// Reads, maps and stores events until the connection ends (always an error: it is to be
    /// made again) or the program stops (`Ok`).
    async fn events(&self, stream: &mut TcpStream, framer: &mut Framer) -> anyhow::Result<()> {
        loop {
            let mut records = Vec::new();
            loop {
                match framer.next() {
                    Next::Frame(frame) => {
                        if let Some(record) = self.record(&frame)? {
                            records.push(record);
                        }
                    }
                    Next::Skipped(reason) => tracing::warn!(source = KIND, %reason, "frame skipped"),
                    Next::Broken(reason) => bail!("the stream cannot be framed: {reason}; reconnecting"),
                    Next::More => break,
                }
            }
            if !records.is_empty() && !self.store(records).await {
                return Ok(());
            }
            if stream.read_buf(framer.buffer()).await.context("reading events")? == 0 {
                let cut = if framer.partial() { " in the middle of a message (dropped)" } else { "" };
                bail!("the event socket at {} closed the connection{cut}", self.address);
            }
        }
    }

    /// The status of one message, if it is an event that gives one.
    fn record(&self, frame: &Frame) -> anyhow::Result<Option<Mapped>> {
        let fields = match frame.header("Content-Type") {
            Some("text/event-json") => Fields::from_json(&frame.body),
            Some("text/event-plain") => Fields::from_plain(&frame.body),
            Some("text/disconnect-notice") => bail!("the switch disconnected us"),
            _ => return Ok(None),
        };
        let raw = String::from_utf8_lossy(&frame.body);
        match fields {
            Ok(fields) => Ok(self.mapping.map(&raw, &fields)),
            Err(reason) => {
                tracing::warn!(source = KIND, %reason, "event skipped");
                Ok(None)
            }
        }
    }

    /// Stores statuses (unmappable ones set aside), retrying while the outbox fails; false
    /// if the program stops first.
    async fn store(&self, records: Vec<Mapped>) -> bool {
        let mut wait = FIRST_BACKOFF;
        loop {
            match self.feed.take_or_set_aside(records.clone(), None).await {
                Ok(_) => {
                    self.feed.handle().set_state(SourceState::Connected);
                    return true;
                }
                Err(IntakeError::ShuttingDown) => return false,
                Err(e) => {
                    self.feed.handle().set_state(SourceState::Error(format!("cannot store statuses: {e}")));
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
