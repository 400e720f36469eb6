//! `callsim switch` (issue 16, point 5): callsim plays the switch's real-time interface, the
//! server side that status-pusher connects to. `--esl` speaks mod_event_socket (greeting
//! `auth/request`, `auth <password>`, `event json ...`, then `text/event-json` events framed
//! by `Content-Length`); `--ami` speaks the Asterisk Manager Interface (banner, `Action:
//! Login`, then `Key: Value` packets). Each generated call's status events become the leg's
//! events (DIALING → CHANNEL_CREATE / Newchannel, RINGING → CHANNEL_PROGRESS / Newstate 5,
//! ANSWERED → CHANNEL_ANSWER / Newstate 6, HANGUP → CHANNEL_HANGUP_COMPLETE / Hangup), in
//! the order the call made them.

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::{b_leg_id, freeswitch::cause_name};
use crate::model::{Party, ReleaseDirection, Status, StatusEvent};

/// Which interface is played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// FreeSWITCH's event socket, with its password.
    Esl {
        /// `event_socket.conf.xml`'s password.
        password: String,
    },
    /// Asterisk's manager interface, with a `manager.conf` user.
    Ami {
        /// The user.
        username: String,
        /// Its secret.
        secret: String,
    },
}

/// Reads up to an empty line (`\n\n`, or `\r\n\r\n`); `None` when the peer left.
async fn command(stream: &mut TcpStream) -> Option<String> {
    let mut bytes = Vec::new();
    while !(bytes.ends_with(b"\n\n") || bytes.ends_with(b"\r\n\r\n")) {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.ok()? == 0 || bytes.len() > 4096 {
            return None;
        }
        bytes.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The handshake of a client; true when it is authenticated (and subscribed).
pub async fn handshake(stream: &mut TcpStream, protocol: &Protocol) -> anyhow::Result<bool> {
    match protocol {
        Protocol::Esl { password } => {
            stream.write_all(b"Content-Type: auth/request\n\n").await?;
            let auth = command(stream).await.unwrap_or_default();
            if auth.trim() != format!("auth {password}") {
                stream.write_all(b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n").await?;
                return Ok(false);
            }
            stream.write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n").await?;
            let subscribe = command(stream).await.unwrap_or_default();
            if !subscribe.starts_with("event ") {
                return Ok(false);
            }
            stream.write_all(b"Content-Type: command/reply\nReply-Text: +OK event listener enabled json\n\n").await?;
            Ok(true)
        }
        Protocol::Ami { username, secret } => {
            stream.write_all(b"Asterisk Call Manager/9.0.0\r\n").await?;
            let login = command(stream).await.unwrap_or_default();
            let ok = login.contains(&format!("Username: {username}\r\n"))
                && login.contains(&format!("Secret: {secret}\r\n"));
            let reply = if ok {
                "Success\r\nMessage: Authentication accepted"
            } else {
                "Error\r\nMessage: Authentication failed"
            };
            stream.write_all(format!("Response: {reply}\r\n\r\n").as_bytes()).await?;
            Ok(ok)
        }
    }
}

/// The leg of a status: its uuid and whether it is the a-leg.
fn leg(event: &StatusEvent) -> (String, bool) {
    match event.party {
        Some(Party::Callee) => (b_leg_id(&event.common.call_id), false),
        _ => (event.common.call_id.clone(), true),
    }
}

/// The ESL message of one status event.
pub fn esl_event(event: &StatusEvent) -> Vec<u8> {
    let (uuid, a_leg) = leg(event);
    let name = match event.status {
        Status::Dialing => "CHANNEL_CREATE",
        Status::Ringing => "CHANNEL_PROGRESS",
        Status::Answered => "CHANNEL_ANSWER",
        Status::Hangup => "CHANNEL_HANGUP_COMPLETE",
    };
    let call = &event.common.call_id;
    let mut body = json!({
        "Event-Name": name, "Core-UUID": super::freeswitch::CORE_UUID, "FreeSWITCH-Hostname": "callsim",
        "Event-Date-Timestamp": (event.timestamp * 1000).to_string(), "Unique-ID": uuid,
        "Channel-Call-UUID": call, "Call-Direction": if a_leg { "inbound" } else { "outbound" },
        "Caller-Caller-ID-Number": event.caller_number, "Caller-Destination-Number": event.callee_number,
    });
    let fields = body.as_object_mut().expect("an object");
    if !a_leg {
        fields.insert("variable_originating_leg_uuid".into(), call.clone().into());
        fields.insert("Other-Leg-Unique-ID".into(), call.clone().into());
    }
    if let Some(release) = &event.release {
        let by_caller = release.release_direction == ReleaseDirection::Caller;
        let how = match (by_caller, a_leg) {
            (true, true) | (false, false) => "recv_bye",
            _ => "send_bye",
        };
        let answered = release.sip_code == 200;
        for (k, v) in [
            ("Hangup-Cause", Value::from(cause_name(release.hangup_cause))),
            ("variable_hangup_cause_q850", release.hangup_cause.to_string().into()),
            ("variable_sip_term_status", release.sip_code.to_string().into()),
            ("variable_sip_hangup_disposition", how.into()),
            ("Caller-Channel-Answered-Time", if answered { event.timestamp * 1000 - 1 } else { 0 }.to_string().into()),
        ] {
            fields.insert(k.into(), v);
        }
    }
    let body = body.to_string();
    format!("Content-Length: {}\nContent-Type: text/event-json\n\n{body}", body.len()).into_bytes()
}

/// The AMI packet of one status event.
pub fn ami_event(event: &StatusEvent) -> Vec<u8> {
    let (uuid, _) = leg(event);
    let (name, extra) = match event.status {
        Status::Dialing => ("Newchannel", "ChannelState: 0\r\nChannelStateDesc: Down\r\n".to_string()),
        Status::Ringing => ("Newstate", "ChannelState: 5\r\nChannelStateDesc: Ringing\r\n".to_string()),
        Status::Answered => ("Newstate", "ChannelState: 6\r\nChannelStateDesc: Up\r\n".to_string()),
        Status::Hangup => {
            let cause = event.release.as_ref().map_or(16, |r| r.hangup_cause);
            ("Hangup", format!("Cause: {cause}\r\nCause-txt: {}\r\n", cause_name(cause)))
        }
    };
    let (caller_id, connected) = if event.party == Some(Party::Callee) {
        (&event.callee_number, &event.caller_number)
    } else {
        (&event.caller_number, &event.callee_number)
    };
    let packet = format!(
        "Event: {name}\r\nPrivilege: call,all\r\nTimestamp: {}.{:03}000\r\nChannel: PJSIP/{caller_id}-{uuid}\r\n\
         CallerIDNum: {caller_id}\r\nConnectedLineNum: {connected}\r\nExten: {}\r\nUniqueid: {uuid}\r\nLinkedid: {}\r\n{extra}\r\n",
        event.timestamp.div_euclid(1000),
        event.timestamp.rem_euclid(1000),
        event.callee_number,
        event.common.call_id
    );
    packet.into_bytes()
}

/// The bytes of one status event in `protocol`.
pub fn encode(protocol: &Protocol, event: &StatusEvent) -> Vec<u8> {
    match protocol {
        Protocol::Esl { .. } => esl_event(event),
        Protocol::Ami { .. } => ami_event(event),
    }
}

/// What a run of `callsim switch` served.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Calls whose events were all written.
    pub calls: u64,
    /// Events written.
    pub events: u64,
}

/// `callsim switch`: listens, and serves generated calls to each client that logs in, one
/// connection at a time (a client that drops is waited for again; calls go on where they
/// were). Each call's events are written back to back, in its order, at `--rate` calls/s.
pub async fn run(args: crate::cli::SwitchArgs) -> anyhow::Result<()> {
    let (addr, protocol) = match (args.esl, args.ami) {
        (Some(addr), _) => (addr, Protocol::Esl { password: args.password.clone() }),
        (None, Some(addr)) => (addr, Protocol::Ami { username: args.username.clone(), secret: args.secret.clone() }),
        (None, None) => anyhow::bail!("--esl or --ami is required"),
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let seed = args.generator.seed.unwrap_or_else(rand::random);
    let config = args.generator.config(crate::calls::now_ms());
    config.validate().map_err(anyhow::Error::msg)?;
    let mut generator = crate::generator::CallGenerator::new(config, seed);
    eprintln!("callsim switch: {protocol:?} on {}, seed {seed}", listener.local_addr()?);
    let served = serve(&listener, &protocol, &mut generator, args.count, args.rate).await?;
    eprintln!("callsim switch: served {} calls, {} events", served.calls, served.events);
    Ok(())
}

/// Serves `count` calls (0: without end) to the clients that connect to `listener`.
pub async fn serve(
    listener: &tokio::net::TcpListener,
    protocol: &Protocol,
    generator: &mut crate::generator::CallGenerator,
    count: u64,
    rate: f64,
) -> anyhow::Result<Served> {
    let mut served = Served::default();
    let pace = (rate > 0.0).then(|| std::time::Duration::from_secs_f64(1.0 / rate));
    let mut pending: Option<(Vec<u8>, u64)> = None;
    while count == 0 || served.calls < count {
        let (mut stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        if !handshake(&mut stream, protocol).await.unwrap_or(false) {
            eprintln!("callsim switch: {peer} was refused");
            continue;
        }
        eprintln!("callsim switch: {peer} connected");
        let started = std::time::Instant::now();
        let first = served.calls;
        loop {
            if count != 0 && served.calls >= count {
                stream.shutdown().await.ok();
                // Wait for the client to close: everything written is then read.
                let mut sink = [0u8; 64];
                while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                return Ok(served);
            }
            let (bytes, events) = pending.take().unwrap_or_else(|| next_call(generator, protocol));
            if stream.write_all(&bytes).await.is_err() {
                pending = Some((bytes, events));
                break;
            }
            served.events += events;
            served.calls += 1;
            if let Some(pace) = pace {
                let due = started + pace * (served.calls - first) as u32;
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }
    Ok(served)
}

/// The next call's events, encoded, and how many.
fn next_call(generator: &mut crate::generator::CallGenerator, protocol: &Protocol) -> (Vec<u8>, u64) {
    let call = generator.next_call(crate::calls::now_ms());
    let mut bytes = Vec::new();
    let mut events = 0;
    for post in &call.posts {
        if let crate::model::Payload::Status(status) = &post.payload {
            bytes.extend(encode(protocol, status));
            events += 1;
        }
    }
    (bytes, events)
}
