//! `eastwall observe` (the `hubble observe` habit): records from the collector, or from EVE
//! files without one, filtered, as a table or JSON, and followed as they come.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use eastwall_flows::filter::{EndIs, Filter};
use eastwall_flows::record::{End, Row, row_of, unix_micros};
use eastwall_node::collector::client::{Page, encode};

/// `eastwall observe`.
#[derive(clap::Args)]
pub(crate) struct ObserveArgs {
    /// EVE files to read (a node's flows.json), when there is no collector.
    records: Vec<PathBuf>,
    #[command(flatten)]
    collector: CollectorArgs,
    /// The source: `app:db`, `zone:prod`, `workload:web`, `identity:spiffe://...`,
    /// `user:alice`, `group:finance`, `ip:10.0.0.1`, or a bare workload or app name (repeat:
    /// any of them).
    #[arg(long)]
    from: Vec<String>,
    /// The destination, as --from.
    #[arg(long)]
    to: Vec<String>,
    /// allow or deny.
    #[arg(long)]
    verdict: Option<String>,
    /// The deciding rule.
    #[arg(long)]
    rule: Option<String>,
    /// TCP, UDP, ICMP, ...
    #[arg(long)]
    proto: Option<String>,
    /// The destination port.
    #[arg(long)]
    port: Option<u16>,
    /// The HTTP method.
    #[arg(long)]
    method: Option<String>,
    /// The HTTP path starts with this.
    #[arg(long)]
    path: Option<String>,
    /// The event type: flow, http, dns, alert (repeat: any).
    #[arg(long = "type")]
    types: Vec<String>,
    /// The node that wrote it.
    #[arg(long)]
    node: Option<String>,
    /// Since (RFC 3339, e.g. 2026-12-05T10:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Until (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// The last N records (default 100).
    #[arg(long, default_value_t = 100)]
    last: usize,
    /// Keep showing new records as they come.
    #[arg(short, long)]
    follow: bool,
    /// table or json (one record per line, as the node wrote it).
    #[arg(short, long, default_value = "table")]
    output: String,
}

/// How to reach the collector, as an operator.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct CollectorArgs {
    /// The collector (`https://HOST:PORT`); then `--cert`, `--key`, `--trust-bundle`.
    #[arg(long, env = "EASTWALL_COLLECTOR")]
    pub(crate) collector: Option<String>,
    /// Your operator certificate (`spiffe://<td>/operator/<you>`, from the eastwall CA).
    #[arg(long, env = "EASTWALL_COLLECTOR_CERT")]
    cert: Option<PathBuf>,
    /// Its key.
    #[arg(long, env = "EASTWALL_COLLECTOR_KEY")]
    key: Option<PathBuf>,
    /// The trust bundle the collector's certificate chains to.
    #[arg(long, env = "EASTWALL_TRUST_BUNDLE")]
    trust_bundle: Option<PathBuf>,
}

/// A client of the collector's records, as an operator, for commands that wait.
pub(crate) struct CollectorClient {
    client: eastwall_node::collector::client::CollectorClient,
    rt: tokio::runtime::Runtime,
}

impl CollectorClient {
    /// A client of the collector `args` name (`None`: none named).
    pub(crate) fn new(args: &CollectorArgs) -> anyhow::Result<Option<CollectorClient>> {
        let Some(url) = &args.collector else {
            return Ok(None);
        };
        let need = |o: &Option<PathBuf>, what: &str| {
            o.clone()
                .with_context(|| format!("--collector needs --{what}"))
        };
        let bundle = eastwall_node::collector::client::CollectorClient::read_bundle(&need(
            &args.trust_bundle,
            "trust-bundle",
        )?)?;
        Ok(Some(CollectorClient {
            client: eastwall_node::collector::client::CollectorClient::new(
                url,
                bundle,
                need(&args.cert, "cert")?,
                need(&args.key, "key")?,
            )?,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        }))
    }

    /// One page of the records `query` keeps: those after record `after`, oldest first, or
    /// (`None`) the newest `limit`.
    pub(crate) fn page(
        &self,
        query: &str,
        after: Option<i64>,
        limit: usize,
    ) -> anyhow::Result<Page> {
        self.rt.block_on(self.client.page(query, after, limit))
    }

    /// Every record `query` keeps, oldest first, page by page, given to `each` (JSON lines).
    pub(crate) fn all(&self, query: &str, each: impl FnMut(&str)) -> anyhow::Result<()> {
        self.rt.block_on(self.client.all(query, each))
    }

    /// The per-edge aggregates of the days from `since` to `until`.
    pub(crate) fn edges(
        &self,
        since: &str,
        until: Option<&str>,
    ) -> anyhow::Result<Vec<eastwall_flows::edge::Edge>> {
        self.rt.block_on(self.client.edges(since, until))
    }
}

