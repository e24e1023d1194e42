//! `xbits`: named bits on a host or a pair of hosts, shared by every flow of the engine and
//! expiring, as Suricata keeps them in its host and IP-pair tables. Time is the caller's
//! (whole seconds of [`crate::Timestamp`]); the table is bounded.

use crate::rule::{XbitOp, XbitTrack};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Whose bit: the bit's number and the host (or the pair, in a fixed order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    bit: u16,
    host: IpAddr,
    peer: Option<IpAddr>,
}

/// The bits set, with the second each expires at.
#[derive(Debug)]
pub(crate) struct XbitTable {
    entries: Mutex<HashMap<Key, u64>>,
    max: usize,
}

impl XbitTable {
    pub(crate) fn new(max: usize) -> Self {
        XbitTable {
            entries: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// Whether the bit is set (and not expired) for the data from `src` to `dst`.
    pub(crate) fn is_set(
        &self,
        bit: u16,
        track: XbitTrack,
        src: IpAddr,
        dst: IpAddr,
        now: u64,
    ) -> bool {
        let key = key(bit, track, src, dst);
        self.lock().get(&key).is_some_and(|&until| now < until)
    }

    /// Set, unset or toggle the bit; a set bit lives `expire` seconds.
    pub(crate) fn apply(
        &self,
        op: XbitOp,
        bit: u16,
        track: XbitTrack,
        expire: u32,
        (src, dst): (IpAddr, IpAddr),
        now: u64,
    ) {
        let key = key(bit, track, src, dst);
        let mut entries = self.lock();
        let set = entries.get(&key).is_some_and(|&until| now < until);
        let on = match op {
            XbitOp::Set => true,
            XbitOp::Unset => false,
            XbitOp::Toggle => !set,
            XbitOp::IsSet | XbitOp::IsNotSet => return,
        };
        if !on {
            entries.remove(&key);
            return;
        }
        if !entries.contains_key(&key) && entries.len() >= self.max {
            entries.retain(|_, until| now < *until);
            if entries.len() >= self.max {
                // Full of live bits: the new one is not kept (memory stays bounded).
                return;
            }
        }
        entries.insert(key, now.saturating_add(u64::from(expire)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        // A poisoned lock only means another thread panicked mid-update; bits stay usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(bit: u16, track: XbitTrack, src: IpAddr, dst: IpAddr) -> Key {
    let (host, peer) = match track {
        XbitTrack::IpSrc => (src, None),
        XbitTrack::IpDst => (dst, None),
        // One pair whichever way the data flows.
        XbitTrack::IpPair => (src.min(dst), Some(src.max(dst))),
    };
    Key { bit, host, peer }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_pairs_and_expiry() {
        let t = XbitTable::new(100);
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        t.apply(XbitOp::Set, 1, XbitTrack::IpSrc, 10, (a, b), 100);
        assert!(t.is_set(1, XbitTrack::IpSrc, a, c, 105));
        assert!(!t.is_set(1, XbitTrack::IpSrc, b, a, 105));
        // The same host as a destination is another key only when tracked so.
        assert!(t.is_set(1, XbitTrack::IpDst, c, a, 105));
        assert!(!t.is_set(2, XbitTrack::IpSrc, a, c, 105));
        assert!(!t.is_set(1, XbitTrack::IpSrc, a, c, 110));
        t.apply(XbitOp::Set, 3, XbitTrack::IpPair, 60, (a, b), 0);
        assert!(t.is_set(3, XbitTrack::IpPair, b, a, 59));
        assert!(!t.is_set(3, XbitTrack::IpPair, a, c, 1));
        t.apply(XbitOp::Toggle, 3, XbitTrack::IpPair, 60, (b, a), 2);
        assert!(!t.is_set(3, XbitTrack::IpPair, a, b, 3));
        t.apply(XbitOp::Toggle, 3, XbitTrack::IpPair, 60, (b, a), 4);
        assert!(t.is_set(3, XbitTrack::IpPair, a, b, 5));
        t.apply(XbitOp::Unset, 3, XbitTrack::IpPair, 60, (a, b), 6);
        assert!(!t.is_set(3, XbitTrack::IpPair, a, b, 7));
    }

    #[test]
    fn bounded() {
        let t = XbitTable::new(2);
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        t.apply(XbitOp::Set, 1, XbitTrack::IpSrc, 10, (a, c), 0);
        t.apply(XbitOp::Set, 1, XbitTrack::IpSrc, 10, (b, c), 0);
        t.apply(XbitOp::Set, 1, XbitTrack::IpSrc, 10, (c, a), 0);
        assert!(!t.is_set(1, XbitTrack::IpSrc, c, a, 1));
        // Once the others expired, there is room again.
        t.apply(XbitOp::Set, 1, XbitTrack::IpSrc, 10, (c, a), 20);
        assert!(t.is_set(1, XbitTrack::IpSrc, c, a, 21));
        assert_eq!(t.lock().len(), 1);
    }
}
