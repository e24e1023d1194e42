//! A snapshot: the configuration values of the store, by key relative to `config/`:
//!
//! | key | value |
//! |---|---|
//! | `registry` | the registry without its workloads (`kind: Registry`: trust domain, nodes), JSON |
//! | `workloads/<name>` | one workload: `{"apiVersion", "kind": "Workload", "spec": {...}}`, JSON |
//! | `policy` | the policy document (`kind: Policy`), YAML as written by its author |
//! | `rules/<set>/<nnnn>` | IDS rule set `<set>` (Suricata syntax, as written), in chunks of whole lines |
//! | `node-config/defaults` | node configuration sections for every node (`kind: NodeDefaults`), YAML as written |
//! | `node-config/nodes/<node>` | the same for one node (`metadata.node`), over the ones for every node |
//!
//! Values are validated together ([`Snapshot::validate`]) with the registry's and policy's
//! own checks; a problem is reported against the key it is in (`etcd:/eastwall/config/…`).
//! A snapshot is pure data: building one from files, merging, hashing and diffing do no I/O.

use std::collections::BTreeMap;

use eastwall_policy::{
    API_VERSION, Diagnostic, Diagnostics, DocumentKind, Policy, Registry, Severity, document_kind,
    parse_yaml,
};
use serde::Deserialize;
use serde_json::Value;

/// The registry's key (without its workloads).
pub const REGISTRY: &str = "registry";
/// The policy's key.
pub const POLICY: &str = "policy";
/// Where workloads are, one key each.
pub const WORKLOADS: &str = "workloads/";
/// Where IDS rule sets are: `rules/<set>/<nnnn>`, chunks in order.
pub const RULES: &str = "rules/";
/// Node configuration sections for every node.
pub const NODE_DEFAULTS: &str = "node-config/defaults";
/// Where the node configuration sections of one node are, one key each.
pub const NODE_CONFIG: &str = "node-config/nodes/";
/// Bytes of a rule set's chunk (whole lines; one longer rule makes a chunk of its own).
pub const RULES_CHUNK_BYTES: usize = 512 * 1024;

