//! The LDAP / Active Directory directory (ldap3 over tokio, TLS by rustls).
//!
//! One lookup: bind (once per connection) with the service account, find the user entry with
//! the configured filter, then collect its groups by one of the [`GroupMembership`] modes and
//! follow nested groups as [`Nesting`] says, bounded by a depth, a cap on groups and a timeout.
//!
//! TLS: this crate cannot depend on `eastwall-certs`, where the crypto provider is chosen, so
//! [`LdapDirectory::new`] takes the provider from the caller (the node passes
//! `eastwall_certs::crypto_provider()`) and builds the rustls client configuration itself from
//! the configured CA file. ldap3 is built with its `tls-rustls-aws-lc-rs` feature and always
//! handed that configuration, so neither ring nor OpenSSL nor the system trust store is used.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::asn1::{PL, StructureTag};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, ResultEntry, Scope};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::Mutex;

use super::filter::{
    FilterTemplate, FilterTemplateError, dn_key, escape_filter_value, first_rdn_value,
};
use super::{DirectoryError, GroupDirectory, Groups};

/// The OID of Active Directory's LDAP_MATCHING_RULE_IN_CHAIN (transitive membership).
const IN_CHAIN_RULE: &str = "1.2.840.113556.1.4.1941";
/// How many DNs one nested-group search asks for at once (bounds the filter's size).
const DNS_PER_SEARCH: usize = 64;

/// How to connect and look users and groups up in an LDAP directory.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// With an `ldap://` URL: upgrade the connection with StartTLS before binding.
    pub starttls: bool,
    /// PEM file of the CA certificate(s) the server's certificate must chain to. Required for
    /// TLS unless `insecure_skip_verify`.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (labs only; logs a warning). Off by default.
    pub insecure_skip_verify: bool,
    /// The service account's DN; `None` binds anonymously.
    pub bind_dn: Option<String>,
    /// File holding the service account's password (read at each connect, so it can rotate;
    /// one trailing newline is ignored).
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched (subtree).
    pub user_base: String,
    /// Filter finding one user, with `{user}` replaced by the escaped name: `(uid={user})` for
    /// OpenLDAP, `(sAMAccountName={user})` for Active Directory.
    pub user_filter: String,
    /// How a user's groups are found.
    pub membership: GroupMembership,
    /// Attribute holding a group's name in group entries found by search (`cn`).
    pub group_name_attribute: String,
    /// How groups of groups are followed.
    pub nesting: Nesting,
    /// A user in more groups than this resolves to an error (no groups), never a truncated
    /// list.
    pub max_groups: usize,
    /// Page size of the simple paged results control (RFC 2696) on subtree searches.
    pub page_size: u32,
    /// No lookup (connect, bind, all searches) takes longer than this.
    pub timeout: Duration,
    /// Packet mark (`SO_MARK`) on the connection to the server: the eastwall node puts its own
    /// mark there, so capturing the host's own traffic never takes its directory queries.
    pub socket_mark: Option<u32>,
}

impl LdapConfig {
    /// A configuration with OpenLDAP-shaped defaults: `(uid={user})`, groups from `memberOf`,
    /// names from `cn`, no nesting, at most 1024 groups, pages of 500, 5 s timeout.
    pub fn new(url: impl Into<String>, user_base: impl Into<String>) -> LdapConfig {
        LdapConfig {
            url: url.into(),
            starttls: false,
            ca_file: None,
            insecure_skip_verify: false,
            bind_dn: None,
            bind_password_file: None,
            user_base: user_base.into(),
            user_filter: "(uid={user})".to_owned(),
            membership: GroupMembership::MemberOfAttribute {
                attribute: "memberOf".to_owned(),
            },
            group_name_attribute: "cn".to_owned(),
            nesting: Nesting::None,
            max_groups: 1024,
            page_size: 500,
            timeout: Duration::from_secs(5),
            socket_mark: None,
        }
    }
}

