//! A leg's CDR as Asterisk's cdr_csv writes it to `Master.csv` (`cdr/cdr_csv.c`,
//! `build_csv_record`) with `loguniqueid`, `loguserfield` and `newcdrcolumns` on: 21 columns
//! (accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, start,
//! answer, end, duration, billsec, disposition, amaflags, uniqueid, userfield, peeraccount,
//! linkedid, sequence); strings double-quoted with quotes doubled, duration, billsec and
//! sequence bare integers, times `%Y-%m-%d %H:%M:%S` in UTC (`usegmtime=yes`), an unanswered
//! leg's answer empty.
//!
//! The call's channels share `linkedid` = the generated callId; the caller's channel (the
//! first) has uniqueid = linkedid, the callee's leg of a callback [`super::b_leg_id`].
//! Asterisk's disposition (`main/cdr.c`): a caller who gave up is NO ANSWER, a 603 Decline is
//! BUSY (chan_pjsip maps it to cause 17), failures FAILED.

use super::{b_leg_id, utc_seconds};
use crate::model::{Cdr, Disposition, Party};

/// `ast_cdr_disp2str` of the leg's outcome.
pub fn disposition(cdr: &Cdr) -> &'static str {
    match cdr.release.disposition {
        Disposition::Answered => "ANSWERED",
        Disposition::NoAnswer | Disposition::Cancelled => "NO ANSWER",
        Disposition::Busy => "BUSY",
        Disposition::Failed => "FAILED",
    }
}

/// The channel's uniqueid: the linkedid (callId) on the caller's channel.
pub fn uniqueid(cdr: &Cdr) -> String {
    match cdr.party {
        Some(Party::Callee) => b_leg_id(&cdr.common.call_id),
        _ => cdr.common.call_id.clone(),
    }
}

/// A CSV string field as cdr_csv writes it: in double quotes, a quote doubled.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// The `Master.csv` line of the leg, with its newline.
pub fn line(cdr: &Cdr, sequence: u64) -> String {
    let answered = cdr.release.disposition == Disposition::Answered;
    let start_s = cdr.begin_call_time.div_euclid(1000);
    let end_s = cdr.end_time.div_euclid(1000);
    let billsec = if answered { end_s - cdr.start_time.div_euclid(1000) } else { 0 };
    let (src, dst) = (&cdr.caller_number, &cdr.callee_number);
    let strings = [
        cdr.common.account_id.clone().unwrap_or_default(),
        src.clone(),
        dst.clone(),
        "from-trunk".into(),
        format!("\"{src}\" <{src}>"),
        format!("PJSIP/trunk-{:08x}", sequence * 2),
        format!("PJSIP/carrier-{:08x}", sequence * 2 + 1),
        "Dial".into(),
        format!("PJSIP/{dst}@carrier,60"),
        utc_seconds(cdr.begin_call_time),
        if answered { utc_seconds(cdr.start_time) } else { String::new() },
        utc_seconds(cdr.end_time),
    ];
    let mut fields: Vec<String> = strings.iter().map(|s| quoted(s)).collect();
    fields.push((end_s - start_s).to_string());
    fields.push(billsec.to_string());
    fields.push(quoted(disposition(cdr)));
    fields.push(quoted("DOCUMENTATION"));
    fields.push(quoted(&uniqueid(cdr)));
    fields.push(quoted(""));
    fields.push(quoted(""));
    fields.push(quoted(&cdr.common.call_id));
    fields.push(sequence.to_string());
    let mut line = fields.join(",");
    line.push('\n');
    line
}
