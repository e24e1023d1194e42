//! The IDS/IPS in the node: the Suricata rules files of the node config, compiled once per
//! IDS profile of the policy (`eastwall_ids::Engine`), and one inspector per allowed
//! connection that an allow rule with `ids: <profile>` decided.
//!
//! Where: at the last node on the path, the one that decides (the destination behind the
//! tunnel, after it decrypted the stream; the source for same-host traffic and destinations
//! outside the mesh). What: the raw stream of both directions for TCP, TLS and opaque
//! connections ([`Inspecting`] wraps a relay's sources; the inspector reads HTTP/1 on them
//! itself), each datagram of a UDP session ([`InspectingDatagrams`]; DNS queries too), and
//! the HTTP buffers of each request and response (`l7::http`, HTTP/1 heads as received). A profile in `detect` mode records alerts; in `prevent` mode
//! any alert of a rule that is not `pass` also stops the offending bytes before they reach
//! the other side: a raw stream is reset, an HTTP request gets 403 and the connection closes.
//! Alerts are Suricata EVE `alert` events in the node's EVE log, with both ends' identities.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use eastwall_ids::{
    AppProto, Classifications, Dir, Engine, FlowInspector, FlowMeta, RuleAction, RuleMask,
    Selection, Timestamp, Transport, Vars, Verdict,
};
use eastwall_policy::{IdsMode, IdsProfile, Policy};
use eastwall_wire::eve::{EveEnds, IdsInfo};
use tracing::{info, warn};

use crate::config::IdsSpec;
use crate::relay::{DatagramSource, Source};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{DropLabels, IdsAnomalyLabels, IdsLabels};

/// The compiled rules: one engine with every rule, shared by the policy's IDS profiles, each
/// profile the selection of it that it runs.
pub struct IdsEngines {
    by_profile: HashMap<Arc<str>, ProfileEngine>,
    /// What they were built from, to tell whether a reload must rebuild them.
    built_from: (Vec<IdsProfile>, Vec<(PathBuf, Option<SystemTime>)>),
}

/// One profile's rules.
#[derive(Clone)]
pub struct ProfileEngine {
    /// The profile's name.
    pub name: Arc<str>,
    /// Detect or prevent.
    pub mode: IdsMode,
    /// The engine, shared by every profile.
    pub engine: Arc<Engine>,
    /// The engine's rules this profile runs.
    pub rules: RuleMask,
}

/// The rules files `paths` name (relative to `base`): a file as given, a folder as its
/// `*.rules` files in name order.
pub fn rule_files(paths: &[PathBuf], base: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let p = base.join(p);
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "rules"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p);
        }
    }
    Ok(files)
}

fn stamps(files: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>)> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).and_then(|m| m.modified()).ok();
            (f.clone(), m)
        })
        .collect()
}

