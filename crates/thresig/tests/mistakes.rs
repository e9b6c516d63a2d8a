//! Common operator mistakes, each run against the real binary: the exit
//! code says whether running the command again can succeed (2) or someone
//! must act first (1), the message names its cause exactly once, and it
//! ends with what to do.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use common::{ProcessCluster, WALLET, seat};
use thresig_engine::{
    BlameProof, HexBytes, Round2Request, Round2Response, SigningTarget, WalletEpoch, WalletId,
};

/// A terminal error: a retry cannot succeed until someone acts.
const TERMINAL: i32 = 1;
/// A retryable error: the same command, run again, may succeed.
const RETRYABLE: i32 = 2;

/// Runs `args`; checks the exit code, that what it printed names `cause`
/// exactly once, and that `hint` (what to do) follows the cause. Returns
/// what it printed (standard output, then standard error: `status` reports
/// unreachable members in its table).
#[track_caller]
fn check(args: &[&str], code: i32, cause: &str, hint: &str) -> String {
    let out = run(args);
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(
        stderr.matches(cause).count(),
        1,
        "{args:?}: the cause {cause:?} is not named exactly once: {stderr}"
    );
    let hint_at = stderr
        .rfind(hint)
        .unwrap_or_else(|| panic!("{args:?}: no hint {hint:?}: {stderr}"));
    assert!(
        hint_at > stderr.find(cause).unwrap_or(0),
        "{args:?}: the hint {hint:?} comes before the cause: {stderr}"
    );
    stderr
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A `thresig serve` process, killed when dropped.
struct Serving(Child);

impl Serving {
    fn start(cluster: &ProcessCluster, n: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_thresig"))
            .args(["serve", "--config", text(&cluster.config_path(seat(n)))])
            .env("RUST_LOG", "off")
            .spawn()
            .unwrap();
        let serving = Self(child);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(common::wait_ready(&cluster.peers(seat(n)), seat(n)));
        serving
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `config` with member `n`'s pinned TLS key replaced, written beside it.
fn with_wrong_pin(cluster: &ProcessCluster, config: &Path, n: u16) -> PathBuf {
    let node = cluster.node(seat(n));
    let pin = hex::encode(node.members[&seat(n)].tls_key_sha256);
    let original = std::fs::read_to_string(config).unwrap();
    assert!(original.contains(&pin));
    let path = config.with_file_name("wrong-pin.toml");
    std::fs::write(&path, original.replace(&pin, &"ab".repeat(32))).unwrap();
    path
}

#[test]
fn members_not_running_are_named_with_their_address_and_a_hint() {
    let cluster = ProcessCluster::provision(3, 2, &[], 71);
    let config = cluster.config_path(seat(1));
    let config = text(&config);
    let endpoint = cluster.node(seat(1)).members[&seat(1)].endpoint.to_string();
    let refused = "Connection refused";
    let hint = "is its `thresig serve` running?";

    let dkg = check(
        &["dkg", "--config", config, "--wallet", WALLET],
        RETRYABLE,
        refused,
        hint,
    );
    assert!(dkg.contains("member 1") && dkg.contains(&endpoint), "{dkg}");

    let psbt = Path::new(config).with_file_name("any.psbt");
    std::fs::write(&psbt, "cHNidP8=").unwrap();
    let sign = check(
        &[
            "sign",
            "--config",
            config,
            "--wallet",
            WALLET,
            "--psbt",
            text(&psbt),
        ],
        RETRYABLE,
        refused,
        hint,
    );
    assert!(
        sign.contains("member 1") && sign.contains(&endpoint),
        "{sign}"
    );

    // `status` is a report: it exits 0 once it printed its table, whose
    // rows carry each member's state.
    let out = run(&["status", "--config", config]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for n in 1..=3 {
        let endpoint = cluster.node(seat(1)).members[&seat(n)].endpoint.to_string();
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("member {n:>3}")))
            .unwrap_or_else(|| panic!("no row for member {n}: {stdout}"));
        assert!(
            row.contains("UNREACHABLE") && row.contains(&endpoint),
            "{row}"
        );
        assert_eq!(row.matches(refused).count(), 1, "{row}");
        assert!(row.contains(hint), "{row}");
    }
}

/// Runs each of `commands` with `--config config`: each is refused as
/// terminal, naming `cause` once, then `hint`, and the file.
#[track_caller]
fn each_refuses(commands: &[&[&str]], config: &Path, cause: &str, hint: &str) {
    for command in commands {
        let args: Vec<&str> = command
            .iter()
            .copied()
            .chain(["--config", text(config)])
            .collect();
        let said = check(&args, TERMINAL, cause, hint);
        assert!(said.contains(text(config)), "{said}");
    }
}

#[test]
fn configuration_mistakes_name_the_file_and_what_to_fix() {
    let cluster = ProcessCluster::provision(3, 2, &[], 72);
    let config = cluster.config_path(seat(1));
    let dir = config.parent().unwrap().to_path_buf();

    let missing = dir.join("missing.toml");
    each_refuses(
        &[
            &["dkg", "--wallet", WALLET],
            &["status"],
            &["keys", "status"],
            &["serve"],
        ],
        &missing,
        "No such file or directory",
        "check the path (given to --config",
    );

    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "network = \"regtest\"\nmember = [\n").unwrap();
    let said = check(
        &["dkg", "--config", text(&broken), "--wallet", WALLET],
        TERMINAL,
        "invalid array",
        "docs/configuration.md",
    );
    assert!(said.contains(text(&broken)), "{said}");

    // A member's file without its [daemon] section (the TLS files a
    // coordinator connects with).
    let original = std::fs::read_to_string(&config).unwrap();
    let (head, rest) = original.split_once("[daemon]").unwrap();
    let (_, roster) = rest.split_once("[[members]]").unwrap();
    let no_daemon = dir.join("no-daemon.toml");
    std::fs::write(&no_daemon, format!("{head}[[members]]{roster}")).unwrap();
    let said = check(
        &["status", "--config", text(&no_daemon)],
        TERMINAL,
        "no [daemon] section",
        "docs/configuration.md",
    );
    assert!(said.contains(text(&no_daemon)), "{said}");

    // A store-only file (as `thresig init` writes it before the cluster
    // part is added) where a command needs a member's: every command
    // refuses it with the same words.
    let (head, _) = original.split_once("[daemon]").unwrap();
    let store_only = dir.join("store-only.toml");
    let member_line = format!("member = {}\n", seat(1));
    std::fs::write(&store_only, head.replace(&member_line, "")).unwrap();
    // A well-formed proof, so that `blame verify` reaches the configuration.
    let proof = dir.join("culprit-2.proof.json");
    let request = Round2Request::new(
        WalletId::new(WALLET.to_owned()).unwrap(),
        WalletEpoch(0),
        vec![seat(1), seat(2)],
        SigningTarget::psbt(vec![1]),
        vec![HexBytes(vec![1])],
    );
    let answer = Round2Response::new(
        WalletId::new(WALLET.to_owned()).unwrap(),
        seat(2),
        vec![HexBytes(vec![1])],
        vec![],
    );
    let made = BlameProof::new(&[9], request, answer);
    std::fs::write(&proof, serde_json::to_vec(&made).unwrap()).unwrap();
    let approve = ["repair", "approve", "--wallet", WALLET, "--member", "2"];
    each_refuses(
        &[
            &["status"],
            &["quarantine", "show"],
            &approve,
            &["blame", "verify", text(&proof)],
        ],
        &store_only,
        "`member` is missing",
        "as `thresig init` writes it",
    );
    // `repair approve` also says whose configuration it needs.
    let args: Vec<&str> = approve
        .iter()
        .copied()
        .chain(["--config", text(&store_only)])
        .collect();
    check(
        &args,
        TERMINAL,
        "`member` is missing",
        "pass the helper's own signer.toml",
    );

    let said = check(
        &["dkg", "--config", text(&config), "--wallet", "other"],
        TERMINAL,
        "wallet other is not in",
        "--wallet",
    );
    assert!(said.contains(&format!("its wallets: {WALLET}")), "{said}");
}

#[test]
fn a_wrong_or_missing_key_file_tells_how_to_get_the_store_open() {
    let cluster = ProcessCluster::provision(3, 2, &[], 73);
    let config = cluster.config_path(seat(1));
    let kek = config.with_file_name("kek");
    let original = std::fs::read(&kek).unwrap();
    let args = ["keys", "status", "--config", text(&config)];

    let wrong = "07".repeat(32);
    std::fs::write(&kek, &wrong).unwrap();
    let said = check(
        &args,
        TERMINAL,
        "wrapped only under",
        "thresig keys recover",
    );
    assert!(!said.contains(&wrong), "the key is printed: {said}");
    assert!(!said.contains("KekId("), "a debug form is printed: {said}");

    std::fs::remove_file(&kek).unwrap();
    let said = check(&args, TERMINAL, "cannot read", "[key_provider]");
    assert!(said.contains(text(&kek)), "{said}");
    std::fs::write(&kek, original).unwrap();
}

#[test]
fn a_file_that_is_not_a_psbt_is_refused_with_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "hello\n").unwrap();
    let internal_key = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    let said = check(
        &[
            "psbt",
            "finalize",
            "--internal-key",
            internal_key,
            "--network",
            "regtest",
            "--psbt",
            text(&file),
            "--signature",
            &"00".repeat(64),
        ],
        TERMINAL,
        "6-bit remainder",
        "thresig psbt build",
    );
    assert!(said.contains(text(&file)), "{said}");
}

