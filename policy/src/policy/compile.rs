//! Validation of a parsed policy file and its compilation into rules.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use eastwall_identity::SpiffeId;
use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::format::{PolicyDoc, RuleDoc, SelectorDoc};
use super::ids::{self, IdsProfile};
use super::selector::{NameSet, Selector};
use super::{Action, Mode, Rule, RuleRef};
use super::{compile_l7, transport};
use crate::diag::{Pos, Sink};
use crate::registry::Registry;
use crate::yaml::{self, OneOrMany};

/// What the registry declares, for warnings about names nothing has.
struct Known<'r> {
    enabled: bool,
    workloads: HashSet<&'r str>,
    apps: HashSet<&'r str>,
    zones: HashSet<&'r str>,
    labels: HashSet<(&'r str, &'r str)>,
    /// Workload identities, as strings.
    identities: HashSet<&'r str>,
    /// Node identity -> node name, to explain a `spiffe` value naming a node.
    node_identities: HashMap<&'r str, &'r str>,
}

impl<'r> Known<'r> {
    fn new(reg: &'r Registry) -> Known<'r> {
        let ws = reg.workloads();
        Known {
            enabled: !reg.is_empty(),
            workloads: ws.iter().map(|w| w.name.as_str()).collect(),
            apps: ws.iter().filter_map(|w| w.app.as_deref()).collect(),
            zones: ws.iter().filter_map(|w| w.zone.as_deref()).collect(),
            labels: ws
                .iter()
                .flat_map(|w| w.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .collect(),
            identities: ws.iter().map(|w| w.identity.as_str()).collect(),
            node_identities: reg
                .nodes()
                .iter()
                .map(|n| (n.identity.as_str(), n.name.as_str()))
                .collect(),
        }
    }
}

/// The output of compilation.
pub(crate) struct Compiled {
    pub(crate) name: Option<String>,
    pub(crate) sections: usize,
    pub(crate) rules: Vec<Rule>,
    pub(crate) ids_profiles: Vec<IdsProfile>,
}

/// The IDS profiles a rule may name, and which ones rules used.
struct Profiles {
    defined: HashMap<String, Pos>,
    used: HashSet<String>,
}

/// Validates `doc`, recording every problem in `sink`, and compiles it.
pub(crate) fn compile(sink: &mut Sink<'_>, doc: PolicyDoc, reg: &Registry) -> Compiled {
    yaml::check_header(sink, &doc.api_version);
    let name = yaml::check_metadata(sink, &doc.metadata);
    let known = Known::new(reg);
    let (ids_profiles, defined) = ids::compile_profiles(sink, doc.spec.ids_profiles);
    let mut profiles = Profiles {
        defined,
        used: HashSet::new(),
    };
    let mut section_seen: HashMap<String, Pos> = HashMap::new();
    let mut rule_seen: HashMap<String, Pos> = HashMap::new();
    let mut rules = Vec::new();
    let sections = doc.spec.sections.len();
    for s in doc.spec.sections {
        let at = Pos::from(s.name.referenced);
        yaml::check_name(sink, &s.name, "section name");
        if let Some(first) = section_seen.get(&s.name.value) {
            sink.error(
                at,
                format!(
                    "duplicate section name `{}` (first at {first})",
                    s.name.value
                ),
            );
        } else {
            section_seen.insert(s.name.value.clone(), at);
        }
        let section: Arc<str> = Arc::from(s.name.value.as_str());
        for r in s.rules {
            rules.extend(compile_rule(
                sink,
                &known,
                &mut profiles,
                &mut rule_seen,
                &section,
                r,
            ));
        }
    }
    let mut unused: Vec<(&String, &Pos)> = profiles
        .defined
        .iter()
        .filter(|(name, _)| !profiles.used.contains(*name))
        .collect();
    unused.sort_by_key(|(_, at)| **at);
    for (name, at) in unused {
        sink.warning(*at, format!("no rule uses IDS profile `{name}`"));
    }
    Compiled {
        name,
        sections,
        rules,
        ids_profiles,
    }
}

fn compile_rule(
    sink: &mut Sink<'_>,
    known: &Known<'_>,
    profiles: &mut Profiles,
    seen: &mut HashMap<String, Pos>,
    section: &Arc<str>,
    r: RuleDoc,
) -> Option<Rule> {
    let at = Pos::from(r.id.referenced);
    yaml::check_name(sink, &r.id, "rule id");
    if let Some(first) = seen.get(&r.id.value) {
        sink.error(
            at,
            format!("duplicate rule id `{}` (first at {first})", r.id.value),
        );
    } else {
        seen.insert(r.id.value.clone(), at);
    }
    let action = match r.action.value.as_str() {
        "allow" => Some(Action::Allow),
        "deny" => Some(Action::Deny),
        other => {
            sink.error(
                r.action.referenced,
                format!(
                    "invalid action `{}` (expected allow or deny)",
                    other.escape_debug()
                ),
            );
            None
        }
    };
    let mode = match r.mode.as_ref().map(|m| (m.value.as_str(), m.referenced)) {
        None | Some(("enforce", _)) => Some(Mode::Enforce),
        Some(("monitor", _)) => Some(Mode::Monitor),
        Some((other, loc)) => {
            sink.error(
                loc,
                format!(
                    "invalid mode `{}` (expected enforce or monitor)",
                    other.escape_debug()
                ),
            );
            None
        }
    };
    let from = r
        .from
        .map(|s| {
            compile_l7::reject_l7(sink, &s.value, "from");
            compile_selector(sink, known, &s.value)
        })
        .unwrap_or_default();
    let (to, l7) = match &r.to {
        None => (Selector::default(), None),
        Some(s) => (
            compile_selector(sink, known, &s.value),
            compile_l7::compile_l7(sink, &s.value),
        ),
    };
    let ports = r
        .ports
        .map(|p| transport::compile_ports(sink, &p).map(Box::new));
    let ids = r
        .ids
        .as_ref()
        .and_then(|i| compile_ids_ref(sink, profiles, i, action, mode));
    let uses_groups = from.uses_groups() || to.uses_groups();
    Some(Rule {
        uses_groups,
        rref: RuleRef {
            id: Arc::from(r.id.value.as_str()),
            section: Arc::clone(section),
        },
        pos: at,
        action: action?,
        mode: mode?,
        from,
        to,
        ports: match ports {
            None => None,
            Some(p) => Some(p?),
        },
        l7: l7.map(Box::new),
        ids,
    })
}

/// A rule's `ids`: only on allow rules, naming a defined profile.
fn compile_ids_ref(
    sink: &mut Sink<'_>,
    profiles: &mut Profiles,
    name: &Spanned<String>,
    action: Option<Action>,
    mode: Option<Mode>,
) -> Option<Arc<str>> {
    let at = Pos::from(name.referenced);
    profiles.used.insert(name.value.clone());
    if action == Some(Action::Deny) {
        sink.error(
            at,
            "`ids` is only for allow rules: it names the IDS profile that inspects what the rule allows",
        );
        return None;
    }
    if !profiles.defined.contains_key(&name.value) {
        let mut defined: Vec<&str> = profiles.defined.keys().map(String::as_str).collect();
        defined.sort_unstable();
        let hint = if defined.is_empty() {
            "no profiles are defined in `spec.idsProfiles`".to_owned()
        } else {
            format!("defined: {}", defined.join(", "))
        };
        sink.error(
            at,
            format!(
                "no IDS profile named `{}` ({hint})",
                name.value.escape_debug()
            ),
        );
        return None;
    }
    if mode == Some(Mode::Monitor) {
        sink.warning(
            at,
            "a monitor rule never decides, so its IDS profile applies only once it is enforced",
        );
    }
    Some(Arc::from(name.value.as_str()))
}

/// Which registry attribute a name list refers to, for messages and warnings.
#[derive(Clone, Copy)]
enum NameKind {
    Workload,
    App,
    Zone,
}

fn compile_names(sink: &mut Sink<'_>, known: &Known<'_>, v: &OneOrMany, kind: NameKind) -> NameSet {
    let (field, set) = match kind {
        NameKind::Workload => ("workload", &known.workloads),
        NameKind::App => ("app", &known.apps),
        NameKind::Zone => ("zone", &known.zones),
    };
    if v.items.is_empty() {
        sink.error(
            v.at,
            format!("empty `{field}` list (it would match nothing); omit the field to match any"),
        );
    }
    let mut names = Vec::with_capacity(v.items.len());
    for (name, at) in &v.items {
        if !yaml::is_valid_name(name) {
            sink.error(
                *at,
                format!(
                    "invalid {field} name `{}`: use 1-253 letters, digits, `-`, `.`, `_`, starting and ending with a letter or digit",
                    name.escape_debug()
                ),
            );
            continue;
        }
        if known.enabled && !set.contains(name.as_str()) {
            let msg = match kind {
                NameKind::Workload => format!("no registry workload is named `{name}`"),
                NameKind::App | NameKind::Zone => {
                    format!("no registry workload has {field} `{name}`")
                }
            };
            sink.warning(*at, msg);
        }
        names.push(Box::from(name.as_str()));
    }
    NameSet::new(names)
}

fn compile_selector(sink: &mut Sink<'_>, known: &Known<'_>, s: &SelectorDoc) -> Selector {
    let labels = match &s.labels {
        None => Box::default(),
        Some(l) => {
            if l.value.is_empty() {
                sink.error(
                    l.referenced,
                    "empty `labels` map; omit the field to match any",
                );
            }
            for (k, v) in &l.value {
                if k.is_empty() {
                    sink.error(l.referenced, "label keys must not be empty");
                } else if known.enabled && !known.labels.contains(&(k.as_str(), v.as_str())) {
                    sink.warning(
                        l.referenced,
                        format!("no registry workload has label `{k}: {v}`"),
                    );
                }
            }
            l.value
                .iter()
                .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str())))
                .collect()
        }
    };
    Selector {
        workload: s
            .workload
            .as_ref()
            .map(|v| compile_names(sink, known, v, NameKind::Workload)),
        app: s
            .app
            .as_ref()
            .map(|v| compile_names(sink, known, v, NameKind::App)),
        zone: s
            .zone
            .as_ref()
            .map(|v| compile_names(sink, known, v, NameKind::Zone)),
        labels,
        cidr: s.cidr.as_ref().map(|v| compile_cidrs(sink, v)),
        spiffe: s.spiffe.as_ref().map(|v| compile_spiffe(sink, known, v)),
        spiffe_prefix: s
            .spiffe_prefix
            .as_ref()
            .map(|v| compile_spiffe_prefixes(sink, known, v)),
        user: s
            .user
            .as_ref()
            .map(|v| compile_directory_names(sink, v, "user")),
        group: s
            .group
            .as_ref()
            .map(|v| compile_directory_names(sink, v, "group")),
        not: s.not.as_ref().map(|n| {
            compile_l7::reject_l7(sink, &n.value, "not");
            if n.value.is_empty() {
                sink.error(
                    n.referenced,
                    "empty `not: {}` would match nothing; give at least one criterion",
                );
            }
            Box::new(compile_selector(sink, known, &n.value))
        }),
    }
}

