//! FreeSWITCH mod_cti's Redis list item of a leg: the leg's channel variables as one JSON
//! object (what `cti.json`'s `fields` list copies), with `originator` empty on the a-leg and
//! naming the a-leg's uuid on the b-leg, as mod_cti pairs legs.

use serde_json::Value;

use super::freeswitch;
use crate::model::{Cdr, Party};

/// The item LPUSHed for `cdr`.
pub fn item(cdr: &Cdr) -> Value {
    let mut vars = freeswitch::variables(cdr);
    let originator = if cdr.party == Some(Party::Callee) { cdr.common.call_id.clone() } else { String::new() };
    vars.insert("originator".into(), originator.into());
    Value::Object(vars)
}
