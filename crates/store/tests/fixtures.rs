//! Golden fixtures: databases written in each rotation phase, checked in
//! under `tests/fixtures/`, opened by every build (format stability).
//!
//! Regenerate (only when the format changes on purpose, with a new schema
//! version and an upgrade step):
//! `cargo test -p thresig-store --test fixtures -- --ignored generate`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use thresig_store::provider::{KekId, KeyProvider, MemoryProvider};
use thresig_store::{
    CommitmentHash, DekTerm, EncryptedStore, KeyEpoch, Marker, PackageHash, PolicyKey,
    RecoverySecretKey, Store, StoreLocation, StoreOptions, Timestamp, WalletId, WriteOp,
};

const PHASES: [&str; 6] = [
    "initial",
    "dek_promoted",
    "dek_resealing",
    "dek_retired",
    "kek_wrapped",
    "kek_retired",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The provider every fixture was written with: kek-1 = [0x11; 32],
/// kek-2 = [0x22; 32].
fn provider() -> Arc<MemoryProvider> {
    let p = MemoryProvider::with_key("kek-1", 0x11);
    p.add_key("kek-2", 0x22);
    Arc::new(p)
}

fn recovery_key() -> (RecoverySecretKey, thresig_store::RecoveryPublicKey) {
    RecoverySecretKey::generate(&mut ChaCha8Rng::seed_from_u64(7))
}

/// Wallet ids the engine accepts (`[A-Za-z0-9._-]`), so that the fixtures
/// hold only what a signer can write.
fn wallet(n: u8) -> WalletId {
    WalletId::new(format!("w{n}")).unwrap()
}

fn options() -> StoreOptions {
    let mut o = StoreOptions::default();
    o.reseal_batch = 2;
    o.recovery_key = Some(recovery_key().1);
    o
}

fn open(dir: &Path, provider: Arc<MemoryProvider>) -> EncryptedStore {
    let p: Arc<dyn KeyProvider> = provider;
    EncryptedStore::open(StoreLocation::Directory(dir.to_path_buf()), p, options()).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["state.redb", "state.witness"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

/// A copy of the fixture `phase` in `to`. The fixtures were written while
/// the audit log was not yet chained: their one entry has no head record.
/// No signer ever wrote such an entry (only this fixture did), and the open
/// refuses a log whose head does not read, so the copy drops it.
fn fixture(phase: &str, to: &Path) {
    use redb::{ReadableTable as _, ReadableTableMetadata as _};
    copy_dir(&fixtures().join(phase), to);
    let db = redb::Database::open(to.join("state.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let table = |name| redb::TableDefinition::<&[u8], &[u8]>::new(name);
        let chained = txn
            .open_table(table("sys"))
            .unwrap()
            .get(b"audit_head".as_slice())
            .unwrap()
            .is_some();
        let mut audit = txn.open_table(table("audit")).unwrap();
        if !chained && audit.len().unwrap() > 0 {
            audit.retain(|_, _| false).unwrap();
            // Its DEK index entry too: term (8 bytes), then table 9, audit.
            let index = redb::TableDefinition::<&[u8], ()>::new("dek_index");
            let mut index = txn.open_table(index).unwrap();
            index.retain(|k, ()| k.get(8) != Some(&9)).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
#[ignore = "writes the checked-in fixtures"]
fn generate() {
    let work = tempfile::tempdir().unwrap();
    let provider = provider();
    let snapshot = |phase: &str| {
        let dest = fixtures().join(phase);
        let _ = std::fs::remove_dir_all(&dest);
        copy_dir(work.path(), &dest);
    };
    let p: Arc<dyn KeyProvider> = provider.clone();
    let store = EncryptedStore::create(
        StoreLocation::Directory(work.path().to_path_buf()),
        p,
        options(),
    )
    .unwrap();
    store
        .write(vec![
            WriteOp::PutWallet {
                wallet: wallet(1),
                value: b"wallet one".to_vec(),
            },
            WriteOp::PutWallet {
                wallet: wallet(2),
                value: b"wallet two".to_vec(),
            },
            WriteOp::InsertKeyPackage {
                wallet: wallet(1),
                epoch: KeyEpoch(1),
                value: b"key package".to_vec().into(),
            },
            WriteOp::CasPolicy {
                wallet: wallet(1),
                key: PolicyKey::new(b"daily".to_vec()).unwrap(),
                expected: None,
                new: b"3".to_vec(),
            },
            WriteOp::InsertMarker {
                wallet: wallet(2),
                commitment: CommitmentHash([4; 32]),
                marker: Marker {
                    package_hash: PackageHash([5; 32]),
                    shares: b"shares".to_vec(),
                    expires_at: Timestamp(4_000_000_000_000),
                },
            },
            WriteOp::AppendAudit {
                at: Timestamp(1_000),
                entry: b"audit one".to_vec(),
            },
        ])
        .unwrap();
    drop(store);
    snapshot("initial");
    let store = open(work.path(), provider.clone());
    store.start_dek_rotation().unwrap();
    drop(store);
    snapshot("dek_promoted");
    let store = open(work.path(), provider.clone());
    assert!(store.reseal_step().unwrap() > 0);
    drop(store);
    snapshot("dek_resealing");
    let store = open(work.path(), provider.clone());
    store.resume_rotations().unwrap();
    drop(store);
    snapshot("dek_retired");
    provider.set_current("kek-2");
    let store = open(work.path(), provider.clone());
    store.add_kek_wraps().unwrap();
    drop(store);
    snapshot("kek_wrapped");
    let store = open(work.path(), provider.clone());
    store
        .retire_old_keks(&KekId::new("kek-2").unwrap())
        .unwrap();
    drop(store);
    snapshot("kek_retired");
}

fn check_records(store: &EncryptedStore, phase: &str) {
    let get = |v: Option<thresig_store::Plaintext>| v.map(|v| v.to_vec());
    assert_eq!(
        get(store.wallet(&wallet(1)).unwrap()),
        Some(b"wallet one".to_vec()),
        "{phase}"
    );
    assert_eq!(
        get(store.wallet(&wallet(2)).unwrap()),
        Some(b"wallet two".to_vec()),
        "{phase}"
    );
    assert_eq!(
        get(store.key_package(&wallet(1), KeyEpoch(1)).unwrap()),
        Some(b"key package".to_vec()),
        "{phase}"
    );
    assert_eq!(
        get(store
            .policy(&wallet(1), &PolicyKey::new(b"daily".to_vec()).unwrap())
            .unwrap()),
        Some(b"3".to_vec()),
        "{phase}"
    );
    let marker = store
        .marker(&wallet(2), &CommitmentHash([4; 32]))
        .unwrap()
        .unwrap();
    assert_eq!(marker.shares, b"shares", "{phase}");
    assert_eq!(marker.package_hash, PackageHash([5; 32]), "{phase}");
    // The expiry is kept in whole seconds on disk and read back as the
    // same instant in milliseconds.
    assert_eq!(marker.expires_at, Timestamp(4_000_000_000_000), "{phase}");
    // Written by this build (chained) or dropped from the copy (unchained:
    // see `fixture`), the log verifies.
    let report = store.audit_verify().unwrap();
    assert!(report.entries <= 1, "{phase}: {report:?}");
}

#[test]
fn every_phase_opens_and_its_rotation_completes() {
    for phase in PHASES {
        let dir = tempfile::tempdir().unwrap();
        fixture(phase, dir.path());
        let provider = provider();
        provider.set_current(if phase.starts_with("kek") {
            "kek-2"
        } else {
            "kek-1"
        });
        let store = open(dir.path(), provider.clone());
        check_records(&store, phase);
        // The phase is what its name says.
        let before = store.keyring_status().unwrap();
        let (deks, keks) = match phase {
            "dek_promoted" | "dek_resealing" => (2, 1),
            "kek_wrapped" => (1, 2),
            _ => (1, 1),
        };
        assert_eq!(before.deks.len(), deks, "{phase}: {before:?}");
        assert_eq!(before.deks[0].keks.len(), keks, "{phase}: {before:?}");
        store.resume_rotations().unwrap();
        let status = store.keyring_status().unwrap();
        assert_eq!(status.deks.len(), 1, "{phase}: {status:?}");
        // Resuming finishes the rotation that was under way; it never
        // starts another one.
        let expected = if phase == "initial" { 1 } else { 2 };
        assert_eq!(status.current, DekTerm(expected), "{phase}: {status:?}");
        assert_eq!(status.deks[0].keks.len(), 1, "{phase}: {status:?}");
        let v = store.verify().unwrap();
        assert!(v.failures.is_empty(), "{phase}: {v:?}");
        check_records(&store, phase);
    }
}

/// The fixtures hold JSON witnesses (versions 1 and 2): the first open
/// upgrades each to the slotted file, the careful way (a temporary file
/// left by a crash beside it is replaced), and the next open reads it.
#[test]
fn a_json_witness_is_upgraded_to_the_slotted_file_at_open() {
    for phase in PHASES {
        let dir = tempfile::tempdir().unwrap();
        fixture(phase, dir.path());
        let witness = dir.path().join("state.witness");
        assert!(
            std::fs::read(&witness).unwrap().starts_with(b"{"),
            "{phase}"
        );
        std::fs::write(dir.path().join("state.witness.tmp"), b"torn").unwrap();
        let provider = provider();
        provider.set_current(if phase.starts_with("kek") {
            "kek-2"
        } else {
            "kek-1"
        });
        drop(open(dir.path(), provider.clone()));
        let upgraded = std::fs::read(&witness).unwrap();
        assert!(upgraded.starts_with(b"thresig-witness\0"), "{phase}");
        assert_eq!(upgraded.len(), 3 * 64 * 1024, "{phase}");
        assert!(!dir.path().join("state.witness.tmp").exists(), "{phase}");
        check_records(&open(dir.path(), provider), phase);
    }
}

#[test]
fn every_phase_opens_with_the_recovery_key_alone() {
    for phase in PHASES {
        let dir = tempfile::tempdir().unwrap();
        fixture(phase, dir.path());
        // A provider that lost both fixture KEKs.
        let provider = Arc::new(MemoryProvider::with_key("kek-3", 0x33));
        let p: Arc<dyn KeyProvider> = provider;
        let store = EncryptedStore::recover(
            StoreLocation::Directory(dir.path().to_path_buf()),
            p,
            &recovery_key().0,
            options(),
        )
        .unwrap_or_else(|e| panic!("{phase}: {e:?}"));
        check_records(&store, phase);
    }
}

/// A database written before the marker-set digests, the epoch-bound
/// keyring digest and the store identity record (schema 1, the `initial`
/// phase as it was then) is refused, terminally, and left as it was: it
/// cannot prove that no marker row was deleted, so it is never accepted as
/// if nothing were missing.
#[test]
fn a_schema_1_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("schema_v1"), dir.path());
    let before = metadata_rows(dir.path());
    let p: Arc<dyn KeyProvider> = provider();
    let r = EncryptedStore::open(
        StoreLocation::Directory(dir.path().to_path_buf()),
        p,
        options(),
    );
    let err = r.map(drop).expect_err("a schema 1 database was accepted");
    assert!(
        matches!(
            err,
            thresig_store::Error::UnsupportedSchema {
                found: 1,
                supported: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.recovery(), thresig_store::Recovery::Terminal);
    assert_eq!(
        metadata_rows(dir.path()),
        before,
        "the refused database was modified"
    );
}

/// The format row, the keyring rows and the store metadata rows.
type MetadataRows = (Option<u32>, Vec<(u64, Vec<u8>)>, Vec<(Vec<u8>, Vec<u8>)>);

/// The format row, the keyring and the store metadata, as stored.
fn metadata_rows(dir: &Path) -> MetadataRows {
    use redb::{ReadableDatabase as _, ReadableTable as _};
    let db = redb::Database::create(dir.join("state.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let format = txn
        .open_table(redb::TableDefinition::<&str, u32>::new("format"))
        .unwrap()
        .get("schema_version")
        .unwrap()
        .map(|v| v.value());
    let keyring = txn
        .open_table(redb::TableDefinition::<u64, &[u8]>::new("keyring"))
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect();
    let sys = txn
        .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("sys"))
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value().to_vec(), v.value().to_vec())
        })
        .collect();
    (format, keyring, sys)
}