/// User or group names: non-empty; they come from the directory, so the registry cannot
/// check them.
fn compile_directory_names(sink: &mut Sink<'_>, v: &OneOrMany, what: &str) -> NameSet {
    if v.items.is_empty() {
        sink.error(
            v.at,
            format!("empty `{what}` list (it would match nothing); omit the field to match any"),
        );
    }
    for (text, at) in &v.items {
        if text.trim().is_empty() {
            sink.error(*at, format!("empty {what} name"));
        }
    }
    NameSet::new(v.items.iter().map(|(t, _)| Box::from(t.as_str())).collect())
}

/// Exact SPIFFE IDs; a warning for each that no registry workload has.
fn compile_spiffe(sink: &mut Sink<'_>, known: &Known<'_>, v: &OneOrMany) -> NameSet {
    if v.items.is_empty() {
        sink.error(
            v.at,
            "empty `spiffe` list (it would match nothing); omit the field to match any",
        );
    }
    let mut ids = Vec::with_capacity(v.items.len());
    for (text, at) in &v.items {
        let id = match SpiffeId::parse(text) {
            Ok(id) => id,
            Err(e) => {
                sink.error(
                    *at,
                    format!("invalid SPIFFE ID `{}`: {e}", text.escape_debug()),
                );
                continue;
            }
        };
        if known.enabled && !known.identities.contains(id.as_str()) {
            let msg = match known.node_identities.get(id.as_str()) {
                Some(node) => format!(
                    "`{id}` is the identity of node `{node}`, which no registry workload has"
                ),
                None => format!("no registry workload has identity `{id}`"),
            };
            sink.warning(*at, msg);
        }
        ids.push(Box::from(id.as_str()));
    }
    NameSet::new(ids)
}

