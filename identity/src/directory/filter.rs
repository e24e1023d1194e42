//! LDAP filter text (RFC 4515) and DN text (RFC 4514) helpers: escaping values into filters,
//! filter templates with a `{user}` placeholder, and the name in a group's DN.

use std::fmt::Write as _;

/// Escapes `value` for use as an assertion value in an LDAP search filter (RFC 4515).
///
/// `*`, `(`, `)`, `\` and NUL are escaped as the standard requires; other control characters
/// are escaped too, so that a user name can never change the structure of a filter.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => {
                let _ = write!(out, "\\{:02x}", c as u32);
            }
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A search filter with `{user}` placeholders, such as `(uid={user})` (OpenLDAP) or
/// `(&(objectClass=user)(sAMAccountName={user}))` (Active Directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterTemplate {
    template: String,
}

/// Why a filter template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterTemplateError {
    /// The template has no `{user}` placeholder, so it would match the same entries for all.
    #[error("filter template {0:?} has no {{user}} placeholder")]
    NoPlaceholder(String),
    /// The template is not a valid LDAP filter.
    #[error("filter template {0:?} is not a valid LDAP filter (RFC 4515)")]
    Invalid(String),
}

impl FilterTemplate {
    /// Checks and keeps a template.
    pub fn new(template: &str) -> Result<FilterTemplate, FilterTemplateError> {
        if !template.contains("{user}") {
            return Err(FilterTemplateError::NoPlaceholder(template.to_owned()));
        }
        let t = FilterTemplate {
            template: template.to_owned(),
        };
        if ldap3::parse_filter(t.render("x")).is_err() {
            return Err(FilterTemplateError::Invalid(template.to_owned()));
        }
        Ok(t)
    }

    /// The filter for `user`, with the name escaped.
    pub fn render(&self, user: &str) -> String {
        self.template.replace("{user}", &escape_filter_value(user))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.template
    }
}

/// The value of the first RDN of `dn`, unescaped: `cn=finance,ou=groups,dc=example,dc=org`
/// gives `finance`. `None` if `dn` has no `attr=value` first component.
pub(crate) fn first_rdn_value(dn: &str) -> Option<String> {
    let (_, rest) = dn.split_once('=')?;
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b',' | b'+' => break,
            b'\\' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(*bytes.get(i + 1)?);
                        i += 2;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let value = String::from_utf8(out).ok()?;
    let value = value.trim();
    if value.is_empty() {
        None
    } else {
        Some(value.to_owned())
    }
}

/// A DN in a canonical form for comparing (cycle detection): lowercase, no spaces around
/// `,` and `=`. Not a full RFC 4514 normalisation, which needs the schema.
pub(crate) fn dn_key(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut escaped = false;
    let mut after_separator = true;
    for c in dn.trim().chars() {
        if escaped {
            out.extend(c.to_lowercase());
            escaped = false;
            after_separator = false;
            continue;
        }
        match c {
            '\\' => {
                out.push('\\');
                escaped = true;
            }
            ',' | '=' | '+' => {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push(c);
                after_separator = true;
            }
            ' ' if after_separator => {}
            c => {
                out.extend(c.to_lowercase());
                after_separator = false;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_filter_metacharacters() {
        let cases = [
            ("alice", "alice"),
            ("*", "\\2a"),
            ("*)(uid=*", "\\2a\\29\\28uid=\\2a"),
            ("a\\b", "a\\5cb"),
            ("x\0y", "x\\00y"),
            ("admin)(|(uid=*))", "admin\\29\\28|\\28uid=\\2a\\29\\29"),
            ("line\nbreak", "line\\0abreak"),
            ("jürgen", "jürgen"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_filter_value(input), want, "{input:?}");
        }
    }

    #[test]
    fn template_renders_escaped_and_stays_one_filter() {
        let t = FilterTemplate::new("(&(objectClass=person)(uid={user}))").unwrap();
        assert_eq!(t.render("alice"), "(&(objectClass=person)(uid=alice))");
        let hostile = t.render("*)(uid=*))(|(uid=*");
        assert_eq!(
            hostile,
            "(&(objectClass=person)(uid=\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a))"
        );
        assert!(ldap3::parse_filter(&hostile).is_ok());
    }

    #[test]
    fn template_errors() {
        assert!(matches!(
            FilterTemplate::new("(uid=alice)"),
            Err(FilterTemplateError::NoPlaceholder(_))
        ));
        assert!(matches!(
            FilterTemplate::new("(uid={user}"),
            Err(FilterTemplateError::Invalid(_))
        ));
        assert!(FilterTemplate::new("(sAMAccountName={user})").is_ok());
    }

    #[test]
    fn first_rdn_values() {
        let cases = [
            ("cn=finance,ou=groups,dc=example,dc=org", Some("finance")),
            ("CN=Domain Admins,CN=Users,DC=corp", Some("Domain Admins")),
            ("cn=Smith\\, Eve,ou=x", Some("Smith, Eve")),
            ("cn=a\\2cb,ou=x", Some("a,b")),
            ("cn=j\\c3\\bcrgen,ou=x", Some("jürgen")),
            ("cn=multi+uid=x,ou=y", Some("multi")),
            ("cn=,ou=x", None),
            ("nonsense", None),
            ("cn=trailing\\", None),
            ("cn=bad\\ff", None),
        ];
        for (dn, want) in cases {
            assert_eq!(first_rdn_value(dn).as_deref(), want, "{dn:?}");
        }
    }

    #[test]
    fn dn_keys_compare_case_and_space_insensitively() {
        assert_eq!(
            dn_key("CN=Finance, OU=Groups,DC=Example ,dc=org"),
            dn_key("cn=finance,ou=groups,dc=example,dc=org")
        );
        assert_eq!(dn_key("cn=Domain Admins,dc=x"), "cn=domain admins,dc=x");
        assert_ne!(dn_key("cn=a\\,b,dc=x"), dn_key("cn=a,b,dc=x"));
    }
}
