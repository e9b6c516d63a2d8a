//! The engine-facing API: typed records, conditional writes, units.

mod common;

use std::sync::Arc;

use common::{Machine, wallet};
use thresig_store::provider::MemoryProvider;
use thresig_store::{
    AuditSeq, CommitmentHash, Conflict, DkgSessionId, EncryptedStore, Epoch, Marker, MetaName,
    OpResult, PackageHash, PolicyKey, Recovery, Store, StoreLocation, StoreOptions, Timestamp,
    WriteOp, WriteOutcome,
};

fn marker(hash: u8, expires: u64) -> Marker {
    Marker {
        package_hash: PackageHash([hash; 32]),
        shares: vec![hash; 40],
        expires_at: Timestamp(expires),
    }
}

fn in_memory() -> EncryptedStore {
    EncryptedStore::open(
        StoreLocation::in_memory().unwrap(),
        Arc::new(MemoryProvider::with_key("k", 3)),
        StoreOptions::default(),
    )
    .unwrap()
}

#[test]
fn records_round_trip_and_conditions_hold() {
    let store = in_memory();
    let w = wallet(1);
    let out = store
        .write(vec![
            WriteOp::PutWallet {
                wallet: w.clone(),
                value: b"state-1".to_vec(),
            },
            WriteOp::InsertKeyPackage {
                wallet: w.clone(),
                epoch: Epoch(1),
                value: b"kp-1".to_vec(),
            },
            WriteOp::AppendAudit {
                entry: b"a1".to_vec(),
            },
        ])
        .unwrap();
    assert_eq!(
        out,
        WriteOutcome::Committed(vec![
            OpResult::Written,
            OpResult::Inserted,
            OpResult::Appended(AuditSeq(1))
        ])
    );
    assert_eq!(store.wallet(&w).unwrap().unwrap().as_slice(), b"state-1");
    assert_eq!(store.wallet_ids().unwrap(), vec![w.clone()]);

    // A second key package for the same epoch is refused and the first kept.
    let again = store
        .write(vec![WriteOp::InsertKeyPackage {
            wallet: w.clone(),
            epoch: Epoch(1),
            value: b"kp-other".to_vec(),
        }])
        .unwrap();
    assert_eq!(
        again,
        WriteOutcome::Skipped {
            op: 0,
            conflict: Conflict::KeyPackagePresent(b"kp-1".to_vec())
        }
    );
    assert_eq!(
        store.key_package(&w, Epoch(1)).unwrap().unwrap().as_slice(),
        b"kp-1"
    );

    // Marker insert-if-absent returns the stored marker on a replay.
    let c = CommitmentHash([7; 32]);
    let m = marker(1, 100);
    let insert = |m: Marker| WriteOp::InsertMarker {
        wallet: w.clone(),
        commitment: c,
        marker: m,
    };
    assert_eq!(
        store.write(vec![insert(m.clone())]).unwrap(),
        WriteOutcome::Committed(vec![OpResult::Inserted])
    );
    assert_eq!(
        store.write(vec![insert(marker(2, 100))]).unwrap(),
        WriteOutcome::Skipped {
            op: 0,
            conflict: Conflict::MarkerPresent(m.clone())
        }
    );
    assert_eq!(store.marker(&w, &c).unwrap(), Some(m));
}

#[test]
fn a_failed_condition_takes_back_the_whole_unit() {
    let store = in_memory();
    let w = wallet(2);
    let key = PolicyKey::new(b"daily".to_vec()).unwrap();
    let cas = |expected: Option<&[u8]>, new: &[u8]| WriteOp::CasPolicy {
        wallet: w.clone(),
        key: key.clone(),
        expected: expected.map(<[u8]>::to_vec),
        new: new.to_vec(),
    };
    store.write(vec![cas(None, b"1")]).unwrap();
    let c = CommitmentHash([1; 32]);
    // Marker first, then a CAS that fails: the marker must not remain.
    let out = store
        .write(vec![
            WriteOp::InsertMarker {
                wallet: w.clone(),
                commitment: c,
                marker: marker(3, 10),
            },
            WriteOp::AppendAudit {
                entry: b"x".to_vec(),
            },
            cas(Some(b"0"), b"2"),
        ])
        .unwrap();
    assert_eq!(
        out,
        WriteOutcome::Skipped {
            op: 2,
            conflict: Conflict::PolicyMismatch(Some(b"1".to_vec()))
        }
    );
    assert_eq!(store.marker(&w, &c).unwrap(), None);
    assert!(store.audit(AuditSeq(1), 10).unwrap().is_empty());
    assert_eq!(store.policy(&w, &key).unwrap().unwrap().as_slice(), b"1");
    // The right expectation swaps.
    assert_eq!(
        store.write(vec![cas(Some(b"1"), b"2")]).unwrap(),
        WriteOutcome::Committed(vec![OpResult::Swapped])
    );
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
                            marker: marker(i, 50),
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

#[test]
fn markers_expire_and_are_purged() {
    let store = in_memory();
    let w = wallet(3);
    for (i, expires) in [(1u8, 10u64), (2, 20), (3, 30)] {
        store
            .write(vec![WriteOp::InsertMarker {
                wallet: w.clone(),
                commitment: CommitmentHash([i; 32]),
                marker: marker(i, expires),
            }])
            .unwrap();
    }
    let out = store
        .write(vec![WriteOp::PurgeMarkers { now: Timestamp(20) }])
        .unwrap();
    assert_eq!(out, WriteOutcome::Committed(vec![OpResult::Purged(2)]));
    assert!(
        store
            .marker(&w, &CommitmentHash([2; 32]))
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .marker(&w, &CommitmentHash([3; 32]))
            .unwrap()
            .is_some()
    );
}

#[test]
fn epoch_bump_reseals_wallet_state_and_policy() {
    let store = in_memory();
    let w = wallet(4);
    let key = PolicyKey::new(b"p".to_vec()).unwrap();
    store
        .write(vec![
            WriteOp::PutWallet {
                wallet: w.clone(),
                value: b"s".to_vec(),
            },
            WriteOp::CasPolicy {
                wallet: w.clone(),
                key: key.clone(),
                expected: None,
                new: b"5".to_vec(),
            },
        ])
        .unwrap();
    let before = store.wallet_epoch(&w).unwrap().unwrap();
    let out = store
        .write(vec![WriteOp::BumpWalletEpoch { wallet: w.clone() }])
        .unwrap();
    let WriteOutcome::Committed(results) = out else {
        panic!("bump skipped")
    };
    let [OpResult::EpochBumped(after)] = results.as_slice() else {
        panic!("unexpected {results:?}")
    };
    assert!(*after > before);
    assert_eq!(store.wallet_epoch(&w).unwrap(), Some(*after));
    assert_eq!(store.wallet(&w).unwrap().unwrap().as_slice(), b"s");
    assert_eq!(store.policy(&w, &key).unwrap().unwrap().as_slice(), b"5");
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
                    value: b"dkg".to_vec(),
                },
                WriteOp::PutMeta {
                    name: name.clone(),
                    value: b"me".to_vec(),
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
        let store = EncryptedStore::open(
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
