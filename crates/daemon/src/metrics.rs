//! Prometheus metrics: request counts and latencies by method and outcome,
//! shares released, lifecycle operations in flight, the signatures this
//! member coordinated, and the store's metrics (`thresig_store::metrics`),
//! served as OpenMetrics text over plain HTTP on a loopback port. Every
//! name is listed in `docs/metrics.md`, which a test holds to this file.
//!
//! Labels come from bounded sets (method names and the handlers' static
//! error codes), so the number of series stays bounded whatever peers send.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::warn;

use crate::conn::{Listen, OldestFirst, WarnLimiter, accept_or_pause};

/// The labels of one request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The RPC (`round1`, `round2`, `dkg`, `status`).
    pub(crate) method: &'static str,
    /// `ok`, or the stable error code.
    pub(crate) outcome: Cow<'static, str>,
}

/// The label of a dropped connection: why it was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabels {
    /// `handshake_budget`, `source_cap`, `handshake_timeout`, `seat_cap`,
    /// `member_capacity` or `metrics_cap`.
    pub(crate) reason: &'static str,
}

/// Every `reason` of [`DropLabels`], created at 0 with the registry so
/// that a rate or an `increase()` sees the first drop.
const DROP_REASONS: [&str; 6] = [
    "handshake_budget",
    "source_cap",
    "handshake_timeout",
    "seat_cap",
    "member_capacity",
    "metrics_cap",
];

/// Every `reason` of [`RefusalLabels`], created at 0 like [`DROP_REASONS`]
/// (`ThresigImpostorCertificate` fires on the first `not_pinned`).
const REFUSAL_REASONS: [&str; 5] = ["not_pinned", "no_seat", "tls_error", "timeout", "evicted"];

/// The label of a refused handshake: why no authenticated connection came
/// of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    /// `not_pinned`, `no_seat`, `tls_error`, `timeout` or `evicted`.
    pub(crate) reason: &'static str,
}

/// The labels of a request the admission layer refused: whose, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AdmissionLabels {
    /// The seat of the member that sent it.
    pub(crate) seat: u16,
    /// The error code (`overloaded`, `timeout`, `invalid_request`) or
    /// transport status (`out_of_range`, `cancelled`) it was refused with.
    pub(crate) reason: Cow<'static, str>,
}

/// The label of a lifecycle gauge: which operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LifecycleLabels {
    /// `dkg`, `repair`, `rekey` or `refresh`.
    operation: &'static str,
}

/// Lifecycle operations in progress on a signer, read for each scrape
/// ([`crate::SignerHandler::lifecycle`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LifecycleInFlight {
    /// Wallets whose DKG has not confirmed a key yet.
    pub dkg: usize,
    /// Repairs this signer takes part in.
    pub repair: usize,
    /// Wallets being rekeyed (refusing every spend but the sweep).
    pub rekey: usize,
    /// Wallets with a share refresh running here or its result held
    /// pending (not yet switched to, nor discarded on vetoes).
    pub refresh: usize,
}

/// Reads the lifecycle operations in progress, or `None` when they cannot
/// be read now.
type LifecycleSource = Arc<dyn Fn() -> Option<LifecycleInFlight> + Send + Sync>;

/// Reads of the lifecycle source, one at a time, shared by every scrape.
///
/// A read takes each wallet's lock, which a round 2 holds through its
/// commit's fsync, on a thread of the blocking pool that also runs the
/// members' requests. However many scrapes arrive, or are abandoned, at
/// most one read runs, and a scrape that waited reuses a read that started
/// after it arrived instead of starting another.
struct LifecycleReads {
    source: LifecycleSource,
    /// Held by the running read, until its thread finishes even if the
    /// scrape that started it is gone.
    running: Arc<tokio::sync::Mutex<()>>,
    /// Reads started so far.
    started: AtomicU64,
}

/// What this process counts for the signatures it coordinated. The
/// coordinator runs in `thresig sign`, which reports each signature to its
/// own signer's admin socket ([`record_signature`]); the serving process
/// keeps the counts, process-wide like the store's, so its registry shows
/// them.
struct Coordinated {
    signatures: Counter,
    sessions: Histogram,
    failed: Family<FailureLabels, Counter>,
}

/// The label of a signing run that ended without a signature.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    /// `retryable` (members were silent or refused for now) or `terminal`
    /// (refusals for good, too many culprits).
    recovery: &'static str,
}

