//! Keeping this node's workload certificates from the eastwall CA: obtained at start for
//! each local identity, then renewed at half their lifetime.
//!
//! Rotation: one task per identity sleeps until [`next_renewal`], renews and swaps the new
//! certificate in ([`LocalIdentities::replace`]: new handshakes use it, established connections
//! keep theirs). A failure is retried after [`backoff`] (1 s doubling to 60 s) while the
//! current certificate keeps serving; `eastwall_cert_renewals_total{result}` counts outcomes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eastwall_certs::Identity;
use eastwall_identity::SpiffeId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::{info, warn};

use super::LocalIdentities;
use crate::ca::client::CaClient;
use crate::telemetry::metrics::RenewalLabels;

/// Attempts to obtain each certificate at start before the node gives up.
pub(crate) const START_ATTEMPTS: u32 = 5;
/// Shortest wait between renewals, whatever the certificate says.
const MIN_RENEWAL_WAIT: Duration = Duration::from_millis(500);

/// Obtains a certificate for each of `ids` at start, trying each up to [`START_ATTEMPTS`] times
/// (0.25 s, then doubling, between attempts). Returns `(id, cert PEM, key PEM)` for all.
pub(crate) async fn obtain_all(
    client: &CaClient,
    ids: &[SpiffeId],
) -> anyhow::Result<Vec<(SpiffeId, String, String)>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut wait = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match client.sign(id).await {
                Ok((cert, key)) => {
                    info!(%id, "obtained certificate from the CA");
                    out.push((id.clone(), cert, key));
                    break;
                }
                Err(e) if attempt < START_ATTEMPTS => {
                    warn!(%id, attempt, "obtaining certificate: {e:#}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "could not obtain a certificate for {id} from the CA ({START_ATTEMPTS} attempts)"
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// When to renew `identity`, received (installed) at `received`: half-way through the
/// lifetime that was left when it arrived, and never before [`Identity::renew_at`]. (The CA
/// back-dates `not_before` by five minutes for clock skew, so for short lifetimes `renew_at`
/// alone would already have passed.)
pub(crate) fn next_renewal(identity: &Identity, received: SystemTime) -> SystemTime {
    let left = identity
        .not_after
        .duration_since(received)
        .unwrap_or_default();
    (received + left / 2).max(identity.renew_at())
}

/// How long to wait after the `failures`-th consecutive failed renewal: 1 s, doubling, at most
/// 60 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(6);
    Duration::from_secs(secs.min(60))
}

/// Keeps identity `id` of `identities` renewed from the CA, until the node drops it
/// ([`LocalIdentities::retire`]: its workload left the node) or the task is aborted.
pub(crate) async fn rotate(
    client: Arc<CaClient>,
    identities: Arc<LocalIdentities>,
    id: SpiffeId,
    renewals: Family<RenewalLabels, Counter>,
) {
    let Some(current) = identities.client(&id) else {
        warn!(%id, "no certificate to renew");
        return;
    };
    let mut received = SystemTime::now();
    loop {
        let cert = current.current();
        let at = next_renewal(&cert, received);
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .max(MIN_RENEWAL_WAIT);
        tokio::time::sleep(wait).await;
        let mut failures = 0u32;
        loop {
            // Dropped, or dropped and obtained again (then by a task of its own).
            if !identities
                .client(&id)
                .is_some_and(|now| Arc::ptr_eq(&now, &current))
            {
                info!(%id, "renewals stop: this node no longer holds the identity");
                return;
            }
            let result = match client.sign(&id).await {
                Ok((c, k)) => identities.renew(&id, &current, &c, &k),
                Err(e) => Err(e),
            };
            match result {
                Ok(new) => {
                    renewals
                        .get_or_create(&RenewalLabels { result: "ok" })
                        .inc();
                    received = SystemTime::now();
                    info!(%id, not_after = ?new.not_after, "certificate renewed");
                    break;
                }
                Err(_)
                    if !identities
                        .client(&id)
                        .is_some_and(|now| Arc::ptr_eq(&now, &current)) =>
                {
                    info!(%id, "renewals stop: this node no longer holds the identity");
                    return;
                }
                Err(e) => {
                    failures += 1;
                    renewals
                        .get_or_create(&RenewalLabels { result: "error" })
                        .inc();
                    let retry = backoff(failures);
                    let old = current.current();
                    let expired = old.not_after <= SystemTime::now();
                    warn!(
                        %id,
                        failures,
                        not_after = ?old.not_after,
                        expired,
                        "renewal failed: {e:#}; the current certificate stays in use; retrying in {} s",
                        retry.as_secs()
                    );
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use eastwall_certs::Ca;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(60));
        assert_eq!(backoff(0), Duration::from_secs(1));
    }

    #[test]
    fn renewal_at_half_the_remaining_lifetime() {
        let ca = Ca::generate("corp.example", Duration::from_secs(3600)).unwrap();
        let id = SpiffeId::parse("spiffe://corp.example/wl/a").unwrap();
        let issued = ca.issue(&id, Duration::from_secs(4)).unwrap();
        let ident = Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
        let now = SystemTime::now();
        let at = next_renewal(&ident, now);
        // not_after is whole seconds: 3-4 s away; renew at half of that.
        let d = at.duration_since(now).unwrap();
        assert!(
            d >= Duration::from_millis(1400) && d <= Duration::from_secs(2),
            "{d:?}"
        );
        // A long lifetime: the certificate's own half-life is the later one... or close to it.
        let issued = ca.issue(&id, Duration::from_secs(86_400)).unwrap();
        let ident = Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
        let at = next_renewal(&ident, now);
        assert!(at >= ident.renew_at());
        assert!(at.duration_since(now).unwrap() >= Duration::from_secs(43_000));
    }
}
