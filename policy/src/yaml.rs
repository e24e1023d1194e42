//! The YAML layer shared by all file kinds: bounded parsing, error conversion, the
//! `apiVersion`/`kind` header, and small value shapes (`one or many`, names).

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned};

use crate::diag::{Diagnostic, Diagnostics, Pos, Severity, Sink};

/// The only `apiVersion` this crate understands.
pub const API_VERSION: &str = "eastwall.dev/v1";

/// Largest file accepted, in bytes; bigger inputs are rejected before parsing.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Longest name accepted (the DNS name limit).
const MAX_NAME_LEN: usize = 253;

/// Parses one YAML document into `T` with this crate's resource limits and diagnostics.
///
/// Any YAML or shape error becomes exactly one located [`Diagnostic`] (`file:line:col:
/// message`), so other file kinds (e.g. the node's `NodeConfig`) can report errors the same
/// way. Use `#[serde(deny_unknown_fields)]` and `serde_saphyr::Spanned` in `T`.
pub fn parse_yaml<'de, T: Deserialize<'de>>(file: &str, text: &'de str) -> Result<T, Diagnostics> {
    let mut sink = Sink::new(file);
    if text.len() > MAX_FILE_BYTES {
        sink.error(
            Pos::new(1, 1),
            format!(
                "file is {} bytes, larger than the limit of {MAX_FILE_BYTES}",
                text.len()
            ),
        );
        return Err(sink.finish().err().unwrap_or_default());
    }
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        sink.error(
            Pos::new(1, 1),
            "file is empty (expected a YAML mapping with apiVersion and kind)",
        );
        return Err(sink.finish().err().unwrap_or_default());
    }
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| {
        let mut d = Diagnostics::new();
        d.push(from_yaml_error(file, &e));
        d
    })
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // Our files are one document and shallow; the largest are registries of a whole private
    // cloud (100,000 workloads: ~1.2 million nodes, ~15 MB). Bound everything so a hostile or
    // broken file costs bounded time and memory (aliases, the billion-laughs lever, stay few).
    budget.max_documents = 1;
    budget.max_depth = 32;
    budget.max_events = 16_000_000;
    budget.max_nodes = 8_000_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES;
    budget.max_merge_keys = 1_000;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o.with_snippet = false;
    o
}

/// Converts a serde-saphyr error to one single-line diagnostic without snippet rendering.
fn from_yaml_error(file: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let inner = e.without_snippet();
    let pos = inner
        .location()
        .or_else(|| e.location())
        .map(Pos::from)
        .unwrap_or_default();
    let raw = serde_saphyr::DefaultMessageFormatter.format_message(inner);
    Diagnostic {
        file: file.to_owned(),
        line: pos.line,
        col: pos.col,
        severity: Severity::Error,
        message: one_line(&raw),
    }
}

/// Squashes a message to one line of printable characters.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    let t = out.trim();
    if t.is_empty() {
        "invalid YAML".to_owned()
    } else {
        t.to_owned()
    }
}

/// The kind of document a file holds, from its `kind` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// `kind: Registry`, parsed by [`crate::Registry::parse`].
    Registry,
    /// `kind: Policy`, parsed by [`crate::Policy::parse`].
    Policy,
    /// `kind: NodeConfig`, owned by the node crate.
    NodeConfig,
    /// `kind: NodeDefaults` (node configuration sections from the central store), owned by
    /// the node crate.
    NodeDefaults,
    /// `kind: Directory`, parsed by [`crate::parse_directory`].
    Directory,
}

impl DocumentKind {
    /// The `kind` value as written in files.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Registry => "Registry",
            DocumentKind::Policy => "Policy",
            DocumentKind::NodeConfig => "NodeConfig",
            DocumentKind::NodeDefaults => "NodeDefaults",
            DocumentKind::Directory => "Directory",
        }
    }

    fn from_name(s: &str) -> Option<DocumentKind> {
        match s {
            "Registry" => Some(DocumentKind::Registry),
            "Policy" => Some(DocumentKind::Policy),
            "NodeConfig" => Some(DocumentKind::NodeConfig),
            "NodeDefaults" => Some(DocumentKind::NodeDefaults),
            "Directory" => Some(DocumentKind::Directory),
            _ => None,
        }
    }
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds [`DocumentKind::from_name`] knows, for messages.
const KINDS: &str = "Registry, Policy, NodeConfig, NodeDefaults or Directory";

