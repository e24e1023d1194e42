//! The policy file as written (`kind: Policy`), before validation.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::yaml::{Metadata, OneOrMany};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PolicyDoc {
    pub(crate) api_version: Spanned<String>,
    #[allow(dead_code)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) metadata: Option<Metadata>,
    pub(crate) spec: PolicySpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PolicySpec {
    #[serde(default)]
    pub(crate) ids_profiles: Vec<IdsProfileDoc>,
    #[serde(default)]
    pub(crate) sections: Vec<SectionDoc>,
}

/// An entry of `spec.idsProfiles`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct IdsProfileDoc {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) mode: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) classtypes: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) max_severity: Option<Spanned<IntDoc>>,
    #[serde(default)]
    pub(crate) sids: Option<Spanned<Vec<Spanned<IntDoc>>>>,
    #[serde(default)]
    pub(crate) exclude_sids: Option<Spanned<Vec<Spanned<IntDoc>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SectionDoc {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) rules: Vec<RuleDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDoc {
    pub(crate) id: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) description: Option<String>,
    pub(crate) action: Spanned<String>,
    #[serde(default)]
    pub(crate) mode: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) from: Option<Spanned<SelectorDoc>>,
    #[serde(default)]
    pub(crate) to: Option<Spanned<SelectorDoc>>,
    #[serde(default)]
    pub(crate) ports: Option<Spanned<Vec<Spanned<PortDoc>>>>,
    #[serde(default)]
    pub(crate) ids: Option<Spanned<String>>,
}

/// A selector as written; every criterion is optional and compiled into `Selector`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct SelectorDoc {
    #[serde(default)]
    pub(crate) workload: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) app: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) zone: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) labels: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    pub(crate) cidr: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) spiffe: Option<OneOrMany>,
    #[serde(default, rename = "spiffePrefix")]
    pub(crate) spiffe_prefix: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) user: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) group: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) not: Option<Box<Spanned<SelectorDoc>>>,
    /// Only valid at the top level of `to` (checked when compiling).
    #[serde(default)]
    pub(crate) http: Option<Spanned<Vec<Spanned<HttpEntryDoc>>>>,
    /// Only valid at the top level of `to` (checked when compiling).
    #[serde(default)]
    pub(crate) tls: Option<Spanned<TlsDoc>>,
    /// Only valid at the top level of `to` (checked when compiling).
    #[serde(default)]
    pub(crate) dns: Option<Spanned<DnsDoc>>,
}

/// One entry of `to.http`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpEntryDoc {
    #[serde(default)]
    pub(crate) methods: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) paths: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) hosts: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) headers: Option<Spanned<HeadersDoc>>,
}

/// `to.tls`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsDoc {
    #[serde(default)]
    pub(crate) sni: Option<OneOrMany>,
}

/// `to.dns`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DnsDoc {
    #[serde(default)]
    pub(crate) names: Option<OneOrMany>,
}

/// `headers`: a mapping of header name to value pattern, in file order, with positions.
pub(crate) struct HeadersDoc(pub(crate) Vec<(Spanned<String>, Spanned<ScalarDoc>)>);

impl<'de> Deserialize<'de> for HeadersDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeadersDoc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeadersDoc, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    v.push(entry);
                }
                Ok(HeadersDoc(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A scalar read as text (`x-api-version: 2` is the text `2`).
pub(crate) struct ScalarDoc(pub(crate) String);

impl<'de> Deserialize<'de> for ScalarDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScalarDoc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarDoc, E> {
                Ok(ScalarDoc(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarDoc, E> {
                Ok(ScalarDoc(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarDoc, E> {
                Ok(ScalarDoc(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarDoc, E> {
                Ok(ScalarDoc(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// An integer of any size, so that out-of-range values are reported by our checks.
pub(crate) struct IntDoc(pub(crate) i128);

impl<'de> Deserialize<'de> for IntDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntDoc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntDoc, E> {
                Ok(IntDoc(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntDoc, E> {
                Ok(IntDoc(v.into()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<IntDoc, E> {
                Ok(IntDoc(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<IntDoc, E> {
                Ok(IntDoc(i128::try_from(v).unwrap_or(i128::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

impl SelectorDoc {
    /// Whether no criterion is given (`{}`).
    pub(crate) fn is_empty(&self) -> bool {
        self.workload.is_none()
            && self.app.is_none()
            && self.zone.is_none()
            && self.labels.is_none()
            && self.cidr.is_none()
            && self.spiffe.is_none()
            && self.spiffe_prefix.is_none()
            && self.user.is_none()
            && self.group.is_none()
            && self.not.is_none()
            && self.http.is_none()
            && self.tls.is_none()
            && self.dns.is_none()
    }
}

/// An integer or a string, as `port` and `protocol` values are written.
pub(crate) enum IntOrText {
    Int(i128),
    Text(String),
}

/// One element of `ports`: a TCP port or range (`443`, `"8000-8080"`), or a mapping naming
/// the protocol (`{port: 53, protocol: UDP}`, `{protocol: ICMP, icmpType: 8}`).
pub(crate) enum PortDoc {
    Plain(IntOrText),
    Spec(Box<PortSpecDoc>),
}

/// A `ports` element written as a mapping.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PortSpecDoc {
    #[serde(default)]
    pub(crate) port: Option<IntOrText>,
    #[serde(default)]
    pub(crate) end_port: Option<IntDoc>,
    #[serde(default)]
    pub(crate) protocol: Option<IntOrText>,
    #[serde(default)]
    pub(crate) icmp_type: Option<IntDoc>,
    #[serde(default)]
    pub(crate) icmp_code: Option<IntDoc>,
}

/// Visits an integer or a string.
struct IntOrTextVisitor;

impl Visitor<'_> for IntOrTextVisitor {
    type Value = IntOrText;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrText, E> {
        Ok(IntOrText::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrText, E> {
        Ok(IntOrText::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<IntOrText, E> {
        Ok(IntOrText::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<IntOrText, E> {
        Ok(IntOrText::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrText, E> {
        Ok(IntOrText::Text(v.to_owned()))
    }
}

impl<'de> Deserialize<'de> for IntOrText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntOrTextVisitor)
    }
}

impl<'de> Deserialize<'de> for PortDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortDoc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a port number, a range string like \"8000-8080\", or a mapping like {port: 53, protocol: UDP}",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortDoc, E> {
                IntOrTextVisitor.visit_i64(v).map(PortDoc::Plain)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortDoc, E> {
                IntOrTextVisitor.visit_u64(v).map(PortDoc::Plain)
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<PortDoc, E> {
                IntOrTextVisitor.visit_i128(v).map(PortDoc::Plain)
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<PortDoc, E> {
                IntOrTextVisitor.visit_u128(v).map(PortDoc::Plain)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortDoc, E> {
                IntOrTextVisitor.visit_str(v).map(PortDoc::Plain)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<PortDoc, A::Error> {
                let spec = PortSpecDoc::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PortDoc::Spec(Box::new(spec)))
            }
        }
        d.deserialize_any(V)
    }
}