impl IdsEngines {
    /// Reads the rules of `spec` (paths relative to `base`) and builds an engine per profile.
    /// A rule that is skipped or malformed is logged and the rest loads; an unreadable file or
    /// a bad variable is an error.
    pub fn build(spec: &IdsSpec, base: &Path, profiles: &[IdsProfile]) -> anyhow::Result<Self> {
        let files = rule_files(&spec.rules, base)?;
        let mut rules = Vec::new();
        let (mut skipped, mut errors) = (0usize, 0usize);
        for f in &files {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("IDS rules: reading {}", f.display()))?;
            let parsed = eastwall_ids::parse_rules(&f.display().to_string(), &text);
            for e in parsed.errors.iter().take(20) {
                warn!("IDS rule not loaded: {e}");
            }
            skipped += parsed.skipped.len();
            errors += parsed.errors.len();
            rules.extend(parsed.rules);
        }
        let classes = match &spec.classification {
            None => Classifications::suricata_defaults(),
            Some(p) => {
                let p = base.join(p);
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?;
                let (c, errs) = Classifications::parse(&p.display().to_string(), &text);
                for e in errs.iter().take(20) {
                    warn!("classification: {e}");
                }
                c
            }
        };
        let mut vars = Vars::east_west();
        for (k, v) in &spec.vars {
            vars.set(k, v)
                .map_err(|e| anyhow::anyhow!("ids.vars.{k}: {e}"))?;
        }
        // Compiled once, whatever the number of profiles: each selects its rules from it.
        let compiled: &[_] = if profiles.is_empty() { &[] } else { &rules };
        let engine = Arc::new(Engine::build(compiled, &vars, &classes, &Selection::all()).0);
        let mut by_profile = HashMap::new();
        for p in profiles {
            let select = Selection {
                classtypes: (!p.classtypes.is_empty()).then(|| p.classtypes.clone()),
                max_severity: p.max_severity,
                sids: (!p.sids.is_empty()).then(|| p.sids.clone()),
                exclude_sids: p.exclude_sids.clone(),
            };
            let selected = engine.select(&select);
            info!(
                profile = %p.name,
                mode = p.mode.as_str(),
                rules = selected.rule_count(),
                "IDS profile selected"
            );
            by_profile.insert(
                p.name.clone(),
                ProfileEngine {
                    name: p.name.clone(),
                    mode: p.mode,
                    engine: engine.clone(),
                    rules: selected,
                },
            );
        }
        info!(
            rules = engine.rule_count(),
            "IDS rules compiled once for every profile"
        );
        info!(
            files = files.len(),
            loaded = rules.len(),
            skipped,
            errors,
            "IDS rules read"
        );
        Ok(IdsEngines {
            by_profile,
            built_from: (profiles.to_vec(), stamps(&files)),
        })
    }

    /// Whether engines built now from `spec` and `profiles` would differ (profiles or rules
    /// files changed).
    pub fn stale(&self, spec: &IdsSpec, base: &Path, profiles: &[IdsProfile]) -> bool {
        let files = rule_files(&spec.rules, base).unwrap_or_default();
        self.built_from.0 != profiles || self.built_from.1 != stamps(&files)
    }

    /// The engine of `profile`.
    pub fn get(&self, profile: &str) -> Option<&ProfileEngine> {
        self.by_profile.get(profile)
    }

    /// The engines for `policy`'s profiles from `spec`'s rules (paths relative to `base`),
    /// built off the runtime's threads; `None` when the policy has no profiles and the node no
    /// rules. An error when the policy has IDS profiles but the node config no `ids.rules`:
    /// the traffic they cover would go uninspected.
    pub async fn for_policy(
        spec: Option<&IdsSpec>,
        base: &Path,
        policy: &Policy,
    ) -> anyhow::Result<Option<Arc<IdsEngines>>> {
        let profiles = policy.ids_profiles().to_vec();
        match spec {
            None if profiles.is_empty() => Ok(None),
            None => anyhow::bail!(
                "the policy defines IDS profiles ({}) but the node config has no `ids.rules`: the traffic they cover would go uninspected",
                profiles
                    .iter()
                    .map(|p| p.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(spec)
                if !profiles.is_empty()
                    && rule_files(&spec.rules, base).is_ok_and(|f| f.is_empty()) =>
            {
                anyhow::bail!(
                    "the policy defines IDS profiles ({}) but this node has no IDS rules (no rules files in `ids.rules`, and no rule sets in the store): the traffic they cover would go uninspected",
                    profiles
                        .iter()
                        .map(|p| p.name.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Some(spec) => {
                let (spec, base) = (spec.clone(), base.to_path_buf());
                let engines =
                    tokio::task::spawn_blocking(move || IdsEngines::build(&spec, &base, &profiles))
                        .await
                        .context("building the IDS engines")??;
                Ok(Some(Arc::new(engines)))
            }
        }
    }
}

/// The time now, as the IDS counts it.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Closes an inspection when dropped and adds its summary to `into`: an HTTP/2 stream's
/// inspector ends with the stream (its response body, or the handler when there is none).
pub(crate) struct CloseOnDrop {
    /// The stream's inspection.
    pub(crate) ids: SharedIds,
    /// For events and metrics.
    pub(crate) telemetry: Arc<Telemetry>,
    /// The connection's summary of finished streams.
    pub(crate) into: Arc<Mutex<Option<IdsInfo>>>,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let info = close(&self.telemetry, &self.ids);
        let mut acc = self.into.lock().unwrap_or_else(|p| p.into_inner());
        match acc.as_mut() {
            Some(a) => a.merge(info),
            None => *acc = Some(info),
        }
    }
}

/// One connection's inspection.
pub(crate) struct FlowIds {
    inspector: FlowInspector,
    profile: ProfileEngine,
    flow_id: u64,
    ends_info: EveEnds,
    alerts: u64,
    blocked_by: Option<(u32, String)>,
}

/// A connection's inspection, shared by the tasks that feed it.
pub(crate) type SharedIds = Arc<Mutex<FlowIds>>;

impl FlowIds {
    /// The inspection of a connection an allow rule with `ids: <profile>` decided, if
    /// `engines` has that profile.
    pub(crate) fn for_profile(
        engines: &IdsEngines,
        profile: &str,
        flow: FlowMeta,
        (app, transport): (AppProto, Transport),
        flow_id: u64,
        ends_info: EveEnds,
    ) -> Option<SharedIds> {
        let Some(engine) = engines.get(profile) else {
            warn!(profile, "no IDS engine for the profile; not inspected");
            return None;
        };
        Some(FlowIds::new(
            engine.clone(),
            flow,
            (app, transport),
            flow_id,
            ends_info,
        ))
    }

    /// Inspection of the connection or UDP session `flow` (client → server) with `profile`.
    pub(crate) fn new(
        profile: ProfileEngine,
        flow: FlowMeta,
        (app, transport): (AppProto, Transport),
        flow_id: u64,
        ends_info: EveEnds,
    ) -> SharedIds {
        let mut inspector = match transport {
            Transport::Tcp => FlowInspector::new(profile.engine.clone(), flow),
            Transport::Udp => FlowInspector::new_udp(profile.engine.clone(), flow),
        }
        .only(&profile.rules);
        if app != AppProto::Unknown {
            inspector.set_app_proto(app);
        }
        Arc::new(Mutex::new(FlowIds {
            inspector,
            profile,
            flow_id,
            ends_info,
            alerts: 0,
            blocked_by: None,
        }))
    }

    /// The inspector, to feed.
    pub(crate) fn inspector(&mut self) -> &mut FlowInspector {
        &mut self.inspector
    }

    /// Records the alerts of `v` (EVE events, metrics); `Err` with the blocking signature when
    /// the profile prevents and one of them is not from a `pass` rule.
    pub(crate) fn apply(&mut self, telemetry: &Telemetry, v: Verdict) -> Result<(), (u32, String)> {
        if v.is_empty() {
            return Ok(());
        }
        for a in &v.anomalies {
            let flow = self.inspector.flow();
            telemetry.flows.event(&eastwall_ids::anomaly_event(
                a,
                &flow,
                self.flow_id,
                Some(self.ends_info.clone()),
            ));
            telemetry
                .metrics
                .ids_anomalies
                .get_or_create(&IdsAnomalyLabels {
                    profile: self.profile.name.to_string(),
                    event: a.event.name(),
                })
                .inc();
        }
        let prevent = self.profile.mode == IdsMode::Prevent;
        let mut block = None;
        for a in &v.alerts {
            if a.action == RuleAction::Pass {
                continue;
            }
            let blocks = prevent;
            if blocks && block.is_none() {
                block = Some((a.sid, a.msg.clone()));
            }
            self.alerts += 1;
            let flow = self.inspector.flow();
            let mut ev =
                eastwall_ids::alert_event(a, &flow, self.flow_id, Some(self.ends_info.clone()));
            if blocks {
                ev.alert = ev.alert.blocked();
            }
            telemetry.flows.event(&ev);
            telemetry
                .metrics
                .ids_alerts
                .get_or_create(&IdsLabels {
                    profile: self.profile.name.to_string(),
                    action: if blocks { "blocked" } else { "allowed" },
                })
                .inc();
        }
        match block {
            Some(b) => {
                self.blocked_by.get_or_insert(b.clone());
                Err(b)
            }
            None => Ok(()),
        }
    }

    /// The summary for the flow record.
    pub(crate) fn info(&self) -> IdsInfo {
        IdsInfo {
            profile: self.profile.name.to_string(),
            mode: self.profile.mode.as_str(),
            alerts: self.alerts,
            blocked_by: self.blocked_by.as_ref().map(|b| b.0),
        }
    }

    /// The signature that stopped the connection, if one did.
    pub(crate) fn blocked_by(&self) -> Option<(u32, String)> {
        self.blocked_by.clone()
    }
}

/// The error a relay ends with when the IPS stops a stream.
pub(crate) fn blocked_error((sid, msg): (u32, String)) -> io::Error {
    io::Error::other(format!("blocked by IDS signature {sid}: {msg}"))
}

/// Finishes a connection's inspection (rules decided at the end of the stream) and returns
/// its summary.
pub(crate) fn close(telemetry: &Telemetry, ids: &SharedIds) -> IdsInfo {
    let mut f = ids.lock().unwrap_or_else(|p| p.into_inner());
    let v = f.inspector.close(now());
    let _ = f.apply(telemetry, v);
    f.info()
}

/// A relay source whose bytes the IDS sees before they go on; in prevent mode a blocking
/// alert ends the relay with an error (so both sides are reset) and the bytes are dropped.
pub(crate) struct Inspecting<'a, S> {
    /// The source.
    pub(crate) inner: S,
    /// Which way its bytes go.
    pub(crate) dir: Dir,
    /// The connection's inspection.
    pub(crate) ids: SharedIds,
    /// For events and metrics.
    pub(crate) telemetry: &'a Telemetry,
}

impl<S: Source> Source for Inspecting<'_, S> {
    async fn next(&mut self, hint: &mut usize) -> io::Result<Option<Bytes>> {
        let got = self.inner.next(hint).await?;
        let mut f = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let v = match &got {
            Some(b) => f.inspector.stream(self.dir, b, now()),
            None => f.inspector.stream_end(self.dir, now()),
        };
        f.apply(self.telemetry, v).map_err(blocked_error)?;
        Ok(got)
    }
}

/// A datagram source whose datagrams the IDS sees before they go on; in prevent mode a
/// blocking alert drops the datagram and, as Suricata drops a flow, every datagram of the
/// session after it, both ways, until the session ends (idle).
pub(crate) struct InspectingDatagrams<'a, S> {
    /// The source.
    pub(crate) inner: S,
    /// Which way its datagrams go.
    pub(crate) dir: Dir,
    /// The session's inspection.
    pub(crate) ids: SharedIds,
    /// For events and metrics.
    pub(crate) telemetry: &'a Telemetry,
}

