//! Fault injection at every storage and provider step of a commit and of
//! each rotation. After each failure and a crash, the store opens with the
//! state from before or after the failed operation — never a mix — and no
//! acknowledged write is lost.
//!
//! The steps, per operation (each storage call of the operation is one
//! step; the table below enumerates the operations and which providers
//! calls they make):
//!
//! | operation        | storage steps injected              | provider steps injected        |
//! |------------------|-------------------------------------|--------------------------------|
//! | write unit       | every write, sync, read, set_len    | none: it makes no provider call|
//! | wallet epoch bump| every write, sync, read, set_len    | none                           |
//! | marker purge     | every write, sync, read, set_len    | none                           |
//! | DEK rotation     | every write, sync, read, set_len    | key-id, wrap                   |
//! | KEK rotation     | every write, sync, read, set_len    | key-id, wrap of each DEK       |
//! | open             | —                                   | unwrap of each DEK             |

mod common;

use std::sync::Arc;

use common::{ScriptedProvider, open_on, wallet, wallet_value};
use thresig_store::provider::{KeyProvider, MemoryProvider};
use thresig_store::{
    CommitmentHash, CrashMode, EncryptedStore, FaultPoint, Marker, MemoryWitness, PackageHash,
    PolicyKey, Recovery, SimDisk, Store, Timestamp, WriteOp,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    WriteUnit,
    EpochBump,
    Purge,
    RotateDek,
    RotateKek,
}

const OPERATIONS: [Operation; 5] = [
    Operation::WriteUnit,
    Operation::EpochBump,
    Operation::Purge,
    Operation::RotateDek,
    Operation::RotateKek,
];

const POINTS: [FaultPoint; 4] = [
    FaultPoint::Write,
    FaultPoint::Sync,
    FaultPoint::Read,
    FaultPoint::SetLen,
];

fn policy_key() -> PolicyKey {
    PolicyKey::new(b"count".to_vec()).unwrap()
}

fn commitment() -> CommitmentHash {
    CommitmentHash([5; 32])
}

/// Everything the operations touch, as plaintext.
type Snapshot = Vec<Option<Vec<u8>>>;

fn snapshot(store: &EncryptedStore) -> Snapshot {
    let w = wallet(1);
    vec![
        store.wallet(&w).unwrap().map(|v| v.to_vec()),
        store.wallet(&wallet(2)).unwrap().map(|v| v.to_vec()),
        store.policy(&w, &policy_key()).unwrap().map(|v| v.to_vec()),
        store.marker(&w, &commitment()).unwrap().map(|m| m.shares),
        store
            .marker(&w, &CommitmentHash([9; 32]))
            .unwrap()
            .map(|m| m.shares),
    ]
}

struct Setup {
    disk: SimDisk,
    witness: MemoryWitness,
    provider: Arc<ScriptedProvider>,
    before: Snapshot,
}

/// A store with two wallets, a counter and an expired marker; acknowledged.
fn setup() -> Setup {
    let disk = SimDisk::new();
    let witness = MemoryWitness::new();
    let provider = Arc::new(ScriptedProvider::new(MemoryProvider::with_key("kek-1", 1)));
    let store = open_on(&disk, &witness, provider.clone()).unwrap();
    store
        .write(vec![
            WriteOp::PutWallet {
                wallet: wallet(1),
                value: b"w1-before".to_vec(),
            },
            WriteOp::PutWallet {
                wallet: wallet(2),
                value: b"w2".to_vec(),
            },
            WriteOp::CasPolicy {
                wallet: wallet(1),
                key: policy_key(),
                expected: None,
                new: b"1".to_vec(),
            },
            WriteOp::InsertMarker {
                wallet: wallet(1),
                commitment: CommitmentHash([9; 32]),
                marker: Marker {
                    package_hash: PackageHash([1; 32]),
                    shares: b"old-shares".to_vec(),
                    expires_at: Timestamp(10_000),
                },
            },
        ])
        .unwrap();
    let before = snapshot(&store);
    provider.inner.add_key("kek-2", 2);
    provider.inner.set_current("kek-2");
    drop(store);
    Setup {
        disk,
        witness,
        provider,
        before,
    }
}

