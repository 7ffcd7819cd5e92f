//! A read-side scanner of HTTP/1 request framing, because hyper hides
//! request smuggling attempts: given both `Content-Length` and
//! `Transfer-Encoding` it silently drops the length and uses chunked, so the
//! service cannot tell. The scanner follows the same framing (heads, then a
//! Content-Length or chunked body) over the raw bytes and records the index
//! of every request head that carried both. It also records request lines
//! whose target has a `#fragment`, which the `http` crate drops silently.
//! Anything it does not understand (an upgrade, HTTP/2, a malformed stream)
//! stops the scan; hyper rejects malformed streams itself.

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
}

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers,
    Lost,
}

/// Follows request framing on one connection.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    index: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
            index: 0,
        }
    }
}

impl Scanner {
    /// Feeds bytes read from the client; calls `flag(i, finding)` for
    /// request `i` (0-based) for each [`Finding`] in its head.
    pub fn feed(&mut self, mut data: &[u8], flag: &mut impl FnMut(u64, Finding)) {
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64) as usize;
                    *n -= take as u64;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64) as usize;
                    *n -= take as u64;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                }
                State::ChunkEnd(k) => {
                    *k -= 1;
                    data = &data[1..];
                    if *k == 0 {
                        self.state = State::ChunkSize;
                    }
                }
                State::Head | State::ChunkSize | State::Trailers => {
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

    /// Whether part of a request head has arrived but not all of it.
    pub fn mid_head(&self) -> bool {
        matches!(self.state, State::Head) && !self.line.is_empty()
    }

    /// Called when `self.line` ends with `\n` (heads accumulate all lines).
    fn on_line(&mut self, flag: &mut impl FnMut(u64, Finding)) {
        match self.state {
            State::Head => {
                if self.line == b"\r\n" || self.line == b"\n" {
                    // Empty lines before a request are allowed (RFC 9112 §2.2).
                    self.line.clear();
                } else if self.line.ends_with(b"\r\n\r\n") || self.line.ends_with(b"\n\n") {
                    let head = std::mem::take(&mut self.line);
                    self.state = self.on_head(&head, flag);
                }
            }
            State::ChunkSize => {
                let line = std::mem::take(&mut self.line);
                let text = String::from_utf8_lossy(&line);
                let hex = text.split(';').next().unwrap_or("").trim();
                self.state = match u64::from_str_radix(hex, 16) {
                    Ok(0) => State::Trailers,
                    Ok(n) => State::ChunkData(n),
                    Err(_) => State::Lost,
                };
            }
            State::Trailers => {
                let blank = self.line == b"\r\n" || self.line == b"\n";
                self.line.clear();
                if blank {
                    self.state = State::Head;
                }
            }
            _ => {}
        }
    }

    fn on_head(&mut self, head: &[u8], flag: &mut impl FnMut(u64, Finding)) -> State {
        let index = self.index;
        self.index += 1;
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        let request_line = lines.next().unwrap_or("");
        if !request_line.ends_with("HTTP/1.1") && !request_line.ends_with("HTTP/1.0") {
            return State::Lost; // HTTP/2 preface or garbage
        }
        if request_line
            .split(' ')
            .nth(1)
            .is_some_and(|target| target.contains('#'))
        {
            flag(index, Finding::Fragment);
        }
        let (mut cl, mut te, mut upgrade) = (None::<u64>, None::<String>, false);
        for line in lines.filter(|l| !l.is_empty()) {
            if line.starts_with([' ', '\t']) {
                return State::Lost;
            }
            let Some((name, value)) = line.split_once(':') else {
                return State::Lost;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => match value.parse() {
                    Ok(n) => cl = Some(n),
                    Err(_) => return State::Lost,
                },
                "transfer-encoding" => te = Some(value.to_ascii_lowercase()),
                "upgrade" => upgrade = true,
                _ => {}
            }
        }
        if request_line.starts_with("CONNECT ") || upgrade {
            return State::Lost;
        }
        match (te, cl) {
            (Some(_), Some(_)) => {
                flag(index, Finding::ContentLengthWithTransferEncoding);
                // hyper answers after our 400 and closes; stop scanning.
                State::Lost
            }
            (Some(te), None) if te.trim_end().ends_with("chunked") => State::ChunkSize,
            (Some(_), None) => State::Lost,
            (None, Some(0)) | (None, None) => State::Head,
            (None, Some(n)) => State::Body(n),
        }
    }
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
}
