//! The escalation state across restarts: per-source points, window, offence
//! count and TTL-ladder position, L7 blocks (sources seen through a trusted
//! proxy, or with XDP off, are blocked only here), and the expiry of
//! escalation throttles (the kernel's override map has none of its own).
//!
//! A background task ([`keep_saved`]) rewrites the state file when the
//! state changed, every [`SAVE_EVERY`], off the request path; `gateway run`
//! saves once more at shutdown and loads the file at start. Times are
//! written as Unix nanoseconds and converted back on load, so entries
//! expire when they would have (a window, a block or `forget_after` that
//! ran out while no gateway ran is gone after the start). The file is
//! replaced atomically (written beside it, then renamed) with mode 0600: it
//! holds client addresses.

#![forbid(unsafe_code)]

use std::{
    io::Write as _,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{Escalator, SHARDS, SourceState, now_ns};
use crate::{
    clock,
    net::{Net, group_ip},
};

/// How often the background task looks for changes to save.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// The file's format version; a file of another version is ignored (with a
/// warning), never misread.
const VERSION: u32 = 1;

/// A copy of the escalation state with wall-clock times: what the state
/// file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    version: u32,
    sources: Vec<Saved>,
    throttles: Vec<SavedThrottle>,
}

/// One source; times in Unix ns (0: never).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    source: IpAddr,
    points: u32,
    window_start: u64,
    offences: u32,
    last_escalation: u64,
    blocked_until: u64,
    by_offence: [u32; 5],
}

/// One escalation throttle; its end in Unix ns.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedThrottle {
    net: Net,
    expires: u64,
}

/// Converts between a monotonic time base and Unix ns at one instant.
#[derive(Clone, Copy)]
struct Clocks {
    mono: u64,
    unix: u64,
}

impl Clocks {
    fn now(mono: u64) -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64);
        Self { mono, unix }
    }

    /// A monotonic instant as Unix ns (0 stays 0: "never").
    fn mono_to_unix(self, t: u64) -> u64 {
        if t == 0 {
            return 0;
        }
        (i128::from(self.unix) + i128::from(t) - i128::from(self.mono)).clamp(1, u64::MAX as i128)
            as u64
    }

    /// Unix ns back to the monotonic base, at least `floor` (0 stays 0).
    fn unix_to_mono(self, u: u64, floor: u64) -> u64 {
        if u == 0 {
            return 0;
        }
        (i128::from(self.mono) + i128::from(u) - i128::from(self.unix))
            .clamp(i128::from(floor), u64::MAX as i128) as u64
    }
}

/// What [`Escalator::restore`] took over.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Sources whose state still mattered.
    pub sources: usize,
    /// Of those, sources still blocked (or throttled) by the escalator.
    pub blocked: usize,
    /// Escalation throttles handed back to the kernel sink.
    pub throttles: usize,
}

