//! A leg's CDR as a Grandstream UCM's "CDR Real-time Output" sends it in JSON: one flat
//! object, every value a string (as `fixtures/ucm_cdr_sample.txt`), times local to the UCM
//! (`YYYY-MM-DD HH:MM:SS`, written here in UTC), disposition ANSWERED / NO ANSWER / BUSY /
//! FAILED. As in the sample, an unanswered record's `answer` is its `end`.
//!
//! Ids are the UCM's own: `AcctId` its CDR row counter and `uniqueid` the channel's
//! (`<start seconds>.<counter>`), both numbered from the leg's [`LegNumber`]; the legs of a
//! call share `session`. The source derives the CDR's `callId` from them.

use serde_json::{json, Value};

use super::{asterisk, utc_seconds, LegNumber};
use crate::model::{Cdr, Direction, Disposition};

/// The record of the leg.
pub fn record(cdr: &Cdr, number: LegNumber) -> Value {
    let answered = cdr.release.disposition == Disposition::Answered;
    let serial = number.serial();
    let (src, dst) = (&cdr.caller_number, &cdr.callee_number);
    let start = utc_seconds(cdr.begin_call_time);
    let end = utc_seconds(cdr.end_time);
    let answer = if answered { utc_seconds(cdr.start_time) } else { end.clone() };
    let duration = (cdr.end_time.div_euclid(1000) - cdr.begin_call_time.div_euclid(1000)).to_string();
    let billsec = if answered { cdr.end_time.div_euclid(1000) - cdr.start_time.div_euclid(1000) } else { 0 };
    let userfield = match cdr.direction {
        Some(Direction::Outbound) => "Outbound",
        _ => "Inbound",
    };
    let mut record = json!({
        "AcctId": serial.to_string(),
        "src": src,
        "dst": dst,
        "dcontext": "from-internal",
        "clid": format!("\"{src}\" <{src}>"),
        "channel": format!("PJSIP/trunk_1-{:08x}", serial),
        "dstchannel": format!("PJSIP/{dst}-{:08x}", serial),
        "lastapp": "Dial",
        "lastdata": format!("PJSIP/{dst},60,i"),
        "start": start,
        "answer": answer,
        "end": end,
        "duration": duration,
        "billsec": billsec.to_string(),
        "disposition": asterisk::disposition(cdr),
        "amaflags": "DOCUMENTATION",
        "uniqueid": format!("{}.{serial}", cdr.begin_call_time.div_euclid(1000)),
        "userfield": userfield,
        "channel_ext": "trunk_1",
        "dstchannel_ext": dst,
        "service": "s",
        "caller_name": src,
        "session": format!("{:016}-{}", number.call, cdr.common.call_id),
        "action_owner": src,
        "action_type": "DIAL",
        "src_trunk_name": "carrier",
        "dst_trunk_name": "",
        "new_src": src,
        "reason": "",
        "sn": "CALLSIM0001",
    });
    if let Some(account) = &cdr.common.account_id {
        record["accountcode"] = json!(account);
    }
    record
}
