//! The audit log's hash chain: every kind of damage is found at the exact
//! entry, nothing is appended after a broken head, a log put back from an
//! older copy refuses the open (I5), and a prune keeps the chain verifiable.

mod common;

use common::{Machine, edit_raw, raw_get, raw_put, raw_table, wallet};
use thresig_store::{
    AuditBreak, AuditSeq, CommitmentHash, Error, GENESIS, Marker, OpResult, PackageHash, Store,
    Timestamp, WriteOp, WriteOutcome, entry_hash,
};

fn append(store: &dyn Store, at: u64, body: &[u8]) -> AuditSeq {
    match store
        .write(vec![WriteOp::AppendAudit {
            at: Timestamp(at),
            entry: body.to_vec(),
        }])
        .unwrap()
    {
        WriteOutcome::Committed(r) => match r.as_slice() {
            [OpResult::Appended(seq)] => *seq,
            other => panic!("unexpected result {other:?}"),
        },
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// A store with entries 1 to `n`, written at 1000, 2000, … ms.
fn log_of(n: u64) -> Machine {
    let machine = Machine::new();
    let store = machine.open().unwrap();
    for i in 1..=n {
        assert_eq!(
            append(&store, i * 1000, format!("e{i}").as_bytes()),
            AuditSeq(i)
        );
    }
    machine
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn broken_at(machine: &Machine) -> (AuditSeq, AuditBreak) {
    let store = machine.open().unwrap();
    match store.audit_verify() {
        Err(Error::AuditBroken { seq, problem }) => (seq, problem),
        other => panic!("expected a broken link, got {other:?}"),
    }
}

#[test]
fn entries_chain_from_genesis_and_verify() {
    let machine = log_of(5);
    let store = machine.open().unwrap();
    let report = store.audit_verify().unwrap();
    assert_eq!(report.entries, 5);
    assert_eq!(report.head.seq, AuditSeq(5));
    let entries = store.audit(AuditSeq(1), 10).unwrap();
    assert_eq!(entries.len(), 5);
    let mut prev = GENESIS;
    for e in &entries {
        assert_eq!(e.prev, prev);
        assert_eq!(e.hash, entry_hash(&prev, e.seq, e.at, &e.body));
        prev = e.hash;
    }
    assert_eq!(report.head.hash, prev);
    assert_eq!(entries[2].body, b"e3");
    assert_eq!(entries[2].at, Timestamp(3000));
}

#[test]
fn a_flipped_byte_in_any_entry_is_found_at_that_entry() {
    for target in 1..=4u64 {
        let machine = log_of(4);
        edit_raw(&machine, |txn| {
            let mut v = raw_get(txn, "audit", &key(target)).unwrap();
            let last = v.len() - 1;
            v[last] ^= 1;
            raw_put(txn, "audit", &key(target), &v);
        });
        assert_eq!(
            broken_at(&machine),
            (AuditSeq(target), AuditBreak::Unreadable),
            "entry {target}"
        );
    }
}

#[test]
fn a_deleted_entry_is_found_at_its_sequence() {
    for target in 1..=4u64 {
        let machine = log_of(4);
        edit_raw(&machine, |txn| {
            let mut t = txn.open_table(raw_table("audit")).unwrap();
            t.remove(key(target).as_slice()).unwrap();
        });
        assert_eq!(
            broken_at(&machine),
            (AuditSeq(target), AuditBreak::Missing),
            "entry {target}"
        );
    }
}

#[test]
fn two_reordered_entries_are_found_at_the_first() {
    let machine = log_of(5);
    edit_raw(&machine, |txn| {
        let two = raw_get(txn, "audit", &key(2)).unwrap();
        let four = raw_get(txn, "audit", &key(4)).unwrap();
        raw_put(txn, "audit", &key(2), &four);
        raw_put(txn, "audit", &key(4), &two);
    });
    assert_eq!(broken_at(&machine), (AuditSeq(2), AuditBreak::Unreadable));
}

#[test]
fn a_broken_head_refuses_the_append_and_takes_its_marker_back() {
    let machine = log_of(3);
    edit_raw(&machine, |txn| {
        let mut t = txn.open_table(raw_table("audit")).unwrap();
        t.remove(key(3).as_slice()).unwrap();
    });
    let store = machine.open().unwrap();
    let w = wallet(1);
    let c = CommitmentHash([9; 32]);
    let err = store
        .write(vec![
            WriteOp::InsertMarker {
                wallet: w.clone(),
                commitment: c,
                marker: Marker {
                    package_hash: PackageHash([1; 32]),
                    shares: vec![1; 32],
                    expires_at: Timestamp(10_000_000),
                },
            },
            WriteOp::AppendAudit {
                at: Timestamp(9_000),
                entry: b"share released".to_vec(),
            },
        ])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AuditBroken {
                seq: AuditSeq(3),
                problem: AuditBreak::HeadMismatch
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "audit_broken");
    assert_eq!(err.recovery(), thresig_store::Recovery::Terminal);
    assert_eq!(
        store.marker(&w, &c).unwrap(),
        None,
        "no marker without its entry"
    );
}

/// Writes entries 1 to 5, then puts entries 1 to 3 and their head back as
/// they were at entry 3, and the witness of that time too if
/// `with_witness`; returns the open's error.
fn put_back_at_entry_3(with_witness: bool) -> Error {
    let machine = log_of(3);
    let mut old = Vec::new();
    let mut old_head = Vec::new();
    edit_raw(&machine, |txn| {
        for seq in 1..=3u64 {
            old.push((key(seq), raw_get(txn, "audit", &key(seq)).unwrap()));
        }
        old_head = raw_get(txn, "sys", b"audit_head").unwrap();
    });
    let old_witness = machine.witness.bytes();
    {
        let store = machine.open().unwrap();
        append(&store, 4000, b"e4");
        append(&store, 5000, b"e5");
    }
    edit_raw(&machine, |txn| {
        let mut t = txn.open_table(raw_table("audit")).unwrap();
        for seq in 4..=5u64 {
            t.remove(key(seq).as_slice()).unwrap();
        }
        drop(t);
        for (k, v) in &old {
            raw_put(txn, "audit", k, v);
        }
        raw_put(txn, "sys", b"audit_head", &old_head);
    });
    if with_witness {
        // The old witness still authenticates and agrees with the old head.
        machine.witness.set_bytes(old_witness);
    }
    machine.open().unwrap_err()
}

#[test]
fn a_log_put_back_from_an_older_copy_refuses_the_open() {
    for with_witness in [false, true] {
        let err = put_back_at_entry_3(with_witness);
        assert!(
            matches!(
                err,
                Error::AuditBroken {
                    seq: AuditSeq(3),
                    problem: AuditBreak::RolledBack
                }
            ),
            "with its witness: {with_witness}: {err:?}"
        );
        assert_eq!(err.code(), "audit_broken");
    }
}

#[test]
fn an_unreadable_head_refuses_the_open_as_such() {
    let machine = Machine::new();
    drop(machine.open().unwrap());
    // A witness from before any entry, and later the head record gone:
    // reading that as an empty log would agree with this witness.
    let empty_witness = machine.witness.bytes();
    {
        let store = machine.open().unwrap();
        append(&store, 1000, b"e1");
        append(&store, 2000, b"e2");
    }
    edit_raw(&machine, |txn| {
        let mut t = txn.open_table(raw_table("sys")).unwrap();
        t.remove(b"audit_head".as_slice()).unwrap();
    });
    machine.witness.set_bytes(empty_witness);
    let err = machine.open().unwrap_err();
    assert!(
        matches!(
            err,
            Error::AuditBroken {
                seq: AuditSeq(0),
                problem: AuditBreak::HeadUnreadable
            }
        ),
        "{err:?}"
    );
}

#[test]
fn prune_removes_old_entries_and_the_rest_still_verifies() {
    let machine = log_of(5);
    let store = machine.open().unwrap();
    // A prune that would not stop where its caller said (entry 3 was also
    // written before the cut-off; entry 4 was not) changes nothing.
    for through in [2, 4] {
        let out = store
            .write(vec![WriteOp::PruneAudit {
                before: Timestamp(3_500),
                through: AuditSeq(through),
            }])
            .unwrap();
        assert!(
            matches!(
                out,
                WriteOutcome::Skipped {
                    conflict: thresig_store::Conflict::AuditPruneMoved,
                    ..
                }
            ),
            "{through}: {out:?}"
        );
    }
    let out = store
        .write(vec![
            WriteOp::PruneAudit {
                before: Timestamp(3_500),
                through: AuditSeq(3),
            },
            WriteOp::AppendAudit {
                at: Timestamp(6_000),
                entry: b"pruned".to_vec(),
            },
        ])
        .unwrap();
    assert_eq!(
        out,
        WriteOutcome::Committed(vec![
            OpResult::AuditPruned(3),
            OpResult::Appended(AuditSeq(6))
        ])
    );
    let report = store.audit_verify().unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(report.head.first, AuditSeq(4));
    let kept = store.audit(AuditSeq(1), 10).unwrap();
    assert_eq!(kept.first().map(|e| e.seq), Some(AuditSeq(4)));
    assert_eq!(kept.first().map(|e| e.prev), Some(report.head.anchor));
    // A pruned entry put back is a broken link, not silently accepted.
    drop(store);
    edit_raw(&machine, |txn| raw_put(txn, "audit", &key(1), b"old"));
    assert_eq!(broken_at(&machine), (AuditSeq(1), AuditBreak::Pruned));
}

#[test]
fn prune_never_removes_the_last_entry() {
    let machine = log_of(2);
    let store = machine.open().unwrap();
    store
        .write(vec![WriteOp::PruneAudit {
            before: Timestamp(u64::MAX),
            through: AuditSeq(1),
        }])
        .unwrap();
    let report = store.audit_verify().unwrap();
    assert_eq!((report.entries, report.head.seq), (1, AuditSeq(2)));
    assert_eq!(append(&store, 9000, b"next"), AuditSeq(3));
    assert_eq!(store.audit_verify().unwrap().entries, 2);
}

#[test]
fn a_row_after_the_head_is_found_at_its_sequence() {
    let machine = log_of(3);
    edit_raw(&machine, |txn| {
        let three = raw_get(txn, "audit", &key(3)).unwrap();
        raw_put(txn, "audit", &key(4), &three);
    });
    assert_eq!(broken_at(&machine), (AuditSeq(4), AuditBreak::BeyondHead));
}

#[test]
fn a_rollback_refusal_says_where_each_audit_log_ends() {
    let machine = log_of(3);
    let backup = machine.disk.image();
    {
        let store = machine.open().unwrap();
        append(&store, 4000, b"e4");
        append(&store, 5000, b"e5");
    }
    let restored = Machine {
        disk: thresig_store::SimDisk::from_image(backup),
        witness: machine.witness.clone(),
        provider: machine.provider.clone(),
    };
    let err = restored.open().unwrap_err();
    assert!(matches!(err, Error::RollbackDetected { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("its audit log ends at entry 3, the witness's at entry 5"),
        "{text}"
    );
}