/// Only the header of any document; everything else is ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeaderPeek {
    api_version: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
}

/// Reads `apiVersion` and `kind` of a document without checking the rest.
///
/// Errors when the text is not YAML, the header is missing, the `apiVersion` is not
/// `eastwall.dev/v1`, or the kind is not one this project knows.
pub fn document_kind(file: &str, text: &str) -> Result<DocumentKind, Diagnostics> {
    peek_kind(file, text).map(|(k, _)| k)
}

/// Like [`document_kind`], also returning where `kind` is written.
fn peek_kind(file: &str, text: &str) -> Result<(DocumentKind, Pos), Diagnostics> {
    let h: HeaderPeek = parse_yaml(file, text)?;
    let mut sink = Sink::new(file);
    match &h.api_version {
        None => sink.error(
            Pos::new(1, 1),
            format!("missing `apiVersion` (expected `{API_VERSION}`)"),
        ),
        Some(v) => check_api_version(&mut sink, v),
    }
    let kind = match &h.kind {
        None => {
            sink.error(Pos::new(1, 1), format!("missing `kind` (expected {KINDS})"));
            None
        }
        Some(k) => {
            let found = DocumentKind::from_name(&k.value);
            if found.is_none() {
                sink.error(
                    k.referenced,
                    format!("unknown kind `{}` (expected {KINDS})", k.value),
                );
            }
            found.map(|f| (f, Pos::from(k.referenced)))
        }
    };
    match (sink.finish(), kind) {
        (Ok(_), Some(k)) => Ok(k),
        (Err(d), _) => Err(d),
        // Unreachable in practice: no kind always records an error.
        (Ok(d), None) => Err(d),
    }
}

/// Checks that `text` is a document of kind `want` before it is parsed in full, so that a
/// policy handed to the registry parser says so instead of listing unknown fields.
pub(crate) fn expect_kind(file: &str, text: &str, want: DocumentKind) -> Result<(), Diagnostics> {
    let (kind, at) = peek_kind(file, text)?;
    if kind == want {
        return Ok(());
    }
    let mut sink = Sink::new(file);
    sink.error(at, format!("expected kind `{want}`, found `{kind}`"));
    Err(sink.finish().err().unwrap_or_default())
}

fn check_api_version(sink: &mut Sink<'_>, v: &Spanned<String>) {
    if v.value != API_VERSION {
        sink.error(
            v.referenced,
            format!(
                "unsupported apiVersion `{}` (expected `{API_VERSION}`)",
                v.value
            ),
        );
    }
}

/// `metadata` of any document (Kubernetes-shaped; only informational here).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    /// Name of the document.
    #[serde(default)]
    pub(crate) name: Option<Spanned<String>>,
    /// Free-form labels.
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) annotations: std::collections::BTreeMap<String, String>,
}

/// Checks the metadata name, if any, and returns it.
pub(crate) fn check_metadata(sink: &mut Sink<'_>, m: &Option<Metadata>) -> Option<String> {
    let name = m.as_ref()?.name.as_ref()?;
    check_name(sink, name, "metadata.name");
    Some(name.value.clone())
}

/// Whether `s` is a valid name: 1 to 253 ASCII letters, digits, `-`, `.` or `_`, starting
/// and ending with a letter or digit.
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
}

/// Records an error unless `name` is a valid name; `what` says which field it is.
pub(crate) fn check_name(sink: &mut Sink<'_>, name: &Spanned<String>, what: &str) -> bool {
    if is_valid_name(&name.value) {
        return true;
    }
    sink.error(
        name.referenced,
        format!(
            "invalid {what} `{}`: use 1-253 letters, digits, `-`, `.`, `_`, starting and ending with a letter or digit",
            name.value.escape_debug()
        ),
    );
    false
}

