//! I4 and I5: each kind of damage gets its own typed error, and nothing is
//! reset or overwritten.

mod common;

use std::sync::Arc;

use common::{Machine, edit_raw, put_wallet, raw_get, raw_put, wallet, wallet_key, wallet_value};
use redb::ReadableTable as _;
use thresig_store::provider::{KeyProvider, MemoryProvider};
use thresig_store::{
    EncryptedStore, Error, RecordTable, Recovery, RecoverySecretKey, RollbackPolicy, SimDisk,
    Store, StoreLocation, StoreOptions, WriteOp,
};

fn two_wallets(machine: &Machine) {
    let store = machine.open().unwrap();
    put_wallet(&store, 1, b"one");
    put_wallet(&store, 2, b"two");
}

#[test]
fn wrong_kek_is_terminal_and_writes_nothing() {
    let machine = Machine::new();
    two_wallets(&machine);
    let before = machine.open().unwrap().keyring_status().unwrap();
    let wrong = Machine {
        disk: machine.disk.clone(),
        witness: machine.witness.clone(),
        provider: Arc::new(MemoryProvider::with_key("kek-1", 99)),
    };
    let err = wrong.open().unwrap_err();
    assert!(matches!(err, Error::WrongKek { .. }), "{err:?}");
    assert_eq!(err.recovery(), Recovery::Terminal);
    let store = machine.open().unwrap();
    assert_eq!(store.keyring_status().unwrap(), before, "keyring untouched");
    assert_eq!(wallet_value(&store, 1).as_slice(), b"one");
}

#[test]
fn lost_kek_version_is_terminal_and_recovery_brings_the_store_back() {
    let machine = Machine::new();
    let (sk, pk) = RecoverySecretKey::generate(&mut rand_core::OsRng);
    let mut options = StoreOptions::default();
    options.recovery_key = Some(pk);
    {
        let store = machine.open_with(options.clone()).unwrap();
        put_wallet(&store, 1, b"one");
    }
    machine.provider.add_key("kek-2", 2);
    machine.provider.set_current("kek-2");
    machine.provider.destroy_key("kek-1");
    let err = machine.open_with(options.clone()).unwrap_err();
    assert!(matches!(err, Error::KekUnavailable { .. }), "{err:?}");
    assert_eq!(err.recovery(), Recovery::Terminal);

    let db = redb::Database::builder()
        .create_with_backend(machine.disk.backend())
        .unwrap();
    let provider: Arc<dyn KeyProvider> = machine.provider.clone();
    let store = EncryptedStore::recover(
        StoreLocation::Database {
            db,
            witness: machine.witness.clone(),
        },
        provider,
        &sk,
        options.clone(),
    )
    .unwrap();
    assert_eq!(wallet_value(&store, 1).as_slice(), b"one");
    drop(store);
    // Rewrapped under kek-2: a plain open works again.
    let store = machine.open_with(options).unwrap();
    assert_eq!(wallet_value(&store, 1).as_slice(), b"one");
}

#[test]
fn tampered_record_marks_only_its_wallet_corrupt() {
    let machine = Machine::new();
    two_wallets(&machine);
    edit_raw(&machine, |txn| {
        let key = wallet_key(&wallet(1));
        let mut v = raw_get(txn, "wallets", &key).unwrap();
        *v.last_mut().unwrap() ^= 0x40;
        raw_put(txn, "wallets", &key, &v);
    });
    let store = machine.open().unwrap();
    let err = store.wallet(&wallet(1)).unwrap_err();
    assert!(
        matches!(&err, Error::RecordTampered { table: RecordTable::Wallets, wallet: Some(w), .. } if *w == wallet(1)),
        "{err:?}"
    );
    assert_eq!(err.recovery(), Recovery::Terminal);
    // The other wallet keeps working, for reads and writes.
    assert_eq!(wallet_value(&store, 2).as_slice(), b"two");
    put_wallet(&store, 2, b"two-b");
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
    // The corrupt wallet is never overwritten.
    let refused = store
        .write(vec![WriteOp::PutWallet {
            wallet: wallet(1),
            value: b"reset".to_vec(),
        }])
        .unwrap_err();
    assert!(
        matches!(refused, Error::WalletCorrupt { .. }),
        "{refused:?}"
    );
    let report = store.verify().unwrap();
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(report.ok > 0);
    assert!(
        store.wallet(&wallet(1)).is_err(),
        "still an error, not absent"
    );
}

#[test]
fn record_moved_between_keys_is_detected() {
    let machine = Machine::new();
    two_wallets(&machine);
    edit_raw(&machine, |txn| {
        let one = raw_get(txn, "wallets", &wallet_key(&wallet(1))).unwrap();
        raw_put(txn, "wallets", &wallet_key(&wallet(2)), &one);
    });
    let store = machine.open().unwrap();
    let err = store.wallet(&wallet(2)).unwrap_err();
    assert!(matches!(err, Error::RecordMoved { .. }), "{err:?}");
    assert_eq!(wallet_value(&store, 1).as_slice(), b"one");
}

#[test]
fn older_ciphertext_swapped_in_is_stale() {
    let machine = Machine::new();
    two_wallets(&machine);
    let mut old = None;
    edit_raw(&machine, |txn| {
        old = raw_get(txn, "wallets", &wallet_key(&wallet(1)));
    });
    {
        let store = machine.open().unwrap();
        store
            .write(vec![WriteOp::BumpWalletEpoch { wallet: wallet(1) }])
            .unwrap();
        put_wallet(&store, 1, b"one-after-refresh");
    }
    edit_raw(&machine, |txn| {
        raw_put(txn, "wallets", &wallet_key(&wallet(1)), &old.unwrap());
    });
    let store = machine.open().unwrap();
    let err = store.wallet(&wallet(1)).unwrap_err();
    assert!(matches!(err, Error::RecordStale { .. }), "{err:?}");
    assert_eq!(wallet_value(&store, 2).as_slice(), b"two");
}

