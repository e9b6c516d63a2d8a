//! The key manager and online rotation: rotation follows the provider's
//! key id, a failing or hanging provider raises an alert and never blocks
//! writes (I3), and re-seal batches never overwrite newer writes.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use common::{
    Machine, ScriptedProvider, edit_raw, open_on, put_wallet, raw_table, wallet, wallet_value,
};
use thresig_store::provider::{KekId, KeyProvider, MemoryProvider, ProviderError};
use thresig_store::{
    DebugKeyAudit, EncryptedStore, KeyChange, KeyChangeAudit as _, KeyManager, KeyManagerOptions,
    MemoryWitness, Recovery, SimDisk, Store, StoreOptions, Timestamp,
};
use zeroize::Zeroizing;

#[test]
fn a_new_provider_key_id_is_rotated_to_on_the_next_tick() {
    let machine = Machine::new();
    let store = Arc::new(machine.open().unwrap());
    put_wallet(store.as_ref(), 1, b"one");
    let manager = KeyManager::new(store.clone(), Arc::new(DebugKeyAudit));
    manager.tick(Timestamp(1));
    assert_eq!(manager.health().kek_rotations, 0);
    machine.provider.add_key("kek-2", 2);
    machine.provider.set_current("kek-2");
    manager.tick(Timestamp(2));
    let health = manager.health();
    assert_eq!(health.kek_rotations, 1);
    assert!(!health.alert);
    let status = store.keyring_status().unwrap();
    let kek2 = KekId::new("kek-2").unwrap();
    assert!(
        status.deks.iter().all(|d| d.keks == vec![kek2.clone()]),
        "{status:?}"
    );
    drop(manager);
    drop(store);
    // The old KEK is no longer needed.
    machine.provider.destroy_key("kek-1");
    let store = machine.open().unwrap();
    assert_eq!(wallet_value(&store, 1).as_slice(), b"one");
}

#[test]
fn a_failing_provider_raises_an_alert_and_writes_continue() {
    let disk = SimDisk::new();
    let witness = MemoryWitness::new();
    let provider = Arc::new(ScriptedProvider::new(MemoryProvider::with_key("k", 1)));
    let store = Arc::new(open_on(&disk, &witness, provider.clone()).unwrap());
    let manager = KeyManager::new(store.clone(), Arc::new(DebugKeyAudit));
    provider.fail_all(true);
    manager.tick(Timestamp(1));
    let health = manager.health();
    assert!(health.alert);
    assert_eq!(health.consecutive_failures, 1);
    assert_eq!(health.last_failure, Some(Recovery::Retryable));
    put_wallet(store.as_ref(), 1, b"written during the outage");
    provider.fail_all(false);
    manager.tick(Timestamp(2));
    assert!(!manager.health().alert);
}

/// A provider whose `key-id` call blocks until released.
struct HangingProvider {
    inner: MemoryProvider,
    entered: Mutex<Option<SyncSender<()>>>,
    release: Mutex<Receiver<()>>,
}

