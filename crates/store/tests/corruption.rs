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
        matches!(&err, Error::RecordTampered { table: RecordTable::Wallets, wallet: Some(w) } if *w == wallet(1)),
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
    let at = tampered.len() - 3;
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
            expires_at: Timestamp(100),
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
        matches!(r, Err(Error::MetadataCorrupt { name: "format" })),
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
    use thresig_store::{Epoch, Plaintext};
    let machine = Machine::new();
    let key = [wallet_key(&wallet(1)), 1u64.to_be_bytes().to_vec()].concat();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"one");
        store
            .write(vec![WriteOp::InsertKeyPackage {
                wallet: wallet(1),
                epoch: Epoch(1),
                value: Plaintext::from(b"pkg".to_vec()),
            }])
            .unwrap();
    }
    flip_last(&machine, "key_packages", &key);
    let store = machine.open().unwrap();
    let out = store.write(vec![WriteOp::DeleteKeyPackage {
        wallet: wallet(1),
        epoch: Epoch(1),
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