#[test]
fn tampered_keyring_or_metadata_refuses_the_open() {
    let machine = Machine::new();
    two_wallets(&machine);
    let clean = machine.disk.image();
    edit_raw(&machine, |txn| {
        let table = redb::TableDefinition::<u64, &[u8]>::new("keyring");
        let mut t = txn.open_table(table).unwrap();
        let mut v = t.get(1).unwrap().unwrap().value().to_vec();
        let at = v.len() - 4;
        v[at] = if v[at] == b'0' { b'1' } else { b'0' };
        t.insert(1, v.as_slice()).unwrap();
    });
    let err = machine.open().unwrap_err();
    assert!(matches!(err, Error::KeyringCorrupt { .. }), "{err:?}");

    let machine = Machine {
        disk: SimDisk::from_image(clean),
        witness: machine.witness.clone(),
        provider: machine.provider.clone(),
    };
    edit_raw(&machine, |txn| {
        let mut v = raw_get(txn, "sys", b"generation").unwrap();
        *v.last_mut().unwrap() ^= 1;
        raw_put(txn, "sys", b"generation", &v);
    });
    let err = machine.open().unwrap_err();
    assert!(matches!(err, Error::MetadataCorrupt { .. }), "{err:?}");
    assert_eq!(err.recovery(), Recovery::Terminal);
}

#[test]
fn database_older_than_witness_is_refused_unless_overridden() {
    let machine = Machine::new();
    two_wallets(&machine);
    let old_image = machine.disk.image();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"newer");
        store.rotate_dek().unwrap();
    }
    let rolled_back = Machine {
        disk: SimDisk::from_image(old_image.clone()),
        witness: machine.witness.clone(),
        provider: machine.provider.clone(),
    };
    let witness_before = machine.witness.bytes();
    let err = rolled_back.open().unwrap_err();
    let Error::RollbackDetected { accept, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(err.recovery(), Recovery::Terminal);
    assert_eq!(machine.witness.bytes(), witness_before, "witness untouched");
    let mut options = StoreOptions::default();
    options.rollback = RollbackPolicy::AcceptOlderDatabase(accept);
    let store = rolled_back.open_with(options).unwrap();
    assert_eq!(wallet_value(&store, 1).as_slice(), b"one");
}

#[test]
fn database_ahead_of_witness_repairs_it() {
    let machine = Machine::new();
    two_wallets(&machine);
    let stale_witness = machine.witness.bytes();
    {
        let store = machine.open().unwrap();
        store.rotate_dek().unwrap();
    }
    machine.witness.set_bytes(stale_witness.clone());
    let store = machine.open().unwrap();
    drop(store);
    assert_ne!(
        machine.witness.bytes(),
        stale_witness,
        "witness moved forward"
    );
    let mut tampered = machine.witness.bytes().unwrap();
    // In the header, which no write touches once the file is made (a slot
    // that fails its MAC alone is what a torn write leaves, and is passed
    // over for the other: tests/witness.rs).
    let at = 20;
    tampered[at] ^= 1;
    machine.witness.set_bytes(Some(tampered));
    assert!(matches!(
        machine.open().unwrap_err(),
        Error::WitnessCorrupt { .. }
    ));
}

#[test]
fn a_marker_that_fails_to_authenticate_is_never_treated_as_absent() {
    use thresig_store::{CommitmentHash, Marker, PackageHash, Timestamp};
    let machine = Machine::new();
    let c = CommitmentHash([3; 32]);
    let insert = |hash: u8| WriteOp::InsertMarker {
        wallet: wallet(1),
        commitment: c,
        marker: Marker {
            package_hash: PackageHash([hash; 32]),
            shares: vec![hash; 8],
            expires_at: Timestamp(100_000),
        },
    };
    {
        let store = machine.open().unwrap();
        store.write(vec![insert(1)]).unwrap();
    }
    let key = [wallet_key(&wallet(1)), c.0.to_vec()].concat();
    edit_raw(&machine, |txn| {
        let mut v = raw_get(txn, "markers", &key).unwrap();
        *v.last_mut().unwrap() ^= 1;
        raw_put(txn, "markers", &key, &v);
    });
    let store = machine.open().unwrap();
    // A second package for the same commitment must not get shares.
    let err = store.write(vec![insert(2)]).unwrap_err();
    assert!(matches!(err, Error::RecordTampered { .. }), "{err:?}");
    assert!(store.marker(&wallet(1), &c).is_err());
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
}

fn flip_last(machine: &Machine, table: &str, key: &[u8]) {
    edit_raw(machine, |txn| {
        let mut v = raw_get(txn, table, key).unwrap();
        *v.last_mut().unwrap() ^= 1;
        raw_put(txn, table, key, &v);
    });
}

/// I4: "nothing is ever reset to empty". A database without its format row
/// but with any other row is not new: the open must refuse it and write
/// nothing (initialising over it would overwrite keyring entry 1, the only
/// wrap of the DEK every record is sealed under).
#[test]
fn a_missing_format_row_refuses_the_open_and_rewrites_nothing() {
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"one");
    }
    let keyring_entry = |m: &Machine| {
        let mut out = None;
        edit_raw(m, |txn| {
            let t = txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new("keyring"))
                .unwrap();
            out = Some(t.get(1).unwrap().unwrap().value().to_vec());
        });
        out.unwrap()
    };
    let before = keyring_entry(&machine);
    edit_raw(&machine, |txn| {
        let mut t = txn
            .open_table(redb::TableDefinition::<&str, u32>::new("format"))
            .unwrap();
        t.remove("schema_version").unwrap();
    });
    let r = machine.open();
    let outcome = format!("{:?}", r.as_ref().map(|_| ()));
    assert!(
        matches!(r, Err(Error::MetadataCorrupt { name: "format", .. })),
        "{outcome}"
    );
    drop(r);
    assert_eq!(
        keyring_entry(&machine),
        before,
        "open over a damaged format row rewrote the keyring (open: {outcome})"
    );
}

