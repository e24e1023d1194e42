//! One EVE record (any event a node writes: `flow`, `http`, `dns`, `alert`, ...) as the
//! columns a collector stores and a filter tests, read defensively from its JSON.

use std::net::IpAddr;

use serde_json::Value;

/// Longest field kept (a longer one is cut: a hostile record cannot bloat the store).
pub const MAX_FIELD: usize = 1024;

/// One end of a record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct End {
    /// Its address.
    pub ip: Option<IpAddr>,
    /// Registry workload, app, zone.
    pub workload: Option<String>,
    /// Its app.
    pub app: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// Its identity.
    pub identity: Option<String>,
    /// Its user.
    pub user: Option<String>,
    /// The user's groups.
    pub groups: Vec<String>,
}

/// A record's columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// When the node wrote it, in microseconds since 1970 (UTC).
    pub time_us: i64,
    /// The node (the record's `eastwall.node`).
    pub node: String,
    /// `flow`, `http`, `dns`, `alert`, ...
    pub event_type: String,
    /// The source.
    pub src: End,
    /// The destination.
    pub dest: End,
    /// `TCP`, `UDP`, ...
    pub proto: String,
    /// The destination port.
    pub port: u16,
    /// The ICMP type (ICMP and ICMPv6).
    pub icmp_type: Option<u8>,
    /// `allow` or `deny` (absent for records without a decision, such as alerts).
    pub verdict: Option<String>,
    /// The deciding rule.
    pub rule: Option<String>,
    /// A monitor-mode rule that would have denied what was allowed (the first one).
    pub monitor: Option<String>,
    /// An HTTP request's method and path.
    pub method: Option<String>,
    /// Its path, without the query.
    pub path: Option<String>,
    /// A DNS query's name.
    pub dns: Option<String>,
    /// An alert's signature id.
    pub sid: Option<u64>,
    /// Bytes both ways.
    pub bytes: u64,
    /// Decisions it stands for (an aggregate: many).
    pub count: u64,
    /// The source node's record of a connection it carried through the tunnel: the
    /// destination's node records the same connection (and decides it again), so counts of
    /// decisions take that one.
    pub relayed: bool,
    /// A connection whose HTTP requests or DNS queries were decided one by one (they are
    /// records of their own).
    pub per_request: bool,
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(|s| {
        let mut s = s.to_owned();
        if s.len() > MAX_FIELD {
            let mut cut = MAX_FIELD;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    })
}

fn end(v: &Value, e: &Value, ip: &str) -> End {
    End {
        ip: v[ip].as_str().and_then(|s| s.parse().ok()),
        workload: text(&e["workload"]),
        app: text(&e["app"]),
        zone: text(&e["zone"]),
        identity: text(&e["identity"]),
        user: text(&e["user"]),
        groups: e["groups"]
            .as_array()
            .map(|a| a.iter().filter_map(text).take(64).collect())
            .unwrap_or_default(),
    }
}

