//! Opening a store on disk: a database that is missing or emptied beside
//! its witness, a witness that cannot be read or authenticated, and a
//! directory that holds no store at all. Each refusal is terminal, names
//! the files involved, and leaves them as they were. Damage inside the
//! database (keyring, metadata, records, schema) names the database too.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{raw_get, raw_put, wallet_key};
use redb::{ReadableDatabase as _, ReadableTable as _};

use thresig_store::provider::{KeyProvider, MemoryProvider};
use thresig_store::{
    EncryptedStore, Error, Recovery, Store, StoreLocation, StoreOptions, WalletId, WriteOp,
};

fn provider() -> Arc<dyn KeyProvider> {
    Arc::new(MemoryProvider::with_key("kek-1", 7))
}

fn database(dir: &Path) -> PathBuf {
    dir.join("state.redb")
}

fn witness(dir: &Path) -> PathBuf {
    dir.join("state.witness")
}

fn open(dir: &Path) -> Result<EncryptedStore, Error> {
    EncryptedStore::open(
        StoreLocation::Directory(dir.to_path_buf()),
        provider(),
        StoreOptions::default(),
    )
}

/// A store with one wallet written (so its witness exists), closed again.
fn provisioned() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = EncryptedStore::create(
        StoreLocation::Directory(dir.path().to_path_buf()),
        provider(),
        StoreOptions::default(),
    )
    .unwrap();
    store
        .write(vec![WriteOp::PutWallet {
            wallet: WalletId::new("w1").unwrap(),
            value: b"state".to_vec(),
        }])
        .unwrap();
    drop(store);
    assert!(witness(dir.path()).is_file());
    dir
}

/// The refusal of a database that is gone (or holds nothing) while its
/// witness remains: terminal, naming both files, telling the operator to
/// restore rather than re-initialize.
fn assert_refused_beside_witness(err: &Error, dir: &Path) {
    assert_eq!(err.recovery(), Recovery::Terminal, "{err}");
    let text = err.to_string();
    for path in [database(dir), witness(dir)] {
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
    assert!(text.contains("restore the database"), "{text}");
    assert!(text.contains("never re-initialize"), "{text}");
}

/// A terminal refusal whose message names `file`.
fn assert_terminal_naming(err: &Error, file: &Path) {
    assert_eq!(err.recovery(), Recovery::Terminal, "{err}");
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
}

#[test]
fn a_missing_database_beside_its_witness_is_refused_and_not_recreated() {
    let dir = provisioned();
    let witness_before = std::fs::read(witness(dir.path())).unwrap();
    std::fs::remove_file(database(dir.path())).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert_refused_beside_witness(&err, dir.path());
    assert!(!database(dir.path()).exists(), "open created a database");
    assert_eq!(std::fs::read(witness(dir.path())).unwrap(), witness_before);
}

#[test]
fn a_zero_length_database_beside_its_witness_is_refused() {
    let dir = provisioned();
    std::fs::File::create(database(dir.path())).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert_refused_beside_witness(&err, dir.path());
    assert_eq!(std::fs::metadata(database(dir.path())).unwrap().len(), 0);
}

#[test]
fn a_valid_but_empty_database_beside_its_witness_is_refused() {
    let dir = provisioned();
    std::fs::remove_file(database(dir.path())).unwrap();
    drop(redb::Database::create(database(dir.path())).unwrap());
    let err = open(dir.path()).unwrap_err();
    assert_refused_beside_witness(&err, dir.path());
    let db = redb::Database::open(database(dir.path())).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(txn.list_tables().unwrap().count(), 0, "open wrote tables");
}

#[test]
fn open_creates_nothing_where_no_store_exists() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let err = open(&dir).unwrap_err();
    assert_eq!(err.recovery(), Recovery::Terminal, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&database(&dir).display().to_string()),
        "{text}"
    );
    assert!(text.contains("thresig init"), "{text}");
    assert!(!dir.exists(), "open created the data directory");
}

#[test]
fn create_refuses_a_directory_that_holds_a_store_or_its_witness() {
    let dir = provisioned();
    let create = || {
        EncryptedStore::create(
            StoreLocation::Directory(dir.path().to_path_buf()),
            provider(),
            StoreOptions::default(),
        )
    };
    let err = create().unwrap_err();
    assert_eq!(err.recovery(), Recovery::Terminal, "{err}");
    assert!(
        err.to_string()
            .contains(&database(dir.path()).display().to_string()),
        "{err}"
    );
    std::fs::remove_file(database(dir.path())).unwrap();
    let err = create().unwrap_err();
    assert_refused_beside_witness(&err, dir.path());
    assert!(!database(dir.path()).exists());
}

#[test]
fn an_unreadable_witness_is_terminal_and_named() {
    let dir = provisioned();
    // A directory in the witness's place cannot be read as a file, even by
    // root (file modes would not stop a test running as root).
    std::fs::remove_file(witness(dir.path())).unwrap();
    std::fs::create_dir(witness(dir.path())).unwrap();
    assert_terminal_naming(&open(dir.path()).unwrap_err(), &witness(dir.path()));
    assert!(witness(dir.path()).is_dir(), "the witness was replaced");
}

#[test]
fn a_garbage_witness_is_terminal_and_named() {
    let dir = provisioned();
    std::fs::write(witness(dir.path()), b"not a witness").unwrap();
    assert_terminal_naming(&open(dir.path()).unwrap_err(), &witness(dir.path()));
    assert_eq!(
        std::fs::read(witness(dir.path())).unwrap(),
        b"not a witness"
    );
}