#[test]
fn signing_without_a_key_and_a_certificate_off_its_pin_say_what_to_do() {
    let cluster = ProcessCluster::provision(3, 2, &[], 74);
    let config = cluster.config_path(seat(1));
    let _member = Serving::start(&cluster, 1);
    let psbt = config.with_file_name("any.psbt");
    std::fs::write(&psbt, "cHNidP8=").unwrap();

    let said = check(
        &[
            "sign",
            "--config",
            text(&config),
            "--wallet",
            WALLET,
            "--psbt",
            text(&psbt),
        ],
        TERMINAL,
        "is not active yet",
        "thresig dkg",
    );
    assert!(
        said.contains("wallet_not_active") && said.contains("member 1"),
        "{said}"
    );
    assert!(
        !said.contains("Retryable)"),
        "a debug form is printed: {said}"
    );

    // The roster pins another key than member 1's certificate carries: a
    // coordinator refuses the connection, and a signer whose own
    // certificate is off its pin refuses to start.
    let pinned = with_wrong_pin(&cluster, &config, 1);
    let said = check(
        &["status", "--config", text(&pinned)],
        0,
        "pinned key",
        "tls_key_sha256",
    );
    assert!(said.contains("member   1"), "{said}");
    assert!(said.contains("`endpoint`"), "{said}");
    let second = with_wrong_pin(&cluster, &cluster.config_path(seat(2)), 2);
    check(
        &["serve", "--config", text(&second)],
        TERMINAL,
        "is not the one the roster pins",
        "tls_key_sha256",
    );
}

