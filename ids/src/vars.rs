//! Address and port variables (`$HOME_NET`, `$HTTP_PORTS`, …) and the sets that rule
//! headers resolve to.

use crate::rule::{AddrExpr, ExprError, PortExpr};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Variables that refer to variables deeper than this are refused (cycles end here).
const MAX_VAR_DEPTH: usize = 16;

/// Why a variable cannot be set or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    /// The name is empty or has characters outside `[A-Za-z0-9_]`.
    #[error("invalid variable name `{0}`")]
    Name(String),
    /// The value does not parse as an address or port expression.
    #[error("invalid value for `{name}`: {source}")]
    Value {
        /// The variable.
        name: String,
        /// What is wrong with the value.
        source: ExprError,
    },
    /// A rule or variable uses a variable that is not defined.
    #[error("undefined variable `${0}`")]
    Undefined(String),
    /// Variables refer to each other in a cycle (or too deeply).
    #[error("variable `${0}` refers to itself or nests too deeply")]
    Cycle(String),
    /// The expression denotes no address or port at all (e.g. `!any`).
    #[error("`{0}` matches nothing")]
    Empty(String),
}

/// A set of values as sorted, disjoint, inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RangeSet {
    ranges: Vec<(u128, u128)>,
}

impl RangeSet {
    fn full(max: u128) -> Self {
        RangeSet {
            ranges: vec![(0, max)],
        }
    }

    fn from_ranges(mut ranges: Vec<(u128, u128)>) -> Self {
        ranges.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        RangeSet { ranges: out }
    }

    fn union(&self, other: &RangeSet) -> RangeSet {
        let mut all = self.ranges.clone();
        all.extend_from_slice(&other.ranges);
        RangeSet::from_ranges(all)
    }

    fn complement(&self, max: u128) -> RangeSet {
        let mut out = Vec::new();
        let mut next = 0u128;
        let mut done = false;
        for &(lo, hi) in &self.ranges {
            if lo > next {
                out.push((next, lo - 1));
            }
            if hi == max {
                done = true;
                break;
            }
            next = hi + 1;
        }
        if !done {
            out.push((next, max));
        }
        RangeSet { ranges: out }
    }

    fn intersect(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (self.ranges[i], other.ranges[j]);
            let lo = a.0.max(b.0);
            let hi = a.1.min(b.1);
            if lo <= hi {
                out.push((lo, hi));
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        RangeSet { ranges: out }
    }

    pub(crate) fn contains(&self, v: u128) -> bool {
        // The last range starting at or before v.
        let idx = self.ranges.partition_point(|&(lo, _)| lo <= v);
        idx > 0 && self.ranges[idx - 1].1 >= v
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub(crate) fn is_full(&self, max: u128) -> bool {
        self.ranges == [(0, max)]
    }
}

const IP_MAX: u128 = u128::MAX;
const PORT_MAX: u128 = u16::MAX as u128;

/// An address as a number: IPv4 addresses are mapped into `::ffff:0:0/96`, so that an
/// IPv4-mapped IPv6 peer and its IPv4 form are the same.
pub(crate) fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn net_range(ip: IpAddr, len: u8) -> (u128, u128) {
    let (base, host_bits) = match ip {
        IpAddr::V4(v4) => (ip_key(IpAddr::V4(v4)), 32 - u32::from(len.min(32))),
        IpAddr::V6(v6) => (u128::from(v6), 128 - u32::from(len.min(128))),
    };
    let mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (base & !mask, (base & !mask) | mask)
}

/// Set of addresses a rule header side denotes.
pub(crate) type IpSet = RangeSet;
/// Set of ports a rule header side denotes.
pub(crate) type PortSet = RangeSet;

/// Address and port variables, as `vars.address-groups` and `vars.port-groups` in
/// `suricata.yaml`.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    addresses: BTreeMap<String, String>,
    ports: BTreeMap<String, String>,
}

impl Vars {
    /// No variables at all.
    pub fn empty() -> Self {
        Vars::default()
    }

