//! An index of rules by protocol and destination port, so that `decide` only looks at rules
//! that can apply to the flow's port (a policy may hold thousands of rules).
//!
//! TCP and UDP have an index each. The port space is cut into segments at every range
//! boundary of every rule; each segment lists the rules whose ports of that protocol cover
//! it. Rules without `ports` sit in one shared list; rules whose `ports` name only other
//! protocols are in neither. Both lists are in rule order, and lookup merges them, so
//! evaluation order is unchanged. Other protocols (ICMP, SCTP, the rest: new flows of them
//! are rare) are decided by a scan.

use super::{Protocol, Rule};

/// Rules by protocol and port.
#[derive(Clone, Debug)]
pub(crate) struct ProtoIndex {
    /// `None` when that index would be too large; `decide` then scans.
    tcp: Option<PortIndex>,
    udp: Option<PortIndex>,
}

impl ProtoIndex {
    /// The indexes of `rules`.
    pub(crate) fn build(rules: &[Rule]) -> ProtoIndex {
        ProtoIndex {
            tcp: PortIndex::build(rules, Protocol::Tcp),
            udp: PortIndex::build(rules, Protocol::Udp),
        }
    }

    /// The index of `proto`, if it has one.
    pub(crate) fn of(&self, proto: Protocol) -> Option<&PortIndex> {
        match proto {
            Protocol::Tcp => self.tcp.as_ref(),
            Protocol::Udp => self.udp.as_ref(),
            _ => None,
        }
    }

    /// The rules that can match a flow of `proto` to `port`, in rule order; `None` when this
    /// protocol is not indexed (scan, checking each rule's ports).
    pub(crate) fn candidates(&self, proto: Protocol, port: u16) -> Option<Candidates<'_>> {
        self.of(proto).map(|ix| ix.candidates(port))
    }
}

/// Above this many (segment, rule) entries the index is not built and `decide` scans
/// linearly: pathological port layouts must not cost unbounded memory.
const MAX_ENTRIES: usize = 4_000_000;

/// The port ranges of `proto` that `r` matches (none when it has `ports` without them).
fn ranges_of(r: &Rule, proto: Protocol) -> &[(u16, u16)] {
    r.ports.as_deref().map_or(&[], |t| t.ranges(proto))
}

/// Rules of one protocol by destination port.
#[derive(Clone, Debug)]
pub(crate) struct PortIndex {
    /// Rules that match any port, in order.
    any_port: Box<[u32]>,
    /// First port of each segment; `starts[0] == 0`, strictly increasing.
    starts: Box<[u16]>,
    /// For each segment, the port-restricted rules covering it, in order.
    buckets: Box<[Box<[u32]>]>,
}

impl PortIndex {
    /// Builds the index of `proto`, or `None` when it would be too large (or rules too
    /// many).
    fn build(rules: &[Rule], proto: Protocol) -> Option<PortIndex> {
        u32::try_from(rules.len()).ok()?;
        let mut starts = vec![0u16];
        for r in rules {
            for &(lo, hi) in ranges_of(r, proto) {
                starts.push(lo);
                if let Some(next) = hi.checked_add(1) {
                    starts.push(next);
                }
            }
        }
        starts.sort_unstable();
        starts.dedup();
        let seg = |port: u16| starts.partition_point(|&s| s <= port).saturating_sub(1);

        let mut total = 0usize;
        for r in rules {
            for &(lo, hi) in ranges_of(r, proto) {
                total = total.saturating_add(seg(hi) - seg(lo) + 1);
            }
        }
        if total > MAX_ENTRIES {
            return None;
        }

        let mut any_port = Vec::new();
        let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); starts.len()];
        for (i, r) in rules.iter().enumerate() {
            let i = u32::try_from(i).ok()?;
            match &r.ports {
                None => any_port.push(i),
                Some(t) => {
                    // Ranges of one rule never overlap (validated), so each segment gets
                    // the rule at most once; a rule without ranges of this protocol is in
                    // no segment.
                    for &(lo, hi) in t.ranges(proto) {
                        for b in &mut buckets[seg(lo)..=seg(hi)] {
                            b.push(i);
                        }
                    }
                }
            }
        }
        Some(PortIndex {
            any_port: any_port.into_boxed_slice(),
            buckets: buckets.into_iter().map(Vec::into_boxed_slice).collect(),
            starts: starts.into_boxed_slice(),
        })
    }

    /// Indexes of the rules without `ports`, in rule order.
    pub(crate) fn any_port(&self) -> impl Iterator<Item = usize> + '_ {
        self.any_port.iter().map(|&i| i as usize)
    }

    /// Indexes of the rules that can match destination `port`, in rule order.
    pub(crate) fn candidates(&self, port: u16) -> Candidates<'_> {
        let seg = self
            .starts
            .partition_point(|&s| s <= port)
            .saturating_sub(1);
        Candidates {
            a: &self.any_port,
            b: self.buckets.get(seg).map_or(&[][..], |b| &b[..]),
        }
    }
}

/// Merge of two ascending lists of rule indexes.
pub(crate) struct Candidates<'a> {
    a: &'a [u32],
    b: &'a [u32],
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let take_a = match (self.a.first(), self.b.first()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(x), Some(y)) => x <= y,
        };
        let list = if take_a { &mut self.a } else { &mut self.b };
        let (&first, rest) = list.split_first()?;
        *list = rest;
        Some(first as usize)
    }
}
