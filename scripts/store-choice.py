#!/usr/bin/env python3
"""SQLite or DuckDB for the collector's store (issue 17): the same schema, the same batches,
the same questions, both engines embedded through their Python bindings, in one run.

    pip install duckdb pyarrow      # development-time only: the collector links SQLite
    python3 scripts/store-choice.py [--records 2000000] [--batch 2000]

The collector's work, in the order it does it: batches of records from nodes (each stored with
its columns and its JSON line, and folded into the per-edge aggregates by day), then the
questions: `observe` (the latest records of one app in the last hour), the edges over the
window (from the aggregates), an aggregate over the raw records (what the aggregates spare),
and retention (the oldest tenth deleted). Prints one table; docs/BENCHMARKS.md keeps a run.
"""
import argparse
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time

import duckdb
import pyarrow as pa

COLUMNS = [
    ("received", "BIGINT NOT NULL"), ("time", "BIGINT NOT NULL"), ("node", "TEXT NOT NULL"),
    ("event_type", "TEXT NOT NULL"), ("src_ip", "TEXT"), ("src_workload", "TEXT"),
    ("src_app", "TEXT"), ("src_zone", "TEXT"), ("src_identity", "TEXT"), ("src_user", "TEXT"),
    ("dest_ip", "TEXT"), ("dest_workload", "TEXT"), ("dest_app", "TEXT"), ("dest_zone", "TEXT"),
    ("dest_identity", "TEXT"), ("proto", "TEXT"), ("port", "INTEGER"), ("verdict", "TEXT"),
    ("rule", "TEXT"), ("method", "TEXT"), ("path", "TEXT"), ("dns", "TEXT"),
    ("bytes", "BIGINT NOT NULL"), ("count", "BIGINT NOT NULL"), ("raw", "TEXT NOT NULL"),
]
EDGE_KEY = ["day", "src_workload", "src_app", "src_zone", "src_identity", "src_user",
            "dest_workload", "dest_app", "dest_zone", "proto", "port", "verdict", "rule",
            "method", "path_prefix"]
DAY_US = 86_400 * 1_000_000


def schema(engine):
    ident = "id INTEGER PRIMARY KEY" if engine == "sqlite" else "id BIGINT PRIMARY KEY"
    cols = ",\n  ".join(f"{n} {t}" for n, t in COLUMNS)
    key_cols = ",\n  ".join(
        f"{k} {'BIGINT' if k in ('day', 'port') else 'TEXT'} NOT NULL" for k in EDGE_KEY)
    tail = " WITHOUT ROWID" if engine == "sqlite" else ""
    return [
        f"CREATE TABLE records ({ident},\n  {cols})",
        "CREATE INDEX records_time ON records(time)",
        "CREATE INDEX records_received ON records(received)",
        f"CREATE TABLE edges ({key_cols}, count BIGINT NOT NULL, bytes BIGINT NOT NULL, "
        f"first BIGINT NOT NULL, last BIGINT NOT NULL, PRIMARY KEY ({', '.join(EDGE_KEY)})){tail}",
    ]


def edges_upsert(source, lo, hi):
    """Folds records lo..hi into the aggregates: the same statement for both engines."""
    # The first two segments of the path (`/api/accounts/17` -> `/api/accounts`), in SQL
    # both engines speak.
    second = "instr(substr(path, 2), '/')"
    third = f"instr(substr(path, {second} + 2), '/')"
    prefix = (f"CASE WHEN path IS NULL THEN '' WHEN {second} = 0 OR {third} = 0 THEN path "
              f"ELSE substr(path, 1, {second} + {third}) END")
    return f"""
INSERT INTO edges
SELECT time // {DAY_US} AS day, coalesce(src_workload, ''), coalesce(src_app, ''),
  coalesce(src_zone, ''), coalesce(src_identity, ''), coalesce(src_user, ''),
  coalesce(dest_workload, ''), coalesce(dest_app, ''), coalesce(dest_zone, ''),
  coalesce(proto, ''), coalesce(port, 0), coalesce(verdict, ''), coalesce(rule, ''),
  coalesce(method, ''), {prefix} AS pp, sum(count), sum(bytes), min(time), max(time)
FROM {source} WHERE id >= {lo} AND id < {hi}
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
ON CONFLICT DO UPDATE SET count = count + excluded.count, bytes = bytes + excluded.bytes,
  first = least(first, excluded.first), last = greatest(last, excluded.last)"""


