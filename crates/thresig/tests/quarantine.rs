//! Quarantine with real signer processes (docs/quarantine.md): a member
//! that is down is quarantined by repeated `thresig sign` runs, which keep
//! signing; `thresig quarantine release` brings it back; a damaged score
//! file is reported and costs no signature.

mod common;

use std::path::Path;

use common::{Made, ProcessCluster, dkg, json, seat, self_payment, sign_report, thresig};

/// Runs that may pass before the down member's failed connections have
/// quarantined it: three faults quarantine it, and a run that finishes
/// before its connection attempt fails counts none, so a few spare runs.
const MAX_RUNS: u8 = 10;

fn member_score(config: &str, member: u16) -> serde_json::Value {
    let shown = json(&["quarantine", "show", "--config", config], 0);
    shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["member"] == member)
        .unwrap()["score"]
        .clone()
}

fn sign_once(config: &Path, dir: &Path, wallet: &Made, byte: u8) {
    let psbt = self_payment(dir, wallet, byte);
    let report = sign_report(config, &psbt);
    assert!(report["txid"].is_string(), "{report}");
}

/// A running 2-of-3 cluster whose wallet's DKG member 1 ran, and a
/// directory for PSBTs.
struct Signing {
    runtime: tokio::runtime::Runtime,
    cluster: ProcessCluster,
    config_path: std::path::PathBuf,
    config: String,
    wallet: Made,
    dir: tempfile::TempDir,
    /// The last self-payment's number.
    byte: u8,
}

impl Signing {
    fn start(seed: u64) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut cluster = ProcessCluster::provision(3, 2, &[], seed);
        cluster.start_all(&runtime);
        let config_path = cluster.config_path(seat(1));
        let config = config_path.to_str().unwrap().to_owned();
        let wallet = dkg(&config_path, common::WALLET);
        Self {
            runtime,
            cluster,
            config_path,
            config,
            wallet,
            dir: tempfile::tempdir().unwrap(),
            byte: 0,
        }
    }

    fn score(&self, member: u16) -> serde_json::Value {
        member_score(&self.config, member)
    }

    /// Signs the next fresh self-payment.
    fn sign_next(&mut self) {
        self.byte += 1;
        sign_once(&self.config_path, self.dir.path(), &self.wallet, self.byte);
    }

    /// Signs fresh self-payments until `done`; gives up (failing the
    /// test) past payment number `most`.
    fn sign_until(&mut self, most: u8, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            assert!(self.byte < most, "not done after {most} runs");
            self.sign_next();
        }
    }

    /// Starts member `member` again and waits until it answers.
    fn restart(&mut self, member: u16) {
        self.cluster.local.start(seat(member)).unwrap();
        self.runtime.block_on(common::wait_ready(
            &self.cluster.peers(seat(1)),
            seat(member),
        ));
    }

    /// `thresig quarantine release --member MEMBER`.
    fn release(&self, member: u16) {
        let member = member.to_string();
        json(
            &[
                "quarantine",
                "release",
                "--config",
                &self.config,
                "--member",
                &member,
            ],
            0,
        );
    }
}

#[test]
fn a_member_that_is_down_is_quarantined_signing_goes_on_and_release_brings_it_back() {
    let mut signing = Signing::start(23);
    let config = signing.config.clone();

    signing.cluster.local.kill(seat(3)).unwrap();
    signing.sign_until(MAX_RUNS, |s| s.score(3)["quarantined"] == true);
    let down = signing.score(3);
    assert!(down["timeouts"].as_u64().unwrap() >= 3, "{down}");
    for member in [1, 2] {
        let score = signing.score(member);
        assert_eq!(score["quarantined"], false, "{score}");
        assert_eq!(score["timeouts"], 0, "{score}");
    }

    // Quarantined, the member is not asked while the others answer: the
    // run signs and its score does not move.
    signing.sign_next();
    assert_eq!(signing.score(3), down);

    let status = json(&["status", "--config", &config], 0);
    let row = &status["quarantine"][2];
    assert_eq!(row["member"], 3, "{status}");
    assert_eq!(row["score"]["quarantined"], true, "{status}");
    assert!(row["score"]["quarantined_until"].is_u64(), "{status}");

    let unknown = thresig(&[
        "quarantine",
        "release",
        "--config",
        &config,
        "--member",
        "9",
    ]);
    assert_eq!(unknown.status.code(), Some(1));
    let text = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        text.contains("member 9 is not in this member's roster"),
        "{text}"
    );

    signing.restart(3);
    signing.release(3);
    let released = signing.score(3);
    assert_eq!(released["quarantined"], false, "{released}");
    assert_eq!(released["quarantines"], 1, "{released}");
    // Back in the runs: asked again, it answers and scores good runs.
    signing.sign_until(2 * MAX_RUNS, |s| s.score(3)["good_runs_in_a_row"] != 0);
    assert_eq!(signing.score(3)["quarantined"], false);
}

