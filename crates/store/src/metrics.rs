//! The store's Prometheus metrics: group-commit latency and size, witness
//! writes, key-provider calls and the audit log's head.
//!
//! They are process-wide, like [`crate::rollbacks_accepted`] and
//! [`crate::write_wait`]: the store opens (and calls its key provider)
//! before the daemon builds its registry, in a crate that never sees the
//! store's handle. The daemon adds them to its registry with [`register`];
//! a clone of a prometheus-client metric shares its values, so every store
//! the process opens counts into the same series.
//!
//! Labels come from closed sets (the three provider operations and the
//! providers' static error codes), so nothing a peer or a provider program
//! sends can add series.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::provider::ProviderError;

/// The labels of one key-provider series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    /// `current_kek_id`, `wrap` or `unwrap`.
    operation: &'static str,
    /// `ok`, or the provider error's stable code.
    outcome: &'static str,
}

/// The label of a witness write: whether it reached the disk.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WitnessLabels {
    /// `ok` or `failed`.
    outcome: &'static str,
}

type ProviderLatency = Family<ProviderLabels, Histogram, fn() -> Histogram>;

struct StoreMetrics {
    commit_seconds: Histogram,
    commit_units: Histogram,
    witness_writes: Family<WitnessLabels, Counter>,
    provider_calls: Family<ProviderLabels, Counter>,
    provider_seconds: ProviderLatency,
    audit_head: Gauge,
    key_manager_failing: Gauge,
}

/// Commit latency buckets from 0.1 ms to about 3.3 s: a group commit on
/// tmpfs takes well under a millisecond, an fsync on a busy disk tens of
/// milliseconds, and a commit near the top means the disk is failing.
fn commit_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Batch sizes 1, 2, 4, … 512: the writer takes every write queued while
/// the previous commit ran, so the size follows the number of request
/// threads waiting (the daemon allows at most 4096 requests at once).
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// Provider latency buckets from 0.1 ms to about 52 s: `env` and `file`
/// providers answer in microseconds to milliseconds, a `command` provider
/// runs a program (tens of milliseconds to its `timeout_secs`, at most 300 s,
/// which the last bucket and `+Inf` cover).
fn provider_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Both witness outcomes exist at 0 from the start, so that
/// `ThresigWitnessWriteFailed` sees the first failure.
static METRICS: LazyLock<StoreMetrics> = LazyLock::new(|| {
    let witness_writes = Family::<WitnessLabels, Counter>::default();
    for outcome in ["ok", "failed"] {
        let _ = witness_writes.get_or_create(&WitnessLabels { outcome });
    }
    StoreMetrics {
        commit_seconds: commit_histogram(),
        commit_units: batch_histogram(),
        witness_writes,
        provider_calls: Family::default(),
        provider_seconds: ProviderLatency::new_with_constructor(provider_histogram),
        audit_head: Gauge::default(),
        key_manager_failing: Gauge::default(),
    }
});

/// Adds the store's metrics to `registry` (whose prefix names the
/// program, `thresig`). Call it once per registry.
pub fn register(registry: &mut Registry) {
    let m = &*METRICS;
    registry.register(
        "store_commit_duration_seconds",
        "Time of one group commit of the store's writer: the transaction, its \
         fsync and, when it must be witnessed, the witness write",
        m.commit_seconds.clone(),
    );
    registry.register(
        "store_commit_batch_units",
        "Write units (one caller's writes each) committed together in one group commit",
        m.commit_units.clone(),
    );
    registry.register(
        "store_witness_writes",
        "Anti-rollback witness writes, by outcome (ok, failed): a failed one \
         holds back the answers of the commit it should cover",
        m.witness_writes.clone(),
    );
    registry.register(
        "key_provider_calls",
        "Calls to the key provider, by operation (current_kek_id, wrap, unwrap) \
         and outcome (ok or the provider error code)",
        m.provider_calls.clone(),
    );
    registry.register(
        "key_provider_call_duration_seconds",
        "Key provider call latency, by operation and outcome",
        m.provider_seconds.clone(),
    );
    registry.register(
        "audit_head_sequence",
        "Sequence of the audit log's last entry, as the store last opened or \
         committed it (alert when it goes backwards, or stops while requests are \
         refused as a broken log)",
        m.audit_head.clone(),
    );
    registry.register(
        "store_key_manager_failing_ticks",
        "Consecutive key-manager ticks that failed (its provider, or a key \
         change that could not commit, such as with a broken audit log); 0 \
         after a tick that succeeds",
        m.key_manager_failing.clone(),
    );
}

/// Records the key manager's consecutive failing ticks after a tick.
pub(crate) fn key_manager_failing(ticks: u64) {
    METRICS
        .key_manager_failing
        .set(i64::try_from(ticks).unwrap_or(i64::MAX));
}

/// Records the audit log's head after an open or a commit. A gauge, not a
/// maximum: a head that moves backwards is what an alert must see.
pub(crate) fn audit_head(seq: crate::ids::AuditSeq) {
    METRICS
        .audit_head
        .set(i64::try_from(seq.0).unwrap_or(i64::MAX));
}

/// Records one group commit of `units` write units that took `elapsed`.
pub(crate) fn commit(units: usize, elapsed: Duration) {
    METRICS.commit_seconds.observe(elapsed.as_secs_f64());
    METRICS
        .commit_units
        .observe(u32::try_from(units).map_or(f64::MAX, f64::from));
}

/// Records one witness write.
pub(crate) fn witness_written(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    METRICS
        .witness_writes
        .get_or_create(&WitnessLabels { outcome })
        .inc();
}

/// Runs one key-provider `call` named `operation` and records it.
pub(crate) fn provider_call<T>(
    operation: &'static str,
    call: impl FnOnce() -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    let started = Instant::now();
    let result = call();
    let labels = ProviderLabels {
        operation,
        outcome: result.as_ref().map_or_else(ProviderError::code, |_| "ok"),
    };
    METRICS.provider_calls.get_or_create(&labels).inc();
    METRICS
        .provider_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    result
}
