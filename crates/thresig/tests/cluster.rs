//! The member commands end to end over real processes: `cluster init`,
//! `serve`, `dkg`, `psbt build`, `psbt inspect --config`, `sign`, `status`;
//! and a malicious coordinator over the network.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use bitcoin::Transaction;
use bitcoin::consensus::encode::deserialize_hex;
use common::{ProcessCluster, WALLET, address, seat, thresig};
use thresig_consensus::verify_with_core;
use thresig_crypto::{Commitment, SigningPackage};
use thresig_daemon::Error as DaemonError;
use thresig_engine::{HexBytes, Round1Request, Round2Request, SigningTarget, WalletId};

fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn cluster_init_makes_members_with_owner_only_secrets_and_one_roster() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("c");
    let init = || {
        thresig(&[
            "cluster",
            "init",
            "--members",
            "3",
            "--threshold",
            "2",
            "--dir",
            root.to_str().unwrap(),
            "--base-port",
            "17400",
            "--json",
        ])
    };
    let out = init();
    let json = ok_json(&out);
    assert_eq!(json["configs"].as_array().unwrap().len(), 3);
    for m in 1..=3 {
        let member = root.join(format!("member-{m}"));
        for secret in ["kek", "tls/signer.key", "signer.toml"] {
            assert_eq!(mode(&member.join(secret)), 0o600, "{secret}");
        }
        assert_eq!(mode(&member), 0o700);
        let text = std::fs::read_to_string(member.join("signer.toml")).unwrap();
        assert!(text.contains(&format!("member = {m}")), "{text}");
        assert_eq!(text.matches("[[members]]").count(), 3);
    }
    assert_eq!(mode(&root.join("ca/ca.key")), 0o600);
    // The roster is the same in every member's file.
    let roster = |m: u16| {
        let text = std::fs::read_to_string(root.join(format!("member-{m}/signer.toml"))).unwrap();
        text[text.find("[[members]]").unwrap()..].to_owned()
    };
    assert_eq!(roster(1), roster(2));
    assert_eq!(roster(2), roster(3));
    // A member whose certificate's key is not the one its roster entry
    // pins refuses to start, instead of serving where every peer refuses it.
    let config = root.join("member-1/signer.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let own_pin = text
        .split("[[members]]")
        .nth(1)
        .and_then(|entry| entry.lines().find(|l| l.starts_with("tls_key_sha256")))
        .unwrap()
        .to_owned();
    std::fs::write(
        &config,
        text.replace(
            &own_pin,
            &format!("tls_key_sha256 = \"{}\"", "00".repeat(32)),
        ),
    )
    .unwrap();
    let serve = thresig(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!serve.status.success());
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("roster pins for seat 1"),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );
    // Nothing is overwritten.
    assert!(!init().status.success());
}

