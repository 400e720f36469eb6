//! The Asterisk Manager Interface (INTEGRATIONS.md §2.2) read as a client: the program
//! connects to `sources.ami.host:port`, reads the banner (`Asterisk Call Manager/x.y`), logs
//! in with `Action: Login`, and reads event packets (`Key: Value` lines ended by an empty
//! line). status-pusher turns the call events into statuses ([`map`]); cdr-pusher turns the
//! `Cdr` event (cdr_manager) into CDRs. Both go through the intake like everything else.
//!
//! As with the event socket (see `esl`): it reads only after the previous packets are
//! stored (TCP back-pressure), a packet cut by a dropped connection is dropped with it, one
//! that cannot be read is skipped with a log line, and a refused login or a lost connection
//! puts the source in error and is retried with back-off, 100 ms doubling to 5 s.

pub mod map;

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use self::map::{Calls, StatusMapping};
use super::connect::{FIRST_BACKOFF, MAX_BACKOFF};
use super::{
    asterisk_csv::Mapping as CsvMapping,
    esl::frame::{Frame, Framer, Next},
    Context, Feed, Mapped, Parser, SourceState,
};
use crate::{
    config::{AmiSettings, AsteriskCsvSettings, CsvColumns, CsvLayout, Service},
    intake::IntakeError,
};

/// The kind and the name this source registers under.
pub const KIND: &str = "ami";
const HANDSHAKE: Duration = Duration::from_secs(5);
/// The largest packet: AMI's are a few hundred bytes (there is no body).
const MAX_PACKET: usize = 64 * 1024;

/// What a program makes of the packets.
enum Mode {
    /// status-pusher: call events to statuses.
    Statuses(StatusMapping),
    /// cdr-pusher: `Cdr` events to CDRs.
    Cdrs(Arc<CsvMapping>),
}

/// Registers the source and starts its client; the task ends on shutdown.
pub fn start(ctx: &Context, settings: &AmiSettings) -> anyhow::Result<JoinHandle<()>> {
    let (mode, parser, feed_of): (Mode, Parser, fn(_, _) -> Feed) = match ctx.service {
        Service::Status => {
            let mapping =
                StatusMapping { service_type: settings.service_type, account_id: settings.account_id.clone() };
            let parse = mapping.clone();
            let parser: Parser = Arc::new(move |raw: &str| match map::parse_raw(raw) {
                Ok(frame) => parse.status(&mut Calls::default(), &frame, now_ms()).unwrap_or_else(|| no_status(raw)),
                Err(reason) => Mapped::new(raw, Err(reason)),
            });
            (Mode::Statuses(mapping), parser, Feed::statuses)
        }
        Service::Cdr => {
            let csv = AsteriskCsvSettings {
                path: "ami".into(),
                columns: CsvColumns::Named(CsvLayout::CdrCsv),
                timezone: settings.timezone.clone(),
                service_type: settings.service_type,
                account_id: settings.account_id.clone(),
            };
            let mapping = Arc::new(CsvMapping::new(&csv).map_err(anyhow::Error::msg).context("sources.ami.timezone")?);
            let parse = mapping.clone();
            let parser: Parser = Arc::new(move |raw: &str| match map::parse_raw(raw) {
                Ok(frame) => map::cdr(&parse, &frame).unwrap_or_else(|| no_status(raw)),
                Err(reason) => Mapped::new(raw, Err(reason)),
            });
            (Mode::Cdrs(mapping), parser, Feed::new)
        }
    };
    let handle = ctx.sources.register(KIND, KIND, SourceState::Error("not connected yet".into()), Some(parser));
    let address = format!("{}:{}", settings.host, settings.port);
    handle.set_address(format!("tcp://{address}"));
    let client = Client {
        address,
        username: settings.username.clone(),
        secret: settings.secret.clone(),
        mode,
        feed: feed_of(ctx.intake.clone(), handle),
        shutdown: ctx.shutdown.clone(),
    };
    Ok(tokio::spawn(super::connect::sessions(client, ctx.shutdown.clone())))
}

fn no_status(raw: &str) -> Mapped {
    Mapped::new(raw, Err("the packet gives no record".into()))
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map(|d| d.as_millis() as i64).unwrap_or(0)
}

struct Client {
    address: String,
    username: String,
    secret: String,
    mode: Mode,
    feed: Feed,
    shutdown: CancellationToken,
}

