//! Floods of one kind of flow folded into aggregate records, so that a deny flood (a scan,
//! a retry storm, a ping flood) costs a few records, not one per flow. A kind is the
//! direction, both addresses, the protocol, the deciding rule and the outcome. In each
//! [`WINDOW`] the first [`RECORDED_PER_WINDOW`] flows of a kind get their own records; the
//! rest are counted, and one record with `eastwall.aggregate` (how many, first and last)
//! stands for them when the window closes. The table of kinds is bounded ([`KINDS`]); past
//! it, flows of new kinds fold into one `mixed` aggregate.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use eastwall_wire::eve::{self, Aggregate, Direction, FlowEvent, FlowReason, FlowState};

/// How long a kind's window lasts.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Flows of one kind recorded one by one in a window.
pub(crate) const RECORDED_PER_WINDOW: u32 = 10;

/// Kinds remembered at once.
pub(crate) const KINDS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlowKind {
    direction: Direction,
    src: IpAddr,
    dst: IpAddr,
    proto: Cow<'static, str>,
    icmp: Option<(u8, Option<u8>)>,
    rule: String,
    state: FlowState,
    reason: FlowReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Kind(FlowKind),
    /// Every kind that found the table full.
    Overflow,
}

struct Folded {
    flows: u64,
    first: SystemTime,
    last: SystemTime,
    event: FlowEvent,
}

struct Window {
    opened: Instant,
    recorded: u32,
    folded: Option<Folded>,
}

impl Window {
    /// The record that stands for the folded flows, if any.
    fn close(self, mixed: bool) -> Option<FlowEvent> {
        let f = self.folded?;
        let mut event = f.event;
        event.eastwall.aggregate = Some(Aggregate {
            flows: f.flows,
            first: eve::timestamp(f.first),
            last: eve::timestamp(f.last),
            mixed,
        });
        Some(event)
    }
}

/// The windows of the kinds seen lately.
#[derive(Default)]
pub(crate) struct Folds {
    windows: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    windows: HashMap<Key, Window>,
    /// When a full table was last swept for closed windows: at most once per
    /// [`SWEEP_EVERY`], so a flood of new kinds does not scan the table at every flow.
    swept: Option<Instant>,
}

/// How often a full table is swept for closed windows (besides the flush every second).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What to do with a flow record offered to [`Folds::offer`].
pub(crate) struct Offered {
    /// Records to write now (the flow's own, and an aggregate whose window closed).
    pub(crate) write: Vec<FlowEvent>,
    /// Whether the flow was folded (it has no record of its own).
    pub(crate) folded: bool,
}

impl Folds {
    /// Offers the record of a flow that ended at `at` (`now` on the monotonic clock).
    pub(crate) fn offer(&self, event: FlowEvent, at: SystemTime, now: Instant) -> Offered {
        let mut write = Vec::new();
        let mut table = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let Table { windows, swept } = &mut *table;
        let mut key = Key::Kind(kind(&event));
        if let Some(w) = windows.get(&key)
            && now.duration_since(w.opened) >= WINDOW
            && let Some(w) = windows.remove(&key)
        {
            write.extend(w.close(false));
        }
        if !windows.contains_key(&key) && windows.len() >= KINDS {
            if swept.is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY) {
                *swept = Some(now);
                write.extend(close_expired(windows, now));
            }
            if windows.len() >= KINDS {
                key = Key::Overflow;
            }
        }
        let overflow = key == Key::Overflow;
        let w = windows.entry(key).or_insert_with(|| Window {
            opened: now,
            recorded: 0,
            folded: None,
        });
        // The overflow window records nothing one by one: it exists because of a flood.
        if !overflow && w.recorded < RECORDED_PER_WINDOW {
            w.recorded += 1;
            write.push(event);
            return Offered {
                write,
                folded: false,
            };
        }
        match &mut w.folded {
            Some(f) => {
                f.flows += 1;
                f.last = at;
                f.event = event;
            }
            None => {
                w.folded = Some(Folded {
                    flows: 1,
                    first: at,
                    last: at,
                    event,
                })
            }
        }
        Offered {
            write,
            folded: true,
        }
    }

    /// The aggregate records of the windows that closed by `now` (they are forgotten).
    pub(crate) fn flush(&self, now: Instant) -> Vec<FlowEvent> {
        let mut table = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        close_expired(&mut table.windows, now)
    }

    /// The aggregate records of every window, closed now (the node stops).
    pub(crate) fn flush_all(&self) -> Vec<FlowEvent> {
        let mut table = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        table
            .windows
            .drain()
            .filter_map(|(k, w)| w.close(k == Key::Overflow))
            .collect()
    }
}

fn close_expired(windows: &mut HashMap<Key, Window>, now: Instant) -> Vec<FlowEvent> {
    let expired: Vec<Key> = windows
        .iter()
        .filter(|(_, w)| now.duration_since(w.opened) >= WINDOW)
        .map(|(k, _)| k.clone())
        .collect();
    expired
        .into_iter()
        .filter_map(|k| {
            let mixed = k == Key::Overflow;
            windows.remove(&k).and_then(|w| w.close(mixed))
        })
        .collect()
}

