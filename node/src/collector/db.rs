//! Where the collector keeps records: one interface ([`FlowStore`]) and its embedded
//! implementation on SQLite ([`Sqlite`]): every record with its columns (indexed by time)
//! and per-edge aggregates by day, so questions over weeks stay fast; retention by age and
//! by size. A team that outgrows one machine implements [`FlowStore`] on its analytics store.

use std::path::Path;

use anyhow::Context;
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

/// One edge of the aggregates: who talked to whom, how, decided how, over one day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The day (days since 1970, UTC).
    pub day: i64,
    /// Source workload, app, zone, identity, user (empty: none).
    pub src: [String; 5],
    /// The source user's groups, sorted, joined by commas (empty: none known).
    pub src_groups: String,
    /// Destination workload, app, zone.
    pub dest: [String; 3],
    /// Protocol and port.
    pub proto: String,
    /// The destination port.
    pub port: u16,
    /// `allow`, `deny`, or `alert` (an IDS alert on the edge).
    pub verdict: String,
    /// The deciding rule.
    pub rule: String,
    /// HTTP method and the path's first two segments.
    pub method: String,
    /// The path's first two segments.
    pub path_prefix: String,
    /// A monitor rule that would have denied what was allowed (empty: none).
    pub monitor: String,
    /// Decisions, bytes.
    pub count: u64,
    /// Bytes.
    pub bytes: u64,
    /// First and last seen (µs since 1970).
    pub first_us: i64,
    /// Last seen.
    pub last_us: i64,
}

/// The collector's storage.
pub trait FlowStore: Send {
    /// Stores `records` (their columns and their text), received at `received_us`.
    fn insert(&mut self, records: &[(Row, String)], received_us: i64) -> anyhow::Result<()>;
    /// Records `filter` keeps, by id: after `after` (oldest first, for following), or the
    /// newest `limit` (oldest first) when `after` is `None`; at most [`MAX_SCAN`] looked at.
    fn query(&mut self, filter: &Filter, after: Option<i64>, limit: usize) -> anyhow::Result<Page>;
    /// The edges seen since `since_us`, summed over their days.
    fn edges(&mut self, since_us: i64) -> anyhow::Result<Vec<Edge>>;
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
CREATE TABLE IF NOT EXISTS edges (
  day INTEGER NOT NULL,
  src_workload TEXT NOT NULL, src_app TEXT NOT NULL, src_zone TEXT NOT NULL,
  src_identity TEXT NOT NULL, src_user TEXT NOT NULL, src_groups TEXT NOT NULL,
  dest_workload TEXT NOT NULL, dest_app TEXT NOT NULL, dest_zone TEXT NOT NULL,
  proto TEXT NOT NULL, port INTEGER NOT NULL, verdict TEXT NOT NULL, rule TEXT NOT NULL,
  method TEXT NOT NULL, path_prefix TEXT NOT NULL, monitor TEXT NOT NULL,
  count INTEGER NOT NULL, bytes INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
  PRIMARY KEY (day, src_workload, src_app, src_zone, src_identity, src_user, src_groups,
               dest_workload, dest_app, dest_zone, proto, port, verdict, rule, method, path_prefix,
               monitor)
) WITHOUT ROWID;
";

/// The first two segments of a path (`/api/accounts/17` → `/api/accounts`).
fn path_prefix(path: Option<&str>) -> String {
    let Some(p) = path else {
        return String::new();
    };
    let mut out = String::new();
    for seg in p.split('/').skip(1).take(2) {
        out.push('/');
        out.push_str(seg);
    }
    out
}

const DAY_US: i64 = 86_400 * 1_000_000;

impl Sqlite {
    /// Opens (creating it if missing) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let db = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        db.execute_batch(SCHEMA)
            .with_context(|| format!("preparing {}", path.display()))?;
        Ok(Sqlite { db })
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
            let mut edge = tx.prepare_cached(
                "INSERT INTO edges VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                   ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?20)
                 ON CONFLICT DO UPDATE SET count = count + excluded.count,
                   bytes = bytes + excluded.bytes,
                   first = min(first, excluded.first), last = max(last, excluded.last)",
            )?;
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
                // Decisions make edges, and so do alerts (verdict `alert`, rule `sid N`);
                // other records do not. A connection through the tunnel counts once, as its
                // destination's node recorded it.
                if r.relayed && r.verdict.as_deref() == Some("allow") {
                    continue;
                }
                let (verdict, rule) = match (&r.verdict, r.sid) {
                    (Some(v), _) => (v.clone(), r.rule.clone().unwrap_or_default()),
                    (None, Some(sid)) if r.event_type == "alert" => {
                        ("alert".to_owned(), format!("sid {sid}"))
                    }
                    _ => continue,
                };
                let s = |o: &Option<String>| o.clone().unwrap_or_default();
                edge.execute(params![
                    r.time_us.div_euclid(DAY_US),
                    s(&r.src.workload),
                    s(&r.src.app),
                    s(&r.src.zone),
                    s(&r.src.identity),
                    s(&r.src.user),
                    {
                        let mut g = r.src.groups.clone();
                        g.sort();
                        g.join(",")
                    },
                    s(&r.dest.workload),
                    s(&r.dest.app),
                    s(&r.dest.zone),
                    r.proto,
                    r.port,
                    verdict,
                    rule,
                    s(&r.method),
                    path_prefix(r.path.as_deref()),
                    s(&r.monitor),
                    count,
                    bytes,
                    r.time_us,
                ])?;
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

