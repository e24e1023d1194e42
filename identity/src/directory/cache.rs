//! A cache in front of a directory (moka): answers for a refresh interval, one query in flight
//! per user, and a bounded stale grace when the directory fails.
//!
//! For each user:
//! - a definite answer (groups, or "unknown user") is served for `refresh`;
//! - after that the next caller queries again; callers arriving meanwhile wait for that same
//!   query (moka coalesces), callers for other users are not held up; no caller waits longer
//!   than `lookup_timeout`;
//! - if the query fails while the last definite answer is younger than `refresh + grace`,
//!   that answer is served, and the query is retried after `retry`;
//! - past that, the user resolves to the error (no groups: fail closed) until the directory
//!   answers again (at most `retry` after it is back).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::{DirectoryError, GroupDirectory, Groups};

/// Timing and size of a [`CachedDirectory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long a definite answer is served before the directory is asked again.
    pub refresh: Duration,
    /// How long past `refresh` the last definite answer is still served while the directory
    /// fails. After it, the user is in no group.
    pub grace: Duration,
    /// After a failed query, how long before the directory is asked again for that user.
    pub retry: Duration,
    /// No caller waits longer than this for the directory.
    pub lookup_timeout: Duration,
    /// Most users kept (least recently used ones are dropped beyond it).
    pub max_users: u64,
}

impl Default for CacheConfig {
    /// Refresh 60 s, grace 10 min, retry 5 s, lookup timeout 5 s, 100 000 users.
    fn default() -> CacheConfig {
        CacheConfig {
            refresh: Duration::from_secs(60),
            grace: Duration::from_secs(600),
            retry: Duration::from_secs(5),
            lookup_timeout: Duration::from_secs(5),
            max_users: 100_000,
        }
    }
}

/// Counters and gauges of a [`CachedDirectory`], updated lock-free; the node exports them.
#[derive(Debug, Default)]
pub struct DirectoryMetrics {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    stale_served: AtomicU64,
    up: AtomicBool,
    last_query_latency_us: AtomicU64,
}

impl DirectoryMetrics {
    /// Lookups answered from the cache (including callers that waited on another's query).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that queried the directory.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Directory queries that failed (unavailable, timeout, TLS, bad answer).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Failed queries answered with the last definite answer, within the grace.
    pub fn stale_served(&self) -> u64 {
        self.stale_served.load(Ordering::Relaxed)
    }

    /// Whether the last directory query got a definite answer (false before any query).
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// How long the last directory query took.
    pub fn last_query_latency(&self) -> Duration {
        Duration::from_micros(self.last_query_latency_us.load(Ordering::Relaxed))
    }
}

/// A point-in-time copy of the metrics, with the age of the oldest cached answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// See [`DirectoryMetrics::hits`].
    pub hits: u64,
    /// See [`DirectoryMetrics::misses`].
    pub misses: u64,
    /// See [`DirectoryMetrics::errors`].
    pub errors: u64,
    /// See [`DirectoryMetrics::stale_served`].
    pub stale_served: u64,
    /// See [`DirectoryMetrics::up`].
    pub up: bool,
    /// See [`DirectoryMetrics::last_query_latency`].
    pub last_query_latency: Duration,
    /// Age of the oldest definite answer kept (`None` if none is).
    pub oldest_entry_age: Option<Duration>,
    /// How many users have a definite answer kept.
    pub entries: u64,
}

/// What callers for one user are given until it expires.
#[derive(Debug)]
struct Answer {
    outcome: Result<Groups, DirectoryError>,
    ttl: Duration,
}

/// The last definite answer for a user, and when it was received.
#[derive(Debug)]
struct Definite {
    outcome: Result<Groups, DirectoryError>,
    at: Instant,
}

struct AnswerExpiry;

