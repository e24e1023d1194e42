//! The DNS layer of the deciding node. On a flow that rules with `dns` conditions apply to,
//! every message from the client is decided on its own before it goes on: a UDP session
//! datagram by datagram, DNS over TCP (RFC 7766) message by message. A standard query is
//! decided on the name it asks (`L7::Dns`); a denied one is answered by the node with REFUSED
//! (`l7.dnsDenied: refuse`, the client's resolver moves on at once) or dropped (`drop`), and
//! never reaches the server. Anything else (a message that is not one readable standard
//! query) is decided as opaque: `dns` allow rules do not match it, `dns` deny rules do, and if
//! denied it is dropped.
//!
//! Each request leaves an EVE `dns` event with its decision, each response relayed back
//! one of its own (Suricata's version 3 shape); the flow record counts the queries and the
//! denied ones. An allowed query whose rule names an IDS profile is inspected by that
//! profile (one inspector per profile per flow, which also sees every response); in prevent
//! mode a blocking alert drops the query (or the response).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use eastwall_ids::{AppProto, Dir, FlowMeta, Transport};
use eastwall_policy::L7;
use eastwall_wire::dns::{self, Message};
use eastwall_wire::eve::{self, DnsEvent, L7Decision, RequestCounts};
use eastwall_wire::header::Status;

use crate::config::DnsDenied;
use crate::conn::carry::Downstream;
use crate::conn::record::{FlowGuard, policy_info};
use crate::conn::{Ending, Ends, Hop, Outcome, Pipeline};
use crate::ids::{FlowIds, SharedIds};
use crate::relay::{Activity, DatagramSink, DatagramSource, FramedSink, FramedSource, Prefixed};
use crate::telemetry::metrics::{DropLabels, HttpLabels};

/// Carries a UDP session straight to its server, deciding every client datagram as above;
/// fills the record and returns how the session ended.
pub(crate) async fn serve_udp<CR, CW>(
    (cr, cw): (CR, CW),
    ends: &Ends,
    pipeline: &Arc<Pipeline>,
    idle: (Duration, &Activity),
    guard: &mut FlowGuard,
) -> Outcome
where
    CR: DatagramSource,
    CW: DatagramSink,
{
    let session = DnsFlow::new(pipeline, ends, guard, Transport::Udp);
    let (queries, answers) = session.gate(cr, cw, idle.1);
    let outcome = pipeline
        .carrier
        .udp_direct((queries, answers), ends, idle, (true, None), guard)
        .await;
    session.finish(guard);
    outcome
}

/// Carries a DNS over TCP connection (its first bytes in `prefix`) straight to its server,
/// deciding every message from the client as above; fills the record and returns how the
/// connection ended.
pub(crate) async fn serve_tcp<D: Downstream>(
    down: D,
    prefix: Bytes,
    ends: &Ends,
    pipeline: &Arc<Pipeline>,
    guard: &mut FlowGuard,
) -> Outcome {
    let carrier = &pipeline.carrier;
    let dst = ends.dst.addr;
    let direction = ends.direction();
    let upstream = match carrier.connect(ends.src.addr.ip(), dst, direction).await {
        Ok(s) => s,
        Err(e) => {
            let error = format!("connecting to {dst}: {e}");
            down.refuse(Status::Unreachable, &error).await;
            return Outcome::Unreachable {
                hop: Hop::Server,
                error,
            };
        }
    };
    let (recv, send) = match down.accept_raw().await {
        Ok(halves) => halves,
        Err(e) => return Outcome::Ended(Ending::Failed(e.to_string())),
    };
    let client_messages = FramedSource::new(Prefixed {
        early: Some(prefix),
        inner: recv,
    });
    let (ur, uw) = upstream.into_split();
    let server = (FramedSource::new(ur), FramedSink(uw));
    let session = DnsFlow::new(pipeline, ends, guard, Transport::Tcp);
    let activity = Activity::default();
    // RFC 7766 6.2.3: a connection without queries is closed after a few seconds.
    let idle = pipeline.udp.idle_for(53);
    let (queries, answers) = session.gate(client_messages, FramedSink(send), &activity);
    let live = carrier.live.register(ends.clone(), true);
    let outcome = carrier
        .relay_session(
            direction,
            &live,
            (queries, answers),
            server,
            (idle, &activity),
            guard,
        )
        .await;
    session.finish(guard);
    // A byte stream: its bytes count with the length prefixes, and it has no packets.
    if let Some((up, down)) = guard.datagrams.take() {
        guard.bytes_toserver += 2 * up;
        guard.bytes_toclient += 2 * down;
    }
    outcome
}

