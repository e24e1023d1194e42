//! Hyperscan, the multi-pattern matcher Suricata uses, for the prefilters of bulk buffers
//! (raw stream, bodies) when eastwall-ids is built with the `hyperscan` feature: the same
//! literals, case-insensitive, each reported once per scan (which rules are candidates is
//! all a prefilter tells). Built to measure it against the Aho-Corasick DFAs on the same
//! rules and traffic (docs/IDS.md, "Throughput").

use hyperscan::prelude::{BlockDatabase, Builder, CompileFlags, Matching, Pattern, Patterns};
use hyperscan::{ExpressionExt, Scratch};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Literals compiled into one block-mode database.
pub(crate) struct Literals {
    db: BlockDatabase,
    count: usize,
    /// Tells the database apart in each thread's scratch (see [`SCRATCH`]).
    id: u64,
}

impl std::fmt::Debug for Literals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Literals")
            .field("count", &self.count)
            .finish()
    }
}

/// Ids of databases, unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Databases a thread's scratch was grown for before it starts over (engines reloaded).
const SIZED_FOR_MAX: usize = 256;

thread_local! {
    /// Hyperscan's per-thread working memory, grown to fit every database scanned here, and
    /// the databases it fits: growing it checks the whole database (a CRC of its bytes),
    /// far too slow to do on every scan.
    static SCRATCH: RefCell<(Option<Scratch>, Vec<u64>)> = const { RefCell::new((None, Vec::new())) };
}

impl Literals {
    /// `None` when Hyperscan refuses the set (the caller keeps Aho-Corasick then).
    pub(crate) fn build(patterns: &[Vec<u8>]) -> Option<Self> {
        let patterns: Patterns = patterns
            .iter()
            .enumerate()
            .map(|(id, p)| Pattern {
                expression: p.iter().map(|b| format!("\\x{b:02x}")).collect(),
                flags: CompileFlags::CASELESS | CompileFlags::SINGLEMATCH,
                id: Some(id),
                ext: ExpressionExt::default(),
                som: None,
            })
            .collect();
        let db = patterns.build().ok()?;
        Some(Literals {
            db,
            count: patterns.0.len(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Bytes the database holds.
    pub(crate) fn bytes(&self) -> usize {
        self.db.size().unwrap_or(0)
    }

    /// Calls `found` with the id of each pattern that occurs in `hay` (once each). Should
    /// Hyperscan fail, every pattern is reported: a prefilter may give too many candidates,
    /// never too few.
    pub(crate) fn each(&self, hay: &[u8], mut found: impl FnMut(usize)) {
        let scanned = SCRATCH.with(|cell| {
            let (scratch, sized_for) = &mut *cell.borrow_mut();
            let scratch = match scratch {
                Some(s) if sized_for.contains(&self.id) => s,
                Some(s) => {
                    if sized_for.len() >= SIZED_FOR_MAX {
                        sized_for.clear();
                    }
                    let s = self.db.realloc_scratch(s).ok()?;
                    sized_for.push(self.id);
                    s
                }
                None => {
                    let s = scratch.insert(self.db.alloc_scratch().ok()?);
                    sized_for.push(self.id);
                    s
                }
            };
            self.db
                .scan(hay, scratch, |id, _, _, _| {
                    found(id as usize);
                    Matching::Continue
                })
                .ok()
        });
        if scanned.is_none() {
            (0..self.count).for_each(found);
        }
    }
}
