//! EVE events checked against Suricata's own published schema (`etc/schema.json` of Suricata
//! 8.0.7, vendored in `testdata/suricata-eve-schema/` with its licence) with one addition:
//! the `eastwall` extension object, whose schema is `docs/eve-eastwall.schema.json`. Every
//! EVE line an end-to-end test reads through [`crate::Cloud::events`] is checked, so a
//! field Suricata's consumers would not understand fails the scenario that wrote it.

use std::sync::OnceLock;

use serde_json::Value;

const SURICATA_SCHEMA: &str = include_str!("../testdata/suricata-eve-schema/schema.json");
const EASTWALL_SCHEMA: &str = include_str!("../../docs/eve-eastwall.schema.json");

/// Suricata's schema with `properties.eastwall` set to eastwall's extension schema (its
/// `$defs` moved to the root's, where its `#/$defs/...` references then point).
pub fn combined_schema() -> Value {
    let mut root: Value = serde_json::from_str(SURICATA_SCHEMA).expect("Suricata's schema");
    let mut ext: Value = serde_json::from_str(EASTWALL_SCHEMA).expect("eastwall's schema");
    let ext_obj = ext.as_object_mut().expect("an object");
    let defs = ext_obj.remove("$defs").unwrap_or_default();
    for key in ["$schema", "$id", "title"] {
        ext_obj.remove(key);
    }
    let root_defs = root["$defs"].as_object_mut().expect("Suricata's $defs");
    for (name, def) in defs.as_object().into_iter().flatten() {
        assert!(
            root_defs.insert(name.clone(), def.clone()).is_none(),
            "eastwall's $defs/{name} is also one of Suricata's"
        );
    }
    let props = root["properties"].as_object_mut().expect("properties");
    assert!(
        props.insert("eastwall".into(), ext).is_none(),
        "Suricata's schema has its own `eastwall`"
    );
    root
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| jsonschema::validator_for(&combined_schema()).expect("a valid schema"))
}

/// Every way `event` breaks the schema, each with its place (`/tls/alpn: ...`); empty when
/// it conforms. Beyond the schema: a `flow_id` fits in 51 bits (JavaScript reads it
/// exactly), and an event with an `eastwall.node` names it in `host`.
pub fn violations(event: &Value) -> Vec<String> {
    let mut found: Vec<String> = validator()
        .iter_errors(event)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect();
    if let Some(id) = event.get("flow_id")
        && id.as_u64().is_none_or(|id| id >= 1 << 51)
    {
        found.push(format!("/flow_id: {id} is not below 2^51"));
    }
    if let Some(node) = event["eastwall"].get("node")
        && event.get("host") != Some(node)
    {
        found.push(format!(
            "/host: {} is not the node {node}",
            event.get("host").unwrap_or(&Value::Null)
        ));
    }
    found
}

/// Panics, naming every violation and the event, unless `event` conforms.
pub fn assert_conforms(event: &Value) {
    let v = violations(event);
    assert!(
        v.is_empty(),
        "EVE event does not conform to Suricata's schema (+ eastwall's extension):\n  {}\nevent: {event:#}",
        v.join("\n  ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flow() -> Value {
        json!({
            "timestamp": "2026-12-06T10:00:00.000000+0000",
            "host": "host-a",
            "flow_id": (1u64 << 51) - 1,
            "event_type": "flow",
            "src_ip": "10.0.0.2", "src_port": 40000, "dest_ip": "10.0.1.2", "dest_port": 443,
            "proto": "TCP",
            "app_proto": "tls",
            "flow": {"bytes_toserver": 1, "bytes_toclient": 2, "start": "x", "end": "y",
                     "age": 0, "state": "closed", "reason": "shutdown", "alerted": false},
            "tls": {"sni": "a.example", "version": "TLS 1.3", "client_alpns": ["h2"]},
            "eastwall": {
                "node": "host-a", "direction": "outbound",
                "src": {"workload": "web", "app": null, "zone": null, "node": null, "identity": null},
                "dest": {},
                "policy": {"verdict": "allow", "rule": "r", "section": null, "mode": "enforce", "monitor": []},
                "duration_ms": 3
            }
        })
    }

    #[test]
    fn a_conforming_event_passes() {
        assert_eq!(violations(&flow()), Vec::<String>::new());
    }

    /// Each of the ways eastwall's events once broke Suricata's schema is caught, at its
    /// place.
    #[test]
    fn what_suricata_would_not_read_is_caught() {
        type Break = fn(&mut Value);
        let cases: [(&str, Break); 8] = [
            ("/tls", |v| v["tls"]["alpn"] = json!(["h2"])),
            (
                "/http",
                |v| v["http"] = json!({"url": "/", "http_method": "GET", "normalized_path": "/"}),
            ),
            ("/dns", |v| v["dns"] = json!({"rrname": "a.example"})),
            ("/flow_id", |v| v["flow_id"] = json!(1u64 << 51)),
            ("/host", |v| v["host"] = json!("host-b")),
            ("/eastwall", |v| {
                v["eastwall"]["src_identity"] = json!("spiffe://x/y")
            }),
            ("/eastwall/policy/verdict", |v| {
                v["eastwall"]["policy"]["verdict"] = json!("maybe")
            }),
            ("", |v| v["sensor"] = json!("host-a")),
        ];
        for (place, break_it) in cases {
            let mut v = flow();
            break_it(&mut v);
            let found = violations(&v);
            assert!(
                found.iter().any(|f| f.starts_with(&format!("{place}:"))),
                "{place}: {found:?}"
            );
        }
    }
}