/// SPIFFE ID prefixes: `spiffe://`, a whole trust domain, `/`, then any start of a valid
/// path (`spiffe://corp.example/`, `spiffe://corp.example/zone/prod/`,
/// `spiffe://corp.example/wl/db-`). A warning for each that no registry workload
/// identity starts with.
fn compile_spiffe_prefixes(
    sink: &mut Sink<'_>,
    known: &Known<'_>,
    v: &OneOrMany,
) -> Box<[Box<str>]> {
    if v.items.is_empty() {
        sink.error(
            v.at,
            "empty `spiffePrefix` list (it would match nothing); omit the field to match any",
        );
    }
    let mut prefixes: Vec<Box<str>> = Vec::with_capacity(v.items.len());
    for (text, at) in &v.items {
        let problem = match text.strip_prefix("spiffe://") {
            None => Some("it must start with `spiffe://`".to_owned()),
            Some(rest) if !rest.contains('/') => Some(format!(
                "give the whole trust domain and a `/` (e.g. `{}/`), so that it cannot match another trust domain",
                text.escape_debug()
            )),
            // Any valid ID that starts with the prefix may follow; appending one segment
            // character checks every complete segment and what is written of the last.
            Some(_) => SpiffeId::parse(&format!("{text}x"))
                .err()
                .map(|e| e.to_string()),
        };
        if let Some(why) = problem {
            sink.error(
                *at,
                format!("invalid SPIFFE ID prefix `{}`: {why}", text.escape_debug()),
            );
            continue;
        }
        if known.enabled
            && !known
                .identities
                .iter()
                .any(|id| id.starts_with(text.as_str()))
        {
            sink.warning(
                *at,
                format!("no registry workload identity starts with `{text}`"),
            );
        }
        if !prefixes.iter().any(|p| **p == **text) {
            prefixes.push(Box::from(text.as_str()));
        }
    }
    prefixes.into_boxed_slice()
}

fn compile_cidrs(sink: &mut Sink<'_>, v: &OneOrMany) -> Box<[IpNet]> {
    if v.items.is_empty() {
        sink.error(
            v.at,
            "empty `cidr` list (it would match nothing); omit the field to match any",
        );
    }
    let mut nets = Vec::with_capacity(v.items.len());
    for (text, at) in &v.items {
        let t = text.trim();
        let parsed = if t.contains('/') {
            t.parse::<IpNet>().ok()
        } else {
            t.parse::<IpAddr>().ok().map(IpNet::from)
        };
        match parsed {
            None => sink.error(
                *at,
                format!(
                    "invalid CIDR `{}` (expected an address or address/prefix, e.g. 10.0.0.0/8 or fd00::/16)",
                    text.escape_debug()
                ),
            ),
            Some(n) => {
                let trunc = n.trunc();
                if trunc != n {
                    sink.warning(*at, format!("CIDR `{t}` has host bits set; it means {trunc}"));
                }
                nets.push(trunc);
            }
        }
    }
    nets.into_boxed_slice()
}