    /// The defaults of `suricata.yaml` (Suricata 7): `HOME_NET` is the RFC 1918 ranges and
    /// `EXTERNAL_NET` is `!$HOME_NET`.
    pub fn suricata_defaults() -> Self {
        let mut v = Vars::default();
        let addresses = [
            ("HOME_NET", "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]"),
            ("EXTERNAL_NET", "!$HOME_NET"),
            ("HTTP_SERVERS", "$HOME_NET"),
            ("SMTP_SERVERS", "$HOME_NET"),
            ("SQL_SERVERS", "$HOME_NET"),
            ("DNS_SERVERS", "$HOME_NET"),
            ("TELNET_SERVERS", "$HOME_NET"),
            ("AIM_SERVERS", "$EXTERNAL_NET"),
            ("DC_SERVERS", "$HOME_NET"),
            ("DNP3_SERVER", "$HOME_NET"),
            ("DNP3_CLIENT", "$HOME_NET"),
            ("MODBUS_CLIENT", "$HOME_NET"),
            ("MODBUS_SERVER", "$HOME_NET"),
            ("ENIP_CLIENT", "$HOME_NET"),
            ("ENIP_SERVER", "$HOME_NET"),
        ];
        let ports = [
            ("HTTP_PORTS", "80"),
            ("SHELLCODE_PORTS", "!80"),
            ("ORACLE_PORTS", "1521"),
            ("SSH_PORTS", "22"),
            ("DNP3_PORTS", "20000"),
            ("MODBUS_PORTS", "502"),
            ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
            ("FTP_PORTS", "21"),
            ("GENEVE_PORTS", "6081"),
            ("VXLAN_PORTS", "4789"),
            ("TEREDO_PORTS", "3544"),
        ];
        for (n, val) in addresses {
            v.addresses.insert(n.into(), val.into());
        }
        for (n, val) in ports {
            v.ports.insert(n.into(), val.into());
        }
        v
    }

    /// The defaults with `HOME_NET` and `EXTERNAL_NET` both `any`: east-west traffic has
    /// internal hosts at both ends, so rules written for "outside → inside" apply to every
    /// pair of workloads.
    pub fn east_west() -> Self {
        let mut v = Vars::suricata_defaults();
        v.addresses.insert("HOME_NET".into(), "any".into());
        v.addresses.insert("EXTERNAL_NET".into(), "any".into());
        v
    }

    /// Set a variable (name without `$`). A name that is already a port variable, or ends
    /// in `_PORTS`, is a port variable; any other is an address variable.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), VarError> {
        let name = name.strip_prefix('$').unwrap_or(name);
        if self.ports.contains_key(name) || name.ends_with("_PORTS") {
            self.set_ports(name, value)
        } else {
            self.set_addresses(name, value)
        }
    }

