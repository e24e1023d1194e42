//! `eastwall node`: build the node from its config (load and validate, obtain certificates,
//! open the tunnel, build the IDS engines and the directory), put the pipeline together,
//! start its tasks (listeners, tunnel servers, renewals, admin, hot reload), install capture,
//! and stop on a signal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::admin::AdminView;
use crate::ca::client::CaClient;
use crate::config::{CaClientSpec, CertSource, NodeConfig};
use crate::conn::budget::Limits;
use crate::conn::carry::UpstreamSpec;
use crate::conn::{Budgets, Carrier, Entry, Here, Pipeline};
use crate::directory::Directory;
use crate::front::tunnel::TunnelFront;
use crate::identity::{LocalIdentities, UserCertSource, UserCertificates, renew};
use crate::ids::IdsEngines;
use crate::reload::IdentityUpkeep;
use crate::rules::Rules;
use crate::telemetry::{FlowLog, Metrics, Telemetry};
use crate::tunnel::Tunnel;
use crate::tunnel::pool::PoolLimits;
use crate::{admin, capture, front, tunnel};

/// Validates everything, then runs the node until SIGINT or SIGTERM. The capture table is
/// left in place on exit so captured traffic stays blocked while the node is down.
pub fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    // With a central store: its configuration in the state folder, unless one is there.
    crate::store::prepare(&cfg, Duration::from_secs(30))?;
    // ... and its node configuration sections.
    let cfg = crate::store::with_stored_defaults(cfg)?;
    for w in cfg.warnings.iter().filter(|w| w.line == 0) {
        tracing::warn!("{w}");
    }
    let (rules, warnings) = Rules::load(&cfg.registry_path, &cfg.policy_path)?;
    crate::rules::log_warnings(&warnings);
    if rules.registry.node(&cfg.node_name).is_none() {
        anyhow::bail!(
            "node `{}` is not declared in {}",
            cfg.node_name,
            cfg.registry_path.display()
        );
    }
    // A parent may have left signals blocked (the mask is inherited across exec); the node
    // must hear SIGTERM.
    let mut stop = nix::sys::signal::SigSet::empty();
    stop.add(nix::sys::signal::Signal::SIGTERM);
    stop.add(nix::sys::signal::Signal::SIGINT);
    stop.thread_unblock()?;
    let open_files = raise_open_file_limit();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.runtime.worker_threads > 0 {
        rt.worker_threads(cfg.runtime.worker_threads);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the async runtime (runtime.workerThreads)")?;
    rt.block_on(serve(cfg, rules, open_files))
}

