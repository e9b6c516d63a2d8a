//! Blame proofs end to end: `thresig demo --malicious 1 --keep DIR` leaves
//! a proof against the malicious member in DIR, `thresig blame verify`
//! accepts it with a member's configuration, and refuses it with a typed
//! error once any one of its bytes that carry evidence is changed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::thresig;

/// Runs the demo with one malicious member, keeping the cluster in `dir`,
/// and returns the proof files its report lists.
fn demo_with_culprit(dir: &Path) -> Vec<PathBuf> {
    let out = Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args([
            "demo",
            "--malicious",
            "1",
            "--inputs",
            "2",
            "--json",
            "--keep",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["culprits"], serde_json::json!([2]), "{report}");
    report["proofs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

fn verify(config: &Path, proof: &Path, json: bool) -> std::process::Output {
    let config = config.to_str().unwrap();
    let proof = proof.to_str().unwrap();
    let mut args = vec!["blame", "verify", "--config", config, proof];
    if json {
        args.push("--json");
    }
    thresig(&args)
}

/// The position of the first character of the (first) string value that
/// follows `key` in `text`, from `after` on.
fn value_at(text: &str, key: &str, after: usize) -> usize {
    let at = after + text[after..].find(key).unwrap_or_else(|| panic!("{key}")) + key.len();
    at + text[at..].find('"').unwrap() + 1
}

/// For each (what, position, code) of `cases`: `text` with the hex digit
/// at that position changed, written into `dir`, fails `blame verify`
/// with `config` as a terminal error with that code.
fn assert_each_alteration_refused(
    dir: &Path,
    config: &Path,
    text: &str,
    cases: &[(&str, usize, &str)],
) {
    for (what, at, code) in cases {
        let mut bytes = text.as_bytes().to_vec();
        bytes[*at] = if bytes[*at] == b'0' { b'1' } else { b'0' };
        let altered = dir.join("altered.proof.json");
        std::fs::write(&altered, &bytes).unwrap();
        let out = verify(config, &altered, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}");
        assert!(stderr.contains(code), "{what}: {stderr}");
        assert!(stderr.contains("terminal"), "{what}: {stderr}");
    }
}

/// Runs `thresig demo --malicious 1 --malicious-dkg [ROUND] --keep
/// CLUSTER`, which must fail saying `names` and print the path of the
/// proof it wrote against member 2; that path.
fn failed_dkg_demo(cluster: &Path, round: Option<&str>, names: &str) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(["demo", "--malicious", "1", "--malicious-dkg"])
        .args(round)
        .arg("--keep")
        .arg(cluster)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let proof = cluster.join("culprit-2.proof.json");
    assert!(
        stderr.contains(&format!("culprit proof: {}", proof.display())),
        "{stderr}"
    );
    assert!(stderr.contains(names), "{stderr}");
    proof
}

/// For each (what, field, where its search starts, code) of `fields`:
/// `text` with the first hex digit of that field's value changed fails as
/// [`assert_each_alteration_refused`] says.
fn assert_each_field_alteration_refused(
    dir: &Path,
    config: &Path,
    text: &str,
    fields: &[(&str, &str, usize, &str)],
) {
    let cases: Vec<_> = fields
        .iter()
        .map(|(what, field, from, code)| {
            (
                *what,
                value_at(text, &format!("\"{field}\":"), *from),
                *code,
            )
        })
        .collect();
    assert_each_alteration_refused(dir, config, text, &cases);
}

/// `value` with `field` set to `extra` in the object at path `at` (keys,
/// or indexes of arrays), written into `dir`, is not read as a proof.
fn assert_extra_field_refused(
    dir: &Path,
    config: &Path,
    value: &serde_json::Value,
    (what, at): (&str, &[&str]),
    (field, extra): (&str, serde_json::Value),
) {
    let mut changed = value.clone();
    let object = at
        .iter()
        .fold(&mut changed, |v, key| match key.parse::<usize>() {
            Ok(i) => &mut v[i],
            Err(_) => &mut v[*key],
        });
    object[field] = extra;
    let altered = dir.join("extra.proof.json");
    std::fs::write(&altered, serde_json::to_vec(&changed).unwrap()).unwrap();
    let out = verify(config, &altered, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert!(stderr.contains("not a blame proof"), "{what}: {stderr}");
}

#[test]
fn a_demo_culprits_proof_verifies_and_any_altered_evidence_byte_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let proofs = demo_with_culprit(&cluster);
    let proof = cluster.join("culprit-2.proof.json");
    assert_eq!(proofs, vec![proof.clone()]);
    // Any member's configuration checks it, the coordinator's or another's.
    for member in ["member-1", "member-4"] {
        let config = cluster.join(member).join("signer.toml");
        let out = verify(&config, &proof, false);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.trim(),
            "proof verified: member 2 (wallet seat 2) signed an invalid share for input 0 of wallet demo"
        );
    }
    let config = cluster.join("member-3").join("signer.toml");
    let out = verify(&config, &proof, true);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["member"], 2);

    let text = std::fs::read_to_string(&proof).unwrap();
    let answer = text.find("\"answer\"").unwrap();
    let cases = [
        (
            "a share",
            value_at(&text, "\"shares\":", answer),
            "blame_bad_signature",
        ),
        (
            "a fresh commitment",
            value_at(&text, "\"commitments\":", answer),
            "blame_bad_signature",
        ),
        (
            "the signature",
            value_at(&text, "\"signature\":", answer),
            "blame_bad_signature",
        ),
        (
            "a signing package",
            value_at(&text, "\"packages\":", 0),
            "blame_bad_signature",
        ),
        (
            "the PSBT",
            value_at(&text, "\"psbt\":", 0),
            "blame_bad_signature",
        ),
        (
            "the wallet key",
            value_at(&text, "\"wallet_key\":", 0) + 40,
            "blame_bad_signature",
        ),
    ];
    assert_each_alteration_refused(dir.path(), &config, &text, &cases);

    // Not a proof at all.
    let config_file = cluster.join("member-1").join("signer.toml");
    let out = verify(&config, &config_file, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a blame proof"), "{stderr}");
}

/// A proof is checked with the roster of a configuration alone: the
/// member's store moved away and no signer running, the proof still
/// verifies, because the accused member's own signature covers the key
/// record it carries.
#[test]
fn a_proof_verifies_with_the_roster_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let proofs = demo_with_culprit(&cluster);
    let member = cluster.join("member-4");
    std::fs::rename(member.join("store"), dir.path().join("moved-store")).unwrap();
    let out = verify(&member.join("signer.toml"), &proofs[0], true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verified"], true, "{json}");
    assert_eq!(json["member"], 2, "{json}");
}

/// A proof as large as a genuine one can be (a round-2 request near the
/// largest `max_request_bytes`, hex-encoded) is read: here the demo's proof
/// padded with whitespace past twice the PSBT file cap (32 MiB).
#[test]
fn a_proof_larger_than_twice_the_psbt_cap_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let proofs = demo_with_culprit(&cluster);
    let mut text = std::fs::read(&proofs[0]).unwrap();
    text.resize(33 << 20, b' ');
    let large = dir.path().join("large.proof.json");
    std::fs::write(&large, &text).unwrap();
    let out = verify(&cluster.join("member-3").join("signer.toml"), &large, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// `thresig demo --malicious 1 --malicious-dkg` runs its DKG (the same
/// relay as `thresig dkg`) with member 2 sealing its round-2 package to
/// member 1 so that it does not open: the run fails naming member 2 and
/// leaves a DKG proof in `--keep`, which `thresig blame verify` accepts
/// with any member's configuration and refuses once any one byte of its
/// evidence is changed.
#[test]
fn a_dkg_culprits_proof_verifies_and_any_altered_evidence_byte_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let proof = failed_dkg_demo(&cluster, None, "accuses member 2");
    for member in ["member-1", "member-3"] {
        let out = verify(&cluster.join(member).join("signer.toml"), &proof, true);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{member}: {stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (
                &json["kind"],
                &json["member"],
                &json["recipient"],
                &json["fault"]
            ),
            (
                &serde_json::json!("dkg_share"),
                &serde_json::json!(2),
                &serde_json::json!(1),
                &serde_json::json!("unopened")
            ),
            "{json}"
        );
    }
    let config = cluster.join("member-3").join("signer.toml");
    let out = verify(&config, &proof, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("proof verified: member 2 (wallet seat 2) sent member 1"),
        "{stdout}"
    );

    let text = std::fs::read_to_string(&proof).unwrap();
    let round2 = text.find("\"round2\"").unwrap();
    let accusation = text.find("\"accusation\"").unwrap();
    let signed = "blame_bad_signature";
    // (what, the field, where its search starts, the code).
    let fields = [
        ("the top-level session", "session", 0, "blame_dkg_parts"),
        ("a round-1 package", "package", 0, signed),
        ("a round-1 session key", "hpke_key", 0, signed),
        ("the sealed package", "sealed", round2, signed),
        ("the echo", "echo", round2, signed),
        ("the revealed key", "hpke_secret", accusation, signed),
        (
            "the accusation's signature",
            "signature",
            accusation,
            signed,
        ),
    ];
    assert_each_field_alteration_refused(dir.path(), &config, &text, &fields);

    // Unknown fields are refused at every level, not only the top: a
    // fresh DKG's kind with a removal set does not read as fresh.
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let edits: [(&str, &[&str]); 6] = [
        ("round2", &["round2"]),
        ("round2's payload", &["round2", "payload"]),
        ("a round-1 message", &["round1", "0"]),
        ("a round-1 payload", &["round1", "0", "payload"]),
        ("the accusation's payload", &["accusation", "payload"]),
        ("the kind", &["dkg"]),
    ];
    let edits = edits
        .iter()
        .map(|(what, at)| (*what, *at, "x", serde_json::json!(1)))
        .chain([(
            "a fresh kind with a removal set",
            &["dkg"][..],
            "removed",
            serde_json::json!([2]),
        )]);
    for (what, at, field, extra) in edits {
        assert_extra_field_refused(dir.path(), &config, &value, (what, at), (field, extra));
    }

    // What is checked is the decoded evidence: hex in upper case verifies
    // the same.
    let mut upper = value.clone();
    upper_hex(&mut upper);
    assert_ne!(upper, value);
    let upper_file = dir.path().join("upper.proof.json");
    std::fs::write(&upper_file, serde_json::to_vec_pretty(&upper).unwrap()).unwrap();
    let out = verify(&config, &upper_file, false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every string of `value` that is hex of at least 16 digits, in upper
/// case.
fn upper_hex(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s)
            if s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            *s = s.to_ascii_uppercase();
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(upper_hex),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(upper_hex),
        _ => {}
    }
}

/// `thresig demo --malicious 1 --malicious-dkg round1` runs its DKG with
/// member 2 sending a round-1 package whose proof of knowledge does not
/// verify, under both its signatures: the relay fails the run naming
/// member 2 before handing anything out and leaves a `dkg_round1` proof
/// in `--keep`, which `thresig blame verify` accepts and refuses once
/// any one byte of its evidence is changed.
#[test]
fn a_dkg_round1_culprits_proof_verifies_and_any_altered_evidence_byte_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let proof = failed_dkg_demo(&cluster, Some("round1"), "member 2 sent a round-1 package");
    let config = cluster.join("member-1").join("signer.toml");
    let out = verify(&config, &proof, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&json["kind"], &json["member"], &json["fault"]),
        (
            &serde_json::json!("dkg_round1"),
            &serde_json::json!(2),
            &serde_json::json!("bad_proof_of_knowledge")
        ),
        "{json}"
    );

    let text = std::fs::read_to_string(&proof).unwrap();
    let round1 = text.find("\"round1\"").unwrap();
    let signed = "blame_bad_signature";
    let fields = [
        ("the top-level session", "session", 0, "blame_dkg_parts"),
        (
            "the message's session",
            "session",
            round1,
            "blame_dkg_parts",
        ),
        ("the package", "package", round1, signed),
        ("the session key", "hpke_key", round1, signed),
        ("the kind-bound signature", "kind_signature", round1, signed),
    ];
    assert_each_field_alteration_refused(dir.path(), &config, &text, &fields);

    // Unknown fields are refused at every level.
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    for at in [&[][..], &["round1"], &["round1", "payload"], &["dkg"]] {
        let what = at.join(".");
        let extra = ("x", serde_json::json!(1));
        assert_extra_field_refused(dir.path(), &config, &value, (&what, at), extra);
    }
}