fn run(op: Operation, store: &EncryptedStore) -> Result<(), thresig_store::Error> {
    match op {
        Operation::WriteUnit => store
            .write(vec![
                WriteOp::PutWallet {
                    wallet: wallet(1),
                    value: b"w1-after".to_vec(),
                },
                WriteOp::CasPolicy {
                    wallet: wallet(1),
                    key: policy_key(),
                    expected: Some(b"1".to_vec()),
                    new: b"2".to_vec(),
                },
                WriteOp::InsertMarker {
                    wallet: wallet(1),
                    commitment: commitment(),
                    marker: Marker {
                        package_hash: PackageHash([2; 32]),
                        shares: b"shares".to_vec(),
                        expires_at: Timestamp(100_000),
                    },
                },
            ])
            .map(drop),
        Operation::EpochBump => store
            .write(vec![WriteOp::BumpWalletEpoch { wallet: wallet(1) }])
            .map(drop),
        Operation::Purge => store
            .write(vec![WriteOp::PurgeMarkers {
                now: Timestamp(50_000),
            }])
            .map(drop),
        Operation::RotateDek => store.rotate_dek().map(drop),
        Operation::RotateKek => store.rotate_kek().map(drop),
    }
}

/// The state a successful `op` leaves.
fn after(op: Operation, before: &Snapshot) -> Snapshot {
    let mut s = before.clone();
    match op {
        Operation::WriteUnit => {
            s[0] = Some(b"w1-after".to_vec());
            s[2] = Some(b"2".to_vec());
            s[3] = Some(b"shares".to_vec());
        }
        Operation::Purge => s[4] = None,
        Operation::EpochBump | Operation::RotateDek | Operation::RotateKek => {}
    }
    s
}

/// Reopens after a crash, finishes rotations, and checks the state.
fn check_reopen(setup: &Setup, op: Operation, acked: bool, label: &str) {
    let store = open_on(&setup.disk, &setup.witness, setup.provider.clone())
        .unwrap_or_else(|e| panic!("{label}: reopen failed: {e:?}"));
    store
        .resume_rotations()
        .unwrap_or_else(|e| panic!("{label}: resume failed: {e:?}"));
    let report = store.verify().unwrap();
    assert!(report.failures.is_empty(), "{label}: {:?}", report.failures);
    let now = snapshot(&store);
    let after = after(op, &setup.before);
    if acked {
        assert_eq!(now, after, "{label}: acknowledged operation lost");
    } else {
        assert!(
            now == setup.before || now == after,
            "{label}: mixed state {now:?}"
        );
    }
}

/// How many calls to `point` the operation makes, on a throwaway copy.
fn count(op: Operation, point: FaultPoint) -> u64 {
    let s = setup();
    let store = open_on(&s.disk, &s.witness, s.provider.clone()).unwrap();
    let start = s.disk.calls(point);
    run(op, &store).unwrap();
    s.disk.calls(point) - start
}

#[test]
fn every_storage_step_fails_cleanly() {
    let mut injected = 0;
    for op in OPERATIONS {
        for point in POINTS {
            let steps = count(op, point);
            for k in 1..=steps {
                let s = setup();
                let store = open_on(&s.disk, &s.witness, s.provider.clone()).unwrap();
                s.disk.fail_nth(point, k);
                let result = run(op, &store);
                // A storage fault is reported as one (retryable, or latched
                // until the store is reopened), never as corruption.
                if let Err(e) = &result {
                    assert!(
                        matches!(e, thresig_store::Error::Storage { .. }),
                        "{op:?} {point:?} {k}: {e:?}"
                    );
                }
                let mode = if k % 2 == 0 {
                    CrashMode::PowerLoss
                } else {
                    CrashMode::ProcessKill
                };
                s.disk.crash(mode);
                drop(store);
                check_reopen(
                    &s,
                    op,
                    result.is_ok(),
                    &format!("{op:?} {point:?} step {k}"),
                );
                injected += 1;
            }
        }
    }
    assert!(injected > 50, "only {injected} steps injected");
}

