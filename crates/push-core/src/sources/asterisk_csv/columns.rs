//! Which column of an Asterisk CSV line is which CDR variable. cdr_csv's `Master.csv` has 16
//! to 21 columns depending on `cdr.conf` (`loguniqueid`, `loguserfield`, `newcdrcolumns`:
//! `cdr/cdr_csv.c` `build_csv_record`); cdr_custom's legacy mapping starts with clid
//! (`configs/samples/cdr_custom.conf.sample`); any other `cdr_custom.conf` mapping is a list
//! of `${CDR(name)}` names the operator configures.

use crate::config::{CsvColumns, CsvLayout};

/// cdr_csv's columns that are always there, in order.
const CDR_CSV: [&str; 16] = [
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
];

/// cdr_csv's `newcdrcolumns=yes` columns, after uniqueid and userfield.
const NEW_COLUMNS: [&str; 3] = ["peeraccount", "linkedid", "sequence"];

/// cdr_custom's legacy mapping (the sample's `Master.csv => ...` line), sequence last.
const CDR_CUSTOM: [&str; 19] = [
    "clid",
    "src",
    "dst",
    "dcontext",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "accountcode",
    "uniqueid",
    "userfield",
    "sequence",
];

/// How a file's columns are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cdr_csv: the width says which optional columns are there.
    CdrCsv,
    /// cdr_custom's legacy mapping, with or without sequence (19 or 18 columns).
    CdrCustom,
    /// Explicit names, one per column.
    List(Vec<String>),
}

impl Layout {
    /// The layout `columns:` configures; a listed name is read as cdr_custom writes it
    /// (`${CDR(start)}`, `start(int64)` and `START` are all `start`).
    pub fn new(columns: &CsvColumns) -> Layout {
        match columns {
            CsvColumns::Named(CsvLayout::CdrCsv) => Layout::CdrCsv,
            CsvColumns::Named(CsvLayout::CdrCustom) => Layout::CdrCustom,
            CsvColumns::List(names) => Layout::List(names.iter().map(|n| normalize(n)).collect()),
        }
    }

    /// The name of each of `values`, or why this line does not fit the layout.
    pub fn names(&self, values: &[String]) -> Result<Vec<String>, String> {
        let names: Vec<&str> = match self {
            Layout::CdrCsv => cdr_csv_names(values)?,
            Layout::CdrCustom => match values.len() {
                18 | 19 => CDR_CUSTOM[..values.len()].to_vec(),
                n => return Err(format!("{n} columns; cdr_custom's legacy mapping has 18 or 19")),
            },
            Layout::List(names) if names.len() == values.len() => names.iter().map(String::as_str).collect(),
            Layout::List(names) => {
                return Err(format!("{} columns; `columns` lists {}", values.len(), names.len()));
            }
        };
        Ok(names.into_iter().map(str::to_string).collect())
    }
}

/// cdr_csv's names for a line of this width. 17 and 20 columns are ambiguous (uniqueid or
/// userfield alone): a value shaped like a uniqueid (`1498555635.0`, or with a `systemname-`
/// prefix) is one.
fn cdr_csv_names(values: &[String]) -> Result<Vec<&'static str>, String> {
    let mut names = CDR_CSV.to_vec();
    match values.len() {
        16 => {}
        17 | 20 if looks_like_uniqueid(&values[16]) => names.push("uniqueid"),
        17 | 20 => names.push("userfield"),
        18 | 21 => names.extend(["uniqueid", "userfield"]),
        19 => {}
        n => return Err(format!("{n} columns; cdr_csv writes 16 to 21")),
    }
    if values.len() >= 19 {
        names.extend(NEW_COLUMNS);
    }
    Ok(names)
}

/// `1498555635.0` or `pbx1-1498555635.0`: seconds, a dot, a counter.
fn looks_like_uniqueid(value: &str) -> bool {
    let id = value.rsplit_once('-').map_or(value, |(_, id)| id);
    let Some((secs, counter)) = id.split_once('.') else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(secs) && digits(counter)
}

/// `${CDR(start)}` / `start(int64)` / ` Start ` → `start`.
fn normalize(name: &str) -> String {
    let mut n = name.trim();
    if let Some(inner) = n.strip_prefix("${CDR(").and_then(|s| s.strip_suffix(")}")) {
        n = inner;
    }
    let n = n.split_once('(').map_or(n, |(base, _)| base);
    let n = n.split_once(',').map_or(n, |(base, _)| base);
    n.trim().to_ascii_lowercase()
}

/// `--columns` of the import command: `cdr_csv`, `cdr_custom`, or names comma-separated.
pub fn columns_from_flag(flag: &str) -> CsvColumns {
    match flag.trim() {
        "cdr_csv" => CsvColumns::Named(CsvLayout::CdrCsv),
        "cdr_custom" => CsvColumns::Named(CsvLayout::CdrCustom),
        list => CsvColumns::List(list.split(',').map(|n| n.trim().to_string()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn width(n: usize, col16: &str) -> Vec<String> {
        let mut v = vec![String::new(); n];
        if n > 16 {
            v[16] = col16.into();
        }
        v
    }

    #[test]
    fn cdr_csv_widths_follow_cdr_conf() {
        let names = |n, c| Layout::CdrCsv.names(&width(n, c)).unwrap();
        assert_eq!(names(16, "").len(), 16);
        assert_eq!(names(17, "1498555635.0")[16], "uniqueid", "loguniqueid only");
        assert_eq!(names(17, "vip")[16], "userfield", "loguserfield only");
        assert_eq!(names(18, "")[16..], ["uniqueid", "userfield"]);
        assert_eq!(names(19, "")[16..], ["peeraccount", "linkedid", "sequence"], "newcdrcolumns only");
        assert_eq!(names(20, "pbx1-1498555635.7")[16], "uniqueid");
        assert_eq!(names(21, "")[16..], ["uniqueid", "userfield", "peeraccount", "linkedid", "sequence"]);
        assert!(Layout::CdrCsv.names(&width(15, "")).unwrap_err().contains("15 columns"));
        assert!(Layout::CdrCsv.names(&width(22, "")).is_err());
    }

    #[test]
    fn listed_names_are_read_as_cdr_custom_writes_them() {
        let layout = Layout::new(&columns_from_flag("${CDR(src)}, DST,start(int64),billsec(f),ds_type(uservar)"));
        assert_eq!(
            layout,
            Layout::List(vec!["src".into(), "dst".into(), "start".into(), "billsec".into(), "ds_type".into()])
        );
        assert!(layout.names(&width(4, "")).unwrap_err().contains("lists 5"));
        assert_eq!(Layout::CdrCustom.names(&width(18, "")).unwrap().last().unwrap(), "userfield");
        assert_eq!(Layout::CdrCustom.names(&width(19, "")).unwrap()[0], "clid");
    }
}
