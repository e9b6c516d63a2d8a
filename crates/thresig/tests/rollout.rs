//! Staged policy rollout with real signer processes (docs/policy.md,
//! "Staged rollout"): each member's operator stages the version written
//! into its file; a version that denies the canary wallet's payments fails
//! its gate and rolls back by itself, a good one is promoted to 100 %, and
//! kill -9 between steps leaves every wallet on a valid version.

mod common;

use std::path::Path;

use common::{Made, ProcessCluster, address, dkg, json, payment, seat, sign, thresig};
use serde_json::Value;

/// A 2-of-3 cluster whose wallet may pay `address(9)`, keyed and running.
struct Fleet {
    cluster: ProcessCluster,
    _runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    wallet: Made,
}

impl Fleet {
    fn new(seed: u64) -> Self {
        let mut cluster = ProcessCluster::provision(3, 2, &[address(9)], seed);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        cluster.start_all(&runtime);
        let wallet = dkg(&cluster.config_path(seat(1)), common::WALLET);
        Self {
            cluster,
            _runtime: runtime,
            dir: tempfile::tempdir().unwrap(),
            wallet,
        }
    }

    fn config(&self, s: u16) -> String {
        self.cluster.config_arg(seat(s))
    }

    /// Writes policy `version` into every member's file, allowing
    /// `destinations` only.
    fn write_policy(&self, version: u32, destinations: &[String]) {
        for s in 1..=3 {
            rewrite_policy(Path::new(&self.config(s)), version, destinations);
        }
    }

