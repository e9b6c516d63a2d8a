//! The slotted witness under crashes: a slot write torn by a crash (the
//! memory witness's injected tear) loses nothing the database did not also
//! keep, an open passes over a torn slot for the other one, and a witness
//! with no valid slot is refused and left as it is.

mod common;

use std::time::Duration;

use common::{Machine, create_in, put_wallet, wallet};
use thresig_store::provider::MemoryProvider;
use thresig_store::{
    CommitmentHash, CrashMode, EncryptedStore, Error, Marker, MemoryWitness, PackageHash, Recovery,
    SimDisk, Store as _, StoreLocation, StoreOptions, Timestamp, WriteOp,
};

/// The slots' offsets in the file (docs/storage-format.md).
const SLOTS: [usize; 2] = [64 * 1024, 128 * 1024];

fn marker_op() -> WriteOp {
    WriteOp::InsertMarker {
        wallet: wallet(1),
        commitment: CommitmentHash([7; 32]),
        marker: Marker {
            package_hash: PackageHash([1; 32]),
            shares: vec![1; 8],
            expires_at: Timestamp(u64::MAX / 2),
        },
    }
}

/// The slot whose write counter (its first 8 bytes) is higher.
fn newest_slot(file: &[u8]) -> usize {
    let counter = |at: usize| u64::from_be_bytes(file[at..at + 8].try_into().unwrap());
    *SLOTS.iter().max_by_key(|&&at| counter(at)).unwrap()
}

/// `machine`'s store with its database put back to `image`, beside a copy
/// of `witness`.
fn restored(machine: &Machine, image: Vec<u8>, witness: Option<Vec<u8>>) -> Machine {
    let copy = MemoryWitness::new();
    copy.set_bytes(witness);
    Machine {
        disk: SimDisk::from_image(image),
        witness: copy,
        provider: machine.provider.clone(),
    }
}

/// I5 with a crash in the middle of the witness write after a marker
/// commit: the caller is not acknowledged, the older slot still
/// authenticates, and the database (which committed first) is ahead of it,
/// so the open accepts it and writes the witness past the marker; from
/// then on the database from before the marker is refused.
#[test]
fn a_torn_witness_write_loses_nothing_the_database_kept() {
    for mode in [CrashMode::ProcessKill, CrashMode::PowerLoss] {
        for keep in [0, 30, 95] {
            let machine = Machine::new();
            let store = machine.open().unwrap();
            put_wallet(&store, 1, b"one");
            let before_marker = machine.disk.image();
            machine.witness.tear_next_slot_write(keep);
            let out = store.write(vec![marker_op()]);
            assert!(
                matches!(&out, Err(Error::WitnessIo { .. })),
                "{mode:?} {keep}: {out:?}"
            );
            machine.disk.crash(mode);
            drop(store);
            let store = machine.open().unwrap();
            assert!(
                store
                    .marker(&wallet(1), &CommitmentHash([7; 32]))
                    .unwrap()
                    .is_some(),
                "{mode:?} {keep}: the committed marker"
            );
            drop(store);
            let rolled_back = restored(&machine, before_marker, machine.witness.bytes());
            assert!(
                matches!(rolled_back.open(), Err(Error::RollbackDetected { .. })),
                "{mode:?} {keep}"
            );
        }
    }
}

/// A newest slot that does not authenticate is passed over for the other:
/// the witness is then the write before, so a database at that write opens
/// and one older than it is still refused.
#[test]
fn an_open_passes_over_a_torn_newest_slot_for_the_other() {
    let machine = Machine::new();
    let store = machine.open().unwrap();
    let at_open = machine.disk.image();
    put_wallet(&store, 1, b"one");
    let at_first_write = machine.disk.image();
    put_wallet(&store, 1, b"two");
    drop(store);
    let witness = machine.witness.bytes().unwrap();
    // Intact, the witness refuses the database of the first write.
    let intact = restored(&machine, at_first_write.clone(), Some(witness.clone()));
    assert!(matches!(intact.open(), Err(Error::RollbackDetected { .. })));
    let mut torn = witness;
    let newest = newest_slot(&torn);
    torn[newest + 20] ^= 0xff;
    let first = restored(&machine, at_first_write, Some(torn.clone()));
    let store = first.open().unwrap();
    assert_eq!(common::wallet_value(&store, 1).as_slice(), b"one");
    drop(store);
    let older = restored(&machine, at_open, Some(torn));
    assert!(matches!(older.open(), Err(Error::RollbackDetected { .. })));
}