#[test]
fn every_provider_step_fails_cleanly_and_writes_make_no_provider_call() {
    for op in OPERATIONS {
        let s = setup();
        let store = open_on(&s.disk, &s.witness, s.provider.clone()).unwrap();
        let start = s.provider.calls();
        run(op, &store).unwrap();
        let steps = s.provider.calls() - start;
        if matches!(
            op,
            Operation::WriteUnit | Operation::EpochBump | Operation::Purge
        ) {
            assert_eq!(steps, 0, "{op:?} called the key provider (I3)");
        } else {
            assert!(steps >= 2, "{op:?} made {steps} provider calls");
        }
        for k in 1..=steps {
            let s = setup();
            let store = open_on(&s.disk, &s.witness, s.provider.clone()).unwrap();
            s.provider.fail_nth(k);
            let result = run(op, &store);
            let err = result
                .as_ref()
                .expect_err("a provider failure must surface");
            assert_eq!(
                err.recovery(),
                Recovery::Retryable,
                "{op:?} step {k}: {err:?}"
            );
            // Signing-path writes are unaffected by the failed rotation.
            run(Operation::WriteUnit, &store).unwrap();
            s.disk.crash(CrashMode::PowerLoss);
            drop(store);
            check_reopen(
                &s,
                Operation::WriteUnit,
                true,
                &format!("{op:?} provider step {k}"),
            );
        }
    }
}

#[test]
fn provider_outage_blocks_neither_writes_nor_reads() {
    let s = setup();
    let store = open_on(&s.disk, &s.witness, s.provider.clone()).unwrap();
    s.provider.fail_all(true);
    run(Operation::WriteUnit, &store).unwrap();
    assert_eq!(wallet_value(&store, 1).as_slice(), b"w1-after");
    let err = store.rotate_kek().unwrap_err();
    assert_eq!(err.recovery(), Recovery::Retryable);
    // Opening after a restart needs the provider: retryable, nothing reset.
    drop(store);
    let err = open_on(&s.disk, &s.witness, s.provider.clone()).unwrap_err();
    assert_eq!(err.recovery(), Recovery::Retryable, "{err:?}");
    s.provider.fail_all(false);
    let p: Arc<dyn KeyProvider> = s.provider.clone();
    let store = open_on(&s.disk, &s.witness, p).unwrap();
    assert_eq!(wallet_value(&store, 1).as_slice(), b"w1-after");
}

#[test]
fn every_read_of_an_open_fails_cleanly() {
    let s = setup();
    let start = s.disk.calls(FaultPoint::Read);
    drop(open_on(&s.disk, &s.witness, s.provider.clone()).unwrap());
    let reads = s.disk.calls(FaultPoint::Read) - start;
    assert!(reads > 0);
    for k in 1..=reads {
        s.disk.fail_nth(FaultPoint::Read, k);
        match open_on(&s.disk, &s.witness, s.provider.clone()) {
            Ok(store) => assert_eq!(snapshot(&store), s.before, "read step {k}"),
            Err(e) => assert!(
                matches!(e, thresig_store::Error::Storage { .. }),
                "read step {k}: {e:?}"
            ),
        }
        s.disk.crash(CrashMode::ProcessKill);
        let store = open_on(&s.disk, &s.witness, s.provider.clone()).unwrap();
        assert_eq!(snapshot(&store), s.before, "after read step {k}");
        drop(store);
        s.disk.crash(CrashMode::ProcessKill);
    }
}

fn marker_op(hash: u8) -> WriteOp {
    WriteOp::InsertMarker {
        wallet: wallet(1),
        commitment: CommitmentHash([7; 32]),
        marker: Marker {
            package_hash: PackageHash([hash; 32]),
            shares: vec![hash; 8],
            expires_at: Timestamp(u64::MAX / 2),
        },
    }
}