    /// Set an address variable.
    pub fn set_addresses(&mut self, name: &str, value: &str) -> Result<(), VarError> {
        check_name(name)?;
        AddrExpr::parse(value).map_err(|source| VarError::Value {
            name: name.to_string(),
            source,
        })?;
        self.ports.remove(name);
        self.addresses.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// Set a port variable.
    pub fn set_ports(&mut self, name: &str, value: &str) -> Result<(), VarError> {
        check_name(name)?;
        PortExpr::parse(value).map_err(|source| VarError::Value {
            name: name.to_string(),
            source,
        })?;
        self.addresses.remove(name);
        self.ports.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// The text of a variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.addresses
            .get(name)
            .or_else(|| self.ports.get(name))
            .map(String::as_str)
    }

    /// The address set an expression denotes.
    pub(crate) fn addresses(&self, expr: &AddrExpr) -> Result<IpSet, VarError> {
        let set = self.addr_set(expr, 0)?;
        if set.is_empty() {
            return Err(VarError::Empty(expr.to_string()));
        }
        Ok(set)
    }

    /// The port set an expression denotes.
    pub(crate) fn ports(&self, expr: &PortExpr) -> Result<PortSet, VarError> {
        let set = self.port_set(expr, 0)?;
        if set.is_empty() {
            return Err(VarError::Empty(expr.to_string()));
        }
        Ok(set)
    }

    fn addr_set(&self, expr: &AddrExpr, depth: usize) -> Result<IpSet, VarError> {
        Ok(match expr {
            AddrExpr::Any => RangeSet::full(IP_MAX),
            AddrExpr::Var(name) => {
                if depth >= MAX_VAR_DEPTH {
                    return Err(VarError::Cycle(name.clone()));
                }
                let text = self
                    .addresses
                    .get(name)
                    .ok_or_else(|| VarError::Undefined(name.clone()))?;
                let inner = AddrExpr::parse(text).map_err(|source| VarError::Value {
                    name: name.clone(),
                    source,
                })?;
                self.addr_set(&inner, depth + 1)?
            }
            AddrExpr::Net(ip, len) => RangeSet::from_ranges(vec![net_range(*ip, *len)]),
            AddrExpr::Range(a, b) => {
                let (a, b) = (ip_key(*a), ip_key(*b));
                RangeSet::from_ranges(vec![(a.min(b), a.max(b))])
            }
            AddrExpr::Not(inner) => self.addr_set(inner, depth + 1)?.complement(IP_MAX),
            AddrExpr::List(items) => list_set(items, IP_MAX, |e| match e {
                AddrExpr::Not(inner) => Ok((true, self.addr_set(inner, depth + 1)?)),
                other => Ok((false, self.addr_set(other, depth + 1)?)),
            })?,
        })
    }

    fn port_set(&self, expr: &PortExpr, depth: usize) -> Result<PortSet, VarError> {
        Ok(match expr {
            PortExpr::Any => RangeSet::full(PORT_MAX),
            PortExpr::Var(name) => {
                if depth >= MAX_VAR_DEPTH {
                    return Err(VarError::Cycle(name.clone()));
                }
                let text = self
                    .ports
                    .get(name)
                    .ok_or_else(|| VarError::Undefined(name.clone()))?;
                let inner = PortExpr::parse(text).map_err(|source| VarError::Value {
                    name: name.clone(),
                    source,
                })?;
                self.port_set(&inner, depth + 1)?
            }
            PortExpr::Range(a, b) => RangeSet::from_ranges(vec![(u128::from(*a), u128::from(*b))]),
            PortExpr::Not(inner) => self.port_set(inner, depth + 1)?.complement(PORT_MAX),
            PortExpr::List(items) => list_set(items, PORT_MAX, |e| match e {
                PortExpr::Not(inner) => Ok((true, self.port_set(inner, depth + 1)?)),
                other => Ok((false, self.port_set(other, depth + 1)?)),
            })?,
        })
    }
}

/// A list is the union of its positive entries (everything when there are none) minus the
/// union of its negated entries.
fn list_set<T>(
    items: &[T],
    max: u128,
    mut resolve: impl FnMut(&T) -> Result<(bool, RangeSet), VarError>,
) -> Result<RangeSet, VarError> {
    let mut pos: Option<RangeSet> = None;
    let mut neg = RangeSet { ranges: Vec::new() };
    for item in items {
        let (negated, set) = resolve(item)?;
        if negated {
            neg = neg.union(&set);
        } else {
            pos = Some(match pos {
                Some(p) => p.union(&set),
                None => set,
            });
        }
    }
    let pos = pos.unwrap_or_else(|| RangeSet::full(max));
    Ok(pos.intersect(&neg.complement(max)))
}

fn check_name(name: &str) -> Result<(), VarError> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(())
    } else {
        Err(VarError::Name(name.to_string()))
    }
}

/// Whether a set holds an address (IPv4-mapped IPv6 addresses count as IPv4).
pub(crate) fn ip_in(set: &IpSet, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    set.contains(ip_key(ip))
}

/// Whether a set is every address.
pub(crate) fn ip_any(set: &IpSet) -> bool {
    set.is_full(IP_MAX)
}

/// Whether a set is every port.
pub(crate) fn port_any(set: &PortSet) -> bool {
    set.is_full(PORT_MAX)
}

