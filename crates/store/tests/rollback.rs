//! The rollback override (I5): an operator who restored a backup on
//! purpose names the witness position the refusal printed, and that setting
//! accepts that one rollback only.

mod common;

use common::{Captured, Machine, put_wallet, wallet_value};
use std::sync::{Mutex, MutexGuard};

use thresig_store::{EncryptedStore, Error, Recovery, SimDisk, StoreConfig, StoreOptions};

/// Held by every test that opens accepting a rollback, so each sees exact
/// changes of the process-wide count.
static ACCEPTING: Mutex<()> = Mutex::new(());

fn accepting_alone() -> MutexGuard<'static, ()> {
    ACCEPTING.lock().unwrap_or_else(|e| e.into_inner())
}

/// The options of a `[store]` section that accepts the rollback `token`.
fn accepting(token: &str) -> StoreOptions {
    let config: StoreConfig = toml::from_str(&format!(
        "data_dir = \"x\"\nrollback = {{ accept_older_database = \"{token}\" }}"
    ))
    .unwrap();
    config.options().unwrap()
}

/// The value a refusal tells the operator to set.
fn token_in(err: &Error) -> String {
    let text = err.to_string();
    let key = "accept_older_database = \"";
    let start = text.find(key).unwrap_or_else(|| panic!("{text}")) + key.len();
    text[start..].split('"').next().unwrap().to_owned()
}

/// Newer writes after a backup was taken: a wallet update and a DEK
/// rotation (which bumps the global epoch).
fn newer_writes(store: &EncryptedStore) {
    put_wallet(store, 1, b"newer");
    store.rotate_dek().unwrap();
}

#[test]
fn an_accepted_rollback_names_its_witness_position_and_is_used_once() {
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"one");
    }
    let backup = machine.disk.image();
    newer_writes(&machine.open().unwrap());
    let restored = |image: Vec<u8>| Machine {
        disk: SimDisk::from_image(image),
        witness: machine.witness.clone(),
        provider: machine.provider.clone(),
    };

    let first = restored(backup.clone());
    let err = first.open().unwrap_err();
    assert!(matches!(err, Error::RollbackDetected { .. }), "{err:?}");
    assert_eq!(err.recovery(), Recovery::Terminal);
    let token = token_in(&err);
    let other = first
        .open_with(accepting(
            "database epoch 1 generation 1, witness epoch 1 generation 1",
        ))
        .unwrap_err();
    assert!(
        matches!(other, Error::RollbackDetected { .. }),
        "a setting naming other positions accepts nothing: {other:?}"
    );

    let _alone = accepting_alone();
    let accepted_before = thresig_store::rollbacks_accepted();
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let store =
        tracing::subscriber::with_default(subscriber, || first.open_with(accepting(&token)))
            .unwrap();
    let logged = log.text();
    assert!(
        logged.contains("ERROR") && logged.contains(&token),
        "{logged}"
    );
    assert_eq!(thresig_store::rollbacks_accepted(), accepted_before + 1);
    assert_eq!(wallet_value(&store, 1).as_slice(), b"one");

    // The operator leaves the setting in place; the signer does the same
    // work again and the same backup is restored a second time.
    newer_writes(&store);
    drop(store);
    let second = restored(backup);
    let err = second.open_with(accepting(&token)).unwrap_err();
    assert!(
        matches!(err, Error::RollbackDetected { .. }),
        "a stale setting accepted a second rollback: {err:?}"
    );
    assert_ne!(token_in(&err), token);
}

#[test]
fn a_setting_accepts_only_the_database_it_was_printed_for() {
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"one");
    }
    let oldest = machine.disk.image();
    newer_writes(&machine.open().unwrap());
    let older = machine.disk.image();
    newer_writes(&machine.open().unwrap());
    let restored = |image: Vec<u8>| Machine {
        disk: SimDisk::from_image(image),
        witness: machine.witness.clone(),
        provider: machine.provider.clone(),
    };

    let token = token_in(&restored(older).open().unwrap_err());
    // The backup the setting was printed for is swapped for an older one
    // before the start: the setting does not name that database.
    let err = restored(oldest).open_with(accepting(&token)).unwrap_err();
    assert!(
        matches!(err, Error::RollbackDetected { .. }),
        "a setting printed for one database accepted an older one: {err:?}"
    );
    assert_ne!(token_in(&err), token);
}

#[test]
fn an_accepting_open_that_fails_is_neither_counted_nor_logged() {
    use std::sync::Arc;
    use thresig_store::StoreLocation;
    use thresig_store::provider::MemoryProvider;
    let dir = tempfile::tempdir().unwrap();
    let at = || StoreLocation::Directory(dir.path().to_path_buf());
    let provider = Arc::new(MemoryProvider::with_key("k", 9));
    let open = |options| EncryptedStore::open(at(), provider.clone(), options);
    put_wallet(
        &EncryptedStore::create(at(), provider.clone(), StoreOptions::default()).unwrap(),
        1,
        b"one",
    );
    let database = dir.path().join("state.redb");
    let backup = std::fs::read(&database).unwrap();
    newer_writes(&open(StoreOptions::default()).unwrap());
    std::fs::write(&database, backup).unwrap();
    let token = token_in(&open(StoreOptions::default()).unwrap_err());

    let _alone = accepting_alone();
    let accepted_before = thresig_store::rollbacks_accepted();
    // A directory where the witness's temporary file goes: the accepting
    // open cannot write the witness.
    std::fs::create_dir(dir.path().join("state.witness.tmp")).unwrap();
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let err =
        tracing::subscriber::with_default(subscriber, || open(accepting(&token))).unwrap_err();
    assert!(matches!(err, Error::WitnessIo { .. }), "{err:?}");
    let logged = log.text();
    assert!(!logged.contains("opened"), "{logged}");
    assert_eq!(thresig_store::rollbacks_accepted(), accepted_before);
}