/// Records `apiVersion` errors for a fully parsed document.
pub(crate) fn check_header(sink: &mut Sink<'_>, api_version: &Spanned<String>) {
    check_api_version(sink, api_version);
}

/// A string or a list of strings, each with its position.
#[derive(Debug, Clone)]
pub(crate) struct OneOrMany {
    /// Where the value (the string or the list) starts.
    pub(crate) at: Pos,
    /// The strings with their positions.
    pub(crate) items: Vec<(String, Pos)>,
}

/// The raw form before the outer position is known.
enum OneOrManyRaw {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrManyRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V(PhantomData<()>);
        impl<'de> Visitor<'de> for V {
            type Value = OneOrManyRaw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrManyRaw, E> {
                Ok(OneOrManyRaw::One(v.to_owned()))
            }
            // Plain scalars such as `zone: 5` are names too, as they are in the registry.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrManyRaw, E> {
                Ok(OneOrManyRaw::One(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrManyRaw, E> {
                Ok(OneOrManyRaw::One(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<OneOrManyRaw, E> {
                Ok(OneOrManyRaw::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrManyRaw, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    v.push(s);
                }
                Ok(OneOrManyRaw::Many(v))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<OneOrManyRaw>::deserialize(d)?;
        let at = Pos::from(s.referenced);
        let items = match s.value {
            OneOrManyRaw::One(v) => vec![(v, at)],
            OneOrManyRaw::Many(v) => v
                .into_iter()
                .map(|s| (s.value, Pos::from(s.referenced)))
                .collect(),
        };
        Ok(OneOrMany { at, items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "hostA", "web-dev", "a.b_c-d", "0"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", ".a", "a b", "ä", "a/b", &"x".repeat(254)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn kinds() {
        let k = |t: &str| document_kind("f.yaml", t);
        assert_eq!(
            k("apiVersion: eastwall.dev/v1\nkind: Policy\nspec: {}\n").unwrap(),
            DocumentKind::Policy
        );
        assert_eq!(
            k("apiVersion: eastwall.dev/v1\nkind: Registry\n").unwrap(),
            DocumentKind::Registry
        );
        assert_eq!(
            k("apiVersion: eastwall.dev/v1\nkind: NodeConfig\nx: 1\n").unwrap(),
            DocumentKind::NodeConfig
        );
        assert_eq!(
            k("apiVersion: eastwall.dev/v1\nkind: Directory\nspec: {}\n").unwrap(),
            DocumentKind::Directory
        );
        assert_eq!(
            k("apiVersion: eastwall.dev/v1\nkind: Polcy\n")
                .unwrap_err()
                .to_string(),
            "f.yaml:2:7: unknown kind `Polcy` (expected Registry, Policy, NodeConfig, NodeDefaults or Directory)"
        );
        assert_eq!(
            k("apiVersion: v2\nkind: Policy\n").unwrap_err().to_string(),
            "f.yaml:1:13: unsupported apiVersion `v2` (expected `eastwall.dev/v1`)"
        );
        assert_eq!(
            k("kind: Policy\n").unwrap_err().to_string(),
            "f.yaml:1:1: missing `apiVersion` (expected `eastwall.dev/v1`)"
        );
        assert_eq!(
            k("# nothing\n\n").unwrap_err().to_string(),
            "f.yaml:1:1: file is empty (expected a YAML mapping with apiVersion and kind)"
        );
        let e = k("apiVersion: [\n").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().starts_with("f.yaml:"), "{e}");
        let e = k("- a\n- b\n").unwrap_err();
        assert_eq!(e.len(), 1, "{e}");
    }

    #[test]
    fn expect_kind_mismatch() {
        let e = expect_kind(
            "f",
            "apiVersion: eastwall.dev/v1\nkind: Policy\n",
            DocumentKind::Registry,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:2:7: expected kind `Registry`, found `Policy`"
        );
    }
}
