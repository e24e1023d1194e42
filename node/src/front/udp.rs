//! The UDP entry point: datagrams capture handed to a transparent UDP listener, grouped into
//! sessions, one per (source, destination) pair. A session is identified and planned at its
//! first datagram, like a TCP connection, and then carried (straight on from the client's own
//! address, or through the tunnel) until no datagram went either way for its idle time; it
//! leaves one flow record with datagrams and bytes each way. A denied session quietly drops
//! what follows, so a refused sender costs one decision and one record, not one per datagram.
//!
//! After the first datagram the client's datagrams reach the session's own socket (bound to
//! the destination, connected to the client: capture's `socket transparent` rule hands them
//! to it); those that arrive at the listener before it exists are queued to the session.
//!
//! The table is bounded: at most `udp.maxSessions` sessions, `udp.maxSessionsPerSource` per
//! source address. When it is full, a session idle for at least [`EVICTABLE_AFTER`] is
//! evicted to make room (idle ones first, in the order of a clock sweep); when none is,
//! the new session is refused. Every drop is counted.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use eastwall_policy::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::capture::socket;
use crate::config::UdpSpec;
use crate::conn::record::FlowGuard;
use crate::conn::{DenyReason, Ending, Entry, Outcome, Pipeline, Route, at_start, identify};
use crate::relay::{Activity, DatagramSource, MAX_DATAGRAM};
use crate::telemetry::metrics::{DirLabels, DropLabels};

/// A session idle this long may be evicted when the table is full.
pub(crate) const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// Sessions looked at, at most, to find one to evict.
const EVICTION_SWEEP: usize = 64;

/// How long a session refused for lack of room drops its datagrams before it ends (its
/// sender's next datagram then makes a new session, which asks for room again).
const RETRY_AFTER_SHORTAGE: Duration = Duration::from_secs(1);

/// Datagrams queued to a session before its own socket takes over.
const QUEUE: usize = 64;

/// A session's place in the table.
struct Handle {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    activity: Arc<Activity>,
    evict: CancellationToken,
}

#[derive(Default)]
struct Table {
    by_pair: HashMap<(SocketAddr, SocketAddr), Handle>,
    per_source: HashMap<IpAddr, usize>,
    /// Sessions in the order the eviction sweep visits them.
    clock: VecDeque<(u64, (SocketAddr, SocketAddr))>,
    next_id: u64,
}

/// The node's UDP sessions, shared by its listeners.
pub(crate) struct Sessions {
    limits: UdpSpec,
    table: Mutex<Table>,
}

/// What became of a datagram the listener received.
enum Admitted {
    /// Queued to its session.
    Queued,
    /// Dropped (counted).
    Dropped(&'static str),
    /// The first of a new session.
    New(Seed),
}

/// What a new session starts with.
struct Seed {
    id: u64,
    rx: mpsc::Receiver<Bytes>,
    activity: Arc<Activity>,
    evict: CancellationToken,
}

impl Sessions {
    /// An empty table with these limits.
    pub(crate) fn new(limits: UdpSpec) -> Self {
        Sessions {
            limits,
            table: Mutex::new(Table::default()),
        }
    }

    fn admit(&self, pair: (SocketAddr, SocketAddr), datagram: Bytes) -> (Admitted, usize) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = t.by_pair.get(&pair) {
            h.activity.touch();
            let r = match h.tx.try_send(datagram) {
                Ok(()) => Admitted::Queued,
                Err(mpsc::error::TrySendError::Full(_)) => Admitted::Dropped("queue-full"),
                // The session is ending; the sender tries again and gets a new one.
                Err(mpsc::error::TrySendError::Closed(_)) => Admitted::Dropped("session-ending"),
            };
            return (r, t.by_pair.len());
        }
        let source = pair.0.ip();
        if t.per_source.get(&source).copied().unwrap_or(0) >= self.limits.max_sessions_per_source {
            return (Admitted::Dropped("source-limit"), t.by_pair.len());
        }
        if t.by_pair.len() >= self.limits.max_sessions && !t.evict_one() {
            return (Admitted::Dropped("table-full"), t.by_pair.len());
        }
        let id = t.next_id;
        t.next_id += 1;
        let (tx, rx) = mpsc::channel(QUEUE);
        let activity = Arc::new(Activity::default());
        let evict = CancellationToken::new();
        t.by_pair.insert(
            pair,
            Handle {
                id,
                tx,
                activity: activity.clone(),
                evict: evict.clone(),
            },
        );
        *t.per_source.entry(source).or_default() += 1;
        t.clock.push_back((id, pair));
        let seed = Seed {
            id,
            rx,
            activity,
            evict,
        };
        (Admitted::New(seed), t.by_pair.len())
    }

