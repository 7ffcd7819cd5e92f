//! A read-side scanner of HTTP/1 request framing, because hyper hides
//! request smuggling attempts: given both `Content-Length` and
//! `Transfer-Encoding` it silently drops the length and uses chunked, so the
//! service cannot tell. The scanner follows the framing exactly the way
//! hyper 1.x parses it (httparse heads with CRLF or bare-LF line ends and
//! leading empty lines; `Content-Length` as digits only, repeated values
//! equal; chunked bodies byte by byte like hyper's decoder: size, optional
//! whitespace, extensions, CRLF, data, CRLF, trailers up to an empty CRLF
//! line) and records the index of every request head that carried both.
//! It also records request lines whose target has a `#fragment`, which the
//! `http` crate drops silently.
//!
//! The scanner never silently stops: a head that may switch protocols
//! (`Upgrade`, `CONNECT`) pauses it ([`Scanner::switching`]), and anything it
//! cannot follow marks it lost ([`Scanner::lost`]). The pipeline closes the
//! connection after any response to such a request unless it is a 101 (the
//! only case where the connection really stops being HTTP/1), and refuses a
//! request whose head the scanner did not see ([`Scanner::heads`]), so the
//! scanner and hyper can never disagree about where a request starts.

#![forbid(unsafe_code)]

/// Largest head the scanner buffers before giving up (hyper's own limit
/// answers such requests with 431 first).
const MAX_HEAD: usize = 512 * 1024;

/// Something hyper hides that the scanner saw in a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// Both `Content-Length` and `Transfer-Encoding` (request smuggling).
    ContentLengthWithTransferEncoding,
    /// A `#` in the request-target.
    Fragment,
    /// `OPTIONS` with an absolute-form target whose path is empty
    /// (`OPTIONS http://host HTTP/1.1`): the server-wide OPTIONS of RFC 9112
    /// §3.2.4, which `http` would turn into `OPTIONS /`.
    ServerWideOptions,
}

/// Where the scanner is in a chunked body; mirrors hyper's `ChunkedState`.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Before the first hex digit of a size.
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk's size line: `\r` ends, anything else is a trailer.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    Chunked(Chunk),
    /// A head that may switch protocols: nothing after it is HTTP/1 unless
    /// the gateway answered without 101, and then it closes the connection.
    Switching,
    /// Framing the scanner cannot follow (hyper rejects it and closes).
    Lost,
}

/// Follows request framing on one connection.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The head so far (all its lines).
    line: Vec<u8>,
    /// Where the current line of `line` starts.
    line_start: usize,
    /// Complete heads seen (the index of the next request).
    index: u64,
    /// The last head carried Content-Length and Transfer-Encoding.
    cl_te: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
            line_start: 0,
            index: 0,
            cl_te: false,
        }
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