impl ObserveArgs {
    fn filter(&self) -> anyhow::Result<Filter> {
        let time = |t: &Option<String>| -> anyhow::Result<Option<i64>> {
            t.as_ref()
                .map(|s| unix_micros(s).with_context(|| format!("{s:?} is not a time (RFC 3339)")))
                .transpose()
        };
        let ends = |v: &[String]| -> anyhow::Result<Vec<EndIs>> {
            v.iter()
                .map(|s| EndIs::parse(s).map_err(|e| anyhow::anyhow!("{e}")))
                .collect()
        };
        Ok(Filter {
            from: ends(&self.from)?,
            to: ends(&self.to)?,
            verdict: self.verdict.clone(),
            rule: self.rule.clone(),
            proto: self.proto.clone(),
            port: self.port,
            method: self.method.clone(),
            path: self.path.clone(),
            event_types: self.types.clone(),
            node: self.node.clone(),
            since_us: time(&self.since)?,
            until_us: time(&self.until)?,
        })
    }

    /// The filter as the collector's query parameters.
    fn query(&self) -> String {
        let mut q: Vec<(&str, String)> = Vec::new();
        for f in &self.from {
            q.push(("from", f.clone()));
        }
        for t in &self.to {
            q.push(("to", t.clone()));
        }
        let opt = [
            ("verdict", &self.verdict),
            ("rule", &self.rule),
            ("proto", &self.proto),
            ("method", &self.method),
            ("path", &self.path),
            ("node", &self.node),
            ("since", &self.since),
            ("until", &self.until),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        if let Some(p) = self.port {
            q.push(("port", p.to_string()));
        }
        for t in &self.types {
            q.push(("type", t.clone()));
        }
        q.iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn who(e: &End) -> String {
    let base = e
        .workload
        .clone()
        .or_else(|| e.ip.map(|i| i.to_string()))
        .unwrap_or_else(|| "?".to_owned());
    match &e.user {
        Some(u) => format!("{base}({u})"),
        None => base,
    }
}

fn line(r: &Row, raw: &str, json: bool) -> String {
    if json {
        return raw.to_owned();
    }
    let time = raw
        .split("\"timestamp\":\"")
        .nth(1)
        .and_then(|t| t.get(..19))
        .unwrap_or("?");
    let what = match (&r.method, &r.dns, r.sid) {
        (Some(m), _, _) => format!("{m} {}", r.path.as_deref().unwrap_or("")),
        (_, Some(n), _) => format!("query {n}"),
        (_, _, Some(sid)) => format!("alert sid {sid}"),
        _ => String::new(),
    };
    format!(
        "{time}  {:<8} {:<5} {:<6} {:<24} {} -> {} {}/{} {what}",
        r.node,
        r.event_type,
        r.verdict.as_deref().unwrap_or("-"),
        r.rule.as_deref().unwrap_or("-"),
        who(&r.src),
        who(&r.dest),
        r.proto,
        r.port
    )
}

pub(crate) fn run(args: &ObserveArgs) -> anyhow::Result<()> {
    let json = match args.output.as_str() {
        "json" => true,
        "table" => false,
        o => bail!("--output is table or json, not {o}"),
    };
    let filter = args.filter()?;
    if !json {
        println!(
            "TIME                 NODE     TYPE  VERDICT RULE                     FROM -> TO PROTO/PORT DETAIL"
        );
    }
    match CollectorClient::new(&args.collector)? {
        Some(client) => from_collector(args, &client, json),
        None if args.records.is_empty() => {
            bail!("give EVE files to read, or --collector (EASTWALL_COLLECTOR)")
        }
        None => from_files(args, &filter, json),
    }
}

fn from_files(args: &ObserveArgs, filter: &Filter, json: bool) -> anyhow::Result<()> {
    let mut offsets = vec![0u64; args.records.len()];
    let mut shown: Vec<String> = Vec::new();
    let mut first = true;
    loop {
        for (i, f) in args.records.iter().enumerate() {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            // A file that shrank was rotated or truncated: read it from the start.
            if (bytes.len() as u64) < offsets[i] {
                offsets[i] = 0;
            }
            let new = &bytes[offsets[i] as usize..];
            // Whole lines only: the node may be writing the last one.
            let Some(end) = new.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            for l in String::from_utf8_lossy(&new[..=end]).lines() {
                let Ok(v) = serde_json::from_str(l) else {
                    continue;
                };
                if let Ok(r) = row_of(&v)
                    && filter.matches(&r)
                {
                    shown.push(line(&r, l, json));
                }
            }
            offsets[i] += end as u64 + 1;
        }
        if first {
            let skip = shown.len().saturating_sub(args.last);
            shown.drain(..skip);
            first = false;
        }
        for l in shown.drain(..) {
            println!("{l}");
        }
        if !args.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn from_collector(args: &ObserveArgs, client: &CollectorClient, json: bool) -> anyhow::Result<()> {
    let query = args.query();
    let mut after: Option<i64> = None;
    loop {
        let Page { text, last, more } = match after {
            Some(a) => client.page(&query, Some(a), eastwall_node::collector::MAX_LIMIT)?,
            None => client.page(&query, None, args.last.max(1))?,
        };
        if after.is_none() && more && text.lines().count() < args.last {
            eprintln!(
                "(the collector looked at its newest {} records; give --since to look further back)",
                eastwall_node::collector::db::MAX_SCAN
            );
        }
        for l in text.lines() {
            if let Ok(v) = serde_json::from_str(l)
                && let Ok(r) = row_of(&v)
            {
                println!("{}", line(&r, l, json));
            }
        }
        if !args.follow {
            return Ok(());
        }
        // The next page starts after the last record of this one.
        after = last.or(after).or(Some(0));
        std::thread::sleep(Duration::from_secs(1));
    }
}