    /// Forgets session `id` of `pair` (it ended).
    fn remove(&self, pair: (SocketAddr, SocketAddr), id: u64) -> usize {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if t.by_pair.get(&pair).is_some_and(|h| h.id == id) {
            t.by_pair.remove(&pair);
            let source = pair.0.ip();
            if let Some(n) = t.per_source.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
                    t.per_source.remove(&source);
                }
            }
        }
        // The clock forgets removed sessions lazily; keep it from growing without bound.
        if t.clock.len() > 2 * t.by_pair.len() + EVICTION_SWEEP {
            let Table { clock, by_pair, .. } = &mut *t;
            clock.retain(|(id, pair)| by_pair.get(pair).is_some_and(|h| h.id == *id));
        }
        t.by_pair.len()
    }
}

impl Table {
    /// Evicts one session idle for at least [`EVICTABLE_AFTER`], looking at no more than
    /// [`EVICTION_SWEEP`] of them; whether one was. An evicted session leaves the table at
    /// once, and ends (with its record) soon after.
    fn evict_one(&mut self) -> bool {
        for _ in 0..EVICTION_SWEEP {
            let Some((id, pair)) = self.clock.pop_front() else {
                return false;
            };
            let Some(h) = self.by_pair.get(&pair).filter(|h| h.id == id) else {
                continue;
            };
            if h.activity.idle_for() < EVICTABLE_AFTER {
                // Second chance: it was busy.
                self.clock.push_back((id, pair));
                continue;
            }
            h.evict.cancel();
            self.by_pair.remove(&pair);
            if let Some(n) = self.per_source.get_mut(&pair.0.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&pair.0.ip());
                }
            }
            return true;
        }
        false
    }
}

/// Receives captured datagrams on `listener` until the task is dropped; `entry` says which
/// listener it is ([`Entry::Outbound`] or [`Entry::Inbound`]).
pub(crate) async fn serve(
    listener: UdpSocket,
    entry: Entry,
    pipeline: Arc<Pipeline>,
    sessions: Arc<Sessions>,
) {
    let metrics = &pipeline.telemetry.metrics;
    let drop = |reason: &'static str| {
        metrics
            .udp_drops
            .get_or_create(&DropLabels { reason })
            .inc();
    };
    // The listener's one receive buffer; sessions get their datagrams copied out at size.
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let got = match socket::recv_captured(&listener, &mut buf).await {
            Ok(c) => c,
            Err(e) => {
                warn!(%e, "receiving a captured datagram");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if got.truncated {
            drop("oversized");
            continue;
        }
        let datagram = Bytes::copy_from_slice(&buf[..got.len]);
        let pair = (got.src, got.dst);
        let (admitted, in_table) = sessions.admit(pair, datagram.clone());
        metrics.udp_sessions.set(in_table as i64);
        match admitted {
            Admitted::Queued => {}
            Admitted::Dropped(reason) => {
                if reason == "table-full" {
                    debug!(src = %got.src, dst = %got.dst, "UDP session table full");
                }
                drop(reason);
            }
            Admitted::New(seed) => {
                let (pipeline, sessions, entry) =
                    (pipeline.clone(), sessions.clone(), entry.clone());
                tokio::spawn(async move {
                    session(&pipeline, &sessions, entry, pair, datagram, seed).await;
                });
            }
        }
    }
}

/// The client side of a session: its first datagram, those queued by the listener, then
/// those its own socket receives.
struct ClientDatagrams<'s> {
    first: Option<Bytes>,
    queued: Option<mpsc::Receiver<Bytes>>,
    sock: &'s UdpSocket,
}

impl DatagramSource for ClientDatagrams<'_> {
    async fn recv(&mut self) -> std::io::Result<Option<Bytes>> {
        if let Some(d) = self.first.take() {
            return Ok(Some(d));
        }
        let mut sock = self.sock;
        loop {
            let Some(q) = self.queued.as_mut() else {
                return DatagramSource::recv(&mut sock).await;
            };
            tokio::select! {
                d = q.recv() => match d {
                    Some(d) => return Ok(Some(d)),
                    // The table let go of the session: only its socket is left.
                    None => self.queued = None,
                },
                r = DatagramSource::recv(&mut sock) => return r,
            }
        }
    }
}