/// Two wallets, then wallet 1's epoch record damaged on disk; reopened.
fn wallet_1_epoch_record_damaged(machine: &Machine) -> EncryptedStore {
    two_wallets(machine);
    flip_last(machine, "epochs", &wallet_key(&wallet(1)));
    machine.open().unwrap()
}

/// I4: "A wallet whose records fail to authenticate is marked corrupt ...
/// while other wallets keep serving." Every global epoch bump re-seals every
/// wallet's epoch record; one damaged record must not stop another wallet's
/// bump, and the damaged wallet is marked corrupt, not repaired.
#[test]
fn a_bad_epoch_record_does_not_block_other_wallets_epoch_bumps() {
    use thresig_store::WriteOutcome;
    let machine = Machine::new();
    let store = wallet_1_epoch_record_damaged(&machine);
    let out = store.write(vec![WriteOp::BumpWalletEpoch { wallet: wallet(2) }]);
    assert!(
        matches!(out, Ok(WriteOutcome::Committed(_))),
        "wallet 2's epoch bump must not depend on wallet 1's records: {out:?}"
    );
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
    assert!(store.wallet_epoch(&wallet(1)).is_err(), "never re-sealed");
    assert_eq!(store.wallet(&wallet(2)).unwrap().unwrap().to_vec(), b"two");
}

/// I4 (same cause): a DEK promotion bumps the global epoch, so one damaged
/// wallet must not stop key rotation for the whole signer.
#[test]
fn a_bad_epoch_record_does_not_block_dek_rotation() {
    let machine = Machine::new();
    let store = wallet_1_epoch_record_damaged(&machine);
    let r = store.start_dek_rotation();
    assert!(r.is_ok(), "promotion blocked by one wallet: {r:?}");
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
}

/// I4: "nothing is ever reset": a put over a record that fails to
/// authenticate is refused (the old value is opened first), so the evidence
/// is not erased.
#[test]
fn a_record_failing_authentication_is_never_overwritten() {
    use thresig_store::MetaName;
    let machine = Machine::new();
    let name = MetaName::new(b"engine".to_vec()).unwrap();
    {
        let store = machine.open().unwrap();
        store
            .write(vec![WriteOp::PutMeta {
                name: name.clone(),
                value: b"v1".to_vec().into(),
            }])
            .unwrap();
    }
    flip_last(&machine, "meta", name.as_bytes());
    let store = machine.open().unwrap();
    assert!(
        store.meta(&name).is_err(),
        "tampered record detected on read"
    );
    let out = store.write(vec![WriteOp::PutMeta {
        name: name.clone(),
        value: b"v2".to_vec().into(),
    }]);
    assert!(
        out.is_err(),
        "a record failing authentication must not be overwritten: {out:?}"
    );
}

/// I4: "A keyring ... record that fails to authenticate refuses the open."
/// An entry's `state` is plain JSON; flipping a still-needed DEK to
/// "retired" must be caught by the keyring digest sealed in the current-DEK
/// record, not open and strand that DEK's records.
#[test]
fn a_keyring_entry_flipped_to_retired_refuses_the_open() {
    let machine = Machine::new();
    {
        let mut options = thresig_store::StoreOptions::default();
        options.reseal_batch = 1;
        let store = machine.open_with(options).unwrap();
        put_wallet(&store, 1, b"one");
        // Promote term 2 and re-seal the store metadata, leaving wallet 1's
        // state record under term 1 (its epoch record was re-sealed by the
        // promotion's epoch bump); the rotation is in progress.
        store.start_dek_rotation().unwrap();
        let under_1 = |s: &thresig_store::EncryptedStore| {
            let st = s.keyring_status().unwrap();
            st.deks
                .iter()
                .find(|d| d.term == thresig_store::DekTerm(1))
                .map_or(0, |d| d.records)
        };
        while under_1(&store) > 1 {
            assert_eq!(store.reseal_step().unwrap(), 1);
        }
    }
    edit_raw(&machine, |txn| {
        let table = redb::TableDefinition::<u64, &[u8]>::new("keyring");
        let mut t = txn.open_table(table).unwrap();
        let v = t.get(1).unwrap().unwrap().value().to_vec();
        let s = String::from_utf8(v)
            .unwrap()
            .replace("\"active\"", "\"retired\"");
        t.insert(1, s.as_bytes()).unwrap();
    });
    let r = machine.open();
    let detail = r.as_ref().map(|s| format!("{:?}", s.wallet(&wallet(1))));
    eprintln!("open -> {:?}", r.as_ref().map(|_| ()));
    assert!(
        r.is_err(),
        "tampered keyring entry accepted at open; wallet read: {detail:?}"
    );
}

/// I4: deletes open the record first too: a key package that fails to
/// authenticate is neither deleted nor treated as absent.
#[test]
fn a_key_package_failing_authentication_is_never_deleted() {
    use thresig_store::{KeyEpoch, Plaintext};
    let machine = Machine::new();
    let key = [wallet_key(&wallet(1)), 1u64.to_be_bytes().to_vec()].concat();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"one");
        store
            .write(vec![WriteOp::InsertKeyPackage {
                wallet: wallet(1),
                epoch: KeyEpoch(1),
                value: Plaintext::from(b"pkg".to_vec()),
            }])
            .unwrap();
    }
    flip_last(&machine, "key_packages", &key);
    let store = machine.open().unwrap();
    let out = store.write(vec![WriteOp::DeleteKeyPackage {
        wallet: wallet(1),
        epoch: KeyEpoch(1),
    }]);
    assert!(matches!(out, Err(Error::RecordTampered { .. })), "{out:?}");
    let mut still = None;
    edit_raw(&machine, |txn| still = raw_get(txn, "key_packages", &key));
    assert!(still.is_some(), "the tampered record was deleted");
}