impl super::connect::Session for Client {
    fn feed(&self) -> &Feed {
        &self.feed
    }

    /// One connection: banner, login, then events until it drops (`Err`) or the program stops.
    async fn session(&self, backoff: &mut Duration) -> anyhow::Result<()> {
        let mut stream = super::connect::connect(&self.address, "the manager interface", HANDSHAKE).await?;
        let mut framer = Framer::new(0);
        let banner = tokio::time::timeout(HANDSHAKE, async {
            loop {
                if let Some(line) = framer.line() {
                    return anyhow::Ok(line);
                }
                if stream.read_buf(framer.buffer()).await? == 0 {
                    bail!("the manager interface closed the connection before its banner");
                }
            }
        });
        let banner = banner.await.map_err(|_| anyhow::anyhow!("no banner from {}", self.address))??;
        if !banner.starts_with("Asterisk Call Manager/") {
            bail!("{} is not an Asterisk manager interface (banner {banner:?})", self.address);
        }
        let login = format!(
            "Action: Login\r\nActionID: voice-push-login\r\nUsername: {}\r\nSecret: {}\r\nEvents: on\r\n\r\n",
            self.username, self.secret
        );
        stream.write_all(login.as_bytes()).await.context("writing the login")?;
        self.login_reply(&mut stream, &mut framer).await?;
        self.feed.handle().set_state(SourceState::Connected);
        tracing::info!(source = KIND, address = %self.address, %banner, "manager interface connected");
        *backoff = FIRST_BACKOFF;
        self.events(&mut stream, &mut framer).await
    }
}

impl Client {
    /// Waits for the login's `Response`: `Success`, else its `Message` is the error.
    async fn login_reply(&self, stream: &mut TcpStream, framer: &mut Framer) -> anyhow::Result<()> {
        let read = async {
            loop {
                match framer.next() {
                    Next::Frame(frame) => match frame.header("Response") {
                        Some(r) if r.eq_ignore_ascii_case("Success") => return Ok(()),
                        Some(_) => bail!(
                            "the manager interface at {} refused the login of {:?} (sources.ami.username / secret): {}",
                            self.address,
                            self.username,
                            frame.header("Message").unwrap_or("no message")
                        ),
                        None => continue,
                    },
                    Next::Skipped(reason) => tracing::warn!(source = KIND, %reason, "packet skipped"),
                    Next::Broken(reason) => bail!("the stream cannot be framed: {reason}"),
                    Next::More => {
                        if stream.read_buf(framer.buffer()).await? == 0 {
                            bail!("the manager interface at {} closed the connection at login", self.address);
                        }
                    }
                }
            }
        };
        tokio::time::timeout(HANDSHAKE, read).await.map_err(|_| anyhow::anyhow!("no answer to the login"))?
    }

    /// Reads, maps and stores packets until the connection ends or the program stops (`Ok`).
    async fn events(&self, stream: &mut TcpStream, framer: &mut Framer) -> anyhow::Result<()> {
        let mut calls = Calls::default();
        loop {
            let mut records = Vec::new();
            loop {
                match framer.next() {
                    Next::Frame(frame) => records.extend(self.record(&mut calls, &frame)),
                    Next::Skipped(reason) => tracing::warn!(source = KIND, %reason, "packet skipped"),
                    Next::Broken(reason) => bail!("the stream cannot be framed: {reason}; reconnecting"),
                    Next::More => break,
                }
            }
            if framer.pending() > MAX_PACKET {
                bail!("a packet longer than {MAX_PACKET} bytes; reconnecting");
            }
            if !records.is_empty() && !self.store(records).await {
                return Ok(());
            }
            if stream.read_buf(framer.buffer()).await.context("reading events")? == 0 {
                let cut = if framer.partial() { " in the middle of a packet (dropped)" } else { "" };
                bail!("the manager interface at {} closed the connection{cut}", self.address);
            }
        }
    }

    fn record(&self, calls: &mut Calls, frame: &Frame) -> Option<Mapped> {
        match &self.mode {
            Mode::Statuses(mapping) => mapping.status(calls, frame, now_ms()),
            Mode::Cdrs(mapping) => map::cdr(mapping, frame),
        }
    }

    /// Stores records (unmappable ones set aside), retrying while the outbox fails; false if
    /// the program stops first.
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
                    self.feed.handle().set_state(SourceState::Error(format!("cannot store records: {e}")));
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