fn kind(e: &FlowEvent) -> FlowKind {
    FlowKind {
        direction: e.eastwall.direction,
        src: e.src_ip,
        dst: e.dest_ip,
        proto: e.proto.clone(),
        icmp: e.icmp_type.map(|t| (t, e.icmp_code)),
        rule: e.eastwall.policy.rule.clone(),
        state: e.flow.state,
        reason: e.flow.reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(src: &str, dst_port: u16) -> FlowEvent {
        let now = eve::timestamp(SystemTime::now());
        FlowEvent {
            timestamp: now.clone(),
            host: "hostA".into(),
            flow_id: 7,
            event_type: "flow",
            src_ip: src.parse().unwrap(),
            src_port: 40000,
            dest_ip: "10.0.1.2".parse().unwrap(),
            dest_port: dst_port,
            proto: eve::proto_name(6),
            icmp_type: None,
            icmp_code: None,
            app_proto: None,
            flow: eve::FlowCounters {
                pkts_toserver: None,
                pkts_toclient: None,
                bytes_toserver: 0,
                bytes_toclient: 0,
                start: now.clone(),
                end: now,
                age: 0,
                state: FlowState::Rejected,
                reason: FlowReason::Denied,
                alerted: false,
            },
            http: None,
            tls: None,
            eastwall: eve::FlowDecision {
                node: "hostA".into(),
                direction: Direction::Outbound,
                src: eve::Endpoint::default(),
                dest: eve::Endpoint::default(),
                policy: eve::PolicyInfo {
                    verdict: eve::Action::Deny,
                    rule: "default-deny".into(),
                    section: None,
                    mode: "enforce",
                    monitor: Vec::new(),
                    l7_pending: false,
                    ids: None,
                },
                duration_ms: 0,
                error: None,
                tunnel: None,
                revoked_by: None,
                normalized_path: None,
                http_requests: None,
                dns_queries: None,
                ids: None,
                aggregate: None,
            },
        }
    }

    #[test]
    fn a_flood_of_one_kind_becomes_a_few_records_and_one_aggregate() {
        let folds = Folds::default();
        let t0 = Instant::now();
        let at = SystemTime::now();
        let mut written = Vec::new();
        let mut folded = 0;
        for i in 0..1000u16 {
            let o = folds.offer(denied("10.0.0.9", 1000 + i), at, t0);
            folded += u32::from(o.folded);
            written.extend(o.write);
        }
        assert_eq!(written.len(), RECORDED_PER_WINDOW as usize);
        assert_eq!(folded, 1000 - RECORDED_PER_WINDOW);
        assert!(written.iter().all(|e| e.eastwall.aggregate.is_none()));
        // Another kind is recorded on its own.
        let o = folds.offer(denied("10.0.0.10", 80), at, t0);
        assert_eq!((o.write.len(), o.folded), (1, false));
        // Nothing closes before the window ends; then one aggregate stands for the rest.
        assert!(folds.flush(t0 + WINDOW / 2).is_empty());
        let closed = folds.flush(t0 + WINDOW);
        assert_eq!(closed.len(), 1);
        let a = closed[0].eastwall.aggregate.as_ref().unwrap();
        assert_eq!(a.flows, u64::from(1000 - RECORDED_PER_WINDOW));
        assert!(!a.mixed);
        assert_eq!(closed[0].dest_port, 1999, "the last flow's fields");
        // A new window records one by one again.
        let o = folds.offer(denied("10.0.0.9", 80), at, t0 + WINDOW);
        assert_eq!((o.write.len(), o.folded), (1, false));
        // Stopping closes every window at once.
        for _ in 0..RECORDED_PER_WINDOW + 5 {
            folds.offer(denied("10.0.0.9", 80), at, t0 + WINDOW);
        }
        let last = folds.flush_all();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].eastwall.aggregate.as_ref().unwrap().flows, 6);
    }

    #[test]
    fn an_expired_window_is_closed_by_the_next_flow_of_its_kind() {
        let folds = Folds::default();
        let t0 = Instant::now();
        let at = SystemTime::now();
        for _ in 0..=RECORDED_PER_WINDOW {
            folds.offer(denied("10.0.0.9", 80), at, t0);
        }
        let o = folds.offer(denied("10.0.0.9", 81), at, t0 + WINDOW);
        assert_eq!(
            o.write.len(),
            2,
            "the aggregate, then the flow's own record"
        );
        assert_eq!(o.write[0].eastwall.aggregate.as_ref().unwrap().flows, 1);
        assert!(o.write[1].eastwall.aggregate.is_none());
    }

    #[test]
    fn kinds_are_bounded_and_the_rest_fold_into_a_mixed_aggregate() {
        let folds = Folds::default();
        let t0 = Instant::now();
        let at = SystemTime::now();
        let mut written = 0;
        for i in 0..(KINDS as u32 + 500) {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)).to_string();
            written += folds.offer(denied(&src, 80), at, t0).write.len();
        }
        assert_eq!(written, KINDS);
        assert!(folds.windows.lock().unwrap().windows.len() <= KINDS + 1);
        let closed = folds.flush(t0 + WINDOW);
        let mixed: Vec<_> = closed
            .iter()
            .filter_map(|e| e.eastwall.aggregate.as_ref())
            .collect();
        assert_eq!(mixed.len(), 1);
        assert_eq!((mixed[0].flows, mixed[0].mixed), (500, true));
        assert!(folds.windows.lock().unwrap().windows.is_empty());
    }
}