impl Escalator {
    /// How many changes the tracked state has seen (a counter, for "has it
    /// moved since the last save").
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Copies the state, with wall-clock times. Locks each shard briefly.
    pub fn snapshot(&self) -> Snapshot {
        let at = Clocks::now(now_ns());
        let mut sources = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            sources.extend(shard.iter().map(|(ip, s)| Saved {
                source: *ip,
                points: s.points,
                window_start: at.mono_to_unix(s.window_start),
                offences: s.offences,
                last_escalation: at.mono_to_unix(s.last_escalation),
                blocked_until: at.mono_to_unix(s.blocked_until),
                by_offence: s.by_offence,
            }));
        }
        let raw = Clocks::now(clock::monotonic_ns());
        let throttles = self
            .sink
            .as_ref()
            .map(|s| s.throttles())
            .unwrap_or_default()
            .into_iter()
            .map(|(net, expires)| SavedThrottle {
                net,
                expires: raw.mono_to_unix(expires),
            })
            .collect();
        Snapshot {
            version: VERSION,
            sources,
            throttles,
        }
    }

    /// Takes over a saved state: sources whose window, block or offence
    /// count (`forget_after`) has not run out, except those now on the
    /// allowlist or trusted; IPv6 sources are regrouped by the current
    /// `ipv6_prefix_len`; at most `max_sources`. Throttles go back to the
    /// kernel sink, which ends them on time. Entries already tracked in
    /// this run win.
    pub fn restore(&self, snapshot: Snapshot) -> Restored {
        let mut done = Restored::default();
        let now = now_ns();
        let at = Clocks::now(now);
        let window = self.cfg.window.as_nanos() as u64;
        let forget = self.cfg.forget_after.as_nanos() as u64;
        let per_shard = (self.cfg.max_sources / SHARDS).max(1);
        for s in snapshot.sources {
            if self.never.iter().any(|n| n.contains(&s.source)) {
                continue;
            }
            // Floor 1: a time before the epoch is still "long ago", not "never".
            let st = SourceState {
                points: s.points,
                window_start: at.unix_to_mono(s.window_start, 1),
                offences: s.offences,
                last_escalation: at.unix_to_mono(s.last_escalation, 1),
                blocked_until: at.unix_to_mono(s.blocked_until, 1),
                by_offence: s.by_offence,
            };
            let live_points = st.points > 0 && now.saturating_sub(st.window_start) <= window;
            let blocked = st.blocked_until > now;
            let remembered = st.offences > 0
                && st.last_escalation != 0
                && now.saturating_sub(st.last_escalation) <= forget;
            if !(live_points || blocked || remembered) {
                continue;
            }
            let key = group_ip(s.source, self.cfg.ipv6_prefix_len);
            let mut shard = self.shard(&key).lock();
            if shard.contains_key(&key) || shard.len() >= per_shard {
                continue;
            }
            shard.insert(key, st);
            done.sources += 1;
            done.blocked += usize::from(blocked);
        }
        if let Some(sink) = &self.sink {
            let raw = Clocks::now(clock::monotonic_ns());
            let throttles: Vec<(Net, u64)> = snapshot
                .throttles
                .iter()
                .map(|t| (t.net, raw.unix_to_mono(t.expires, 0)))
                .collect();
            done.throttles = throttles.len();
            sink.adopt_throttles(&throttles);
        }
        self.changes.fetch_add(1, Ordering::Relaxed);
        done
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file could not be read or written (at load, a missing file is not an error).
    #[error("{path}: {source}")]
    Io {
        /// The state file (also when its temporary sibling `<path>.tmp` failed).
        path: PathBuf,
        /// Why the call failed.
        source: std::io::Error,
    },
    /// Not a state file of this version (damaged, or written by another
    /// build): ignored, and replaced at the next save.
    #[error("{path}: not a usable escalation state file: {reason}")]
    Format {
        /// The state file.
        path: PathBuf,
        /// What did not fit: the JSON error, or the version it was written with.
        reason: String,
    },
}

/// Writes `snapshot` to `path` atomically (a temporary file beside it,
/// then a rename), mode 0600. Blocking: call it off the runtime's worker
/// threads (`spawn_blocking`) except at shutdown.
pub fn save(path: &Path, snapshot: &Snapshot) -> Result<(), PersistError> {
    let io = |source| PersistError::Io {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec(snapshot).map_err(|e| io(std::io::Error::other(e)))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash could carry other permissions: start anew.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads the state file; `Ok(None)` when there is none (a first start).
pub fn load(path: &Path) -> Result<Option<Snapshot>, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let format = |reason: String| PersistError::Format {
        path: path.to_owned(),
        reason,
    };
    let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|e| format(e.to_string()))?;
    if snapshot.version != VERSION {
        return Err(format(format!(
            "version {} (this build reads {VERSION})",
            snapshot.version
        )));
    }
    Ok(Some(snapshot))
}

