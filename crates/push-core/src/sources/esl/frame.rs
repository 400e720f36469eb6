//! mod_event_socket's framing (INTEGRATIONS.md §1.2): a block of `Name: value` lines ended by
//! an empty line, then, when the block has a `Content-Length`, that many bytes of body. The
//! [`Framer`] keeps what was read and not yet framed; a block it cannot read is skipped
//! with the reason, a body over the limit is skipped unread (counted off as it arrives).

/// One message: its headers as sent, and its body (empty without `Content-Length`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `Name: value` pairs in order (names as the switch wrote them).
    pub headers: Vec<(String, String)>,
    /// The `Content-Length` bytes after the headers.
    pub body: Vec<u8>,
}

impl Frame {
    /// A header's value, its name matched without case (FreeSWITCH's case varies).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the bytes read so far give next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A whole message.
    Frame(Frame),
    /// Something that is no message, dropped; the reason is logged.
    Skipped(String),
    /// The stream cannot be framed any more (a header block with no end in sight): reset.
    Broken(String),
    /// Nothing whole yet: read more.
    More,
}

/// The longest header block: FreeSWITCH's are a few hundred bytes.
pub const MAX_HEADERS: usize = 64 * 1024;

/// Bytes read from the socket and not yet framed.
pub struct Framer {
    buf: Vec<u8>,
    /// Where the unframed bytes start in `buf` (the framed ones are dropped at the next read).
    pos: usize,
    /// Bytes of an oversized body still to be dropped as they come.
    skip: usize,
    /// The largest body taken.
    max_body: usize,
}

impl Framer {
    /// A framer taking bodies of at most `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Framer { buf: Vec::with_capacity(64 * 1024), pos: 0, skip: 0, max_body }
    }

    /// Where the next read goes.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        &mut self.buf
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// How many bytes are held, not yet framed.
    pub fn pending(&self) -> usize {
        self.unread().len()
    }

    /// Whether part of a message is held (a connection that ends now cuts it).
    pub fn partial(&self) -> bool {
        self.skip > 0 || self.unread().iter().any(|b| !b.is_ascii_whitespace())
    }

    /// The first line, if whole (AMI's banner, `Asterisk Call Manager/x.y`), without its end.
    pub fn line(&mut self) -> Option<String> {
        let end = self.unread().iter().position(|b| *b == b'\n')?;
        let line = String::from_utf8_lossy(&self.unread()[..end]).trim_end_matches('\r').to_string();
        self.pos += end + 1;
        Some(line)
    }

    /// The next message, if the bytes held make one.
    pub fn next(&mut self) -> Next {
        if self.skip > 0 {
            let n = self.skip.min(self.unread().len());
            self.pos += n;
            self.skip -= n;
            if self.skip > 0 {
                return Next::More;
            }
        }
        let start = self.unread().iter().position(|b| !matches!(b, b'\n' | b'\r')).unwrap_or(self.unread().len());
        self.pos += start;
        let Some(end) = header_end(self.unread()) else {
            if self.unread().len() > MAX_HEADERS {
                self.pos = self.buf.len();
                return Next::Broken(format!("a header block longer than {MAX_HEADERS} bytes"));
            }
            return Next::More;
        };
        let (block, after) = (end.0, end.1);
        let headers = match parse_headers(&self.unread()[..block]) {
            Ok(headers) => headers,
            Err(reason) => {
                self.pos += after;
                return Next::Skipped(reason);
            }
        };
        let frame = Frame { headers, body: Vec::new() };
        let length = match frame.header("Content-Length").map(|v| v.trim().parse::<usize>()) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                self.pos += after;
                return Next::Skipped("a Content-Length that is no number".into());
            }
        };
        if length > self.max_body {
            self.pos += after;
            self.skip = length;
            return Next::Skipped(format!("a body of {length} bytes, over the limit of {}", self.max_body));
        }
        if self.unread().len() < after + length {
            return Next::More;
        }
        let body = self.unread()[after..after + length].to_vec();
        self.pos += after + length;
        Next::Frame(Frame { body, ..frame })
    }
}

/// Where the header block ends (its length, and where the body starts): the first empty
/// line, `\n\n` (or `\r\n\r\n` from a peer that writes CRLF).
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|b| *b == b'\n').map(|i| i + from) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some((i, i + 2)),
            Some(b'\r') if i > 0 && buf[i - 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') => {
                return Some((i - 1, i + 3))
            }
            _ => from = i + 1,
        }
    }
    None
}

/// `Name: value` lines; the value is kept as written (a plain event's values are
/// percent-encoded: [`plain_fields`] decodes them).
pub fn parse_headers(block: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(block).map_err(|_| "a header block that is not UTF-8".to_string())?;
    let mut headers = Vec::new();
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            let shown: String = line.chars().take(40).collect();
            return Err(format!("a header line without ':' ({shown:?})"));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("a header name that is no name ({name:?})"));
        }
        headers.push((name.to_string(), value.trim_start().to_string()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framer(bytes: &[u8]) -> Framer {
        let mut f = Framer::new(100);
        f.buffer().extend_from_slice(bytes);
        f
    }

    #[test]
    fn a_body_is_framed_by_its_content_length_and_a_cut_one_waits() {
        let mut f = framer(b"Content-Type: text/event-json\nContent-Length: 2\n\n{}Content-Type: auth/request\n\n");
        let Next::Frame(first) = f.next() else { panic!("a frame") };
        assert_eq!((first.header("content-type"), first.body.as_slice()), (Some("text/event-json"), &b"{}"[..]));
        assert!(matches!(f.next(), Next::Frame(ref g) if g.header("Content-Type") == Some("auth/request")));
        let mut cut = framer(b"Content-Length: 5\n\n{\"a\"");
        assert_eq!(cut.next(), Next::More);
        assert!(cut.partial());
    }

    #[test]
    fn garbage_and_oversized_bodies_are_skipped_and_the_next_message_read() {
        let mut f = framer(b"\x01\x02garbage\n\nContent-Length: 300\n\n");
        assert!(matches!(f.next(), Next::Skipped(r) if r.contains("without ':'")));
        assert!(matches!(f.next(), Next::Skipped(r) if r.contains("300 bytes")));
        f.buffer().extend_from_slice(&[b'x'; 300]);
        f.buffer().extend_from_slice(b"Content-Type: text/disconnect-notice\n\n");
        assert!(matches!(f.next(), Next::Frame(g) if g.header("Content-Type") == Some("text/disconnect-notice")));
        let mut endless = framer(&[b'a'; MAX_HEADERS + 1]);
        assert!(matches!(endless.next(), Next::Broken(_)));
    }
}