/// I5: the witness is rewritten after every commit with a marker (or other
/// security-relevant) change, so a database restored alone to before a
/// marker insert (same epoch, older generation) is refused; otherwise the
/// rate charges written in the marker's transaction would be undone and the
/// budget could be spent again. (Nonces are not at stake: they live only in
/// memory, and a restart forgets them.)
#[test]
fn a_rollback_to_before_a_marker_insert_is_refused() {
    use common::{Machine, put_wallet};
    use thresig_store::{Error, WriteOutcome};
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"one");
    }
    let before_marker = machine.disk.image();
    {
        let store = machine.open().unwrap();
        let out = store.write(vec![marker_op(1)]).unwrap();
        assert!(matches!(out, WriteOutcome::Committed(_)));
    }
    let rolled_back = Machine {
        disk: SimDisk::from_image(before_marker),
        witness: machine.witness.clone(),
        provider: machine.provider.clone(),
    };
    let opened = rolled_back.open();
    if let Ok(store) = &opened {
        let second = store.write(vec![marker_op(2)]).unwrap();
        assert!(
            !matches!(second, WriteOutcome::Committed(_)),
            "rolled-back DB opened and released shares for a second package"
        );
    }
    assert!(
        matches!(opened, Err(Error::RollbackDetected { .. })),
        "older generation must be refused"
    );
}

/// I5: once a witness has been written, a missing witness refuses the open;
/// deleting it must not let an older database open (and rewrite the witness
/// to match it).
#[test]
fn a_deleted_witness_refuses_the_open_of_an_older_database() {
    use common::{Machine, put_wallet};
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        put_wallet(&store, 1, b"one");
    }
    let old_image = machine.disk.image();
    {
        let store = machine.open().unwrap();
        store
            .write(vec![WriteOp::BumpWalletEpoch { wallet: wallet(1) }])
            .unwrap();
        put_wallet(&store, 1, b"newer");
    }
    machine.witness.set_bytes(None);
    let rolled_back = Machine {
        disk: SimDisk::from_image(old_image),
        witness: machine.witness.clone(),
        provider: machine.provider.clone(),
    };
    let r = rolled_back.open();
    let accept = match r {
        Err(thresig_store::Error::WitnessMissing { accept, .. }) => accept,
        other => panic!("an existing store without its witness must not open silently: {other:?}"),
    };
    let mut options = thresig_store::StoreOptions::default();
    options.rollback = thresig_store::RollbackPolicy::AcceptOlderDatabase(accept);
    assert!(rolled_back.open_with(options).is_ok(), "explicit override");
    assert!(
        rolled_back.open().is_ok(),
        "the override rewrote the witness"
    );
}

/// I6: "an unreachable or slow provider is retryable". During a KEK
/// rotation a DEK has two wraps; at open the preferred (current) KEK's
/// unwrap fails transiently and the old KEK is already gone: the open must
/// be retryable (a retry succeeds), not terminal `KekUnavailable`.
#[test]
fn a_transient_failure_on_one_wrap_is_retryable_even_if_another_is_gone() {
    use common::put_wallet;
    let disk = SimDisk::new();
    let witness = thresig_store::MemoryWitness::new();
    let provider = Arc::new(common::ScriptedProvider::new(MemoryProvider::with_key(
        "kek-1", 1,
    )));
    {
        let store = common::open_on(&disk, &witness, provider.clone()).unwrap();
        put_wallet(&store, 1, b"one");
        provider.inner.add_key("kek-2", 2);
        provider.inner.set_current("kek-2");
        store.add_kek_wraps().unwrap(); // wraps under kek-1 and kek-2
    }
    provider.inner.destroy_key("kek-1");
    // Open: call 1 = key-id, call 2 = unwrap under kek-2 (fails, transient).
    provider.fail_nth(2);
    let p: Arc<dyn KeyProvider> = provider.clone();
    let err = common::open_on(&disk, &witness, p.clone()).unwrap_err();
    let recovery = err.recovery();
    // Proof that retrying works:
    assert!(common::open_on(&disk, &witness, p).is_ok());
    assert_eq!(recovery, Recovery::Retryable, "{err:?}");
}

