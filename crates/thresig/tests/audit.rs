//! `thresig audit` as an operator and an auditor run it: on a stopped
//! signer the commands open the store themselves (and log that open); an
//! export verifies with only the roster, a forged line does not, and a
//! byte flipped on disk is named at its entry by `audit verify`.

mod common;

use common::{ProcessCluster, WALLET, dkg, json, seat, self_payment, sign, thresig};
use redb::ReadableTable as _;
use serde_json::Value;
use thresig_cluster::config::Config;

fn export(config: &str) -> String {
    let out = thresig(&["audit", "export", "--config", config, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The kind of each entry of an export, in order.
fn kinds(lines: &str) -> Vec<String> {
    lines
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["entry"]["kind"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// `verify-export` of seat 1's log (every test here exports seat 1).
fn verify_export(roster: &str, export: &std::path::Path, code: i32) -> Value {
    let export = export.to_str().unwrap();
    json(
        &[
            "audit",
            "verify-export",
            "--roster",
            roster,
            "--member",
            "1",
            export,
        ],
        code,
    )
}

#[test]
fn an_export_verifies_offline_and_a_flipped_byte_is_named_at_its_entry() {
    let cluster = ProcessCluster::provision(3, 2, &[], 71);
    let path = cluster.config_path(seat(1));
    let config = path.to_str().unwrap();
    // Each offline command opens the signer, and each open is an entry.
    for _ in 0..3 {
        let report = json(&["audit", "verify", "--config", config], 0);
        assert_eq!(report["via"], "store");
    }
    // Verify checks the log before it logs its own open; the first open
    // also stored the wallet's policy (`policy_settled`).
    let report = json(&["audit", "verify", "--config", config], 0);
    assert_eq!(report["entries"], 4);

    let dir = tempfile::tempdir().unwrap();
    let lines = export(config);
    let exported: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The stored policy, five opens (the export's own too) and its closing
    // checkpoint.
    assert_eq!(exported.len(), 7);
    assert_eq!(exported[6]["entry"]["kind"], "checkpoint");
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &lines).unwrap();
    let checked = verify_export(config, &file, 0);
    assert_eq!(
        (checked["first"].clone(), checked["last"].clone()),
        (1.into(), 7.into())
    );
    assert_eq!(checked["signed_at_ms"], exported[6]["at_ms"]);
    assert_eq!(checked["identity"], exported[6]["entry"]["identity"]);
    // The same export as seat 2's log: not signed by seat 2's key.
    let export = file.to_str().unwrap();
    let as_other = json(
        &[
            "audit",
            "verify-export",
            "--roster",
            config,
            "--member",
            "2",
            export,
        ],
        1,
    );
    let message = as_other["error"]["message"].as_str().unwrap();
    assert!(message.contains("entry 7:"), "{message}");

    // One forged field in entry 2: refused, named at that entry.
    let forged: String = lines
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i == 1 {
                l.replace("\"wallets\":1", "\"wallets\":2")
            } else {
                l.to_owned()
            };
            l + "\n"
        })
        .collect();
    assert_ne!(forged, lines);
    std::fs::write(&file, &forged).unwrap();
    let refused = verify_export(config, &file, 1);
    assert_eq!(refused["error"]["code"], "audit_export_invalid");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("entry 2:"), "{message}");

    // A byte of entry 2 flipped on disk: `audit verify` names entry 2.
    edit_audit(&path, |t| {
        let mut value = row(t, 2);
        let last = value.len() - 1;
        value[last] ^= 1;
        t.insert(2u64.to_be_bytes().as_slice(), value.as_slice())
            .unwrap();
    });
    assert_broken_at(config, 2);
}

#[test]
fn prune_keeps_the_log_verifiable_and_is_itself_logged() {
    let (_cluster, path) = three_opens(73);
    let config = path.to_str().unwrap();
    let prune = |date: &str, code| {
        json(
            &["audit", "prune", "--config", config, "--before", date],
            code,
        )
    };
    // A date ahead (a typo) would empty the log: refused, nothing removed.
    let refused = prune("2999-01-01", 1);
    assert_eq!(
        refused["error"]["code"], "audit_prune_too_recent",
        "{refused}"
    );
    // Every entry here was written today: a past date removes none, and
    // the prune is logged with its checkpoint all the same.
    let pruned = prune("2000-01-01", 0);
    assert_eq!(pruned["removed"], 0, "{pruned}");
    let report = json(&["audit", "verify", "--config", config], 0);
    assert_eq!(report["first"], 1, "{report}");
    let lines = export(config);
    let kinds = kinds(&lines);
    // The first open's stored policy, three verifies' opens, the refused
    // prune's open, the prune's open, entry and checkpoint (in its unit),
    // a verify's and the export's opens and its closing checkpoint.
    let mut expected = vec!["policy_settled"];
    expected.extend(["open"; 5]);
    expected.extend(["prune", "checkpoint", "open", "open", "checkpoint"]);
    assert_eq!(kinds, expected, "{lines}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &lines).unwrap();
    verify_export(config, &file, 0);
}

#[test]
fn a_running_signer_logs_its_dkg_and_signatures_and_answers_on_its_admin_socket() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[], 72);
    cluster.start_all(&runtime);
    let path = cluster.config_path(seat(1));
    let config = path.to_str().unwrap();
    let made = dkg(&path, WALLET);
    let dir = tempfile::tempdir().unwrap();
    let psbt = self_payment(dir.path(), &made, 7);
    let out = sign(config, WALLET, &psbt);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report = json(&["audit", "verify", "--config", config], 0);
    assert_eq!(report["via"], "daemon", "{report}");
    let lines = export(config);
    let kinds = kinds(&lines);
    assert_eq!(
        kinds.get(..2),
        Some(&["policy_settled".to_owned(), "open".to_owned()][..]),
        "the first start stores the wallet's policy, then opens"
    );
    assert!(kinds.iter().any(|k| k == "dkg_activated"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("checkpoint"));
    // At least t members released shares for the signature, each with its
    // entry naming the transaction and the policy's verdict.
    let released: Vec<Value> = cluster
        .seats()
        .into_iter()
        .flat_map(|s| {
            let other = cluster.config_path(s);
            export(other.to_str().unwrap())
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()["entry"].clone())
                .filter(|e| e["kind"] == "share_released")
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(released.len() >= 2, "{released:?}");
    for entry in &released {
        assert_eq!(entry["verdict"], "approved");
        assert_eq!(entry["txid"], released[0]["txid"]);
        assert_eq!(entry["wallet"], WALLET);
    }
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &lines).unwrap();
    verify_export(config, &file, 0);
}

/// Seat 1's configuration in a new cluster, after three offline
/// `audit verify` runs (three opens logged).
fn three_opens(seed: u64) -> (ProcessCluster, std::path::PathBuf) {
    let cluster = ProcessCluster::provision(3, 2, &[], seed);
    let path = cluster.config_path(seat(1));
    for _ in 0..3 {
        json(&["audit", "verify", "--config", path.to_str().unwrap()], 0);
    }
    (cluster, path)
}

/// Runs `f` on the `audit` table of the stopped signer of `path`, on disk.
fn edit_audit(path: &std::path::Path, f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>)) {
    let data = Config::load(path).unwrap().data_dir;
    let db = redb::Database::open(data.join("state.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("audit");
        f(&mut txn.open_table(table).unwrap());
    }
    txn.commit().unwrap();
}

/// The stored bytes of entry `seq`.
fn row(t: &redb::Table<&[u8], &[u8]>, seq: u64) -> Vec<u8> {
    t.get(seq.to_be_bytes().as_slice())
        .unwrap()
        .unwrap()
        .value()
        .to_vec()
}

/// `audit verify` refuses the log, naming `entry` as the first broken.
fn assert_broken_at(config: &str, entry: u64) {
    let broken = json(&["audit", "verify", "--config", config], 1);
    assert_eq!(broken["error"]["code"], "audit_broken");
    let message = broken["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("entry {entry}:")), "{message}");
}

#[test]
fn the_last_two_entries_swapped_are_named_at_the_first_of_them() {
    let (_cluster, path) = three_opens(75);
    edit_audit(&path, |t| {
        let (two, three) = (row(t, 2), row(t, 3));
        t.insert(2u64.to_be_bytes().as_slice(), three.as_slice())
            .unwrap();
        t.insert(3u64.to_be_bytes().as_slice(), two.as_slice())
            .unwrap();
    });
    assert_broken_at(path.to_str().unwrap(), 2);
}

#[test]
fn a_start_that_fails_its_checks_logs_no_open() {
    let cluster = ProcessCluster::provision(3, 2, &[], 76);
    let path = cluster.config_path(seat(1));
    let config = path.to_str().unwrap();
    json(&["audit", "verify", "--config", config], 0);
    // The same member without its [daemon] section: `serve` refuses.
    let original = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = original.split_once("[daemon]").unwrap();
    let (_, roster) = rest.split_once("[[members]]").unwrap();
    // Beside the original, where its relative paths lead.
    let no_daemon = path.with_file_name("no-daemon.toml");
    std::fs::write(&no_daemon, format!("{head}[[members]]{roster}")).unwrap();
    let out = thresig(&["serve", "--config", no_daemon.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let opens = export(config)
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["entry"]["kind"] == "open")
        .count();
    assert_eq!(
        opens, 2,
        "the verify's open and the export's, not the failed start's"
    );
}
