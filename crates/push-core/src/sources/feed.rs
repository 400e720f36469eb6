//! The path every CDR source shares after parsing: validate each mapped record as a SPEC §2.1
//! CDR, store the valid ones through the intake, and either refuse the rest (a source that
//! answers its peer: HTTP) or set them aside with the reason (a source that cannot: a file,
//! a list), in the same transaction as the records stored and the source's position.
//! Whatever happens is counted on the source's handle and in `/metrics`; a record refused or
//! set aside gets one log line.

use std::sync::Arc;

use serde_json::Value;

use super::registry::SourceHandle;
use crate::{
    config::Service,
    intake::{Intake, IntakeError},
    outbox::{Accepted, IngestItem, NewReject, SourceMark, SourceNotes},
    schema,
};

/// One native record after its source mapped it: the CDRs it gives (one per leg it
/// describes, usually one), or why it gives none.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The record as received, kept with a reject.
    pub raw: String,
    /// Canonical CDR objects, or the reason it could not be mapped.
    pub cdrs: Result<Vec<Value>, String>,
    /// The record's own identity in the switch (a leg uuid; a CSV line's uniqueid and
    /// sequence), when the switch may write several records for one callId and party: each is
    /// then a CDR of its own, and only the same record sent again is a duplicate. `None`: the
    /// CDR's (callId, party) is the record's identity (SPEC §3).
    pub key: Option<String>,
}

impl Mapped {
    /// A record identified by its CDR's (callId, party) alone.
    pub fn new(raw: impl Into<String>, cdrs: Result<Vec<Value>, String>) -> Self {
        Mapped { raw: raw.into(), cdrs, key: None }
    }

    /// A record with an identity of its own in the switch (see [`Mapped::key`]).
    pub fn keyed(raw: impl Into<String>, cdrs: Result<Vec<Value>, String>, key: Option<String>) -> Self {
        Mapped { raw: raw.into(), cdrs, key }
    }
}

/// Parses one raw record of a source; used again when an operator re-drives a reject.
pub type Parser = Arc<dyn Fn(&str) -> Mapped + Send + Sync>;

/// Why a source's peer is told no.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A record could not be mapped or is not a valid CDR; nothing was stored.
    #[error("{0}")]
    Rejected(String),
    /// The outbox could not store them.
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// The body is larger than `ingest.max_body_bytes` (413, like `POST /v1/cdrs`).
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body could not be read as HTTP framed it (400).
    #[error("the body could not be read: {0}")]
    Unreadable(String),
}

/// The body of a source endpoint's request, at most `limit` bytes (`ingest.max_body_bytes`):
/// refused before reading when its `Content-Length` says it is larger.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, FeedError> {
    use http_body_util::BodyExt as _;
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(FeedError::TooLarge(limit));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(FeedError::TooLarge(limit)),
        Err(e) => Err(FeedError::Unreadable(e.to_string())),
    }
}

/// What [`Feed::take_or_set_aside`] did.
#[derive(Debug, Default)]
pub struct Taken {
    /// One per CDR stored (or recognized as a duplicate), in order.
    pub accepted: Vec<Accepted>,
    /// Records set aside.
    pub rejected: usize,
}

/// One source's way into the intake.
#[derive(Clone)]
pub struct Feed {
    intake: Intake,
    handle: SourceHandle,
    /// What its records are: CDRs (SPEC §2.1), or status events (§2.2) from a switch's
    /// real-time interface.
    service: Service,
}

impl Feed {
    /// The feed of the source `handle` describes.
    pub fn new(intake: Intake, handle: SourceHandle) -> Self {
        Feed { intake, handle, service: Service::Cdr }
    }

    /// The feed of a source of status events (an event socket): its records are validated
    /// as SPEC §2.2 statuses, and a status after its call's HANGUP is set aside, not stored.
    pub fn statuses(intake: Intake, handle: SourceHandle) -> Self {
        Feed { intake, handle, service: Service::Status }
    }

    /// The source's handle.
    pub fn handle(&self) -> &SourceHandle {
        &self.handle
    }

    /// The intake the records go to.
    pub fn intake(&self) -> &Intake {
        &self.intake
    }