/// I4: re-sealing for a DEK rotation skips a wallet record that fails to
/// authenticate (marking that wallet corrupt, leaving the record as it is)
/// and still moves every other wallet's records to the new DEK.
#[test]
fn a_damaged_wallet_record_does_not_stop_resealing_the_others() {
    use thresig_store::DekTerm;
    let machine = Machine::new();
    two_wallets(&machine);
    flip_last(&machine, "wallets", &wallet_key(&wallet(1)));
    let before = {
        let mut v = None;
        edit_raw(&machine, |txn| {
            v = raw_get(txn, "wallets", &wallet_key(&wallet(1)))
        });
        v.unwrap()
    };
    let mut options = StoreOptions::default();
    options.reseal_batch = 1;
    let store = machine.open_with(options).unwrap();
    store.start_dek_rotation().unwrap();
    while store.reseal_step().unwrap() > 0 {}
    let under_1 = store
        .keyring_status()
        .unwrap()
        .deks
        .iter()
        .find(|d| d.term == DekTerm(1))
        .map(|d| d.records);
    assert_eq!(
        under_1,
        Some(1),
        "only the damaged record stays under term 1"
    );
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
    assert_eq!(store.wallet(&wallet(2)).unwrap().unwrap().to_vec(), b"two");
    drop(store);
    let mut after = None;
    edit_raw(&machine, |txn| {
        after = raw_get(txn, "wallets", &wallet_key(&wallet(1)))
    });
    assert_eq!(after.unwrap(), before, "never re-sealed or reset");
}

/// An index entry whose record was deleted must not stall the re-seal: the
/// step skips it and returns, the other records move on, and the old DEK
/// stays in use (retirement refuses) while the store disagrees with its
/// index. The watchdog turns a regression (the writer spinning inside its
/// transaction) into a failure instead of a hung suite.
#[test]
fn an_index_entry_without_its_record_is_skipped_by_the_reseal() {
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"one");
        put_wallet(&store, 2, b"two");
        store.start_dek_rotation().unwrap();
    }
    edit_raw(&machine, |txn| {
        let mut t = txn.open_table(common::raw_table("wallets")).unwrap();
        assert!(
            t.remove(wallet_key(&wallet(1)).as_slice())
                .unwrap()
                .is_some()
        );
    });
    let store = Arc::new(machine.open().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let stepper = Arc::clone(&store);
    std::thread::spawn(move || {
        let _ = tx.send(stepper.reseal_step().map_err(|e| e.to_string()));
    });
    let resealed = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("reseal_step must return, not spin");
    assert!(resealed.is_ok(), "{resealed:?}");
    assert_eq!(wallet_value(store.as_ref(), 2), b"two");
    assert!(
        matches!(store.retire_old_deks(), Err(Error::DekInUse { .. })),
        "the old DEK must stay while its index names a missing record"
    );
}

/// A DEK rotation with a corrupt wallet re-seals every other record, then
/// stops with a terminal error naming the wallet (its record can never be
/// re-sealed), instead of a retryable `DekInUse` that no retry can clear.
#[test]
fn a_rotation_held_by_a_corrupt_wallet_is_terminal_and_names_it() {
    use thresig_store::DekTerm;
    let machine = Machine::new();
    two_wallets(&machine);
    flip_last(&machine, "wallets", &wallet_key(&wallet(1)));
    let store = machine.open().unwrap();
    for attempt in 0..2 {
        let err = store.rotate_dek().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::DekHeldByCorruptWallet { term: DekTerm(1), wallet: w } if *w == wallet(1)
            ),
            "attempt {attempt}: {err:?}"
        );
        assert_eq!(err.recovery(), Recovery::Terminal);
        assert!(err.to_string().contains(&wallet(1).to_string()), "{err}");
    }
    let status = store.keyring_status().unwrap();
    let records = |term| {
        status
            .deks
            .iter()
            .find(|d| d.term == term)
            .map(|d| d.records)
    };
    assert_eq!(
        records(DekTerm(1)),
        Some(1),
        "only the corrupt record stays"
    );
    assert_eq!(wallet_value(&store, 2), b"two");
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
    // Step by step, retiring refuses the same way.
    let err = store.retire_old_deks().unwrap_err();
    assert!(
        matches!(err, Error::DekHeldByCorruptWallet { .. }),
        "{err:?}"
    );
}

fn marker_op(n: u8, commitment: u8, package: u8) -> WriteOp {
    use thresig_store::{CommitmentHash, Marker, PackageHash, Timestamp};
    WriteOp::InsertMarker {
        wallet: wallet(n),
        commitment: CommitmentHash([commitment; 32]),
        marker: Marker {
            package_hash: PackageHash([package; 32]),
            shares: vec![package; 8],
            expires_at: Timestamp(4_000_000_000_000),
        },
    }
}

fn marker_key(n: u8, commitment: u8) -> Vec<u8> {
    [wallet_key(&wallet(n)), vec![commitment; 32]].concat()
}

