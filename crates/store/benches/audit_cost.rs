//! What the audit log costs the signing path: durable share-release units
//! per second through the encrypted store, with and without the audit
//! entry that a share release commits beside its marker.
//!
//! Both runs use one store on real files with fsync on (the witness is
//! rewritten after every unit's commit either way, since both hold a
//! marker). The "marker" unit is `[InsertMarker]`; the "marker + audit"
//! unit adds `AppendAudit` with a 420-byte body, the size of a one-input
//! share-release entry. Because the shared machine's disk drifts, the two
//! alternate in rounds of one second and the median of each is reported,
//! at 1 caller (commit latency) and 16 callers (group commit).
//!
//! Run: `cargo bench -p thresig-store --bench audit_cost` (about 30 s).
//! Without `--bench` (as under `cargo test --benches`) it runs a pass of a
//! fraction of a second. Results: `docs/BENCHMARKS.md` ("Audit log cost").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thresig_store::provider::{KeyProvider, MemoryProvider};
use thresig_store::{
    CommitmentHash, EncryptedStore, Marker, PackageHash, Store, StoreLocation, StoreOptions,
    Timestamp, WalletId, WriteOp, WriteOutcome,
};

/// Bytes of the shares a one-input marker holds (as `store_load`).
const SHARES_LEN: usize = 160;
/// Bytes of a one-input share-release entry's canonical JSON.
const ENTRY_LEN: usize = 420;
/// Wallets written to round-robin.
const WALLETS: u64 = 8;

static NEXT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Marker,
    MarkerAndAudit,
}

fn unit(kind: Unit, seq: u64) -> Vec<WriteOp> {
    let mut commitment = [0u8; 32];
    commitment[..8].copy_from_slice(&seq.to_be_bytes());
    let wallet = WalletId::new(format!("wallet-{}", seq % WALLETS)).expect("short id");
    let mut ops = vec![WriteOp::InsertMarker {
        wallet,
        commitment: CommitmentHash(commitment),
        marker: Marker {
            package_hash: PackageHash([7; 32]),
            shares: vec![9; SHARES_LEN],
            expires_at: Timestamp(u64::MAX),
        },
    }];
    if kind == Unit::MarkerAndAudit {
        ops.push(WriteOp::AppendAudit {
            at: Timestamp(seq),
            entry: vec![b'a'; ENTRY_LEN],
        });
    }
    ops
}

/// Units per second of `kind` from `threads` callers for `time`.
fn measure(store: &EncryptedStore, kind: Unit, threads: usize, time: Duration) -> f64 {
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while start.elapsed() < time {
                    let seq = NEXT.fetch_add(1, Ordering::Relaxed);
                    let outcome = store.write(unit(kind, seq)).expect("unit commits");
                    assert!(matches!(outcome, WriteOutcome::Committed(_)));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (rounds, round) = if bench {
        (7, Duration::from_secs(1))
    } else {
        (1, Duration::from_millis(50))
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let provider: Arc<dyn KeyProvider> = Arc::new(MemoryProvider::with_key("kek-1", 1));
    let store = EncryptedStore::create(
        StoreLocation::Directory(dir.path().to_path_buf()),
        provider,
        StoreOptions::default(),
    )
    .expect("store is created");
    println!("| callers | marker units/s | marker + audit units/s | ratio |");
    println!("|---|---|---|---|");
    for threads in [1, 16] {
        let (mut plain, mut audited) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            // Alternating which goes first cancels a drift within a pair.
            let order = if i % 2 == 0 {
                [Unit::Marker, Unit::MarkerAndAudit]
            } else {
                [Unit::MarkerAndAudit, Unit::Marker]
            };
            for kind in order {
                let r = measure(&store, kind, threads, round);
                match kind {
                    Unit::Marker => plain.push(r),
                    Unit::MarkerAndAudit => audited.push(r),
                }
            }
        }
        let (p, a) = (median(plain), median(audited));
        println!("| {threads} | {p:.0} | {a:.0} | {:.3} |", a / p);
    }
    let head = store.audit_head().expect("head reads");
    let report = store.audit_verify().expect("the chain verifies");
    assert_eq!(report.head, head);
    println!(
        "\n{} audit entries appended; the chain verifies.",
        report.entries
    );
}
