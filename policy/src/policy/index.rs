//! An index of rules by destination port, so that `decide` only looks at rules that can
//! apply to the flow's port (a policy may hold thousands of rules).
//!
//! The port space is cut into segments at every range boundary of every rule; each segment
//! lists the rules whose ports cover it. Rules without `ports` sit in one shared list.
//! Both lists are in rule order, and lookup merges them, so evaluation order is unchanged.

use super::Rule;

/// Above this many (segment, rule) entries the index is not built and `decide` scans
/// linearly: pathological port layouts must not cost unbounded memory.
const MAX_ENTRIES: usize = 4_000_000;

/// Rules by destination port.
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
    /// Builds the index, or `None` when it would be too large (or rules too many).
    pub(crate) fn build(rules: &[Rule]) -> Option<PortIndex> {
        u32::try_from(rules.len()).ok()?;
        let mut starts = vec![0u16];
        for r in rules {
            for &(lo, hi) in r.ports.iter().flatten() {
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
            for &(lo, hi) in r.ports.iter().flatten() {
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
                Some(ranges) => {
                    // Ranges of one rule never overlap (validated), so each segment gets
                    // the rule at most once.
                    for &(lo, hi) in ranges.iter() {
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