/// Saves the escalator's state to `path` every `every` when it changed.
/// Runs until aborted; a failed save is logged (once until one succeeds)
/// and retried at the next change.
pub async fn keep_saved(escalator: Arc<Escalator>, path: PathBuf, every: Duration) {
    let mut saved = escalator.changes();
    let mut failing = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let changes = escalator.changes();
        if changes == saved {
            continue;
        }
        let snapshot = escalator.snapshot();
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || save(&p, &snapshot)).await;
        match r {
            Ok(Ok(())) => {
                saved = changes;
                if failing {
                    tracing::info!(path = %path.display(), "escalation state saved again");
                }
                failing = false;
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, "saving the escalation state failed; offence history would not survive a restart");
                }
                failing = true;
            }
            Err(e) => tracing::warn!(error = %e, "the escalation state save task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::escalate::{
        BlockSink, EscalationSection, Offence, Seen,
        config::{Action, ThrottleSpec},
    };

    /// A kernel sink that remembers throttles like `XdpSink` does.
    #[derive(Default)]
    struct Sink(Mutex<Vec<(Net, u64)>>);

    impl BlockSink for Arc<Sink> {
        fn block(
            &self,
            _: &Net,
            _: Duration,
            _: &str,
            _: u32,
        ) -> Result<(), crate::xdp::maps::MapsError> {
            Ok(())
        }
        fn throttle(
            &self,
            net: &Net,
            ttl: Duration,
            _: &ThrottleSpec,
            _: &str,
            _: u32,
        ) -> Result<(), crate::xdp::maps::MapsError> {
            let until = clock::deadline_ns(ttl);
            self.0.lock().push((*net, until));
            Ok(())
        }
        fn allowlisted(&self, _: &IpAddr) -> bool {
            false
        }
        fn expire_throttles(&self, _: u64) {}
        fn throttles(&self) -> Vec<(Net, u64)> {
            self.0.lock().clone()
        }
        fn adopt_throttles(&self, t: &[(Net, u64)]) {
            self.0.lock().extend_from_slice(t);
        }
    }

    fn cfg(tune: impl FnOnce(&mut EscalationSection)) -> EscalationSection {
        let mut c = EscalationSection {
            threshold: 30,
            ttl_ladder: vec![Duration::from_millis(50), Duration::from_secs(600)].into(),
            ..Default::default()
        };
        tune(&mut c);
        c
    }

    fn escalator(c: EscalationSection, never: Vec<Net>) -> (Escalator, Arc<Sink>) {
        let sink = Arc::new(Sink::default());
        (Escalator::new(c, never, Some(Box::new(sink.clone()))), sink)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gw-esc-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("escalation.state")
    }

    /// Through the file, as a restart does.
    fn restart(old: &Escalator, new: &Escalator, tag: &str) -> Restored {
        let path = temp(tag);
        save(&path, &old.snapshot()).unwrap();
        let r = new.restore(load(&path).unwrap().expect("saved"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
        r
    }

    #[test]
    fn the_ttl_ladder_position_and_points_survive_a_restart() {
        let (before, _) = escalator(cfg(|_| {}), vec![]);
        // 192.0.2.1: escalated once (50 ms block); 192.0.2.2: 20 points.
        before.record(ip("192.0.2.1"), Offence::MalformedHttp, Seen::Socket);
        let first = before
            .record(ip("192.0.2.1"), Offence::MalformedHttp, Seen::Socket)
            .unwrap();
        assert_eq!(first.offences, 1);
        before.record(ip("192.0.2.2"), Offence::MalformedHttp, Seen::Socket);

        let (after, _) = escalator(cfg(|_| {}), vec![]);
        let r = restart(&before, &after, "ladder");
        assert_eq!(r.sources, 2);
        std::thread::sleep(Duration::from_millis(80));
        after.record(ip("192.0.2.1"), Offence::MalformedHttp, Seen::Socket);
        let second = after
            .record(ip("192.0.2.1"), Offence::MalformedHttp, Seen::Socket)
            .expect("escalated again");
        assert_eq!(second.offences, 2, "the ladder did not restart at rung 1");
        assert_eq!(second.ttl, Duration::from_secs(600));
        // 20 saved points + 20 now cross 30.
        assert!(
            after
                .record(ip("192.0.2.2"), Offence::MalformedHttp, Seen::Socket)
                .is_some(),
            "points earned before the restart were lost"
        );
    }

    #[test]
    fn l7_blocks_survive_a_restart_and_expire_on_time() {
        let c = cfg(|c| c.ttl_ladder = vec![Duration::from_secs(600)].into());
        let (before, _) = escalator(c.clone(), vec![]);
        before.record(ip("198.51.100.9"), Offence::MalformedHttp, Seen::Forwarded);
        before
            .record(ip("198.51.100.9"), Offence::MalformedHttp, Seen::Forwarded)
            .unwrap();
        let (after, _) = escalator(c, vec![]);
        assert_eq!(restart(&before, &after, "l7").blocked, 1);
        let left = after.l7_blocked(ip("198.51.100.9")).expect("still blocked");
        assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(590));
    }

    #[test]
    fn what_ran_out_while_stopped_is_not_restored() {
        let c = cfg(|c| c.forget_after = Duration::from_secs(3600).into());
        let (before, _) = escalator(c.clone(), vec![]);
        for a in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
            before.record(ip(a), Offence::MalformedHttp, Seen::Socket);
        }
        before.record(ip("192.0.2.1"), Offence::MalformedHttp, Seen::Socket);
        let mut snap = before.snapshot();
        // As if saved long ago: 192.0.2.1 escalated 2 h ago (> forget_after),
        // 192.0.2.2's points are 2 min old (> the 60 s window), 192.0.2.3's
        // points 10 s old.
        let hour = 3_600_000_000_000u64;
        for s in &mut snap.sources {
            let back = match s.source.to_string().as_str() {
                "192.0.2.1" => 2 * hour,
                "192.0.2.2" => 120_000_000_000,
                _ => 10_000_000_000,
            };
            for t in [
                &mut s.window_start,
                &mut s.last_escalation,
                &mut s.blocked_until,
            ] {
                if *t != 0 {
                    *t -= back;
                }
            }
        }
        let (after, _) = escalator(c, vec![]);
        let r = after.restore(snap);
        assert_eq!(r.sources, 1);
        assert_eq!(after.tracked(), 1);
        // 192.0.2.3 kept its 20 points: 20 more escalate it.
        assert!(
            after
                .record(ip("192.0.2.3"), Offence::MalformedHttp, Seen::Socket)
                .is_some()
        );
    }

    #[test]
    fn allowlisted_sources_are_dropped_and_ipv6_regrouped() {
        let (before, _) = escalator(cfg(|c| c.ipv6_prefix_len = 128), vec![]);
        before.record(ip("192.0.2.7"), Offence::MalformedHttp, Seen::Socket);
        before.record(ip("2001:db8::1"), Offence::MalformedHttp, Seen::Socket);
        let (after, _) = escalator(
            cfg(|c| c.ipv6_prefix_len = 64),
            vec!["192.0.2.0/24".parse().unwrap()],
        );
        assert_eq!(restart(&before, &after, "never").sources, 1);
        let esc = after
            .record(ip("2001:db8::2"), Offence::MalformedHttp, Seen::Socket)
            .expect("the /64 carries the saved points");
        assert_eq!(esc.source.to_string(), "2001:db8::/64");
    }

    #[test]
    fn throttles_go_back_to_the_sink_with_their_expiry() {
        let c = cfg(|c| {
            c.action = Action::Throttle;
            c.ttl_ladder = vec![Duration::from_secs(600)].into();
        });
        let (before, old_sink) = escalator(c.clone(), vec![]);
        before.record(ip("192.0.2.4"), Offence::MalformedHttp, Seen::Socket);
        before
            .record(ip("192.0.2.4"), Offence::MalformedHttp, Seen::Socket)
            .unwrap();
        let was = old_sink.0.lock()[0].1;
        let (after, new_sink) = escalator(c, vec![]);
        assert_eq!(restart(&before, &after, "throttle").throttles, 1);
        let got = new_sink.0.lock().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.to_string(), "192.0.2.4");
        // Same monotonic clock here: the expiry comes back within 1 s.
        assert!(
            got[0].1.abs_diff(was) < 1_000_000_000,
            "{} vs {was}",
            got[0].1
        );
    }

    #[test]
    fn missing_damaged_and_foreign_files() {
        let path = temp("files");
        let _ = std::fs::remove_file(&path);
        assert!(load(&path).unwrap().is_none(), "no file: a first start");
        std::fs::write(&path, b"{not json").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("not a usable escalation state file"), "{e}");
        std::fs::write(&path, br#"{"version":99,"sources":[],"throttles":[]}"#).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
        let (e, _) = escalator(cfg(|_| {}), vec![]);
        save(&path, &e.snapshot()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "client addresses: owner only");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