impl<S: DatagramSource> DatagramSource for InspectingDatagrams<'_, S> {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let Some(d) = self.inner.recv().await? else {
                return Ok(None);
            };
            let mut f = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            let passes = f.blocked_by.is_none() && {
                let v = f.inspector.datagram(self.dir, &d, now());
                f.apply(self.telemetry, v).is_ok()
            };
            if passes {
                return Ok(Some(d));
            }
            self.telemetry
                .metrics
                .udp_drops
                .get_or_create(&DropLabels {
                    reason: "ids-blocked",
                })
                .inc();
        }
    }
}

/// Boxed error of a body the IDS may stop.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP body whose data the IDS sees on its way (a request's to the server, a response's
/// to the client); in prevent mode a blocking alert ends the body with an error, so the rest
/// never arrives.
pub(crate) struct InspectedBody<B> {
    inner: B,
    ids: SharedIds,
    telemetry: Arc<Telemetry>,
    request: bool,
    ended: bool,
    /// Closes a per-stream inspection when the body is done.
    _close: Option<CloseOnDrop>,
}

impl<B> InspectedBody<B> {
    /// `inner` (a request body if `request`, else a response body) through `ids`.
    pub(crate) fn new(inner: B, ids: SharedIds, telemetry: Arc<Telemetry>, request: bool) -> Self {
        InspectedBody {
            inner,
            ids,
            telemetry,
            request,
            ended: false,
            _close: None,
        }
    }

