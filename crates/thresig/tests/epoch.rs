//! The wallet epoch over real processes: members of a 2-of-3 cluster rotate
//! their DEK and KEK at different times (through the running signer's admin
//! socket), restart, and make a second wallet afterwards; both wallets then
//! sign with each member coordinating. Round 2 carries the wallet epoch (0
//! after the DKG at every member), never a member's store epoch, which its
//! own rotations move.

mod common;

use std::path::{Path, PathBuf};

use common::{ProcessCluster, WALLET, dkg, json, seat, self_payment, wait_ready};
use serde_json::Value;

/// The wallet made after the rotations.
const SECOND: &str = "w2";

const MEMBERS: u16 = 3;

fn keys(command: &str, config: &Path) -> Value {
    json(&["keys", command, "--config", config.to_str().unwrap()], 0)
}

/// Rotates the member's DEK inside its running signer.
fn rotate_dek(config: &Path) {
    let rotated = keys("rotate-dek", config);
    assert_eq!(rotated["via"], "daemon", "{rotated}");
}

/// Replaces the member's KEK file with a new key (a rotation for the `file`
/// provider, whose key id is the key's hash) and has the running signer
/// rewrap every DEK under it, so the old key is needed no more.
fn rotate_kek(config: &Path, byte: u8) {
    let kek = config.parent().unwrap().join("kek");
    std::fs::write(&kek, hex::encode([byte; 32])).unwrap();
    let rotated = keys("rotate-kek", config);
    assert_eq!(rotated["via"], "daemon", "{rotated}");
    assert_eq!(
        rotated["keks_needed"].as_array().unwrap().len(),
        1,
        "{rotated}"
    );
}

/// Appends a copy of wallet `w`'s table (with its policy), named `w2`, to
/// the member's configuration.
fn declare_second_wallet(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let table = &text[text.find("[[wallets]]").unwrap()..];
    let second = table.replacen(
        &format!("id = \"{WALLET}\""),
        &format!("id = \"{SECOND}\""),
        1,
    );
    assert_ne!(second, table, "no wallet id in {table}");
    std::fs::write(config, format!("{text}\n{second}")).unwrap();
}

/// Stops and restarts the member at `number`, waiting until it serves.
fn restart(cluster: &mut ProcessCluster, runtime: &tokio::runtime::Runtime, number: u16) {
    assert!(cluster.local.stop(seat(number)).unwrap());
    cluster.local.start(seat(number)).unwrap();
    let peers = cluster.peers(seat(number));
    runtime.block_on(wait_ready(&peers, seat(number)));
}

#[test]
fn wallets_sign_from_every_member_after_rotations_restarts_and_a_new_wallet() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(MEMBERS, 2, &[], 31);
    cluster.start_all(&runtime);
    let config = |number: u16| cluster.config_path(seat(number));
    let configs: Vec<PathBuf> = (1..=MEMBERS).map(config).collect();
    let at = |number: u16| configs[usize::from(number) - 1].as_path();

    // Before the first DKG: member 1 rotates its DEK, member 2 its KEK.
    rotate_dek(at(1));
    rotate_kek(at(2), 0x21);
    let first = dkg(at(2), WALLET);
    // After it: member 3 rotates both, member 1 its KEK.
    rotate_dek(at(3));
    rotate_kek(at(3), 0x31);
    rotate_kek(at(1), 0x11);

    // Every member restarts with a second wallet declared.
    for number in 1..=MEMBERS {
        assert!(cluster.local.stop(seat(number)).unwrap());
        declare_second_wallet(at(number));
    }
    cluster.start_all(&runtime);
    rotate_dek(at(2));
    let second = dkg(at(3), SECOND);
    restart(&mut cluster, &runtime, 1);

    let dir = tempfile::tempdir().unwrap();
    for (tag, wallet, made) in [(0x10, WALLET, &first), (0x20, SECOND, &second)] {
        for number in 1..=MEMBERS {
            let byte = tag + u8::try_from(number).unwrap();
            let psbt = self_payment(dir.path(), made, byte);
            let signed = json(
                &[
                    "sign",
                    "--config",
                    at(number).to_str().unwrap(),
                    "--wallet",
                    wallet,
                    "--psbt",
                    psbt.to_str().unwrap(),
                ],
                0,
            );
            assert!(
                signed["txid"].is_string(),
                "{wallet} from {number}: {signed}"
            );
            assert_eq!(signed["culprits"], serde_json::json!([]), "{signed}");
        }
    }
}