impl Expiry<String, Arc<Answer>> for AnswerExpiry {
    fn expire_after_create(&self, _: &String, value: &Arc<Answer>, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Arc<Answer>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A [`GroupDirectory`] that caches another one; see the module documentation.
pub struct CachedDirectory<D> {
    directory: D,
    config: CacheConfig,
    /// What callers get now; entries expire after their own `ttl`.
    answers: Cache<String, Arc<Answer>>,
    /// Last definite answers, kept for `refresh + grace`.
    definite: Cache<String, Arc<Definite>>,
    metrics: Arc<DirectoryMetrics>,
}

impl<D: std::fmt::Debug> std::fmt::Debug for CachedDirectory<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDirectory")
            .field("directory", &self.directory)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<D: GroupDirectory> CachedDirectory<D> {
    /// Caches `directory` as `config` says.
    pub fn new(directory: D, config: CacheConfig) -> CachedDirectory<D> {
        let answers = Cache::builder()
            .max_capacity(config.max_users)
            .expire_after(AnswerExpiry)
            .build();
        let definite = Cache::builder()
            .max_capacity(config.max_users)
            .time_to_live(config.refresh.saturating_add(config.grace))
            .build();
        CachedDirectory {
            directory,
            config,
            answers,
            definite,
            metrics: Arc::default(),
        }
    }

    /// The metrics, shared (for an exporter that outlives a borrow).
    pub fn metrics_handle(&self) -> Arc<DirectoryMetrics> {
        self.metrics.clone()
    }

    /// The metrics now, with the age of the oldest kept answer.
    pub fn metrics(&self) -> MetricsSnapshot {
        let m = &self.metrics;
        let max_age = self.config.refresh.saturating_add(self.config.grace);
        let mut entries = 0;
        let mut oldest: Option<Duration> = None;
        for (_, d) in self.definite.iter() {
            let age = d.at.elapsed();
            if age > max_age {
                continue; // expired, not yet evicted
            }
            entries += 1;
            oldest = Some(oldest.map_or(age, |o| o.max(age)));
        }
        MetricsSnapshot {
            hits: m.hits(),
            misses: m.misses(),
            errors: m.errors(),
            stale_served: m.stale_served(),
            up: m.up(),
            last_query_latency: m.last_query_latency(),
            oldest_entry_age: oldest,
            entries,
        }
    }

    /// The cached directory.
    pub fn inner(&self) -> &D {
        &self.directory
    }

    /// Forgets what is cached for `user`: the next lookup queries the directory.
    pub async fn invalidate(&self, user: &str) {
        self.answers.invalidate(user).await;
        self.definite.invalidate(user).await;
    }

    async fn query(&self, user: &str) -> Arc<Answer> {
        let m = &self.metrics;
        m.misses.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let result = tokio::time::timeout(self.config.lookup_timeout, self.directory.groups(user))
            .await
            .unwrap_or(Err(DirectoryError::Timeout {
                after: self.config.lookup_timeout,
            }));
        let latency = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        m.last_query_latency_us.store(latency, Ordering::Relaxed);
        match result {
            Err(e) if e.is_unavailable() => {
                m.up.store(false, Ordering::Relaxed);
                m.errors.fetch_add(1, Ordering::Relaxed);
                let limit = self.config.refresh.saturating_add(self.config.grace);
                if let Some(last) = self.definite.get(user).await {
                    let age = last.at.elapsed();
                    if age < limit {
                        m.stale_served.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(user, error = %e, age = ?age, "directory failed; serving the last answer within the grace");
                        return Arc::new(Answer {
                            outcome: last.outcome.clone(),
                            ttl: self.config.retry.min(limit - age),
                        });
                    }
                }
                tracing::warn!(user, error = %e, "directory failed; the user is in no group");
                Arc::new(Answer {
                    outcome: Err(e),
                    ttl: self.config.retry,
                })
            }
            outcome => {
                m.up.store(true, Ordering::Relaxed);
                self.definite
                    .insert(
                        user.to_owned(),
                        Arc::new(Definite {
                            outcome: outcome.clone(),
                            at: Instant::now(),
                        }),
                    )
                    .await;
                Arc::new(Answer {
                    outcome,
                    ttl: self.config.refresh,
                })
            }
        }
    }
}

impl<D: GroupDirectory> GroupDirectory for CachedDirectory<D> {
    async fn groups(&self, user: &str) -> Result<Groups, DirectoryError> {
        let entry = self
            .answers
            .entry_by_ref(user)
            .or_insert_with(self.query(user))
            .await;
        if !entry.is_fresh() {
            self.metrics.hits.fetch_add(1, Ordering::Relaxed);
        }
        entry.into_value().outcome.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A directory whose answers the test sets, counting queries.
    #[derive(Default)]
    struct Scripted {
        groups: Mutex<Vec<(String, Vec<String>)>>,
        down: AtomicBool,
        delay: Mutex<Duration>,
        queries: AtomicUsize,
    }

    impl Scripted {
        fn set(&self, user: &str, groups: &[&str]) {
            let mut g = self.groups.lock().unwrap();
            g.retain(|(u, _)| u != user);
            g.push((
                user.to_owned(),
                groups.iter().map(|s| (*s).to_owned()).collect(),
            ));
        }
    }

    impl GroupDirectory for Scripted {
        async fn groups(&self, user: &str) -> Result<Groups, DirectoryError> {
            self.queries.fetch_add(1, Ordering::SeqCst);
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(DirectoryError::Unavailable {
                    reason: "down".into(),
                });
            }
            let found = self
                .groups
                .lock()
                .unwrap()
                .iter()
                .find(|(u, _)| u == user)
                .cloned();
            match found {
                Some((_, g)) => Ok(Groups::new(g, None)),
                None => Err(DirectoryError::UnknownUser {
                    user: user.to_owned(),
                }),
            }
        }
    }

    fn config(refresh_ms: u64, grace_ms: u64, retry_ms: u64) -> CacheConfig {
        CacheConfig {
            refresh: Duration::from_millis(refresh_ms),
            grace: Duration::from_millis(grace_ms),
            retry: Duration::from_millis(retry_ms),
            lookup_timeout: Duration::from_millis(500),
            max_users: 1000,
        }
    }

    fn names(r: &Result<Groups, DirectoryError>) -> Vec<String> {
        r.as_ref()
            .map(|g| g.iter().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_query_in_flight_per_user() {
        let dir = Arc::new(Scripted::default());
        dir.set("alice", &["finance"]);
        dir.set("bob", &["hr"]);
        *dir.delay.lock().unwrap() = Duration::from_millis(200);
        let cache = Arc::new(CachedDirectory::new(
            dir.clone(),
            config(10_000, 10_000, 100),
        ));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let cache = cache.clone();
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            tasks.push(tokio::spawn(async move { cache.groups(user).await }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.unwrap();
            assert_eq!(names(&r), [if i % 2 == 0 { "finance" } else { "hr" }]);
        }
        assert_eq!(dir.queries.load(Ordering::SeqCst), 2);
        let m = cache.metrics();
        assert_eq!((m.misses, m.hits), (2, 48));
        assert!(m.up);
        assert!(m.last_query_latency >= Duration::from_millis(200));
        assert_eq!(m.entries, 2);
    }

    #[tokio::test]
    async fn refreshes_after_the_interval() {
        let dir = Arc::new(Scripted::default());
        dir.set("bob", &["hr"]);
        let cache = CachedDirectory::new(dir.clone(), config(200, 1000, 50));
        assert_eq!(names(&cache.groups("bob").await), ["hr"]);
        dir.set("bob", &["finance", "hr"]);
        assert_eq!(names(&cache.groups("bob").await), ["hr"], "cached");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(names(&cache.groups("bob").await), ["finance", "hr"]);
        assert_eq!(dir.queries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn unknown_users_are_cached_as_definite_answers() {
        let dir = Arc::new(Scripted::default());
        let cache = CachedDirectory::new(dir.clone(), config(10_000, 1000, 50));
        for _ in 0..3 {
            assert!(cache.groups("mallory").await.unwrap_err().is_unknown_user());
        }
        assert_eq!(dir.queries.load(Ordering::SeqCst), 1);
        assert!(cache.metrics().up);
    }

    #[tokio::test]
    async fn stale_within_grace_then_fail_closed_then_recover() {
        let dir = Arc::new(Scripted::default());
        dir.set("alice", &["finance"]);
        let cache = CachedDirectory::new(dir.clone(), config(100, 400, 50));
        assert_eq!(names(&cache.groups("alice").await), ["finance"]);
        dir.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        // past refresh, within grace: the last answer
        assert_eq!(names(&cache.groups("alice").await), ["finance"]);
        assert!(!cache.metrics().up);
        assert_eq!(cache.metrics().stale_served, 1);
        // retried only after `retry`
        let q = dir.queries.load(Ordering::SeqCst);
        assert_eq!(names(&cache.groups("alice").await), ["finance"]);
        assert_eq!(dir.queries.load(Ordering::SeqCst), q);
        let age = cache.metrics().oldest_entry_age.unwrap();
        assert!(age >= Duration::from_millis(150), "{age:?}");
        // past refresh + grace: no groups
        tokio::time::sleep(Duration::from_millis(400)).await;
        let e = cache.groups("alice").await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert_eq!(cache.metrics().oldest_entry_age, None);
        // back: recovers after at most `retry`
        dir.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(names(&cache.groups("alice").await), ["finance"]);
        assert!(cache.metrics().up);
        assert!(cache.metrics().errors >= 2);
    }

    #[tokio::test]
    async fn a_slow_directory_is_cut_at_the_lookup_timeout() {
        let dir = Arc::new(Scripted::default());
        dir.set("alice", &["finance"]);
        *dir.delay.lock().unwrap() = Duration::from_secs(5);
        let cache = CachedDirectory::new(dir.clone(), config(1000, 1000, 50));
        let start = Instant::now();
        let e = cache.groups("alice").await.unwrap_err();
        assert!(matches!(e, DirectoryError::Timeout { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn invalidate_forgets_a_user() {
        let dir = Arc::new(Scripted::default());
        dir.set("bob", &["hr"]);
        let cache = CachedDirectory::new(dir.clone(), config(10_000, 1000, 50));
        assert_eq!(names(&cache.groups("bob").await), ["hr"]);
        dir.set("bob", &["finance"]);
        cache.invalidate("bob").await;
        assert_eq!(names(&cache.groups("bob").await), ["finance"]);
    }
}
