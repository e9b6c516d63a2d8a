//! `thresig keys` against a running signer: the commands go through the
//! signer's admin socket while it keeps serving, and fall back to opening
//! the store once it has stopped.

mod common;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use common::{ProcessCluster, WALLET, json, seat, thresig, wait_ready};
use serde_json::Value;
use thresig_cluster::config::Config;
use thresig_cluster::node::admin_socket_path;

fn keys(command: &str, config: &str, code: i32) -> Value {
    json(&["keys", command, "--config", config], code)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn socket_of(config: &Path) -> PathBuf {
    admin_socket_path(&Config::load(config).unwrap())
}

#[test]
fn keys_commands_act_on_a_running_signer_through_its_admin_socket() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[], 21);
    cluster.start_all(&runtime);
    let path = cluster.config_path(seat(1));
    let config = path.to_str().unwrap();
    let dkg = json(&["dkg", "--config", config, "--wallet", WALLET], 0);
    let output_key = dkg["output_key"].as_str().unwrap().to_owned();

    // Owner-only: a 0700 directory holding a 0600 socket.
    let socket = socket_of(&path);
    assert!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    let status = keys("status", config, 0);
    assert_eq!(status["via"], "daemon", "{status}");
    assert_eq!(status["current_dek"], 1);
    assert_eq!(status["provider"]["ok"], true);

    // The rotation runs in the signer, which keeps serving meanwhile.
    let rotated = keys("rotate-dek", config, 0);
    assert_eq!(rotated["via"], "daemon", "{rotated}");
    assert_eq!(rotated["rotated_to"], 2);
    let status = keys("status", config, 0);
    assert_eq!(status["current_dek"], 2, "{status}");
    assert_eq!(status["last_dek_rotation"]["term"], 2);
    let cluster_status = json(&["status", "--config", config], 0);
    assert_eq!(cluster_status["wallets"][WALLET]["output_key"], output_key);
    for m in cluster_status["members"].as_array().unwrap() {
        assert_eq!(m["reachable"], true, "{m}");
        assert_eq!(m["wallets"][0]["state"], "active", "{m}");
    }

    let verified = keys("verify", config, 0);
    assert_eq!(verified["via"], "daemon");
    assert_eq!(verified["failures"], serde_json::json!([]));
    assert!(verified["ok"].as_u64().unwrap() > 0);

    let rekeyed = keys("rotate-kek", config, 0);
    assert_eq!(rekeyed["via"], "daemon");

    // Text output is the command's own, with a note on stderr.
    let text = thresig(&["keys", "status", "--config", config]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("current DEK: term 2"));
    assert!(String::from_utf8_lossy(&text.stderr).contains("running signer"));

    // Recovery needs the store closed: refused before the key file is read.
    let refused = json(
        &[
            "keys",
            "recover",
            "--config",
            config,
            "--recovery-key",
            "/nonexistent",
        ],
        1,
    );
    assert_eq!(refused["error"]["code"], "daemon_running", "{refused}");
    assert_eq!(refused["error"]["retryable"], false);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stop it")
    );

    // A stopped signer removes its socket; the commands open the store.
    assert!(cluster.local.stop(seat(1)).unwrap());
    assert!(!socket.exists());
    let status = keys("status", config, 0);
    assert_eq!(status["via"], "store");
    assert_eq!(status["current_dek"], 2);
}

#[test]
fn a_killed_signers_stale_socket_is_replaced_at_start() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[], 22);
    cluster.start_all(&runtime);
    let path = cluster.config_path(seat(2));
    let config = path.to_str().unwrap();
    let socket = socket_of(&path);
    cluster.local.kill(seat(2)).unwrap();
    // The socket file outlives SIGKILL, but nothing answers on it.
    assert!(socket.exists());
    assert_eq!(keys("status", config, 0)["via"], "store");

    cluster.local.start(seat(2), None).unwrap();
    runtime.block_on(wait_ready(&cluster.peers(seat(1)), seat(2)));
    assert_eq!(keys("status", config, 0)["via"], "daemon");
    assert_eq!(mode(&socket), 0o600);
}
