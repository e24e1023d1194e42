//! `threshold` and `detection_filter`: counters across flows, keyed by rule and address,
//! kept inside the engine behind a mutex. Time is given by the caller.

use crate::rule::{DetectionFilter, Threshold, ThresholdKind, Track};
use crate::vars::ip_key;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    gid: u32,
    sid: u32,
    src: Option<u128>,
    dst: Option<u128>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Start of the current period, in seconds.
    since: u64,
    /// Matches in the period.
    count: u32,
    /// Period length, for eviction.
    seconds: u32,
}

/// Counters for all rules with `threshold` or `detection_filter`.
#[derive(Debug)]
pub(crate) struct ThresholdTable {
    entries: Mutex<HashMap<Key, Entry>>,
    max: usize,
}

/// What limits alerts of a rule.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    Threshold(Threshold),
    DetectionFilter(DetectionFilter),
}

impl ThresholdTable {
    pub(crate) fn new(max: usize) -> Self {
        ThresholdTable {
            entries: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// Count one match of a rule and say whether it alerts. `src`/`dst` are the addresses
    /// of the matching data.
    pub(crate) fn allow(
        &self,
        gid: u32,
        sid: u32,
        limit: Limit,
        src: IpAddr,
        dst: IpAddr,
        now_secs: u64,
    ) -> bool {
        let (track, count, seconds) = match limit {
            Limit::Threshold(t) => (t.track, t.count, t.seconds),
            Limit::DetectionFilter(d) => (d.track, d.count, d.seconds),
        };
        let (s, d) = match track {
            Track::BySrc => (Some(ip_key(src)), None),
            Track::ByDst => (None, Some(ip_key(dst))),
            Track::ByBoth => (Some(ip_key(src)), Some(ip_key(dst))),
            Track::ByRule => (None, None),
        };
        let key = Key {
            gid,
            sid,
            src: s,
            dst: d,
        };
        // A poisoned lock only means another thread panicked mid-update; counters stay usable.
        let mut entries = match self.entries.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !entries.contains_key(&key) && entries.len() >= self.max {
            entries.retain(|_, e| now_secs < e.since.saturating_add(u64::from(e.seconds)));
            if entries.len() >= self.max {
                // Full of live counters: alert rather than lose an attack.
                return true;
            }
        }
        let e = entries.entry(key).or_insert(Entry {
            since: now_secs,
            count: 0,
            seconds,
        });
        if now_secs >= e.since.saturating_add(u64::from(seconds)) {
            e.since = now_secs;
            e.count = 0;
        }
        e.count = e.count.saturating_add(1);
        match limit {
            Limit::Threshold(t) => match t.kind {
                ThresholdKind::Limit => e.count <= count,
                ThresholdKind::Threshold => {
                    if e.count >= count {
                        e.count = 0;
                        true
                    } else {
                        false
                    }
                }
                ThresholdKind::Both => e.count == count,
            },
            Limit::DetectionFilter(_) => e.count > count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(kind: ThresholdKind, track: Track, count: u32, seconds: u32) -> Limit {
        Limit::Threshold(Threshold {
            kind,
            track,
            count,
            seconds,
        })
    }

    fn run(table: &ThresholdTable, limit: Limit, src: &str, times: &[u64]) -> Vec<bool> {
        times
            .iter()
            .map(|&now| table.allow(1, 7, limit, ip(src), ip("10.0.0.9"), now))
            .collect()
    }

    #[test]
    fn limit_threshold_both() {
        let tb = ThresholdTable::new(100);
        let l = t(ThresholdKind::Limit, Track::BySrc, 2, 60);
        assert_eq!(
            run(&tb, l, "1.1.1.1", &[0, 1, 2, 61, 62]),
            [true, true, false, true, true]
        );
        // Another source has its own counter.
        assert_eq!(run(&tb, l, "1.1.1.2", &[3]), [true]);
        let tb = ThresholdTable::new(100);
        let th = t(ThresholdKind::Threshold, Track::BySrc, 3, 60);
        assert_eq!(
            run(&tb, th, "1.1.1.1", &[0, 1, 2, 3, 4, 5]),
            [false, false, true, false, false, true]
        );
        let tb = ThresholdTable::new(100);
        let both = t(ThresholdKind::Both, Track::ByRule, 2, 60);
        assert_eq!(
            run(&tb, both, "1.1.1.1", &[0, 1, 2, 60, 61]),
            [false, true, false, false, true]
        );
    }

    #[test]
    fn detection_filter_and_capacity() {
        let tb = ThresholdTable::new(2);
        let df = Limit::DetectionFilter(DetectionFilter {
            track: Track::BySrc,
            count: 2,
            seconds: 10,
        });
        assert_eq!(
            run(&tb, df, "1.1.1.1", &[0, 1, 2, 3, 20]),
            [false, false, true, true, false]
        );
        assert_eq!(run(&tb, df, "1.1.1.2", &[20]), [false]);
        // Table full of live entries: a new source alerts rather than being dropped.
        assert_eq!(run(&tb, df, "1.1.1.3", &[21]), [true]);
    }
}