impl KeyProvider for HangingProvider {
    fn current_kek_id(&self) -> Result<KekId, ProviderError> {
        if let Some(tx) = self.entered.lock().unwrap().take() {
            tx.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
            return Err(ProviderError::Unavailable {
                reason: "timed out".to_owned(),
            });
        }
        self.inner.current_kek_id()
    }
    fn wrap(&self, kek: &KekId, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError> {
        self.inner.wrap(kek, plaintext)
    }
    fn unwrap(&self, kek: &KekId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.inner.unwrap(kek, wrapped)
    }
}

/// A store whose provider's next `key-id` call hangs: it reports, on the
/// returned receiver, that it entered, and fails once released through the
/// returned sender (opening the store is not held up).
fn store_whose_provider_hangs_next() -> (Arc<EncryptedStore>, Receiver<()>, SyncSender<()>) {
    let (entered_tx, entered) = sync_channel(1);
    let (release, release_rx) = sync_channel(1);
    let provider = Arc::new(HangingProvider {
        inner: MemoryProvider::with_key("k", 1),
        entered: Mutex::new(None),
        release: Mutex::new(release_rx),
    });
    let store =
        Arc::new(open_on(&SimDisk::new(), &MemoryWitness::new(), provider.clone()).unwrap());
    *provider.entered.lock().unwrap() = Some(entered_tx);
    (store, entered, release)
}

#[test]
fn a_hanging_provider_blocks_neither_writes_nor_reads() {
    let (store, entered, release) = store_whose_provider_hangs_next();
    let manager = Arc::new(KeyManager::new(store.clone(), Arc::new(DebugKeyAudit)));
    let ticking = {
        let manager = manager.clone();
        std::thread::spawn(move || manager.tick(Timestamp(1)))
    };
    // The manager is now stuck inside the provider.
    entered.recv().unwrap();
    for i in 0..20u8 {
        put_wallet(store.as_ref(), i, b"while the provider hangs");
        assert!(store.wallet(&wallet(i)).unwrap().is_some());
    }
    release.send(()).unwrap();
    ticking.join().unwrap();
    let health = manager.health();
    assert!(health.alert);
    assert_eq!(health.ticks, 1);
}

#[test]
fn the_manager_thread_stops_on_drop() {
    let machine = Machine::new();
    let store = Arc::new(machine.open().unwrap());
    let mut options = KeyManagerOptions::default();
    options.poll_interval = std::time::Duration::from_secs(3600);
    let manager = KeyManager::start(store.clone(), options, Arc::new(DebugKeyAudit));
    drop(manager);
    put_wallet(store.as_ref(), 1, b"still writable");
}

/// A stop bounded by a deadline returns by then even when the manager's
/// thread is stuck in the provider, and leaves that thread behind; a
/// manager between ticks stops at once.
#[test]
fn a_stop_by_a_deadline_does_not_wait_for_a_hung_tick() {
    let (store, entered, release) = store_whose_provider_hangs_next();
    let mut options = KeyManagerOptions::default();
    options.poll_interval = Duration::from_millis(10);
    let manager = KeyManager::start(store.clone(), options, Arc::new(DebugKeyAudit));
    // The manager's thread is now stuck inside the provider.
    entered.recv().unwrap();
    let started = Instant::now();
    assert!(!manager.stop_by(started + Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(5));
    release.send(()).unwrap();

    let machine = Machine::new();
    let store = Arc::new(machine.open().unwrap());
    options.poll_interval = Duration::from_secs(3600);
    let manager = KeyManager::start(store.clone(), options, Arc::new(DebugKeyAudit));
    assert!(manager.stop_by(Instant::now() + Duration::from_secs(60)));
}

#[test]
fn reseal_batches_racing_newer_writes_never_overwrite_them() {
    let machine = Machine::new();
    let mut options = StoreOptions::default();
    options.reseal_batch = 1;
    let store = Arc::new(machine.open_with(options.clone()).unwrap());
    for i in 0..40u8 {
        put_wallet(store.as_ref(), i, b"v0");
    }
    let rotating = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..3 {
                store.rotate_dek().unwrap();
            }
        })
    };
    // Each record is rewritten several times while batches of one record
    // are re-sealed in between.
    for round in 1..=3u8 {
        for i in 0..40u8 {
            put_wallet(store.as_ref(), i, format!("v{round}").as_bytes());
        }
    }
    rotating.join().unwrap();
    for i in 0..40u8 {
        assert_eq!(wallet_value(store.as_ref(), i).as_slice(), b"v3");
    }
    let status = store.keyring_status().unwrap();
    assert_eq!(status.deks.len(), 1, "{status:?}");
    drop(store);
    let store = machine.open_with(options).unwrap();
    for i in 0..40u8 {
        assert_eq!(wallet_value(&store, i).as_slice(), b"v3");
    }
}