impl Scanner {
    /// Feeds bytes read from the client; calls `flag(i, finding)` for
    /// request `i` (0-based) for each [`Finding`] in its head.
    pub fn feed(&mut self, mut data: &[u8], flag: &mut impl FnMut(u64, Finding)) {
        while !data.is_empty() {
            match &mut self.state {
                State::Lost | State::Switching => return,
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64) as usize;
                    *n -= take as u64;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::Head;
                    }
                }
                State::Chunked(Chunk::Data(n)) => {
                    let take = (*n).min(data.len() as u64) as usize;
                    *n -= take as u64;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::Chunked(Chunk::DataCr);
                    }
                }
                State::Chunked(c) => {
                    let b = data[0];
                    data = &data[1..];
                    self.state = match chunk_step(*c, b) {
                        Some(Some(next)) => State::Chunked(next),
                        Some(None) => State::Head,
                        None => State::Lost,
                    };
                }
                State::Head => {
                    let end = data.iter().position(|&b| b == b'\n');
                    let take = end.map_or(data.len(), |i| i + 1);
                    self.line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.line.len() > MAX_HEAD {
                        self.state = State::Lost;
                    } else if end.is_some() {
                        self.on_line(flag);
                    }
                }
            }
        }
    }

    /// Frees the head buffer between requests (an idle connection keeps
    /// no memory for the head it no longer needs).
    pub fn release_idle(&mut self) {
        if self.line.is_empty() {
            self.line = Vec::new();
        }
    }

    /// Whether part of a request head has arrived but not all of it.
    pub fn mid_head(&self) -> bool {
        matches!(self.state, State::Head) && !self.line.is_empty()
    }

    /// Complete request heads seen so far (frozen once lost): request `i`
    /// is followed only if `heads() > i`. A head that made the scanner
    /// lost is not counted, except one with Content-Length and
    /// Transfer-Encoding (flagged, and refused).
    pub fn heads(&self) -> u64 {
        self.index
    }

    /// Whether the scanner met framing it cannot follow.
    pub fn lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    /// Whether the last head may switch protocols (`Upgrade`, `CONNECT`)
    /// and the scanner paused.
    pub fn switching(&self) -> bool {
        matches!(self.state, State::Switching)
    }

    /// Called when `self.line` ends with `\n` (heads accumulate all lines).
    /// httparse ends a line at `\n` with an optional `\r` before it, and
    /// skips empty lines before the request line (RFC 9112 §2.2).
    fn on_line(&mut self, flag: &mut impl FnMut(u64, Finding)) {
        let current = &self.line[self.line_start..];
        let empty = current == b"\r\n" || current == b"\n";
        if !empty {
            self.line_start = self.line.len();
        } else if self.line_start == 0 {
            self.line.clear();
        } else {
            let mut head = std::mem::take(&mut self.line);
            self.line_start = 0;
            self.state = self.on_head(&head, flag);
            // Keep the buffer's capacity for the next head (no regrowth per request).
            head.clear();
            self.line = head;
            if matches!(self.state, State::Lost) && !self.cl_te {
                // A head the scanner cannot read is not counted: the request
                // (if hyper accepts it at all) is refused as not followed.
                self.index -= 1;
            }
        }
    }

    fn on_head(&mut self, head: &[u8], flag: &mut impl FnMut(u64, Finding)) -> State {
        let index = self.index;
        self.index += 1;
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let request_line = lines.next().unwrap_or("");
        let http11 = request_line.ends_with(" HTTP/1.1");
        if !http11 && !request_line.ends_with(" HTTP/1.0") {
            return State::Lost; // HTTP/2 preface or garbage
        }
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if target.contains('#') {
            flag(index, Finding::Fragment);
        }
        if method == "OPTIONS"
            && target
                .split_once("://")
                .is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains('/'))
        {
            flag(index, Finding::ServerWideOptions);
        }
        let (mut cl, mut te, mut chunked, mut upgrade) = (None::<u64>, false, false, false);
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return State::Lost; // also obs-fold: httparse refuses both
            };
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
                return State::Lost;
            }
            let value = value.trim_matches([' ', '\t']);
            if name.eq_ignore_ascii_case("content-length") {
                // hyper: digits only, every copy equal.
                let Some(n) = digits(value) else {
                    return State::Lost;
                };
                if cl.is_some_and(|prev| prev != n) {
                    return State::Lost;
                }
                cl = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                // hyper: the last field decides; chunked must be last.
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        self.cl_te = te && cl.is_some();
        if self.cl_te {
            flag(index, Finding::ContentLengthWithTransferEncoding);
            // The gateway answers 400 with `Connection: close`.
            return State::Lost;
        }
        if request_line.starts_with("CONNECT ") || upgrade {
            return State::Switching;
        }
        match (te, cl) {
            (true, _) if http11 && chunked => State::Chunked(Chunk::Start),
            (true, _) => State::Lost, // hyper refuses: 400 and close
            (false, Some(0) | None) => State::Head,
            (false, Some(n)) => State::Body(n),
        }
    }
}

