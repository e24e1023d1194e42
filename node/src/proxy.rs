//! The relay: accept a captured connection, find who is on each end, decide, and either
//! refuse it with a reset or connect to the original destination (keeping the source address)
//! and copy bytes both ways until both sides are done. Every connection ends in a flow record.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use eastwall_policy::{Endpoint, Flow};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::capture::socket;
use crate::flow::{Direction, EndpointInfo, FlowRecord, PolicyInfo};
use crate::metrics::{BytesLabels, ClosedLabels, DirLabels, RuleLabels};
use crate::state::NodeState;

/// Size of each direction's copy buffer.
const COPY_BUF: usize = 64 * 1024;

/// Accepts captured connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, direction: Direction, state: Arc<NodeState>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let state = state.clone();
                tokio::spawn(async move { handle(stream, peer, direction, &state).await });
            }
            Err(e) => {
                // Running out of descriptors must not end the listener.
                warn!(%e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What the node does with one connection, decided before any byte is relayed.
enum Verdict {
    Allow(PolicyInfo),
    Deny(PolicyInfo),
}

async fn handle(client: TcpStream, peer: SocketAddr, direction: Direction, state: &NodeState) {
    let start = Utc::now();
    let dir = direction.as_str();
    // TPROXY keeps the original destination as the accepted socket's local address.
    let orig_dst = match client.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(%e, "captured connection without a local address");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    state
        .metrics
        .opened
        .get_or_create(&DirLabels { direction: dir })
        .inc();
    let rules = state.rules();
    let src_wl = rules.registry.workload_by_addr(peer.ip());
    let dst_wl = rules.registry.workload_by_addr(orig_dst.ip());

    let verdict =
        if direction == Direction::Outbound && src_wl.is_none_or(|w| w.node != state.node_name) {
            // Outbound capture sees only this host's workloads; anything else is unknown here.
            Verdict::Deny(PolicyInfo::denied_because("unknown-source"))
        } else {
            let decision = rules.policy.decide(&Flow {
                src: Endpoint {
                    addr: peer.ip(),
                    workload: src_wl,
                },
                dst: Endpoint {
                    addr: orig_dst.ip(),
                    workload: dst_wl,
                },
                dst_port: orig_dst.port(),
            });
            for m in &decision.monitored {
                state
                    .metrics
                    .decisions
                    .get_or_create(&RuleLabels {
                        direction: dir,
                        rule: m.rule.id.to_string(),
                        mode: "monitor",
                        action: m.action.as_str(),
                    })
                    .inc();
            }
            let info = PolicyInfo::of(&decision);
            if decision.is_allowed() {
                Verdict::Allow(info)
            } else {
                Verdict::Deny(info)
            }
        };
    let (info, allowed) = match verdict {
        Verdict::Allow(i) => (i, true),
        Verdict::Deny(i) => (i, false),
    };
    let action = if allowed { "allow" } else { "deny" };
    state
        .metrics
        .decisions
        .get_or_create(&RuleLabels {
            direction: dir,
            rule: info.rule.clone(),
            mode: "enforce",
            action,
        })
        .inc();
    let mut rec = FlowRecord::new(
        state.flows.next_id(),
        &state.node_name,
        direction,
        peer,
        orig_dst,
        EndpointInfo::of(src_wl),
        EndpointInfo::of(dst_wl),
        info,
        start,
    );
    drop(rules);

    if !allowed {
        debug!(%peer, %orig_dst, rule = %rec.eastwall.policy.rule, "denied");
        socket::reset(client);
        state
            .metrics
            .denied
            .get_or_create(&RuleLabels {
                direction: dir,
                rule: rec.eastwall.policy.rule.clone(),
                mode: "enforce",
                action: "deny",
            })
            .inc();
        finish(state, &mut rec, start, "rejected", "denied", false);
        return;
    }

    let timeout = Duration::from_secs(state.capture.connect_timeout_secs);
    let upstream =
        match socket::connect_spoofed(Some(peer.ip()), orig_dst, state.capture.own_mark, timeout)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, %orig_dst, %e, "upstream connect failed");
                // Mirror the destination's refusal to the client.
                socket::reset(client);
                state
                    .metrics
                    .upstream_errors
                    .get_or_create(&DirLabels { direction: dir })
                    .inc();
                rec.eastwall.error = Some(format!("connecting to {orig_dst}: {e}"));
                finish(state, &mut rec, start, "failed", "upstream-error", true);
                return;
            }
        };
    let active = state
        .metrics
        .active
        .get_or_create(&DirLabels { direction: dir })
        .clone();
    active.inc();
    let (up, down, err) = relay(client, upstream).await;
    active.dec();
    rec.flow.bytes_toserver = up;
    rec.flow.bytes_toclient = down;
    state
        .metrics
        .bytes
        .get_or_create(&BytesLabels {
            direction: dir,
            flow: "toserver",
        })
        .inc_by(up);
    state
        .metrics
        .bytes
        .get_or_create(&BytesLabels {
            direction: dir,
            flow: "toclient",
        })
        .inc_by(down);
    let reason = match err {
        None => "shutdown",
        Some(e) => {
            rec.eastwall.error = Some(e.to_string());
            "error"
        }
    };
    finish(state, &mut rec, start, "closed", reason, true);
}

fn finish(
    state: &NodeState,
    rec: &mut FlowRecord,
    start: chrono::DateTime<Utc>,
    st: &str,
    reason: &str,
    allowed: bool,
) {
    rec.finish(start, Utc::now(), st, reason);
    state
        .metrics
        .closed
        .get_or_create(&ClosedLabels {
            direction: rec.eastwall.direction.as_str(),
            verdict: if allowed { "allow" } else { "deny" },
        })
        .inc();
    state.flows.record(rec);
}

/// Copies both ways until both directions have ended; a half-close is passed on as a FIN, an
/// error on either side resets both. Returns bytes to the server, bytes to the client, and the
/// first error.
pub async fn relay(mut client: TcpStream, mut server: TcpStream) -> (u64, u64, Option<io::Error>) {
    let (mut up, mut down) = (0u64, 0u64);
    let err = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let to_server = pipe(cr, sw, &mut up);
        let to_client = pipe(sr, cw, &mut down);
        tokio::pin!(to_server, to_client);
        let (mut a_done, mut b_done) = (false, false);
        let mut err = None;
        while !(a_done && b_done) {
            tokio::select! {
                r = &mut to_server, if !a_done => { a_done = true; if let Err(e) = r { err = Some(e); break; } }
                r = &mut to_client, if !b_done => { b_done = true; if let Err(e) = r { err = Some(e); break; } }
            }
        }
        err
    };
    if err.is_some() {
        socket::reset(client);
        socket::reset(server);
    }
    (up, down, err)
}

async fn pipe<R, W>(mut r: R, mut w: W, count: &mut u64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).await?;
        *count += n as u64;
    }
    w.shutdown().await
}