#[test]
fn a_payment_the_policy_refuses_names_each_refusing_member_and_what_to_check() {
    let mut cluster = ProcessCluster::provision(3, 2, &[], 75);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    cluster.start_all(&runtime);
    let config = cluster.config_path(seat(1));
    let wallet = common::dkg(&config, WALLET);
    // The wallet's policy allows no external destination.
    let dir = config.parent().unwrap();
    let psbt = common::payment(dir, &wallet, 0x11, &common::address(9));

    let said = check(
        &[
            "sign",
            "--config",
            text(&config),
            "--wallet",
            WALLET,
            "--psbt",
            text(&psbt),
        ],
        TERMINAL,
        "policy_denied from members",
        "thresig psbt inspect",
    );
    assert!(
        !said.contains("TooFewWilling"),
        "a debug form is printed: {said}"
    );
}

#[test]
fn a_mistyped_input_file_is_terminal_and_names_the_path_to_check() {
    let cluster = ProcessCluster::provision(3, 2, &[], 76);
    let config = cluster.config_path(seat(1));
    let dir = config.parent().unwrap().to_path_buf();
    let typo = dir.join("typo.psbt");
    let internal_key = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    let commands: [Vec<&str>; 3] = [
        vec![
            "sign",
            "--config",
            text(&config),
            "--wallet",
            WALLET,
            "--psbt",
            text(&typo),
        ],
        vec![
            "psbt",
            "finalize",
            "--internal-key",
            internal_key,
            "--network",
            "regtest",
            "--psbt",
            "/nonexistent",
            "--signature",
            "00",
        ],
        vec![
            "psbt",
            "build",
            "--internal-key",
            internal_key,
            "--network",
            "regtest",
            "--inputs-file",
            "missing",
            "--output",
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080:1000",
        ],
    ];
    for (args, path) in commands
        .iter()
        .zip([text(&typo), "/nonexistent", "missing"])
    {
        let said = check(
            args,
            TERMINAL,
            "No such file or directory",
            "check the path",
        );
        assert!(said.contains(path), "{said}");
    }
}