/// Sessions per signature in buckets 1 to 16: one when every member
/// answers, and one more for each member that fails a session (ROAST needs
/// at most `n - t + 1`). Runs past 16 land in `+Inf`, far past the alert
/// (a mean above 1.5).
/// Both recoveries of `failed` exist at 0 from the start, so that
/// `ThresigSignaturesFailing` sees the first failure.
static COORDINATED: std::sync::LazyLock<Coordinated> = std::sync::LazyLock::new(|| {
    let failed = Family::<FailureLabels, Counter>::default();
    for recovery in ["retryable", "terminal"] {
        let _ = failed.get_or_create(&FailureLabels { recovery });
    }
    Coordinated {
        signatures: Counter::default(),
        sessions: Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0]),
        failed,
    }
});

/// Records one signature this member coordinated, which took `sessions`
/// ROAST sessions (one per PSBT: a multi-input PSBT's sessions sign every
/// input at once).
pub fn record_signature(sessions: u32) {
    COORDINATED.signatures.inc();
    COORDINATED.sessions.observe(f64::from(sessions));
}

/// Records one signing run this member coordinated that ended without a
/// signature; `retryable` says whether running it again can succeed.
pub fn record_signing_failure(retryable: bool) {
    let recovery = if retryable { "retryable" } else { "terminal" };
    COORDINATED
        .failed
        .get_or_create(&FailureLabels { recovery })
        .inc();
}

/// Why a coordinator named a member a culprit: the label of
/// `thresig_culprits_named_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CulpritReason {
    /// A signature share that did not decode or verify (ROAST's culprit).
    InvalidShare,
}

impl CulpritReason {
    /// Every reason, so that each series exists at 0 from the start.
    const ALL: [Self; 1] = [Self::InvalidShare];

    /// The label value.
    fn as_str(self) -> &'static str {
        match self {
            Self::InvalidShare => "invalid_share",
        }
    }
}

/// The label of a culprit series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CulpritLabels {
    /// See [`CulpritReason`].
    reason: &'static str,
}

/// The culprits this member's coordinator named and the blame proofs it
/// wrote, reported by `thresig sign` to its own signer like the
/// signatures ([`COORDINATED`]). Every reason exists at 0 from the start,
/// so that `ThresigCulpritNamed` sees the first one.
struct Culprits {
    named: Family<CulpritLabels, Counter>,
    proofs: Counter,
}

static CULPRITS: std::sync::LazyLock<Culprits> = std::sync::LazyLock::new(|| {
    let named = Family::<CulpritLabels, Counter>::default();
    for reason in CulpritReason::ALL {
        let _ = named.get_or_create(&CulpritLabels {
            reason: reason.as_str(),
        });
    }
    Culprits {
        named,
        proofs: Counter::default(),
    }
});

/// Records `named` culprits this member's coordinator named for `reason`
/// in one run, and the `proofs` blame-proof files it wrote for them.
pub fn record_culprits(reason: CulpritReason, named: u64, proofs: u64) {
    CULPRITS
        .named
        .get_or_create(&CulpritLabels {
            reason: reason.as_str(),
        })
        .inc_by(named);
    CULPRITS.proofs.inc_by(proofs);
}

/// Shares this process handed out, process-wide like [`COORDINATED`].
static SHARES_RELEASED: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);

/// Counts `shares` signature shares handed out in one round-2 answer.
pub(crate) fn shares_released(shares: usize) {
    SHARES_RELEASED.inc_by(u64::try_from(shares).unwrap_or(u64::MAX));
}

/// Readings of a system clock before 1970, process-wide like the clock
/// (`crate::engine::wall_clock`).
static CLOCK_BEFORE_EPOCH: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);

/// Counts one reading of a system clock before 1970 (a request arriving
/// then is refused; one already running reads its arrival instead).
pub(crate) fn clock_before_epoch() {
    CLOCK_BEFORE_EPOCH.inc();
}