    /// This body, closing `close`'s inspection when it is done.
    pub(crate) fn closing(self, close: Option<CloseOnDrop>) -> Self {
        InspectedBody {
            _close: close,
            ..self
        }
    }

    fn inspect(&mut self, chunk: &[u8], end: bool) -> Result<(), BoxError> {
        let mut f = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let v = if self.request {
            f.inspector().http_request_body(chunk, end, now())
        } else {
            f.inspector().http_response_body(chunk, end, now())
        };
        f.apply(&self.telemetry, v)
            .map_err(|b| BoxError::from(blocked_error(b)))
    }
}

impl<B> hyper::body::Body for InspectedBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let end = this.inner.is_end_stream();
                    let data = data.clone();
                    if let Err(e) = this.inspect(&data, end) {
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.ended |= end;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => {
                if !this.ended {
                    this.ended = true;
                    if let Err(e) = this.inspect(&[], true) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn profiles_share_one_engine_and_select_their_rules() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.rules"),
            concat!(
                "alert tcp any any -> any any (msg:\"w\"; content:\"x\"; classtype:web-application-attack; sid:1;)\n",
                "alert tcp any any -> any any (msg:\"t\"; content:\"y\"; classtype:trojan-activity; sid:2;)\n",
            ),
        )
        .unwrap();
        let spec = IdsSpec {
            rules: vec!["a.rules".into()],
            classification: None,
            vars: Default::default(),
        };
        let profile = |name: &str, classtypes: &[&str]| IdsProfile {
            name: name.into(),
            mode: IdsMode::Detect,
            classtypes: classtypes.iter().map(|c| c.to_string()).collect(),
            max_severity: None,
            sids: Vec::new(),
            exclude_sids: Vec::new(),
        };
        let profiles = [
            profile("web", &["web-application-attack"]),
            profile("all", &[]),
        ];
        let e = IdsEngines::build(&spec, d.path(), &profiles).unwrap();
        let (web, all) = (e.get("web").unwrap(), e.get("all").unwrap());
        assert!(Arc::ptr_eq(&web.engine, &all.engine));
        assert_eq!((web.rules.rule_count(), all.rules.rule_count()), (1, 2));
        // No profile: nothing compiled.
        let none = IdsEngines::build(&spec, d.path(), &[]).unwrap();
        assert!(none.get("web").is_none());
    }
}
