//! A C program, compiled here with the system C compiler against the
//! static library cargo built for this test, runs a 2-of-3 DKG and a
//! Taproot signature with three signer handles and the coordinator
//! handle; its signature is checked with libsecp256k1 (through the
//! `bitcoin` crate), not with thresig's code.

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn a_c_host_runs_a_dkg_and_a_taproot_signature_through_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let program = dir.path().join("dkg_sign");
    let compiled = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-o"])
        .arg(&program)
        .arg(crate_dir.join("tests/c/dkg_sign.c"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(common::static_library())
        .args(["-lpthread", "-ldl", "-lm", "-lrt"])
        .output()
        .expect("the system C compiler `cc` runs");
    assert!(
        compiled.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    common::run_host(&program, &configs);
}
