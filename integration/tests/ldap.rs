//! The LDAP directory and its cache (`eastwall_identity`) against a real OpenLDAP (slapd)
//! started by each test on loopback (`eastwall_lab::slapd`).
//!
//! Skipped, with a message, only when slapd is not installed and CI is not set.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use eastwall_identity::directory::{GroupMembership, Nesting};
use eastwall_identity::{
    CacheConfig, CachedDirectory, DirectoryError, GroupDirectory, Groups, LdapConfig, LdapDirectory,
};
use eastwall_lab::slapd::{ADMIN_DN, BASE, Slapd};

/// A slapd on loopback, or `None` (after saying why) if slapd is not installed and CI is not
/// set. In CI a missing slapd fails the test.
fn slapd() -> Option<Slapd> {
    if !eastwall_lab::slapd::installed() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "slapd is not installed but CI is set: run scripts/setup-debian.sh (Debian packages slapd, ldap-utils)"
        );
        eprintln!(
            "SKIPPED: slapd is not installed (Debian: scripts/setup-debian.sh installs slapd and ldap-utils); set CI=true to make this a failure"
        );
        return None;
    }
    Some(Slapd::start(None, "127.0.0.1".parse().unwrap()).unwrap())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// StartTLS with the test CA, bound as the admin, groups from `memberOf`.
fn starttls_config(s: &Slapd) -> LdapConfig {
    let mut c = LdapConfig::new(s.ldap_url(), format!("ou=people,{BASE}"));
    c.starttls = true;
    c.ca_file = Some(s.ca_file());
    c.bind_dn = Some(ADMIN_DN.to_owned());
    c.bind_password_file = Some(s.admin_password_file().unwrap());
    c.timeout = Duration::from_secs(2);
    c
}

fn by_member_dn() -> GroupMembership {
    GroupMembership::GroupsByMemberDn {
        base: format!("ou=groups,{BASE}"),
        filter: "(objectClass=groupOfNames)".to_owned(),
        attribute: "member".to_owned(),
    }
}

fn by_member_uid() -> GroupMembership {
    GroupMembership::GroupsByMemberName {
        base: format!("ou=posixgroups,{BASE}"),
        filter: "(objectClass=posixGroup)".to_owned(),
        attribute: "memberUid".to_owned(),
    }
}

fn directory(c: LdapConfig) -> LdapDirectory {
    LdapDirectory::new(c, provider()).expect("valid LDAP configuration")
}

fn names(g: &Groups) -> Vec<&str> {
    g.iter().collect()
}

async fn groups_of(d: &impl GroupDirectory, user: &str) -> Vec<String> {
    match d.groups(user).await {
        Ok(g) => g.iter().map(str::to_owned).collect(),
        Err(e) => panic!("groups of {user:?}: {e}"),
    }
}

#[tokio::test]
async fn alice_in_finance_bob_in_hr_over_starttls() {
    let Some(s) = slapd() else { return };
    let d = directory(starttls_config(&s));
    let alice = d.groups("alice").await.unwrap();
    assert_eq!(names(&alice), ["finance"]);
    assert_eq!(alice.dn(), Some("uid=alice,ou=people,dc=example,dc=org"));
    assert_eq!(groups_of(&d, "bob").await, ["hr"]);
    let e = d.groups("mallory").await.unwrap_err();
    assert!(e.is_unknown_user(), "{e}");
}

#[tokio::test]
async fn ldaps_with_the_ca_and_group_search_by_member() {
    let Some(s) = slapd() else { return };
    let mut c = starttls_config(&s);
    c.url = s.ldaps_url();
    c.starttls = false;
    c.membership = by_member_dn();
    let d = directory(c);
    assert_eq!(groups_of(&d, "alice").await, ["finance"]);
    assert_eq!(groups_of(&d, "bob").await, ["hr"]);
}

#[tokio::test]
async fn a_server_with_an_untrusted_certificate_is_refused() {
    let Some(s) = slapd() else { return };
    for (url, starttls) in [(s.ldaps_url(), false), (s.ldap_url(), true)] {
        let mut c = starttls_config(&s);
        c.url = url.clone();
        c.starttls = starttls;
        c.ca_file = Some(s.other_ca_file());
        let e = directory(c.clone()).groups("alice").await.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DirectoryError::Tls { .. }), "{url}: {msg}");
        assert!(msg.contains("invalid peer certificate"), "{msg}");
        assert!(msg.contains(&url), "{msg}");
        assert!(e.is_unavailable());
        eprintln!("{url} with the wrong CA: {msg}");

        // The explicit lab switch accepts it.
        c.ca_file = None;
        c.insecure_skip_verify = true;
        assert_eq!(groups_of(&directory(c), "alice").await, ["finance"]);
    }
}