/// Recovery: the recovery public key is "set at init". It is stored then,
/// so a rotation run by a process opened without it (e.g. `thresig keys
/// rotate` with a different config) still wraps the new DEK to it.
#[test]
fn the_recovery_key_set_at_init_wraps_every_later_dek() {
    use thresig_store::{RecoverySecretKey, StoreOptions};
    let machine = Machine::new();
    let (_sk, pk) = RecoverySecretKey::generate(&mut rand_core::OsRng);
    let mut options = StoreOptions::default();
    options.recovery_key = Some(pk);
    {
        let store = machine.open_with(options).unwrap();
        put_wallet(&store, 1, b"one");
    }
    let store = machine.open().unwrap();
    store.rotate_dek().unwrap();
    let status = store.keyring_status().unwrap();
    assert!(
        status.deks.iter().all(|d| d.recoverable),
        "store initialised with a recovery key now has unrecoverable DEKs: {status:?}"
    );
}

/// Recovery: a configured recovery key that differs from the one stored at
/// init is refused with a clear error, never silently used.
#[test]
fn a_conflicting_recovery_key_option_is_refused() {
    use thresig_store::{Error, RecoverySecretKey};
    let machine = Machine::new();
    let (_, first) = RecoverySecretKey::generate(&mut rand_core::OsRng);
    let (_, other) = RecoverySecretKey::generate(&mut rand_core::OsRng);
    let mut options = StoreOptions::default();
    options.recovery_key = Some(first.clone());
    drop(machine.open_with(options.clone()).unwrap());
    options.recovery_key = Some(other);
    let r = machine.open_with(options.clone());
    assert!(matches!(r, Err(Error::RecoveryKeyMismatch)), "{r:?}");
    options.recovery_key = Some(first);
    assert!(machine.open_with(options).is_ok());
}

fn marker_expiring_at(hash: u8, expires: Timestamp) -> thresig_store::Marker {
    thresig_store::Marker {
        package_hash: thresig_store::PackageHash([hash; 32]),
        shares: vec![hash; 40],
        expires_at: expires,
    }
}

fn insert_marker(store: &dyn Store, commitment: u8, marker: thresig_store::Marker) {
    store
        .write(vec![thresig_store::WriteOp::InsertMarker {
            wallet: wallet(1),
            commitment: thresig_store::CommitmentHash([commitment; 32]),
            marker,
        }])
        .unwrap();
}

fn has_marker(store: &dyn Store, commitment: u8) -> bool {
    store
        .marker(&wallet(1), &thresig_store::CommitmentHash([commitment; 32]))
        .unwrap()
        .is_some()
}

/// A tick's time is in milliseconds: a marker expiring one second after
/// a time is purged by a tick past it, one expiring later is kept.
#[test]
fn a_tick_purges_markers_by_milliseconds() {
    let machine = Machine::new();
    let store = Arc::new(machine.open().unwrap());
    let fixed = Timestamp(1_700_000_000_000);
    insert_marker(
        store.as_ref(),
        1,
        marker_expiring_at(1, Timestamp(fixed.0 + 1_000)),
    );
    insert_marker(
        store.as_ref(),
        2,
        marker_expiring_at(2, Timestamp(fixed.0 + 60_000)),
    );
    let manager = KeyManager::new(store.clone(), Arc::new(DebugKeyAudit));
    manager.tick(Timestamp(fixed.0 + 2_000));
    assert!(!has_marker(store.as_ref(), 1));
    assert!(has_marker(store.as_ref(), 2));
    assert_eq!(manager.health().markers_purged, 1);
}