/// I4/I5: a marker row deleted from the closed database must not read as
/// absent, or the same commitment would release shares for a second
/// package. The wallet's marker set no longer matches its sealed digest:
/// the lookup and the insert are terminal errors for that wallet only.
#[test]
fn a_deleted_marker_row_is_an_error_never_absent() {
    use thresig_store::CommitmentHash;
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        for op in [marker_op(1, 3, 1), marker_op(1, 4, 1), marker_op(2, 3, 1)] {
            store.write(vec![op]).unwrap();
        }
    }
    edit_raw(&machine, |txn| {
        let mut t = txn.open_table(common::raw_table("markers")).unwrap();
        assert!(t.remove(marker_key(1, 3).as_slice()).unwrap().is_some());
    });
    let store = machine.open().unwrap();
    let looked_up = store.marker(&wallet(1), &CommitmentHash([3; 32]));
    let err = looked_up.expect_err("a deleted marker read as absent");
    assert!(
        matches!(&err, Error::MarkerSetMismatch { wallet: w, .. } if *w == wallet(1)),
        "{err:?}"
    );
    assert_eq!(err.recovery(), Recovery::Terminal, "{err:?}");
    let second = store.write(vec![marker_op(1, 3, 2)]);
    assert!(
        second.is_err(),
        "a second package for the commitment was accepted: {second:?}"
    );
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
    // Wallet 2's markers still serve.
    let other = store.marker(&wallet(2), &CommitmentHash([3; 32])).unwrap();
    assert!(other.is_some());
}

/// The marker-set digest itself put back from before a marker was inserted,
/// with that marker deleted: the wallet's set then matches the old digest,
/// so the digest must be bound to something newer than itself.
#[test]
fn a_marker_deleted_with_its_set_digest_put_back_is_detected() {
    use thresig_store::CommitmentHash;
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        store.write(vec![marker_op(1, 3, 1)]).unwrap();
    }
    let mut before = Vec::new();
    edit_raw(&machine, |txn| before = dump(txn, "marker_sets"));
    {
        let store = machine.open().unwrap();
        store.write(vec![marker_op(1, 4, 1)]).unwrap();
        put_wallet(&store, 2, b"two");
    }
    edit_raw(&machine, |txn| {
        restore(txn, "marker_sets", &before);
        let mut t = txn.open_table(common::raw_table("markers")).unwrap();
        assert!(t.remove(marker_key(1, 4).as_slice()).unwrap().is_some());
    });
    match machine.open() {
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::MetadataCorrupt {
                        name: "marker_sets",
                        ..
                    }
                ),
                "{e:?}"
            );
            assert_eq!(e.recovery(), Recovery::Terminal, "{e:?}");
        }
        Ok(store) => {
            let r = store.marker(&wallet(1), &CommitmentHash([4; 32]));
            assert!(r.is_err(), "the deleted marker read as {r:?}");
        }
    }
}

/// Every row of raw table `name` (empty if the table does not exist).
fn dump(txn: &redb::WriteTransaction, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(t) = txn.open_table(common::raw_table(name)) else {
        return Vec::new();
    };
    t.iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value().to_vec(), v.value().to_vec())
        })
        .collect()
}

/// Replaces every row of raw table `name` by `rows`.
fn restore(txn: &redb::WriteTransaction, name: &str, rows: &[(Vec<u8>, Vec<u8>)]) {
    let mut t = txn.open_table(common::raw_table(name)).unwrap();
    t.retain(|_, _| false).unwrap();
    for (k, v) in rows {
        t.insert(k.as_slice(), v.as_slice()).unwrap();
    }
}

/// The keyring digest bound to the global epoch: the current-DEK record
/// from before DEK 1's retirement, put back with the keyring rows it
/// covers (both sealed under DEK 2, still current), must not bring DEK 1
/// back.
#[test]
fn an_older_current_dek_record_put_back_with_its_keyring_is_refused() {
    use thresig_store::DekTerm;
    let machine = Machine::new();
    let mut before = Vec::new();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"one");
        store.start_dek_rotation().unwrap();
        drop(store);
        edit_raw(&machine, |txn| {
            let keyring = redb::TableDefinition::<u64, &[u8]>::new("keyring");
            let t = txn.open_table(keyring).unwrap();
            for r in t.iter().unwrap() {
                let (k, v) = r.unwrap();
                before.push((k.value(), v.value().to_vec()));
            }
        });
        before.push((0, {
            let mut v = None;
            edit_raw(&machine, |txn| v = raw_get(txn, "sys", b"current_dek"));
            v.unwrap()
        }));
        let store = machine.open().unwrap();
        while store.reseal_step().unwrap() > 0 {}
        assert_eq!(store.retire_old_deks().unwrap(), vec![DekTerm(1)]);
    }
    edit_raw(&machine, |txn| {
        let keyring = redb::TableDefinition::<u64, &[u8]>::new("keyring");
        for (term, v) in &before {
            if *term == 0 {
                raw_put(txn, "sys", b"current_dek", v);
            } else {
                txn.open_table(keyring)
                    .unwrap()
                    .insert(*term, v.as_slice())
                    .unwrap();
            }
        }
    });
    let r = machine.open();
    let status = r.as_ref().ok().map(|s| s.keyring_status().unwrap());
    let err = r.expect_err(&format!("retirement undone: {status:?}"));
    assert!(matches!(err, Error::MetadataCorrupt { .. }), "{err:?}");
    assert_eq!(err.recovery(), Recovery::Terminal);
}

/// Removes `sys/store_id` from the closed database, checking it was there.
fn delete_identity_record(machine: &Machine) {
    edit_raw(machine, |txn| {
        let removed = txn
            .open_table(common::raw_table("sys"))
            .unwrap()
            .remove(b"store_id".as_slice())
            .unwrap()
            .is_some();
        assert!(removed, "no identity record: the test deletes nothing");
    });
}