#[test]
fn dkg_inspect_sign_and_status_through_the_cli() {
    let destination = address(5);
    let mut cluster = ProcessCluster::provision(3, 2, std::slice::from_ref(&destination), 3);
    cluster.start_all(&tokio::runtime::Runtime::new().unwrap());
    let config = cluster.config_path(seat(2));
    let config = config.to_str().unwrap();
    let dkg = ok_json(&thresig(&[
        "dkg", "--config", config, "--wallet", WALLET, "--json",
    ]));
    let internal = dkg["internal_key"].as_str().unwrap().to_owned();
    let output_key = dkg["output_key"].as_str().unwrap().to_owned();
    assert!(dkg["address"].as_str().unwrap().starts_with("bcrt1p"));

    let status = ok_json(&thresig(&["status", "--config", config, "--json"]));
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["reachable"], true, "{m}");
        assert_eq!(m["wallets"][0]["state"], "active", "{m}");
    }
    assert_eq!(status["wallets"][WALLET]["output_key"], output_key);

    // A PSBT spending one synthetic output of the wallet.
    let script = format!("5120{output_key}");
    let input = format!("{}:0:60000:{script}", "ab".repeat(32));
    let dir = tempfile::tempdir().unwrap();
    let build = |name: &str, to: &str| {
        let psbt = ok_json(&thresig(&[
            "psbt",
            "build",
            "--internal-key",
            &internal,
            "--network",
            "regtest",
            "--input",
            &input,
            "--output",
            &format!("{to}:59000"),
            "--json",
        ]));
        let file = dir.path().join(name);
        std::fs::write(&file, psbt["psbt"].as_str().unwrap()).unwrap();
        file
    };
    let inspect = |file: &Path| {
        let out = thresig(&[
            "psbt",
            "inspect",
            "--config",
            config,
            "--wallet",
            WALLET,
            "--psbt",
            file.to_str().unwrap(),
        ]);
        String::from_utf8(out.stdout).unwrap()
    };
    let rule = |text: &str, name: &str, verdict: &str| {
        text.lines()
            .any(|l| l.trim_start().starts_with(name) && l.contains(verdict))
    };
    let psbt_file = build("tx.psbt", &destination);
    let psbt_path = psbt_file.to_str().unwrap();
    let text = inspect(&psbt_file);
    assert!(text.contains("fee 1000 sat"), "{text}");
    assert!(text.contains("verdict: APPROVED"), "{text}");
    assert!(rule(&text, "destination_allowlist", "pass"), "{text}");
    // Paying an address the policy does not list is denied by that rule.
    let text = inspect(&build("denied.psbt", &address(6)));
    assert!(text.contains("verdict: DENIED"), "{text}");
    assert!(rule(&text, "destination_allowlist", "DENIED"), "{text}");

    let signed = ok_json(&thresig(&[
        "sign", "--config", config, "--wallet", WALLET, "--psbt", psbt_path, "--json",
    ]));
    assert!(signed["culprits"].as_array().unwrap().is_empty());
    let tx_hex = std::fs::read_to_string(signed["tx"].as_str().unwrap()).unwrap();
    let tx: Transaction = deserialize_hex(tx_hex.trim()).unwrap();
    assert_eq!(
        tx.compute_txid().to_string(),
        signed["txid"].as_str().unwrap()
    );
    let prevout = bitcoin::TxOut {
        value: bitcoin::Amount::from_sat(60_000),
        script_pubkey: bitcoin::ScriptBuf::from_bytes(hex::decode(&script).unwrap()),
    };
    verify_with_core(&tx, &[prevout]).unwrap();
    // The run released every nonce it did not use.
    let status = ok_json(&thresig(&["status", "--config", config, "--json"]));
    for m in status["members"].as_array().unwrap() {
        assert_eq!(m["wallets"][0]["live_nonces"], 0, "{m}");
    }

    // A stopped member shows as unreachable; the others still sign.
    assert!(cluster.local.stop(seat(3)).unwrap());
    let status = ok_json(&thresig(&["status", "--config", config, "--json"]));
    let unreachable: Vec<_> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reachable"] == false)
        .map(|m| m["member"].as_u64().unwrap())
        .collect();
    assert_eq!(unreachable, vec![3]);
}