async fn serve(cfg: NodeConfig, rules: Rules, open_files: u64) -> anyhow::Result<()> {
    let local_addrs: Vec<IpAddr> = rules
        .registry
        .workloads_on(&cfg.node_name)
        .flat_map(|w| w.addresses.iter().copied())
        .collect();
    let metrics = Metrics::default();
    let flows = FlowLog::open(
        cfg.flow_log.path.as_deref(),
        cfg.flow_log.recent,
        crate::telemetry::flowlog::Rotation {
            max_bytes: cfg.flow_log.max_bytes,
            keep: cfg.flow_log.keep,
        },
        metrics.flow_log_write_errors.clone(),
        metrics.flow_log_dropped.clone(),
    )
    .context("opening the flow log")?;
    // The collector, if any: a backlog the flow log fills and a task that empties it.
    let mut export = None;
    let flows = match (&cfg.export, &cfg.identity) {
        (Some(spec), Some(id)) => {
            let bundle =
                crate::identity::load_bundle(&id.trust_bundle, rules.registry.trust_domain())?;
            let (tx, rx) = tokio::sync::mpsc::channel(spec.backlog_records);
            let dropped = metrics
                .flow_export
                .get_or_create(&crate::telemetry::metrics::ResultLabels { result: "dropped" })
                .clone();
            export = Some((spec.clone(), bundle, rx, tx.clone()));
            flows.with_export(tx, dropped)
        }
        _ => flows,
    };
    let telemetry = Arc::new(Telemetry::new(metrics, flows));
    let limits = Limits::derive(
        open_files,
        cfg.limits.reserved_descriptors,
        cfg.limits.connections_per_workload,
    );
    if limits.per_workload > limits.node {
        warn!(
            per_workload = limits.per_workload,
            node = limits.node,
            open_files,
            "limits: `connectionsPerWorkload` is above what the open-file limit lets the node carry; one workload can take every connection"
        );
    }
    if limits.node < 64 {
        warn!(
            node = limits.node,
            open_files,
            reserved = cfg.limits.reserved_descriptors,
            "limits: the open-file limit leaves room for fewer than 64 connections; raise it (LimitNOFILE) or lower `reservedDescriptors`"
        );
    }
    info!(limits = %limits.describe(), "connection budgets");
    let budgets = Budgets::new(limits, telemetry.clone());
    // The tunnel: this node's workload certificates, the QUIC endpoint, the pool.
    let mut tunnel_endpoint = None;
    let mut tunnel_listener = None;
    let mut identities = None;
    // Renewal tasks of identities from the CA: (client, identities) to spawn once the state
    // (and its metrics) exist.
    let mut from_ca = None;
    if let Some(id) = &cfg.identity {
        let ids = match &id.source {
            CertSource::Files { cert_dir, .. } => Arc::new(LocalIdentities::load(
                &id.trust_bundle,
                cert_dir,
                &rules.registry,
                &cfg.node_name,
            )?),
            CertSource::Ca(spec) => {
                let (client, ids) = identities_from_ca(
                    spec,
                    &id.trust_bundle,
                    &rules,
                    &cfg.node_name,
                    cfg.capture.own_mark,
                )
                .await?;
                from_ca = Some(Arc::new(client));
                ids
            }
        };
        let ep = tunnel::endpoint(cfg.tunnel.port, &ids, cfg.capture.own_mark)?;
        tunnel_endpoint = Some(ep);
        tunnel_listener = Some(tunnel::h2::listener(cfg.tunnel.port, cfg.capture.own_mark)?);
        let reload_secs = match &id.source {
            CertSource::Files { reload_secs, .. } => Some(*reload_secs),
            CertSource::Ca(_) => None,
        };
        identities = Some((ids, reload_secs));
    }
    let workers = match cfg.runtime.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let pool = match (&tunnel_endpoint, &identities) {
        (Some(ep), Some((ids, _))) => Some(Tunnel::new(
            cfg.tunnel.transport,
            ep.clone(),
            ids.clone(),
            cfg.capture.own_mark,
            Duration::from_secs(cfg.capture.connect_timeout_secs),
            PoolLimits {
                streams_per_connection: cfg.tunnel.streams_per_connection,
                max_connections: match cfg.tunnel.max_connections_per_peer {
                    0 => workers,
                    n => n,
                },
                ..PoolLimits::default()
            },
            telemetry.metrics.tunnel_dials.clone(),
        )),
        _ => None,
    };
    let ids = IdsEngines::for_policy(cfg.ids.as_ref(), &cfg.base_dir, &rules.policy).await?;
    let directory = match &cfg.directory {
        Some(d) => {
            Some(Directory::build(d, &cfg.base_dir, cfg.capture.own_mark).context("directory")?)
        }
        None => None,
    };
    let user_certs = match (&cfg.identity, &identities) {
        (Some(id), Some((ids, _))) => match (&id.source, &from_ca) {
            (CertSource::Files { cert_dir, .. }, _) => Some(Arc::new(UserCertificates::new(
                ids.clone(),
                UserCertSource::Files(cert_dir.clone()),
            ))),
            (CertSource::Ca(_), Some(client)) => Some(Arc::new(UserCertificates::new(
                ids.clone(),
                UserCertSource::Ca(client.clone(), telemetry.metrics.cert_renewals.clone()),
            ))),
            _ => None,
        },
        _ => None,
    };
    crate::conn::show_in_force(&telemetry.metrics, &rules);
    let tunnel_port = pool.as_ref().map(|_| cfg.tunnel.port);
    let pipeline = Arc::new(Pipeline {
        here: Here {
            node: cfg.node_name.clone(),
            tunnel_port,
        },
        rules: ArcSwap::from_pointee(rules),
        directory,
        carrier: Carrier {
            upstream: UpstreamSpec {
                own_mark: cfg.capture.own_mark,
                connect_timeout: Duration::from_secs(cfg.capture.connect_timeout_secs),
            },
            tunnel: pool,
            user_certs,
            ids: ArcSwapOption::new(ids),
            live: Default::default(),
            telemetry: telemetry.clone(),
        },
        telemetry: telemetry.clone(),
        l7: cfg.l7.clone(),
        udp: cfg.udp.clone(),
        budgets,
    });
    let mut tasks = Vec::new();
    if matches!(pipeline.directory, Some(Directory::Ldap(_))) {
        let pipeline = pipeline.clone();
        tasks.push(tokio::spawn(async move {
            let mut before = eastwall_identity::directory::MetricsSnapshot::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(Directory::Ldap(d)) = &pipeline.directory {
                    let now = d.metrics();
                    pipeline.telemetry.metrics.directory.update(&before, &now);
                    before = now;
                }
            }
        }));
    }
    let front = Arc::new(TunnelFront {
        pipeline: pipeline.clone(),
    });
    if let Some(ep) = tunnel_endpoint.clone() {
        tasks.push(tokio::spawn(tunnel::quic::serve(ep, front.clone())));
    }
    if let (Some(l), Some((ids, _))) = (tunnel_listener, &identities) {
        tasks.push(tokio::spawn(tunnel::h2::serve(
            l,
            ids.clone(),
            front.clone(),
        )));
    }
    if cfg.store.is_some() {
        let cfg = Arc::new(cfg.clone());
        let refusal = Arc::new(crate::store::Refusal::default());
        let ids = identities.as_ref().map(|(ids, _)| ids.clone());
        tasks.push(tokio::spawn(crate::store::follow(
            cfg.clone(),
            pipeline.clone(),
            refusal.clone(),
        )));
        tasks.push(tokio::spawn(crate::store::report(
            cfg,
            pipeline.clone(),
            refusal,
            ids,
        )));
    }
    let mut upkeep = IdentityUpkeep::None;
    if let (Some(id), Some((ids, _))) = (&cfg.identity, &identities)
        && let CertSource::Files { cert_dir, .. } = &id.source
    {
        upkeep = IdentityUpkeep::Files {
            ids: ids.clone(),
            cert_dir: cert_dir.clone(),
        };
    }
    if let (Some(client), Some((ids, _))) = (from_ca, &identities) {
        upkeep = IdentityUpkeep::Ca {
            ids: ids.clone(),
            client: client.clone(),
        };
        for id in ids.server.ids() {
            tasks.push(tokio::spawn(renew::rotate(
                client.clone(),
                ids.clone(),
                id,
                telemetry.metrics.cert_renewals.clone(),
            )));
        }
    }
    let held = identities.as_ref().map(|(ids, _)| ids.clone());
    if let Some((ids, Some(secs))) = identities {
        let telemetry = telemetry.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(secs));
            loop {
                tick.tick().await;
                let failed = ids.reload_changed();
                telemetry.metrics.cert_reload_failures.inc_by(failed as u64);
            }
        }));
    }

    // Listeners first, so that capture never points at a port nobody serves.
    let sessions = Arc::new(front::udp::Sessions::new(cfg.udp.clone()));
    for (port, entry) in [
        (cfg.capture.outbound_port, Entry::Outbound),
        (cfg.capture.inbound_port, Entry::Inbound),
    ] {
        let v4 = capture::socket::transparent_listener(
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            cfg.capture.own_mark,
        )
        .with_context(|| format!("listening on {port} (IPv4, transparent)"))?;
        let serve = |l| front::capture::serve(l, entry.clone(), pipeline.clone());
        tasks.push(tokio::spawn(serve(v4)));
        match capture::socket::transparent_listener(
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
            cfg.capture.own_mark,
        ) {
            Ok(v6) => tasks.push(tokio::spawn(serve(v6))),
            Err(e) => warn!(%e, port, "no IPv6 listener; IPv6 capture stays fail-closed"),
        }
        // UDP on the same port numbers, one session table for all listeners.
        let udp = |l| front::udp::serve(l, entry.clone(), pipeline.clone(), sessions.clone());
        let v4 = capture::socket::transparent_udp_listener(
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            cfg.capture.own_mark,
        )
        .with_context(|| format!("listening on {port}/udp (IPv4, transparent)"))?;
        tasks.push(tokio::spawn(udp(v4)));
        match capture::socket::transparent_udp_listener(
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
            cfg.capture.own_mark,
        ) {
            Ok(v6) => tasks.push(tokio::spawn(udp(v6))),
            Err(e) => warn!(%e, port, "no IPv6 UDP listener; IPv6 UDP capture stays fail-closed"),
        }
    }
    // Other protocols' new flows, queued by the kernel; each queue has its thread.
    let rt = tokio::runtime::Handle::current();
    let mut queues = vec![(cfg.capture.packet_queue, Entry::Outbound)];
    if cfg.capture.inbound {
        queues.push((cfg.capture.packet_queue + 1, Entry::Inbound));
    }
    for (queue, entry) in queues {
        front::packets::spawn(queue, entry, pipeline.clone(), rt.clone())
            .with_context(|| format!("reading packet queue {queue} (netfilter queue)"))?;
    }
    let admin = admin::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("admin endpoint {}", cfg.admin.listen))?;
    let token = match &cfg.admin.token_file {
        Some(path) => Some(admin::read_token(path)?),
        None => None,
    };
    let view = Arc::new(AdminView {
        telemetry: telemetry.clone(),
        limits: limits.describe(),
        token,
        scope: admin::Scope::Admin,
    });
    tasks.push(tokio::spawn(admin::serve(admin, view)));
    if let Some(m) = &cfg.metrics {
        let listener = admin::bind(m.listen)
            .await
            .with_context(|| format!("metrics listener {}", m.listen))?;
        let view = Arc::new(AdminView {
            telemetry: telemetry.clone(),
            limits: limits.describe(),
            token: None,
            scope: admin::Scope::Metrics,
        });
        tasks.push(tokio::spawn(admin::serve(listener, view)));
    }
    {
        // Aggregate records of floods are written when their window closes; certificates
        // renewed or reloaded show their new expiry.
        let telemetry = telemetry.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut shown = Vec::new();
            loop {
                tick.tick().await;
                telemetry.flush_folds();
                if let Some(ids) = &held {
                    telemetry.metrics.certificates(&ids.expiries(), &mut shown);
                }
            }
        }));
    }

    // Not among `tasks`: at stop it has 2 s more to send what is left.
    let exporting = export.map(|(spec, bundle, rx, tx)| {
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(crate::collector::export::export(
            spec,
            bundle,
            Some(cfg.capture.own_mark),
            rx,
            telemetry.metrics.flow_export.clone(),
            in_flight.clone(),
        ));
        (tx, task, in_flight)
    });
    capture::install(&cfg.capture, &local_addrs)?;
    telemetry.health.set_ready();
    tasks.push(tokio::spawn(crate::reload::watch(
        Arc::new(cfg.clone()),
        pipeline.clone(),
        upkeep,
        local_addrs.clone(),
    )));
    tasks.push(tokio::spawn(front::capture::watch_spoofing(
        pipeline.clone(),
        cfg.capture.table.clone(),
    )));
    info!(node = %cfg.node_name, workloads = local_addrs.len(), admin = %cfg.admin.listen, "capturing");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    drain(
        &pipeline,
        Duration::from_secs(cfg.runtime.drain_secs),
        &mut term,
    )
    .await;
    info!(
        "stopped; the capture table stays, so captured traffic is refused until the node is back"
    );
    for t in tasks {
        t.abort();
    }
    // Folded flows get their aggregate records before the node goes, and every record
    // queued reaches the file (and, for 2 s at most, the collector).
    telemetry.flush_all_folds();
    if !telemetry.flows.flush(Duration::from_secs(5)) {
        warn!("the flow log did not take every record within 5 s");
    }
    if let Some((backlog, task, in_flight)) = exporting {
        // Sent, not merely taken from the backlog.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while (backlog.capacity() < backlog.max_capacity()
            || in_flight.load(std::sync::atomic::Ordering::Acquire) > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
    }
    Ok(())
}