/// The readings [`clock_before_epoch`] counted so far.
#[cfg(test)]
pub(crate) fn clock_before_epoch_total() -> u64 {
    CLOCK_BEFORE_EPOCH.get()
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.5 ms to about 33 s: signing math at (2,3) is
/// ~1.6 ms, a round-2 commit waits for an fsync, and the default request
/// timeout is 30 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// The daemon's metrics.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    in_flight: Gauge,
    rollbacks_accepted: Gauge,
    store_write_wait: Gauge<f64, std::sync::atomic::AtomicU64>,
    pending_handshakes: Gauge,
    member_connections: Gauge,
    dropped: Family<DropLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    not_admitted: Family<AdmissionLabels, Counter>,
    waited: Family<AdmissionLabels, Counter>,
    lifecycle: Family<LifecycleLabels, Gauge>,
    lifecycle_reads: Option<Arc<LifecycleReads>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("thresig");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = LatencyFamily::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        let rollbacks_accepted = Gauge::default();
        registry.register(
            "requests",
            "Signer requests handled, by method and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Signer request latency, by method and outcome",
            latency.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Signer requests being handled now",
            in_flight.clone(),
        );
        registry.register(
            "store_rollbacks_accepted",
            "Store opens in this process that accepted an older database or a missing \
             witness through the [store] rollback override (alert when above 0)",
            rollbacks_accepted.clone(),
        );
        let store_write_wait = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "store_write_wait_seconds",
            "Wall time during which at least one of this signer's request threads \
             was blocked until its store write was durable (only grows; threads \
             waiting together count once, so its rate over wall time is the \
             fraction of the time the signer waited on its disk, at most 1)",
            store_write_wait.clone(),
        );
        let pending_handshakes = Gauge::default();
        let member_connections = Gauge::default();
        let dropped = Family::<DropLabels, Counter>::default();
        for reason in DROP_REASONS {
            let _ = dropped.get_or_create(&DropLabels { reason });
        }
        registry.register(
            "pending_handshakes",
            "TLS handshakes in progress",
            pending_handshakes.clone(),
        );
        registry.register(
            "member_connections",
            "Authenticated members' connections held",
            member_connections.clone(),
        );
        registry.register(
            "connections_dropped",
            "Connections the daemon dropped to stay within its limits, by reason",
            dropped.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        for reason in REFUSAL_REASONS {
            let _ = refused.get_or_create(&RefusalLabels { reason });
        }
        registry.register(
            "handshakes_refused",
            "TLS handshakes that gave no authenticated connection, by reason \
             (not_pinned: a CA-issued certificate with another key than its seat's pin)",
            refused.clone(),
        );
        let not_admitted = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "requests_refused",
            "Requests refused before their body was read or decoded, by member seat \
             and reason (a member's share, slot or byte budget full, a deadline, a \
             size or count limit): a member whose count keeps rising is flooding",
            not_admitted.clone(),
        );
        let waited = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "requests_waited",
            "Requests made to wait for their member's rate or turn at a wallet, by \
             member seat and reason (request_rate, nonce_rate, wallet_turn), counted \
             when the wait begins",
            waited.clone(),
        );
        registry.register(
            "shares_released",
            "Signature shares this signer handed out in round-2 answers (a retry \
             answered from its marker counts again)",
            SHARES_RELEASED.clone(),
        );
        registry.register(
            "clock_before_epoch",
            "Readings of a system clock before 1970 (the signer refuses the \
             requests arriving then, until the clock is set right)",
            CLOCK_BEFORE_EPOCH.clone(),
        );
        let lifecycle = Family::<LifecycleLabels, Gauge>::default();
        registry.register(
            "lifecycle_operations_in_flight",
            "Lifecycle operations in progress on this signer, by operation \
             (dkg: wallets awaiting their key, repair, rekey, refresh)",
            lifecycle.clone(),
        );
        registry.register(
            "signatures_coordinated",
            "Signatures this member coordinated to completion (reported by \
             `thresig sign` to its own signer)",
            COORDINATED.signatures.clone(),
        );
        registry.register(
            "roast_sessions_per_signature",
            "ROAST sessions each signature this member coordinated took (1 when \
             no member failed)",
            COORDINATED.sessions.clone(),
        );
        registry.register(
            "signatures_failed",
            "Signing runs this member coordinated that ended without a signature, \
             by recovery (retryable: members silent or refusing for now; terminal: \
             refusals for good or too many culprits)",
            COORDINATED.failed.clone(),
        );
        registry.register(
            "culprits_named",
            "Members this member's coordinator named culprits, by reason \
             (invalid_share: a signature share that did not verify), reported \
             by `thresig sign` to its own signer",
            CULPRITS.named.clone(),
        );
        registry.register(
            "blame_proofs_written",
            "Blame-proof files (culprit-<seat>.proof.json) this member's \
             coordinator wrote",
            CULPRITS.proofs.clone(),
        );
        thresig_store::metrics::register(&mut registry);
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
            in_flight,
            rollbacks_accepted,
            store_write_wait,
            pending_handshakes,
            member_connections,
            dropped,
            refused,
            not_admitted,
            waited,
            lifecycle,
            lifecycle_reads: None,
        }
    }

    /// Reads the lifecycle gauge from `source` for each scrape.
    pub(crate) fn with_lifecycle(mut self, source: LifecycleSource) -> Self {
        self.lifecycle_reads = Some(Arc::new(LifecycleReads {
            source,
            running: Arc::default(),
            started: AtomicU64::new(0),
        }));
        self
    }

    /// Brings the lifecycle gauge up to date with a read that started after
    /// this call, sharing it with concurrent scrapes ([`LifecycleReads`]).
    /// A read that fails leaves the gauge at its last values: an unreadable
    /// wallet is not an operation that finished.
    async fn refresh_lifecycle(&self) {
        let Some(reads) = &self.lifecycle_reads else {
            return;
        };
        let arrived = reads.started.load(Ordering::SeqCst);
        let running = reads.running.clone().lock_owned().await;
        if reads.started.load(Ordering::SeqCst) > arrived {
            return;
        }
        reads.started.fetch_add(1, Ordering::SeqCst);
        let source = reads.source.clone();
        let read = tokio::task::spawn_blocking(move || {
            let _running = running;
            source()
        });
        match read.await {
            Ok(Some(now)) => self.set_lifecycle(now),
            Ok(None) | Err(_) => {
                warn!("the lifecycle gauge keeps its last values: the wallets cannot be read now");
            }
        }
    }

    fn set_lifecycle(&self, now: LifecycleInFlight) {
        for (operation, n) in [
            ("dkg", now.dkg),
            ("repair", now.repair),
            ("rekey", now.rekey),
            ("refresh", now.refresh),
        ] {
            self.lifecycle
                .get_or_create(&LifecycleLabels { operation })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Counts one finished request.
    pub(crate) fn observe(&self, labels: &RequestLabels, elapsed: Duration) {
        self.requests.get_or_create(labels).inc();
        self.latency
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The in-flight gauge.
    pub(crate) fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Counts one handshake refused for `reason` (see [`RefusalLabels`]).
    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Counts one request of `seat` the admission layer refused for
    /// `reason` (see [`AdmissionLabels`]).
    pub(crate) fn not_admitted(&self, seat: u16, reason: Cow<'static, str>) {
        self.not_admitted
            .get_or_create(&AdmissionLabels { seat, reason })
            .inc();
    }

    /// Counts one request of `seat` made to wait for `reason` (its
    /// member's rate, or turn at a wallet).
    pub(crate) fn waited(&self, seat: u16, reason: &'static str) {
        self.waited
            .get_or_create(&AdmissionLabels {
                seat,
                reason: Cow::Borrowed(reason),
            })
            .inc();
    }

    /// Counts one connection dropped for `reason` (see [`DropLabels`]).
    pub(crate) fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&DropLabels { reason }).inc();
    }

    /// Sets the number of handshakes in progress.
    pub(crate) fn set_pending_handshakes(&self, n: usize) {
        self.pending_handshakes
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the number of members' connections held.
    pub(crate) fn set_member_connections(&self, n: usize) {
        self.member_connections
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        // The store counts accepted rollbacks itself (they happen at open,
        // before this registry exists); a scrape reads the count.
        self.rollbacks_accepted
            .set(i64::try_from(thresig_store::rollbacks_accepted()).unwrap_or(i64::MAX));
        // Likewise the store times its callers' waits; a scrape reads it.
        self.store_write_wait
            .set(thresig_store::write_wait().as_secs_f64());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Answers one HTTP request: `GET /metrics`, or 404.
fn respond(metrics: &Metrics, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = if request.uri().path() != "/metrics" {
        (StatusCode::NOT_FOUND, String::from("not found\n"))
    } else {
        match metrics.encode() {
            Ok(text) => (StatusCode::OK, text),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                String::from("encoding failed\n"),
            ),
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if status == StatusCode::OK {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
    }
    response
}

/// A scrape's request headers must arrive within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A metrics connection is closed after this time, whatever it is doing: a
/// scrape takes milliseconds.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// Serves the metrics endpoint until `stop` fires; open scrapes are dropped
/// then (a scrape is idempotent).
///
/// At most `max_connections` are held: the oldest is dropped to make room,
/// so local clients holding connections cannot keep a scrape out. Each
/// connection answers one request (no keep-alive), must send its headers
/// within [`HEADER_TIMEOUT`] and lives at most [`CONNECTION_LIFETIME`].
pub(crate) async fn serve_metrics<L: Listen>(
    listener: L,
    metrics: Metrics,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut open = OldestFirst::new(max_connections, max_connections);
    let mut accept_warnings = WarnLimiter::new();
    let mut connection_warnings = WarnLimiter::new();
    loop {
        let (io, _) = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            Some(joined) = connections.join_next_with_id(), if !connections.is_empty() => {
                let (id, served) = match joined {
                    Ok((id, served)) => (id, served),
                    Err(err) => (err.id(), Ok(())),
                };
                open.remove(&id);
                if let Err(err) = served
                    && let Some(suppressed) = connection_warnings.allow(Instant::now())
                {
                    warn!(error = %err, suppressed, "metrics connection failed");
                }
                continue;
            }
            accepted = accept_or_pause(&listener, &mut accept_warnings, "metrics") => match accepted {
                Some(accepted) => accepted,
                None => continue,
            },
        };
        let handle = connections.spawn(serve_scrape(io, metrics.clone()));
        if let Some((_, oldest)) = open.insert((), handle.id(), handle) {
            oldest.abort();
            metrics.dropped("metrics_cap");
        }
    }
}

/// Serves one metrics connection.
async fn serve_scrape<Io>(io: Io, metrics: Metrics) -> Result<(), hyper::Error>
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let metrics = metrics.clone();
        async move {
            if request.uri().path() == "/metrics" {
                metrics.refresh_lifecycle().await;
            }
            Ok::<_, Infallible>(respond(&metrics, &request))
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    // Past its lifetime the connection is dropped, which closes it.
    tokio::time::timeout(CONNECTION_LIFETIME, connection)
        .await
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use thresig_store::provider::{KeyProvider, MemoryProvider};
    use thresig_store::{
        EncryptedStore, Error, RollbackPolicy, Store as _, StoreLocation, StoreOptions, WalletId,
        WriteOp,
    };

    /// The value of the unlabelled sample `name` in a scrape of `metrics`.
    fn scraped<T: std::str::FromStr>(metrics: &Metrics, name: &str) -> T {
        let text = metrics.encode().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    /// The accepted-rollback count a scrape of `metrics` shows.
    fn scraped_rollbacks(metrics: &Metrics) -> u64 {
        scraped(metrics, "thresig_store_rollbacks_accepted")
    }

    /// The store write wait a scrape of `metrics` shows.
    fn scraped_write_wait(metrics: &Metrics) -> f64 {
        scraped(metrics, "thresig_store_write_wait_seconds")
    }

    /// A write through a store whose disk syncs in 5 ms shows in the next
    /// scrape's wait as at least that sync. The gauge is process-wide and
    /// other tests write too, but it counts wall time with a writer
    /// waiting, so between two scrapes it grows by at most the time between
    /// them.
    #[test]
    fn a_scrape_reports_the_time_spent_waiting_on_store_writes() {
        const SYNC: std::time::Duration = std::time::Duration::from_millis(5);
        let disk = thresig_store::SimDisk::new();
        let store = EncryptedStore::create(
            StoreLocation::Database {
                db: redb::Database::builder()
                    .create_with_backend(disk.backend())
                    .unwrap(),
                witness: thresig_store::MemoryWitness::new(),
            },
            Arc::new(MemoryProvider::with_key("kek-1", 7)),
            StoreOptions::default(),
        )
        .unwrap();
        disk.set_sync_latency(SYNC);
        let metrics = Metrics::new();
        let started = std::time::Instant::now();
        let before = scraped_write_wait(&metrics);
        store
            .write(vec![WriteOp::PutWallet {
                wallet: WalletId::new("w").unwrap(),
                value: b"one".to_vec(),
            }])
            .unwrap();
        let waited = scraped_write_wait(&metrics) - before;
        let elapsed = started.elapsed().as_secs_f64();
        assert!(waited >= SYNC.as_secs_f64(), "waited {waited} s");
        assert!(waited <= elapsed, "waited {waited} s in {elapsed} s");
    }

    /// The culprits and proofs `thresig sign` reports show in the next
    /// scrape (no other test in this crate reports any, so they move by
    /// exactly the report).
    #[test]
    fn a_scrape_counts_the_culprits_and_proofs_reported() {
        let metrics = Metrics::new();
        let named = r#"thresig_culprits_named_total{reason="invalid_share"}"#;
        let proofs = "thresig_blame_proofs_written_total";
        let before: (u64, u64) = (scraped(&metrics, named), scraped(&metrics, proofs));
        record_culprits(CulpritReason::InvalidShare, 2, 1);
        assert_eq!(scraped::<u64>(&metrics, named), before.0 + 2);
        assert_eq!(scraped::<u64>(&metrics, proofs), before.1 + 1);
    }

    /// A lifecycle read that fails leaves the gauge at what the last read
    /// saw: a store that cannot be read must not look like a DKG that
    /// finished, which would end a `ThresigLifecycleStuck` alert.
    #[tokio::test]
    async fn a_failed_lifecycle_read_keeps_the_last_values() {
        let readable = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let source = readable.clone();
        let metrics = Metrics::new().with_lifecycle(Arc::new(move || {
            source.load(Ordering::SeqCst).then_some(LifecycleInFlight {
                dkg: 2,
                refresh: 1,
                ..LifecycleInFlight::default()
            })
        }));
        let dkg = r#"thresig_lifecycle_operations_in_flight{operation="dkg"}"#;
        let refresh = r#"thresig_lifecycle_operations_in_flight{operation="refresh"}"#;
        metrics.refresh_lifecycle().await;
        assert_eq!(scraped::<i64>(&metrics, dkg), 2);
        assert_eq!(scraped::<i64>(&metrics, refresh), 1);
        readable.store(false, Ordering::SeqCst);
        metrics.refresh_lifecycle().await;
        assert_eq!(scraped::<i64>(&metrics, dkg), 2);
        assert_eq!(scraped::<i64>(&metrics, refresh), 1);
    }

    /// Every series an alert fires on exists before its first event, so
    /// `increase()` sees the first one: a series created at 1 by its first
    /// event has no earlier sample to grow from. The store's and the
    /// coordinated signatures' counters are process-wide, and other tests
    /// in this binary move them: those are only required to exist.
    #[test]
    fn a_fresh_scrape_shows_every_alerted_series_before_its_first_event() {
        let text = Metrics::new().encode().unwrap();
        let value = |series: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
        };
        for reason in ["not_pinned", "no_seat", "tls_error", "timeout", "evicted"] {
            let series = format!(r#"thresig_handshakes_refused_total{{reason="{reason}"}}"#);
            assert_eq!(value(&series), Some(0), "{series} in {text}");
        }
        for series in [
            r#"thresig_signatures_failed_total{recovery="retryable"}"#,
            r#"thresig_signatures_failed_total{recovery="terminal"}"#,
            r#"thresig_store_witness_writes_total{outcome="ok"}"#,
            r#"thresig_store_witness_writes_total{outcome="failed"}"#,
            r#"thresig_culprits_named_total{reason="invalid_share"}"#,
        ] {
            assert!(value(series).is_some(), "{series} in {text}");
        }
    }

    /// Restores a store in a temporary directory from a backup older than
    /// its witness and opens it through the store's override, as an
    /// operator who restored on purpose does.
    fn accept_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let location = || StoreLocation::Directory(dir.path().to_path_buf());
        let provider: Arc<dyn KeyProvider> = Arc::new(MemoryProvider::with_key("kek-1", 7));
        let database = dir.path().join("state.redb");
        let store =
            EncryptedStore::create(location(), provider.clone(), StoreOptions::default()).unwrap();
        store
            .write(vec![WriteOp::PutWallet {
                wallet: WalletId::new("w").unwrap(),
                value: b"one".to_vec(),
            }])
            .unwrap();
        drop(store);
        let backup = std::fs::read(&database).unwrap();
        let store =
            EncryptedStore::open(location(), provider.clone(), StoreOptions::default()).unwrap();
        store.rotate_dek().unwrap();
        drop(store);
        std::fs::write(&database, backup).unwrap();
        let refused = EncryptedStore::open(location(), provider.clone(), StoreOptions::default())
            .unwrap_err();
        let Error::RollbackDetected { accept, .. } = refused else {
            panic!("{refused}");
        };
        let mut options = StoreOptions::default();
        options.rollback = RollbackPolicy::AcceptOlderDatabase(accept);
        EncryptedStore::open(location(), provider, options).unwrap();
    }

    /// A rollback accepted through the store's real open path shows in the
    /// next scrape (no other test in this crate accepts one, so the count
    /// moves by exactly one).
    #[test]
    fn a_scrape_reports_a_rollback_the_store_accepted() {
        let metrics = Metrics::new();
        let before = scraped_rollbacks(&metrics);
        accept_a_rollback();
        assert_eq!(scraped_rollbacks(&metrics), before + 1);
    }
}

#[cfg(test)]
mod listing {
    //! The metrics the code registers, the ones `docs/metrics.md` lists
    //! and the ones the dashboard and alert rules use cannot drift apart.

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use thresig_store::provider::{KeyProvider as _, KeyProviderConfig};
    use thresig_store::{
        EncryptedStore, Store as _, StoreLocation, StoreOptions, WalletId, WriteOp,
    };
    use zeroize::Zeroizing;

    use super::*;

    fn docs(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs")
            .join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Gives every labelled family of `metrics` one series (a family
    /// without series is not encoded at all) and returns a scrape.
    fn scrape_with_every_family(metrics: Metrics) -> String {
        metrics.set_lifecycle(LifecycleInFlight::default());
        let labels = RequestLabels {
            method: "status",
            outcome: Cow::Borrowed("ok"),
        };
        metrics.observe(&labels, Duration::from_millis(1));
        metrics.dropped("metrics_cap");
        metrics.refused("timeout");
        metrics.not_admitted(1, Cow::Borrowed("overloaded"));
        metrics.waited(1, "request_rate");
        record_signing_failure(true);
        // A store writes its witness when created, and commits a write.
        let store = EncryptedStore::create(
            StoreLocation::Database {
                db: redb::Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .unwrap(),
                witness: thresig_store::MemoryWitness::new(),
            },
            Arc::new(thresig_store::provider::MemoryProvider::with_key(
                "kek-1", 7,
            )),
            StoreOptions::default(),
        )
        .unwrap();
        store
            .write(vec![WriteOp::PutWallet {
                wallet: WalletId::new("w").unwrap(),
                value: b"one".to_vec(),
            }])
            .unwrap();
        // The configured provider is the one that counts its calls.
        let provider = KeyProviderConfig::from_toml(
            "[key_provider]\nkind = \"env\"\nvariable = \"K\"\nkey_id = \"k1\"\n",
        )
        .unwrap()
        .open_with(&|_: &str| Some(Zeroizing::new("07".repeat(32).into_bytes())))
        .unwrap();
        provider.current_kek_id().unwrap();
        metrics.encode().unwrap()
    }

    /// Each metric a scrape shows, by the name operators query (a
    /// counter's `_total` sample, a histogram's base name), with its type.
    fn registered(scrape: &str) -> BTreeMap<String, String> {
        scrape
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (name, kind) = l.split_once(' ').unwrap();
                let name = if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                (name, kind.to_owned())
            })
            .collect()
    }

    /// The metrics docs/metrics.md's tables list, with their types.
    fn documented() -> BTreeMap<String, String> {
        docs("metrics.md")
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix("| `thresig_")?.split('|');
                let name = cells.next()?.trim().trim_end_matches('`');
                let kind = cells.next()?.trim();
                Some((format!("thresig_{name}"), kind.to_owned()))
            })
            .collect()
    }

    /// The metric names an expression file uses, without a histogram's
    /// sample suffixes.
    fn used(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("thresig_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.push(base.to_owned());
            rest = &tail[end..];
        }
        names
    }

    /// Each metric's label keys in a scrape (without a histogram's `le`).
    fn label_keys(scrape: &str) -> BTreeMap<String, Vec<String>> {
        let mut keys = BTreeMap::<String, Vec<String>>::new();
        for line in scrape.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, rest)) = line.split_once('{') else {
                continue;
            };
            let name = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            let labels = rest.split('}').next().unwrap_or_default();
            let mut found: Vec<String> = labels
                .split(',')
                .filter_map(|pair| Some(pair.split_once('=')?.0.to_owned()))
                .filter(|key| key != "le")
                .collect();
            found.sort();
            keys.insert(name.to_owned(), found);
        }
        keys
    }

    /// The Labels column of docs/metrics.md, by metric (the `_total`
    /// suffix of counters dropped, as the scrape's samples carry it).
    fn documented_labels() -> BTreeMap<String, Vec<String>> {
        docs("metrics.md")
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix("| `")?.split('|');
                let name = cells.next()?.trim().trim_end_matches('`');
                let _kind = cells.next()?;
                let mut labels: Vec<String> = cells
                    .next()?
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect();
                labels.sort();
                Some((name.to_owned(), labels))
            })
            .collect()
    }

    #[test]
    fn docs_give_each_metric_the_labels_a_scrape_shows() {
        let scraped = label_keys(&scrape_with_every_family(Metrics::new()));
        for (name, labels) in documented_labels() {
            let sample = name.clone();
            let found = scraped.get(&sample).cloned().unwrap_or_default();
            assert_eq!(
                found, labels,
                "labels of {name}: scrape (left), docs (right)"
            );
        }
    }

    /// Every `label="value"` an alert rule matches on is a value the code
    /// gives that label: a request outcome is `ok` or a daemon error code,
    /// a method one the service names, other values show in a scrape.
    #[test]
    fn alerts_match_only_label_values_the_code_gives() {
        let scrape = scrape_with_every_family(Metrics::new());
        let codes: Vec<String> = thresig_engine::ErrorCode::ALL
            .iter()
            .map(|c| crate::ErrorCode::from(*c).as_str().to_owned())
            .chain(["ok".to_owned()])
            .collect();
        let alerts = docs("grafana/alerts.yml");
        let mut checked = 0;
        for line in alerts
            .lines()
            .filter(|l| l.trim_start().starts_with("expr:"))
        {
            for matcher in line.split(['{', ',']).skip(1) {
                let Some((key, value)) = matcher.split_once('=') else {
                    continue;
                };
                let key = key.trim().trim_end_matches(['~', '!']);
                let Some(value) = value.trim().strip_prefix('"') else {
                    continue;
                };
                let value = value.split('"').next().unwrap_or_default();
                for value in value.split('|') {
                    checked += 1;
                    let known = if key == "outcome" && line.contains("thresig_requests_total") {
                        codes.iter().any(|c| c == value)
                    } else if key == "method" {
                        include_str!("service.rs").contains(&format!("self.rpc(\"{value}\""))
                    } else {
                        scrape.contains(&format!("{key}=\"{value}\""))
                    };
                    assert!(
                        known,
                        "alerts.yml matches {key}=\"{value}\", which the code never gives"
                    );
                }
            }
        }
        assert!(checked > 0);
    }

    /// The rule named `alert` in alerts.yml: its lines up to the next rule.
    fn alert_rule(alert: &str) -> String {
        let alerts = docs("grafana/alerts.yml");
        let mut lines = alerts
            .lines()
            .skip_while(|l| !l.ends_with(&format!("alert: {alert}")));
        let first = lines.next().map(str::to_owned);
        let rest = lines.take_while(|l| !l.contains("- alert:"));
        first
            .into_iter()
            .chain(rest.map(str::to_owned))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The audit head's "stuck" alert watches the code a broken log gives
    /// round-2 requests, not the shares released: a retry answered from
    /// its marker counts as shares again but appends nothing, so shares
    /// growing under a still head is normal.
    #[test]
    fn the_stuck_audit_head_alert_watches_the_broken_log_code_not_replays() {
        let broken = thresig_engine::Error::Store {
            wallet: thresig_engine::WalletId::new("w".to_owned()).unwrap(),
            source: thresig_store::Error::AuditBroken {
                seq: thresig_store::AuditSeq(3),
                problem: thresig_store::AuditBreak::HashMismatch,
            },
        };
        let code = crate::ErrorCode::from(broken.code());
        let rule = alert_rule("ThresigAuditHeadStuck");
        assert!(!rule.contains("shares_released"), "{rule}");
        assert!(
            rule.contains(&format!("outcome=\"{}\"", code.as_str())),
            "{rule}"
        );
    }

    /// Every alert the audit-and-blame rows of docs/metrics.md name is a
    /// rule of alerts.yml, and each of those rows names one.
    #[test]
    fn the_audit_and_blame_rows_name_rules_that_exist() {
        let metrics = docs("metrics.md");
        let rows: Vec<&str> = metrics
            .lines()
            .skip_while(|l| !l.starts_with("## Audit log and blame"))
            .skip(1)
            .take_while(|l| !l.starts_with("## "))
            .filter(|l| l.starts_with("| `thresig_"))
            .collect();
        assert!(rows.len() >= 3, "{rows:?}");
        for row in rows {
            let named: Vec<&str> = row
                .split("(`")
                .skip(1)
                .filter_map(|s| s.split('`').next())
                .filter(|s| s.starts_with("Thresig"))
                .collect();
            assert!(!named.is_empty(), "{row} names no rule");
            for alert in named {
                assert!(
                    alert_rule(alert).contains("expr:"),
                    "{alert} is not in alerts.yml"
                );
            }
        }
    }

    /// The code docs/metrics.md and alerts.yml say members' requests get
    /// while the witness cannot be written is the one the engine sends.
    #[test]
    fn docs_name_the_code_a_failed_witness_write_gives_requests() {
        let failed = thresig_engine::Error::Store {
            wallet: thresig_engine::WalletId::new("w".to_owned()).unwrap(),
            source: thresig_store::Error::WitnessIo {
                witness: "state.witness".into(),
                source: std::io::Error::other("disk full"),
            },
        };
        let code = crate::ErrorCode::from(failed.code());
        let row = docs("metrics.md")
            .lines()
            .find(|l| l.starts_with("| `thresig_store_witness_writes_total`"))
            .map(str::to_owned)
            .unwrap();
        assert!(
            row.contains(&format!("they get `{}`", code.as_str())),
            "{row}"
        );
        let alerts = docs("grafana/alerts.yml");
        let summary = alerts
            .lines()
            .skip_while(|l| !l.contains("ThresigWitnessWriteFailed"))
            .find(|l| l.contains("summary:"))
            .unwrap();
        assert!(
            summary.contains(&format!("answers {}", code.as_str())),
            "{summary}"
        );
    }

    #[test]
    fn docs_list_exactly_the_registered_metrics_and_the_dashboard_uses_only_them() {
        let registered = registered(&scrape_with_every_family(Metrics::new()));
        let documented = documented();
        assert_eq!(
            registered, documented,
            "code (left) and docs/metrics.md (right) differ"
        );
        for file in ["grafana/thresig-dashboard.json", "grafana/alerts.yml"] {
            let names = used(&docs(file));
            assert!(!names.is_empty(), "{file} uses no metric");
            for name in names {
                assert!(
                    documented.contains_key(&name),
                    "{file} uses {name}, which docs/metrics.md does not list"
                );
            }
        }
    }
}