def synthetic(n, seed=7):
    """Records of a 1,000-workload cloud (50 apps, 4 zones), as flows-bench makes them."""
    rnd = random.Random(seed)
    zones = ["dev", "test", "prod", "shared"]
    t0 = 1_764_000_000_000_000
    span = 14 * DAY_US  # two weeks of traffic
    rows = []
    for i in range(n):
        # Each workload talks to ten peers: 10,000 edges, as in a real cloud.
        s = rnd.randrange(1000)
        d = (s * 7 + 13 * rnd.randrange(10)) % 1000
        kind = rnd.random()
        denied = rnd.random() < 0.1
        t = t0 + span * i // n
        rec = {
            "id": i, "received": t + 5_000, "time": t, "node": f"node{s % 20}",
            "event_type": "flow" if kind < 0.5 else ("http" if kind < 0.75 else "dns"),
            "src_ip": f"10.{s // 250}.{s % 250}.1", "src_workload": f"wl{s}",
            "src_app": f"app{s % 50}", "src_zone": zones[s % 4],
            "src_identity": f"spiffe://corp/wl{s}",
            "src_user": f"user{s % 300}" if s % 7 == 0 else None,
            "dest_ip": f"10.{d // 250}.{d % 250}.1", "dest_workload": f"wl{d}",
            "dest_app": f"app{d % 50}", "dest_zone": zones[d % 4],
            "dest_identity": f"spiffe://corp/wl{d}",
            "proto": "udp" if kind >= 0.75 else "tcp",
            "port": 53 if kind >= 0.75 else (8080 if kind >= 0.5 else [443, 5432, 6379][d % 3]),
            "verdict": "deny" if denied else "allow",
            "rule": "default-deny" if denied else f"app{d % 50}-in",
            "method": "GET" if 0.5 <= kind < 0.75 else None,
            "path": f"/api/accounts/{rnd.randrange(10000)}" if 0.5 <= kind < 0.75 else None,
            "dns": f"svc{d}.corp.internal" if kind >= 0.75 else None,
            "bytes": rnd.randrange(100, 100_000), "count": 1,
        }
        rec["raw"] = json.dumps(rec)
        rows.append(rec)
    return rows


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def run_sqlite(path, rows, batch):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for s in schema("sqlite"):
        db.execute(s)
    # The same statement in SQLite's words: integer division and two-argument min/max.
    up = (edges_upsert("records", "{lo}", "{hi}")
          .replace("time // ", "time / ")
          .replace("least(", "min(").replace("greatest(", "max("))
    names = ["id"] + [n for n, _ in COLUMNS]
    insert = f"INSERT INTO records ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"

    def ingest():
        for lo in range(0, len(rows), batch):
            chunk = rows[lo:lo + batch]
            db.execute("BEGIN")
            db.executemany(insert, [tuple(r[n] for n in names) for r in chunk])
            db.execute(up.format(lo=lo, hi=lo + len(chunk)))
            db.execute("COMMIT")
    return db, ingest


def run_duckdb(path, rows, batch):
    db = duckdb.connect(path)
    for s in schema("duckdb"):
        db.execute(s)
    names = ["id"] + [n for n, _ in COLUMNS]

    def ingest():
        for lo in range(0, len(rows), batch):
            chunk = rows[lo:lo + batch]
            # DuckDB's fast path: a columnar batch, not rows one by one.
            arrow_batch = pa.table({n: [r[n] for r in chunk] for n in names})  # noqa: F841
            db.execute("BEGIN")
            db.execute(f"INSERT INTO records SELECT {', '.join(names)} FROM arrow_batch")
            db.execute(edges_upsert("records", lo, lo + len(chunk)))
            db.execute("COMMIT")
    return db, ingest


