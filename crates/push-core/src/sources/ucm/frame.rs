//! Where one UCM record ends in the bytes of a TCP connection. The UCM usually sends one
//! record and closes; a connection may also carry several (one JSON value after another, or
//! one CSV row per line), so records are cut as soon as they are whole and stored without
//! waiting for the end of the connection.

use serde::de::IgnoredAny;

/// Bytes that surround records: whitespace, and the NUL some firmware ends a record with.
fn is_filler(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0
}

/// Takes every whole record off the front of `buf`, as text without the filler around it
/// (a row's line end). `at_end`: nothing more will
/// come (the peer closed, or went idle), so what is left is the last record, whole or not.
pub fn take_records(buf: &mut Vec<u8>, at_end: bool) -> Vec<String> {
    let mut records = Vec::new();
    let mut from = 0;
    loop {
        while buf.get(from).copied().is_some_and(is_filler) {
            from += 1;
        }
        let rest = &buf[from..];
        let Some(&first) = rest.first() else { break };
        let len = match first {
            b'{' | b'[' => json_len(rest, at_end),
            // XML is refused whole: all of it is one record, at the end of the connection.
            b'<' => at_end.then_some(rest.len()),
            _ => line_len(rest, at_end),
        };
        let Some(len) = len else { break };
        let mut record = &rest[..len];
        while let [body @ .., last] = record {
            if !is_filler(*last) {
                break;
            }
            record = body;
        }
        records.push(String::from_utf8_lossy(record).into_owned());
        from += len;
    }
    buf.drain(..from);
    records
}

/// The length of the JSON value at the front of `bytes`, if it is whole. Broken JSON ends at
/// the end of its line (its record is then refused with the parser's reason).
fn json_len(bytes: &[u8], at_end: bool) -> Option<usize> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<IgnoredAny>();
    match values.next() {
        Some(Ok(_)) => Some(values.byte_offset()),
        Some(Err(e)) if e.is_eof() => at_end.then_some(bytes.len()),
        _ => line_len(bytes, at_end),
    }
}

/// The length of the line at the front of `bytes` with its newline, if it is whole.
fn line_len(bytes: &[u8], at_end: bool) -> Option<usize> {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => Some(i + 1),
        None => at_end.then_some(bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(bytes: &[u8], at_end: bool) -> (Vec<String>, Vec<u8>) {
        let mut buf = bytes.to_vec();
        let records = take_records(&mut buf, at_end);
        (records, buf)
    }

    #[test]
    fn json_values_are_cut_as_soon_as_they_are_whole() {
        let (records, left) = take(b"{\"a\":\"1\"}{\"a\":\"2\"}\n [{\"a\":\"3\"}] {\"a\":", false);
        assert_eq!(records, ["{\"a\":\"1\"}", "{\"a\":\"2\"}", "[{\"a\":\"3\"}]"]);
        assert_eq!(left, b"{\"a\":", "the unfinished value waits for more");
        let (records, left) = take(b"{\"a\":", true);
        assert_eq!((records, left), (vec!["{\"a\":".to_string()], vec![]), "at the end it is a (broken) record");
    }

    #[test]
    fn csv_rows_end_with_their_line_or_the_connection() {
        let (records, left) = take(b"'1','a'\r\n'2','b'\n'3',", false);
        assert_eq!(records, ["'1','a'", "'2','b'"]);
        assert_eq!(left, b"'3',");
        let (records, _) = take(b"'3','c'\0", true);
        assert_eq!(records, ["'3','c'"], "a trailing NUL is filler");
    }

    #[test]
    fn broken_json_ends_at_its_line_and_xml_at_the_end() {
        let (records, _) = take(b"{nope}\n{\"a\":\"1\"}", false);
        assert_eq!(records, ["{nope}", "{\"a\":\"1\"}"]);
        assert_eq!(take(b"<cdr>\n</cdr>", false).0.len(), 0);
        assert_eq!(take(b"<cdr>\n</cdr>", true).0, ["<cdr>\n</cdr>"]);
    }
}
