//! HTTP/2 flood guard and protocol gate on the raw client connection.
//!
//! hyper and h2 answer every PING and SETTINGS frame and accept any number
//! of empty DATA frames; nothing bounds how fast a client may send them
//! (the PING/SETTINGS floods of CVE-2019-9512/9515 and the empty-frame flood
//! of CVE-2019-9518). `conn::ConnIo` feeds every byte read from an HTTP/2
//! client to an [`Inbound`] scanner that follows the frame headers (no
//! allocation, constant work per frame) and applies the budgets of
//! [`H2Budget`]; every byte hyper writes goes through an [`Outbound`] tracker
//! so a GOAWAY can be inserted between two frames, never inside one.
//!
//! [`Preface`] checks the first bytes against the HTTP/2 connection preface,
//! so a connection speaks the protocol ALPN negotiated (or, in cleartext,
//! the one its first bytes announce).

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame header length (RFC 9113 §4.1).
const HEADER: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
/// GOAWAY error code ENHANCE_YOUR_CALM (RFC 9113 §7).
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Matches the first bytes of a connection against [`PREFACE`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Preface {
    matched: u8,
}

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// Still a prefix of the preface.
    Undecided,
    /// The whole preface; frames start at this offset of the bytes fed.
    Http2 {
        /// Byte offset, in everything fed so far, where the first frame starts.
        frames_at: usize,
    },
    /// Not HTTP/2.
    Other,
}

impl Preface {
    /// Feeds the next bytes read from the client.
    pub fn feed(&mut self, data: &[u8]) -> Sniffed {
        let want = &PREFACE[usize::from(self.matched)..];
        let n = want.len().min(data.len());
        if data[..n] != want[..n] {
            return Sniffed::Other;
        }
        self.matched += n as u8;
        if usize::from(self.matched) == PREFACE.len() {
            Sniffed::Http2 { frames_at: n }
        } else {
            Sniffed::Undecided
        }
    }
}

/// The per-connection frame budgets (from `[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Budget {
    /// Sustained rate of control frames (SETTINGS, PING, PRIORITY,
    /// RST_STREAM, GOAWAY, PUSH_PROMISE, unknown types) and empty frames.
    pub control_per_second: u32,
    /// How many of them may arrive at once.
    pub control_burst: u32,
    /// Empty DATA (no END_STREAM) and empty HEADERS/CONTINUATION fragments
    /// allowed in a row (Envoy's `max_consecutive_inbound_frames_with_empty_payload`).
    pub max_consecutive_empty: u32,
    /// WINDOW_UPDATE frames allowed per DATA frame the gateway sent
    /// (Envoy's `max_inbound_window_update_frames_per_data_frame_sent`).
    pub window_updates_per_data_frame: u32,
}

/// Why a connection was sent GOAWAY(ENHANCE_YOUR_CALM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Control or empty frames beyond the rate.
    ControlFrames,
    /// Too many empty frames in a row.
    EmptyFrames,
    /// WINDOW_UPDATE frames out of proportion to the DATA sent.
    WindowUpdates,
}

impl Flood {
    /// A short name for logs.
    pub fn code(self) -> &'static str {
        match self {
            Flood::ControlFrames => "h2_control_frame_flood",
            Flood::EmptyFrames => "h2_empty_frame_flood",
            Flood::WindowUpdates => "h2_window_update_flood",
        }
    }
}

/// Follows the frames a client sends (after the preface) and counts them
/// against an [`H2Budget`].
#[derive(Debug)]
pub struct Inbound {
    budget: H2Budget,
    header: [u8; HEADER],
    header_len: u8,
    /// Payload bytes of the current frame not seen yet.
    skip: u32,
    /// A padded DATA frame whose pad length (first payload byte) is next:
    /// (payload length, flags).
    padded: Option<(u32, u8)>,
    /// GCRA theoretical arrival time of the next control frame, in ns since `epoch`.
    tat_ns: u64,
    epoch: Instant,
    consecutive_empty: u32,
    window_updates: u64,
    headers_frames: u64,
    last_stream: u32,
}

impl Inbound {
    /// A follower that has seen no frame yet, counting against `budget`.
    pub fn new(budget: H2Budget) -> Self {
        Self {
            budget,
            header: [0; HEADER],
            header_len: 0,
            skip: 0,
            padded: None,
            tat_ns: 0,
            epoch: Instant::now(),
            consecutive_empty: 0,
            window_updates: 0,
            headers_frames: 0,
            last_stream: 0,
        }
    }

    /// The highest client stream id seen (for GOAWAY's last-stream-id).
    pub fn last_stream(&self) -> u32 {
        self.last_stream
    }

