//! A loom model of the keyring and writer logic (not of redb): writers and
//! readers against DEK promotion and retirement.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p thresig-store --release loom`.
//!
//! The model's "database" is a mutex-protected map: holding the mutex is a
//! write transaction (redb has one writer), cloning the map under it is a
//! read snapshot (redb's MVCC). The keyring is the real [`Keyring`]. The
//! rotation follows the order the store uses: DEK into memory, promote,
//! re-seal, retire in a transaction that checks no record names the DEK,
//! then tell the keyring. The properties checked on every interleaving:
//! - a writer always finds, in memory, the DEK its transaction reads as
//!   current (I1);
//! - a reader always finds the DEK of every record in its snapshot (I2);
//! - no committed record names a retired DEK (I2).

use std::collections::BTreeMap;

use loom::sync::{Arc, Mutex};
use loom::thread;
use rand_core::OsRng;

use crate::ids::DekTerm;
use crate::keyring::Keyring;
use crate::seal::Dek;

#[derive(Clone, Debug, Default)]
struct Db {
    current: u64,
    /// Record key -> the DEK term it is sealed under.
    records: BTreeMap<u8, u64>,
    retired: Vec<u64>,
}

fn setup() -> (Arc<Keyring>, Arc<Mutex<Db>>) {
    let keyring = Arc::new(Keyring::default());
    keyring.insert(Dek::generate(DekTerm(1), &mut OsRng));
    let db = Db {
        current: 1,
        records: BTreeMap::from([(0, 1)]),
        retired: Vec::new(),
    };
    (keyring, Arc::new(Mutex::new(db)))
}

/// A write transaction: seal under the current DEK read inside it.
fn write(keyring: &Keyring, db: &Mutex<Db>, key: u8) {
    let mut txn = db.lock().unwrap();
    let current = txn.current;
    assert!(
        keyring.view().get(DekTerm(current)).is_some(),
        "writer: current DEK {current} not in memory"
    );
    txn.records.insert(key, current);
}

/// A reader: register, snapshot, open every record.
fn read(keyring: &Keyring, db: &Mutex<Db>) {
    let _token = keyring.enter_reader();
    let snapshot = db.lock().unwrap().clone();
    let view = keyring.view();
    for (key, term) in &snapshot.records {
        assert!(
            view.get(DekTerm(*term)).is_some(),
            "reader: record {key} names DEK {term}, gone from memory"
        );
    }
}

/// DEK rotation 1 -> 2, in the store's order.
fn rotate(keyring: &Keyring, db: &Mutex<Db>) {
    keyring.insert(Dek::generate(DekTerm(2), &mut OsRng));
    db.lock().unwrap().current = 2;
    {
        let mut txn = db.lock().unwrap();
        for term in txn.records.values_mut() {
            if *term == 1 {
                *term = 2;
            }
        }
    }
    let retired = {
        let mut txn = db.lock().unwrap();
        let in_use = txn.records.values().any(|t| *t == 1);
        if !in_use {
            txn.retired.push(1);
        }
        !in_use
    };
    if retired {
        keyring.retired(DekTerm(1));
    }
}

fn check_final(db: &Mutex<Db>) {
    let db = db.lock().unwrap();
    for (key, term) in &db.records {
        assert!(
            !db.retired.contains(term),
            "record {key} names retired DEK {term}"
        );
    }
}

/// Loom's unbounded search over three threads does not finish in hours; a
/// preemption bound of 4 (loom recommends 2 to 3 as finding most bugs)
/// keeps each model to a few seconds in release mode.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(4);
    builder.check(f);
}

#[test]
fn loom_writers_and_readers_against_promotion_and_retirement() {
    model(|| {
        let (keyring, db) = setup();
        let writer = {
            let (k, d) = (keyring.clone(), db.clone());
            thread::spawn(move || write(&k, &d, 1))
        };
        let reader = {
            let (k, d) = (keyring.clone(), db.clone());
            thread::spawn(move || read(&k, &d))
        };
        rotate(&keyring, &db);
        writer.join().unwrap();
        reader.join().unwrap();
        check_final(&db);
    });
}

#[test]
fn loom_two_readers_straddling_retirement() {
    model(|| {
        let (keyring, db) = setup();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (k, d) = (keyring.clone(), db.clone());
                thread::spawn(move || read(&k, &d))
            })
            .collect();
        rotate(&keyring, &db);
        for r in readers {
            r.join().unwrap();
        }
        check_final(&db);
    });
}
