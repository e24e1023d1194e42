//! `classification.config`: classtype → description and default priority.

use crate::rule::RuleError;
use std::collections::HashMap;

/// Suricata's default `classification.config` (shortname, description, priority).
const SURICATA_DEFAULTS: &[(&str, &str, u8)] = &[
    ("not-suspicious", "Not Suspicious Traffic", 3),
    ("unknown", "Unknown Traffic", 3),
    ("bad-unknown", "Potentially Bad Traffic", 2),
    ("attempted-recon", "Attempted Information Leak", 2),
    ("successful-recon-limited", "Information Leak", 2),
    (
        "successful-recon-largescale",
        "Large Scale Information Leak",
        2,
    ),
    ("attempted-dos", "Attempted Denial of Service", 2),
    ("successful-dos", "Denial of Service", 2),
    ("attempted-user", "Attempted User Privilege Gain", 1),
    ("unsuccessful-user", "Unsuccessful User Privilege Gain", 1),
    ("successful-user", "Successful User Privilege Gain", 1),
    (
        "attempted-admin",
        "Attempted Administrator Privilege Gain",
        1,
    ),
    (
        "successful-admin",
        "Successful Administrator Privilege Gain",
        1,
    ),
    ("rpc-portmap-decode", "Decode of an RPC Query", 2),
    ("shellcode-detect", "Executable code was detected", 1),
    ("string-detect", "A suspicious string was detected", 3),
    (
        "suspicious-filename-detect",
        "A suspicious filename was detected",
        2,
    ),
    (
        "suspicious-login",
        "An attempted login using a suspicious username was detected",
        2,
    ),
    ("system-call-detect", "A system call was detected", 2),
    ("tcp-connection", "A TCP connection was detected", 4),
    ("trojan-activity", "A Network Trojan was detected", 1),
    (
        "unusual-client-port-connection",
        "A client was using an unusual port",
        2,
    ),
    ("network-scan", "Detection of a Network Scan", 3),
    (
        "denial-of-service",
        "Detection of a Denial of Service Attack",
        2,
    ),
    (
        "non-standard-protocol",
        "Detection of a non-standard protocol or event",
        2,
    ),
    (
        "protocol-command-decode",
        "Generic Protocol Command Decode",
        3,
    ),
    (
        "web-application-activity",
        "access to a potentially vulnerable web application",
        2,
    ),
    ("web-application-attack", "Web Application Attack", 1),
    ("misc-activity", "Misc activity", 3),
    ("misc-attack", "Misc Attack", 2),
    ("icmp-event", "Generic ICMP event", 3),
    (
        "inappropriate-content",
        "Inappropriate Content was Detected",
        1,
    ),
    (
        "policy-violation",
        "Potential Corporate Privacy Violation",
        1,
    ),
    (
        "default-login-attempt",
        "Attempt to login by a default username and password",
        2,
    ),
    (
        "targeted-activity",
        "Targeted Malicious Activity was Detected",
        1,
    ),
    ("exploit-kit", "Exploit Kit Activity Detected", 1),
    (
        "external-ip-check",
        "Device Retrieving External IP Address Detected",
        2,
    ),
    ("domain-c2", "Domain Observed Used for C2 Detected", 1),
    ("pup-activity", "Possibly Unwanted Program Detected", 2),
    (
        "credential-theft",
        "Successful Credential Theft Detected",
        1,
    ),
    (
        "social-engineering",
        "Possible Social Engineering Attempted",
        2,
    ),
    ("coin-mining", "Crypto Currency Mining Activity Detected", 2),
    (
        "command-and-control",
        "Malware Command and Control Activity Detected",
        1,
    ),
];

/// Classtypes: the EVE `category` (description) and default severity (priority) of rules.
#[derive(Debug, Clone, Default)]
pub struct Classifications {
    by_name: HashMap<String, (String, u8)>,
}

impl Classifications {
    /// Suricata's default classification table.
    pub fn suricata_defaults() -> Self {
        let by_name = SURICATA_DEFAULTS
            .iter()
            .map(|(n, d, p)| ((*n).to_string(), ((*d).to_string(), *p)))
            .collect();
        Classifications { by_name }
    }

    /// Parse a `classification.config` text (`config classification: name,description,priority`
    /// per line). Bad lines are returned as errors and the rest is kept.
    pub fn parse(source: &str, text: &str) -> (Self, Vec<RuleError>) {
        let mut by_name = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let mut error = |message: &str| {
                errors.push(RuleError {
                    source: source.to_string(),
                    line: i as u32 + 1,
                    col: 1,
                    message: message.to_string(),
                })
            };
            let Some(rest) = t.strip_prefix("config classification:") else {
                error("expected `config classification: name,description,priority`");
                continue;
            };
            let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
            if parts.len() != 3 || parts[0].is_empty() {
                error("expected `name,description,priority`");
                continue;
            }
            match parts[2].parse::<u8>() {
                Ok(p) if p > 0 => {
                    by_name.insert(parts[0].to_string(), (parts[1].to_string(), p));
                }
                _ => error("priority must be a number from 1 to 255"),
            }
        }
        (Classifications { by_name }, errors)
    }

    /// Description and default priority of a classtype.
    pub fn get(&self, classtype: &str) -> Option<(&str, u8)> {
        self.by_name.get(classtype).map(|(d, p)| (d.as_str(), *p))
    }

    /// How many classtypes are known.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no classtype is known.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parse() {
        let d = Classifications::suricata_defaults();
        assert_eq!(
            d.get("web-application-attack"),
            Some(("Web Application Attack", 1))
        );
        assert_eq!(d.len(), 43);
        let (c, errors) = Classifications::parse(
            "c.config",
            "# x\nconfig classification: a,Thing A,2\nconfig classification: b,B\nnonsense\n",
        );
        assert_eq!(c.get("a"), Some(("Thing A", 2)));
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, 3);
    }
}
