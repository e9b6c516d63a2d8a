//! The Go example (`examples/go`) builds against the static library and
//! runs a 2-of-3 DKG and a signature with three handles in one process;
//! its signature is checked with libsecp256k1. Skipped, saying so, when
//! `go` is not on PATH. The build writes only under a temporary directory
//! (GOCACHE, GOPATH) and fetches nothing (the example has no dependency).

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_go_example_runs_a_dkg_and_a_signature() {
    if Command::new("go").arg("version").output().is_err() {
        println!("skipped: `go` is not on PATH; the C host test covers the ABI");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/go");
    let program = dir.path().join("dkgsign");
    let built = Command::new("go")
        .current_dir(&example)
        .args(["build", "-o"])
        .arg(&program)
        .arg("./cmd/dkgsign")
        .env("GOCACHE", dir.path().join("gocache"))
        .env("GOPATH", dir.path().join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "1")
        .env("CGO_LDFLAGS", common::static_library())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    common::run_host(&program, &configs);
}
