use std::time::{Duration, UNIX_EPOCH};

use thresig_engine::test_util::cluster::seat;

use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const T0: u64 = 1_800_000_000;

fn timed_out(member: u16) -> Observed {
    let mut observed = Observed::default();
    observed.asked.insert(seat(member));
    observed.fault(seat(member), Fault::Timeout);
    observed
}

#[test]
fn scores_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    let policy = Policy::default();
    {
        let store = ScoreStore::open(&file).unwrap();
        for _ in 0..policy.threshold {
            store
                .update(|scores| timed_out(2).apply(scores, at(T0), &policy))
                .unwrap();
        }
    }
    let scores = ScoreStore::read_file(&file).unwrap();
    assert_eq!(scores[&seat(2)].timeouts, u64::from(policy.threshold));
    assert_eq!(
        quarantined(&scores, at(T0 + 1), &Policy::default()),
        BTreeSet::from([seat(2)])
    );
    let reopened = ScoreStore::open(&file).unwrap().read().unwrap();
    assert_eq!(reopened, scores);
}

#[test]
fn no_file_reads_as_no_scores_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    assert!(ScoreStore::read_file(&file).unwrap().is_empty());
    assert!(!file.exists());
}

fn assert_corrupt(result: Result<Scores, ScoreError>, file: &Path) {
    let error = result.unwrap_err();
    assert_eq!(error.code(), "score_store_corrupt", "{error}");
    assert_eq!(error.recovery(), Recovery::Terminal);
    let text = error.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains(".damaged`"), "{text}");
}

#[test]
fn a_file_that_is_not_a_score_file_is_corrupt_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(&file, &garbage).unwrap();
    assert_corrupt(ScoreStore::read_file(&file), &file);
    assert_corrupt(ScoreStore::open(&file).map(|_| Scores::new()), &file);
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "never reset");
}

#[test]
fn a_damaged_page_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    ScoreStore::open(&file)
        .unwrap()
        .update(|scores| timed_out(1).apply(scores, at(T0), &Policy::default()))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    // Flip every byte past the header: whatever page the record sits on
    // fails its checksum.
    for byte in bytes.iter_mut().skip(4096) {
        *byte ^= 0xff;
    }
    std::fs::write(&file, &bytes).unwrap();
    assert_corrupt(ScoreStore::read_file(&file), &file);
}

#[test]
fn a_record_that_does_not_decode_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    {
        let store = ScoreStore::open(&file).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(SCORES)
            .unwrap()
            .insert(3, [9u8; 5].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    assert_corrupt(ScoreStore::read_file(&file), &file);
    let error = ScoreStore::open(&file).unwrap().update(|_| ()).unwrap_err();
    assert_eq!(error.code(), "score_store_corrupt");
}

#[test]
fn two_coordinators_updating_at_once_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    // Neither run's faults reach the threshold on their own.
    let mut policy = Policy::default();
    policy.threshold = 1000;
    let runs = 25;
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let file = file.clone();
            std::thread::spawn(move || {
                let store = ScoreStore::open(&file).unwrap();
                for _ in 0..runs {
                    store
                        .update(|scores| timed_out(1).apply(scores, at(T0), &policy))
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let scores = ScoreStore::read_file(&file).unwrap();
    assert_eq!(scores[&seat(1)].timeouts, 2 * runs);
}

#[test]
fn a_run_counts_each_kind_of_fault_once_and_a_clean_answer_as_good() {
    let policy = Policy::default();
    let mut observed = Observed::default();
    observed.asked.extend([seat(1), seat(2), seat(3), seat(4)]);
    observed.signed.extend([seat(1), seat(2)]);
    observed.fault(seat(2), Fault::Timeout);
    observed.fault(seat(2), Fault::Timeout);
    observed.fault(seat(3), Fault::InvalidShare);
    let mut scores = Scores::new();
    scores.insert(seat(1), {
        let mut score = Score::default();
        score.record_fault(at(T0), Fault::Timeout, &policy);
        score
    });
    let newly = observed.apply(&mut scores, at(T0), &policy);
    assert_eq!(newly, vec![seat(3)]);
    assert_eq!(scores[&seat(1)].good_streak, 1, "a good run counts");
    assert_eq!(scores[&seat(2)].timeouts, 1);
    assert_eq!(
        scores[&seat(4)],
        Score::default(),
        "still on its way: no change"
    );
    assert!(!scores.contains_key(&seat(5)));
}

#[test]
fn release_ends_a_quarantine_and_refuses_an_unknown_member() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    let mut observed = Observed::default();
    observed.asked.insert(seat(2));
    observed.fault(seat(2), Fault::InvalidShare);
    ScoreStore::open(&file)
        .unwrap()
        .update(|scores| observed.apply(scores, at(T0), &Policy::default()))
        .unwrap();
    let roster = [seat(1), seat(2), seat(3)];
    let score = release(&file, &roster, 2, at(T0 + 5), &Policy::default()).unwrap();
    assert!(!score.is_quarantined(at(T0 + 5), &Policy::default()));
    let scores = ScoreStore::read_file(&file).unwrap();
    assert!(quarantined(&scores, at(T0 + 5), &Policy::default()).is_empty());
    let error = release(&file, &roster, 9, at(T0), &Policy::default()).unwrap_err();
    assert_eq!(error.code(), "unknown_seat");
    assert_eq!(error.recovery(), Recovery::Terminal);
    assert!(error.to_string().contains("1, 2, 3"), "{error}");
}

/// Only a file that is damaged gets the "damaged, move it aside" advice:
/// an earlier write that failed (a full disk), a lock or a busy writer
/// says nothing about the file, and moving it aside would throw away
/// every score for nothing.
#[test]
fn only_damage_is_reported_as_damage() {
    let file = Path::new("scores.redb");
    for (error, code) in [
        (redb::Error::PreviousIo, "score_store_io"),
        (redb::Error::Unsupported, "score_store_io"),
        (redb::Error::WouldBlock, "score_store_busy"),
        (redb::Error::TransactionInProgress, "score_store_busy"),
        (
            redb::Error::Corrupted("a page checksum".to_owned()),
            "score_store_corrupt",
        ),
        (redb::Error::UpgradeRequired(1), "score_store_corrupt"),
    ] {
        let shown = format!("{error:?}");
        let error = ScoreError::from_redb(file, error);
        assert_eq!(error.code(), code, "{shown}");
        assert_eq!(
            error.to_string().contains("move it aside"),
            code == "score_store_corrupt",
            "{error}"
        );
    }
}

/// A process that holds the file's write lock and does not finish (a
/// stopped `thresig sign`, a tool) makes a run wait only briefly: opening,
/// reading and updating give up with `score_store_busy` (retryable), so a
/// coordinator never hangs on its scores, and the update after the lock
/// is released goes through.
#[test]
fn a_writer_that_does_not_finish_is_waited_for_only_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    let open_before = ScoreStore::open(&file).unwrap();
    let holder = ScoreStore::open(&file).unwrap();
    let held = holder.db.begin_write().unwrap();
    for busy in [
        ScoreStore::open(&file).map(|_| ()),
        ScoreStore::read_file(&file).map(|_| ()),
        open_before.update(|_| ()),
    ] {
        let error = busy.unwrap_err();
        assert_eq!(error.code(), "score_store_busy", "{error}");
        assert_eq!(error.recovery(), Recovery::Retryable);
    }
    drop(held);
    open_before
        .update(|scores| timed_out(2).apply(scores, at(T0), &Policy::default()))
        .unwrap();
    assert_eq!(ScoreStore::read_file(&file).unwrap()[&seat(2)].timeouts, 1);
}

/// An empty file (a truncation, a failed copy) is not a new score file:
/// taking it for one would reset every member's score without a word.
#[test]
fn an_empty_file_is_damage_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    std::fs::write(&file, b"").unwrap();
    for error in [
        ScoreStore::open(&file).map(|_| ()).unwrap_err(),
        ScoreStore::read_file(&file).map(|_| ()).unwrap_err(),
    ] {
        assert_eq!(error.code(), "score_store_corrupt", "{error}");
        assert!(error.to_string().contains("move it aside"), "{error}");
    }
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "left as it is");
}