#[tokio::test]
async fn nested_groups_resolve_with_depth_limit_and_cycles() {
    let Some(s) = slapd() else { return };
    for membership in [
        GroupMembership::MemberOfAttribute {
            attribute: "memberOf".to_owned(),
        },
        by_member_dn(),
    ] {
        let mut c = starttls_config(&s);
        c.membership = membership.clone();
        c.nesting = Nesting::Recursive { max_depth: 8 };
        let d = directory(c.clone());
        assert_eq!(
            groups_of(&d, "alice").await,
            ["everyone", "finance", "staff"],
            "{membership:?}"
        );
        assert_eq!(groups_of(&d, "bob").await, ["everyone", "hr", "staff"]);
        // carol -> loop-a -> loop-b -> loop-a: the cycle ends
        assert_eq!(groups_of(&d, "carol").await, ["loop-a", "loop-b"]);

        c.nesting = Nesting::Recursive { max_depth: 1 };
        let d = directory(c.clone());
        assert_eq!(groups_of(&d, "alice").await, ["finance", "staff"]);
        c.nesting = Nesting::None;
        let d = directory(c.clone());
        assert_eq!(groups_of(&d, "alice").await, ["finance"]);

        // a cap on groups: refused, not truncated
        c.nesting = Nesting::Recursive { max_depth: 8 };
        c.max_groups = 2;
        let e = directory(c).groups("alice").await.unwrap_err();
        assert!(
            matches!(e, DirectoryError::TooManyGroups { limit: 2, .. }),
            "{e}"
        );
    }
}

#[tokio::test]
async fn posix_group_membership_by_member_uid() {
    let Some(s) = slapd() else { return };
    let mut c = starttls_config(&s);
    c.membership = by_member_uid();
    let d = directory(c);
    assert_eq!(groups_of(&d, "alice").await, ["finance"]);
    assert_eq!(groups_of(&d, "bob").await, ["hr"]);
    assert!(groups_of(&d, "carol").await.is_empty());
}

#[tokio::test]
async fn user_names_cannot_inject_filters() {
    let Some(s) = slapd() else { return };
    for membership in [
        GroupMembership::MemberOfAttribute {
            attribute: "memberOf".to_owned(),
        },
        by_member_dn(),
        by_member_uid(),
    ] {
        let mut c = starttls_config(&s);
        c.membership = membership.clone();
        let d = directory(c);
        for hostile in [
            "*",
            "*)(uid=*",
            "alice)(|(uid=*",
            "alice)(uid=bob",
            "al*",
            "alice\\",
            "alice\0",
            "(uid=alice)",
        ] {
            let e = d.groups(hostile).await.unwrap_err();
            assert!(e.is_unknown_user(), "{membership:?} {hostile:?}: {e}");
        }
        // A real user whose name holds metacharacters resolves to exactly its groups.
        let want: &[&str] = match membership {
            GroupMembership::GroupsByMemberName { .. } => &["finance"],
            _ => &["audit"],
        };
        assert_eq!(groups_of(&d, "dave*(x)").await, want, "{membership:?}");
    }
}

