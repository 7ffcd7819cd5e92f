//! Which blocks expire when: a time-ordered index of the blocks with a TTL,
//! kept by every write this process makes to the blocklist maps (and built
//! once from the maps at load), so the sweeper finds what is due without
//! listing every entry. With a million blocks, a full listing takes the
//! maps lock for about a second; popping the due entries takes microseconds.

#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};

use crate::net::Net;

#[derive(Default)]
pub struct ExpiryIndex {
    by_time: BTreeSet<(u64, Net)>,
    by_net: HashMap<Net, u64>,
}

impl ExpiryIndex {
    /// Records that `net` expires at monotonic `expires_ns` (0: never, so
    /// it leaves the index).
    pub fn set(&mut self, net: Net, expires_ns: u64) {
        self.remove(&net);
        if expires_ns != 0 {
            self.by_time.insert((expires_ns, net));
            self.by_net.insert(net, expires_ns);
        }
    }

    pub fn remove(&mut self, net: &Net) {
        if let Some(t) = self.by_net.remove(net) {
            self.by_time.remove(&(t, *net));
        }
    }

    /// Takes the nets whose recorded expiry is at or before `now_ns`.
    pub fn take_due(&mut self, now_ns: u64) -> Vec<Net> {
        let mut due = Vec::new();
        while let Some(&(t, net)) = self.by_time.first() {
            if t > now_ns {
                break;
            }
            self.by_time.pop_first();
            self.by_net.remove(&net);
            due.push(net);
        }
        due
    }

    pub fn len(&self) -> usize {
        self.by_net.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_net.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        s.parse().unwrap()
    }

    #[test]
    fn due_entries_come_out_in_time_order_and_only_once() {
        let mut ix = ExpiryIndex::default();
        ix.set(net("192.0.2.1"), 30);
        ix.set(net("192.0.2.2"), 10);
        ix.set(net("2001:db8::/48"), 20);
        ix.set(net("192.0.2.3"), 0);
        assert_eq!(ix.len(), 3, "a permanent block is not indexed");
        assert_eq!(ix.take_due(5), Vec::<Net>::new());
        assert_eq!(ix.take_due(20), [net("192.0.2.2"), net("2001:db8::/48")]);
        assert_eq!(ix.take_due(20), Vec::<Net>::new());
        assert_eq!(ix.take_due(100), [net("192.0.2.1")]);
        assert!(ix.is_empty());
    }

    #[test]
    fn a_new_expiry_replaces_the_old_one() {
        let mut ix = ExpiryIndex::default();
        ix.set(net("192.0.2.1"), 10);
        ix.set(net("192.0.2.1"), 50);
        assert_eq!(ix.take_due(20), Vec::<Net>::new());
        ix.set(net("192.0.2.1"), 0);
        assert!(ix.is_empty(), "made permanent: leaves the index");
        ix.set(net("192.0.2.1"), 10);
        ix.remove(&net("192.0.2.1"));
        assert_eq!(ix.take_due(100), Vec::<Net>::new());
    }
}