/// The columns of record `v`; an error says why it is not an eastwall record.
pub fn row_of(v: &Value) -> Result<Row, String> {
    if !v.is_object() {
        return Err("not a JSON object".to_owned());
    }
    let event_type = text(&v["event_type"]).ok_or("no `event_type`")?;
    let ts = v["timestamp"].as_str().ok_or("no `timestamp`")?;
    let time_us = unix_micros(ts).ok_or_else(|| format!("`timestamp` {ts:?} is not a time"))?;
    let e = &v["eastwall"];
    // Alerts of nodes before the one extension shape carried the ends' identities only.
    let (src, dest) = if event_type == "alert" && e.get("src").is_none() {
        let side = |id: &str| serde_json::json!({"identity": e[id]});
        (
            end(v, &side("src_identity"), "src_ip"),
            end(v, &side("dest_identity"), "dest_ip"),
        )
    } else {
        (end(v, &e["src"], "src_ip"), end(v, &e["dest"], "dest_ip"))
    };
    let http = &v["http"];
    let path = text(&e["normalized_path"])
        .or_else(|| text(&http["normalized_path"]))
        .or_else(|| {
            text(&http["url"]).map(|u| u.split(['?', '#']).next().unwrap_or_default().to_owned())
        });
    Ok(Row {
        time_us,
        node: text(&e["node"]).unwrap_or_default(),
        event_type,
        src,
        dest,
        proto: text(&v["proto"]).unwrap_or_default(),
        port: v["dest_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0),
        icmp_type: v["icmp_type"].as_u64().and_then(|t| u8::try_from(t).ok()),
        verdict: text(&e["policy"]["verdict"]),
        rule: text(&e["policy"]["rule"]),
        monitor: e["policy"]["monitor"].as_array().and_then(|m| {
            m.iter()
                .find(|h| h["would"] == "deny")
                .and_then(|h| text(&h["rule"]))
        }),
        method: text(&http["http_method"]),
        path,
        dns: text(&v["dns"]["queries"][0]["rrname"])
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
        sid: v["alert"]["signature_id"].as_u64(),
        bytes: v["flow"]["bytes_toserver"]
            .as_u64()
            .unwrap_or(0)
            .saturating_add(v["flow"]["bytes_toclient"].as_u64().unwrap_or(0)),
        count: e["aggregate"]["flows"].as_u64().unwrap_or(1).max(1),
        relayed: e["direction"] == "outbound" && e["tunnel"].is_object(),
        per_request: !e["http_requests"].is_null() || !e["dns_queries"].is_null(),
    })
}

/// Microseconds since 1970 of `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HHMM|±HH:MM)` (EVE's
/// and RFC 3339's forms).
pub fn unix_micros(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = ts.get(r)?;
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = ts.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let six: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = six.parse().ok()?;
    }
    let offset_secs = match ts.get(i..)? {
        "Z" | "z" => 0,
        rest if rest.len() == 5 || rest.len() == 6 => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let oh: i64 = digits[..2].parse().ok()?;
            let om: i64 = digits[2..].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from civil (H. Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// EVE's form of the time `us` microseconds after 1970 (UTC): the inverse of
/// [`unix_micros`].
pub fn timestamp_of(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}+0000",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_go_both_ways() {
        for us in [
            0,
            1_796_464_800_000_123,
            951_868_800_000_000,
            4_102_444_799_999_999,
        ] {
            assert_eq!(
                unix_micros(&timestamp_of(us)),
                Some(us),
                "{}",
                timestamp_of(us)
            );
        }
        assert_eq!(
            timestamp_of(1_796_464_800_000_123),
            "2026-12-05T10:00:00.000123+0000"
        );
    }

    #[test]
    fn times_of_every_form() {
        assert_eq!(unix_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_micros("2026-12-05T10:00:00.000123+0000"),
            Some(1_796_464_800_000_123)
        );
        assert_eq!(
            unix_micros("2026-12-05T11:00:00.5+01:00"),
            Some(1_796_464_800_500_000)
        );
        assert_eq!(
            unix_micros("2000-03-01T00:00:00Z"),
            Some(951_868_800_000_000)
        );
        for bad in [
            "",
            "2026-12-05",
            "2026-13-05T10:00:00Z",
            "2026-12-05T10:00:00",
            "2026-12-05T10:00:00.Z",
            "2026-12-05T10:00:00+0",
            "2026-12-05T10:00:00*0000",
            "2026-12-05T1x:00:00Z",
            "２０２６-12-05T10:00:00Z",
        ] {
            assert_eq!(unix_micros(bad), None, "{bad}");
        }
    }

    #[test]
    fn rows_of_flows_requests_and_alerts() {
        let flow: Value = serde_json::from_str(r#"{"timestamp":"2026-12-05T10:00:00.000000+0000","event_type":"flow","src_ip":"10.0.1.2","dest_ip":"10.0.2.2","dest_port":5432,"proto":"TCP","flow":{"bytes_toserver":5,"bytes_toclient":7},"eastwall":{"node":"hostA","src":{"workload":"web","app":"web","user":"alice","groups":["finance"]},"dest":{"app":"db"},"policy":{"verdict":"allow","rule":"r1"}}}"#).unwrap();
        let r = row_of(&flow).unwrap();
        assert_eq!(
            (r.node.as_str(), r.port, r.bytes, r.count),
            ("hostA", 5432, 12, 1)
        );
        assert_eq!(r.src.groups, ["finance"]);
        assert_eq!(r.verdict.as_deref(), Some("allow"));
        let alert: Value = serde_json::from_str(r#"{"timestamp":"2026-12-05T10:00:00Z","event_type":"alert","src_ip":"10.0.1.2","dest_ip":"10.0.2.2","dest_port":80,"proto":"TCP","alert":{"signature_id":9},"eastwall":{"node":"hostB","src_identity":"spiffe://x/wl/a"}}"#).unwrap();
        let r = row_of(&alert).unwrap();
        assert_eq!(
            (r.sid, r.src.identity.as_deref()),
            (Some(9), Some("spiffe://x/wl/a"))
        );
        let huge = format!(
            r#"{{"timestamp":"2026-12-05T10:00:00Z","event_type":"flow","eastwall":{{"node":"{}"}}}}"#,
            "n".repeat(5000)
        );
        assert_eq!(
            row_of(&serde_json::from_str(&huge).unwrap())
                .unwrap()
                .node
                .len(),
            MAX_FIELD
        );
        for bad in [
            r#"[1]"#,
            r#"{"timestamp":"x","event_type":"flow"}"#,
            r#"{"timestamp":"2026-12-05T10:00:00Z"}"#,
        ] {
            assert!(
                row_of(&serde_json::from_str(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
