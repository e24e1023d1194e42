//! Every IP protocol the node does not proxy (ICMP, ICMPv6, SCTP, GRE, ESP, the rest):
//! capture queues the first packet of each new flow (conntrack `new`) to the node, which
//! plans it like any connection and answers accept or drop; the kernel then carries the
//! flow's other packets (`established`), and the ICMP errors related to an allowed flow
//! (`related`, what path MTU discovery needs). These protocols do not travel in the tunnel:
//! both nodes decide on addresses. Without the node the queue has no reader and the kernel
//! drops what it would queue (fail closed).
//!
//! Each decision is counted; its flow record is written at most once per
//! [`RECORD_EVERY`] for the same two addresses, protocol and verdict, so a flood of new
//! flows (a ping sweep, say) costs a few records, not one per packet.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use eastwall_policy::Protocol;
use tracing::{debug, warn};

use crate::conn::record::FlowGuard;
use crate::conn::{Entry, Outcome, Pipeline, at_start, identify};
use crate::telemetry::metrics::{DirLabels, DropLabels};

/// The shortest time between two records of the same kind of flow.
pub(crate) const RECORD_EVERY: Duration = Duration::from_secs(10);

/// Kinds of flow remembered for the record limit; past it the memory is cleared.
const REMEMBERED: usize = 65_536;

/// Starts the thread that answers queue `queue` (capture sends it the new flows of `entry`'s
/// side); decisions use `rt` for the directory.
pub(crate) fn spawn(
    queue: u16,
    entry: Entry,
    pipeline: Arc<Pipeline>,
    rt: tokio::runtime::Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut q = nfq::Queue::open()?;
    q.bind(queue)?;
    // A full queue drops (the kernel's default without `bypass`): never fail open.
    q.set_fail_open(queue, false)?;
    std::thread::Builder::new()
        .name(format!("eastwall-queue-{queue}"))
        .spawn(move || {
            let mut records = RecordLimit::default();
            loop {
                let mut msg = match q.recv() {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(%e, queue, "reading the packet queue");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let accept = decide(&pipeline, &entry, msg.get_payload(), &rt, &mut records);
                msg.set_verdict(if accept {
                    nfq::Verdict::Accept
                } else {
                    nfq::Verdict::Drop
                });
                if let Err(e) = q.verdict(msg) {
                    warn!(%e, queue, "answering the packet queue");
                }
            }
        })
}

/// Decides the new flow whose first packet is `packet`; whether it may pass.
fn decide(
    pipeline: &Pipeline,
    entry: &Entry,
    packet: &[u8],
    rt: &tokio::runtime::Handle,
    records: &mut RecordLimit,
) -> bool {
    let telemetry = &pipeline.telemetry;
    let facts = match eastwall_wire::packet::parse(packet) {
        Ok(f) => f,
        Err(e) => {
            debug!(%e, "queued packet unreadable; dropped");
            telemetry
                .metrics
                .packet_drops
                .get_or_create(&DropLabels {
                    reason: "malformed",
                })
                .inc();
            return false;
        }
    };
    let proto = match (Protocol::from_number(facts.protocol), facts.icmp) {
        (Protocol::Icmp { .. }, Some((kind, code))) => Protocol::Icmp { kind, code },
        (Protocol::Icmpv6 { .. }, Some((kind, code))) => Protocol::Icmpv6 { kind, code },
        (p, _) => p,
    };
    let (sport, dport) = facts.ports.unwrap_or((0, 0));
    let (src, dst) = (
        SocketAddr::new(facts.src, sport),
        SocketAddr::new(facts.dst, dport),
    );
    telemetry
        .metrics
        .opened
        .get_or_create(&DirLabels {
            direction: entry.direction().as_str(),
        })
        .inc();
    let accepted_at = SystemTime::now();
    let rules = pipeline.rules();
    let here = &pipeline.here;
    let mut ends = identify(&rules, here, (entry.clone(), proto), src, dst, None);
    rt.block_on(pipeline.fill_groups(&mut ends));
    let plan = pipeline.plan(&ends, at_start(proto));
    let allowed = plan.allows();
    let mut guard = FlowGuard::new(telemetry, &here.node, &rules, &ends, &plan).since(accepted_at);
    if !records.admit((facts.src, facts.dst, facts.protocol, allowed)) {
        guard.unrecorded();
    }
    guard.finish(match plan.denial() {
        None => Outcome::Passed,
        Some(reason) => Outcome::Dropped(reason.clone()),
    });
    allowed
}

/// When each kind of flow (addresses, protocol, verdict) was last recorded.
#[derive(Default)]
struct RecordLimit {
    last: HashMap<(IpAddr, IpAddr, u8, bool), Instant>,
}

impl RecordLimit {
    /// Whether a flow of this kind is recorded now.
    fn admit(&mut self, key: (IpAddr, IpAddr, u8, bool)) -> bool {
        let now = Instant::now();
        if self.last.len() >= REMEMBERED {
            self.last
                .retain(|_, t| now.duration_since(*t) < RECORD_EVERY);
            if self.last.len() >= REMEMBERED {
                self.last.clear();
            }
        }
        match self.last.get(&key) {
            Some(t) if now.duration_since(*t) < RECORD_EVERY => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_per_kind_of_flow_and_period() {
        let mut l = RecordLimit::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.admit((a, b, 1, false)));
        assert!(
            !l.admit((a, b, 1, false)),
            "the same kind again within the period"
        );
        assert!(l.admit((a, b, 1, true)), "another verdict");
        assert!(l.admit((b, a, 1, false)), "other addresses");
        assert!(l.admit((a, b, 47, false)), "another protocol");
        // The memory stays bounded.
        for i in 0..(REMEMBERED as u32 + 10) {
            let x = IpAddr::from(std::net::Ipv4Addr::from(i));
            l.admit((x, b, 1, false));
        }
        assert!(l.last.len() <= REMEMBERED);
    }
}