/// Both slots failing their MAC is a damaged witness, as a damaged JSON
/// witness was: terminal, never read as absent, and not made anew.
#[test]
fn a_witness_with_no_valid_slot_is_refused_and_left_as_it_is() {
    let machine = Machine::new();
    put_wallet(&machine.open().unwrap(), 1, b"one");
    let mut damaged = machine.witness.bytes().unwrap();
    for at in SLOTS {
        damaged[at + 70] ^= 1;
    }
    machine.witness.set_bytes(Some(damaged.clone()));
    for _ in 0..2 {
        let err = machine.open().map(drop).unwrap_err();
        assert!(matches!(err, Error::WitnessCorrupt { .. }), "{err:?}");
        assert_eq!(err.recovery(), Recovery::Terminal);
        // Two damaged slots can hide a rollback: an older copy put back
        // would let the rolled-back database open unnoticed.
        assert!(err.to_string().contains("never an older copy"), "{err}");
        assert_eq!(machine.witness.bytes(), Some(damaged.clone()));
    }
}

/// What a marker write whose witness is not the file the open made
/// reports: the code and class, whether the message says so and names the
/// file, and whether anything was acknowledged.
fn assert_replaced(out: Result<thresig_store::WriteOutcome, Error>, witness: &std::path::Path) {
    let err = out.expect_err("a marker acknowledged without its witness");
    assert_eq!(err.code(), "witness_replaced", "{err:?}");
    assert_eq!(err.recovery(), Recovery::Terminal, "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&witness.display().to_string()), "{text}");
    assert!(
        text.contains("was removed or replaced while the store was open"),
        "{text}"
    );
}

/// A witness file removed while the store is open is not a passing I/O
/// error: the marker is not acknowledged, the error is terminal and says
/// what happened, no marker is handed back, and the store does not make a
/// new file behind the operator's back.
#[test]
fn a_witness_removed_while_the_store_is_open_stops_witnessed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("state.witness");
    let store = create_in(dir.path());
    put_wallet(&store, 1, b"one");
    std::fs::remove_file(&witness).unwrap();
    assert_replaced(store.write(vec![marker_op()]), &witness);
    let read = store.marker(&wallet(1), &CommitmentHash([7; 32]));
    assert_eq!(
        read.map_err(|e| e.code()).map(drop),
        Err("witness_replaced")
    );
    assert!(!witness.exists(), "the store made a new witness");
}

