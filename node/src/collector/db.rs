//! Where the collector keeps records: one interface ([`FlowStore`]) and its embedded
//! implementation on SQLite ([`Sqlite`]): every record with its columns (indexed by time)
//! and per-edge aggregates by day, so questions over weeks stay fast; retention by age and
//! by size. A team that outgrows one machine implements [`FlowStore`] on its analytics store.

use std::path::Path;

use anyhow::Context;
use eastwall_flows::edge::{Edge, EdgeEnd, path_pattern};
use eastwall_flows::filter::Filter;
use eastwall_flows::record::Row;
use rusqlite::{Connection, OptionalExtension, params};

/// Records scanned at most for one query (a filter that keeps almost nothing stops there, and
/// the client goes on from where it stopped): the store is held that long.
pub const MAX_SCAN: usize = 200_000;

/// One page of a query.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The records kept, oldest first: `(id, text)`.
    pub rows: Vec<(i64, String)>,
    /// The last record looked at (kept or not): a follower goes on after it.
    pub scanned_to: Option<i64>,
    /// Whether records remain past `scanned_to` (the scan or the limit stopped it).
    pub more: bool,
}

/// The collector's storage.
pub trait FlowStore: Send {
    /// Stores `records` (their columns and their text), received at `received_us`.
    fn insert(&mut self, records: &[(Row, String)], received_us: i64) -> anyhow::Result<()>;
    /// Records `filter` keeps, by id: after `after` (oldest first, for following), or the
    /// newest `limit` (oldest first) when `after` is `None`; at most [`MAX_SCAN`] looked at.
    fn query(&mut self, filter: &Filter, after: Option<i64>, limit: usize) -> anyhow::Result<Page>;
    /// The edges of the days from `since_us`'s to `until_us`'s (its day included when it is
    /// not midnight), summed over their days, most decisions first.
    fn edges(&mut self, since_us: i64, until_us: i64) -> anyhow::Result<Vec<Edge>>;
    /// Drops records received before `before_us`, then the oldest until the store holds at
    /// most `max_bytes`, and edges of days before `edges_before_day`. Returns the records
    /// dropped.
    fn prune(
        &mut self,
        before_us: i64,
        max_bytes: u64,
        edges_before_day: i64,
    ) -> anyhow::Result<u64>;
    /// How many records it holds.
    fn count(&mut self) -> anyhow::Result<u64>;
}