    /// Feeds bytes read from the client. `out` is what the gateway sent so
    /// far (WINDOW_UPDATE frames are budgeted against its DATA frames).
    pub fn feed(&mut self, mut data: &[u8], out: &Outbound) -> Result<(), Flood> {
        let mut now_ns = None;
        while !data.is_empty() {
            if let Some((len, flags)) = self.padded.take() {
                let pad = u32::from(data[0]);
                let empty = len <= pad + 1;
                self.on_data(empty, flags)?;
            }
            if self.skip > 0 {
                let take = (self.skip as usize).min(data.len());
                self.skip -= take as u32;
                data = &data[take..];
                continue;
            }
            let start = usize::from(self.header_len);
            let take = (HEADER - start).min(data.len());
            self.header[start..start + take].copy_from_slice(&data[..take]);
            self.header_len += take as u8;
            data = &data[take..];
            if usize::from(self.header_len) < HEADER {
                break;
            }
            self.header_len = 0;
            let h = self.header;
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            self.skip = len;
            match kind {
                DATA if flags & PADDED != 0 && len > 0 => self.padded = Some((len, flags)),
                DATA => self.on_data(len == 0, flags)?,
                HEADERS | CONTINUATION => {
                    if kind == HEADERS {
                        self.headers_frames += 1;
                        if stream % 2 == 1 {
                            self.last_stream = self.last_stream.max(stream);
                        }
                    }
                    if len == 0 && flags & END_HEADERS == 0 {
                        self.on_empty(&mut now_ns)?;
                    } else {
                        self.consecutive_empty = 0;
                    }
                }
                WINDOW_UPDATE => {
                    self.window_updates += 1;
                    let allowed = u64::from(self.budget.control_burst)
                        + u64::from(self.budget.window_updates_per_data_frame) * out.data_frames
                        + self.headers_frames;
                    if self.window_updates > allowed {
                        return Err(Flood::WindowUpdates);
                    }
                    self.consecutive_empty = 0;
                }
                _ => {
                    if len > 0 {
                        self.consecutive_empty = 0;
                    }
                    self.control(&mut now_ns)?;
                }
            }
        }
        Ok(())
    }

    /// A DATA frame, `empty` when it carries no data bytes.
    fn on_data(&mut self, empty: bool, flags: u8) -> Result<(), Flood> {
        if !empty || flags & END_STREAM != 0 {
            // An empty DATA frame that ends its stream is how a body ends.
            if !empty {
                self.consecutive_empty = 0;
            }
            return Ok(());
        }
        self.on_empty(&mut None)
    }

    fn on_empty(&mut self, now_ns: &mut Option<u64>) -> Result<(), Flood> {
        self.consecutive_empty += 1;
        if self.consecutive_empty > self.budget.max_consecutive_empty {
            return Err(Flood::EmptyFrames);
        }
        self.control(now_ns)
    }

    /// Counts one frame against the rate (GCRA: a burst of `control_burst`,
    /// then `control_per_second`).
    fn control(&mut self, now_ns: &mut Option<u64>) -> Result<(), Flood> {
        let now = *now_ns.get_or_insert_with(|| {
            u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
        });
        let interval = 1_000_000_000 / u64::from(self.budget.control_per_second.max(1));
        let tolerance = interval.saturating_mul(u64::from(self.budget.control_burst));
        let tat = self.tat_ns.max(now).saturating_add(interval);
        if tat - now > tolerance {
            return Err(Flood::ControlFrames);
        }
        self.tat_ns = tat;
        Ok(())
    }
}

/// Follows the frames hyper writes, to know where frame boundaries are.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outbound {
    header: [u8; HEADER],
    header_len: u8,
    skip: u32,
    /// DATA frames written so far.
    pub data_frames: u64,
}

impl Outbound {
    /// Whether the bytes written so far end on a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.skip == 0
    }

    /// Records bytes written to the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = self.step(data);
            data = &data[n..];
        }
    }

    /// How many bytes of `buf` complete the frame in progress (0 at a boundary).
    pub fn until_boundary(&self, buf: &[u8]) -> usize {
        let mut t = *self;
        let mut at = 0;
        while !t.at_boundary() && at < buf.len() {
            at += t.step(&buf[at..]);
        }
        at
    }

    /// Consumes bytes up to the end of the current header or payload.
    fn step(&mut self, data: &[u8]) -> usize {
        if self.skip > 0 {
            let take = (self.skip as usize).min(data.len());
            self.skip -= take as u32;
            return take;
        }
        let start = usize::from(self.header_len);
        let take = (HEADER - start).min(data.len());
        self.header[start..start + take].copy_from_slice(&data[..take]);
        self.header_len += take as u8;
        if usize::from(self.header_len) == HEADER {
            self.header_len = 0;
            let h = self.header;
            self.skip = u32::from_be_bytes([0, h[0], h[1], h[2]]);
            if h[3] == DATA {
                self.data_frames += 1;
            }
        }
        take
    }
}

/// A GOAWAY frame with ENHANCE_YOUR_CALM (RFC 9113 §6.8).
pub fn goaway(last_stream: u32) -> [u8; 17] {
    let mut f = [0u8; 17];
    f[2] = 8; // payload length
    f[3] = 0x7; // GOAWAY
    f[9..13].copy_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    f[13..17].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    f
}

/// How long a flooding connection may take to reach a frame boundary and
/// take the GOAWAY before it is closed without one.
pub const GOAWAY_GRACE: Duration = Duration::from_secs(1);