/// What the layer shares between the two directions of a flow.
struct DnsFlow<'a> {
    pipeline: &'a Arc<Pipeline>,
    ends: &'a Ends,
    transport: Transport,
    flow_id: u64,
    src_info: eve::Endpoint,
    dst_info: eve::Endpoint,
    ends_info: eve::EveEnds,
    /// The flow's inspections, one per IDS profile that allowed one of its queries.
    ids: Mutex<Vec<(String, SharedIds)>>,
    counts: Mutex<RequestCounts>,
    /// Requests (counted from 0, as Suricata's `tx_id`) and the id of each one forwarded and
    /// not yet answered, to give a response its request's number.
    pending: Mutex<Pending>,
    /// Messages and bytes from the client the node answered or dropped itself.
    absorbed: Mutex<(u64, u64)>,
    /// Messages and bytes the node answered with.
    refusals: Mutex<(u64, u64)>,
}

#[derive(Default)]
struct Pending {
    next_tx: u64,
    /// (message id, tx_id) of forwarded requests; bounded.
    open: std::collections::VecDeque<(u16, u64)>,
}

/// Forwarded requests remembered to number their responses.
const PENDING: usize = 256;

/// What becomes of one message from the client.
#[derive(Debug, PartialEq, Eq)]
enum Gate {
    /// It goes on to the server.
    Forward,
    /// It stops here; the node answers the client with this (a REFUSED answer) if anything.
    Stop(Option<Vec<u8>>),
}

impl<'a> DnsFlow<'a> {
    fn new(
        pipeline: &'a Arc<Pipeline>,
        ends: &'a Ends,
        guard: &FlowGuard,
        transport: Transport,
    ) -> Self {
        DnsFlow {
            pipeline,
            ends,
            transport,
            flow_id: guard.flow_id,
            src_info: guard.src_info.clone(),
            dst_info: guard.dst_info.clone(),
            ends_info: guard.ends(),
            ids: Mutex::new(Vec::new()),
            counts: Mutex::new(RequestCounts::default()),
            pending: Mutex::new(Pending::default()),
            absorbed: Mutex::new((0, 0)),
            refusals: Mutex::new((0, 0)),
        }
    }

