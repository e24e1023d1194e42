//! The console's configuration file (`kind: ConsoleConfig`) and its users file
//! (`kind: ConsoleUsers`), validated with `FILE:LINE:COL`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use eastwall_policy::{Diagnostic, Diagnostics, Severity};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::config::{API_VERSION, LdapSpec};

/// Longest a session lives by default, signed in (minutes).
const DEFAULT_SESSION_MINUTES: u64 = 480;
/// Longest a session may sit unused by default (minutes).
const DEFAULT_IDLE_MINUTES: u64 = 30;

/// `eastwall console --config FILE`.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Where it listens (HTTPS).
    pub listen: SocketAddr,
    /// Its server certificate chain and key (PEM).
    pub tls_cert: PathBuf,
    /// The key.
    pub tls_key: PathBuf,
    /// The central store: read with this client's certificate, and written by `apply`
    /// (its etcd user needs the admin role for that).
    pub store: eastwall_store::StoreSpec,
    /// The flow collector, asked as an operator.
    pub collector: CollectorSpec,
    /// Who may sign in, and as what.
    pub sign_in: SignInSpec,
}

/// The `collector` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CollectorSpec {
    /// `https://HOST:PORT` of `eastwall collector`.
    pub url: String,
    /// The trust bundle its certificate chains to.
    pub trust_bundle: PathBuf,
    /// The console's operator certificate (`spiffe://<td>/operator/<name>`).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// The `signIn` section.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInSpec {
    /// Local users (`kind: ConsoleUsers`, passwords as Argon2id hashes).
    pub users: Option<PathBuf>,
    /// An LDAP or Active Directory server checking passwords and giving groups.
    pub ldap: Option<LdapSpec>,
    /// Groups whose members may apply (and look).
    pub admins: Vec<String>,
    /// Groups whose members may look.
    pub readers: Vec<String>,
    /// Longest a session lives (minutes).
    pub session_minutes: u64,
    /// Longest a session may sit unused (minutes).
    pub idle_minutes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    listen: Spanned<String>,
    tls: TlsDoc,
    store: StoreDoc,
    collector: CollectorSpec,
    sign_in: Spanned<SignInDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TlsDoc {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StoreDoc {
    endpoints: Vec<String>,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default = "default_prefix")]
    prefix: String,
}