/// Quarantine must never cost a signature: a damaged score file is
/// reported (naming the file and how to move it aside) and left as it is,
/// and the run asks every member and signs.
#[test]
fn a_damaged_score_file_is_reported_left_alone_and_costs_no_signature() {
    let Signing {
        runtime: _runtime,
        cluster: _cluster,
        config_path,
        config,
        wallet,
        dir,
        ..
    } = Signing::start(24);
    sign_once(&config_path, dir.path(), &wallet, 1);

    let node = thresig_cluster::config::Config::load(&config_path).unwrap();
    let file = thresig_cluster::scores::scores_path(&node);
    assert!(file.exists());
    let garbage = vec![0x5a_u8; 4096];
    std::fs::write(&file, &garbage).unwrap();
    let psbt = self_payment(dir.path(), &wallet, 2);
    let signed = common::sign(&config, common::WALLET, &psbt);
    let text = String::from_utf8_lossy(&signed.stderr);
    assert_eq!(signed.status.code(), Some(0), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("is damaged"), "{text}");
    assert!(text.contains(".damaged`"), "{text}");
    assert!(text.contains("asks every member"), "{text}");
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "never reset");
    let shown = thresig(&["quarantine", "show", "--config", &config]);
    assert_eq!(shown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&shown.stderr).contains(".damaged`"),
        "{shown:?}"
    );

    let aside = file.with_extension("redb.damaged");
    std::fs::rename(&file, &aside).unwrap();
    sign_once(&config_path, dir.path(), &wallet, 3);
    assert!(file.exists());
}

/// Continues a stopped member's process when dropped, so a failing test
/// still lets the cluster shut down.
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn stop(pid: u32) -> Self {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// A member that stalls (its process stopped: connections are accepted by
/// the kernel and never answered) times out rather than refusing. With
/// member 2 already quarantined, every run waits for member 3's round-1
/// timeout, then calls member 2 in and signs; the timeouts quarantine
/// member 3 too, and then both are called in at once (member 1 alone is
/// too few) and the run signs with member 2. Continued, member 3 answers
/// again.
#[test]
fn a_stalled_member_times_out_is_quarantined_and_signing_goes_on() {
    let mut signing = Signing::start(25);

    // Member 2 down until quarantined, then back (still quarantined).
    signing.cluster.local.kill(seat(2)).unwrap();
    signing.sign_until(MAX_RUNS, |s| s.score(2)["quarantined"] == true);
    signing.restart(2);

    let stopped = Stopped::stop(signing.cluster.local.pid(seat(3)).unwrap());
    signing.sign_until(2 * MAX_RUNS, |s| s.score(3)["quarantined"] == true);
    let stalled = signing.score(3);
    assert!(stalled["timeouts"].as_u64().unwrap() >= 3, "{stalled}");
    assert_eq!(stalled["refusals"], 0, "{stalled}");
    // Both quarantined: called in at once, and member 2 signs.
    signing.sign_next();
    assert!(signing.score(2)["good_runs_in_a_row"].as_u64().unwrap() >= 1);

    drop(stopped);
    signing
        .runtime
        .block_on(common::wait_ready(&signing.cluster.peers(seat(1)), seat(3)));
    signing.release(3);
    signing.sign_until(3 * MAX_RUNS, |s| s.score(3)["good_runs_in_a_row"] != 0);
}