/// `Content-Length` the way hyper reads it: ASCII digits only.
fn digits(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// One byte of a chunked body, as hyper's decoder takes it: `Some(Some(s))`
/// goes on in `s`, `Some(None)` ends the body, `None` is an error (hyper
/// fails the body and closes the connection).
fn chunk_step(state: Chunk, b: u8) -> Option<Option<Chunk>> {
    let next = match state {
        Chunk::Start => Chunk::Size(hex(b)?),
        Chunk::Size(n) => match b {
            b'\t' | b' ' => Chunk::SizeLws(n),
            b';' => Chunk::Extension(n),
            b'\r' => Chunk::SizeLf(n),
            _ => Chunk::Size(n.checked_mul(16)?.checked_add(hex(b)?)?),
        },
        Chunk::SizeLws(n) => match b {
            b'\t' | b' ' => Chunk::SizeLws(n),
            b';' => Chunk::Extension(n),
            b'\r' => Chunk::SizeLf(n),
            _ => return None,
        },
        Chunk::Extension(n) => match b {
            b'\r' => Chunk::SizeLf(n),
            b'\n' => return None,
            _ => Chunk::Extension(n),
        },
        Chunk::SizeLf(n) => match (b, n) {
            (b'\n', 0) => Chunk::EndCr,
            (b'\n', n) => Chunk::Data(n),
            _ => return None,
        },
        // Handled in bulk by `feed`; a zero-length chunk cannot occur.
        Chunk::Data(_) => return None,
        Chunk::DataCr if b == b'\r' => Chunk::DataLf,
        Chunk::DataLf if b == b'\n' => Chunk::Start,
        Chunk::DataCr | Chunk::DataLf => return None,
        Chunk::EndCr if b == b'\r' => Chunk::EndLf,
        Chunk::Trailer if b == b'\r' => Chunk::TrailerLf,
        Chunk::EndCr | Chunk::Trailer => Chunk::Trailer,
        Chunk::TrailerLf if b == b'\n' => Chunk::EndCr,
        Chunk::TrailerLf => return None,
        Chunk::EndLf if b == b'\n' => return Some(None),
        Chunk::EndLf => return None,
    };
    Some(Some(next))
}

#[cfg(test)]
mod tests {
    use super::{Finding, Scanner};

    fn found(input: &[u8], step: usize, what: Finding) -> Vec<u64> {
        let mut s = Scanner::default();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            s.feed(chunk, &mut |i, f| {
                if f == what {
                    out.push(i)
                }
            });
        }
        out
    }

    fn flagged(input: &[u8], step: usize) -> Vec<u64> {
        found(input, step, Finding::ContentLengthWithTransferEncoding)
    }

    #[test]
    fn finds_fragments_in_targets_only() {
        let input = b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n\
            GET /c HTTP/1.1\r\nX-Frag: #x\r\n\r\n\
            POST /d?q=1#top HTTP/1.1\r\nContent-Length: 3\r\n\r\n#\n\n\
            GET /e HTTP/1.1\r\n\r\n";
        for step in [1, 5, input.len()] {
            assert_eq!(
                found(input, step, Finding::Fragment),
                vec![0, 2],
                "step {step}"
            );
        }
    }

    #[test]
    fn finds_cl_te_after_bodies() {
        let input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n\
            GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for step in [1, 3, 7, input.len()] {
            assert_eq!(flagged(input, step), vec![3], "step {step}");
        }
    }

    #[test]
    fn body_text_is_not_a_head() {
        let input = b"POST / HTTP/1.1\r\nContent-Length: 47\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n";
        assert!(flagged(input, 4).is_empty());
    }

    fn heads(input: &[u8], step: usize) -> (u64, bool, bool) {
        let mut s = Scanner::default();
        for chunk in input.chunks(step) {
            s.feed(chunk, &mut |_, _| {});
        }
        (s.heads(), s.lost(), s.switching())
    }

    #[test]
    fn bare_lf_heads_end_where_httparse_ends_them() {
        let input = b"GET /a HTTP/1.1\nHost: p\n\r\nGET /b#x HTTP/1.1\r\nHost: p\n\n\
            \nPOST /c HTTP/1.1\nContent-Length: 6\nTransfer-Encoding: chunked\n\r\n";
        for step in [1, 2, input.len()] {
            assert_eq!(
                found(input, step, Finding::Fragment),
                vec![1],
                "step {step}"
            );
            assert_eq!(flagged(input, step), vec![2], "step {step}");
        }
    }

    #[test]
    fn upgrade_and_connect_pause_the_scanner() {
        for input in [
            &b"GET / HTTP/1.1\r\nUpgrade: foo\r\n\r\nGET /x#y HTTP/1.1\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nGET /x#y HTTP/1.1\r\n",
            b"GET / HTTP/1.0\nuPgRaDe: h2c\n\nGET /x#y HTTP/1.1\r\n",
        ] {
            assert_eq!(heads(input, 3), (1, false, true));
        }
    }

    #[test]
    fn chunked_bodies_follow_hyper_byte_by_byte() {
        // Extensions, whitespace after the size, trailers.
        let ok = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
            5 \t;a=b;c\r\nhello\r\nA\r\n0123456789\r\n0;x\r\nT: 1\r\nU: 2\r\n\r\n\
            GET / HTTP/1.1\r\n\r\n";
        for step in [1, 4, ok.len()] {
            assert_eq!(heads(ok, step), (2, false, false), "step {step}");
        }
        // What hyper refuses, the scanner does not follow either (and the
        // connection is closed): bare LF in chunk framing, a sign, no digit,
        // overflow, a bare LF inside a trailer does not end it.
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"0\r\nT: 1\nGET / HTTP/1.1\r\n\r\nX",
        ] {
            let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(bad);
            let (n, lost, _) = heads(&input, 1);
            assert!(lost || n == 1, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn content_length_is_read_like_hyper() {
        assert_eq!(
            heads(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\r\n\r\n", 1),
            (2, false, false)
        );
        for bad in ["+2", "2, 2", "", "0x2", "2 2"] {
            let input = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\nab");
            assert!(heads(input.as_bytes(), 1).1, "{bad:?}");
        }
        let input = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc";
        assert!(heads(input, 1).1);
        // Transfer-Encoding without chunked last, or on HTTP/1.0.
        assert!(
            heads(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                1
            )
            .1
        );
        assert!(heads(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 1).1);
    }
}
