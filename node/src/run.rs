//! `eastwall node`: load, install capture, listen, serve, and stop on a signal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::config::{NodeConfig, Rules};
use crate::flow::FlowLog;
use crate::identity::LocalIdentities;
use crate::metrics::Metrics;
use crate::proxy::Listener;
use crate::state::NodeState;
use crate::tunnel::pool::Pool;
use crate::{admin, capture, proxy, tunnel};

/// Validates everything, then runs the node until SIGINT or SIGTERM. The capture table is
/// left in place on exit so captured traffic stays blocked while the node is down.
pub fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    let (rules, warnings) = Rules::load(&cfg.registry_path, &cfg.policy_path)?;
    for w in warnings.iter() {
        warn!("{w}");
    }
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
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.runtime.worker_threads > 0 {
        rt.worker_threads(cfg.runtime.worker_threads);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(serve(cfg, rules))
}

async fn serve(cfg: NodeConfig, rules: Rules) -> anyhow::Result<()> {
    let local_addrs: Vec<IpAddr> = rules
        .registry
        .workloads_on(&cfg.node_name)
        .flat_map(|w| w.addresses.iter().copied())
        .collect();
    let flows = FlowLog::open(cfg.flow_log.path.as_deref(), cfg.flow_log.recent)
        .context("opening the flow log")?;
    let metrics = Metrics::default();
    // The tunnel: this node's workload certificates, the QUIC endpoint, the pool.
    let mut tunnel_endpoint = None;
    let mut identities = None;
    if let Some(id) = &cfg.identity {
        let ids = Arc::new(LocalIdentities::load(
            &id.trust_bundle,
            &id.cert_dir,
            &rules.registry,
            &cfg.node_name,
        )?);
        let ep = tunnel::endpoint(cfg.tunnel.port, &ids, cfg.capture.own_mark)?;
        tunnel_endpoint = Some(ep);
        identities = Some((ids, id.reload_secs));
    }
    let pool = match (&tunnel_endpoint, &identities) {
        (Some(ep), Some((ids, _))) => Some(Pool::new(
            ep.clone(),
            ids.clone(),
            metrics.tunnel_dials.clone(),
        )),
        _ => None,
    };
    let state = Arc::new(NodeState::new(
        cfg.node_name.clone(),
        cfg.capture.clone(),
        rules,
        flows,
        pool,
        cfg.tunnel.port,
        metrics,
    ));
    let mut tasks = Vec::new();
    if let Some(ep) = tunnel_endpoint.clone() {
        tasks.push(tokio::spawn(tunnel::server::serve(ep, state.clone())));
    }
    if let Some((ids, secs)) = identities {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
            loop {
                tick.tick().await;
                let failed = ids.reload_changed();
                state.metrics.cert_reload_failures.inc_by(failed as u64);
            }
        }));
    }

    // Listeners first, so that capture never points at a port nobody serves.
    for (port, direction) in [
        (cfg.capture.outbound_port, Listener::Outbound),
        (cfg.capture.inbound_port, Listener::Inbound),
    ] {
        let v4 = capture::socket::transparent_listener(
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            cfg.capture.own_mark,
        )
        .with_context(|| format!("listening on {port} (IPv4, transparent)"))?;
        tasks.push(tokio::spawn(proxy::serve(v4, direction, state.clone())));
        match capture::socket::transparent_listener(
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
            cfg.capture.own_mark,
        ) {
            Ok(v6) => tasks.push(tokio::spawn(proxy::serve(v6, direction, state.clone()))),
            Err(e) => warn!(%e, port, "no IPv6 listener; IPv6 capture stays fail-closed"),
        }
    }
    let admin = admin::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("admin endpoint {}", cfg.admin.listen))?;
    tasks.push(tokio::spawn(admin::serve(admin, state.clone())));

    capture::install(&cfg.capture, &local_addrs)?;
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    tasks.push(tokio::spawn(capture::spoof::watch(state.clone())));
    info!(node = %cfg.node_name, workloads = local_addrs.len(), admin = %cfg.admin.listen, "capturing");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    info!(
        "stopping; the capture table stays, so captured traffic is dropped until the node is back"
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}
