//! The rules of one event object, judged on its members: unknown fields, each field's own
//! rule and presence, then the rules across fields.

use serde_json::Value;

use super::{
    event::ValidEvent,
    fields::{self, FieldSpec, Need, View},
    members::{Members, EXTRA},
    FieldError,
};
use crate::config::Service;

/// Judges one object against `service`'s field table; every violated rule is reported.
/// `scratch` is a buffer the body of a valid event is written in (see [`ValidEvent::build`]).
pub(super) fn object(
    service: Service,
    index: usize,
    members: &Members<'_>,
    scratch: &mut String,
) -> Result<ValidEvent, Vec<FieldError>> {
    let (specs, tags) = (fields::specs(service), fields::tags_of(service));
    let mut values = [None; fields::MAX_FIELDS];
    let mut known = 0;
    for (tag, name, value) in members.iter() {
        // The tags of a table are distinct: a member is its field, or no field at all.
        if let Some(at) = tags.iter().position(|t| *t == tag).filter(|at| specs[*at].name == name) {
            values[at] = Some(value).filter(|v| !v.is_null());
            known += 1;
        }
    }
    let mut errors = Vec::new();
    let raw_extra = members.raw_extra();
    for (spec, value) in specs.iter().zip(values) {
        let raw = raw_extra.filter(|_| spec.name == EXTRA && value.is_some());
        let own = field(spec, value).and_then(|()| raw.map_or(Ok(()), |raw| spec.rule.check_depth(raw.depth)));
        if let Err(msg) = own {
            errors.push(FieldError::new(index, spec.name, msg));
        }
    }
    if known < members.len() {
        // Unknown names come first, in the order they were sent.
        let mut unknown = unknown_fields(index, members, specs);
        unknown.append(&mut errors);
        errors = unknown;
    }
    across_fields(service, index, &values, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let raw_extra = raw_extra.map(|raw| raw.text);
    Ok(ValidEvent::build(View::new(service, &values, &[]), raw_extra, scratch))
}

/// The presence rule and the own rule of one field (`value` is `None` when absent or null).
fn field(spec: &FieldSpec, value: Option<&Value>) -> Result<(), String> {
    match value {
        None if spec.need == Need::Required => Err("is required".into()),
        None => Ok(()),
        Some(_) if spec.need == Need::OutputOnly => Err("is output only; the pusher assigns it".into()),
        Some(v) => spec.rule.check(v),
    }
}

/// Rules across fields are reported along with the rules of single fields (SPEC §3: every
/// violated rule), judged on the fields that passed their own rule, never twice per field.
fn across_fields(service: Service, index: usize, values: &[Option<&Value>], errors: &mut Vec<FieldError>) {
    if errors.is_empty() {
        fields::cross_check(service, index, View::new(service, values, &[]), errors);
        return;
    }
    let failed: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
    let key_failed = |f: &String| f == "serviceType" || (service == Service::Status && f == "status");
    if !failed.iter().any(key_failed) {
        let mut cross = Vec::new();
        fields::cross_check(service, index, View::new(service, values, &failed), &mut cross);
        errors.extend(cross.into_iter().filter(|e| !failed.contains(&e.field)));
    }
}

fn unknown_fields(index: usize, members: &Members<'_>, specs: &[FieldSpec]) -> Vec<FieldError> {
    members
        .names()
        .filter(|name| !specs.iter().any(|s| s.name == *name))
        .map(|name| {
            let hint = specs.iter().find(|s| s.name.eq_ignore_ascii_case(name));
            let msg = match hint {
                Some(s) => format!("is not a known field; did you mean `{}`?", s.name),
                None => "is not a known field".to_string(),
            };
            FieldError::new(index, name, msg)
        })
        .collect()
}
