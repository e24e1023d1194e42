//! Pooled tunnel connections on the source side, for either transport: per key, a few
//! connections that every workload connection between the same identities shares, grown
//! with the number of streams they carry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eastwall_identity::SpiffeId;

/// Which pooled connection a stream rides on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    /// The source workload's identity (the client certificate).
    pub(crate) src: SpiffeId,
    /// The destination node's tunnel address.
    pub(crate) node: SocketAddr,
    /// The destination workload's identity (what the server must prove).
    pub(crate) dst: SpiffeId,
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// This node holds no certificate for the source identity.
    #[error("no local certificate for {0}")]
    NoIdentity(SpiffeId),
    /// TLS configuration could not be built.
    #[error("tunnel TLS config: {0}")]
    Config(String),
    /// The handshake failed (refused certificate, unreachable node, ...).
    #[error("tunnel to {node} failed: {reason}")]
    Connect {
        /// Destination node address.
        node: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// Opening or writing the stream failed.
    #[error("tunnel stream: {0}")]
    Stream(String),
}

impl OpenError {
    /// Whether the connection could not be set up at all (as opposed to one stream failing).
    pub(crate) fn is_handshake(&self) -> bool {
        matches!(
            self,
            OpenError::Connect { .. } | OpenError::NoIdentity(_) | OpenError::Config(_)
        )
    }
}

/// The mutual-TLS client configuration for `key`: the source's certificate (this node must
/// hold it), the destination's identity required of the server, `alpn` offered.
pub(crate) fn client_tls(
    identities: &crate::identity::LocalIdentities,
    key: &PoolKey,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, OpenError> {
    let client = identities
        .client(&key.src)
        .ok_or_else(|| OpenError::NoIdentity(key.src.clone()))?;
    eastwall_certs::client_config(client, &identities.bundle, key.dst.clone(), &[alpn])
        .map_err(|e| OpenError::Config(e.to_string()))
}

/// How a transport sets up and inspects its connections; the pool does the rest.
pub(crate) trait Connector: Send + Sync {
    /// A live connection, cheap to clone (a handle).
    type Conn: Clone + Send + Sync;
    /// Dials `key`'s node, presenting `key.src` and requiring `key.dst`.
    async fn dial(&self, key: &PoolKey) -> Result<Self::Conn, OpenError>;
    /// Whether new streams can still be opened on `conn`.
    fn is_open(conn: &Self::Conn) -> bool;
}

/// How many connections a key may use, and when another one is dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolLimits {
    /// Streams a connection carries before the pool dials another for the same key.
    pub(crate) streams_per_connection: usize,
    /// Most connections per key.
    pub(crate) max_connections: usize,
    /// A connection without streams for this long is let go.
    pub(crate) idle: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            streams_per_connection: 100,
            max_connections: 4,
            idle: Duration::from_secs(60),
        }
    }
}

struct Pooled<T> {
    conn: T,
    active: Arc<AtomicUsize>,
    last_used: Instant,
}

struct Slot<T> {
    conns: Mutex<Vec<Pooled<T>>>,
    /// Held while dialing, so concurrent first users wait for one handshake.
    dialing: tokio::sync::Mutex<()>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            conns: Mutex::new(Vec::new()),
            dialing: tokio::sync::Mutex::new(()),
        }
    }
}

/// A connection taken from the pool for one stream; counts as one active stream until it is
/// dropped.
pub(crate) struct Lease<T> {
    /// The connection.
    pub(crate) conn: T,
    active: Arc<AtomicUsize>,
}

impl<T> Drop for Lease<T> {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The pool of one transport.
pub(crate) struct Pool<C: Connector> {
    connector: C,
    limits: PoolLimits,
    dials: prometheus_client::metrics::counter::Counter,
    slots: Mutex<HashMap<PoolKey, Arc<Slot<C::Conn>>>>,
}

impl<C: Connector> Pool<C> {
    /// A pool dialing with `connector`; `dials` counts handshakes.
    pub(crate) fn new(
        connector: C,
        limits: PoolLimits,
        dials: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Pool {
            connector,
            limits,
            dials,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The transport's connector.
    #[cfg(test)]
    pub(crate) fn connector(&self) -> &C {
        &self.connector
    }

    /// A connection for one more stream to `key`: the least busy live one, or a new one when
    /// there is none or all carry their share of streams.
    pub(crate) async fn lease(&self, key: &PoolKey) -> Result<Lease<C::Conn>, OpenError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key.clone()).or_default().clone()
        };
        if let Some(l) = self.pick(&slot, false) {
            return Ok(l);
        }
        let _dialing = match slot.dialing.try_lock() {
            Ok(g) => g,
            Err(_) => {
                // Another task is dialing: ride on a busy connection if there is one rather
                // than wait for the handshake; with none, wait for it.
                if let Some(l) = self.pick(&slot, true) {
                    return Ok(l);
                }
                slot.dialing.lock().await
            }
        };
        // Someone else may have dialed while this task waited.
        if let Some(l) = self.pick(&slot, false) {
            return Ok(l);
        }
        // On the heap: the handshakes' state is large, and every connection's task would
        // otherwise hold room for it while it relays (`front::capture` tests the budget).
        match Box::pin(self.connector.dial(key)).await {
            Ok(conn) => {
                self.dials.inc();
                let active = Arc::new(AtomicUsize::new(1));
                let mut conns = slot.conns.lock().unwrap_or_else(|p| p.into_inner());
                conns.push(Pooled {
                    conn: conn.clone(),
                    active: active.clone(),
                    last_used: Instant::now(),
                });
                Ok(Lease { conn, active })
            }
            // A busy connection still beats none.
            Err(e) => self.pick(&slot, true).ok_or(e),
        }
    }

