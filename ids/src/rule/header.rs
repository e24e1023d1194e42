//! Address and port expressions of rule headers and variables: `any`, `!x`, `[a, b]`,
//! `$VAR`, CIDR blocks, address ranges `a-b`, port ranges `a:b`.
//!
//! They are parsed here into trees with `$VAR` left as a name. Resolving variables and
//! turning a tree into a set needs the variables, which the engine holds when it is built;
//! this module knows none of that, so that the dependency goes one way (variables use the
//! expressions, not the reverse).

use std::fmt;
use std::net::IpAddr;

/// Nesting deeper than this is refused (bounded recursion on hostile input).
const MAX_NESTING: usize = 16;

/// An address expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddrExpr {
    /// `any`.
    Any,
    /// `$NAME`.
    Var(String),
    /// `10.0.0.0/8`, `::1`, `1.2.3.4` (a /32 or /128).
    Net(IpAddr, u8),
    /// `1.2.3.4-1.2.3.9`, inclusive.
    Range(IpAddr, IpAddr),
    /// `!x`.
    Not(Box<AddrExpr>),
    /// `[a, b, …]`: the union of the positive entries minus the negated ones.
    List(Vec<AddrExpr>),
}

/// A port expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortExpr {
    /// `any`.
    Any,
    /// `$NAME`.
    Var(String),
    /// `80`, `1024:`, `:1023`, `1:1024`, inclusive.
    Range(u16, u16),
    /// `!x`.
    Not(Box<PortExpr>),
    /// `[a, b, …]`.
    List(Vec<PortExpr>),
}

/// Why an address or port expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// Nothing where an expression was expected.
    #[error("empty expression")]
    Empty,
    /// A `[` without `]` or the reverse.
    #[error("unbalanced brackets in `{0}`")]
    Brackets(String),
    /// Lists nested deeper than the limit.
    #[error("lists nested too deeply")]
    TooDeep,
    /// Not an address, network or range.
    #[error("invalid address `{0}`")]
    Address(String),
    /// Not a port or port range.
    #[error("invalid port `{0}`")]
    Port(String),
    /// A variable name with characters outside `[A-Za-z0-9_]`.
    #[error("invalid variable name `{0}`")]
    VarName(String),
}

/// Split `[a, [b, c], d]`'s inside at top-level commas.
fn split_list(inner: &str) -> Result<Vec<&str>, ExprError> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| ExprError::Brackets(inner.to_string()))?
            }
            ',' if depth == 0 => {
                parts.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(ExprError::Brackets(inner.to_string()));
    }
    parts.push(inner[start..].trim());
    Ok(parts)
}

fn var_name(s: &str) -> Result<String, ExprError> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(s.to_string())
    } else {
        Err(ExprError::VarName(s.to_string()))
    }
}

impl AddrExpr {
    /// Parse an address expression.
    pub fn parse(s: &str) -> Result<AddrExpr, ExprError> {
        Self::parse_depth(s.trim(), 0)
    }

    fn parse_depth(s: &str, depth: usize) -> Result<AddrExpr, ExprError> {
        if depth > MAX_NESTING {
            return Err(ExprError::TooDeep);
        }
        if s.is_empty() {
            return Err(ExprError::Empty);
        }
        if let Some(rest) = s.strip_prefix('!') {
            return Ok(AddrExpr::Not(Box::new(Self::parse_depth(
                rest.trim(),
                depth + 1,
            )?)));
        }
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| ExprError::Brackets(s.to_string()))?;
            let items = split_list(inner)?
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(|p| Self::parse_depth(p, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            if items.is_empty() {
                return Err(ExprError::Empty);
            }
            return Ok(AddrExpr::List(items));
        }
        if s.eq_ignore_ascii_case("any") {
            return Ok(AddrExpr::Any);
        }
        if let Some(name) = s.strip_prefix('$') {
            return Ok(AddrExpr::Var(var_name(name)?));
        }
        let bad = || ExprError::Address(s.to_string());
        if let Some((addr, len)) = s.split_once('/') {
            let ip: IpAddr = addr.trim().parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len.trim().parse::<u8>() {
                Ok(l) if l <= max => l,
                Ok(_) => return Err(bad()),
                // A dotted netmask (`10.0.0.0/255.0.0.0`).
                Err(_) => match len.trim().parse::<IpAddr>() {
                    Ok(IpAddr::V4(mask)) if ip.is_ipv4() => {
                        let m = u32::from(mask);
                        if m.leading_ones() + m.trailing_zeros() != 32 {
                            return Err(bad());
                        }
                        m.leading_ones() as u8
                    }
                    _ => return Err(bad()),
                },
            };
            return Ok(AddrExpr::Net(ip, len));
        }
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| bad())?;
            let b: IpAddr = b.trim().parse().map_err(|_| bad())?;
            if a.is_ipv4() != b.is_ipv4() {
                return Err(bad());
            }
            return Ok(AddrExpr::Range(a, b));
        }
        let ip: IpAddr = s.parse().map_err(|_| bad())?;
        Ok(AddrExpr::Net(ip, if ip.is_ipv4() { 32 } else { 128 }))
    }
}

