//! Who is signed in: passwords checked against local users (Argon2id hashes) or the LDAP
//! directory (a bind as the user's entry), roles from groups, sessions behind a random
//! cookie, and a per-session token every state-changing request must repeat (CSRF).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use eastwall_identity::LdapDirectory;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::config::{LocalUser, SignInSpec};

/// What a signed-in user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Look at everything.
    Reader,
    /// Look, and apply policy.
    Admin,
}

impl Role {
    /// `reader` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

/// A signed-in user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The sign-in name.
    pub user: String,
    /// What they may do.
    pub role: Role,
    /// Where the password was checked: `local` or `ldap`.
    pub source: &'static str,
}

/// Why a sign-in failed. The user is told `Refused` alike for an unknown name and a wrong
/// password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignInError {
    /// Wrong name or password.
    #[error("wrong user name or password")]
    Refused,
    /// Right password, but in no console group.
    #[error("{0} may not use the console (in none of its groups)")]
    NoRole(String),
    /// Too many failures for this name lately.
    #[error("too many failed sign-ins for this user; try again in {0} s")]
    Throttled(u64),
    /// The directory could not say.
    #[error("the directory cannot check passwords now: {0}")]
    Unavailable(String),
}

/// Failures of one name within [`FAILURE_WINDOW`] before its sign-ins are refused unasked.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Password checks at once (Argon2 costs ~20 MB and tens of ms each).
const CHECKS_AT_ONCE: usize = 4;
/// Sessions held at most; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

/// Checks passwords and gives roles.
pub struct SignIn {
    local: HashMap<String, LocalUser>,
    ldap: Option<LdapDirectory>,
    admins: Vec<String>,
    readers: Vec<String>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    checks: Semaphore,
    /// A hash checked for unknown local names, so that they take as long as known ones.
    decoy: String,
}

impl SignIn {
    /// From the configuration, local users already read. Must run inside the tokio runtime
    /// (the LDAP client starts a task).
    pub fn new(
        spec: &SignInSpec,
        local: Vec<LocalUser>,
        ldap: Option<LdapDirectory>,
    ) -> anyhow::Result<SignIn> {
        Ok(SignIn {
            local: local.into_iter().map(|u| (u.name.clone(), u)).collect(),
            ldap,
            admins: spec.admins.clone(),
            readers: spec.readers.clone(),
            failures: Mutex::new(HashMap::new()),
            checks: Semaphore::new(CHECKS_AT_ONCE),
            decoy: hash_password("not a password of anyone")?,
        })
    }

    fn role_of(&self, groups: &[String]) -> Option<Role> {
        if groups.iter().any(|g| self.admins.contains(g)) {
            Some(Role::Admin)
        } else if groups.iter().any(|g| self.readers.contains(g)) {
            Some(Role::Reader)
        } else {
            None
        }
    }

    fn throttled(&self, user: &str) -> Option<u64> {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(user).and_then(|(n, since)| {
            let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
            (*n >= MAX_FAILURES).then_some(left.as_secs().max(1))
        })
    }

    fn failed(&self, user: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Names are attacker-chosen: forget expired entries before the map grows.
        if f.len() > 100_000 {
            f.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let e = f.entry(user.to_owned()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAILURE_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    /// Checks `password` for `user`: a local user first, else the directory.
    pub async fn verify(&self, user: &str, password: &str) -> Result<Principal, SignInError> {
        if user.is_empty() || user.len() > 256 || password.len() > 1024 {
            return Err(SignInError::Refused);
        }
        if let Some(left) = self.throttled(user) {
            return Err(SignInError::Throttled(left));
        }
        let _permit = self
            .checks
            .acquire()
            .await
            .map_err(|_| SignInError::Unavailable("stopping".into()))?;
        let found = match (self.local.get(user), &self.ldap) {
            (Some(u), _) => {
                let ok = check_hash(&u.password, password).await;
                ok.then(|| (u.groups.clone(), "local"))
            }
            (None, Some(ldap)) => match ldap.verify_password(user, password).await {
                Ok(Some(groups)) => Some((groups.iter().map(str::to_owned).collect(), "ldap")),
                Ok(None) => None,
                Err(e) => {
                    warn!(user, "sign-in: the directory failed: {e}");
                    return Err(SignInError::Unavailable(e.to_string()));
                }
            },
            (None, None) => {
                // As long as a known name would take.
                let _ = check_hash(&self.decoy, password).await;
                None
            }
        };
        let Some((groups, source)) = found else {
            self.failed(user);
            info!(user, "sign-in refused: wrong user name or password");
            return Err(SignInError::Refused);
        };
        match self.role_of(&groups) {
            Some(role) => {
                info!(user, role = role.as_str(), source, "signed in");
                Ok(Principal {
                    user: user.to_owned(),
                    role,
                    source,
                })
            }
            None => {
                info!(user, "sign-in refused: in no console group");
                Err(SignInError::NoRole(user.to_owned()))
            }
        }
    }
}

async fn check_hash(hash: &str, password: &str) -> bool {
    let (hash, password) = (hash.to_owned(), password.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// An Argon2id hash of `password` in PHC form, with a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;
    let mut salt = [0u8; 16];
    random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string())
}

fn random(buf: &mut [u8]) -> anyhow::Result<()> {
    eastwall_certs::crypto_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| anyhow::anyhow!("no random numbers from the system"))
}

/// A new random token: 32 bytes, hex.
fn token() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    random(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// One signed-in session.
#[derive(Debug)]
pub struct Session {
    /// Who.
    pub principal: Principal,
    /// What state-changing requests must repeat in `x-eastwall-csrf`.
    pub csrf: String,
    created: Instant,
    used: Mutex<Instant>,
}

/// The sessions, by cookie token.
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    lifetime: Duration,
    idle: Duration,
}

impl Sessions {
    /// Sessions living at most `lifetime`, ended after `idle` unused.
    pub fn new(lifetime: Duration, idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            lifetime,
            idle,
        }
    }

    /// How long a session lives (for the cookie's `Max-Age`).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        let used = *s.used.lock().unwrap_or_else(|p| p.into_inner());
        now.duration_since(s.created) < self.lifetime && now.duration_since(used) < self.idle
    }