    /// The client's side of the relay: its messages through the gate, and one sink for the
    /// server's answers and the node's own.
    fn gate<'s, R: DatagramSource, W: DatagramSink>(
        &'s self,
        source: R,
        sink: W,
        activity: &'s Activity,
    ) -> (Queries<'s, 'a, R, W>, Answers<'s, 'a, W>) {
        let sink = Shared(Arc::new(tokio::sync::Mutex::new(sink)));
        let queries = Queries {
            inner: source,
            answers: sink.clone(),
            flow: self,
            activity,
        };
        let answers = Answers {
            inner: sink,
            flow: self,
        };
        (queries, answers)
    }

    /// Adds what the layer counted to the record.
    fn finish(&self, guard: &mut FlowGuard) {
        let (msgs, bytes) = *self.absorbed.lock().unwrap_or_else(|p| p.into_inner());
        let (answers, answer_bytes) = *self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((up, down)) = guard.datagrams.as_mut() {
            *up += msgs;
            *down += answers;
        }
        guard.bytes_toserver += bytes;
        guard.bytes_toclient += answer_bytes;
        let counts = *self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.requests > 0 {
            guard.app_proto = Some("dns");
        }
        guard.dns_queries = Some(counts);
        let telemetry = &self.pipeline.telemetry;
        for (_, ids) in self.ids.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            guard.add_ids(Some(crate::ids::close(telemetry, &ids)));
        }
    }

    /// The inspection of this flow by `profile` (made at its first query).
    fn inspection(&self, profile: &str) -> Option<SharedIds> {
        let mut all = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, ids)) = all.iter().find(|(p, _)| p == profile) {
            return Some(ids.clone());
        }
        let engines = self.pipeline.ids()?;
        let ids = FlowIds::for_profile(
            &engines,
            profile,
            FlowMeta {
                src: self.ends.src.addr,
                dst: self.ends.dst.addr,
            },
            (AppProto::Dns, self.transport),
            self.flow_id,
            self.ends_info.clone(),
        )?;
        all.push((profile.to_owned(), ids.clone()));
        Some(ids)
    }

    /// Shows one message to `ids`; `false` when the IPS blocks it.
    fn inspect(&self, ids: &SharedIds, dir: Dir, message: &[u8]) -> bool {
        let mut f = ids.lock().unwrap_or_else(|p| p.into_inner());
        let now = crate::ids::now();
        let v = match self.transport {
            Transport::Udp => f.inspector().datagram(dir, message, now),
            // The stream as it is on the wire: each message behind its length.
            Transport::Tcp => {
                let mut framed = Vec::with_capacity(2 + message.len());
                framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
                framed.extend_from_slice(message);
                f.inspector().stream(dir, &framed, now)
            }
        };
        f.apply(&self.pipeline.telemetry, v).is_ok()
    }

    /// Shows a response to every inspection of the flow; `false` when one blocks it.
    fn inspect_response(&self, message: &[u8]) -> bool {
        let all: Vec<SharedIds> = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, ids)| ids.clone())
            .collect();
        // Every inspector sees it, even after one blocked it.
        let mut passes = true;
        for ids in &all {
            passes &= self.inspect(ids, Dir::ToClient, message);
        }
        passes
    }

    /// Decides one message from the client with the rules in force and the users' groups as
    /// the directory says now.
    async fn decide(&self, d: &[u8]) -> Gate {
        let query = dns::parse(d)
            .ok()
            .filter(|m| !m.header.response && m.header.opcode == 0);
        let mut ends = self.ends.clone();
        self.pipeline.fill_groups(&mut ends).await;
        let facts = match &query {
            Some(m) => L7::Dns { name: &m.name },
            None => L7::Opaque,
        };
        let plan = self.pipeline.plan(&ends, facts);
        let allowed = plan.allows();
        let metrics = &self.pipeline.telemetry.metrics;
        let Some(m) = query else {
            if allowed {
                return Gate::Forward;
            }
            metrics
                .udp_drops
                .get_or_create(&DropLabels {
                    reason: "not-a-dns-query",
                })
                .inc();
            return Gate::Stop(None);
        };
        {
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            c.requests += 1;
            c.denied += u64::from(!allowed);
        }
        let tx_id = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let tx = p.next_tx;
            p.next_tx += 1;
            if allowed {
                if p.open.len() == PENDING {
                    p.open.pop_front();
                }
                p.open.push_back((m.header.id, tx));
            }
            tx
        };
        let direction = ends.direction();
        metrics
            .dns_queries
            .get_or_create(&HttpLabels {
                direction: direction.as_str(),
                verdict: if allowed { "allow" } else { "deny" },
            })
            .inc();
        let decision = L7Decision {
            node: self.pipeline.here.node.clone(),
            direction,
            src: eve::Endpoint {
                groups: ends.src.groups,
                ..self.src_info.clone()
            },
            dest: eve::Endpoint {
                groups: ends.dst.groups,
                ..self.dst_info.clone()
            },
            policy: policy_info(&plan),
            normalized_path: None,
        };
        self.event(&m, tx_id, Some(decision));
        if allowed
            && let Some(ids) = plan.ids_profile().and_then(|p| self.inspection(p))
            && !self.inspect(&ids, Dir::ToServer, d)
        {
            // The IPS stops it: dropped, as a blocked packet is.
            return Gate::Stop(None);
        }
        match (allowed, self.pipeline.l7.dns_denied) {
            (true, _) => Gate::Forward,
            (false, DnsDenied::Refuse) => Gate::Stop(Some(dns::refused(d, &m))),
            (false, DnsDenied::Drop) => Gate::Stop(None),
        }
    }

    /// Logs a response from the server.
    fn answered(&self, m: &Message) {
        let tx_id = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match p.open.iter().position(|&(id, _)| id == m.header.id) {
                Some(i) => p.open.remove(i).map_or(0, |(_, tx)| tx),
                // Not a response to a request seen here (a late or spoofed one): numbered
                // past the requests.
                None => p.next_tx,
            }
        };
        self.event(m, tx_id, None);
    }

    fn event(&self, m: &Message, tx_id: u64, eastwall: Option<L7Decision>) {
        let (src, dst) = (self.ends.src.addr, self.ends.dst.addr);
        let event = DnsEvent {
            timestamp: eve::timestamp(SystemTime::now()),
            host: self.pipeline.here.node.clone(),
            flow_id: self.flow_id,
            event_type: "dns",
            src_ip: src.ip(),
            src_port: src.port(),
            dest_ip: dst.ip(),
            dest_port: dst.port(),
            proto: self.transport.as_str(),
            dns: m.eve(tx_id),
            eastwall,
        };
        self.pipeline.telemetry.flows.event(&event);
    }
}

