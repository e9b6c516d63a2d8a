//! `thresig psbt build` → threshold signing in this process (the crypto
//! crate's FROST) → `thresig psbt finalize`, checked by Bitcoin Core's
//! interpreter; and `thresig psbt inspect`'s policy verdicts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use bitcoin::Transaction;
use bitcoin::hashes::Hash;
use bitcoin::key::XOnlyPublicKey;
use bitcoin::taproot::TapNodeHash;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use thresig_consensus::verify_with_core;
use thresig_crypto::{
    GroupParams, KeyShare, MerkleRoot, ScriptTree, Seat, SigningPackage, WalletKey, aggregate,
    commit, dkg_in_process, import_key, sign,
};
use thresig_tx::{Network, TaprootWallet, WalletPsbt};

mod common;

fn thresig(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thresig"))
        .arg("psbt")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The group's wallet as the tx crate sees it, and its flags for the CLI.
fn wallet_of(key: &WalletKey) -> (TaprootWallet, Vec<String>) {
    let internal = key.internal_key().to_bytes();
    let mut flags = vec![
        "--internal-key".to_owned(),
        hex::encode(internal),
        "--network".to_owned(),
        "regtest".to_owned(),
    ];
    let root = match key.script_tree() {
        ScriptTree::Root(r) => {
            flags.extend(["--merkle-root".to_owned(), hex::encode(r.0)]);
            Some(TapNodeHash::from_byte_array(r.0))
        }
        _ => None,
    };
    let internal = XOnlyPublicKey::from_slice(&internal).unwrap();
    let output = XOnlyPublicKey::from_slice(&key.output_key().to_bytes()).unwrap();
    let w = TaprootWallet::from_keys(Network::Regtest, internal, root, output).unwrap();
    (w, flags)
}

/// FROST signing of `message` by seats 1 and 3, aggregated.
fn threshold_sign(
    key: &WalletKey,
    shares: &[KeyShare],
    message: [u8; 32],
    rng: &mut ChaCha20Rng,
) -> [u8; 64] {
    let signers: Vec<&KeyShare> = [0, 2].iter().map(|i| &shares[*i]).collect();
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for share in &signers {
        let (nonce, commitment) = commit(share, rng);
        commitments.insert(share.seat(), commitment);
        nonces.push(nonce);
    }
    let package = SigningPackage::new(&commitments, &message).unwrap();
    let sig_shares: BTreeMap<Seat, _> = signers
        .iter()
        .zip(nonces)
        .map(|(share, nonce)| (share.seat(), sign(nonce, &package, share, key).unwrap()))
        .collect();
    aggregate(key, &package, &sig_shares)
        .unwrap()
        .to_bytes()
        .unwrap()
}

/// An address outside the wallet, on regtest.
fn external() -> String {
    let sk = bitcoin::secp256k1::SecretKey::from_slice(&[0x42; 32]).unwrap();
    let (x, _) = sk.x_only_public_key(bitcoin::secp256k1::SECP256K1);
    TaprootWallet::new(Network::Regtest, x, None)
        .address()
        .to_string()
}

/// Builds a 3-input PSBT with the CLI (two inputs as arguments, one from a
/// JSON file) and writes its base64 to `dir/tx.psbt`.
fn build(dir: &Path, w: &TaprootWallet, flags: &[String]) -> WalletPsbt {
    let script = hex::encode(w.script_pubkey().as_bytes());
    let file = dir.join("inputs.json");
    let listed = serde_json::json!([{ "txid": "33".repeat(32), "vout": 2, "value_sat": 70_000, "script_pubkey": script }]);
    std::fs::write(&file, listed.to_string()).unwrap();
    let in1 = format!("{}:0:100000:{script}", "11".repeat(32));
    let in2 = format!("{}:1:30000:{script}", "22".repeat(32));
    let out1 = format!("{}:150000", external());
    let out2 = format!("{}:49000", w.address());
    let mut args: Vec<&str> = vec![
        "build", "--input", &in1, "--input", &in2, "--output", &out1, "--output", &out2,
    ];
    let path = file.to_str().unwrap();
    args.extend(["--inputs-file", path, "--json"]);
    args.extend(flags.iter().map(String::as_str));
    let json: serde_json::Value = serde_json::from_str(&stdout(&thresig(&args))).unwrap();
    let base64 = json["psbt"].as_str().unwrap();
    std::fs::write(dir.join("tx.psbt"), base64).unwrap();
    let psbt = WalletPsbt::from_base64(base64, w).unwrap();
    assert_eq!(json["txid"].as_str().unwrap(), psbt.txid().to_string());
    psbt
}

#[test]
fn build_sign_finalize_passes_core() {
    let mut rng = ChaCha20Rng::seed_from_u64(50);
    let params = GroupParams::new(2, 3).unwrap();
    let (dkg_shares, dkg_key) = dkg_in_process(params, ScriptTree::KeyPathOnly, &mut rng).unwrap();
    let imported = import_key(
        &[5; 32],
        params,
        ScriptTree::Root(MerkleRoot([6; 32])),
        &mut rng,
    )
    .unwrap();
    let groups = [
        (dkg_key, dkg_shares.into_values().collect::<Vec<_>>()),
        imported,
    ];
    for (key, shares) in groups {
        let dir = tempfile::tempdir().unwrap();
        let (w, flags) = wallet_of(&key);
        let psbt = build(dir.path(), &w, &flags);
        assert_eq!(psbt.wallet_inputs().len(), 3);
        assert_eq!(psbt.fee().to_sat(), 1_000);
        let sigs: Vec<String> = psbt
            .wallet_sighashes()
            .unwrap()
            .iter()
            .map(|s| {
                hex::encode(threshold_sign(
                    &key,
                    &shares,
                    s.sighash.to_byte_array(),
                    &mut rng,
                ))
            })
            .collect();
        let psbt_file = dir.path().join("tx.psbt");
        let mut args = vec!["finalize", "--psbt", psbt_file.to_str().unwrap(), "--json"];
        args.extend(flags.iter().map(String::as_str));
        let mut good = args.clone();
        for s in &sigs {
            good.extend(["--signature", s]);
        }
        let json: serde_json::Value = serde_json::from_str(&stdout(&thresig(&good))).unwrap();
        let bytes = hex::decode(json["tx"].as_str().unwrap()).unwrap();
        let tx: Transaction = bitcoin::consensus::deserialize(&bytes).unwrap();
        assert_eq!(
            json["txid"].as_str().unwrap(),
            tx.compute_txid().to_string()
        );
        let prevouts = psbt.prevouts().to_vec();
        verify_with_core(&tx, &prevouts).unwrap();
        let mut bad_tx = tx.clone();
        let mut sig = bad_tx.input[1].witness.to_vec().remove(0);
        sig[5] ^= 1;
        bad_tx.input[1].witness = bitcoin::Witness::from_slice(&[sig]);
        assert_eq!(verify_with_core(&bad_tx, &prevouts).unwrap_err().input, 1);

        // finalize itself refuses a signature that does not verify.
        let mut flipped = sigs.clone();
        let first = if flipped[2].starts_with("00") {
            "01"
        } else {
            "00"
        };
        flipped[2].replace_range(0..2, first);
        let mut bad = args.clone();
        for s in &flipped {
            bad.extend(["--signature", s]);
        }
        let out = thresig(&bad);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("input 2"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The stderr of a `thresig` run that must fail with exit code 1.
fn refusal(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// A PSBT or inputs file that is not a regular file is refused before it is
/// read (`/dev/zero` never ends), and one larger than any transaction's
/// file is refused at the limit.
#[test]
fn a_transaction_file_that_is_not_a_regular_file_or_too_large_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let internal = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    let wallet = ["--internal-key", internal, "--network", "regtest"];
    let output = format!("{}:1000", external());
    let signature = "00".repeat(64);
    let build = |file: &str| {
        let mut args = vec!["build", "--inputs-file", file, "--output", &output];
        args.extend(wallet);
        thresig(&args)
    };
    let finalize = |file: &str| {
        let mut args = vec!["finalize", "--psbt", file, "--signature", &signature];
        args.extend(wallet);
        thresig(&args)
    };
    let said = refusal(&build("/dev/zero"));
    assert!(said.contains("/dev/zero: not a regular file"), "{said}");
    let said = refusal(&finalize("/dev/zero"));
    assert!(said.contains("/dev/zero: not a regular file"), "{said}");

    let cluster = common::ProcessCluster::provision(2, 2, &[], 31);
    let config = cluster.config_path(common::seat(1));
    let sign = common::thresig(&[
        "sign",
        "--config",
        config.to_str().unwrap(),
        "--wallet",
        common::WALLET,
        "--psbt",
        "/dev/zero",
    ]);
    let said = refusal(&sign);
    assert!(said.contains("/dev/zero: not a regular file"), "{said}");

    // Sparse: a file just over the 16 MiB limit costs no disk.
    let huge = dir.path().join("huge.psbt");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len((16 << 20) + 1)
        .unwrap();
    let said = refusal(&finalize(huge.to_str().unwrap()));
    assert!(said.contains("larger than 16777216 bytes"), "{said}");
}
