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
    assert!(matches!(err, Error::RollbackDetected { .. }), "{err:?}");
    assert_eq!(err.recovery(), Recovery::Terminal);
    assert_eq!(machine.witness.bytes(), witness_before, "witness untouched");
    let mut options = StoreOptions::default();
    options.rollback = RollbackPolicy::AcceptOlderDatabase;
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
    assert!(matches!(machine.open().unwrap_err(), Error::WitnessCorrupt));
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