/// The manager's own thread reads the clock in milliseconds: a marker that
/// expired five seconds ago is purged by its next tick, one expiring in an
/// hour is kept. (A clock read in seconds would be a time in 1970 to the
/// purge, which would then keep both.)
#[test]
fn the_manager_thread_purges_expired_markers_by_the_clock_in_milliseconds() {
    let machine = Machine::new();
    let store = Arc::new(machine.open().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let now = Timestamp(u64::try_from(now).unwrap());
    insert_marker(
        store.as_ref(),
        1,
        marker_expiring_at(1, Timestamp(now.0 - 5_000)),
    );
    insert_marker(
        store.as_ref(),
        2,
        marker_expiring_at(2, Timestamp(now.0 + 3_600_000)),
    );
    let mut options = KeyManagerOptions::default();
    options.poll_interval = Duration::from_millis(10);
    let manager = KeyManager::start(store.clone(), options, Arc::new(DebugKeyAudit));
    let deadline = Instant::now() + Duration::from_secs(30);
    while manager.health().ticks < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(manager.health().ticks >= 2, "{:?}", manager.health());
    assert!(!has_marker(store.as_ref(), 1), "an expired marker was kept");
    assert!(has_marker(store.as_ref(), 2), "a live marker was purged");
    assert!(manager.stop_by(Instant::now() + Duration::from_secs(30)));
}

/// The bodies of every audit entry of `store`, with their times.
fn audit_bodies(store: &EncryptedStore) -> Vec<(u64, String)> {
    store
        .audit(thresig_store::AuditSeq(1), 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.at.0, String::from_utf8(e.body).unwrap()))
        .collect()
}

fn debug_body(change: &KeyChange) -> String {
    String::from_utf8(DebugKeyAudit.body(change)).unwrap()
}

#[test]
fn an_automatic_kek_rotation_is_audited_once() {
    let machine = Machine::new();
    let store = Arc::new(machine.open().unwrap());
    put_wallet(store.as_ref(), 1, b"one");
    let manager = KeyManager::new(store.clone(), Arc::new(DebugKeyAudit));
    manager.tick(Timestamp(1));
    assert_eq!(audit_bodies(&store), [], "nothing changed, nothing logged");
    machine.provider.add_key("kek-2", 2);
    machine.provider.set_current("kek-2");
    manager.tick(Timestamp(2));
    manager.tick(Timestamp(3));
    let current = store.keyring_status().unwrap().current;
    let kek = KekId::new("kek-2").unwrap();
    let added = KeyChange::KekAdded {
        kek: kek.clone(),
        dek_term: current,
    };
    let rotated = KeyChange::KekRotated {
        kek,
        dek_term: current,
    };
    assert_eq!(
        audit_bodies(&store),
        [(2, debug_body(&added)), (2, debug_body(&rotated))]
    );
}

/// The entry is appended in the rotation's own unit: with a broken log the
/// rotation cannot drop the old wraps either (the rotation waits for a
/// log that takes its entry; the DEKs stay readable under both KEKs).
#[test]
fn an_automatic_kek_rotation_never_commits_without_its_entry() {
    let machine = with_broken_log();
    let store = Arc::new(machine.open().unwrap());
    machine.provider.add_key("kek-2", 2);
    machine.provider.set_current("kek-2");
    let manager = KeyManager::new(store.clone(), Arc::new(DebugKeyAudit));
    manager.tick(Timestamp(3));
    let health = manager.health();
    assert!(health.alert, "{health:?}");
    assert_eq!(health.kek_rotations, 0);
    let status = store.keyring_status().unwrap();
    assert!(
        status.deks.iter().all(|d| d.keks.len() == 1),
        "the new KEK wraps nothing without its entry: {status:?}"
    );
}

/// A machine whose store's audit log misses entry 2 of 2: every append
/// fails with `audit_broken`.
fn with_broken_log() -> Machine {
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        for at in [1, 2] {
            store
                .write(vec![thresig_store::WriteOp::AppendAudit {
                    at: Timestamp(at),
                    entry: b"e".to_vec(),
                }])
                .unwrap();
        }
    }
    edit_raw(&machine, |txn| {
        let mut t = txn.open_table(raw_table("audit")).unwrap();
        t.remove(2u64.to_be_bytes().as_slice()).unwrap();
    });
    machine
}

