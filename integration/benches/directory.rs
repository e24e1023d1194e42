//! Group-lookup latency against a real OpenLDAP (slapd on loopback, StartTLS, bound as a
//! service account, groups from `memberOf`): what a connection waits for its user's groups.
//!
//! - `uncached, kept connection`: a directory query on the directory's open connection (what
//!   a cache miss costs while the directory is up);
//! - `uncached, new connection`: connect, StartTLS, bind, then the query (the first lookup,
//!   or one after the connection dropped);
//! - `cached`: an answer from the cache (every lookup within the refresh interval).
//!
//! `cargo bench -p eastwall-integration --bench directory` (needs slapd: scripts/setup-debian.sh).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use eastwall_identity::{CacheConfig, CachedDirectory, GroupDirectory, LdapConfig, LdapDirectory};
use eastwall_lab::slapd::{ADMIN_DN, BASE, Slapd};

fn config(s: &Slapd) -> LdapConfig {
    let mut c = LdapConfig::new(s.ldap_url(), format!("ou=people,{BASE}"));
    c.starttls = true;
    c.ca_file = Some(s.ca_file());
    c.bind_dn = Some(ADMIN_DN.to_owned());
    c.bind_password_file = Some(s.admin_password_file().unwrap());
    c.timeout = Duration::from_secs(2);
    c
}

fn directory(s: &Slapd) -> LdapDirectory {
    LdapDirectory::new(config(s), eastwall_certs::crypto_provider()).unwrap()
}

fn lookups(c: &mut Criterion) {
    if !eastwall_lab::slapd::installed() {
        eprintln!("slapd is not installed (scripts/setup-debian.sh); nothing to measure");
        return;
    }
    let slapd = Slapd::start(None, "127.0.0.1".parse().unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("group lookup");
    g.sample_size(30);

    let kept = rt.block_on(async {
        let d = directory(&slapd);
        assert!(d.groups("alice").await.unwrap().names().contains("finance"));
        d
    });
    g.bench_function("uncached, kept connection", |b| {
        b.iter(|| rt.block_on(kept.groups("alice")).unwrap())
    });
    g.bench_function("uncached, new connection (StartTLS + bind + query)", |b| {
        b.iter(|| rt.block_on(directory(&slapd).groups("alice")).unwrap())
    });
    let cached = Arc::new(CachedDirectory::new(
        directory(&slapd),
        CacheConfig {
            refresh: Duration::from_secs(3600),
            ..CacheConfig::default()
        },
    ));
    rt.block_on(cached.groups("alice")).unwrap();
    g.bench_function("cached", |b| {
        b.iter(|| rt.block_on(cached.groups("alice")).unwrap())
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