    /// For a source that answers its peer: stores every record, or none if one of them is
    /// invalid (its reason is the error; the peer keeps the record and may send it again).
    pub async fn take_or_refuse(&self, records: Vec<Mapped>) -> Result<Vec<Accepted>, FeedError> {
        let mut items = Vec::new();
        for record in &records {
            match self.validate(record) {
                Ok(mut valid) => items.append(&mut valid),
                Err(reason) => {
                    self.handle.count(0, 0, 1);
                    tracing::warn!(source = %self.handle.name(), %reason, "record refused");
                    return Err(FeedError::Rejected(reason));
                }
            }
        }
        self.store(items, SourceNotes::default(), 0).await.map_err(FeedError::from)
    }

    /// For a source that cannot answer: stores the valid records and sets the others aside
    /// with their reasons, with the source's new position (`mark`), all in one transaction.
    pub async fn take_or_set_aside(&self, records: Vec<Mapped>, mark: Option<String>) -> Result<Taken, IntakeError> {
        let mut items = Vec::new();
        let mut origins = Vec::new();
        let mut notes = SourceNotes::default();
        for (at, record) in records.iter().enumerate() {
            match self.validate(record) {
                Ok(valid) => {
                    origins.extend(std::iter::repeat_n(at, valid.len()));
                    items.extend(valid);
                }
                Err(reason) => self.set_aside(&mut notes, record, reason),
            }
        }
        notes.mark = mark.map(|mark| SourceMark { source: self.handle.name().to_string(), mark });
        if self.service == Service::Cdr {
            let rejected = notes.rejects.len();
            return Ok(Taken { accepted: self.store(items, notes, rejected as u64).await?, rejected });
        }
        loop {
            let rejected = notes.rejects.len();
            match self.store(items.clone(), notes.clone(), rejected as u64).await {
                Ok(accepted) => return Ok(Taken { accepted, rejected }),
                // A status after its call's HANGUP (SPEC §3): that record is set aside and
                // the others are stored (a CDR source never meets this).
                Err(IntakeError::AfterHangup { index, call_id }) if index < items.len() => {
                    let at = origins[index];
                    let keep: Vec<bool> = origins.iter().map(|o| *o != at).collect();
                    let mut k = keep.iter();
                    items.retain(|_| *k.next().expect("one flag per item"));
                    origins.retain(|o| *o != at);
                    let reason = format!("call {call_id} has already hung up");
                    self.set_aside(&mut notes, &records[at], reason);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn set_aside(&self, notes: &mut SourceNotes, record: &Mapped, reason: String) {
        tracing::warn!(source = %self.handle.name(), %reason, "record set aside");
        let source = self.handle.name().to_string();
        notes.rejects.push(NewReject { source, reason, raw: record.raw.clone() });
    }

    /// Re-drives reject `id` (its record parsed again by `parse`): stored and the reject
    /// removed together, or refused with the reason it still has.
    pub async fn redrive(&self, id: i64, record: Mapped) -> Result<Vec<Accepted>, FeedError> {
        let items = self.validate(&record).map_err(FeedError::Rejected)?;
        let notes = SourceNotes { resolved: vec![id], ..SourceNotes::default() };
        Ok(self.store(items, notes, 0).await?)
    }

    /// The item of each CDR of a record, or the reason it is refused.
    fn validate(&self, record: &Mapped) -> Result<Vec<IngestItem>, String> {
        let cdrs = record.cdrs.clone()?;
        if cdrs.is_empty() {
            return Err("the record gives no event".into());
        }
        let several = cdrs.len() > 1;
        let mut events = schema::validate_body(self.service, &Value::Array(cdrs)).map_err(|errors| reason(&errors))?;
        if let Some(key) = &record.key {
            for (i, event) in events.iter_mut().enumerate() {
                event.identify_record(if several { format!("{key}#{i}") } else { key.clone() });
            }
        }
        Ok(events.into_iter().map(|e| self.intake.item(e)).collect())
    }

    async fn store(
        &self,
        items: Vec<IngestItem>,
        notes: SourceNotes,
        rejected: u64,
    ) -> Result<Vec<Accepted>, IntakeError> {
        let accepted = self.intake.accept_noted(items, notes).await?;
        let duplicates = accepted.iter().filter(|a| a.duplicate).count() as u64;
        self.handle.count(accepted.len() as u64 - duplicates, duplicates, rejected);
        Ok(accepted)
    }
}

/// Validation errors as one line: `field: rule; field: rule`.
pub fn reason(errors: &[schema::FieldError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| if e.field.is_empty() { e.message.clone() } else { format!("{}: {}", e.field, e.message) })
        .collect();
    parts.join("; ")
}