/// A store whose witness (in memory) can be made to fail every write, as
/// a failing disk would (a witness removed or replaced is another error:
/// the store test `a_witness_removed_while_the_store_is_open_stops_witnessed_writes`).
fn store_with_failable_witness() -> (EncryptedStore, MemoryWitness) {
    let witness = MemoryWitness::new();
    let provider = Arc::new(MemoryProvider::with_key("k", 9));
    let store = open_on(&SimDisk::new(), &witness, provider).unwrap();
    (store, witness)
}

/// I5: a security-relevant write is acknowledged only once the witness
/// covers it. If the witness cannot be written after the commit, the caller
/// gets a retryable `WitnessIo` instead of `Committed` (no share released);
/// once the witness is writable again, a retry finds the marker.
#[test]
fn a_marker_is_not_acknowledged_while_the_witness_cannot_be_written() {
    use thresig_store::{Conflict, Error, Store as _, WriteOutcome};
    let (store, witness) = store_with_failable_witness();
    common::put_wallet(&store, 1, b"one");
    witness.fail_slot_writes(true);
    let out = store.write(vec![marker_op(1)]);
    assert!(matches!(&out, Err(Error::WitnessIo { .. })), "{out:?}");
    assert_eq!(out.unwrap_err().recovery(), Recovery::Retryable);
    // A unit with nothing security-relevant is still acknowledged.
    let meta = thresig_store::MetaName::new(b"m".to_vec()).unwrap();
    let plain = store.write(vec![WriteOp::PutMeta {
        name: meta,
        value: b"v".to_vec().into(),
    }]);
    assert!(matches!(plain, Ok(WriteOutcome::Committed(_))), "{plain:?}");
    // While the witness lags, the committed marker's shares are not handed
    // back: not to a retry of the insert, not to a read.
    let early = store.write(vec![marker_op(1)]);
    assert!(matches!(&early, Err(Error::WitnessIo { .. })), "{early:?}");
    let read = store.marker(&wallet(1), &CommitmentHash([7; 32]));
    assert!(matches!(&read, Err(Error::WitnessIo { .. })), "{read:?}");
    witness.fail_slot_writes(false);
    let retry = store.write(vec![marker_op(1)]).unwrap();
    assert!(
        matches!(
            retry,
            WriteOutcome::Skipped {
                conflict: Conflict::MarkerPresent(_),
                ..
            }
        ),
        "{retry:?}"
    );
    // The witness caught up: the marker reads again.
    assert!(
        store
            .marker(&wallet(1), &CommitmentHash([7; 32]))
            .unwrap()
            .is_some()
    );
}

/// I5: a keyring change that bumps the global epoch (a DEK promotion here)
/// and then cannot write the witness keeps the witness lag: until the
/// witness is written, no stored marker is handed back, so nothing that
/// could release a share relies on a witness older than the database.
#[test]
fn a_keyring_change_whose_witness_write_fails_keeps_the_lag() {
    use thresig_store::Error;
    let (store, witness) = store_with_failable_witness();
    store.write(vec![marker_op(1)]).unwrap();
    witness.fail_slot_writes(true);
    let failures = store.writer_stats().witness_failures;
    store.start_dek_rotation().unwrap();
    assert_eq!(store.writer_stats().witness_failures, failures + 1);
    let read = store.marker(&wallet(1), &CommitmentHash([7; 32]));
    assert!(matches!(&read, Err(Error::WitnessIo { .. })), "{read:?}");
    witness.fail_slot_writes(false);
    let read = store.marker(&wallet(1), &CommitmentHash([7; 32])).unwrap();
    assert!(read.is_some(), "the witness caught up: the marker reads");
}