/// How a user's direct groups are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupMembership {
    /// The user entry lists its groups' DNs in `attribute` (`memberOf`: Active Directory,
    /// OpenLDAP's memberof overlay). A group's name is the value of its DN's first RDN
    /// (`cn=finance,ou=groups,...` is `finance`).
    MemberOfAttribute {
        /// The attribute, usually `memberOf`.
        attribute: String,
    },
    /// Group entries under `base` matching `filter` whose `attribute` holds the user's DN
    /// (`member` of groupOfNames, `uniqueMember` of groupOfUniqueNames).
    GroupsByMemberDn {
        /// Where groups are searched (subtree).
        base: String,
        /// Which entries are groups, e.g. `(objectClass=groupOfNames)`.
        filter: String,
        /// The member attribute.
        attribute: String,
    },
    /// Group entries under `base` matching `filter` whose `attribute` holds the user's name
    /// (`memberUid` of posixGroup). Such groups carry no DNs of members, so they do not nest.
    GroupsByMemberName {
        /// Where groups are searched (subtree).
        base: String,
        /// Which entries are groups, e.g. `(objectClass=posixGroup)`.
        filter: String,
        /// The member attribute, usually `memberUid`.
        attribute: String,
    },
}

/// How groups that are members of other groups are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// Direct groups only.
    None,
    /// The client follows parents of groups, up to `max_depth` levels above the direct
    /// groups, visiting each group once (cycles end there).
    Recursive {
        /// Levels of parents followed; 0 is the same as [`Nesting::None`].
        max_depth: u32,
    },
    /// Active Directory resolves nesting on the server with the in-chain matching rule
    /// (`member:1.2.840.113556.1.4.1941:=<user DN>`). Only with
    /// [`GroupMembership::GroupsByMemberDn`]; OpenLDAP does not implement it.
    InChain,
}

/// How the connection to the directory is protected, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Security {
    /// TLS from the first byte (`ldaps://`).
    Ldaps,
    /// `ldap://` upgraded with StartTLS before anything else is sent.
    StartTls,
    /// No TLS: passwords and group names cross the network in the clear.
    Plaintext,
}