/// Stops taking connections (each new one is refused, and recorded, as the node's budget
/// refuses: `node-stopping`; `/healthz` says `stopping`), lets those in progress go on for
/// up to `within` (a second SIGTERM: no longer), then ends the rest as revoked by
/// `node-stopping`, so each leaves its record.
async fn drain(pipeline: &Pipeline, within: Duration, term: &mut tokio::signal::unix::Signal) {
    pipeline.budgets.stop();
    pipeline.telemetry.health.set_stopping();
    let held = pipeline.budgets.held();
    info!(
        connections = held,
        drain_secs = within.as_secs(),
        "stopping: refusing new connections, draining those in progress"
    );
    let deadline = tokio::time::Instant::now() + within;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        if pipeline.budgets.held() == 0 {
            info!("drained: no connection left");
            return;
        }
        tokio::select! {
            _ = poll.tick() => {}
            () = tokio::time::sleep_until(deadline) => break,
            _ = term.recv() => {
                info!("a second SIGTERM: not waiting any longer");
                break;
            }
        }
    }
    let ended = pipeline.carrier.live.end_all("node-stopping");
    warn!(
        ended,
        left = pipeline.budgets.held(),
        "drain time over: ending the connections still in progress"
    );
    // Their tasks see the revocation, close both sides and write their records.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while pipeline.budgets.held() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Obtains a certificate for every local workload identity from the CA (a few quick retries;