#[tokio::test]
async fn large_group_lists_are_paged() {
    let Some(s) = slapd() else { return };
    // 30 more groups for alice; the server returns at most 10 entries per search to anyone
    // but the admin unless the client pages.
    let mut ldif = String::new();
    for i in 0..30 {
        ldif.push_str(&format!(
            "dn: cn=project-{i:02},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: project-{i:02}\nmember: uid=alice,ou=people,{BASE}\n\n"
        ));
    }
    s.ldapadd(&ldif).unwrap();
    let pw = std::env::temp_dir().join(format!("eastwall-alice-{}.pw", s.port));
    std::fs::write(&pw, "alicepw\n").unwrap();
    let mut c = starttls_config(&s);
    c.bind_dn = Some(format!("uid=alice,ou=people,{BASE}"));
    c.bind_password_file = Some(pw.clone());
    c.membership = by_member_dn();
    c.page_size = 7;
    let got = groups_of(&directory(c.clone()), "alice").await;
    assert_eq!(got.len(), 31, "{got:?}");
    assert!(got.contains(&"finance".to_owned()) && got.contains(&"project-29".to_owned()));

    // Without paging the server refuses the same search: the limit is real.
    let out = std::process::Command::new("ldapsearch")
        .args([
            "-x",
            "-H",
            &s.ldap_url(),
            "-D",
            &format!("uid=alice,ou=people,{BASE}"),
            "-w",
            "alicepw",
        ])
        .args([
            "-b",
            &format!("ou=groups,{BASE}"),
            &format!("(member=uid=alice,ou=people,{BASE})"),
            "cn",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Size limit exceeded"), "{text}");

    c.max_groups = 20;
    let e = directory(c).groups("alice").await.unwrap_err();
    assert!(matches!(e, DirectoryError::TooManyGroups { .. }), "{e}");
    let _ = std::fs::remove_file(pw);
}

#[tokio::test]
async fn bad_credentials_and_unreachable_servers_are_unavailable() {
    let Some(s) = slapd() else { return };
    let pw = std::env::temp_dir().join(format!("eastwall-wrong-{}.pw", s.port));
    std::fs::write(&pw, "wrong\n").unwrap();
    let mut c = starttls_config(&s);
    c.bind_password_file = Some(pw.clone());
    let e = directory(c).groups("alice").await.unwrap_err();
    assert!(matches!(e, DirectoryError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("bind as cn=admin"), "{e}");
    let _ = std::fs::remove_file(pw);

    let mut c = starttls_config(&s);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    c.url = format!("ldap://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let start = Instant::now();
    let e = directory(c).groups("alice").await.unwrap_err();
    assert!(e.is_unavailable() && !e.is_unknown_user(), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_server_that_never_answers_is_cut_at_the_timeout() {
    // Needs no slapd: a listener that accepts and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let mut c = LdapConfig::new(format!("ldap://127.0.0.1:{port}"), BASE);
    c.timeout = Duration::from_millis(300);
    let d = directory(c);
    let start = Instant::now();
    let e = d.groups("alice").await.unwrap_err();
    assert!(matches!(e, DirectoryError::Timeout { .. }), "{e}");
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    hold.abort();
}

fn cache_config(refresh_ms: u64, grace_ms: u64, retry_ms: u64) -> CacheConfig {
    CacheConfig {
        refresh: Duration::from_millis(refresh_ms),
        grace: Duration::from_millis(grace_ms),
        retry: Duration::from_millis(retry_ms),
        lookup_timeout: Duration::from_secs(2),
        max_users: 1000,
    }
}

#[tokio::test]
async fn bob_added_to_finance_is_seen_after_the_refresh_interval() {
    let Some(s) = slapd() else { return };
    let cached = CachedDirectory::new(
        directory(starttls_config(&s)),
        cache_config(1000, 10_000, 200),
    );
    assert_eq!(groups_of(&cached, "bob").await, ["hr"]);
    let added = Instant::now();
    s.ldapmodify(&format!(
        "dn: cn=finance,ou=groups,{BASE}\nchangetype: modify\nadd: member\nmember: uid=bob,ou=people,{BASE}\n"
    )).unwrap();
    assert_eq!(groups_of(&cached, "bob").await, ["hr"], "still cached");
    let mut seen = None;
    while added.elapsed() < Duration::from_secs(3) {
        if groups_of(&cached, "bob").await == ["finance", "hr"] {
            seen = Some(added.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.expect("bob in finance within the refresh interval plus a second");
    assert!(seen <= Duration::from_millis(1100), "{seen:?}");

    s.ldapmodify(&format!(
        "dn: cn=finance,ou=groups,{BASE}\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=people,{BASE}\n"
    )).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(groups_of(&cached, "bob").await, ["hr"]);
}

#[tokio::test]
async fn slapd_stopped_serves_cache_within_grace_then_fails_closed_then_recovers() {
    let Some(mut s) = slapd() else { return };
    let cached = CachedDirectory::new(directory(starttls_config(&s)), cache_config(300, 1200, 200));
    assert_eq!(groups_of(&cached, "alice").await, ["finance"]);
    assert!(cached.metrics().up);
    let fetched = Instant::now();
    s.stop();

    tokio::time::sleep(Duration::from_millis(400)).await;
    // past refresh, within grace
    assert_eq!(groups_of(&cached, "alice").await, ["finance"]);
    let m = cached.metrics();
    assert!(!m.up);
    assert!(m.stale_served >= 1 && m.errors >= 1, "{m:?}");

    // past refresh + grace: no groups
    while fetched.elapsed() < Duration::from_millis(1600) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = cached.groups("alice").await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");

    s.restart().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(groups_of(&cached, "alice").await, ["finance"]);
    assert!(cached.metrics().up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_share_one_query_and_latency_is_reported() {
    let Some(s) = slapd() else { return };
    let cached = Arc::new(CachedDirectory::new(
        directory(starttls_config(&s)),
        cache_config(60_000, 60_000, 1000),
    ));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = cached.clone();
            tokio::spawn(async move { c.groups("alice").await })
        })
        .collect();
    for t in tasks {
        assert_eq!(names(&t.await.unwrap().unwrap()), ["finance"]);
    }
    let m = cached.metrics();
    assert_eq!((m.misses, m.hits), (1, 31), "{m:?}");

    // Latency, for the record (printed with --nocapture).
    let uncached = directory(starttls_config(&s));
    let _ = uncached.groups("bob").await; // connect + bind once
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        uncached.groups("bob").await.unwrap();
    }
    let per_uncached = start.elapsed() / n;
    let start = Instant::now();
    for _ in 0..n * 10 {
        cached.groups("alice").await.unwrap();
    }
    let per_cached = start.elapsed() / (n * 10);
    eprintln!(
        "group lookup latency: uncached (LDAP, kept StartTLS connection) {per_uncached:?}, cached {per_cached:?}; first query {:?}",
        m.last_query_latency
    );
}