/// docs/storage-format.md gives the record's length as it is written.
#[test]
fn the_documented_record_length_is_the_written_one() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/storage-format.md"),
    )
    .unwrap();
    let length = Score::default().to_bytes().len();
    let documented = format!("value {length} bytes");
    assert!(
        doc.contains(&documented),
        "storage-format.md lacks {documented:?}"
    );
}

fn signed(member: u16) -> Observed {
    let mut observed = Observed::default();
    observed.asked.insert(seat(member));
    observed.signed.insert(seat(member));
    observed
}

/// A run that changes no score commits nothing: the file is byte for
/// byte what it was (a commit would write a new header and sync it).
#[test]
fn a_run_that_changes_no_score_leaves_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    let policy = Policy::default();
    let store = ScoreStore::open(&file).unwrap();
    for _ in 0..policy.forgive_after {
        store
            .update(|scores| signed(1).apply(scores, at(T0), &policy))
            .unwrap();
    }
    let settled = std::fs::read(&file).unwrap();
    store
        .update(|scores| signed(1).apply(scores, at(T0), &policy))
        .unwrap();
    // Compared without printing: the file is about 100 KB.
    assert!(std::fs::read(&file).unwrap() == settled, "the file changed");
    store
        .update(|scores| timed_out(1).apply(scores, at(T0), &policy))
        .unwrap();
    assert!(
        std::fs::read(&file).unwrap() != settled,
        "a fault wrote nothing"
    );
    assert_eq!(store.read().unwrap()[&seat(1)].points, 1);
}

/// A handle whose run changed nothing, and so committed nothing, still
/// reads inside its next write transaction what another handle committed
/// meanwhile, and the file stays whole through many such turns.
#[test]
fn a_skipped_commit_hides_no_other_handles_update() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SCORES_FILE);
    let policy = Policy::default();
    let (a, b) = (
        ScoreStore::open(&file).unwrap(),
        ScoreStore::open(&file).unwrap(),
    );
    for _ in 0..policy.forgive_after {
        a.update(|scores| signed(1).apply(scores, at(T0), &policy))
            .unwrap();
    }
    a.update(|scores| signed(1).apply(scores, at(T0), &policy))
        .unwrap();
    b.update(|scores| timed_out(1).apply(scores, at(T0), &policy))
        .unwrap();
    let seen = a.update(|scores| scores[&seat(1)].points).unwrap();
    assert_eq!(seen, 1, "the other handle's fault");
    for turn in 0..20 {
        let (idle, busy) = if turn % 2 == 0 { (&a, &b) } else { (&b, &a) };
        idle.update(|_| ()).unwrap();
        busy.update(|scores| timed_out(2).apply(scores, at(T0), &policy))
            .unwrap();
    }
    drop((a, b));
    assert_eq!(ScoreStore::read_file(&file).unwrap()[&seat(2)].timeouts, 20);
    let mut db = redb::Database::builder().open(&file).unwrap();
    assert!(db.check_integrity().unwrap());
}