    /// The least busy live connection of `slot`, if it may take another stream (`any`: if
    /// there is one at all). Drops closed and long-idle connections on the way.
    fn pick(&self, slot: &Slot<C::Conn>, any: bool) -> Option<Lease<C::Conn>> {
        let mut conns = slot.conns.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        conns.retain(|p| {
            C::is_open(&p.conn)
                && (p.active.load(Ordering::Relaxed) > 0
                    || now.duration_since(p.last_used) < self.limits.idle)
        });
        let full = conns.len() >= self.limits.max_connections;
        let best = conns
            .iter_mut()
            .min_by_key(|p| p.active.load(Ordering::Relaxed))?;
        let busy = best.active.load(Ordering::Relaxed);
        if busy >= self.limits.streams_per_connection && !full && !any {
            return None;
        }
        best.active.fetch_add(1, Ordering::Relaxed);
        best.last_used = now;
        Some(Lease {
            conn: best.conn.clone(),
            active: best.active.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A connector whose connections are flags (open while true).
    struct Fake {
        dials: AtomicUsize,
        fail: AtomicBool,
    }

    impl Connector for Fake {
        type Conn = Arc<AtomicBool>;
        async fn dial(&self, key: &PoolKey) -> Result<Self::Conn, OpenError> {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.fail.load(Ordering::Relaxed) {
                return Err(OpenError::Connect {
                    node: key.node,
                    reason: "down".into(),
                });
            }
            self.dials.fetch_add(1, Ordering::Relaxed);
            Ok(Arc::new(AtomicBool::new(true)))
        }
        fn is_open(conn: &Self::Conn) -> bool {
            conn.load(Ordering::Relaxed)
        }
    }

    fn key() -> PoolKey {
        PoolKey {
            src: SpiffeId::parse("spiffe://t.example/wl/a").unwrap(),
            node: "10.0.0.2:15008".parse().unwrap(),
            dst: SpiffeId::parse("spiffe://t.example/wl/b").unwrap(),
        }
    }

    fn pool(limits: PoolLimits) -> Pool<Fake> {
        Pool::new(
            Fake {
                dials: AtomicUsize::new(0),
                fail: AtomicBool::new(false),
            },
            limits,
            Default::default(),
        )
    }

    #[tokio::test]
    async fn concurrent_first_users_share_one_dial() {
        let p = Arc::new(pool(PoolLimits::default()));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let p = p.clone();
            tasks.push(tokio::spawn(
                async move { p.lease(&key()).await.map(|_| ()) },
            ));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(p.connector().dials.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn grows_with_streams_up_to_the_limit_and_spreads_them() {
        let p = pool(PoolLimits {
            streams_per_connection: 2,
            max_connections: 3,
            idle: Duration::from_secs(60),
        });
        let mut leases = Vec::new();
        for _ in 0..10 {
            leases.push(p.lease(&key()).await.unwrap());
        }
        assert_eq!(p.connector().dials.load(Ordering::Relaxed), 3);
        // 10 streams over 3 connections: least busy first, so 4/3/3.
        let mut counts: Vec<usize> = leases
            .iter()
            .map(|l| Arc::as_ptr(&l.conn) as usize)
            .fold(HashMap::new(), |mut m, c| {
                *m.entry(c).or_insert(0usize) += 1;
                m
            })
            .into_values()
            .collect();
        counts.sort();
        assert_eq!(counts, vec![3, 3, 4]);
        // Released streams make room: the next one needs no dial.
        leases.truncate(2);
        let _l = p.lease(&key()).await.unwrap();
        assert_eq!(p.connector().dials.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn closed_connections_are_replaced_and_busy_ones_used_when_dialing_fails() {
        let p = pool(PoolLimits {
            streams_per_connection: 1,
            max_connections: 2,
            idle: Duration::from_secs(60),
        });
        let a = p.lease(&key()).await.unwrap();
        a.conn.store(false, Ordering::Relaxed);
        let b = p.lease(&key()).await.unwrap();
        assert!(
            b.conn.load(Ordering::Relaxed),
            "a closed connection is never handed out"
        );
        assert_eq!(p.connector().dials.load(Ordering::Relaxed), 2);
        p.connector().fail.store(true, Ordering::Relaxed);
        // b is busy (1 stream, the limit), a second dial fails: b is shared rather than fail.
        let c = p.lease(&key()).await.unwrap();
        assert!(Arc::ptr_eq(&b.conn, &c.conn));
        drop((a, b, c));
        // With nothing pooled, the dial error is what the caller sees.
        let other = PoolKey {
            dst: SpiffeId::parse("spiffe://t.example/wl/c").unwrap(),
            ..key()
        };
        assert!(matches!(
            p.lease(&other).await,
            Err(OpenError::Connect { .. })
        ));
    }
}