// Here rather than beside `Limits`: the section stays a leaf, the guard
// knows its own budget.
impl super::config::Limits {
    /// The HTTP/2 flood budgets of a connection.
    pub fn h2_budget(&self) -> H2Budget {
        H2Budget {
            control_per_second: self.h2_control_frames_per_second.0,
            control_burst: self.h2_control_frames_burst.0,
            max_consecutive_empty: self.h2_max_consecutive_empty_frames,
            window_updates_per_data_frame: self.h2_window_updates_per_data_frame,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn budget() -> H2Budget {
        H2Budget {
            control_per_second: 1,
            control_burst: 10,
            max_consecutive_empty: 1,
            window_updates_per_data_frame: 10,
        }
    }

    #[test]
    fn preface_is_recognised_in_pieces() {
        let mut p = Preface::default();
        assert_eq!(p.feed(&PREFACE[..5]), Sniffed::Undecided);
        let mut rest = PREFACE[5..].to_vec();
        rest.extend_from_slice(b"xyz");
        assert_eq!(p.feed(&rest), Sniffed::Http2 { frames_at: 19 });
        assert_eq!(
            Preface::default().feed(b"GET / HTTP/1.1\r\n"),
            Sniffed::Other
        );
        assert_eq!(Preface::default().feed(b"PRI * HTTP/1.1"), Sniffed::Other);
    }

    #[test]
    fn ping_flood_trips_after_the_burst_byte_by_byte() {
        let mut i = Inbound::new(budget());
        let out = Outbound::default();
        let ping = frame(6, 0, 0, &[0; 8]);
        let mut tripped = None;
        for n in 0..20 {
            for b in &ping {
                if let Err(f) = i.feed(std::slice::from_ref(b), &out) {
                    tripped = Some((n, f));
                }
            }
            if tripped.is_some() {
                break;
            }
        }
        assert_eq!(tripped, Some((10, Flood::ControlFrames)));
    }

    #[test]
    fn data_and_headers_are_not_control_frames() {
        let mut i = Inbound::new(budget());
        let out = Outbound::default();
        let mut bytes = Vec::new();
        for s in 0..50u32 {
            bytes.extend(frame(HEADERS, END_HEADERS, 2 * s + 1, b"hdr"));
            bytes.extend(frame(DATA, 0, 2 * s + 1, &[1; 100]));
            bytes.extend(frame(DATA, END_STREAM, 2 * s + 1, &[]));
        }
        assert_eq!(i.feed(&bytes, &out), Ok(()));
        assert_eq!(i.last_stream(), 99);
    }

    #[test]
    fn consecutive_empty_frames_trip() {
        let mut i = Inbound::new(budget());
        let out = Outbound::default();
        assert_eq!(i.feed(&frame(DATA, 0, 1, &[]), &out), Ok(()));
        assert_eq!(i.feed(&frame(DATA, 0, 1, b"x"), &out), Ok(()));
        assert_eq!(i.feed(&frame(DATA, 0, 1, &[]), &out), Ok(()));
        // Padding only is empty too.
        assert_eq!(
            i.feed(&frame(DATA, PADDED, 1, &[2, 0, 0]), &out),
            Err(Flood::EmptyFrames)
        );
        let mut i = Inbound::new(budget());
        let cont = frame(CONTINUATION, 0, 1, &[]);
        assert_eq!(i.feed(&cont, &out), Ok(()));
        assert_eq!(i.feed(&cont, &out), Err(Flood::EmptyFrames));
    }

    #[test]
    fn window_updates_follow_data_sent() {
        let mut i = Inbound::new(budget());
        let mut out = Outbound::default();
        let wu = frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
        for _ in 0..10 {
            assert_eq!(i.feed(&wu, &out), Ok(()));
        }
        assert_eq!(i.feed(&wu, &out), Err(Flood::WindowUpdates));
        out.feed(&frame(DATA, 0, 1, &[0; 3]));
        assert_eq!(out.data_frames, 1);
        for _ in 0..9 {
            assert_eq!(i.feed(&wu, &out), Ok(()));
        }
    }

    #[test]
    fn outbound_boundaries() {
        let mut o = Outbound::default();
        let mut bytes = frame(4, 0, 0, &[0; 6]);
        bytes.extend(frame(DATA, 0, 1, &[7; 20]));
        assert_eq!(o.until_boundary(&bytes), 0);
        o.feed(&bytes[..5]);
        assert!(!o.at_boundary());
        assert_eq!(o.until_boundary(&bytes[5..]), 10);
        o.feed(&bytes[5..20]);
        assert_eq!(o.until_boundary(&bytes[20..]), 9 + 20 - 5);
        o.feed(&bytes[20..]);
        assert!(o.at_boundary());
        assert_eq!(o.data_frames, 1);
        assert_eq!(&goaway(7)[..9], &[0, 0, 8, 7, 0, 0, 0, 0, 0]);
        assert_eq!(&goaway(7)[9..], &[0, 0, 0, 7, 0, 0, 0, 0xb]);
    }
}