/// then start-up fails) and returns the client (for renewals) and the identities.
async fn identities_from_ca(
    spec: &CaClientSpec,
    bundle_path: &std::path::Path,
    rules: &Rules,
    node: &str,
    own_mark: u32,
) -> anyhow::Result<(CaClient, Arc<LocalIdentities>)> {
    let bundle = crate::identity::load_bundle(bundle_path, rules.registry.trust_domain())?;
    if crate::ca::client::enroll_if_needed(spec, &bundle, node, Some(own_mark)).await? {
        info!(node_cert = %spec.node_cert.display(), "enrolled with the bootstrap token: the node certificate is in place");
    }
    let client = CaClient::new(spec, bundle, node, Some(own_mark))?;
    let wanted = LocalIdentities::wanted(&rules.registry, node);
    info!(url = %spec.url, identities = wanted.len(), "obtaining workload certificates from the CA");
    let issued = renew::obtain_all(&client, &wanted).await?;
    let ids = LocalIdentities::from_ca(bundle_path, &rules.registry, node, &issued)?;
    Ok((client, Arc::new(ids)))
}

/// Raises the open-file limit to its hard limit (every carried connection holds two
/// descriptors, and running out refuses connections of every workload alike); the limit in
/// force.
fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                info!(from = soft, to = hard, "raised the open-file limit");
                hard
            }
            Err(e) => {
                warn!(%e, soft, hard, "could not raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => {
            info!(limit = soft, "open-file limit");
            soft
        }
        Err(e) => {
            warn!(%e, "could not read the open-file limit; assuming 1024");
            1024
        }
    }
}
