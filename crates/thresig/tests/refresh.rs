//! `thresig refresh` end to end over real signer processes on loopback:
//! the wallet keeps its output key and signs at the next epoch (checked by
//! libbitcoinconsensus), a removal must be in every member's own
//! configuration, and an offline member fails the refresh with nobody
//! switched.

mod common;

use bitcoin::Transaction;
use bitcoin::consensus::encode::deserialize_hex;
use common::{Made, ProcessCluster, WALLET, dkg, json, seat, self_payment, thresig};
use thresig_crypto::Seat;
use thresig_tx::test_util::verify_with_core;

/// A 2-of-3 cluster, started, with its wallet made by a DKG.
fn keyed(seed: u64) -> (ProcessCluster, tokio::runtime::Runtime, Made) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[], seed);
    cluster.start_all(&runtime);
    let made = dkg(&cluster.config_path(seat(1)), WALLET);
    (cluster, runtime, made)
}

/// `thresig refresh` from seat 1's configuration with `extra` arguments.
fn refresh(cluster: &ProcessCluster, extra: &[&str]) -> std::process::Output {
    let config = cluster.config_path(seat(1));
    let mut args = vec![
        "refresh",
        "--config",
        config.to_str().unwrap(),
        "--wallet",
        WALLET,
        "--json",
    ];
    args.extend_from_slice(extra);
    thresig(&args)
}

/// Each member's (state, epoch) of the wallet, as `thresig status` shows it.
fn states(cluster: &ProcessCluster) -> Vec<(String, Option<u64>)> {
    let config = cluster.config_path(seat(1));
    let status = json(&["status", "--config", config.to_str().unwrap()], 0);
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let wallet = &m["wallets"][0];
            (
                wallet["state"].as_str().unwrap_or("unreachable").to_owned(),
                wallet["epoch"].as_u64(),
            )
        })
        .collect()
}

/// Signs a payment of the wallet back to itself through `thresig sign`
/// and checks the transaction with libbitcoinconsensus.
fn signs_and_consensus_accepts(cluster: &ProcessCluster, made: &Made, byte: u8) {
    let dir = tempfile::tempdir().unwrap();
    let psbt = self_payment(dir.path(), made, byte);
    let config = cluster.config_path(seat(1));
    let signed = json(
        &[
            "sign",
            "--config",
            config.to_str().unwrap(),
            "--wallet",
            WALLET,
            "--psbt",
            psbt.to_str().unwrap(),
        ],
        0,
    );
    let tx_hex = std::fs::read_to_string(signed["tx"].as_str().unwrap()).unwrap();
    let tx: Transaction = deserialize_hex(tx_hex.trim()).unwrap();
    let prevout = bitcoin::TxOut {
        value: bitcoin::Amount::from_sat(60_000),
        script_pubkey: bitcoin::ScriptBuf::from_bytes(
            hex::decode(format!("5120{}", made.output_key)).unwrap(),
        ),
    };
    verify_with_core(&tx, &[prevout]).unwrap();
}

/// Adds `remove = [..]` to the wallet of `seat`'s configuration and
/// restarts that member (an operator's approval of the removal).
fn approve_removal(
    cluster: &mut ProcessCluster,
    at: Seat,
    removed: &[u16],
    runtime: &tokio::runtime::Runtime,
) {
    let path = cluster.config_path(at);
    let text = std::fs::read_to_string(&path).unwrap();
    let list: Vec<String> = removed.iter().map(u16::to_string).collect();
    let edited = text.replacen(
        "[[wallets]]\n",
        &format!("[[wallets]]\nremove = [{}]\n", list.join(", ")),
        1,
    );
    assert_ne!(edited, text, "no [[wallets]] table in {}", path.display());
    std::fs::write(&path, edited).unwrap();
    restart(cluster, at, runtime);
}

fn restart(cluster: &mut ProcessCluster, at: Seat, runtime: &tokio::runtime::Runtime) {
    cluster.local.stop(at).unwrap();
    cluster.local.start(at).unwrap();
    let peers = cluster.peers(seat(1));
    runtime.block_on(common::wait_ready(&peers, at));
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_refresh_keeps_the_output_key_and_the_wallet_signs_at_the_next_epoch() {
    let (cluster, _runtime, made) = keyed(71);
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["wallet"], WALLET);
    assert_eq!(report["output_key"], made.output_key.as_str());
    assert_eq!(report["epoch"], 1);
    for (state, epoch) in states(&cluster) {
        assert_eq!((state.as_str(), epoch), ("active", Some(1)));
    }
    signs_and_consensus_accepts(&cluster, &made, 0x21);
    // A second refresh moves on again.
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    signs_and_consensus_accepts(&cluster, &made, 0x22);
}

#[test]
fn an_offline_member_fails_the_refresh_and_nobody_switches() {
    let (mut cluster, _runtime, made) = keyed(72);
    assert!(cluster.local.stop(seat(3)).unwrap());
    let out = refresh(&cluster, &[]);
    assert_ne!(out.status.code(), Some(0));
    let states = states(&cluster);
    for state in &states[..2] {
        assert_eq!(
            (state.0.as_str(), state.1),
            ("active", Some(0)),
            "{states:?}"
        );
    }
    signs_and_consensus_accepts(&cluster, &made, 0x23);
}

#[test]
fn a_removal_must_be_in_every_members_configuration() {
    let (mut cluster, runtime, made) = keyed(73);
    // Not in seat 1's own configuration: refused before anything runs.
    let out = refresh(&cluster, &["--remove", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("`remove`"), "{}", stderr(&out));
    // In seat 1's configuration only: seat 2 refuses the proposal.
    approve_removal(&mut cluster, seat(1), &[3], &runtime);
    let out = refresh(&cluster, &["--remove", "3"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("dkg_mismatch"), "{}", stderr(&out));
    for (state, epoch) in states(&cluster) {
        assert_eq!((state.as_str(), epoch), ("active", Some(0)));
    }
    // Approved on seat 2 as well (seat 3, removed, takes no part): done,
    // and the wallet signs with the remaining members alone.
    approve_removal(&mut cluster, seat(2), &[3], &runtime);
    let out = refresh(&cluster, &["--remove", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["output_key"], made.output_key.as_str());
    assert_eq!(report["epoch"], 1);
    let states = states(&cluster);
    assert_eq!(states[0], ("active".to_owned(), Some(1)));
    assert_eq!(states[1], ("active".to_owned(), Some(1)));
    // The removed member still holds its old share at epoch 0, which no
    // longer signs with the others: the run completes with seats 1 and 2.
    assert_eq!(states[2].1, Some(0), "{states:?}");
    signs_and_consensus_accepts(&cluster, &made, 0x24);
}
