//! The rollback override (I5): an operator who restored a backup on
//! purpose names the witness position the refusal printed, and that setting
//! accepts that one rollback only.

mod common;

use common::{Captured, Machine, put_wallet, wallet_value};
use thresig_store::{EncryptedStore, Error, Recovery, SimDisk, StoreConfig, StoreOptions};

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
    assert!(thresig_store::rollbacks_accepted() > accepted_before);
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