/// Most bytes of one stored value (etcd refuses requests past 1.5 MiB by default).
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Every configuration value, by key relative to `config/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    values: BTreeMap<String, String>,
}

/// A snapshot whose values passed validation: what a node enforces.
#[derive(Debug)]
pub struct Validated {
    /// The registry.
    pub registry: Registry,
    /// The policy, checked against the registry.
    pub policy: Policy,
    /// Warnings, against the keys they are about.
    pub warnings: Diagnostics,
    /// The registry as one document ([`Snapshot::registry_text`]).
    pub registry_text: String,
    /// The IDS rule sets, by name: each set's text whole.
    pub rules: BTreeMap<String, String>,
}

/// What one file given to `apply` replaces in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// A registry: its head and every workload (workloads it does not list are removed).
    Registry(BTreeMap<String, String>),
    /// A policy document.
    Policy(String),
    /// An IDS rule set: its name and text (a `.rules` file).
    Rules(String, String),
    /// Node configuration sections (`kind: NodeDefaults`): for one node, or (`None`) for
    /// every node; the document as written.
    NodeDefaults(Option<String>, String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Head {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<Value>,
    spec: HeadSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HeadSpec {
    #[serde(default)]
    trust_domain: Option<Value>,
    #[serde(default)]
    nodes: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope {
    api_version: String,
    kind: String,
    spec: Value,
}

impl Snapshot {
    /// The snapshot of these values (as read from the store).
    pub fn from_values(values: BTreeMap<String, String>) -> Snapshot {
        Snapshot { values }
    }

    /// The values, by key.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Sets `key` (a workload added or moved by automation).
    pub fn set(&mut self, key: String, value: String) {
        self.values.insert(key, value);
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        self.values.remove(key).is_some()
    }

    /// This snapshot with `part` in place of what it had.
    pub fn with(&self, part: &Part) -> Snapshot {
        let mut s = self.clone();
        match part {
            Part::Registry(values) => {
                s.values
                    .retain(|k, _| k != REGISTRY && !k.starts_with(WORKLOADS));
                s.values
                    .extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Part::Policy(text) => {
                s.values.insert(POLICY.to_owned(), text.clone());
            }
            Part::NodeDefaults(node, text) => {
                s.values
                    .insert(node_defaults_key(node.as_deref()), text.clone());
            }
            Part::Rules(name, text) => {
                s.remove_rules(name);
                for (i, chunk) in rules_chunks(text).into_iter().enumerate() {
                    s.values.insert(rules_key(name, i), chunk);
                }
            }
        }
        s
    }

    /// Removes IDS rule set `name`; whether it was there.
    pub fn remove_rules(&mut self, name: &str) -> bool {
        let prefix = format!("{RULES}{name}/");
        let before = self.values.len();
        self.values.retain(|k, _| !k.starts_with(&prefix));
        self.values.len() != before
    }

    /// The node configuration sections node `node` takes from the store: its own document's,
    /// then those of the one for every node that its own does not set (each section whole).
    pub fn node_defaults_for(
        &self,
        node: &str,
        source: &str,
    ) -> Result<serde_json::Map<String, Value>, Diagnostics> {
        let mut out = serde_json::Map::new();
        for key in [NODE_CONFIG.to_owned() + node, NODE_DEFAULTS.to_owned()] {
            let Some(text) = self.get(&key) else {
                continue;
            };
            let (_, spec) = defaults_envelope(source, &key, text)?;
            for (k, v) in spec {
                out.entry(k).or_insert(v);
            }
        }
        Ok(out)
    }

    /// The IDS rule sets, by name, each whole (its chunks joined in order).
    pub fn rule_sets(&self) -> BTreeMap<String, String> {
        let mut sets: BTreeMap<String, String> = BTreeMap::new();
        // Keys sort as chunks in order (`<nnnn>` is zero-padded).
        for (k, v) in &self.values {
            if let Some((name, _)) = k.strip_prefix(RULES).and_then(|r| r.rsplit_once('/')) {
                sets.entry(name.to_owned()).or_default().push_str(v);
            }
        }
        sets
    }

    /// A digest of every key and value (`sha256:<hex>`): equal snapshots, equal hashes.
    pub fn hash(&self) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (k, v) in &self.values {
            ctx.update(&(k.len() as u64).to_be_bytes());
            ctx.update(k.as_bytes());
            ctx.update(&(v.len() as u64).to_be_bytes());
            ctx.update(v.as_bytes());
        }
        let d = ctx.finish();
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// The registry, assembled from its head and workloads as one document (for `get
    /// registry`, and for validation).
    pub fn registry_text(&self, source: &str) -> Result<String, Diagnostics> {
        self.assemble(source).map(|(text, _)| text)
    }

    /// The registry alone, validated, with problems told against their keys; and its text.
    pub fn registry(&self, source: &str) -> Result<(Registry, String), Diagnostics> {
        let (text, owners) = self.assemble(source)?;
        let registry = Registry::parse(source, &text).map_err(|d| map_lines(d, source, &owners))?;
        Ok((registry, text))
    }

    /// Validates every value and the whole: the registry's and the policy's checks, with
    /// problems reported against the keys they are in (`source` prefixes them, e.g.
    /// `etcd:/eastwall/config/`).
    pub fn validate(&self, source: &str) -> Result<Validated, Diagnostics> {
        let mut diags = Diagnostics::new();
        for (k, v) in &self.values {
            if v.len() > MAX_VALUE_BYTES {
                diags.push(at_key(
                    source,
                    k,
                    format!(
                        "value is {} bytes, larger than the limit of {MAX_VALUE_BYTES}",
                        v.len()
                    ),
                ));
            }
            if k.starts_with(RULES) {
                if let Err(why) = check_rules_key(k) {
                    diags.push(at_key(source, k, why));
                }
            } else if k == NODE_DEFAULTS || k.starts_with(NODE_CONFIG) {
                if let Err(d) = defaults_envelope(source, k, v) {
                    d.into_vec().into_iter().for_each(|x| diags.push(x));
                }
            } else if k != REGISTRY && k != POLICY && !k.starts_with(WORKLOADS) {
                diags.push(at_key(
                    source,
                    k,
                    "unknown key: eastwall stores `registry`, `workloads/<name>`, `policy`, `rules/<set>/<nnnn>`, `node-config/defaults` and `node-config/nodes/<node>` here"
                        .to_owned(),
                ));
            }
        }
        let rules = self.rule_sets();
        for (name, text) in &rules {
            let chunks = self
                .values
                .keys()
                .filter(|k| k.starts_with(&format!("{RULES}{name}/")))
                .count();
            if (0..chunks).any(|i| !self.values.contains_key(&rules_key(name, i))) {
                diags.push(at_key(
                    source,
                    &format!("{RULES}{name}/"),
                    format!("rule set `{name}`: its chunks are not numbered 0000 to {:04} (written outside `eastwall apply`?)", chunks.saturating_sub(1)),
                ));
                continue;
            }
            for e in eastwall_ids::rule::parse_rules(&format!("{source}{RULES}{name}"), text).errors
            {
                diags.push(Diagnostic {
                    file: e.source,
                    line: e.line,
                    col: e.col,
                    severity: Severity::Error,
                    message: e.message,
                });
            }
        }
        let Some(policy_text) = self.get(POLICY) else {
            diags.push(at_key(source, POLICY, "no policy stored".to_owned()));
            return Err(diags);
        };
        if !diags.is_empty() {
            return Err(diags);
        }
        let (registry, text) = self.registry(source)?;
        for k in self.values.keys().filter(|k| k.starts_with(NODE_CONFIG)) {
            let node = &k[NODE_CONFIG.len()..];
            if registry.node(node).is_none() {
                diags.push(at_key(
                    source,
                    k,
                    format!("node configuration for `{node}`, which is not a node of the registry"),
                ));
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        let policy_file = format!("{source}{POLICY}");
        let (policy, warnings) = Policy::parse(&policy_file, policy_text, &registry)?;
        Ok(Validated {
            registry,
            policy,
            warnings,
            registry_text: text,
            rules,
        })
    }

    /// The registry as one document, one line per node and per workload, with the key each
    /// line comes from.
    fn assemble(&self, source: &str) -> Result<(String, Vec<String>), Diagnostics> {
        let Some(head_text) = self.get(REGISTRY) else {
            return Err(one(at_key(
                source,
                REGISTRY,
                "no registry stored".to_owned(),
            )));
        };
        let head: Head = parse_yaml(&format!("{source}{REGISTRY}"), head_text)?;
        let mut diags = Diagnostics::new();
        if head.api_version != API_VERSION {
            diags.push(at_key(
                source,
                REGISTRY,
                format!(
                    "apiVersion must be `{API_VERSION}`, found `{}`",
                    head.api_version
                ),
            ));
        }
        if head.kind != "Registry" {
            diags.push(at_key(
                source,
                REGISTRY,
                format!("kind must be `Registry`, found `{}`", head.kind),
            ));
        }
        let mut text = String::new();
        let mut owners = Vec::new();
        let mut line = |text: &mut String, owner: &str, l: String| {
            text.push_str(&l);
            text.push('\n');
            owners.push(owner.to_owned());
        };
        line(
            &mut text,
            REGISTRY,
            format!("apiVersion: {}", json(&Value::from(API_VERSION))),
        );
        line(&mut text, REGISTRY, "kind: Registry".to_owned());
        if let Some(m) = &head.metadata {
            line(&mut text, REGISTRY, format!("metadata: {}", json(m)));
        }
        line(&mut text, REGISTRY, "spec:".to_owned());
        if let Some(td) = &head.spec.trust_domain {
            line(&mut text, REGISTRY, format!("  trustDomain: {}", json(td)));
        }
        if head.spec.nodes.is_empty() {
            line(&mut text, REGISTRY, "  nodes: []".to_owned());
        } else {
            line(&mut text, REGISTRY, "  nodes:".to_owned());
            for n in &head.spec.nodes {
                line(&mut text, REGISTRY, format!("    - {}", json(n)));
            }
        }
        let workloads: Vec<(&String, &String)> = self
            .values
            .iter()
            .filter(|(k, _)| k.starts_with(WORKLOADS))
            .collect();
        if workloads.is_empty() {
            line(&mut text, REGISTRY, "  workloads: []".to_owned());
        } else {
            line(&mut text, REGISTRY, "  workloads:".to_owned());
        }
        for (key, value) in workloads {
            let file = format!("{source}{key}");
            let env: Envelope = match parse_yaml(&file, value) {
                Ok(e) => e,
                Err(d) => {
                    d.into_vec().into_iter().for_each(|x| diags.push(x));
                    continue;
                }
            };
            if env.api_version != API_VERSION {
                diags.push(at_key(
                    source,
                    key,
                    format!(
                        "apiVersion must be `{API_VERSION}`, found `{}`",
                        env.api_version
                    ),
                ));
                continue;
            }
            if env.kind != "Workload" {
                diags.push(at_key(
                    source,
                    key,
                    format!("kind must be `Workload`, found `{}`", env.kind),
                ));
                continue;
            }
            let name = &key[WORKLOADS.len()..];
            if env.spec.get("name").and_then(Value::as_str) != Some(name) {
                diags.push(at_key(
                    source,
                    key,
                    format!("the workload's `name` must be `{name}`, as its key says"),
                ));
                continue;
            }
            line(&mut text, key, format!("    - {}", json(&env.spec)));
        }
        if diags.is_empty() {
            Ok((text, owners))
        } else {
            Err(diags)
        }
    }
}

/// Splits a registry file into the values it stores as (its head, then one per workload);
/// `file` names it in messages. The file is validated first, with `FILE:LINE:COL`.
pub fn registry_part(file: &str, text: &str) -> Result<Part, Diagnostics> {
    Registry::parse(file, text)?;
    let mut doc: Value = parse_yaml(file, text)?;
    let workloads = doc
        .get_mut("spec")
        .and_then(|s| s.as_object_mut())
        .and_then(|s| s.remove("workloads"))
        .unwrap_or(Value::Null);
    let mut values = BTreeMap::new();
    values.insert(REGISTRY.to_owned(), json(&doc));
    for w in workloads.as_array().into_iter().flatten() {
        let Some(name) = w.get("name").and_then(Value::as_str) else {
            continue;
        };
        values.insert(format!("{WORKLOADS}{name}"), workload_value(w));
    }
    Ok(Part::Registry(values))
}

/// The stored value of one workload (`spec`: its registry entry).
pub fn workload_value(spec: &Value) -> String {
    json(&serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "spec": spec,
    }))
}

