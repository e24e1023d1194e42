//! Every IP protocol the node does not proxy (ICMP, ICMPv6, SCTP, GRE, ESP, the rest):
//! capture queues the first packet of each new flow (conntrack `new`) to the node, which
//! plans it like any connection and answers accept or drop; the kernel then carries the
//! flow's other packets (`established`), and the ICMP errors related to an allowed flow
//! (`related`, what path MTU discovery needs). These protocols do not travel in the tunnel:
//! both nodes decide on addresses. Without the node the queue has no reader and the kernel
//! drops what it would queue (fail closed).
//!
//! Each decision is counted and recorded; a flood of new flows of one kind (a ping flood,
//! say) is folded into aggregate records (`telemetry::aggregate`), not one per packet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eastwall_policy::Protocol;
use tracing::{debug, warn};

use crate::conn::record::FlowGuard;
use crate::conn::{Entry, Outcome, Pipeline, at_start, identify};
use crate::telemetry::metrics::{DirLabels, DropLabels};

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
            loop {
                let mut msg = match q.recv() {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(%e, queue, "reading the packet queue");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let accept = decide(&pipeline, &entry, msg.get_payload(), &rt);
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
fn decide(pipeline: &Pipeline, entry: &Entry, packet: &[u8], rt: &tokio::runtime::Handle) -> bool {
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
    guard.foldable();
    guard.finish(match plan.denial() {
        None => Outcome::Passed,
        Some(reason) => Outcome::Dropped(reason.clone()),
    });
    allowed
}