/// A FIFO, a symbolic link (to the very file the store made), a directory
/// or another store's witness put in the witness's place is not the file
/// the open made: each is refused as replaced, for what it is (a FIFO
/// opens at once for reading and writing, so only the regular-file check
/// tells it from a file of another size); with the file put back,
/// witnessed writes go on.
#[test]
fn a_witness_replaced_by_another_kind_of_file_is_refused_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("state.witness");
    let aside = dir.path().join("state.witness.aside");
    let store = std::sync::Arc::new(create_in(dir.path()));
    put_wallet(&*store, 1, b"one");
    std::fs::rename(&witness, &aside).unwrap();
    const NOT_A_FILE: &str = "something other than a regular file is there";
    let replacements: [(&str, &dyn Fn(), &str); 4] = [
        (
            "fifo",
            &|| {
                nix::unistd::mkfifo(&witness, nix::sys::stat::Mode::S_IRWXU).unwrap();
            },
            NOT_A_FILE,
        ),
        (
            "symlink",
            &|| std::os::unix::fs::symlink(&aside, &witness).unwrap(),
            NOT_A_FILE,
        ),
        (
            "directory",
            &|| std::fs::create_dir(&witness).unwrap(),
            NOT_A_FILE,
        ),
        (
            "another store's witness",
            &|| {
                let other = tempfile::tempdir().unwrap();
                drop(create_in(other.path()));
                std::fs::copy(other.path().join("state.witness"), &witness).unwrap();
            },
            "a file other than the one this store made at open is there",
        ),
    ];
    for (n, (kind, replace, reason)) in replacements.into_iter().enumerate() {
        replace();
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = store.clone();
        let marker = WriteOp::InsertMarker {
            wallet: wallet(1),
            commitment: CommitmentHash([n as u8; 32]),
            marker: Marker {
                package_hash: PackageHash([1; 32]),
                shares: vec![1; 8],
                expires_at: Timestamp(u64::MAX / 2),
            },
        };
        std::thread::spawn(move || tx.send(writer.write(vec![marker])));
        // A deadlock guard, not synchronization: the write answers at
        // once, and only a write stuck on what is at the path runs into it.
        let out = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{kind}: the marker write hung"));
        let text = out.as_ref().map_err(ToString::to_string).err();
        assert!(
            text.as_deref().is_some_and(|t| t.contains(reason)),
            "{kind}: {text:?}"
        );
        assert_replaced(out, &witness);
        if kind == "directory" {
            std::fs::remove_dir(&witness).unwrap();
        } else {
            std::fs::remove_file(&witness).unwrap();
        }
    }
    std::fs::rename(&aside, &witness).unwrap();
    store.write(vec![marker_op()]).unwrap();
    assert!(
        store
            .marker(&wallet(1), &CommitmentHash([0; 32]))
            .unwrap()
            .is_some()
    );
}

/// The open reads only a regular file at the witness's path, and no more
/// of it than a witness can hold: a FIFO (which a plain read would wait on
/// for a writer forever), a symbolic link (even to the store's own witness)
/// and a sparse file of a terabyte (which a plain read would try to hold in
/// memory) are refused as corrupt, and left as they are.
#[test]
fn an_open_refuses_a_witness_that_is_not_a_regular_file_or_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("state.witness");
    let aside = dir.path().join("state.witness.aside");
    drop(create_in(dir.path()));
    std::fs::rename(&witness, &aside).unwrap();
    let replacements: [(&str, &dyn Fn()); 3] = [
        ("fifo", &|| {
            nix::unistd::mkfifo(&witness, nix::sys::stat::Mode::S_IRWXU).unwrap();
        }),
        ("symlink", &|| {
            std::os::unix::fs::symlink(&aside, &witness).unwrap();
        }),
        ("huge file", &|| {
            let file = std::fs::File::create(&witness).unwrap();
            file.set_len(1 << 40).unwrap();
        }),
    ];
    for (kind, replace) in replacements {
        replace();
        let (tx, rx) = std::sync::mpsc::channel();
        let location = StoreLocation::Directory(dir.path().to_path_buf());
        std::thread::spawn(move || {
            let provider = std::sync::Arc::new(MemoryProvider::with_key("k", 9));
            let opened = EncryptedStore::open(location, provider, StoreOptions::default());
            tx.send(opened.map(drop))
        });
        // A deadlock guard, not synchronization: the open answers at once,
        // and only an open stuck reading what is at the path runs into it.
        let out = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{kind}: the open hung"));
        let err = out.expect_err(kind);
        assert!(
            matches!(err, Error::WitnessCorrupt { .. }),
            "{kind}: {err:?}"
        );
        assert_eq!(err.recovery(), Recovery::Terminal);
        assert!(std::fs::symlink_metadata(&witness).is_ok(), "{kind}");
        std::fs::remove_file(&witness).unwrap();
    }
    std::fs::rename(&aside, &witness).unwrap();
    let provider = std::sync::Arc::new(MemoryProvider::with_key("k", 9));
    let location = StoreLocation::Directory(dir.path().to_path_buf());
    EncryptedStore::open(location, provider, StoreOptions::default()).unwrap();
}
