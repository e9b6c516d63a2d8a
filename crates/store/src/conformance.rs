//! A conformance suite for [`Store`] implementations (feature
//! `test-util`): the behaviour the engine relies on, run against the
//! encrypted store on every backend and against any double another crate
//! writes.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test harness: a failed expectation is a failed test"
)]

use crate::{
    AuditSeq, CommitmentHash, Conflict, KeyEpoch, Marker, MetaName, OpResult, PackageHash,
    PolicyKey, Store, Timestamp, WalletId, WriteOp, WriteOutcome,
};

/// Runs every check against `store`, which must be empty. Panics on the
/// first behaviour that differs from the [`Store`] contract.
pub fn check_store(store: &dyn Store) {
    records_round_trip_and_conditions_hold(store);
    a_failed_condition_takes_back_the_whole_unit(store);
    markers_expire_and_are_purged(store);
    a_metadata_record_swaps_only_from_the_value_read(store);
    epoch_bump_reseals_wallet_state_and_policy(store);
    submitted_units_apply_in_order_waited_for_or_not(store);
}

fn wallet(n: u8) -> WalletId {
    WalletId::new(format!("c{n}")).unwrap()
}

fn marker(hash: u8, expires: u64) -> Marker {
    Marker {
        package_hash: PackageHash([hash; 32]),
        shares: vec![hash; 40],
        expires_at: Timestamp(expires),
    }
}

/// A compare-and-set of policy record `key` of `wallet`.
fn policy_cas(wallet: &WalletId, key: &PolicyKey, expected: Option<&[u8]>, new: &[u8]) -> WriteOp {
    WriteOp::CasPolicy {
        wallet: wallet.clone(),
        key: key.clone(),
        expected: expected.map(<[u8]>::to_vec),
        new: new.to_vec(),
    }
}

fn records_round_trip_and_conditions_hold(store: &dyn Store) {
    let w = wallet(1);
    let out = store
        .write(vec![
            WriteOp::PutWallet {
                wallet: w.clone(),
                value: b"state-1".to_vec(),
            },
            WriteOp::InsertKeyPackage {
                wallet: w.clone(),
                epoch: KeyEpoch(1),
                value: b"kp-1".to_vec().into(),
            },
            WriteOp::AppendAudit {
                at: Timestamp(1_000),
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
            epoch: KeyEpoch(1),
            value: b"kp-other".to_vec().into(),
        }])
        .unwrap();
    assert_eq!(
        again,
        WriteOutcome::Skipped {
            op: 0,
            conflict: Conflict::KeyPackagePresent(b"kp-1".to_vec().into())
        }
    );
    assert_eq!(
        store
            .key_package(&w, KeyEpoch(1))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"kp-1"
    );

    // Marker insert-if-absent returns the stored marker on a replay.
    let c = CommitmentHash([7; 32]);
    let m = marker(1, 100_000);
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
        store.write(vec![insert(marker(2, 100_000))]).unwrap(),
        WriteOutcome::Skipped {
            op: 0,
            conflict: Conflict::MarkerPresent(m.clone())
        }
    );
    assert_eq!(store.marker(&w, &c).unwrap(), Some(m));
}