/// An operator's KEK rotation commits each step with its entry: with a
/// broken log it fails before the new KEK wraps anything, as the key
/// manager's does, instead of taking effect and then failing to log.
#[test]
fn an_operators_kek_rotation_never_commits_a_step_without_its_entry() {
    let machine = with_broken_log();
    let store = machine.open().unwrap();
    machine.provider.add_key("kek-2", 2);
    machine.provider.set_current("kek-2");
    let err = store
        .rotate_kek_audited(&DebugKeyAudit, Timestamp(3))
        .unwrap_err();
    assert_eq!(err.code(), "audit_broken");
    let status = store.keyring_status().unwrap();
    assert!(
        status.deks.iter().all(|d| d.keks.len() == 1),
        "the new KEK wraps nothing without its entry: {status:?}"
    );
}

/// An operator's rotations log every key change they commit.
#[test]
fn an_operators_rotations_log_each_key_change() {
    let machine = Machine::new();
    let store = machine.open().unwrap();
    put_wallet(&store, 1, b"one");
    let old = store.keyring_status().unwrap().current;
    let new = store
        .rotate_dek_audited(&DebugKeyAudit, Timestamp(4))
        .unwrap();
    machine.provider.add_key("kek-2", 2);
    machine.provider.set_current("kek-2");
    let kek = store
        .rotate_kek_audited(&DebugKeyAudit, Timestamp(5))
        .unwrap();
    let changes = [
        (4, KeyChange::DekPromoted { term: new }),
        (4, KeyChange::DekRetired { term: old }),
        (
            5,
            KeyChange::KekAdded {
                kek: kek.clone(),
                dek_term: new,
            },
        ),
        (5, KeyChange::KekRotated { kek, dek_term: new }),
    ];
    let expected: Vec<(u64, String)> = changes
        .iter()
        .map(|(at, change)| (*at, debug_body(change)))
        .collect();
    assert_eq!(audit_bodies(&store), expected);
}

#[test]
fn a_dek_rotation_the_manager_finishes_is_audited() {
    let machine = Machine::new();
    let store = Arc::new(machine.open().unwrap());
    put_wallet(store.as_ref(), 1, b"one");
    let old = store.keyring_status().unwrap().current;
    // An operator's rotation that stopped after its promotion: the old DEK
    // still seals the wallet's record.
    let new = store.start_dek_rotation().unwrap();
    assert_ne!(old, new);
    let manager = KeyManager::new(store.clone(), Arc::new(DebugKeyAudit));
    manager.tick(Timestamp(5));
    assert_eq!(store.keyring_status().unwrap().retired, [old]);
    assert_eq!(
        audit_bodies(&store),
        [(5, debug_body(&KeyChange::DekRetired { term: old }))]
    );
}

/// A DEK rotation a crash stopped after it stored its new DEK and before
/// it promoted it: the manager's tick promotes the new DEK and retires the
/// old one, each with its entry.
#[test]
fn a_dek_rotation_stopped_before_its_promotion_is_finished_and_audited() {
    use thresig_store::{CrashMode, FaultPoint};
    for k in 1..=40 {
        let (disk, witness) = (SimDisk::new(), MemoryWitness::new());
        let provider = Arc::new(MemoryProvider::with_key("k", 1));
        {
            let store = open_on(&disk, &witness, provider.clone()).unwrap();
            put_wallet(&store, 1, b"one");
            disk.fail_nth(FaultPoint::Sync, k);
            let _ = store.rotate_dek();
            disk.crash(CrashMode::PowerLoss);
        }
        let Ok(store) = open_on(&disk, &witness, provider.clone()) else {
            continue;
        };
        let status = store.keyring_status().unwrap();
        let old = status.current;
        let Some(new) = status.deks.iter().map(|d| d.term).find(|t| *t > old) else {
            continue;
        };
        let store = Arc::new(store);
        KeyManager::new(store.clone(), Arc::new(DebugKeyAudit)).tick(Timestamp(7));
        assert_eq!(store.keyring_status().unwrap().current, new);
        assert_eq!(
            audit_bodies(&store),
            [
                (7, debug_body(&KeyChange::DekPromoted { term: new })),
                (7, debug_body(&KeyChange::DekRetired { term: old })),
            ]
        );
        return;
    }
    panic!("no sync fault stopped a rotation between its new DEK and its promotion");
}