#[test]
fn a_reopened_store_keeps_its_records() {
    let dir = provisioned();
    let store = open(dir.path()).unwrap();
    let w = WalletId::new("w1").unwrap();
    assert_eq!(store.wallet(&w).unwrap().unwrap().as_slice(), b"state");
}

fn create(dir: &Path) -> Result<EncryptedStore, Error> {
    EncryptedStore::create(
        StoreLocation::Directory(dir.to_path_buf()),
        provider(),
        StoreOptions::default(),
    )
}

/// What a create that lost power inside redb's own setup leaves: a header
/// written without its magic number.
fn write_headerless(dir: &Path) {
    std::fs::write(database(dir), vec![0u8; 4096]).unwrap();
}

#[test]
fn a_file_that_holds_no_database_and_no_witness_is_terminal() {
    let dir = tempfile::tempdir().unwrap();
    write_headerless(dir.path());
    let err = open(dir.path()).unwrap_err();
    assert_eq!(err.recovery(), Recovery::Terminal, "{err}");
    assert_eq!(err.code(), "no_store", "{err}");
    let err = create(dir.path()).unwrap_err();
    assert_eq!(err.recovery(), Recovery::Terminal, "{err}");
    assert_terminal_naming(&err, &database(dir.path()));
    assert_eq!(
        std::fs::read(database(dir.path())).unwrap(),
        vec![0u8; 4096]
    );
}

#[test]
fn a_database_with_damaged_first_bytes_beside_its_witness_is_terminal() {
    let dir = provisioned();
    let mut bytes = std::fs::read(database(dir.path())).unwrap();
    bytes[..16].fill(0);
    std::fs::write(database(dir.path()), &bytes).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert_refused_beside_witness(&err, dir.path());
    assert_eq!(err.code(), "database_missing", "{err}");
    assert_eq!(std::fs::read(database(dir.path())).unwrap(), bytes);
}

/// Runs `f` in a raw write transaction on the closed store's database
/// file, as someone with disk access would.
fn edit_database(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(database(dir)).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

/// Flips one bit in the last byte of `key` in table `name`.
fn flip_last_bit(txn: &redb::WriteTransaction, name: &str, key: &[u8]) {
    let mut v = raw_get(txn, name, key).unwrap();
    *v.last_mut().unwrap() ^= 1;
    raw_put(txn, name, key, &v);
}

/// `err` has `code` and its message names the store's database file.
fn assert_names_database(err: &Error, code: &str, dir: &Path) {
    assert_eq!(err.code(), code, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&database(dir).display().to_string()),
        "{text}"
    );
}

#[test]
fn a_corrupt_keyring_entry_names_the_database() {
    let dir = provisioned();
    edit_database(dir.path(), |txn| {
        let mut t = txn
            .open_table(redb::TableDefinition::<u64, &[u8]>::new("keyring"))
            .unwrap();
        let mut v = t.get(1).unwrap().unwrap().value().to_vec();
        let at = v.len() - 4;
        v[at] = if v[at] == b'0' { b'1' } else { b'0' };
        t.insert(1, v.as_slice()).unwrap();
    });
    let err = open(dir.path()).unwrap_err();
    assert_names_database(&err, "keyring_corrupt", dir.path());
}

#[test]
fn a_corrupt_metadata_record_names_the_database() {
    let dir = provisioned();
    edit_database(dir.path(), |txn| flip_last_bit(txn, "sys", b"generation"));
    let err = open(dir.path()).unwrap_err();
    assert_names_database(&err, "metadata_corrupt", dir.path());
}

#[test]
fn an_unsupported_schema_names_the_database() {
    let dir = provisioned();
    edit_database(dir.path(), |txn| {
        let mut t = txn
            .open_table(redb::TableDefinition::<&str, u32>::new("format"))
            .unwrap();
        t.insert("schema_version", 99).unwrap();
    });
    let err = open(dir.path()).unwrap_err();
    assert_names_database(&err, "unsupported_schema", dir.path());
}

#[test]
fn a_damaged_record_names_the_database_on_write_and_on_read() {
    let dir = provisioned();
    let w = WalletId::new("w1").unwrap();
    edit_database(dir.path(), |txn| {
        flip_last_bit(txn, "wallets", &wallet_key(&w));
    });
    let store = open(dir.path()).unwrap();
    // A write runs on the writer thread; its refusal names the file too.
    let err = store
        .write(vec![WriteOp::BumpWalletEpoch { wallet: w.clone() }])
        .unwrap_err();
    assert_names_database(&err, "record_tampered", dir.path());
    let err = store.wallet(&w).unwrap_err();
    assert_names_database(&err, "record_tampered", dir.path());
}

/// A wallet id read back from a record key that no signer could have
/// written (a control character) is damage to the database: never listed
/// as a wallet, never a panic, and reported by `verify` as a typed error of
/// no wallet naming the database; the real wallets are still listed.
#[test]
fn a_stored_wallet_id_a_signer_cannot_write_names_the_database() {
    let dir = provisioned();
    let w = WalletId::new("w1").unwrap();
    edit_database(dir.path(), |txn| {
        let epoch = raw_get(txn, "epochs", &wallet_key(&w)).unwrap();
        raw_put(txn, "epochs", &[2, b'w', 1], &epoch);
    });
    let store = open(dir.path()).unwrap();
    assert!(store.wallet_ids().unwrap().contains(&w));
    let report = store.verify().unwrap();
    let [err] = report.failures.as_slice() else {
        panic!("{:?}", report.failures);
    };
    assert_names_database(err, "record_moved", dir.path());
    assert!(!err.marks_wallet_corrupt());
    assert_eq!(err.recovery(), Recovery::Terminal);
}