/// A coordinator that sends a signing package whose message is not the
/// PSBT's sighash, or names a seat outside the roster, is refused by every
/// signer, over the network.
#[test]
fn signers_refuse_a_malicious_coordinators_packages_over_the_network() {
    let mut cluster = ProcessCluster::provision(3, 2, &[], 4);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    cluster.start_all(&runtime);
    let peers = cluster.peers(seat(1));
    let node = cluster.node(seat(1));
    let wallet_id = WalletId::new(WALLET.to_owned()).unwrap();
    let wallet = node.wallet(&wallet_id).unwrap().clone();
    runtime.block_on(async {
        thresig_cluster::run_dkg(
            &peers,
            &wallet,
            &mut rand_core::OsRng,
            &thresig_cluster::Silent,
        )
        .await
        .unwrap();
        let thresig_cluster::OwnWallet { epoch, spend, .. } =
            thresig_cluster::own_wallet(&peers, &node, &wallet_id)
                .await
                .unwrap();
        let input = thresig_tx::SpendInput {
            outpoint: bitcoin::OutPoint::new(bitcoin::hashes::Hash::from_byte_array([1; 32]), 0),
            value: bitcoin::Amount::from_sat(10_000),
            script_pubkey: spend.script_pubkey().clone(),
        };
        // The wallet paying itself: allowed without any destination.
        let payment = thresig_tx::Payment {
            destination: thresig_tx::Destination::Script(spend.script_pubkey().clone()),
            value: bitcoin::Amount::from_sat(9_000),
        };
        let psbt = thresig_tx::build_psbt(
            &spend,
            &[input],
            &[payment],
            bitcoin::absolute::LockTime::ZERO,
        )
        .unwrap();
        let mut commitments = BTreeMap::new();
        for m in 1..=2 {
            let client = peers.client(seat(m)).await.unwrap();
            let r1 = client
                .round1(Round1Request::new(wallet_id.clone(), 1))
                .await
                .unwrap();
            commitments.insert(
                seat(m),
                Commitment::from_bytes(&r1.commitments[0].0).unwrap(),
            );
        }
        let request = |message: [u8; 32], signers: Vec<u16>| {
            let package = SigningPackage::new(&commitments, &message).unwrap();
            Round2Request::new(
                wallet_id.clone(),
                epoch,
                signers.into_iter().map(seat).collect(),
                SigningTarget::psbt(psbt.serialize()),
                vec![HexBytes(package.to_bytes())],
            )
        };
        for m in 1..=2 {
            let client = peers.client(seat(m)).await.unwrap();
            // A message that is not the PSBT's sighash.
            let err = client
                .round2(request([7; 32], vec![1, 2]))
                .await
                .unwrap_err();
            let DaemonError::Refused(refusal) = err else {
                panic!("expected a refusal, got {err}")
            };
            assert_eq!(refusal.code.as_str(), "invalid_request", "{refusal}");
            // A signer set naming a seat outside the roster.
            let sighash = psbt.wallet_sighashes().unwrap()[0].sighash;
            let err = client
                .round2(request(
                    bitcoin::hashes::Hash::to_byte_array(sighash),
                    vec![1, 9],
                ))
                .await
                .unwrap_err();
            assert!(matches!(err, DaemonError::Refused(_)), "{err}");
        }
    });
}

/// A member whose probed port another process took exits at once; the
/// readiness wait reports that exit, with the cause from its log, instead
/// of running out its timeout.
#[test]
fn a_member_whose_port_is_taken_ends_the_readiness_wait_at_once() {
    use rand_core::SeedableRng as _;
    use thresig_cluster::local::{LocalCluster, LocalError, free_loopback_ports};

    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let mut endpoints = free_loopback_ports(2).unwrap();
    endpoints[1].0 = taken.local_addr().unwrap();
    let spec = thresig_cluster::provision::ClusterSpec::new(
        thresig_daemon::ClusterName::new("test".to_owned()).unwrap(),
        thresig_tx::Network::Regtest,
        endpoints,
        WalletId::new(WALLET.to_owned()).unwrap(),
        2,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut local = LocalCluster::create(
        &dir.path().join("c"),
        &spec,
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_thresig")),
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(3),
    )
    .unwrap();
    local.start(seat(2)).unwrap();
    let peers = thresig_cluster::Peers::new(&local.node(seat(1)).unwrap()).unwrap();
    // Far longer than the member takes to exit, so that a wait that does
    // not notice the exit ends with `NotReady` instead.
    let timeout = std::time::Duration::from_secs(60);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime
        .block_on(local.wait_ready(&peers, seat(2), timeout))
        .unwrap_err();
    assert!(
        matches!(&error, LocalError::Stopped { seat: s, .. } if *s == seat(2)),
        "{error}"
    );
    assert!(error.address_in_use(), "{error}");
    let message = error.to_string();
    assert!(message.contains("exit status"), "{message}");
    assert!(message.contains("signer.log"), "{message}");
}