/// One session, from its first datagram to its record.
async fn session(
    pipeline: &Arc<Pipeline>,
    sessions: &Sessions,
    entry: Entry,
    (src, dst): (SocketAddr, SocketAddr),
    first: Bytes,
    seed: Seed,
) {
    let accepted_at = SystemTime::now();
    let Seed {
        id,
        mut rx,
        activity,
        evict,
    } = seed;
    let telemetry = &pipeline.telemetry;
    let direction = entry.direction();
    telemetry
        .metrics
        .opened
        .get_or_create(&DirLabels {
            direction: direction.as_str(),
        })
        .inc();
    let rules = pipeline.rules();
    let here = &pipeline.here;
    // UDP sockets of the host's own processes are not attributed to local users (yet): such
    // a session acts as the host workload, without a user (user and group rules do not match).
    let mut ends = identify(&rules, here, (entry, Protocol::Udp), src, dst, None);
    pipeline.fill_groups(&mut ends).await;
    let plan = pipeline.plan(&ends, at_start(Protocol::Udp));
    let mut guard = FlowGuard::new(telemetry, &here.node, &rules, &ends, &plan).since(accepted_at);
    drop(rules);
    let idle = sessions.limits.idle_for(dst.port());
    let (refusal, _slot) = match plan.denial() {
        Some(reason) => (Some(reason.clone()), None),
        None => match pipeline.room_for(&ends, &mut guard) {
            Ok(slot) => (None, Some(slot)),
            Err(reason) => (Some(reason), None),
        },
    };
    let outcome = if let Some(reason) = refusal {
        // Drop what follows quietly until the sender gives up; a session refused for lack
        // of room ends after a moment instead, so that a sender that never pauses gets a new
        // session (and another try) once room is made.
        let retry = matches!(reason, DenyReason::Exhausted(_))
            .then(|| tokio::time::Instant::now() + RETRY_AFTER_SHORTAGE);
        let mut count = (1u64, first.len() as u64);
        let absorbed = async {
            loop {
                tokio::select! {
                    d = rx.recv() => match d {
                        Some(d) => {
                            count.0 += 1;
                            count.1 += d.len() as u64;
                        }
                        None => return,
                    },
                    () = tokio::time::sleep_until(activity.last() + idle) => {
                        if activity.idle_for() >= idle {
                            return;
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = absorbed => {},
            () = evict.cancelled() => {},
            () = async {
                match retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {},
        }
        guard.datagrams = Some((count.0, 0));
        guard.bytes_toserver = count.1;
        Outcome::Refused(reason)
    } else {
        match socket::udp_spoofed(dst, src, pipeline.carrier.upstream.own_mark) {
            Err(e) => Outcome::Ended(Ending::Failed(format!(
                "a socket answering {src} as {dst}: {e}"
            ))),
            Ok(sock) => {
                let client = (
                    ClientDatagrams {
                        first: Some(first),
                        queued: Some(rx),
                        sock: &sock,
                    },
                    &sock,
                );
                let carrier = &pipeline.carrier;
                let carried = async {
                    match &plan.route {
                        Route::Direct if plan.inspects_here() => {
                            crate::l7::dns::serve_udp(
                                client,
                                &ends,
                                pipeline,
                                (idle, &activity),
                                &mut guard,
                            )
                            .await
                        }
                        Route::Direct => {
                            carrier
                                .udp_direct(
                                    client,
                                    &ends,
                                    (idle, &activity),
                                    (false, plan.ids_profile()),
                                    &mut guard,
                                )
                                .await
                        }
                        Route::Tunnel(key) => {
                            carrier
                                .udp_tunnel(client, &ends, key, (idle, &activity), &mut guard)
                                .await
                        }
                    }
                };
                tokio::select! {
                    o = carried => o,
                    () = evict.cancelled() => Outcome::Ended(Ending::Failed(
                        "evicted: the UDP session table was full".to_owned(),
                    )),
                }
            }
        }
    };
    if evict.is_cancelled() {
        telemetry.metrics.udp_evictions.inc();
    }
    let in_table = sessions.remove((src, dst), id);
    telemetry.metrics.udp_sessions.set(in_table as i64);
    guard.finish(outcome);
}
