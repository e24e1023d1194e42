//! The operators' side of the collector: pages of records a filter keeps, and the per-edge
//! aggregates, asked over mutual TLS with an operator certificate
//! (`spiffe://<td>/operator/<name>`). `eastwall observe`, `policy replay|recommend
//! --collector` and the console use it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use eastwall_certs::{Identity, TrustBundle};
use eastwall_identity::SpiffeId;
use hyper::Method;

use super::{EDGES_PATH, MAX_LIMIT, RECORDS_PATH, collector_id};
use crate::mtls::{Call, Endpoint};

/// Largest answer read from the collector.
const MAX_ANSWER: usize = 256 << 20;

/// A client of one collector, as an operator.
#[derive(Debug, Clone)]
pub struct CollectorClient {
    endpoint: Endpoint,
    server: SpiffeId,
    bundle: TrustBundle,
    cert: PathBuf,
    key: PathBuf,
}

/// One page of records: JSON lines, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The records, one JSON line each.
    pub text: String,
    /// The id to go on after (`after=`), when the collector said.
    pub last: Option<i64>,
    /// Records remain past `last`.
    pub more: bool,
}

impl CollectorClient {
    /// A client of the collector at `url` presenting the operator certificate `cert` (with
    /// `key`, both re-read for every request so that they can be renewed in place); the
    /// collector must prove `spiffe://<td>/collector` with a chain to `bundle`.
    pub fn new(
        url: &str,
        bundle: TrustBundle,
        cert: PathBuf,
        key: PathBuf,
    ) -> anyhow::Result<CollectorClient> {
        Ok(CollectorClient {
            endpoint: Endpoint::parse(url)?,
            server: collector_id(bundle.trust_domain())?,
            bundle,
            cert,
            key,
        })
    }

    /// Reads a trust bundle file for [`CollectorClient::new`].
    pub fn read_bundle(path: &std::path::Path) -> anyhow::Result<TrustBundle> {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        TrustBundle::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    async fn get(&self, path: &str) -> anyhow::Result<crate::mtls::Answer> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let me = Identity::from_pem(&read(&self.cert)?, &read(&self.key)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.cert.display()))?;
        let call = Call {
            method: Method::GET,
            path,
            content_type: "text/plain",
            body: Bytes::new(),
            max_answer: MAX_ANSWER,
            timeout: Duration::from_secs(60),
            bearer: None,
        };
        let a = crate::mtls::request(
            &self.endpoint,
            Some(me),
            &self.bundle,
            &self.server,
            call,
            None,
        )
        .await?;
        if a.status != 200 {
            bail!(
                "the collector answered {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body).trim()
            );
        }
        Ok(a)
    }

    /// One page of the records `query` (the collector's filter parameters) keeps: those
    /// after record `after`, oldest first, or (`None`) the newest `limit`.
    pub async fn page(
        &self,
        query: &str,
        after: Option<i64>,
        limit: usize,
    ) -> anyhow::Result<Page> {
        let mut q = query.to_owned();
        if !q.is_empty() {
            q.push('&');
        }
        match after {
            Some(a) => q.push_str(&format!("after={a}&limit={limit}")),
            None => q.push_str(&format!("limit={limit}")),
        }
        let a = self.get(&format!("{RECORDS_PATH}?{q}")).await?;
        let last = a
            .headers
            .get("x-eastwall-last-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let more = a
            .headers
            .get("x-eastwall-more")
            .is_some_and(|v| v.as_bytes() == b"1");
        Ok(Page {
            text: String::from_utf8_lossy(&a.body).into_owned(),
            last,
            more,
        })
    }

    /// Every record `query` keeps, oldest first, page by page, given to `each` (JSON lines).
    pub async fn all(&self, query: &str, mut each: impl FnMut(&str)) -> anyhow::Result<()> {
        let mut after = 0;
        loop {
            let p = self.page(query, Some(after), MAX_LIMIT).await?;
            if !p.text.is_empty() {
                each(&p.text);
            }
            match p.last {
                Some(l) if p.more && l > after => after = l,
                _ => return Ok(()),
            }
        }
    }

    /// The per-edge aggregates of the days from `since` to `until` (RFC 3339 times or µs
    /// since 1970; `until` excluded, its day included unless it is midnight).
    pub async fn edges(
        &self,
        since: &str,
        until: Option<&str>,
    ) -> anyhow::Result<Vec<eastwall_flows::edge::Edge>> {
        let mut path = format!("{EDGES_PATH}?since={}", encode(since));
        if let Some(u) = until {
            path.push_str(&format!("&until={}", encode(u)));
        }
        let a = self.get(&path).await?;
        serde_json::from_slice(&a.body).context("the collector's edges are not ours")
    }
}

/// Percent-encodes a query parameter's value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