    /// `thresig policy <args> --config <member s>`, expecting `code`.
    fn policy(&self, s: u16, args: &[&str], code: i32) -> Value {
        let config = self.config(s);
        let mut all = vec!["policy"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", &config]);
        json(&all, code)
    }

    /// Signs a payment to `address(9)` from the prevout `byte`; whether it
    /// was signed.
    fn pay(&self, byte: u8) -> bool {
        self.pay_via(1, byte)
    }

    /// [`Fleet::pay`] coordinated by member `s`.
    fn pay_via(&self, s: u16, byte: u8) -> bool {
        let psbt = payment(self.dir.path(), &self.wallet, byte, &address(9));
        sign(&self.config(s), common::WALLET, &psbt)
            .status
            .success()
    }

    /// The wallet's policy as member `s` reports it in `thresig status`.
    fn status_policy(&self, s: u16) -> Value {
        common::member_status(&self.config(1), s)["wallets"][0]["policy"].clone()
    }
}

/// Sets the `[wallets.policy]` table's version and destinations.
fn rewrite_policy(path: &Path, version: u32, destinations: &[String]) {
    let text = std::fs::read_to_string(path).unwrap();
    let (head, policy) = text.split_once("[wallets.policy]\n").unwrap();
    let list = destinations
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let policy: Vec<String> = policy
        .lines()
        .map(|line| {
            if line.starts_with("version = ") {
                format!("version = {version}")
            } else if line.starts_with("destinations = ") {
                format!("destinations = [{list}]")
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(
        path,
        format!("{head}[wallets.policy]\n{}\n", policy.join("\n")),
    )
    .unwrap();
}

#[test]
fn a_denying_version_rolls_back_by_itself_and_a_good_one_reaches_every_wallet() {
    let f = Fleet::new(0x7011);
    assert!(f.pay(1), "version 1 pays address 9");
    assert_eq!(f.status_policy(1)["version"], 1);

    // Version 2 also allows address 8: healthy.
    f.write_policy(2, &[address(9), address(8)]);
    for s in 1..=3 {
        let staged = f.policy(s, &["stage", "--version", "2", "--min-requests", "1"], 0);
        assert_eq!(staged["phase"], "canary", "{staged}");
        assert_eq!(staged["via"], "daemon");
    }
    assert_eq!(
        f.status_policy(2)["version"],
        2,
        "the only wallet is the canary"
    );
    assert_eq!(f.status_policy(2)["rollout"]["stage"], "canary");
    assert!(f.pay(2), "version 2 pays address 9");
    // The members that signed the payment judged it: their gate passes and
    // the canary step promotes without --force. The others saw nothing,
    // and each step opens a new window: the operator forces the rest
    // (audited as such).
    let mut passed = 0;
    for s in 1..=3 {
        let status = f.policy(s, &["status"], 0);
        let promoted = if status["verdict"] == "pass" {
            passed += 1;
            f.policy(s, &["promote"], 0)
        } else {
            f.policy(s, &["promote", "--force"], 0)
        };
        assert_eq!(promoted["phase"], "10%", "{status} {promoted}");
    }
    assert!(
        passed >= 2,
        "the threshold of members that signed judged it"
    );
    for s in 1..=3 {
        for stage in ["50%", "100%"] {
            let promoted = f.policy(s, &["promote", "--force"], 0);
            assert_eq!(promoted["phase"], stage, "{promoted}");
        }
        f.policy(s, &["promote", "--force"], 1);
    }
    assert_eq!(f.status_policy(3)["rollout"]["stage"], "100%");

    // Version 3 allows no destination: the canary's payment is denied,
    // coordinated by two members (one coordinator alone decides nothing),
    // the gate fails on the members that refused both, and they go back
    // to version 2 by themselves.
    f.write_policy(3, &[]);
    for s in 1..=3 {
        f.policy(s, &["stage", "--version", "3", "--min-requests", "1"], 0);
    }
    // Each coordinator's round 2 reaches a threshold (two) of members, so
    // three coordinators' payments reach at least two members from two
    // coordinators each (unless two rolled back already, and the third
    // payment is signed under version 2).
    assert!(!f.pay_via(1, 3), "version 3 denies paying address 9");
    for (coordinator, byte) in [(2, 6), (3, 7)] {
        f.pay_via(coordinator, byte);
    }
    let mut rolled = 0;
    for s in 1..=3 {
        let status = f.policy(s, &["status"], 0);
        if status["phase"] == "canary" {
            // Denials seen from one coordinator alone hold the gate.
            assert!(status["verdict"].get("fail").is_none(), "{status}");
            continue;
        }
        assert_eq!(status["phase"], "rolled_back", "member {s}: {status}");
        assert!(
            status["reason"].as_str().unwrap().contains("denial rate"),
            "{status}"
        );
        assert_eq!(status["wallets"][0]["policy_version"], 2);
        rolled += 1;
    }
    assert!(
        rolled >= 2,
        "at least a threshold of members refused and rolled back"
    );
    // The operator rolls back any member that saw no traffic, as the
    // runbook says, and the wallet pays again under version 2.
    for s in 1..=3 {
        if f.policy(s, &["status"], 0)["phase"] == "canary" {
            f.policy(s, &["rollback"], 0);
        }
    }
    assert!(f.pay(4), "version 2 is back everywhere");
}

#[test]
fn kill_9_between_steps_leaves_every_wallet_on_a_valid_version() {
    let mut f = Fleet::new(0x7012);
    f.write_policy(2, &[address(9), address(8)]);
    f.policy(1, &["stage", "--version", "2"], 0);
    for (kills, expected) in [(0, "canary"), (1, "10%"), (2, "50%")] {
        if kills > 0 {
            f.policy(1, &["promote", "--force"], 0);
        }
        f.cluster.local.kill(seat(1)).unwrap();
        // The file changes under the stopped signer: the store decides.
        rewrite_policy(Path::new(&f.config(1)), 7, &[]);
        f.cluster.local.start(seat(1)).unwrap();
        let peers = f.cluster.peers(seat(1));
        f._runtime.block_on(common::wait_ready(&peers, seat(1)));
        let status = f.policy(1, &["status"], 0);
        assert_eq!(status["phase"], expected, "{status}");
        assert_eq!(status["wallets"][0]["policy_version"], 2, "{status}");
        rewrite_policy(Path::new(&f.config(1)), 2, &[address(9), address(8)]);
    }
    // A step computed before another one landed is refused, whatever the
    // restarts in between.
    let stale = thresig(&[
        "policy",
        "promote",
        "--config",
        &f.config(1),
        "--seq",
        "1",
        "--json",
    ]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("rollout_stale")
            || String::from_utf8_lossy(&stale.stdout).contains("rollout_stale"),
        "{stale:?}"
    );
    assert!(
        f.pay(5),
        "member 1 signs on version 2 with members 2 and 3 on version 1"
    );
}

#[test]
fn the_file_changes_no_applied_policy_until_staged_even_on_a_stopped_member() {
    let mut f = Fleet::new(0x7013);
    for s in [1, 2] {
        f.cluster.local.kill(seat(s)).unwrap();
        rewrite_policy(Path::new(&f.config(s)), 2, &[address(9), address(8)]);
    }
    // Member 1 stages while stopped, over its store.
    let staged = f.policy(1, &["stage", "--version", "2"], 0);
    assert_eq!(staged["phase"], "canary", "{staged}");
    assert_eq!(staged["via"], "store");
    assert_eq!(staged["wallets"][0]["policy_version"], 2, "{staged}");
    // Member 2 restarts with the edited file and stages nothing: its
    // wallet stays on the version its store applies.
    for s in [1, 2] {
        f.cluster.local.start(seat(s)).unwrap();
        let peers = f.cluster.peers(seat(s));
        f._runtime.block_on(common::wait_ready(&peers, seat(s)));
    }
    let status = f.policy(2, &["status"], 0);
    assert_eq!(status["wallets"][0]["policy_version"], 1, "{status}");
    assert_eq!(f.policy(1, &["status"], 0)["phase"], "canary");
}

/// Adds wallets `ids` to the file at `path`, each a copy of its wallet's
/// table (served unkeyed: a policy applies to a wallet before its DKG).
fn add_wallets(path: &Path, ids: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    let (_, table) = text.split_once("[[wallets]]\n").unwrap();
    let table = format!("[[wallets]]\n{table}");
    let from = format!("id = \"{}\"", common::WALLET);
    assert!(table.contains(&from), "{table}");
    let mut out = text.clone();
    for id in ids {
        out.push('\n');
        out.push_str(&table.replace(&from, &format!("id = \"{id}\"")));
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn kill_9_during_steps_keeps_every_wallet_on_a_valid_version() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[address(9)], 0x7014);
    let path = cluster.config_path(seat(1));
    let config = path.to_str().unwrap().to_owned();
    add_wallets(&path, &["w1", "w2", "w3", "w4", "w5", "w6", "w7"]);
    cluster.start_all(&runtime);
    rewrite_policy(&path, 2, &[address(9), address(8)]);
    let staged = json(
        &["policy", "stage", "--version", "2", "--config", &config],
        0,
    );
    assert_eq!(staged["wallets"].as_array().unwrap().len(), 8, "{staged}");
    let mut phase = "canary".to_owned();
    for (step, next) in [
        ("promote", "10%"),
        ("promote", "50%"),
        ("rollback", "rolled_back"),
    ] {
        // The signer dies with the step perhaps under way: its admin
        // request sent, or not yet (the command then runs over the store
        // once the signer is gone).
        let mut args = vec!["policy", step, "--config", &config, "--json"];
        if step == "promote" {
            args.push("--force");
        }
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        cluster.local.kill(seat(1)).unwrap();
        command.wait().unwrap();
        // The file changes under the stopped signer: the store decides.
        rewrite_policy(&path, 7, &[]);
        cluster.local.start(seat(1)).unwrap();
        let peers = cluster.peers(seat(1));
        runtime.block_on(common::wait_ready(&peers, seat(1)));
        let status = json(&["policy", "status", "--config", &config], 0);
        let now = status["phase"].as_str().unwrap().to_owned();
        assert!(now == phase || now == next, "{phase} or {next}: {status}");
        // Every wallet on a valid version: the canaries of the step on the
        // new one, every other wallet on its previous one.
        let wallets = status["wallets"].as_array().unwrap();
        assert_eq!(wallets.len(), 8, "{status}");
        for w in wallets {
            let expected = if w["group"] == "canary" { 2 } else { 1 };
            assert_eq!(w["policy_version"], expected, "{w} in {status}");
        }
        let on_new = wallets.iter().filter(|w| w["policy_version"] == 2).count();
        match now.as_str() {
            "rolled_back" => assert_eq!(on_new, 0, "{status}"),
            _ => assert!((1..8).contains(&on_new), "{status}"),
        }
        rewrite_policy(&path, 2, &[address(9), address(8)]);
        // Whatever the kill interrupted, the step can be run again.
        if now == phase {
            let mut args = vec!["policy", step, "--config", &config];
            if step == "promote" {
                args.push("--force");
            }
            assert_eq!(json(&args, 0)["phase"], next);
        }
        phase = next.to_owned();
    }
}