/// Flips plaintext byte `at` of the sealed `sys/store_id` in its
/// ciphertext (`header (50) ‖ nonce (24) ‖ ciphertext`; the stream cipher
/// keeps offsets), as an edit of one field would.
fn flip_identity_byte(machine: &Machine, at: usize) {
    edit_raw(machine, |txn| {
        let mut v = raw_get(txn, "sys", b"store_id").unwrap();
        v[50 + 24 + at] ^= 1;
        raw_put(txn, "sys", b"store_id", &v);
    });
}

fn assert_identity_refused(r: Result<EncryptedStore, Error>) {
    let err = r
        .map(drop)
        .expect_err("a damaged identity record was accepted");
    assert!(
        matches!(
            err,
            Error::MetadataCorrupt {
                name: "store_id",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.recovery(), Recovery::Terminal);
}

/// The recovery key set at init is held in the identity record every store
/// has: deleting it refuses the open, so the options cannot choose another
/// key.
#[test]
fn a_deleted_identity_record_does_not_let_the_options_choose_another_recovery_key() {
    let machine = Machine::new();
    let (_, first) = RecoverySecretKey::generate(&mut rand_core::OsRng);
    let (_, other) = RecoverySecretKey::generate(&mut rand_core::OsRng);
    let mut options = StoreOptions::default();
    options.recovery_key = Some(first);
    drop(machine.open_with(options.clone()).unwrap());
    delete_identity_record(&machine);
    options.recovery_key = Some(other);
    assert_identity_refused(machine.open_with(options));
}

/// Once a witness was written, the missing-witness check must not hang on
/// a row that can be deleted: the flag sits in the identity record, whose
/// deletion refuses the open.
#[test]
fn a_deleted_identity_record_keeps_the_missing_witness_check() {
    let machine = Machine::new();
    two_wallets(&machine);
    delete_identity_record(&machine);
    machine.witness.set_bytes(None);
    assert_identity_refused(machine.open());
}

/// The `witness_written` byte edited in place (1 to 0) does not
/// authenticate: the missing witness is not accepted.
#[test]
fn an_edited_witness_written_byte_refuses_the_open() {
    let machine = Machine::new();
    two_wallets(&machine);
    flip_identity_byte(&machine, 16);
    machine.witness.set_bytes(None);
    assert_identity_refused(machine.open());
}

/// The stored recovery key edited in place does not authenticate: a store
/// opened without the option does not take the edited key for new DEKs.
#[test]
fn an_edited_recovery_key_refuses_the_open() {
    let machine = Machine::new();
    let (_, pk) = RecoverySecretKey::generate(&mut rand_core::OsRng);
    let mut options = StoreOptions::default();
    options.recovery_key = Some(pk);
    drop(machine.open_with(options).unwrap());
    flip_identity_byte(&machine, 17);
    assert_identity_refused(machine.open());
}

/// The identity record as init wrote it (no witness yet), put back into a
/// database with data once its witness is deleted, must not switch the
/// missing-witness check off.
#[test]
fn an_identity_record_from_before_the_first_witness_is_refused_once_data_exists() {
    let dir = tempfile::tempdir().unwrap();
    let provider: Arc<dyn KeyProvider> = Arc::new(MemoryProvider::with_key("kek-1", 1));
    let open = || {
        EncryptedStore::open(
            StoreLocation::Directory(dir.path().to_path_buf()),
            provider.clone(),
            StoreOptions::default(),
        )
    };
    // Creating the store initialises the database, then fails to write the
    // witness: the identity record still says none was written.
    let blocker = dir.path().join("state.witness.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let first = EncryptedStore::create(
        StoreLocation::Directory(dir.path().to_path_buf()),
        provider.clone(),
        StoreOptions::default(),
    );
    assert!(
        matches!(first, Err(Error::WitnessIo { .. })),
        "{:?}",
        first.map(drop)
    );
    std::fs::remove_dir(&blocker).unwrap();
    let mut initial = None;
    edit_file(dir.path(), |txn| initial = raw_get(txn, "sys", b"store_id"));
    {
        let store = open().unwrap();
        put_wallet(&store, 1, b"one");
    }
    let initial = initial.unwrap();
    edit_file(dir.path(), |txn| raw_put(txn, "sys", b"store_id", &initial));
    std::fs::remove_file(dir.path().join("state.witness")).unwrap();
    let r = open();
    let err = r.map(drop).expect_err("the witness check was switched off");
    assert!(
        matches!(
            err,
            Error::MetadataCorrupt {
                name: "store_id",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.recovery(), Recovery::Terminal);
}

/// Runs `f` in a raw write transaction on `<dir>/state.redb` (the store
/// must be closed).
fn edit_file(dir: &std::path::Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::create(dir.join("state.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

/// Wallets 1 and 2, each with a marker for commitment 3; closed.
fn markers_of_two_wallets(machine: &Machine) {
    let store = machine.open().unwrap();
    store.write(vec![marker_op(1, 3, 1)]).unwrap();
    store.write(vec![marker_op(2, 3, 1)]).unwrap();
}

/// I4: the marker-expiry index is plain, so an entry forged into it (an
/// early expiry for a live marker) must not make the purge delete that
/// marker and update the digests to match: the purge reads the marker's own
/// sealed expiry, keeps the marker and marks its wallet corrupt.
#[test]
fn a_forged_expiry_entry_does_not_purge_a_live_marker() {
    use thresig_store::{CommitmentHash, OpResult, Timestamp, WriteOutcome};
    let machine = Machine::new();
    markers_of_two_wallets(&machine);
    edit_raw(&machine, |txn| {
        let expiry = redb::TableDefinition::<&[u8], ()>::new("marker_expiry");
        let forged = [&[0u8; 8][..], &marker_key(1, 3)].concat();
        let mut t = txn.open_table(expiry).unwrap();
        assert!(t.insert(forged.as_slice(), ()).unwrap().is_none());
    });
    let store = machine.open().unwrap();
    let out = store.write(vec![WriteOp::PurgeMarkers {
        now: Timestamp(1_000),
    }]);
    assert_eq!(
        out.unwrap(),
        WriteOutcome::Committed(vec![OpResult::Purged(0)]),
        "a live marker was purged on a forged expiry entry"
    );
    let kept = store.marker(&wallet(1), &CommitmentHash([3; 32]));
    assert!(
        !matches!(kept, Ok(None)),
        "the live marker reads as absent after the purge"
    );
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
    let other = store.marker(&wallet(2), &CommitmentHash([3; 32])).unwrap();
    assert!(other.is_some(), "wallet 2's marker was touched");
}

/// I4 "at the right size": one wallet's marker-set digest failing to
/// authenticate is that wallet's damage, not the store's. The open goes on
/// (the wallet's digest is taken from its rows for the combined check), the
/// wallet is marked corrupt and the other wallets' markers keep serving.
#[test]
fn a_damaged_marker_set_digest_marks_only_its_wallet_corrupt() {
    use thresig_store::{CommitmentHash, Timestamp};
    let machine = Machine::new();
    markers_of_two_wallets(&machine);
    flip_last(&machine, "marker_sets", &wallet_key(&wallet(1)));
    let store = machine
        .open()
        .expect("one wallet's digest refused the store");
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
    let err = store
        .marker(&wallet(1), &CommitmentHash([3; 32]))
        .expect_err("the damaged wallet's markers are not used");
    assert!(
        matches!(&err, Error::RecordTampered { table: RecordTable::MarkerSets, wallet: Some(w), .. } if *w == wallet(1)),
        "{err:?}"
    );
    let other = store.marker(&wallet(2), &CommitmentHash([3; 32])).unwrap();
    assert!(other.is_some());
    // The purge leaves the damaged wallet's markers where they are and
    // purges the others'.
    store
        .write(vec![WriteOp::PurgeMarkers {
            now: Timestamp(u64::MAX),
        }])
        .unwrap();
    assert!(
        store
            .marker(&wallet(2), &CommitmentHash([3; 32]))
            .unwrap()
            .is_none()
    );
    drop(store);
    let mut kept = None;
    edit_raw(&machine, |txn| {
        kept = raw_get(txn, "markers", &marker_key(1, 3))
    });
    assert!(kept.is_some(), "the damaged wallet's marker was purged");
    // The digests still combine after the purge: the next open agrees.
    let store = machine.open().unwrap();
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
}

/// The combined check is not switched off by a damaged digest: wallet 1's
/// digest damaged while wallet 2's is put back from before its last marker,
/// that marker deleted, still refuses the open.
#[test]
fn a_damaged_digest_does_not_hide_another_wallets_digest_put_back() {
    let machine = Machine::new();
    markers_of_two_wallets(&machine);
    let mut before = None;
    edit_raw(&machine, |txn| {
        before = raw_get(txn, "marker_sets", &wallet_key(&wallet(2)));
    });
    {
        let store = machine.open().unwrap();
        store.write(vec![marker_op(2, 4, 1)]).unwrap();
    }
    edit_raw(&machine, |txn| {
        raw_put(
            txn,
            "marker_sets",
            &wallet_key(&wallet(2)),
            &before.clone().unwrap(),
        );
        let mut t = txn.open_table(common::raw_table("markers")).unwrap();
        assert!(t.remove(marker_key(2, 4).as_slice()).unwrap().is_some());
    });
    flip_last(&machine, "marker_sets", &wallet_key(&wallet(1)));
    let err = machine
        .open()
        .map(drop)
        .expect_err("a put-back digest passed");
    assert!(
        matches!(
            err,
            Error::MetadataCorrupt {
                name: "marker_sets",
                ..
            }
        ),
        "{err:?}"
    );
}

/// A wallet's record naming a DEK the keyring does not hold is that
/// wallet's damage, as a tampered record is: the wallet is listed corrupt
/// (so `keys verify` names the wallet whose refusals say `wallet_corrupt`)
/// and the other wallet keeps serving.
#[test]
fn a_record_under_a_missing_dek_marks_its_wallet_corrupt() {
    let machine = Machine::new();
    two_wallets(&machine);
    let key = wallet_key(&wallet(1));
    edit_raw(&machine, |txn| {
        let mut v = raw_get(txn, "wallets", &key).unwrap();
        // The envelope's DEK term: bytes 2..10, after version and table.
        v[2..10].copy_from_slice(&99u64.to_be_bytes());
        raw_put(txn, "wallets", &key, &v);
    });
    let store = machine.open().unwrap();
    let err = store.wallet(&wallet(1)).unwrap_err();
    assert!(matches!(err, Error::DekMissing { .. }), "{err:?}");
    assert!(err.marks_wallet_corrupt());
    assert_eq!(store.corrupt_wallets(), vec![wallet(1)]);
    assert_eq!(wallet_value(&store, 2).as_slice(), b"two");
    assert!(
        matches!(&err, Error::DekMissing { wallet: Some(w), .. } if *w == wallet(1)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("{:?}", Some(wallet(1)))),
        "{err}"
    );
}

/// A record whose key holds a wallet id no signer could write (outside
/// the id alphabet) is a tampered record of no wallet: it is reported by
/// `keys verify`, skipped by the DEK re-seal (which then cannot retire the
/// DEK it names), and stops neither the open, nor the other records' re-seal,
/// nor any wallet.
#[test]
fn a_record_under_a_forged_wallet_id_is_reported_and_stops_nothing_else() {
    use thresig_store::DekTerm;
    let machine = Machine::new();
    two_wallets(&machine);
    let forged = b"\x02w!".to_vec();
    edit_raw(&machine, |txn| {
        let row = raw_get(txn, "wallets", &wallet_key(&wallet(1))).unwrap();
        raw_put(txn, "wallets", &forged, &row);
        raw_put(txn, "marker_sets", &forged, &row);
        raw_put(txn, "epochs", &forged, &row);
        // Its DEK index entry, so the re-seal finds it.
        put_index_entry(txn, 1, 3, &forged);
    });
    let store = machine
        .open()
        .expect("a forged row must not refuse the open");
    assert_eq!(wallet_value(&store, 1), b"one");
    assert_eq!(wallet_value(&store, 2), b"two");
    put_wallet(&store, 3, b"three");
    assert_eq!(
        store.wallet_ids().unwrap(),
        vec![wallet(1), wallet(2), wallet(3)]
    );

    let report = store.verify().unwrap();
    let forged_tables: Vec<RecordTable> = report
        .failures
        .iter()
        .filter_map(|e| match e {
            Error::RecordTampered {
                table,
                wallet: None,
                ..
            }
            | Error::RecordMoved {
                table,
                wallet: None,
                ..
            } => Some(*table),
            _ => None,
        })
        .collect();
    for table in [
        RecordTable::Wallets,
        RecordTable::MarkerSets,
        RecordTable::Epochs,
    ] {
        assert!(
            forged_tables.contains(&table),
            "{table:?}: {:?}",
            report.failures
        );
    }
    assert_eq!(report.failures.len(), 3, "{:?}", report.failures);
    assert!(store.corrupt_wallets().is_empty());

    // The re-seal moves every other record and then cannot retire DEK 1,
    // which the forged record names: terminal, as for a corrupt wallet.
    let err = store.rotate_dek().unwrap_err();
    assert!(
        matches!(
            err,
            Error::DekHeldByTamperedRecord {
                term: DekTerm(1),
                table: RecordTable::Wallets
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.recovery(), Recovery::Terminal);
    let status = store.keyring_status().unwrap();
    let under_1 = status
        .deks
        .iter()
        .find(|d| d.term == DekTerm(1))
        .map(|d| d.records);
    assert_eq!(under_1, Some(1), "only the forged record stays");
    assert_eq!(wallet_value(&store, 1), b"one");
    assert_eq!(wallet_value(&store, 3), b"three");
}

/// Puts a DEK index entry naming `key` in `table` (by id) under `term`.
fn put_index_entry(txn: &redb::WriteTransaction, term: u64, table: u8, key: &[u8]) {
    let index: redb::TableDefinition<'_, &[u8], ()> = redb::TableDefinition::new("dek_index");
    let mut index = txn.open_table(index).unwrap();
    let entry = [&term.to_be_bytes()[..], &[table], key].concat();
    index.insert(entry.as_slice(), ()).unwrap();
}

/// One term held by a forged row does not keep every later term from
/// being retired: a second rotation retires term 2 (fully re-sealed), so
/// old shares sealed under it are not left decryptable, and still reports
/// the hold on term 1.
#[test]
fn a_forged_row_under_one_term_does_not_keep_later_terms_from_retiring() {
    use thresig_store::DekTerm;
    let machine = Machine::new();
    two_wallets(&machine);
    let forged = b"\x02w!".to_vec();
    edit_raw(&machine, |txn| {
        let row = raw_get(txn, "wallets", &wallet_key(&wallet(1))).unwrap();
        raw_put(txn, "wallets", &forged, &row);
        put_index_entry(txn, 1, 3, &forged);
    });
    let store = machine.open().unwrap();
    let held_by_1 = |err: &Error| {
        matches!(
            err,
            Error::DekHeldByTamperedRecord {
                term: DekTerm(1),
                ..
            }
        )
    };
    let err = store.rotate_dek().unwrap_err();
    assert!(held_by_1(&err), "{err:?}");
    let err = store.rotate_dek().unwrap_err();
    assert!(held_by_1(&err), "{err:?}");
    let status = store.keyring_status().unwrap();
    assert_eq!(status.current, DekTerm(3));
    assert_eq!(status.retired, vec![DekTerm(2)], "{status:?}");
    let active: Vec<DekTerm> = status.deks.iter().map(|d| d.term).collect();
    assert_eq!(active, vec![DekTerm(1), DekTerm(3)]);
    assert_eq!(wallet_value(&store, 1), b"one");
    assert_eq!(wallet_value(&store, 2), b"two");
}

/// Rotation finds a tampered record from the DEK index alone; `keys
/// verify` sees the same index entry, even with no record behind it.
#[test]
fn verify_reports_a_dek_index_entry_of_a_forged_wallet_id_without_a_record() {
    use thresig_store::DekTerm;
    let machine = Machine::new();
    two_wallets(&machine);
    edit_raw(&machine, |txn| put_index_entry(txn, 1, 3, b"\x02w!"));
    let store = machine.open().unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(
        matches!(
            report.failures[0],
            Error::DekHeldByTamperedRecord {
                term: DekTerm(1),
                table: RecordTable::Wallets
            }
        ),
        "{:?}",
        report.failures
    );
    assert!(store.corrupt_wallets().is_empty());
    let err = store.rotate_dek().unwrap_err();
    assert_eq!(err.code(), report.failures[0].code(), "{err:?}");
}

/// A DEK index entry of a real wallet with no record behind it (the
/// record was deleted outside the store) is reported too: rotation could
/// never retire the term it names.
#[test]
fn verify_reports_a_dek_index_entry_with_no_record() {
    let machine = Machine::new();
    two_wallets(&machine);
    let mut key = wallet_key(&wallet(1));
    key.extend_from_slice(&7u64.to_be_bytes());
    edit_raw(&machine, |txn| put_index_entry(txn, 1, 5, &key));
    let store = machine.open().unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(
        report.failures[0].corrupt_wallet(),
        Some(&wallet(1)),
        "{:?}",
        report.failures
    );
}