    fn edges(&mut self, since_us: i64) -> anyhow::Result<Vec<Edge>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT min(day), src_workload, src_app, src_zone, src_identity, src_user,
                    src_groups, dest_workload, dest_app, dest_zone, proto, port, verdict, rule, method,
                    path_prefix, monitor, sum(count), sum(bytes), min(first), max(last)
             FROM edges WHERE day >= ?1
             GROUP BY src_workload, src_app, src_zone, src_identity, src_user, src_groups,
                      dest_workload,
                      dest_app, dest_zone, proto, port, verdict, rule, method, path_prefix,
                      monitor
             ORDER BY sum(count) DESC",
        )?;
        let rows = stmt.query_map(params![since_us.div_euclid(DAY_US)], |r| {
            Ok(Edge {
                day: r.get(0)?,
                src: [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
                src_groups: r.get(6)?,
                dest: [r.get(7)?, r.get(8)?, r.get(9)?],
                proto: r.get(10)?,
                port: r.get(11)?,
                verdict: r.get(12)?,
                rule: r.get(13)?,
                method: r.get(14)?,
                path_prefix: r.get(15)?,
                monitor: r.get(16)?,
                count: u64::try_from(r.get::<_, i64>(17)?).unwrap_or(0),
                bytes: u64::try_from(r.get::<_, i64>(18)?).unwrap_or(0),
                first_us: r.get(19)?,
                last_us: r.get(20)?,
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
            r#"{{"timestamp":"2026-12-05T10:00:{:02}Z","event_type":"http","src_ip":"10.0.1.{}","dest_ip":"10.0.2.2","dest_port":443,"proto":"TCP","http":{{"url":"{path}","http_method":"GET"}},"flow":{{"bytes_toserver":10,"bytes_toclient":0}},"eastwall":{{"node":"hostB","src":{{"app":"{app}"}},"dest":{{"app":"api"}},"policy":{{"verdict":"{verdict}","rule":"r"}}}}}}"#,
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
        let edges = s.edges(0).unwrap();
        let monitored: Vec<&Edge> = edges.iter().filter(|e| e.monitor == "watch").collect();
        assert_eq!(monitored.len(), 1, "{edges:?}");
        assert_eq!(monitored[0].count, 1);
        assert_eq!(monitored[0].src_groups, "finance,vdi");
        assert!(
            edges
                .iter()
                .any(|e| e.monitor.is_empty() && e.verdict == "allow" && e.count == 1)
        );
        let alerts: Vec<&Edge> = edges.iter().filter(|e| e.verdict == "alert").collect();
        assert_eq!(alerts.len(), 1, "{edges:?}");
        assert_eq!(alerts[0].rule, "sid 2001");
        assert_eq!(alerts[0].src[3], "spiffe://lab/wl/web");
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
        // Edges: per source app, verdict and path prefix, summed.
        let edges = s.edges(0).unwrap();
        assert_eq!(edges.len(), 3, "{edges:?}");
        assert_eq!(
            (
                edges[0].src[1].as_str(),
                edges[0].path_prefix.as_str(),
                edges[0].count,
                edges[0].bytes
            ),
            ("web", "/api/accounts", 75, 750)
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
        assert!(!s.edges(0).unwrap().is_empty());
        s.prune(i64::MAX, 0, 0).unwrap();
        assert_eq!(s.count().unwrap(), 0);
        assert!(s.edges(0).unwrap().is_empty());
        s.insert(&many[..10], 4_000).unwrap();
        s.prune(0, u64::MAX, i64::MAX).unwrap();
        assert!(s.edges(0).unwrap().is_empty());
    }
}