    /// A new session for `principal`: its cookie token and the session.
    pub fn start(&self, principal: Principal) -> anyhow::Result<(String, Arc<Session>)> {
        let now = Instant::now();
        let s = Arc::new(Session {
            principal,
            csrf: token()?,
            created: now,
            used: Mutex::new(now),
        });
        let t = token()?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| self.alive(s, now));
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(t.clone(), s.clone());
        Ok((t, s))
    }

    /// The live session of `token` (and it counts as used now).
    pub fn get(&self, token: &str) -> Option<Arc<Session>> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get(token)?.clone();
        if !self.alive(&s, now) {
            map.remove(token);
            return None;
        }
        *s.used.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Some(s)
    }

    /// Ends the session of `token`.
    pub fn end(&self, token: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec() -> SignInSpec {
        SignInSpec {
            users: None,
            ldap: None,
            admins: vec!["netsec-admins".into()],
            readers: vec!["netsec".into()],
            session_minutes: 480,
            idle_minutes: 30,
        }
    }

    fn user(name: &str, password: &str, groups: &[&str]) -> LocalUser {
        LocalUser {
            name: name.into(),
            password: hash_password(password).unwrap(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn passwords_and_roles() {
        let s = SignIn::new(
            &spec(),
            vec![
                user("ada", "correct horse", &["netsec-admins"]),
                user("rob", "battery staple", &["netsec", "hr"]),
                user("eve", "sesame", &["hr"]),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            s.verify("ada", "correct horse").await.unwrap().role,
            Role::Admin
        );
        assert_eq!(
            s.verify("rob", "battery staple").await.unwrap().role,
            Role::Reader
        );
        assert_eq!(
            s.verify("eve", "sesame").await,
            Err(SignInError::NoRole("eve".into()))
        );
        assert_eq!(s.verify("ada", "wrong").await, Err(SignInError::Refused));
        assert_eq!(s.verify("nobody", "x").await, Err(SignInError::Refused));
        assert_eq!(s.verify("ada", "").await, Err(SignInError::Refused));
        assert_eq!(s.verify("", "x").await, Err(SignInError::Refused));
    }

    #[tokio::test]
    async fn a_name_guessed_at_is_throttled() {
        let s = SignIn::new(&spec(), vec![user("ada", "pw", &["netsec-admins"])], None).unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(s.verify("ada", "guess").await, Err(SignInError::Refused));
        }
        // Even the right password waits out the window.
        assert!(matches!(
            s.verify("ada", "pw").await,
            Err(SignInError::Throttled(_))
        ));
    }

    #[test]
    fn sessions_end_when_idle_or_old() {
        let p = Principal {
            user: "ada".into(),
            role: Role::Admin,
            source: "local",
        };
        let live = Sessions::new(Duration::from_secs(60), Duration::from_secs(30));
        let (t, s) = live.start(p.clone()).unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, s.csrf);
        assert_eq!(live.get(&t).unwrap().principal, p);
        assert!(live.get("not-a-token").is_none());
        live.end(&t);
        assert!(live.get(&t).is_none());
        let short = Sessions::new(Duration::from_millis(1), Duration::from_millis(1));
        let (t, _) = short.start(p).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get(&t).is_none());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
