//! Runs the `thresig demo` binary and checks its output independently.

use std::process::Command;

fn demo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_thresig"))
        .arg("demo")
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

fn hex_field<const N: usize>(json: &serde_json::Value, name: &str) -> [u8; N] {
    let text = json[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing"));
    let mut out = [0u8; N];
    assert_eq!(text.len(), 2 * N, "{name} length");
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn json_output_is_one_object_whose_signature_verifies() {
    let out = demo(&["--signers", "4", "--threshold", "3", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one line on stdout: {stdout}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 4);
    let group: [u8; 32] = hex_field(&json, "group_key");
    let output: [u8; 32] = hex_field(&json, "output_key");
    let message: [u8; 32] = hex_field(&json, "message");
    let signature: [u8; 64] = hex_field(&json, "signature");

    let secp = secp256k1::Secp256k1::new();
    let output_key = secp256k1::XOnlyPublicKey::from_slice(&output).unwrap();
    let sig = secp256k1::schnorr::Signature::from_slice(&signature).unwrap();
    secp.verify_schnorr(&sig, &secp256k1::Message::from_digest(message), &output_key)
        .unwrap();
    // The output key is the BIP341 key-path tweak of the group (internal) key.
    let internal = secp256k1::XOnlyPublicKey::from_slice(&group).unwrap();
    let mut tag = sha256(b"TapTweak").to_vec();
    tag.extend_from_within(..);
    tag.extend_from_slice(&group);
    let tweak = secp256k1::Scalar::from_be_bytes(sha256(&tag)).unwrap();
    let (tweaked, _) = internal.add_tweak(&secp, &tweak).unwrap();
    assert_eq!(tweaked.serialize(), output);
    assert!(!out.stderr.is_empty(), "logs go to stderr");
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

#[test]
fn readable_output_by_default() {
    let out = demo(&[]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("3-of-5"), "{stdout}");
    assert!(stdout.contains("output key"));
}

#[test]
fn bad_thresholds_fail_with_a_clear_message() {
    let out = demo(&["--signers", "3", "--threshold", "4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not exceed --signers"));
    let out = demo(&["--threshold", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 2"));
    assert!(out.stdout.is_empty());
}