/// Whether a set holds a port.
pub(crate) fn port_in(set: &PortSet, port: u16) -> bool {
    set.contains(u128::from(port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_resolve() {
        let v = Vars::suricata_defaults();
        let home = v.addresses(&AddrExpr::parse("$HOME_NET").unwrap()).unwrap();
        let ext = v
            .addresses(&AddrExpr::parse("$EXTERNAL_NET").unwrap())
            .unwrap();
        assert!(ip_in(&home, ip("10.1.2.3")));
        assert!(ip_in(&home, ip("::ffff:10.1.2.3")));
        assert!(!ip_in(&home, ip("8.8.8.8")));
        assert!(ip_in(&ext, ip("8.8.8.8")));
        assert!(ip_in(&ext, ip("2001:db8::1")));
        assert!(!ip_in(&ext, ip("192.168.1.1")));
        let http = v.ports(&PortExpr::parse("$HTTP_PORTS").unwrap()).unwrap();
        assert!(port_in(&http, 80) && !port_in(&http, 81));
        let shell = v
            .ports(&PortExpr::parse("$SHELLCODE_PORTS").unwrap())
            .unwrap();
        assert!(!port_in(&shell, 80) && port_in(&shell, 81) && port_in(&shell, 0));
        let fd = v
            .ports(&PortExpr::parse("$FILE_DATA_PORTS").unwrap())
            .unwrap();
        assert!(port_in(&fd, 80) && port_in(&fd, 143) && !port_in(&fd, 144));
    }

    #[test]
    fn east_west_is_any() {
        let v = Vars::east_west();
        let ext = v
            .addresses(&AddrExpr::parse("$EXTERNAL_NET").unwrap())
            .unwrap();
        assert!(ip_any(&ext));
        // The suricata default makes !$HOME_NET empty when HOME_NET is any: refused.
        let mut w = Vars::suricata_defaults();
        w.set("HOME_NET", "any").unwrap();
        assert!(matches!(
            w.addresses(&AddrExpr::parse("$EXTERNAL_NET").unwrap()),
            Err(VarError::Empty(_))
        ));
    }

    #[test]
    fn lists_and_negation() {
        let v = Vars::empty();
        let s = v
            .addresses(&AddrExpr::parse("[10.0.0.0/8,!10.1.0.0/16,192.0.2.1-192.0.2.3]").unwrap())
            .unwrap();
        assert!(ip_in(&s, ip("10.2.0.1")));
        assert!(!ip_in(&s, ip("10.1.0.1")));
        assert!(ip_in(&s, ip("192.0.2.3")));
        assert!(!ip_in(&s, ip("192.0.2.4")));
        let only_neg = v
            .addresses(&AddrExpr::parse("[!10.0.0.0/8]").unwrap())
            .unwrap();
        assert!(ip_in(&only_neg, ip("11.0.0.1")) && !ip_in(&only_neg, ip("10.0.0.1")));
        let p = v
            .ports(&PortExpr::parse("[1:1024,!80,!443]").unwrap())
            .unwrap();
        assert!(port_in(&p, 22) && !port_in(&p, 80) && !port_in(&p, 1025));
        let v6 = v
            .addresses(&AddrExpr::parse("2001:db8::/32").unwrap())
            .unwrap();
        assert!(ip_in(&v6, ip("2001:db8:1::1")) && !ip_in(&v6, ip("2001:db9::1")));
    }

    #[test]
    fn variable_errors() {
        let mut v = Vars::empty();
        assert!(matches!(v.set("A B", "any"), Err(VarError::Name(_))));
        assert!(matches!(
            v.set("X", "[1.2.3.4"),
            Err(VarError::Value { .. })
        ));
        v.set("A", "$B").unwrap();
        v.set("B", "$A").unwrap();
        assert!(matches!(
            v.addresses(&AddrExpr::Var("A".into())),
            Err(VarError::Cycle(_))
        ));
        assert!(matches!(
            v.addresses(&AddrExpr::Var("NOPE".into())),
            Err(VarError::Undefined(_))
        ));
        v.set("MY_PORTS", "[80,8080]").unwrap();
        assert_eq!(v.get("MY_PORTS"), Some("[80,8080]"));
        assert!(v.ports(&PortExpr::Var("MY_PORTS".into())).is_ok());
        assert!(matches!(
            v.addresses(&AddrExpr::parse("!any").unwrap()),
            Err(VarError::Empty(_))
        ));
    }
}