impl PortExpr {
    /// Parse a port expression.
    pub fn parse(s: &str) -> Result<PortExpr, ExprError> {
        Self::parse_depth(s.trim(), 0)
    }

    fn parse_depth(s: &str, depth: usize) -> Result<PortExpr, ExprError> {
        if depth > MAX_NESTING {
            return Err(ExprError::TooDeep);
        }
        if s.is_empty() {
            return Err(ExprError::Empty);
        }
        if let Some(rest) = s.strip_prefix('!') {
            return Ok(PortExpr::Not(Box::new(Self::parse_depth(
                rest.trim(),
                depth + 1,
            )?)));
        }
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| ExprError::Brackets(s.to_string()))?;
            let items = split_list(inner)?
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(|p| Self::parse_depth(p, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            if items.is_empty() {
                return Err(ExprError::Empty);
            }
            return Ok(PortExpr::List(items));
        }
        if s.eq_ignore_ascii_case("any") {
            return Ok(PortExpr::Any);
        }
        if let Some(name) = s.strip_prefix('$') {
            return Ok(PortExpr::Var(var_name(name)?));
        }
        let bad = || ExprError::Port(s.to_string());
        let port = |t: &str| t.trim().parse::<u16>().map_err(|_| bad());
        if let Some((a, b)) = s.split_once(':') {
            let lo = if a.trim().is_empty() { 0 } else { port(a)? };
            let hi = if b.trim().is_empty() {
                u16::MAX
            } else {
                port(b)?
            };
            if lo > hi {
                return Err(bad());
            }
            return Ok(PortExpr::Range(lo, hi));
        }
        let p = port(s)?;
        Ok(PortExpr::Range(p, p))
    }
}

impl fmt::Display for AddrExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrExpr::Any => f.write_str("any"),
            AddrExpr::Var(v) => write!(f, "${v}"),
            AddrExpr::Net(ip, len) => write!(f, "{ip}/{len}"),
            AddrExpr::Range(a, b) => write!(f, "{a}-{b}"),
            AddrExpr::Not(x) => write!(f, "!{x}"),
            AddrExpr::List(items) => {
                f.write_str("[")?;
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl fmt::Display for PortExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortExpr::Any => f.write_str("any"),
            PortExpr::Var(v) => write!(f, "${v}"),
            PortExpr::Range(a, b) if a == b => write!(f, "{a}"),
            PortExpr::Range(a, b) => write!(f, "{a}:{b}"),
            PortExpr::Not(x) => write!(f, "!{x}"),
            PortExpr::List(items) => {
                f.write_str("[")?;
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(AddrExpr::parse("any").unwrap(), AddrExpr::Any);
        assert_eq!(
            AddrExpr::parse("!$HOME_NET").unwrap(),
            AddrExpr::Not(Box::new(AddrExpr::Var("HOME_NET".into())))
        );
        assert_eq!(
            AddrExpr::parse("[10.0.0.0/8, !10.1.0.0/255.255.0.0]").unwrap(),
            AddrExpr::List(vec![
                AddrExpr::Net("10.0.0.0".parse().unwrap(), 8),
                AddrExpr::Not(Box::new(AddrExpr::Net("10.1.0.0".parse().unwrap(), 16))),
            ])
        );
        assert_eq!(
            AddrExpr::parse("::1").unwrap(),
            AddrExpr::Net("::1".parse().unwrap(), 128)
        );
        assert!(AddrExpr::parse("[1.2.3.4").is_err());
        assert!(AddrExpr::parse("1.2.3.4/33").is_err());
        assert!(AddrExpr::parse("10.0.0.0/255.0.255.0").is_err());
        assert!(AddrExpr::parse("$A-B").is_err());
        let deep = format!("{}1.1.1.1{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(AddrExpr::parse(&deep), Err(ExprError::TooDeep));
    }

    #[test]
    fn ports() {
        assert_eq!(
            PortExpr::parse("1024:").unwrap(),
            PortExpr::Range(1024, 65535)
        );
        assert_eq!(PortExpr::parse(":1023").unwrap(), PortExpr::Range(0, 1023));
        assert_eq!(
            PortExpr::parse("[80, 8080:8090, !8085]").unwrap(),
            PortExpr::List(vec![
                PortExpr::Range(80, 80),
                PortExpr::Range(8080, 8090),
                PortExpr::Not(Box::new(PortExpr::Range(8085, 8085))),
            ])
        );
        assert!(PortExpr::parse("70000").is_err());
        assert!(PortExpr::parse("90:80").is_err());
    }
}
