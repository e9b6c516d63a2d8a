//! The engine-facing API: typed records, conditional writes, units.

mod common;

use std::sync::Arc;

use common::{Machine, wallet};
use thresig_store::provider::MemoryProvider;
use thresig_store::{
    CommitmentHash, DkgSessionId, EncryptedStore, Marker, MetaName, OpResult, PackageHash,
    Recovery, Store, StoreLocation, StoreOptions, Timestamp, WriteOp, WriteOutcome,
};

fn marker(hash: u8, expires: u64) -> Marker {
    Marker {
        package_hash: PackageHash([hash; 32]),
        shares: vec![hash; 40],
        expires_at: Timestamp(expires),
    }
}

fn in_memory() -> EncryptedStore {
    EncryptedStore::create(
        StoreLocation::in_memory().unwrap(),
        Arc::new(MemoryProvider::with_key("k", 3)),
        StoreOptions::default(),
    )
    .unwrap()
}

#[test]
fn conformance_on_the_in_memory_backend() {
    thresig_store::conformance::check_store(&in_memory());
}

#[test]
fn conformance_on_a_simulated_disk_and_on_real_files() {
    let machine = Machine::new();
    thresig_store::conformance::check_store(&machine.open().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store = EncryptedStore::create(
        StoreLocation::Directory(dir.path().to_path_buf()),
        Arc::new(MemoryProvider::with_key("k", 4)),
        StoreOptions::default(),
    )
    .unwrap();
    thresig_store::conformance::check_store(&store);
}

#[test]
fn concurrent_units_are_group_committed() {
    let store = Arc::new(in_memory());
    let threads: Vec<_> = (0..16u8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..20u8 {
                    let out = store
                        .write(vec![WriteOp::InsertMarker {
                            wallet: wallet(t),
                            commitment: CommitmentHash([i; 32]),
                            marker: marker(i, 50_000),
                        }])
                        .unwrap();
                    assert_eq!(out, WriteOutcome::Committed(vec![OpResult::Inserted]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.writer_stats();
    assert_eq!(stats.units, 16 * 20);
    assert!(stats.commits <= stats.units);
    for t in 0..16u8 {
        for i in 0..20u8 {
            assert!(
                store
                    .marker(&wallet(t), &CommitmentHash([i; 32]))
                    .unwrap()
                    .is_some()
            );
        }
    }
}

/// A disk whose every sync takes `SYNC`, so a commit's wait has a floor.
const SYNC: std::time::Duration = std::time::Duration::from_millis(5);

fn slow_disk_store() -> (Machine, EncryptedStore) {
    let machine = Machine::new();
    let store = machine.open().unwrap();
    machine.disk.set_sync_latency(SYNC);
    (machine, store)
}

#[test]
fn a_write_counts_the_time_its_caller_waited_for_the_commit() {
    let (_machine, store) = slow_disk_store();
    let before = store.write_wait();
    let started = std::time::Instant::now();
    store
        .write(vec![WriteOp::InsertMarker {
            wallet: wallet(1),
            commitment: CommitmentHash([9; 32]),
            marker: marker(9, 50_000),
        }])
        .unwrap();
    let elapsed = started.elapsed();
    let waited = store.write_wait() - before;
    // The commit's sync alone takes SYNC, and the caller waits for it.
    assert!(waited >= SYNC, "waited {waited:?}, one sync takes {SYNC:?}");
    assert!(waited <= elapsed, "waited {waited:?} in {elapsed:?}");
}

#[test]
fn callers_waiting_on_one_commit_count_its_wall_time_once() {
    const CALLERS: u8 = 8;
    let (_machine, store) = slow_disk_store();
    let before = store.write_wait();
    let process_before = thresig_store::write_wait();
    let start = std::sync::Barrier::new(usize::from(CALLERS));
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for caller in 0..CALLERS {
            let (store, start) = (&store, &start);
            scope.spawn(move || {
                start.wait();
                for i in 0..4u8 {
                    store
                        .write(vec![WriteOp::InsertMarker {
                            wallet: wallet(1),
                            commitment: CommitmentHash([caller * 4 + i; 32]),
                            marker: marker(caller, 50_000),
                        }])
                        .unwrap();
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let waited = store.write_wait() - before;
    // Summed over callers, eight callers blocked on each group commit would
    // count its wall time up to eight times, far past the elapsed time.
    assert!(waited <= elapsed, "waited {waited:?} in {elapsed:?}");
    assert!(waited >= SYNC, "waited {waited:?}, one sync takes {SYNC:?}");
    // The process-wide clock covers these waits too (other tests may add
    // more: it only grows).
    assert!(thresig_store::write_wait() - process_before >= SYNC);
}

#[test]
fn meta_dkg_and_reopen_on_a_simulated_disk() {
    let machine = Machine::new();
    let w = wallet(5);
    let session = DkgSessionId::new(b"s1".to_vec()).unwrap();
    let name = MetaName::new(b"identity".to_vec()).unwrap();
    {
        let store = machine.open().unwrap();
        store
            .write(vec![
                WriteOp::PutDkgResult {
                    wallet: w.clone(),
                    session: session.clone(),
                    value: b"dkg".to_vec().into(),
                },
                WriteOp::PutMeta {
                    name: name.clone(),
                    value: b"me".to_vec().into(),
                },
            ])
            .unwrap();
    }
    let store = machine.open().unwrap();
    let results = store.dkg_results(&w).unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, session);
    assert_eq!(results[0].1.as_slice(), b"dkg");
    assert_eq!(store.meta(&name).unwrap().unwrap().as_slice(), b"me");
}

#[test]
fn real_files_survive_reopen_and_keep_a_witness() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(MemoryProvider::with_key("k", 9));
    let w = wallet(6);
    {
        let store = EncryptedStore::create(
            StoreLocation::Directory(dir.path().to_path_buf()),
            provider.clone(),
            StoreOptions::default(),
        )
        .unwrap();
        store
            .write(vec![WriteOp::PutWallet {
                wallet: w.clone(),
                value: b"on disk".to_vec(),
            }])
            .unwrap();
        store.rotate_dek().unwrap();
    }
    assert!(dir.path().join("state.witness").exists());
    let store = EncryptedStore::open(
        StoreLocation::Directory(dir.path().to_path_buf()),
        provider,
        StoreOptions::default(),
    )
    .unwrap();
    assert_eq!(store.wallet(&w).unwrap().unwrap().as_slice(), b"on disk");
}

#[test]
fn store_is_send_sync_and_errors_classify() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EncryptedStore>();
    assert_send_sync::<Arc<dyn Store>>();
    let e = thresig_store::Error::WriterStopped;
    assert_eq!(e.recovery(), Recovery::Terminal);
}

#[test]
fn skipped_units_do_not_abort_their_batch() {
    let store = Arc::new(in_memory());
    let w = wallet(9);
    let taken = CommitmentHash([0; 32]);
    store
        .write(vec![WriteOp::InsertMarker {
            wallet: w.clone(),
            commitment: taken,
            marker: marker(0, 50_000),
        }])
        .unwrap();
    let threads: Vec<_> = (1..=32u8)
        .map(|i| {
            let (store, w) = (store.clone(), w.clone());
            std::thread::spawn(move || {
                // Odd threads collide with the existing marker.
                let commitment = if i % 2 == 1 {
                    taken
                } else {
                    CommitmentHash([i; 32])
                };
                let out = store
                    .write(vec![WriteOp::InsertMarker {
                        wallet: w,
                        commitment,
                        marker: marker(i, 50_000),
                    }])
                    .unwrap();
                (i, out)
            })
        })
        .collect();
    for t in threads {
        let (i, out) = t.join().unwrap();
        if i % 2 == 1 {
            assert!(
                matches!(out, WriteOutcome::Skipped { op: 0, .. }),
                "{i}: {out:?}"
            );
        } else {
            assert_eq!(out, WriteOutcome::Committed(vec![OpResult::Inserted]));
            assert!(
                store
                    .marker(&w, &CommitmentHash([i; 32]))
                    .unwrap()
                    .is_some()
            );
        }
    }
    assert_eq!(
        store.marker(&w, &taken).unwrap().unwrap().package_hash,
        PackageHash([0; 32])
    );
}

/// I4: a policy counter written before the wallet's first PutWallet must
/// still open afterwards: CasPolicy creates the wallet's epoch record, so
/// PutWallet does not change the epoch the counter is sealed with.
#[test]
fn a_policy_counter_written_before_its_wallet_still_opens() {
    use common::put_wallet;
    use thresig_store::PolicyKey;
    let machine = Machine::new();
    let store = machine.open().unwrap();
    let key = PolicyKey::new(b"daily".to_vec()).unwrap();
    let out = store
        .write(vec![WriteOp::CasPolicy {
            wallet: wallet(1),
            key: key.clone(),
            expected: None,
            new: b"1".to_vec(),
        }])
        .unwrap();
    assert!(matches!(out, WriteOutcome::Committed(_)));
    put_wallet(&store, 1, b"one");
    let got = store.policy(&wallet(1), &key);
    assert!(
        matches!(&got, Ok(Some(v)) if v.to_vec() == b"1".to_vec()),
        "untampered counter must open: {got:?}; corrupt = {:?}",
        store.corrupt_wallets()
    );
}