fn default_prefix() -> String {
    "/eastwall/".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SignInDoc {
    #[serde(default)]
    users: Option<PathBuf>,
    #[serde(default)]
    ldap: Option<LdapSpec>,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    readers: Vec<String>,
    #[serde(default)]
    session_minutes: Option<u64>,
    #[serde(default)]
    idle_minutes: Option<u64>,
}

impl ConsoleConfig {
    /// Parses a console configuration; relative paths are resolved against the file's folder.
    pub fn parse(file: &Path, text: &str) -> Result<ConsoleConfig, Diagnostics> {
        let name = file.display().to_string();
        let f: File = eastwall_policy::parse_yaml(&name, text)?;
        let mut diags = Diagnostics::default();
        let mut error = |at: &Location, message: String| {
            diags.push(Diagnostic {
                file: name.clone(),
                line: at.line() as u32,
                col: at.column() as u32,
                severity: Severity::Error,
                message,
            })
        };
        check_head(&f.api_version, &f.kind, "ConsoleConfig", &mut error);
        let listen = match f.listen.value.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                error(
                    &f.listen.referenced,
                    format!("listen: `{}` is not ADDRESS:PORT", f.listen.value),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        let s = &f.sign_in.value;
        let at = &f.sign_in.referenced;
        if s.users.is_none() && s.ldap.is_none() {
            error(
                at,
                "signIn needs `users` (a ConsoleUsers file), `ldap`, or both".into(),
            );
        }
        if s.admins.is_empty() && s.readers.is_empty() {
            error(
                at,
                "signIn needs `admins` or `readers` (groups): nobody could sign in".into(),
            );
        }
        if s.admins
            .iter()
            .chain(&s.readers)
            .any(|g| g.trim().is_empty())
        {
            error(at, "signIn: a group name is empty".into());
        }
        let session_minutes = s.session_minutes.unwrap_or(DEFAULT_SESSION_MINUTES);
        let idle_minutes = s.idle_minutes.unwrap_or(DEFAULT_IDLE_MINUTES);
        if !(1..=7 * 24 * 60).contains(&session_minutes) {
            error(
                at,
                format!("signIn.sessionMinutes: {session_minutes} is not 1 to 10080 (a week)"),
            );
        }
        if idle_minutes == 0 || idle_minutes > session_minutes {
            error(
                at,
                format!("signIn.idleMinutes: {idle_minutes} is not 1 to sessionMinutes"),
            );
        }
        if f.store.endpoints.is_empty() {
            error(at, "store.endpoints is empty".into());
        }
        if let Err(e) = crate::mtls::Endpoint::parse(&f.collector.url) {
            error(at, format!("collector.url: {e}"));
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| dir.join(p);
        let mut ldap = s.ldap.clone();
        if let Some(l) = &mut ldap {
            l.ca_file = l.ca_file.as_deref().map(rel);
            l.bind_password_file = l.bind_password_file.as_deref().map(rel);
        }
        Ok(ConsoleConfig {
            listen,
            tls_cert: rel(&f.tls.cert),
            tls_key: rel(&f.tls.key),
            store: eastwall_store::StoreSpec {
                endpoints: f.store.endpoints,
                ca_file: rel(&f.store.ca_file),
                cert_file: rel(&f.store.cert_file),
                key_file: rel(&f.store.key_file),
                prefix: f.store.prefix,
            },
            collector: CollectorSpec {
                url: f.collector.url,
                trust_bundle: rel(&f.collector.trust_bundle),
                cert: rel(&f.collector.cert),
                key: rel(&f.collector.key),
            },
            sign_in: SignInSpec {
                users: s.users.as_deref().map(rel),
                ldap,
                admins: s.admins.clone(),
                readers: s.readers.clone(),
                session_minutes,
                idle_minutes,
            },
        })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> anyhow::Result<ConsoleConfig> {
        let text = crate::config::read_file(path)?;
        ConsoleConfig::parse(path, &text).map_err(|d| anyhow::anyhow!("{d}"))
    }
}

/// Errors for a document whose `apiVersion` or `kind` is not what is expected.
fn check_head(
    api_version: &Spanned<String>,
    kind: &Spanned<String>,
    want: &str,
    error: &mut impl FnMut(&Location, String),
) {
    if api_version.value != API_VERSION {
        error(
            &api_version.referenced,
            format!(
                "apiVersion must be `{API_VERSION}`, found `{}`",
                api_version.value
            ),
        );
    }
    if kind.value != want {
        error(
            &kind.referenced,
            format!("kind must be `{want}`, found `{}`", kind.value),
        );
    }
}

/// One local user of the console.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalUser {
    /// The sign-in name.
    pub name: String,
    /// The password as an Argon2id hash in PHC form (`eastwall console hash-password`).
    pub password: String,
    /// The user's groups (`signIn.admins` / `readers` name them).
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UsersFile {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    users: Vec<Spanned<LocalUser>>,
}

/// Parses a `kind: ConsoleUsers` file: names unique, passwords Argon2 hashes (never clear).
pub fn parse_users(file: &Path, text: &str) -> Result<Vec<LocalUser>, Diagnostics> {
    let name = file.display().to_string();
    let f: UsersFile = eastwall_policy::parse_yaml(&name, text)?;
    let mut diags = Diagnostics::default();
    let mut error = |at: &Location, message: String| {
        diags.push(Diagnostic {
            file: name.clone(),
            line: at.line() as u32,
            col: at.column() as u32,
            severity: Severity::Error,
            message,
        })
    };
    check_head(&f.api_version, &f.kind, "ConsoleUsers", &mut error);
    let mut seen = std::collections::BTreeSet::new();
    for u in &f.users {
        let at = &u.referenced;
        if u.value.name.is_empty() || u.value.name.len() > 256 {
            error(at, "a user's name must be 1 to 256 characters".into());
        }
        if !seen.insert(u.value.name.clone()) {
            error(at, format!("user `{}` is listed twice", u.value.name));
        }
        if argon2::PasswordHash::new(&u.value.password).is_err()
            || !u.value.password.starts_with("$argon2")
        {
            error(
                at,
                format!(
                    "user `{}`: password must be an Argon2 hash ($argon2id$...; `eastwall console hash-password` makes one), never the password itself",
                    u.value.name
                ),
            );
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(f.users.into_iter().map(|u| u.value).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = "apiVersion: eastwall.dev/v1
kind: ConsoleConfig
listen: 127.0.0.1:9443
tls: {cert: console.crt, key: console.key}
store:
  endpoints: [https://127.0.0.1:2379]
  caFile: etcd-ca.pem
  certFile: admin.crt
  keyFile: admin.key
collector:
  url: https://127.0.0.1:15010
  trustBundle: bundle.pem
  cert: operator.crt
  key: operator.key
signIn:
  users: users.yaml
  admins: [netsec-admins]
  readers: [netsec]
";

    #[test]
    fn a_good_file_with_paths_from_its_folder() {
        let c = ConsoleConfig::parse(Path::new("/etc/eastwall/console.yaml"), GOOD).unwrap();
        assert_eq!(c.listen.port(), 9443);
        assert_eq!(c.tls_cert, Path::new("/etc/eastwall/console.crt"));
        assert_eq!(
            c.sign_in.users.as_deref(),
            Some(Path::new("/etc/eastwall/users.yaml"))
        );
        assert_eq!(
            (c.sign_in.session_minutes, c.sign_in.idle_minutes),
            (480, 30)
        );
        assert_eq!(c.store.prefix, "/eastwall/");
    }

    #[test]
    fn mistakes_are_told_where_they_are() {
        let cases = [
            (
                GOOD.replace("127.0.0.1:9443", "nine"),
                "console.yaml:3:",
                "not ADDRESS:PORT",
            ),
            (
                GOOD.replace("ConsoleConfig", "NodeConfig"),
                "console.yaml:2:",
                "kind must be",
            ),
            (
                GOOD.replace("  users: users.yaml\n", ""),
                "console.yaml:16:",
                "needs `users`",
            ),
            (
                GOOD.replace("  admins: [netsec-admins]\n  readers: [netsec]\n", ""),
                "console.yaml:16:",
                "nobody could sign in",
            ),
            (
                GOOD.replace("listen:", "lissen:"),
                "console.yaml:",
                "unknown field",
            ),
            (
                GOOD.replace("signIn:\n", "signIn:\n  idleMinutes: 600\n"),
                "console.yaml:16:",
                "idleMinutes",
            ),
            (
                GOOD.replace("https://127.0.0.1:15010", "http://x"),
                "console.yaml:",
                "https://",
            ),
        ];
        for (text, at, what) in cases {
            let e = ConsoleConfig::parse(Path::new("console.yaml"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(at) && e.contains(what), "{at} {what}: {e}");
        }
    }

    #[test]
    fn users_files_hold_hashes_never_passwords() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        let good = format!(
            "apiVersion: eastwall.dev/v1\nkind: ConsoleUsers\nusers:\n  - name: admin\n    password: \"{hash}\"\n    groups: [netsec-admins]\n"
        );
        let u = parse_users(Path::new("u.yaml"), &good).unwrap();
        assert_eq!(u[0].groups, ["netsec-admins"]);
        let clear = good.replace(hash, "hunter2");
        let e = parse_users(Path::new("u.yaml"), &clear)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("u.yaml:4:") && e.contains("never the password"),
            "{e}"
        );
        let twice = format!("{good}  - name: admin\n    password: \"{hash}\"\n");
        let e = parse_users(Path::new("u.yaml"), &twice)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
    }
}