/// The key of the node configuration sections for `node` (`None`: every node).
pub fn node_defaults_key(node: Option<&str>) -> String {
    match node {
        Some(n) => format!("{NODE_CONFIG}{n}"),
        None => NODE_DEFAULTS.to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DefaultsDoc {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<DefaultsMeta>,
    spec: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsMeta {
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

/// The sections a node may take from the store (the node checks their contents): none that
/// name files, addresses or credentials on the node (`admin`, `identity`, `directory`,
/// `ids`, `export`, `flowLog.path`), so that writing to the store is not writing to any file
/// of every node as root.
const DEFAULTS_SECTIONS: &[&str] = &[
    "capture", "runtime", "limits", "udp", "l7", "tunnel", "flowLog",
];

/// A `kind: NodeDefaults` document's shape (`file` names it): the node it is for and its
/// sections.
fn defaults_doc(
    file: &str,
    text: &str,
) -> Result<(Option<String>, serde_json::Map<String, Value>), Diagnostics> {
    let doc: DefaultsDoc = parse_yaml(file, text)?;
    let mut diags = Diagnostics::new();
    let mut error = |message: String| {
        diags.push(Diagnostic {
            file: file.to_owned(),
            line: 0,
            col: 0,
            severity: Severity::Error,
            message,
        })
    };
    if doc.api_version != API_VERSION {
        error(format!(
            "apiVersion must be `{API_VERSION}`, found `{}`",
            doc.api_version
        ));
    }
    if doc.kind != "NodeDefaults" {
        error(format!("kind must be `NodeDefaults`, found `{}`", doc.kind));
    }
    for k in doc.spec.keys() {
        if !DEFAULTS_SECTIONS.contains(&k.as_str()) {
            error(format!(
                "`{k}` cannot come from the store (it may: {}; what names files, addresses or credentials stays in each node's own file)",
                DEFAULTS_SECTIONS.join(", ")
            ));
        }
    }
    if doc
        .spec
        .get("flowLog")
        .and_then(|f| f.get("path"))
        .is_some()
    {
        error("`flowLog.path` cannot come from the store: it names a file on each node".to_owned());
    }
    if diags.is_empty() {
        Ok((doc.metadata.and_then(|m| m.node), doc.spec))
    } else {
        Err(diags)
    }
}

/// A stored `kind: NodeDefaults` value: its shape, and the node it names is the one of its
/// key.
fn defaults_envelope(
    source: &str,
    key: &str,
    text: &str,
) -> Result<(Option<String>, serde_json::Map<String, Value>), Diagnostics> {
    let (node, spec) = defaults_doc(&format!("{source}{key}"), text)?;
    let keyed = key.strip_prefix(NODE_CONFIG);
    if node.as_deref() != keyed {
        return Err(one(at_key(
            source,
            key,
            match keyed {
                Some(n) => format!("`metadata.node` must be `{n}`, as its key says"),
                None => "the node configuration for every node has no `metadata.node`".to_owned(),
            },
        )));
    }
    Ok((node, spec))
}

/// The key of chunk `i` of rule set `name`.
pub fn rules_key(name: &str, i: usize) -> String {
    format!("{RULES}{name}/{i:04}")
}

/// Whether `name` may name a rule set: letters, digits, `.`, `_`, `-`, at most 128.
pub fn is_rule_set_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_rules_key(key: &str) -> Result<(), String> {
    let rest = &key[RULES.len()..];
    match rest.split_once('/') {
        Some((name, n))
            if is_rule_set_name(name) && n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(())
        }
        _ => Err(
            "a rule set's key is `rules/<set>/<nnnn>` (set: letters, digits, `.`, `_`, `-`)"
                .to_owned(),
        ),
    }
}

/// `text` cut into chunks of whole lines of at most [`RULES_CHUNK_BYTES`] (a rule longer than
/// that is a chunk of its own), never inside a rule continued with `\`.
pub fn rules_chunks(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut chunk = String::new();
    let mut rule = String::new();
    for line in text.split_inclusive('\n') {
        rule.push_str(line);
        if line.trim_end_matches(['\n', '\r']).ends_with('\\') {
            continue;
        }
        if !chunk.is_empty() && chunk.len() + rule.len() > RULES_CHUNK_BYTES {
            chunks.push(std::mem::take(&mut chunk));
        }
        chunk.push_str(&rule);
        rule.clear();
    }
    chunk.push_str(&rule);
    if !chunk.is_empty() || chunks.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// The rule set a `.rules` file stores as: its name is the file's stem. Malformed rules are
/// refused with `FILE:LINE:COL`; rules eastwall skips (unsupported) are not errors.
pub fn rules_part(file: &str, text: &str) -> Result<Part, Diagnostics> {
    let stem = std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if !is_rule_set_name(stem) {
        return Err(one(Diagnostic {
            file: file.to_owned(),
            line: 0,
            col: 0,
            severity: Severity::Error,
            message: format!(
                "`{stem}` cannot name a rule set: letters, digits, `.`, `_`, `-`, at most 128"
            ),
        }));
    }
    let errors = eastwall_ids::rule::parse_rules(file, text).errors;
    if !errors.is_empty() {
        let mut d = Diagnostics::new();
        for e in errors {
            d.push(Diagnostic {
                file: e.source,
                line: e.line,
                col: e.col,
                severity: Severity::Error,
                message: e.message,
            });
        }
        return Err(d);
    }
    Ok(Part::Rules(stem.to_owned(), text.to_owned()))
}

/// What a file given to `apply` replaces: a registry or a policy (by its `kind`), or an IDS
/// rule set (a `.rules` file).
pub fn part_of_file(file: &str, text: &str) -> Result<Part, Diagnostics> {
    if file.ends_with(".rules") {
        return rules_part(file, text);
    }
    match document_kind(file, text)? {
        DocumentKind::Registry => registry_part(file, text),
        DocumentKind::Policy => {
            // Checked against the registry when the whole snapshot is validated.
            let _: Value = parse_yaml(file, text)?;
            Ok(Part::Policy(text.to_owned()))
        }
        DocumentKind::NodeDefaults => {
            let (node, _) = defaults_doc(file, text)?;
            Ok(Part::NodeDefaults(node, text.to_owned()))
        }
        other => Err(one(Diagnostic {
            file: file.to_owned(),
            line: 0,
            col: 0,
            severity: Severity::Error,
            message: format!(
                "a {} cannot be applied to the store: give a Registry, a Policy, NodeDefaults or IDS rules (.rules)",
                other.as_str()
            ),
        })),
    }
}

fn json(v: &Value) -> String {
    // Serializing a Value cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

fn at_key(source: &str, key: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: format!("{source}{key}"),
        line: 0,
        col: 0,
        severity: Severity::Error,
        message,
    }
}

fn one(d: Diagnostic) -> Diagnostics {
    let mut ds = Diagnostics::new();
    ds.push(d);
    ds
}

/// Diagnostics about the assembled registry, told against the keys their lines come from.
fn map_lines(d: Diagnostics, source: &str, owners: &[String]) -> Diagnostics {
    let mut out = Diagnostics::new();
    for mut x in d.into_vec() {
        let owner = (x.line as usize)
            .checked_sub(1)
            .and_then(|i| owners.get(i))
            .map_or(REGISTRY, String::as_str);
        x.file = format!("{source}{owner}");
        x.line = 0;
        x.col = 0;
        out.push(x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: corp.example
  nodes:
    - {name: hostA, addresses: [10.77.0.1]}
    - {name: hostB, addresses: [10.77.0.2]}
  workloads:
    - {name: web, node: hostA, addresses: [10.0.1.2], app: web, zone: prod}
    - name: db
      node: hostB
      addresses: [10.0.2.2]
      app: db
      zone: prod
      labels: {tier: data}
";

    const POL: &str = "apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: apps
      rules:
        - {id: web-to-db, action: allow, from: {app: web}, to: {app: db}, ports: [5432]}
";

    const SRC: &str = "etcd:/eastwall/config/";

    fn stored() -> Snapshot {
        let reg = registry_part("registry.yaml", REG).unwrap();
        Snapshot::default()
            .with(&reg)
            .with(&Part::Policy(POL.to_owned()))
    }

    const RULE: &str = "alert tcp any any -> any any (msg:\"x\"; content:\"abc\"; sid:1;)\n";

    #[test]
    fn rule_sets_are_chunked_at_whole_rules_and_read_back_whole() {
        // 3 MB of rules, one continued over two lines in the middle.
        let mut text = String::new();
        for i in 0..40_000 {
            if i == 20_000 {
                text.push_str("alert tcp any any -> any any (msg:\"split\"; \\\n  sid:999999;)\n");
            }
            text.push_str(&RULE.replace("sid:1", &format!("sid:{}", i + 1)));
        }
        let chunks = rules_chunks(&text);
        assert!(chunks.len() > 2, "{}", chunks.len());
        assert!(
            chunks
                .iter()
                .all(|c| c.len() <= RULES_CHUNK_BYTES && c.ends_with('\n'))
        );
        assert!(chunks.iter().all(|c| !c.starts_with("  sid:999999")));
        assert_eq!(chunks.concat(), text);
        let part = rules_part("/etc/rules/et.rules", &text).unwrap();
        let s = stored().with(&part);
        assert_eq!(s.rule_sets().keys().collect::<Vec<_>>(), ["et"]);
        assert_eq!(s.rule_sets()["et"], text);
        let v = s.validate(SRC).unwrap();
        assert_eq!(v.rules["et"], text);
        // A smaller set replaces every chunk; removing it removes them all.
        let s2 = s.with(&Part::Rules("et".into(), RULE.into()));
        assert_eq!(s2.rule_sets()["et"], RULE);
        assert_eq!(
            s2.values().keys().filter(|k| k.starts_with(RULES)).count(),
            1
        );
        let mut s3 = s2.clone();
        assert!(s3.remove_rules("et"));
        assert!(s3.rule_sets().is_empty());
        assert_eq!(chunks_of(""), [""]);
    }

    fn chunks_of(t: &str) -> Vec<String> {
        rules_chunks(t)
    }

    #[test]
    fn node_configuration_for_every_node_and_for_one() {
        let every = "apiVersion: eastwall.dev/v1\nkind: NodeDefaults\nspec:\n  udp: {idleSecs: 7}\n  limits: {reservedDescriptors: 512}\n";
        let one = "apiVersion: eastwall.dev/v1\nkind: NodeDefaults\nmetadata: {node: hostA}\nspec:\n  limits: {reservedDescriptors: 1024}\n";
        let s = stored()
            .with(&part_of_file("every.yaml", every).unwrap())
            .with(&part_of_file("one.yaml", one).unwrap());
        assert!(s.get("node-config/defaults").is_some());
        assert!(s.get("node-config/nodes/hostA").is_some());
        s.validate(SRC).unwrap();
        // hostA: its own limits, udp from the ones for every node; hostB: every node's.
        let a = s.node_defaults_for("hostA", SRC).unwrap();
        assert_eq!(a["limits"]["reservedDescriptors"], 1024);
        assert_eq!(a["udp"]["idleSecs"], 7);
        let b = s.node_defaults_for("hostB", SRC).unwrap();
        assert_eq!(b["limits"]["reservedDescriptors"], 512);
        // Written by another tool: under another node's key, for a node not in the registry,
        // with a section only a node's file may set.
        for (key, text, expected) in [
            (
                "node-config/nodes/hostB",
                one,
                "`metadata.node` must be `hostB`",
            ),
            (
                "node-config/nodes/hostZ",
                &one.replace("hostA", "hostZ"),
                "not a node of the registry",
            ),
            (
                "node-config/defaults",
                &every.replace("udp:", "store:"),
                "`store` cannot come from the store",
            ),
        ] {
            let mut bad = s.clone();
            bad.set(key.into(), text.to_owned());
            let e = bad.validate(SRC).unwrap_err().to_string();
            assert!(e.contains(expected), "{key}: {e}");
        }
    }

    #[test]
    fn bad_rule_sets_are_refused_where_they_are_wrong() {
        // From a file: FILE:LINE:COL.
        let bad = format!("{RULE}alert tcp any any -> any any (msg:\"no sid\";)\n");
        let d = rules_part("local.rules", &bad).unwrap_err().to_string();
        assert!(d.contains("local.rules:2:"), "{d}");
        let d = rules_part("bad name!.rules", RULE).unwrap_err().to_string();
        assert!(d.contains("cannot name a rule set"), "{d}");
        // Stored by another tool: against the set's key.
        let mut s = stored();
        s.set("rules/local/0000".into(), bad);
        let d = s.validate(SRC).unwrap_err().to_string();
        assert!(d.contains("etcd:/eastwall/config/rules/local:2:"), "{d}");
        let mut s = stored();
        s.set("rules/local/0001".into(), RULE.into());
        let d = s.validate(SRC).unwrap_err().to_string();
        assert!(d.contains("not numbered"), "{d}");
        let mut s = stored();
        s.set("rules/local/x".into(), RULE.into());
        let d = s.validate(SRC).unwrap_err().to_string();
        assert!(d.contains("rules/<set>/<nnnn>"), "{d}");
    }

    #[test]
    fn a_registry_is_stored_as_its_head_and_one_value_per_workload() {
        let s = stored();
        let keys: Vec<&str> = s.values().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["policy", "registry", "workloads/db", "workloads/web"]
        );
        assert!(!s.get(REGISTRY).unwrap().contains("workloads"));
        let db: Value = serde_json::from_str(s.get("workloads/db").unwrap()).unwrap();
        assert_eq!(db["kind"], "Workload");
        assert_eq!(db["spec"]["labels"]["tier"], "data");
        let v = s.validate(SRC).unwrap();
        assert_eq!(v.registry.workloads().len(), 2);
        assert_eq!(v.registry.trust_domain(), "corp.example");
        assert_eq!(v.policy.rule_count(), 1);
        // The assembled registry reads back as the same registry.
        let again = Registry::parse("x", &s.registry_text(SRC).unwrap()).unwrap();
        assert_eq!(again.workloads(), v.registry.workloads());
        assert_eq!(again.nodes(), v.registry.nodes());
    }

    #[test]
    fn equal_snapshots_hash_alike_and_any_change_shows() {
        let a = stored();
        assert_eq!(a.hash(), stored().hash());
        let mut b = a.clone();
        b.set(
            "workloads/web".into(),
            a.get("workloads/web").unwrap().replace("prod", "dev"),
        );
        assert_ne!(a.hash(), b.hash());
        assert!(a.hash().starts_with("sha256:") && a.hash().len() == 7 + 64);
    }

    #[test]
    fn problems_are_reported_against_their_keys() {
        type Edit = Box<dyn Fn(&mut Snapshot)>;
        let table: Vec<(&str, Edit, &str)> = vec![
            (
                "invalid YAML",
                Box::new(|s| s.set("workloads/web".into(), "{name: [".into())),
                "etcd:/eastwall/config/workloads/web:1:",
            ),
            (
                "wrong kind",
                Box::new(|s| {
                    s.set(
                        "workloads/web".into(),
                        r#"{"apiVersion":"eastwall.dev/v1","kind":"Policy","spec":{"name":"web"}}"#
                            .into(),
                    )
                }),
                "etcd:/eastwall/config/workloads/web: kind must be `Workload`",
            ),
            (
                "unknown version",
                Box::new(|s| {
                    s.set(
                        "workloads/web".into(),
                        r#"{"apiVersion":"eastwall.dev/v9","kind":"Workload","spec":{"name":"web"}}"#.into(),
                    )
                }),
                "etcd:/eastwall/config/workloads/web: apiVersion must be `eastwall.dev/v1`",
            ),
            (
                "name other than its key",
                Box::new(|s| {
                    let v = s
                        .get("workloads/web")
                        .unwrap()
                        .replace("\"web\"", "\"www\"");
                    s.set("workloads/web".into(), v)
                }),
                "etcd:/eastwall/config/workloads/web: the workload's `name` must be `web`",
            ),
            (
                "a workload on a node the registry does not have",
                Box::new(|s| {
                    let v = s.get("workloads/web").unwrap().replace("hostA", "hostZ");
                    s.set("workloads/web".into(), v)
                }),
                "etcd:/eastwall/config/workloads/web: ",
            ),
            (
                "an address taken twice",
                Box::new(|s| {
                    let v = s
                        .get("workloads/web")
                        .unwrap()
                        .replace("10.0.1.2", "10.0.2.2");
                    s.set("workloads/web".into(), v)
                }),
                "etcd:/eastwall/config/workloads/",
            ),
            (
                "oversized",
                Box::new(|s| s.set("policy".into(), "#".repeat(MAX_VALUE_BYTES + 1))),
                "etcd:/eastwall/config/policy: value is",
            ),
            (
                "an unknown key",
                Box::new(|s| s.set("extra/x".into(), "y".into())),
                "etcd:/eastwall/config/extra/x: unknown key",
            ),
            (
                "a policy naming what is not there",
                Box::new(|s| {
                    s.set(
                        "policy".into(),
                        POL.replace("ports: [5432]", "ports: [99999]"),
                    )
                }),
                "etcd:/eastwall/config/policy:7:",
            ),
            (
                "no policy",
                Box::new(|s| {
                    s.remove("policy");
                }),
                "etcd:/eastwall/config/policy: no policy stored",
            ),
            (
                "no registry",
                Box::new(|s| {
                    s.remove("registry");
                }),
                "etcd:/eastwall/config/registry: no registry stored",
            ),
        ];
        for (what, change, expected) in table {
            let mut s = stored();
            change(&mut s);
            let err = match s.validate(SRC) {
                Ok(_) => panic!("{what}: accepted"),
                Err(d) => d.to_string(),
            };
            assert!(err.contains(expected), "{what}: {err}");
        }
    }

    #[test]
    fn files_become_parts_by_their_kind() {
        assert!(matches!(part_of_file("p.yaml", POL), Ok(Part::Policy(_))));
        assert!(matches!(part_of_file("r.yaml", REG), Ok(Part::Registry(_))));
        let bad = REG.replace("10.0.2.2", "10.0.1.2");
        let err = part_of_file("r.yaml", &bad).unwrap_err().to_string();
        assert!(err.starts_with("r.yaml:"), "{err}");
        let dir = "apiVersion: eastwall.dev/v1\nkind: Directory\nspec: {users: []}\n";
        let err = part_of_file("d.yaml", dir).unwrap_err().to_string();
        assert!(err.contains("cannot be applied"), "{err}");
    }

    #[test]
    fn a_registry_part_replaces_every_workload() {
        let s = stored();
        let smaller = REG.split("    - name: db").next().unwrap().to_owned();
        let s2 = s.with(&registry_part("r.yaml", &smaller).unwrap());
        assert!(s2.get("workloads/db").is_none());
        assert!(s2.get("workloads/web").is_some());
        assert_eq!(s2.get(POLICY), s.get(POLICY));
    }
}