def questions(db, n_rows, rows):
    last = rows[-1]["time"]
    hour = 3_600_000_000
    observe = ("SELECT raw FROM records WHERE time >= ? AND time < ? AND src_app = ? "
               "ORDER BY id DESC LIMIT 100")
    week = last - 7 * DAY_US
    edges = ("SELECT src_workload, src_app, src_zone, src_identity, src_user, dest_workload, "
             "dest_app, dest_zone, proto, port, verdict, rule, method, path_prefix, "
             "sum(count), sum(bytes), min(first), max(last) FROM edges WHERE day >= ? "
             "GROUP BY 1,2,3,4,5,6,7,8,9,10,11,12,13,14 ORDER BY 15 DESC")
    raw_agg = ("SELECT src_app, dest_app, proto, port, verdict, count(*), sum(bytes) "
               "FROM records WHERE time >= ? GROUP BY 1,2,3,4,5")
    cut = rows[n_rows // 10]["received"]
    out = {}
    out["observe"], got = timed(
        lambda: db.execute(observe, [last - hour, last + 1, "app7"]).fetchall())
    assert got, "observe found nothing"
    out["edges"], e = timed(lambda: db.execute(edges, [week // DAY_US]).fetchall())
    out["edge_rows"] = len(e)
    out["raw_agg"], _ = timed(lambda: db.execute(raw_agg, [week]).fetchall())
    out["retention"], _ = timed(
        lambda: db.execute("DELETE FROM records WHERE received < ?", [cut]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=2000)
    a = ap.parse_args()
    print(f"generating {a.records:,} records ...", flush=True)
    rows = synthetic(a.records)
    work = tempfile.mkdtemp(prefix="eastwall-store-choice-")
    results = {}
    try:
        for engine, run in (("sqlite", run_sqlite), ("duckdb", run_duckdb)):
            path = os.path.join(work, f"flows.{engine}")
            db, ingest = run(path, rows, a.batch)
            secs, _ = timed(ingest)
            r = {"ingest": a.records / secs}
            if engine == "duckdb":
                db.execute("CHECKPOINT")
            r.update(questions(db, a.records, rows))
            db.close()
            r["size"] = sum(os.path.getsize(os.path.join(work, f))
                            for f in os.listdir(work) if f.startswith(f"flows.{engine}"))
            results[engine] = r
            print(f"{engine}: {r}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s, d = results["sqlite"], results["duckdb"]
    print(f"\n| {a.records:,} records, batches of {a.batch:,} | SQLite {sqlite3.sqlite_version} "
          f"| DuckDB {duckdb.__version__} | DuckDB / SQLite |")
    print("|---|---|---|---|")
    print(f"| ingest (records + aggregates) | {s['ingest']:,.0f}/s | {d['ingest']:,.0f}/s "
          f"| {d['ingest'] / s['ingest']:.2f} |")
    for key, label in (("observe", "observe: last 100 of one app, last hour"),
                       ("edges", f"edges over 7 days, from the aggregates ({s['edge_rows']:,})"),
                       ("raw_agg", "aggregate over 7 days of raw records"),
                       ("retention", "retention: delete the oldest tenth")):
        print(f"| {label} | {s[key] * 1e3:,.1f} ms | {d[key] * 1e3:,.1f} ms "
              f"| {d[key] / s[key]:.2f} |")
    print(f"| on disk | {s['size'] / 2**20:,.0f} MiB | {d['size'] / 2**20:,.0f} MiB "
          f"| {d['size'] / s['size']:.2f} |")


if __name__ == "__main__":
    main()