fn a_failed_condition_takes_back_the_whole_unit(store: &dyn Store) {
    let audit_before = store.audit(AuditSeq(1), 100).unwrap().len();
    let w = wallet(2);
    let key = PolicyKey::new(b"daily".to_vec()).unwrap();
    let cas = |expected: Option<&[u8]>, new: &[u8]| policy_cas(&w, &key, expected, new);
    store.write(vec![cas(None, b"1")]).unwrap();
    let c = CommitmentHash([1; 32]);
    // Marker first, then a CAS that fails: the marker must not remain.
    let out = store
        .write(vec![
            WriteOp::InsertMarker {
                wallet: w.clone(),
                commitment: c,
                marker: marker(3, 10_000),
            },
            WriteOp::AppendAudit {
                at: Timestamp(1_000),
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
    assert_eq!(store.audit(AuditSeq(1), 100).unwrap().len(), audit_before);
    assert_eq!(store.policy(&w, &key).unwrap().unwrap().as_slice(), b"1");
    // The right expectation swaps.
    assert_eq!(
        store.write(vec![cas(Some(b"1"), b"2")]).unwrap(),
        WriteOutcome::Committed(vec![OpResult::Swapped])
    );
}

/// Units submitted one after another apply in that order, whether their
/// outcomes are waited for in another order or not at all: each
/// compare-and-set here expects what the unit before it wrote.
fn submitted_units_apply_in_order_waited_for_or_not(store: &dyn Store) {
    let w = wallet(9);
    let key = PolicyKey::new(b"chain".to_vec()).unwrap();
    let cas = |expected: Option<&[u8]>, new: &[u8]| policy_cas(&w, &key, expected, new);
    let first = store.submit(vec![cas(None, b"1")]).unwrap();
    let dropped = store.submit(vec![cas(Some(b"1"), b"2")]).unwrap();
    let last = store.submit(vec![cas(Some(b"2"), b"3")]).unwrap();
    drop(dropped);
    assert_eq!(
        last.wait().unwrap(),
        WriteOutcome::Committed(vec![OpResult::Swapped])
    );
    assert_eq!(
        first.wait().unwrap(),
        WriteOutcome::Committed(vec![OpResult::Swapped])
    );
    assert_eq!(store.policy(&w, &key).unwrap().unwrap().as_slice(), b"3");
}

fn a_metadata_record_swaps_only_from_the_value_read(store: &dyn Store) {
    let name = MetaName::new(b"conformance-cas".to_vec()).unwrap();
    let cas = |expected: Option<&[u8]>, new: &[u8]| WriteOp::CasMeta {
        name: name.clone(),
        expected: expected.map(<[u8]>::to_vec),
        new: new.to_vec().into(),
    };
    assert_eq!(
        store.write(vec![cas(None, b"1")]).unwrap(),
        WriteOutcome::Committed(vec![OpResult::Swapped])
    );
    // A second writer that read "absent" too is refused, and told the value.
    assert_eq!(
        store.write(vec![cas(None, b"2")]).unwrap(),
        WriteOutcome::Skipped {
            op: 0,
            conflict: Conflict::MetaMismatch(Some(b"1".to_vec()))
        }
    );
    assert_eq!(store.meta(&name).unwrap().unwrap().as_slice(), b"1");
    assert_eq!(
        store.write(vec![cas(Some(b"1"), b"2")]).unwrap(),
        WriteOutcome::Committed(vec![OpResult::Swapped])
    );
    assert_eq!(store.meta(&name).unwrap().unwrap().as_slice(), b"2");
    // A condition writes nothing, and a failed one takes back its unit.
    let expect = |expected: Option<&[u8]>| WriteOp::ExpectMeta {
        name: name.clone(),
        expected: expected.map(<[u8]>::to_vec),
    };
    assert_eq!(
        store.write(vec![expect(Some(b"2"))]).unwrap(),
        WriteOutcome::Committed(vec![OpResult::Matched])
    );
    assert_eq!(
        store
            .write(vec![expect(Some(b"1")), cas(Some(b"2"), b"3")])
            .unwrap(),
        WriteOutcome::Skipped {
            op: 0,
            conflict: Conflict::MetaMismatch(Some(b"2".to_vec()))
        }
    );
    assert_eq!(store.meta(&name).unwrap().unwrap().as_slice(), b"2");
}

fn markers_expire_and_are_purged(store: &dyn Store) {
    let w = wallet(3);
    for (i, expires) in [(1u8, 10_000u64), (2, 20_000), (3, 30_000)] {
        store
            .write(vec![WriteOp::InsertMarker {
                wallet: w.clone(),
                commitment: CommitmentHash([i; 32]),
                marker: marker(i, expires),
            }])
            .unwrap();
    }
    let out = store
        .write(vec![WriteOp::PurgeMarkers {
            now: Timestamp(20_000),
        }])
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

fn epoch_bump_reseals_wallet_state_and_policy(store: &dyn Store) {
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