/// [`FlowStore`] on an SQLite file.
pub struct Sqlite {
    db: Connection,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS records (
  id INTEGER PRIMARY KEY,
  received INTEGER NOT NULL,
  time INTEGER NOT NULL,
  node TEXT NOT NULL,
  event_type TEXT NOT NULL,
  src_ip TEXT, src_workload TEXT, src_app TEXT, src_zone TEXT, src_identity TEXT, src_user TEXT,
  dest_ip TEXT, dest_workload TEXT, dest_app TEXT, dest_zone TEXT, dest_identity TEXT,
  proto TEXT, port INTEGER, verdict TEXT, rule TEXT, method TEXT, path TEXT, dns TEXT,
  bytes INTEGER NOT NULL, count INTEGER NOT NULL,
  raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records(time);
CREATE INDEX IF NOT EXISTS records_received ON records(received);
";

/// The aggregates' table; [`EDGES_VERSION`] says which one a store holds.
const EDGES: &str = "
CREATE TABLE edges (
  day INTEGER NOT NULL,
  src_workload TEXT NOT NULL, src_app TEXT NOT NULL, src_zone TEXT NOT NULL,
  src_identity TEXT NOT NULL, src_user TEXT NOT NULL, src_groups TEXT NOT NULL,
  src_addr TEXT NOT NULL,
  dest_workload TEXT NOT NULL, dest_app TEXT NOT NULL, dest_zone TEXT NOT NULL,
  dest_addr TEXT NOT NULL,
  proto TEXT NOT NULL, port INTEGER NOT NULL, icmp_type INTEGER NOT NULL,
  verdict TEXT NOT NULL, rule TEXT NOT NULL, monitor TEXT NOT NULL,
  method TEXT NOT NULL, path_prefix TEXT NOT NULL, dns TEXT NOT NULL,
  per_request INTEGER NOT NULL,
  count INTEGER NOT NULL, bytes INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
  PRIMARY KEY (day, src_workload, src_app, src_zone, src_identity, src_user, src_groups,
               src_addr, dest_workload, dest_app, dest_zone, dest_addr, proto, port,
               icmp_type, verdict, rule, monitor, method, path_prefix, dns, per_request)
) WITHOUT ROWID;
";

/// The version of the aggregates' table (SQLite's `user_version`): a store written by an
/// earlier one has its aggregates rebuilt from the records it holds when opened.
const EDGES_VERSION: i64 = 2;

/// The columns of one aggregate row, in [`EDGES`]' key order, then its sums.
const EDGE_KEY: &str = "src_workload, src_app, src_zone, src_identity, src_user, src_groups,
  src_addr, dest_workload, dest_app, dest_zone, dest_addr, proto, port, icmp_type, verdict,
  rule, monitor, method, path_prefix, dns, per_request";

const DAY_US: i64 = 86_400 * 1_000_000;

/// Adds one record to its day's aggregate (`add_edge`'s statement).
fn add_edge_sql() -> String {
    format!(
        "INSERT INTO edges (day, {EDGE_KEY}, count, bytes, first, last)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?25)
         ON CONFLICT DO UPDATE SET count = count + excluded.count,
           bytes = bytes + excluded.bytes,
           first = min(first, excluded.first), last = max(last, excluded.last)"
    )
}

/// Adds `r` to its day's aggregate, if it makes one: decisions do, and so do alerts (verdict
/// `alert`, rule `sid N`); other records do not. A connection through the tunnel counts
/// once, as its destination's node recorded it.
fn add_edge(edge: &mut rusqlite::CachedStatement<'_>, r: &Row) -> anyhow::Result<()> {
    if r.relayed && r.verdict.as_deref() == Some("allow") {
        return Ok(());
    }
    let (verdict, rule) = match (&r.verdict, r.sid) {
        (Some(v), _) => (v.clone(), r.rule.clone().unwrap_or_default()),
        (None, Some(sid)) if r.event_type == "alert" => ("alert".to_owned(), format!("sid {sid}")),
        _ => return Ok(()),
    };
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    // An end's address is kept when no workload names it (else the workload's many
    // addresses would split its edges).
    let addr = |e: &eastwall_flows::record::End| match (&e.workload, e.ip) {
        (None, Some(ip)) => ip.to_string(),
        _ => String::new(),
    };
    let mut groups = r.src.groups.clone();
    groups.sort();
    let count = i64::try_from(r.count).unwrap_or(i64::MAX);
    let bytes = i64::try_from(r.bytes).unwrap_or(i64::MAX);
    edge.execute(params![
        r.time_us.div_euclid(DAY_US),
        s(&r.src.workload),
        s(&r.src.app),
        s(&r.src.zone),
        s(&r.src.identity),
        s(&r.src.user),
        groups.join(","),
        addr(&r.src),
        s(&r.dest.workload),
        s(&r.dest.app),
        s(&r.dest.zone),
        addr(&r.dest),
        r.proto,
        r.port,
        r.icmp_type.map_or(-1, i64::from),
        verdict,
        rule,
        s(&r.monitor),
        s(&r.method),
        r.path.as_deref().map(path_pattern).unwrap_or_default(),
        s(&r.dns),
        r.per_request,
        count,
        bytes,
        r.time_us,
    ])?;
    Ok(())
}

impl Sqlite {
    /// Opens (creating it if missing) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let db = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        db.execute_batch(SCHEMA)
            .with_context(|| format!("preparing {}", path.display()))?;
        let mut store = Sqlite { db };
        store
            .upgrade_edges()
            .with_context(|| format!("rebuilding the aggregates of {}", path.display()))?;
        Ok(store)
    }

    /// Creates the aggregates' table, or rebuilds it from the records held when it was
    /// written by an earlier version (days whose records are gone lose their aggregates).
    fn upgrade_edges(&mut self) -> anyhow::Result<()> {
        let version: i64 = self.db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version >= EDGES_VERSION {
            return Ok(());
        }
        let tx = self.db.transaction()?;
        tx.execute_batch(&format!("DROP TABLE IF EXISTS edges; {EDGES}"))?;
        {
            let mut edge = tx.prepare_cached(&add_edge_sql())?;
            let mut read = tx.prepare("SELECT raw FROM records ORDER BY id")?;
            let mut rows = read.query([])?;
            while let Some(r) = rows.next()? {
                let raw: String = r.get(0)?;
                // Every stored record was checked on its way in.
                if let Ok(row) = serde_json::from_str(&raw)
                    .map_err(|e| e.to_string())
                    .and_then(|v| eastwall_flows::record::row_of(&v))
                {
                    add_edge(&mut edge, &row)?;
                }
            }
        }
        tx.execute_batch(&format!("PRAGMA user_version = {EDGES_VERSION}"))?;
        tx.commit()?;
        Ok(())
    }

    fn bytes_used(&self) -> anyhow::Result<u64> {
        let pages: i64 = self.db.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .db
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = self.db.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(u64::try_from((pages - free) * size).unwrap_or(0))
    }
}

impl FlowStore for Sqlite {
    fn insert(&mut self, records: &[(Row, String)], received_us: i64) -> anyhow::Result<()> {
        let tx = self.db.transaction()?;
        {
            let mut rec = tx.prepare_cached(
                "INSERT INTO records (received, time, node, event_type,
                   src_ip, src_workload, src_app, src_zone, src_identity, src_user,
                   dest_ip, dest_workload, dest_app, dest_zone, dest_identity,
                   proto, port, verdict, rule, method, path, dns, bytes, count, raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                         ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
            )?;
            let mut edge = tx.prepare_cached(&add_edge_sql())?;
            for (r, raw) in records {
                let ip = |i: &Option<std::net::IpAddr>| i.map(|a| a.to_string());
                let bytes = i64::try_from(r.bytes).unwrap_or(i64::MAX);
                let count = i64::try_from(r.count).unwrap_or(i64::MAX);
                rec.execute(params![
                    received_us,
                    r.time_us,
                    r.node,
                    r.event_type,
                    ip(&r.src.ip),
                    r.src.workload,
                    r.src.app,
                    r.src.zone,
                    r.src.identity,
                    r.src.user,
                    ip(&r.dest.ip),
                    r.dest.workload,
                    r.dest.app,
                    r.dest.zone,
                    r.dest.identity,
                    r.proto,
                    r.port,
                    r.verdict,
                    r.rule,
                    r.method,
                    r.path,
                    r.dns,
                    bytes,
                    count,
                    raw,
                ])?;
                add_edge(&mut edge, r)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn query(&mut self, filter: &Filter, after: Option<i64>, limit: usize) -> anyhow::Result<Page> {
        let since = filter.since_us.unwrap_or(i64::MIN);
        let until = filter.until_us.unwrap_or(i64::MAX);
        let mut page = Page::default();
        let mut scanned = 0usize;
        // Pages of ids, filtered here with the same code as every other reader.
        const CHUNK: i64 = 5_000;
        let newest_first = after.is_none();
        let mut cursor: Option<i64> = after;
        loop {
            let sql = if newest_first {
                "SELECT id, raw FROM records WHERE time >= ?1 AND time < ?2 AND id < ?3
                 ORDER BY id DESC LIMIT ?4"
            } else {
                "SELECT id, raw FROM records WHERE time >= ?1 AND time < ?2 AND id > ?3
                 ORDER BY id ASC LIMIT ?4"
            };
            let bound = cursor.unwrap_or(if newest_first { i64::MAX } else { 0 });
            let mut stmt = self.db.prepare_cached(sql)?;
            let chunk: Vec<(i64, String)> = stmt
                .query_map(params![since, until, bound, CHUNK], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            let n = chunk.len();
            let mut stopped = false;
            for (id, raw) in chunk {
                cursor = Some(id);
                scanned += 1;
                let keep = serde_json::from_str(&raw)
                    .ok()
                    .and_then(|v| eastwall_flows::record::row_of(&v).ok())
                    .is_some_and(|row| filter.matches(&row));
                if keep {
                    page.rows.push((id, raw));
                }
                if page.rows.len() >= limit || scanned >= MAX_SCAN {
                    stopped = true;
                    break;
                }
            }
            if stopped {
                page.more = true;
                break;
            }
            if n < CHUNK as usize {
                break;
            }
        }
        page.scanned_to = cursor;
        if newest_first {
            page.rows.reverse();
        }
        Ok(page)
    }

    fn edges(&mut self, since_us: i64, until_us: i64) -> anyhow::Result<Vec<Edge>> {
        let mut stmt = self.db.prepare_cached(&format!(
            "SELECT {EDGE_KEY}, sum(count), sum(bytes), min(first), max(last)
             FROM edges WHERE day >= ?1 AND day <= ?2
             GROUP BY {EDGE_KEY}
             ORDER BY sum(count) DESC"
        ))?;
        let until_day = until_us.saturating_sub(1).div_euclid(DAY_US);
        let rows = stmt.query_map(params![since_us.div_euclid(DAY_US), until_day], |r| {
            let time = |i: usize| -> rusqlite::Result<String> {
                Ok(eastwall_flows::record::timestamp_of(r.get(i)?))
            };
            let count = |i: usize| -> rusqlite::Result<u64> {
                Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
            };
            Ok(Edge {
                src: EdgeEnd {
                    workload: r.get(0)?,
                    app: r.get(1)?,
                    zone: r.get(2)?,
                    identity: r.get(3)?,
                    user: r.get(4)?,
                    groups: r.get(5)?,
                    addr: r.get(6)?,
                },
                dest: EdgeEnd {
                    workload: r.get(7)?,
                    app: r.get(8)?,
                    zone: r.get(9)?,
                    addr: r.get(10)?,
                    ..EdgeEnd::default()
                },
                proto: r.get(11)?,
                port: r.get(12)?,
                icmp_type: u8::try_from(r.get::<_, i64>(13)?).ok(),
                verdict: r.get(14)?,
                rule: r.get(15)?,
                monitor: r.get(16)?,
                method: r.get(17)?,
                path_prefix: r.get(18)?,
                dns: r.get(19)?,
                per_request: r.get(20)?,
                count: count(21)?,
                bytes: count(22)?,
                first: time(23)?,
                last: time(24)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn prune(
        &mut self,
        before_us: i64,
        max_bytes: u64,
        edges_before_day: i64,
    ) -> anyhow::Result<u64> {
        let mut dropped = self.db.execute(
            "DELETE FROM records WHERE received < ?1",
            params![before_us],
        )? as u64;
        self.db.execute(
            "DELETE FROM edges WHERE day < ?1",
            params![edges_before_day],
        )?;
        // Past the size: the oldest tenth of what is left, until under it.
        while self.bytes_used()? > max_bytes {
            let total = self.count()?;
            if total == 0 {
                // What is left over the size is aggregates: their oldest day goes.
                let oldest: Option<i64> =
                    self.db
                        .query_row("SELECT min(day) FROM edges", [], |r| r.get(0))?;
                match oldest {
                    Some(day) => {
                        self.db
                            .execute("DELETE FROM edges WHERE day <= ?1", params![day])?;
                        continue;
                    }
                    None => break,
                }
            }
            let cut: Option<i64> = self
                .db
                .query_row(
                    "SELECT id FROM records ORDER BY id LIMIT 1 OFFSET ?1",
                    params![i64::try_from((total / 10).max(1)).unwrap_or(1) - 1],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(cut) = cut else {
                break;
            };
            dropped += self
                .db
                .execute("DELETE FROM records WHERE id <= ?1", params![cut])?
                as u64;
        }
        Ok(dropped)
    }

    fn count(&mut self) -> anyhow::Result<u64> {
        let n: i64 = self
            .db
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use eastwall_flows::filter::EndIs;
    use eastwall_flows::record::row_of;

    fn rec(i: usize, app: &str, verdict: &str, path: &str) -> (Row, String) {
        let raw = format!(
            r#"{{"timestamp":"2026-12-05T10:00:{:02}Z","event_type":"http","src_ip":"10.0.1.{}","dest_ip":"10.0.2.2","dest_port":443,"proto":"TCP","http":{{"url":"{path}","http_method":"GET"}},"flow":{{"bytes_toserver":10,"bytes_toclient":0}},"eastwall":{{"node":"hostB","src":{{"workload":"{app}-1","app":"{app}"}},"dest":{{"workload":"api-1","app":"api"}},"policy":{{"verdict":"{verdict}","rule":"r"}}}}}}"#,
            i % 60,
            i % 250
        );
        (row_of(&serde_json::from_str(&raw).unwrap()).unwrap(), raw)
    }

    #[test]
    fn a_connection_through_the_tunnel_counts_once_and_alerts_and_monitors_make_edges() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Sqlite::open(&d.path().join("flows.db")).unwrap();
        let flow = |node: &str, direction: &str, tunnel: bool, monitor: bool| {
            let raw = format!(
                r#"{{"timestamp":"2026-12-05T10:00:00Z","event_type":"flow","src_ip":"10.0.1.2","src_port":40000,"dest_ip":"10.0.2.2","dest_port":5432,"proto":"TCP","eastwall":{{"node":"{node}","direction":"{direction}",{}"src":{{"workload":"web","user":"alice","groups":["vdi","finance"]}},"dest":{{"workload":"db"}},"policy":{{"verdict":"allow","rule":"r","monitor":[{}]}}}}}}"#,
                if tunnel {
                    r#""tunnel":{"transport":"h2"},"#
                } else {
                    ""
                },
                if monitor {
                    r#"{"rule":"watch","section":"s","would":"deny"}"#
                } else {
                    ""
                }
            );
            (row_of(&serde_json::from_str(&raw).unwrap()).unwrap(), raw)
        };
        let alert = r#"{"timestamp":"2026-12-05T10:00:01Z","event_type":"alert","src_ip":"10.0.1.2","dest_ip":"10.0.2.2","dest_port":5432,"proto":"TCP","alert":{"signature_id":2001,"signature":"x"},"eastwall":{"node":"hostB","src_identity":"spiffe://lab/wl/web","dest_identity":"spiffe://lab/wl/db"}}"#;
        s.insert(
            &[
                flow("hostA", "outbound", true, true),
                flow("hostB", "inbound", false, true),
                flow("hostA", "outbound", false, false),
                (
                    row_of(&serde_json::from_str(alert).unwrap()).unwrap(),
                    alert.to_owned(),
                ),
            ],
            1_000,
        )
        .unwrap();
        // Every record is kept...
        assert_eq!(s.count().unwrap(), 4);
        // ...but the tunnel's outbound record is not counted twice in the aggregates.
        let edges = s.edges(0, i64::MAX).unwrap();
        let monitored: Vec<&Edge> = edges.iter().filter(|e| e.monitor == "watch").collect();
        assert_eq!(monitored.len(), 1, "{edges:?}");
        assert_eq!(monitored[0].count, 1);
        assert_eq!(monitored[0].src.groups, "finance,vdi");
        assert!(
            edges
                .iter()
                .any(|e| e.monitor.is_empty() && e.verdict == "allow" && e.count == 1)
        );
        let alerts: Vec<&Edge> = edges.iter().filter(|e| e.verdict == "alert").collect();
        assert_eq!(alerts.len(), 1, "{edges:?}");
        assert_eq!(alerts[0].rule, "sid 2001");
        assert_eq!(alerts[0].src.identity, "spiffe://lab/wl/web");
    }

    #[test]
    fn aggregates_keep_what_a_recommendation_needs() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Sqlite::open(&d.path().join("flows.db")).unwrap();
        let lines = [
            // A connection decided request by request, and one of its requests.
            r#"{"timestamp":"2026-12-05T10:00:00Z","event_type":"flow","src_ip":"10.0.1.2","src_port":40000,"dest_ip":"10.0.2.2","dest_port":8080,"proto":"TCP","eastwall":{"node":"hostB","direction":"inbound","src":{"workload":"web"},"dest":{"workload":"api"},"policy":{"verdict":"allow","rule":"inspect"},"http_requests":{"allowed":1}}}"#,
            r#"{"timestamp":"2026-12-05T10:00:00Z","event_type":"http","src_ip":"10.0.1.2","src_port":40000,"dest_ip":"10.0.2.2","dest_port":8080,"proto":"TCP","http":{"url":"/api/accounts/17/statements?x=1","http_method":"GET"},"eastwall":{"node":"hostB","direction":"inbound","src":{"workload":"web"},"dest":{"workload":"api"},"policy":{"verdict":"allow","rule":"h"}}}"#,
            // A query, and ICMP to an address outside the registry.
            r#"{"timestamp":"2026-12-05T10:00:01Z","event_type":"dns","src_ip":"10.0.1.2","src_port":40001,"dest_ip":"10.0.2.9","dest_port":53,"proto":"UDP","dns":{"type":"request","queries":[{"rrname":"DB.Corp.Example.","rrtype":"A"}]},"eastwall":{"node":"hostB","direction":"inbound","src":{"workload":"web"},"dest":{"workload":"dns"},"policy":{"verdict":"allow","rule":"d"}}}"#,
            r#"{"timestamp":"2026-12-05T10:00:02Z","event_type":"flow","src_ip":"10.0.1.2","dest_ip":"192.0.2.7","proto":"ICMP","icmp_type":8,"icmp_code":0,"eastwall":{"node":"hostA","direction":"outbound","src":{"workload":"web"},"dest":{},"policy":{"verdict":"allow","rule":"ping"}}}"#,
        ];
        let batch: Vec<(Row, String)> = lines
            .iter()
            .map(|l| {
                (
                    row_of(&serde_json::from_str(l).unwrap()).unwrap(),
                    (*l).to_owned(),
                )
            })
            .collect();
        s.insert(&batch, 1).unwrap();
        let edges = s.edges(0, i64::MAX).unwrap();
        let by_rule = |r: &str| edges.iter().find(|e| e.rule == r).unwrap();
        assert!(by_rule("inspect").per_request);
        assert_eq!(
            (
                by_rule("h").method.as_str(),
                by_rule("h").path_prefix.as_str()
            ),
            ("GET", "/api/accounts/*")
        );
        assert!(!by_rule("h").per_request);
        assert_eq!(by_rule("d").dns, "db.corp.example");
        let ping = by_rule("ping");
        assert_eq!(
            (ping.icmp_type, ping.dest.addr.as_str()),
            (Some(8), "192.0.2.7")
        );
        // A workload's address is not kept: the workload names it.
        assert_eq!(ping.src.addr, "");
        // The window is whole days: the day of `until` counts unless it is midnight.
        let day = eastwall_flows::record::unix_micros("2026-12-05T00:00:00Z").unwrap();
        assert_eq!(s.edges(day, day + 1).unwrap().len(), edges.len());
        assert!(s.edges(0, day).unwrap().is_empty());
        assert!(s.edges(day + DAY_US, i64::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_store_of_an_earlier_version_has_its_aggregates_rebuilt_from_its_records() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("flows.db");
        let mut s = Sqlite::open(&path).unwrap();
        let batch: Vec<(Row, String)> = (0..40)
            .map(|i| {
                rec(
                    i,
                    "web",
                    if i % 4 == 0 { "deny" } else { "allow" },
                    "/api/x/1",
                )
            })
            .collect();
        s.insert(&batch, 1).unwrap();
        let before = s.edges(0, i64::MAX).unwrap();
        // As the first version left it: its own table, no version.
        s.db.execute_batch(
            "DROP TABLE edges;
             CREATE TABLE edges (day INTEGER NOT NULL, src_workload TEXT NOT NULL,
               path_prefix TEXT NOT NULL, count INTEGER NOT NULL,
               PRIMARY KEY (day, src_workload, path_prefix)) WITHOUT ROWID;
             INSERT INTO edges VALUES (20000, 'web', '/api/x', 40);
             PRAGMA user_version = 0;",
        )
        .unwrap();
        drop(s);
        let mut s = Sqlite::open(&path).unwrap();
        assert_eq!(s.edges(0, i64::MAX).unwrap(), before);
        assert_eq!(s.count().unwrap(), 40);
        // Opened again: nothing to do.
        drop(s);
        let mut s = Sqlite::open(&path).unwrap();
        assert_eq!(s.edges(0, i64::MAX).unwrap(), before);
    }

    #[test]
    fn records_edges_queries_and_retention() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Sqlite::open(&d.path().join("sub/flows.db")).unwrap();
        let batch: Vec<(Row, String)> = (0..100)
            .map(|i| {
                if i % 4 == 0 {
                    rec(i, "web", "deny", "/admin/x")
                } else {
                    rec(i, "web", "allow", &format!("/api/accounts/{i}"))
                }
            })
            .collect();
        s.insert(&batch, 1_000).unwrap();
        s.insert(&[rec(7, "batch", "allow", "/api/accounts/1")], 2_000)
            .unwrap();
        assert_eq!(s.count().unwrap(), 101);
        // Edges: per source app, verdict and path pattern, summed.
        let edges = s.edges(0, i64::MAX).unwrap();
        assert_eq!(edges.len(), 3, "{edges:?}");
        assert_eq!(
            (
                edges[0].src.app.as_str(),
                edges[0].path_prefix.as_str(),
                edges[0].count,
                edges[0].bytes
            ),
            ("web", "/api/accounts/*", 75, 750)
        );
        // Queries: the newest first-limited, oldest first; following after an id.
        let deny = Filter {
            verdict: Some("deny".into()),
            ..Filter::default()
        };
        let got = s.query(&deny, None, 10).unwrap().rows;
        assert_eq!(got.len(), 10);
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(got.iter().all(|(_, r)| r.contains("/admin/x")));
        let from_batch = Filter {
            from: vec![EndIs::parse("app:batch").unwrap()],
            ..Filter::default()
        };
        let got = s.query(&from_batch, None, 10).unwrap().rows;
        assert_eq!(got.len(), 1);
        let after = s
            .query(&Filter::default(), Some(got[0].0 - 1), 100)
            .unwrap();
        assert_eq!((after.rows.len(), after.more), (1, false));
        // Following with a filter that keeps nothing still moves on: the page says how far
        // it looked.
        let none = Filter {
            verdict: Some("nothing".into()),
            ..Filter::default()
        };
        let p = s.query(&none, Some(0), 100).unwrap();
        assert!(p.rows.is_empty() && !p.more);
        assert_eq!(p.scanned_to, Some(got[0].0));
        // A limit reached says there is more.
        let p = s.query(&Filter::default(), Some(0), 5).unwrap();
        assert!(p.more && p.rows.len() == 5);
        // Retention by age (received time), then by size.
        assert_eq!(s.prune(1_500, u64::MAX, 0).unwrap(), 100);
        assert_eq!(s.count().unwrap(), 1);
        let many: Vec<(Row, String)> = (0..5_000).map(|i| rec(i, "web", "allow", "/a")).collect();
        s.insert(&many, 3_000).unwrap();
        let before = s.bytes_used().unwrap();
        s.prune(0, before / 2, 0).unwrap();
        assert!(s.bytes_used().unwrap() <= before / 2);
        assert!(s.count().unwrap() > 0 && s.count().unwrap() < 5_001);
        // Edges outlive records, until their own retention; past the size with no records
        // left, their oldest days go.
        assert!(!s.edges(0, i64::MAX).unwrap().is_empty());
        s.prune(i64::MAX, 0, 0).unwrap();
        assert_eq!(s.count().unwrap(), 0);
        assert!(s.edges(0, i64::MAX).unwrap().is_empty());
        s.insert(&many[..10], 4_000).unwrap();
        s.prune(0, u64::MAX, i64::MAX).unwrap();
        assert!(s.edges(0, i64::MAX).unwrap().is_empty());
    }
}

/// A recommendation from the aggregates, replayed over the records they came from: nothing
/// that was allowed is denied (the aggregates keep what a rule needs).
#[cfg(test)]
mod from_aggregates {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use eastwall_flows::Observations;
    use eastwall_flows::record::row_of;
    use eastwall_policy::{Policy, Registry};
    use std::fmt::Write as _;

    const REGISTRY: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: lab.example
  nodes:
    - {name: hostA, addresses: [10.0.0.1]}
    - {name: hostB, addresses: [10.0.0.2]}
  workloads:
    - {name: vdi, node: hostA, addresses: [10.1.0.1], app: desktops, zone: corp}
    - {name: web, node: hostA, addresses: [10.1.0.2], app: shop, zone: prod}
    - {name: api, node: hostB, addresses: [10.1.0.3], app: shop, zone: prod}
    - {name: db, node: hostB, addresses: [10.1.0.4], app: ledger, zone: prod}
    - {name: dns, node: hostB, addresses: [10.1.0.5], app: infra, zone: prod}
    - {name: tool, node: hostB, addresses: [10.1.0.6]}
";

    /// A small deterministic generator (xorshift): the same seed, the same traffic.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }
    }

    /// A registry workload's name, app and zone.
    type Named = (&'static str, &'static str, &'static str);

    /// The ends traffic goes between, and their addresses; `None`: outside the registry.
    const ENDS: &[(Option<Named>, &str)] = &[
        (Some(("vdi", "desktops", "corp")), "10.1.0.1"),
        (Some(("web", "shop", "prod")), "10.1.0.2"),
        (Some(("api", "shop", "prod")), "10.1.0.3"),
        (Some(("db", "ledger", "prod")), "10.1.0.4"),
        (None, "192.0.2.7"),
        (None, "198.51.100.20"),
    ];

    fn end_json(i: usize, user: Option<(&str, &str)>) -> String {
        let (w, _) = ENDS[i];
        let mut s = String::from("{");
        if let Some((w, a, z)) = w {
            write!(s, r#""workload":"{w}","app":"{a}","zone":"{z}""#).unwrap();
        }
        if let Some((u, groups)) = user {
            let sep = if s.len() > 1 { "," } else { "" };
            let gs: Vec<String> = groups.split(',').map(|g| format!("\"{g}\"")).collect();
            write!(s, r#"{sep}"user":"{u}","groups":[{}]"#, gs.join(",")).unwrap();
        }
        s.push('}');
        s
    }

    /// Traffic of one seed: EVE lines as two nodes write them.
    fn traffic(seed: u64) -> Vec<String> {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut out = Vec::new();
        let users = [
            ("alice", "finance,staff"),
            ("bob", "finance,staff"),
            ("carol", "hr,staff"),
        ];
        for k in 0..300 {
            let ts = format!("2026-12-0{}T10:{:02}:{:02}Z", 1 + k % 3, k / 60, k % 60);
            let src = r.below(ENDS.len());
            let dst = (src + 1 + r.below(ENDS.len() - 1)) % ENDS.len();
            let user = (src == 0).then(|| users[r.below(users.len())]);
            let ends = format!(
                r#""src":{},"dest":{}"#,
                end_json(src, user),
                end_json(dst, None)
            );
            let (s_ip, d_ip) = (ENDS[src].1, ENDS[dst].1);
            let sport = 30_000 + k;
            let verdict = if r.below(5) == 0 { "deny" } else { "allow" };
            let policy = format!(r#""policy":{{"verdict":"{verdict}","rule":"r{}"}}"#, k % 4);
            match r.below(5) {
                // A connection, recorded by the source's node (through the tunnel) and by
                // the destination's.
                0 | 1 => {
                    let port = r.pick(&["443", "5432", "22"]);
                    let line = |node: &str, dir: &str, tunnel: &str| {
                        format!(
                            r#"{{"timestamp":"{ts}","event_type":"flow","src_ip":"{s_ip}","src_port":{sport},"dest_ip":"{d_ip}","dest_port":{port},"proto":"TCP","flow":{{"bytes_toserver":100,"bytes_toclient":900}},"eastwall":{{"node":"{node}","direction":"{dir}",{tunnel}{ends},{policy}}}}}"#
                        )
                    };
                    if r.below(2) == 0 {
                        out.push(line("hostA", "outbound", r#""tunnel":{"transport":"h2"},"#));
                    }
                    out.push(line("hostB", "inbound", ""));
                }
                // A connection decided request by request, and its requests.
                2 => {
                    out.push(format!(
                        r#"{{"timestamp":"{ts}","event_type":"flow","src_ip":"{s_ip}","src_port":{sport},"dest_ip":"{d_ip}","dest_port":8080,"proto":"TCP","app_proto":"http","flow":{{"bytes_toserver":100,"bytes_toclient":900}},"eastwall":{{"node":"hostB","direction":"inbound",{ends},"policy":{{"verdict":"allow","rule":"inspect"}},"http_requests":{{"allowed":2,"denied":0}}}}}}"#
                    ));
                    for _ in 0..1 + r.below(3) {
                        let path = r.pick(&[
                            "/",
                            "/health",
                            "/api/",
                            "/api/accounts",
                            "/api/accounts/17",
                            "/api/accounts/18/statements",
                            "/api/v1/users",
                            "/api/v1/items/3f2a9c1e",
                            "/static/app.js",
                            "/files/a%2Fb/raw",
                        ]);
                        let method = r.pick(&["GET", "POST", "DELETE"]);
                        let verdict = if r.below(5) == 0 { "deny" } else { "allow" };
                        out.push(format!(
                            r#"{{"timestamp":"{ts}","event_type":"http","src_ip":"{s_ip}","src_port":{sport},"dest_ip":"{d_ip}","dest_port":8080,"proto":"TCP","http":{{"hostname":"shop","url":"{path}?q=1","http_method":"{method}"}},"eastwall":{{"node":"hostB","direction":"inbound",{ends},"policy":{{"verdict":"{verdict}","rule":"h"}}}}}}"#
                        ));
                    }
                }
                // A DNS query, decided by name.
                3 => {
                    let name = r.pick(&[
                        "db.corp.example",
                        "a.svc.corp.example",
                        "b.svc.corp.example",
                        "c.svc.corp.example",
                        "example.org",
                    ]);
                    out.push(format!(
                        r#"{{"timestamp":"{ts}","event_type":"dns","src_ip":"{s_ip}","src_port":{sport},"dest_ip":"10.1.0.5","dest_port":53,"proto":"UDP","dns":{{"type":"request","queries":[{{"rrname":"{name}","rrtype":"A"}}]}},"eastwall":{{"node":"hostB","direction":"inbound","src":{},"dest":{{"workload":"dns","app":"infra","zone":"prod"}},{policy}}}}}"#,
                        end_json(src, user)
                    ));
                }
                // ICMP, by type.
                _ => {
                    let kind = r.pick(&["8", "0", "3"]);
                    out.push(format!(
                        r#"{{"timestamp":"{ts}","event_type":"flow","src_ip":"{s_ip}","dest_ip":"{d_ip}","proto":"ICMP","icmp_type":{kind},"icmp_code":0,"eastwall":{{"node":"hostB","direction":"inbound",{ends},{policy}}}}}"#
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn a_recommendation_from_the_aggregates_breaks_nothing_the_records_show() {
        let reg = Registry::parse("registry.yaml", REGISTRY).unwrap();
        for seed in 1..=25 {
            let lines = traffic(seed);
            let d = tempfile::tempdir().unwrap();
            let mut s = Sqlite::open(&d.path().join("flows.db")).unwrap();
            let batch: Vec<(Row, String)> = lines
                .iter()
                .map(|l| {
                    (
                        row_of(&serde_json::from_str(l).unwrap()).unwrap(),
                        l.clone(),
                    )
                })
                .collect();
            s.insert(&batch, 1).unwrap();
            let edges = s.edges(0, i64::MAX).unwrap();
            let (from_edges, problems) = eastwall_flows::edge::observations(&edges, &reg);
            assert!(problems.is_empty(), "seed {seed}: {problems:?}");
            let rec = eastwall_flows::recommend::recommend(&from_edges, &reg, &Default::default());
            let (policy, _) = Policy::parse("recommended.yaml", &rec.yaml, &reg)
                .unwrap_or_else(|d| panic!("seed {seed}: {d}\n{}", rec.yaml));
            let mut records = Observations::default();
            records.read("eve.json", &lines.join("\n"));
            assert!(records.problems.is_empty(), "{:?}", records.problems);
            let report = eastwall_flows::replay::replay(&records.list, &reg, &policy);
            assert_eq!(
                report.breaks(),
                0,
                "seed {seed}: the recommendation from the aggregates denies what was allowed:\n{report}\n{}",
                rec.yaml
            );
            // The aggregates count each allowed decision once, as the records do.
            let allowed: u64 = records
                .list
                .iter()
                .filter(|o| o.verdict == eastwall_flows::Verdict::Allow)
                .map(|o| o.count)
                .sum();
            assert_eq!(rec.covered, allowed, "seed {seed}");
        }
    }
}
