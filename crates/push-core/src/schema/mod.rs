//! Payload schemas and validation of SPEC §2: pure, knows nothing of HTTP, SQL or retries.
//!
//! Validation works on the raw JSON so that one request gets *every* violated rule back, with
//! the field and the rule named, instead of the first serde error. A valid event comes out as
//! a [`ValidEvent`]: its routing facts plus the normalized body that subscribers receive
//! (fields in the SPEC's order, `null` optionals dropped, everything else byte-for-byte as
//! sent).
//!
//! Ingest validates the request bytes directly ([`validate_bytes_with`]): one field value at a
//! time, never a JSON tree of the whole batch. The `&Value` entry points judge an object the
//! same way, through the same checks.

mod check;
mod event;
mod fields;
mod members;
mod plain;
mod read;
pub mod rules;

use serde::Serialize;
use serde_json::Value;

use self::members::Members;
pub use self::{
    event::{StoredEvent, ValidEvent},
    fields::{FieldSpec, Need},
};
use crate::config::Service;

/// Most items one ingest request may carry.
pub const MAX_BATCH: usize = 1000;

/// One violated rule, as the API reports it in `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Position of the item in the request (0 for a single object).
    pub index: usize,
    /// The field at fault; empty when the item as a whole is wrong.
    pub field: String,
    /// The rule, as a sentence.
    pub message: String,
}

impl FieldError {
    fn new(index: usize, field: &str, message: impl Into<String>) -> Self {
        FieldError { index, field: field.to_string(), message: message.into() }
    }
}

/// Why a request body was refused: not JSON at all (400), or JSON that breaks rules (422).
#[derive(Debug)]
pub enum BodyError {
    /// The body is not valid JSON; the message is serde_json's, as `from_slice::<Value>` gives it.
    Malformed(serde_json::Error),
    /// Every violated rule, in the order of the items and, within one, of the checks.
    Invalid(Vec<FieldError>),
}

/// Validates a request body given as its bytes, the way ingest receives it: one object or an
/// array of 1..=[`MAX_BATCH`] objects, all valid, each turned into `T` as soon as it is
/// validated. It answers what `serde_json::from_slice` followed by [`validate_body_with`]
/// answers, without building the JSON tree of the body, with two differences that make it
/// safer: serde_json's private raw-value marker is an ordinary object name here (serde_json's
/// `Value` would read such an object as the text it holds), and `extra` is pushed as the JSON
/// text that was sent, its nesting judged on that text.
pub fn validate_bytes_with<T>(
    service: Service,
    bytes: &[u8],
    convert: impl FnMut(ValidEvent) -> T,
) -> Result<Vec<T>, BodyError> {
    read::read(Batch::new(service, convert), bytes)
}

/// Validates a request body: one object or an array of 1..=[`MAX_BATCH`] objects, all valid.
pub fn validate_body(service: Service, body: &Value) -> Result<Vec<ValidEvent>, Vec<FieldError>> {
    validate_body_with(service, body, |event| event)
}

/// Like [`validate_body`], but turns each valid event into `T` as soon as it is validated
/// (as ingest does through [`validate_bytes_with`], which answers the same for the same JSON).
pub fn validate_body_with<T>(
    service: Service,
    body: &Value,
    convert: impl FnMut(ValidEvent) -> T,
) -> Result<Vec<T>, Vec<FieldError>> {
    let items: Vec<&Value> = match body {
        Value::Array(items) => {
            batch_size(items.len())?;
            items.iter().collect()
        }
        other => vec![other],
    };
    let mut batch = Batch::new(service, convert);
    batch.valid.reserve_exact(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match item.as_object() {
            Some(object) => batch.object(index, &Members::from_map(object)),
            None => batch.not_object(index),
        }
    }
    batch.finish()
}

/// Validates one event object against the rules of `service`'s payload.
pub fn validate_event(service: Service, index: usize, value: &Value) -> Result<ValidEvent, Vec<FieldError>> {
    match value.as_object() {
        Some(object) => check::object(service, index, &Members::from_map(object), &mut String::new()),
        None => Err(vec![not_an_object(index)]),
    }
}

/// Refuses an array with no item or more than [`MAX_BATCH`].
fn batch_size(len: usize) -> Result<(), Vec<FieldError>> {
    if len == 0 || len > MAX_BATCH {
        let msg = format!("an array must hold 1 to {MAX_BATCH} items (got {len})");
        return Err(vec![FieldError::new(0, "", msg)]);
    }
    Ok(())
}

fn not_an_object(index: usize) -> FieldError {
    FieldError::new(index, "", "must be a JSON object")
}

/// The items of one request as they are judged, in order: every error is kept, and valid
/// events are converted only while no item has failed (a batch is all or nothing).
struct Batch<T, F> {
    service: Service,
    convert: F,
    valid: Vec<T>,
    errors: Vec<FieldError>,
    scratch: String,
}

impl<T, F: FnMut(ValidEvent) -> T> Batch<T, F> {
    fn new(service: Service, convert: F) -> Self {
        Batch { service, convert, valid: Vec::new(), errors: Vec::new(), scratch: String::new() }
    }

    /// Judges the object at `index`.
    fn object(&mut self, index: usize, members: &Members<'_>) {
        match check::object(self.service, index, members, &mut self.scratch) {
            Ok(event) if self.errors.is_empty() => self.valid.push((self.convert)(event)),
            Ok(_) => {}
            Err(mut errs) => self.errors.append(&mut errs),
        }
    }

    /// Refuses the item at `index`, which is not an object.
    fn not_object(&mut self, index: usize) {
        self.errors.push(not_an_object(index));
    }

    fn finish(self) -> Result<Vec<T>, Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(self.valid)
        } else {
            Err(self.errors)
        }
    }
}

#[cfg(test)]
mod bytes_tests;
#[cfg(test)]
mod tests;
