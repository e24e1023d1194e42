//! Bootstrap tokens: how a new node gets its node certificate without anyone copying one to
//! it. An operator makes a token (`eastwall ca token`): for some nodes or any node of the
//! registry, for a number of enrollments, until it expires. A node started with it asks the
//! CA service for its node certificate (`POST /v1/enroll`); each enrollment spends one use.
//!
//! The CA folder keeps only each token's SHA-256 (`bootstrap-tokens.json`, mode 0600), read
//! and rewritten under an exclusive lock by the CLI and the service alike. [`Tokens`] is the
//! pure core: it takes the time and a token and returns a decision.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The tokens' file in a CA folder.
pub const TOKENS_FILE: &str = "bootstrap-tokens.json";
/// Its lock (a file of its own, so the tokens' file can be replaced atomically).
const LOCK_FILE: &str = "bootstrap-tokens.lock";

/// One token, as kept: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// `sha256:<hex>` of the token.
    pub hash: String,
    /// The nodes it may enroll; `None`: any node of the registry.
    pub nodes: Option<Vec<String>>,
    /// Enrollments left.
    pub uses_left: u32,
    /// When it stops being accepted, Unix seconds.
    pub expires: u64,
}

/// Every token of a CA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// The tokens, oldest first.
    pub tokens: Vec<TokenEntry>,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token has that hash (never made, spent, or forgotten after expiring).
    Unknown,
    /// Past its time.
    Expired,
    /// Made for other nodes.
    NotForNode,
}

impl Refusal {
    /// In words, for the CA's log.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown or spent token",
            Refusal::Expired => "expired token",
            Refusal::NotForNode => "the token is not for this node",
        }
    }
}

/// `sha256:<hex>` of `token`.
pub fn hash(token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Tokens {
    /// Spends one use of `token` for `node` at `now` (Unix seconds). Tokens expired or
    /// spent are forgotten on the way.
    pub fn spend(&mut self, token: &str, node: &str, now: u64) -> Result<(), Refusal> {
        let wanted = hash(token);
        let found = self.tokens.iter().position(|t| {
            aws_lc_rs::constant_time::verify_slices_are_equal(t.hash.as_bytes(), wanted.as_bytes())
                .is_ok()
        });
        let outcome = match found {
            None => Err(Refusal::Unknown),
            Some(i) => {
                let t = &mut self.tokens[i];
                if t.expires <= now {
                    Err(Refusal::Expired)
                } else if t.uses_left == 0 {
                    Err(Refusal::Unknown)
                } else if t
                    .nodes
                    .as_ref()
                    .is_some_and(|nodes| !nodes.iter().any(|n| n == node))
                {
                    Err(Refusal::NotForNode)
                } else {
                    t.uses_left -= 1;
                    Ok(())
                }
            }
        };
        self.tokens.retain(|t| t.uses_left > 0 && t.expires > now);
        outcome
    }
}

/// Reads and rewrites the tokens of CA folder `dir` under its lock: `change` sees them and
/// says what to return; what it leaves is written back (atomically) if it changed them.
pub fn with_tokens<T>(dir: &Path, change: impl FnOnce(&mut Tokens) -> T) -> anyhow::Result<T> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
        .with_context(|| format!("opening {}", dir.join(LOCK_FILE).display()))?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking the bootstrap tokens: {e}"))?;
    let path = dir.join(TOKENS_FILE);
    let before: Tokens = match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{}: not a bootstrap tokens file", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tokens::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut tokens = before.clone();
    let out = change(&mut tokens);
    if tokens != before {
        let tmp = dir.join(format!("{TOKENS_FILE}.new"));
        let mut f: File = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(&tokens)?.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(out)
}

/// `eastwall ca token`: a new token for `nodes` (none: any node), `uses` enrollments
/// (default: one per node, else 1), accepted for `ttl_secs`; kept in CA folder `dir` as its
/// hash. Returns the token.
pub fn make(
    dir: &Path,
    nodes: Vec<String>,
    uses: Option<u32>,
    ttl_secs: u64,
) -> anyhow::Result<String> {
    super::load_ca(dir)?;
    for n in &nodes {
        super::node_id("check.invalid", n)?;
    }
    let uses = uses.unwrap_or_else(|| u32::try_from(nodes.len()).unwrap_or(u32::MAX).max(1));
    if uses == 0 || ttl_secs == 0 {
        anyhow::bail!("--uses and --ttl-secs must be at least 1");
    }
    let token = new_token()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let entry = TokenEntry {
        hash: hash(&token),
        nodes: (!nodes.is_empty()).then_some(nodes),
        uses_left: uses,
        expires: now.saturating_add(ttl_secs),
    };
    with_tokens(dir, |t| t.tokens.push(entry))?;
    Ok(token)
}

/// A new token: 32 random bytes, hex.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(token: &str, nodes: Option<&[&str]>, uses_left: u32, expires: u64) -> TokenEntry {
        TokenEntry {
            hash: hash(token),
            nodes: nodes.map(|n| n.iter().map(|s| s.to_string()).collect()),
            uses_left,
            expires,
        }
    }

    #[test]
    fn a_token_is_spent_once_per_use_for_its_nodes_until_it_expires() {
        let mut t = Tokens {
            tokens: vec![
                entry("for-a-and-b", Some(&["a", "b"]), 2, 100),
                entry("any", None, 1, 100),
                entry("old", None, 5, 10),
            ],
        };
        assert_eq!(t.spend("for-a-and-b", "c", 50), Err(Refusal::NotForNode));
        assert_eq!(t.spend("for-a-and-b", "a", 50), Ok(()));
        assert_eq!(t.spend("nope", "a", 50), Err(Refusal::Unknown));
        assert_eq!(t.spend("for-a-and-b", "b", 50), Ok(()));
        // Spent: forgotten.
        assert_eq!(t.spend("for-a-and-b", "a", 50), Err(Refusal::Unknown));
        assert_eq!(t.tokens.len(), 1, "{t:?}");
        assert_eq!(t.spend("any", "z", 100), Err(Refusal::Expired));
        assert!(t.tokens.is_empty());
    }

    #[test]
    fn the_file_keeps_hashes_and_changes_under_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let token = new_token().unwrap();
        assert_eq!(token.len(), 64);
        with_tokens(dir.path(), |t| {
            t.tokens.push(entry(&token, Some(&["a"]), 1, u64::MAX))
        })
        .unwrap();
        let text = fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(
            !text.contains(&token) && text.contains(&hash(&token)),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(TOKENS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let spent = with_tokens(dir.path(), |t| t.spend(&token, "a", 1)).unwrap();
        assert_eq!(spent, Ok(()));
        let again = with_tokens(dir.path(), |t| t.spend(&token, "a", 1)).unwrap();
        assert_eq!(again, Err(Refusal::Unknown));
        // A damaged file is an error, not an empty set of tokens.
        fs::write(dir.path().join(TOKENS_FILE), "{").unwrap();
        assert!(with_tokens(dir.path(), |_| ()).is_err());
    }
}