/// A sink both directions write to: the server's answers and the node's refusals.
struct Shared<W>(Arc<tokio::sync::Mutex<W>>);

impl<W> Clone for Shared<W> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<W: DatagramSink> DatagramSink for Shared<W> {
    async fn send(&mut self, datagram: Bytes) -> std::io::Result<()> {
        self.0.lock().await.send(datagram).await
    }
}

/// The client's messages, those the policy lets through.
struct Queries<'s, 'a, R, W> {
    inner: R,
    answers: Shared<W>,
    flow: &'s DnsFlow<'a>,
    activity: &'s Activity,
}

impl<R: DatagramSource, W: DatagramSink> DatagramSource for Queries<'_, '_, R, W> {
    async fn recv(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            let Some(d) = self.inner.recv().await? else {
                return Ok(None);
            };
            match self.flow.decide(&d).await {
                Gate::Forward => return Ok(Some(d)),
                Gate::Stop(answer) => {
                    // A refused client is still an active one: the session stays.
                    self.activity.touch();
                    {
                        let mut a = self.flow.absorbed.lock().unwrap_or_else(|p| p.into_inner());
                        a.0 += 1;
                        a.1 += d.len() as u64;
                    }
                    if let Some(answer) = answer {
                        {
                            let mut r =
                                self.flow.refusals.lock().unwrap_or_else(|p| p.into_inner());
                            r.0 += 1;
                            r.1 += answer.len() as u64;
                        }
                        self.answers.send(Bytes::from(answer)).await?;
                    }
                }
            }
        }
    }
}

/// The server's messages to the client, logged when they are DNS responses.
struct Answers<'s, 'a, W> {
    inner: Shared<W>,
    flow: &'s DnsFlow<'a>,
}

impl<W: DatagramSink> DatagramSink for Answers<'_, '_, W> {
    async fn send(&mut self, datagram: Bytes) -> std::io::Result<()> {
        if let Ok(m) = dns::parse(&datagram)
            && m.header.response
        {
            self.flow.answered(&m);
        }
        if !self.flow.inspect_response(&datagram) {
            // The IPS stops it: the client never gets it.
            return Ok(());
        }
        self.inner.send(datagram).await
    }
}