/// Why an LDAP configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LdapConfigError {
    /// The URL is not `ldap://` or `ldaps://` with a host.
    #[error("LDAP URL {0:?} must be ldap://host[:port] or ldaps://host[:port]")]
    Url(String),
    /// StartTLS was asked for with an `ldaps://` URL.
    #[error("starttls is for ldap:// URLs; {0} is already TLS")]
    StartTlsWithLdaps(String),
    /// TLS is used but no CA file says whom to trust.
    #[error("TLS to {0} needs a ca_file (or insecure_skip_verify, for labs)")]
    NoCa(String),
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {file}: {reason}")]
    Ca {
        /// The CA file.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bind DN without a password file, or the other way around.
    #[error("bind_dn and bind_password_file go together")]
    BindIncomplete,
    /// The password file could not be read or is empty (an empty password would be an
    /// unauthenticated bind, RFC 4513 5.1.2).
    #[error("password file {file}: {reason}")]
    Password {
        /// The password file.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The user filter is not a template with `{user}`.
    #[error("user_filter: {0}")]
    UserFilter(#[from] FilterTemplateError),
    /// A group filter is not a valid LDAP filter.
    #[error("group filter {0:?} is not a valid LDAP filter (RFC 4515)")]
    GroupFilter(String),
    /// The nesting mode does not work with the membership mode.
    #[error("{0}")]
    Nesting(&'static str),
    /// A number that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The crypto provider could not make a TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A [`super::GroupDirectory`] backed by an LDAP server or Active Directory.
///
/// Keeps one connection (ldap3 multiplexes concurrent requests on it) and reconnects when it
/// breaks. Wrap it in a [`super::CachedDirectory`]: every call here queries the server.
pub struct LdapDirectory {
    config: LdapConfig,
    security: Security,
    user_filter: FilterTemplate,
    tls: Option<Arc<ClientConfig>>,
    conn: Mutex<Option<Ldap>>,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("url", &self.config.url)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl LdapDirectory {
    /// Checks `config`, reads the CA file and builds the TLS configuration with `provider`
    /// (pass `eastwall_certs::crypto_provider()`). Does not connect yet.
    pub fn new(
        config: LdapConfig,
        provider: Arc<CryptoProvider>,
    ) -> Result<LdapDirectory, LdapConfigError> {
        let security = security_of(&config)?;
        let user_filter = FilterTemplate::new(&config.user_filter)?;
        match &config.membership {
            GroupMembership::MemberOfAttribute { .. } => {
                if config.nesting == Nesting::InChain {
                    return Err(LdapConfigError::Nesting(
                        "nesting InChain needs membership GroupsByMemberDn",
                    ));
                }
            }
            GroupMembership::GroupsByMemberDn { filter, .. } => check_filter(filter)?,
            GroupMembership::GroupsByMemberName { filter, .. } => {
                check_filter(filter)?;
                if config.nesting != Nesting::None {
                    return Err(LdapConfigError::Nesting(
                        "groups found by member name (posixGroup) do not nest; use nesting None",
                    ));
                }
            }
        }
        if config.max_groups == 0 {
            return Err(LdapConfigError::Zero("max_groups"));
        }
        if config.page_size == 0 {
            return Err(LdapConfigError::Zero("page_size"));
        }
        if config.timeout.is_zero() {
            return Err(LdapConfigError::Zero("timeout"));
        }
        match (&config.bind_dn, &config.bind_password_file) {
            (Some(_), Some(file)) => {
                read_password(file)?;
            }
            (None, None) => {}
            _ => return Err(LdapConfigError::BindIncomplete),
        }
        let tls = match security {
            Security::Plaintext => {
                if config.bind_dn.is_some() {
                    tracing::warn!(url = %config.url, "LDAP without TLS: the service account's password crosses the network in the clear");
                }
                None
            }
            Security::Ldaps | Security::StartTls => Some(tls_config(&config, provider)?),
        };
        Ok(LdapDirectory {
            config,
            security,
            user_filter,
            tls,
            conn: Mutex::new(None),
        })
    }

    /// How the connection is protected.
    pub fn security(&self) -> Security {
        self.security
    }

    /// The configuration in use.
    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    async fn lookup(&self, user: &str) -> Result<Groups, DirectoryError> {
        let mut ldap = self.connection(false).await?;
        match self.lookup_on(&mut ldap, user).await {
            Err(Failure::Connection(e)) => {
                // The kept connection may have been closed by the server while idle: one retry
                // on a fresh connection.
                tracing::debug!(error = %e, "LDAP connection failed; reconnecting");
                let mut ldap = self.connection(true).await?;
                self.lookup_on(&mut ldap, user)
                    .await
                    .map_err(|f| self.failure(f))
            }
            other => other.map_err(|f| self.failure(f)),
        }
    }

    fn failure(&self, f: Failure) -> DirectoryError {
        match f {
            Failure::Connection(e) | Failure::Ldap(e) => self.ldap_error(e),
            Failure::Answer(e) => e,
        }
    }

    /// The kept connection, or a new one (also when `fresh`).
    async fn connection(&self, fresh: bool) -> Result<Ldap, DirectoryError> {
        let mut slot = self.conn.lock().await;
        if !fresh
            && let Some(ldap) = slot.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        *slot = None;
        let ldap = self.connect().await?;
        *slot = Some(ldap.clone());
        Ok(ldap)
    }

    /// Checks `password` for `user`: the service account finds the user's entry and groups,
    /// then a connection of its own binds as that entry with the password (the kept
    /// connection is never re-bound). `Ok(None)`: no such user, or the directory refused the
    /// password (callers say the same for both). An empty password is refused without asking:
    /// a simple bind with one is unauthenticated and succeeds (RFC 4513, 5.1.2).
    pub async fn verify_password(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<Groups>, DirectoryError> {
        if password.is_empty() {
            return Ok(None);
        }
        let groups = match self.groups(user).await {
            Ok(g) => g,
            Err(e) if e.is_unknown_user() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(dn) = groups.dn().map(str::to_owned) else {
            return Err(DirectoryError::InvalidResponse {
                reason: format!("the entry of {user:?} has no name"),
            });
        };
        let bind = async {
            let mut ldap = self.open().await?;
            let answer = ldap
                .simple_bind(&dn, password)
                .await
                .map_err(|e| self.ldap_error(e))?;
            let _ = ldap.unbind().await;
            Ok::<_, DirectoryError>(answer)
        };
        let answer = tokio::time::timeout(self.config.timeout, bind)
            .await
            .map_err(|_| DirectoryError::Timeout {
                after: self.config.timeout,
            })??;
        match answer.rc {
            0 => Ok(Some(groups)),
            // invalidCredentials (also a locked or expired account in Active Directory).
            49 => Ok(None),
            rc => Err(DirectoryError::Unavailable {
                reason: format!(
                    "bind as {dn} answered {rc} ({})",
                    answer.text.chars().take(200).collect::<String>()
                ),
            }),
        }
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut ldap = self.open().await?;
        if let (Some(dn), Some(file)) = (&self.config.bind_dn, &self.config.bind_password_file) {
            let password = read_password(file).map_err(|e| DirectoryError::Unavailable {
                reason: e.to_string(),
            })?;
            ldap.simple_bind(dn, &password)
                .await
                .and_then(|r| r.success())
                .map_err(|e| DirectoryError::Unavailable {
                    reason: format!("bind as {dn} to {} failed: {e}", self.config.url),
                })?;
        }
        Ok(ldap)
    }

    /// A new connection (TLS as configured), not bound.
    async fn open(&self) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.timeout)
            .set_starttls(self.security == Security::StartTls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        // Our own socket: TCP_NODELAY (LDAP's small request/response exchanges, StartTLS
        // and bind among them, otherwise wait on delayed ACKs: ~50 ms per new connection
        // measured here) and the optional mark.
        let stream = tcp_connect(
            &self.config.url,
            self.config.socket_mark,
            self.config.timeout,
        )
        .await
        .map_err(|e| DirectoryError::Unavailable {
            reason: format!("connecting to {}: {e}", self.config.url),
        })?;
        settings = settings.set_std_stream(ldap3::StdStream::Tcp(stream));
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|e| self.ldap_error(e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        Ok(ldap)
    }

    /// The lookup proper, on one connection.
    async fn lookup_on(&self, ldap: &mut Ldap, user: &str) -> Result<Groups, Failure> {
        let member_of = match &self.config.membership {
            GroupMembership::MemberOfAttribute { attribute } => Some(attribute.as_str()),
            _ => None,
        };
        let attrs: Vec<&str> = member_of.map_or_else(|| vec!["1.1"], |a| vec![a]);
        let filter = self.user_filter.render(user);
        let users = self
            .search(
                ldap,
                &self.config.user_base,
                Scope::Subtree,
                &filter,
                &attrs,
                2,
            )
            .await?;
        let entry = match users.as_slice() {
            [] => {
                return Err(Failure::Answer(DirectoryError::UnknownUser {
                    user: user.to_owned(),
                }));
            }
            [one] => one,
            _ => {
                return Err(Failure::Answer(DirectoryError::InvalidResponse {
                    reason: format!(
                        "several entries match {filter} under {}",
                        self.config.user_base
                    ),
                }));
            }
        };
        let user_dn = entry.dn.clone();
        let mut found = Found::new(self.config.max_groups, user);
        match &self.config.membership {
            GroupMembership::MemberOfAttribute { attribute } => {
                let dns = entry.values(attribute).to_vec();
                for dn in &dns {
                    found.add_dn(dn, None)?;
                }
                if let Nesting::Recursive { max_depth } = self.config.nesting {
                    let mut frontier = dns;
                    for _ in 0..max_depth {
                        let mut next = Vec::new();
                        for group in &frontier {
                            let parents = self
                                .search(
                                    ldap,
                                    group,
                                    Scope::Base,
                                    "(objectClass=*)",
                                    &[attribute.as_str()],
                                    1,
                                )
                                .await?;
                            for parent in parents.iter().flat_map(|p| p.values(attribute)) {
                                if found.add_dn(parent, None)? {
                                    next.push(parent.clone());
                                }
                            }
                        }
                        if next.is_empty() {
                            break;
                        }
                        frontier = next;
                    }
                }
            }
            GroupMembership::GroupsByMemberDn {
                base,
                filter,
                attribute,
            } => {
                let escaped = escape_filter_value(&user_dn);
                let member = if self.config.nesting == Nesting::InChain {
                    format!("({attribute}:{IN_CHAIN_RULE}:={escaped})")
                } else {
                    format!("({attribute}={escaped})")
                };
                let mut frontier = self
                    .group_search(ldap, base, filter, &member, &mut found)
                    .await?;
                if let Nesting::Recursive { max_depth } = self.config.nesting {
                    for _ in 0..max_depth {
                        let mut next = Vec::new();
                        for chunk in frontier.chunks(DNS_PER_SEARCH) {
                            let any: String = chunk
                                .iter()
                                .map(|dn| format!("({attribute}={})", escape_filter_value(dn)))
                                .collect();
                            let member = format!("(|{any})");
                            next.extend(
                                self.group_search(ldap, base, filter, &member, &mut found)
                                    .await?,
                            );
                        }
                        if next.is_empty() {
                            break;
                        }
                        frontier = next;
                    }
                }
            }
            GroupMembership::GroupsByMemberName {
                base,
                filter,
                attribute,
            } => {
                let member = format!("({attribute}={})", escape_filter_value(user));
                self.group_search(ldap, base, filter, &member, &mut found)
                    .await?;
            }
        }
        Ok(Groups::new(found.names, Some(user_dn)))
    }

    /// Searches groups matching `filter` and `member`, adds them to `found`, and returns the
    /// DNs of those not seen before.
    async fn group_search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        member: &str,
        found: &mut Found,
    ) -> Result<Vec<String>, Failure> {
        let full = format!("(&{}{member})", parenthesized(filter));
        let name_attr = self.config.group_name_attribute.as_str();
        let groups = self
            .search(
                ldap,
                base,
                Scope::Subtree,
                &full,
                &[name_attr],
                found.room() + 1,
            )
            .await?;
        let mut new = Vec::new();
        for g in &groups {
            let name = g.values(name_attr).first().cloned();
            if found.add_dn(&g.dn, name)? {
                new.push(g.dn.clone());
            }
        }
        Ok(new)
    }

    /// A search, paged on subtrees, returning at most `limit` entries (more is an error:
    /// [`DirectoryError::TooManyGroups`] is reported by the caller's count, so here it is
    /// `InvalidResponse` only for the user search).
    async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
    ) -> Result<Vec<Entry>, Failure> {
        let attrs: Vec<String> = attrs.iter().map(|a| (*a).to_owned()).collect();
        let mut adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> =
            vec![Box::new(EntriesOnly::new())];
        if scope != Scope::Base {
            let page = i32::try_from(self.config.page_size).unwrap_or(i32::MAX);
            adapters.push(Box::new(PagedResults::new(page)));
        }
        let mut stream = ldap
            .streaming_search_with(adapters, base, scope, filter, attrs)
            .await
            .map_err(classify)?;
        let mut entries = Vec::new();
        loop {
            let next = stream.next().await.map_err(classify)?;
            let Some(raw) = next else { break };
            let entry = Entry::parse(raw).ok_or_else(|| {
                Failure::Answer(DirectoryError::InvalidResponse {
                    reason: format!("malformed entry in the answer to {filter}"),
                })
            })?;
            entries.push(entry);
            if entries.len() > limit {
                // Enough to know the answer is too big: stop the server's work.
                let handle = stream.ldap_handle();
                let id = handle.last_id();
                let _ = handle.abandon(id).await;
                return Ok(entries);
            }
        }
        let result = stream.finish().await;
        match result.rc {
            0 => Ok(entries),
            // noSuchObject: the base does not exist, so nothing matches under it.
            32 => Ok(entries),
            _ => Err(Failure::Ldap(LdapError::from(result))),
        }
    }

    fn ldap_error(&self, e: LdapError) -> DirectoryError {
        if let Some(tls) = tls_cause(&e) {
            let hint = match tls {
                rustls::Error::InvalidCertificate(_) => {
                    " (is ca_file the CA that signed the directory's certificate, and does the certificate name the host in the URL?)"
                }
                _ => "",
            };
            return DirectoryError::Tls {
                url: self.config.url.clone(),
                reason: format!("{tls}{hint}"),
            };
        }
        match e {
            LdapError::Timeout { .. } => DirectoryError::Timeout {
                after: self.config.timeout,
            },
            e => DirectoryError::Unavailable {
                reason: format!("{}: {e}", self.config.url),
            },
        }
    }
}

impl GroupDirectory for LdapDirectory {
    async fn groups(&self, user: &str) -> Result<Groups, DirectoryError> {
        match tokio::time::timeout(self.config.timeout, self.lookup(user)).await {
            Ok(r) => r,
            Err(_) => {
                // The connection may be stuck mid-operation: do not reuse it.
                if let Ok(mut slot) = self.conn.try_lock() {
                    *slot = None;
                }
                Err(DirectoryError::Timeout {
                    after: self.config.timeout,
                })
            }
        }
    }
}

/// Why a lookup on one connection failed.
enum Failure {
    /// The connection broke (worth one retry on a new connection).
    Connection(LdapError),
    /// The server answered with an error.
    Ldap(LdapError),
    /// A definite answer (unknown user) or an unusable one.
    Answer(DirectoryError),
}

fn classify(e: LdapError) -> Failure {
    match e {
        LdapError::Io { .. }
        | LdapError::OpSend { .. }
        | LdapError::ResultRecv { .. }
        | LdapError::IdScrubSend { .. }
        | LdapError::EndOfStream => Failure::Connection(e),
        e => Failure::Ldap(e),
    }
}

/// The rustls error under an ldap3 error, if TLS is what failed.
fn tls_cause(e: &LdapError) -> Option<&rustls::Error> {
    let LdapError::Io { source } = e else {
        return None;
    };
    source.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The groups collected so far, bounded.
struct Found {
    names: BTreeSet<String>,
    seen: HashSet<String>,
    limit: usize,
    user: String,
}

impl Found {
    fn new(limit: usize, user: &str) -> Found {
        Found {
            names: BTreeSet::new(),
            seen: HashSet::new(),
            limit,
            user: user.to_owned(),
        }
    }

    /// Adds the group `dn` (named `name`, or by its first RDN). Returns whether it is new.
    fn add_dn(&mut self, dn: &str, name: Option<String>) -> Result<bool, Failure> {
        if !self.seen.insert(dn_key(dn)) {
            return Ok(false);
        }
        if self.seen.len() > self.limit {
            return Err(Failure::Answer(DirectoryError::TooManyGroups {
                user: self.user.clone(),
                limit: self.limit,
            }));
        }
        match name.or_else(|| first_rdn_value(dn)) {
            Some(name) => {
                self.names.insert(name);
            }
            None => tracing::debug!(dn, "group without a usable name skipped"),
        }
        Ok(true)
    }

    /// How many more groups fit under the cap.
    fn room(&self) -> usize {
        self.limit.saturating_sub(self.seen.len())
    }
}

/// One search result entry: its DN and text attributes.
#[derive(Debug)]
struct Entry {
    dn: String,
    attrs: Vec<(String, Vec<String>)>,
}

impl Entry {
    /// Reads a SearchResultEntry without trusting its shape (ldap3's `SearchEntry::construct`
    /// panics on malformed input). Values that are not UTF-8 are skipped.
    fn parse(raw: ResultEntry) -> Option<Entry> {
        let mut parts = constructed(raw.0.match_id(4)?)?.into_iter();
        let dn = String::from_utf8(primitive(parts.next()?)?).ok()?;
        let mut attrs = Vec::new();
        if let Some(list) = parts.next() {
            for pa in constructed(list)? {
                let mut pa = constructed(pa)?.into_iter();
                let name = String::from_utf8(primitive(pa.next()?)?).ok()?;
                let values = match pa.next() {
                    Some(set) => constructed(set)?
                        .into_iter()
                        .filter_map(|v| String::from_utf8(primitive(v)?).ok())
                        .collect(),
                    None => Vec::new(),
                };
                attrs.push((name, values));
            }
        }
        Some(Entry { dn, attrs })
    }

    /// The values of `attr` (case-insensitive name).
    fn values(&self, attr: &str) -> &[String] {
        self.attrs
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(attr))
            .map_or(&[], |(_, v)| v.as_slice())
    }
}

fn constructed(t: StructureTag) -> Option<Vec<StructureTag>> {
    match t.payload {
        PL::C(v) => Some(v),
        PL::P(_) => None,
    }
}

fn primitive(t: StructureTag) -> Option<Vec<u8>> {
    match t.payload {
        PL::P(v) => Some(v),
        PL::C(_) => None,
    }
}

fn parenthesized(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_owned()
    } else {
        format!("({f})")
    }
}

fn check_filter(filter: &str) -> Result<(), LdapConfigError> {
    if ldap3::parse_filter(parenthesized(filter)).is_err() {
        return Err(LdapConfigError::GroupFilter(filter.to_owned()));
    }
    Ok(())
}

fn security_of(config: &LdapConfig) -> Result<Security, LdapConfigError> {
    let url = config.url.as_str();
    let rest = if let Some(rest) = url.strip_prefix("ldaps://") {
        if config.starttls {
            return Err(LdapConfigError::StartTlsWithLdaps(url.to_owned()));
        }
        (rest, Security::Ldaps)
    } else if let Some(rest) = url.strip_prefix("ldap://") {
        let s = if config.starttls {
            Security::StartTls
        } else {
            Security::Plaintext
        };
        (rest, s)
    } else {
        return Err(LdapConfigError::Url(url.to_owned()));
    };
    let host = rest.0.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(LdapConfigError::Url(url.to_owned()));
    }
    Ok(rest.1)
}

/// `host` and `port` of an `ldap://` or `ldaps://` URL (ports default to 389 and 636).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "ldap" => 389,
        "ldaps" => 636,
        _ => return None,
    };
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Connects to the server of `url`, with `TCP_NODELAY` and `mark` (if any) on the socket,
/// within `timeout`.
async fn tcp_connect(
    url: &str,
    mark: Option<u32>,
    timeout: Duration,
) -> std::io::Result<std::net::TcpStream> {
    use std::io::{Error, ErrorKind};
    let (host, port) =
        host_port(url).ok_or_else(|| Error::new(ErrorKind::InvalidInput, "unusable LDAP URL"))?;
    let connect = async {
        let mut last = Error::new(ErrorKind::NotFound, format!("{host} has no address"));
        for addr in tokio::net::lookup_host((host.as_str(), port)).await? {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            if let Some(mark) = mark {
                s.set_mark(mark)?;
            }
            s.set_tcp_nodelay(true)?;
            s.set_nonblocking(true)?;
            match tokio::net::TcpSocket::from_std_stream(s.into())
                .connect(addr)
                .await
            {
                Ok(stream) => return stream.into_std(),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, "connect timed out"))?
}

fn read_password(file: &PathBuf) -> Result<String, LdapConfigError> {
    let err = |reason: String| LdapConfigError::Password {
        file: file.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let password = text
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(err("empty password".to_owned()));
    }
    Ok(password.to_owned())
}

fn tls_config(
    config: &LdapConfig,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ClientConfig>, LdapConfigError> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapConfigError::Tls(e.to_string()))?;
    let tls = if config.insecure_skip_verify {
        tracing::warn!(url = %config.url, "insecure_skip_verify: the LDAP server's certificate is NOT verified; anyone on the path can impersonate the directory");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
            .with_no_client_auth()
    } else {
        let Some(file) = &config.ca_file else {
            return Err(LdapConfigError::NoCa(config.url.clone()));
        };
        let ca_err = |reason: String| LdapConfigError::Ca {
            file: file.display().to_string(),
            reason,
        };
        let pem = std::fs::read(file).map_err(|e| ca_err(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ca_err(format!("not PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ca_err(format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ca_err("holds no certificate".to_owned()));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(tls))
}

/// The verifier behind `insecure_skip_verify`: accepts any certificate, but still checks that
/// the server holds its key (handshake signatures), as rustls requires of a verifier.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    #[test]
    fn host_and_port_of_urls() {
        let hp = host_port;
        assert_eq!(hp("ldap://10.0.0.1"), Some(("10.0.0.1".into(), 389)));
        assert_eq!(
            hp("ldaps://dc1.corp.example/"),
            Some(("dc1.corp.example".into(), 636))
        );
        assert_eq!(
            hp("ldap://[fd00::1]:3890/x"),
            Some(("fd00::1".into(), 3890))
        );
        assert_eq!(hp("ldaps://[fd00::1]"), Some(("fd00::1".into(), 636)));
        assert_eq!(hp("http://x"), None);
        assert_eq!(hp("ldap://:389"), None);
        assert_eq!(hp("ldap://x:notaport"), None);
    }

    #[test]
    fn security_follows_the_url() {
        let mut c = LdapConfig::new("ldap://127.0.0.1:389", "dc=x");
        assert_eq!(
            LdapDirectory::new(c.clone(), provider())
                .unwrap()
                .security(),
            Security::Plaintext
        );
        c.starttls = true;
        assert!(matches!(
            LdapDirectory::new(c.clone(), provider()),
            Err(LdapConfigError::NoCa(_))
        ));
        c.insecure_skip_verify = true;
        assert_eq!(
            LdapDirectory::new(c.clone(), provider())
                .unwrap()
                .security(),
            Security::StartTls
        );
        c.url = "ldaps://ldap.example.org".into();
        assert!(matches!(
            LdapDirectory::new(c.clone(), provider()),
            Err(LdapConfigError::StartTlsWithLdaps(_))
        ));
        c.starttls = false;
        assert_eq!(
            LdapDirectory::new(c.clone(), provider())
                .unwrap()
                .security(),
            Security::Ldaps
        );
        for bad in ["http://x", "ldap://", "ldaps://:636", "x"] {
            c.url = bad.into();
            assert!(
                matches!(
                    LdapDirectory::new(c.clone(), provider()),
                    Err(LdapConfigError::Url(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_bad_configurations() {
        let base = LdapConfig::new("ldap://127.0.0.1:389", "dc=x");
        let mut c = base.clone();
        c.user_filter = "(uid=alice)".into();
        assert!(matches!(
            LdapDirectory::new(c, provider()),
            Err(LdapConfigError::UserFilter(_))
        ));
        let mut c = base.clone();
        c.nesting = Nesting::InChain;
        assert!(matches!(
            LdapDirectory::new(c, provider()),
            Err(LdapConfigError::Nesting(_))
        ));
        let mut c = base.clone();
        c.membership = GroupMembership::GroupsByMemberName {
            base: "dc=x".into(),
            filter: "(objectClass=posixGroup)".into(),
            attribute: "memberUid".into(),
        };
        c.nesting = Nesting::Recursive { max_depth: 3 };
        assert!(matches!(
            LdapDirectory::new(c, provider()),
            Err(LdapConfigError::Nesting(_))
        ));
        let mut c = base.clone();
        c.membership = GroupMembership::GroupsByMemberDn {
            base: "dc=x".into(),
            filter: "(objectClass=groupOfNames".into(),
            attribute: "member".into(),
        };
        assert!(matches!(
            LdapDirectory::new(c, provider()),
            Err(LdapConfigError::GroupFilter(_))
        ));
        let mut c = base.clone();
        c.bind_dn = Some("cn=admin".into());
        assert!(matches!(
            LdapDirectory::new(c, provider()),
            Err(LdapConfigError::BindIncomplete)
        ));
        let mut c = base.clone();
        c.max_groups = 0;
        assert!(matches!(
            LdapDirectory::new(c, provider()),
            Err(LdapConfigError::Zero("max_groups"))
        ));

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("pw");
        std::fs::write(&empty, "\n").unwrap();
        let mut c = base.clone();
        c.bind_dn = Some("cn=admin".into());
        c.bind_password_file = Some(empty);
        let e = LdapDirectory::new(c, provider()).unwrap_err();
        assert!(e.to_string().contains("empty password"), "{e}");

        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let mut c = base.clone();
        c.starttls = true;
        c.ca_file = Some(not_pem);
        let e = LdapDirectory::new(c, provider()).unwrap_err();
        assert!(e.to_string().contains("holds no certificate"), "{e}");
    }

    #[test]
    fn reads_passwords_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        for (text, want) in [
            ("secret\n", "secret"),
            ("secret\r\n", "secret"),
            ("secret", "secret"),
            (" s p \n", " s p "),
        ] {
            std::fs::write(&f, text).unwrap();
            assert_eq!(read_password(&f).unwrap(), want);
        }
    }

    #[test]
    fn found_is_bounded_and_skips_repeats() {
        let mut f = Found::new(2, "alice");
        assert!(f.add_dn("cn=a,dc=x", None).ok().unwrap());
        assert!(!f.add_dn("CN=A, dc=x", None).ok().unwrap());
        assert!(f.add_dn("cn=b,dc=x", Some("bee".into())).ok().unwrap());
        assert!(matches!(
            f.add_dn("cn=c,dc=x", None),
            Err(Failure::Answer(DirectoryError::TooManyGroups {
                limit: 2,
                ..
            }))
        ));
        assert_eq!(f.names.iter().collect::<Vec<_>>(), ["a", "bee"]);
    }

    #[test]
    fn malformed_entries_are_refused_not_panicked_on() {
        use ldap3::asn1::TagClass;
        let prim = |id, v: &[u8]| StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(v.to_vec()),
        };
        let cons = |id, v: Vec<StructureTag>| StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::C(v),
        };
        let app = |v: Vec<StructureTag>| StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(v),
        };
        let bad = [
            app(vec![]),
            app(vec![cons(4, vec![])]),
            app(vec![prim(4, b"\xff")]),
            app(vec![prim(4, b"cn=x"), prim(16, b"")]),
            app(vec![prim(4, b"cn=x"), cons(16, vec![prim(16, b"")])]),
            StructureTag {
                class: TagClass::Application,
                id: 4,
                payload: PL::P(vec![]),
            },
        ];
        for t in bad {
            assert!(Entry::parse(ResultEntry::new(t.clone())).is_none(), "{t:?}");
        }
        let good = app(vec![
            prim(4, b"uid=alice,dc=x"),
            cons(
                16,
                vec![cons(
                    16,
                    vec![
                        prim(4, b"memberOf"),
                        cons(17, vec![prim(4, b"cn=finance,dc=x"), prim(4, b"\xff")]),
                    ],
                )],
            ),
        ]);
        let e = Entry::parse(ResultEntry::new(good)).unwrap();
        assert_eq!(e.dn, "uid=alice,dc=x");
        assert_eq!(e.values("MEMBEROF"), ["cn=finance,dc=x"]);
        assert!(e.values("cn").is_empty());
    }
}
