//! Member repair end to end over real processes on loopback: a member whose
//! store is restored from before the DKG (its disk lost) is repaired by two
//! helpers whose operators approved it through their admin sockets, and
//! then signs a transaction Bitcoin Core's consensus code accepts; without
//! every helper's approval nothing changes; a helper sending a wrong sigma
//! is named by the repaired member, which stores nothing; kill -9 of a
//! member (or the coordinator stopping) at each step boundary leaves every
//! member as it was, or the repair complete, and the wallet signs
//! (docs/lifecycle.md, "Repair and member replacement").

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use bitcoin::Transaction;
use bitcoin::consensus::encode::deserialize_hex;
use common::{
    Made, ProcessCluster, WALLET, dkg, name_successor, seat, self_payment, thresig, wait_ready,
};
use thresig_cluster::Peers;
use thresig_cluster::node::Node;
use thresig_consensus::verify_with_core;
use thresig_crypto::Seat;
use thresig_daemon::Error as DaemonError;
use thresig_engine::{
    RepairPayload, RepairRequest, RepairResponse, RepairSession, SignedRepairMessage, WalletEpoch,
    WalletId, seal_repair_value,
};

/// The member that loses its disk in every test.
const LOST: u16 = 3;

/// A running 2-of-3 cluster with a DKG wallet, and a copy of member
/// [`LOST`]'s store from before the DKG (its identity key only).
struct Lab {
    cluster: ProcessCluster,
    runtime: tokio::runtime::Runtime,
    made: Made,
    before_dkg: tempfile::TempDir,
    work: tempfile::TempDir,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

impl Lab {
    fn new(seed: u64) -> Self {
        let mut cluster = ProcessCluster::provision(3, 2, &[], seed);
        let before_dkg = tempfile::tempdir().unwrap();
        copy_dir(&Lab::store_of(&cluster, LOST), before_dkg.path());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        cluster.start_all(&runtime);
        let made = dkg(&cluster.config_path(seat(1)), WALLET);
        Self {
            cluster,
            runtime,
            made,
            before_dkg,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// A lab whose member [`LOST`] lost its disk, with both helpers'
    /// operators' approvals of its repair.
    fn approved(seed: u64) -> Self {
        let mut lab = Self::new(seed);
        lab.lose_disk();
        lab.approve(1);
        lab.approve(2);
        lab
    }

    fn store_of(cluster: &ProcessCluster, member: u16) -> std::path::PathBuf {
        cluster.local.members()[usize::from(member) - 1]
            .dir
            .join("store")
    }

    fn config(&self, member: u16) -> String {
        self.cluster
            .config_path(seat(member))
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// Member [`LOST`] loses its disk: killed, its store replaced by the
    /// copy from before the DKG, restarted.
    fn lose_disk(&mut self) {
        self.cluster.local.kill(seat(LOST)).unwrap();
        let store = Lab::store_of(&self.cluster, LOST);
        std::fs::remove_dir_all(&store).unwrap();
        copy_dir(self.before_dkg.path(), &store);
        self.restart(LOST, |_| {});
    }

    /// Kills `member` with SIGKILL (after `meanwhile`), restarts it and
    /// waits until it serves.
    fn restart(&mut self, member: u16, meanwhile: impl FnOnce(&mut Self)) {
        if self.cluster.local.pid(seat(member)).is_some() {
            self.cluster.local.kill(seat(member)).unwrap();
        }
        meanwhile(self);
        self.cluster.local.start(seat(member)).unwrap();
        let peers = self.peers();
        self.runtime.block_on(wait_ready(&peers, seat(member)));
    }

    fn peers(&self) -> Arc<Peers> {
        self.cluster.peers(seat(1))
    }

    /// The identity signing key of `member`, read from its store with the
    /// member stopped (started again after): what a member that means to
    /// lie signs its altered messages with.
    fn identity_key(&mut self, member: u16) -> ed25519_dalek::SigningKey {
        assert!(self.cluster.local.stop(seat(member)).unwrap());
        let key = Node::open(Path::new(&self.config(member)))
            .unwrap()
            .identity_key()
            .unwrap();
        self.restart(member, |_| {});
        key
    }

    /// `thresig repair approve` on `helper`, for [`LOST`].
    fn approve(&self, helper: u16) {
        let out = thresig(&[
            "repair",
            "approve",
            "--config",
            &self.config(helper),
            "--wallet",
            WALLET,
            "--member",
            &LOST.to_string(),
            "--expires-in",
            "600",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// `thresig repair` of [`LOST`] coordinated by member 1.
    fn repair(&self) -> Output {
        thresig(&[
            "repair",
            "--config",
            &self.config(1),
            "--wallet",
            WALLET,
            "--member",
            &LOST.to_string(),
            "--json",
        ])
    }

    /// `member`'s state of the wallet, as `thresig status` shows it.
    fn state(&self, member: u16) -> String {
        self.wallet_status(member)["state"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The wallet on `member`, as `thresig status --json` shows it.
    fn wallet_status(&self, member: u16) -> serde_json::Value {
        let out = thresig(&["status", "--config", &self.config(1), "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        status["members"][usize::from(member) - 1]["wallets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["wallet"] == WALLET)
            .unwrap()
            .clone()
    }

    /// Signs a self-payment with every member but `absent` (stopped first,
    /// started again after) and checks the transaction with Bitcoin Core's
    /// consensus code.
    fn signs_without(&mut self, absent: u16, byte: u8) {
        assert!(self.cluster.local.stop(seat(absent)).unwrap());
        let psbt = self_payment(self.work.path(), &self.made, byte);
        let out = thresig(&[
            "sign",
            "--config",
            &self.config(1),
            "--wallet",
            WALLET,
            "--psbt",
            psbt.to_str().unwrap(),
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let tx_hex = std::fs::read_to_string(signed["tx"].as_str().unwrap()).unwrap();
        let tx: Transaction = deserialize_hex(tx_hex.trim()).unwrap();
        let prevout = bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(60_000),
            script_pubkey: bitcoin::ScriptBuf::from_bytes(
                hex::decode(format!("5120{}", self.made.output_key)).unwrap(),
            ),
        };
        verify_with_core(&tx, &[prevout]).unwrap();
        self.restart(absent, |_| {});
    }

    /// One repair step at `member`, sent as member 1 coordinates.
    fn step(&self, member: u16, request: RepairRequest) -> Result<RepairResponse, DaemonError> {
        let peers = self.peers();
        self.runtime.block_on(async {
            let client = peers.client(seat(member)).await?;
            client.repair(request).await
        })
    }

    fn message(&self, member: u16, request: RepairRequest) -> SignedRepairMessage {
        match self.step(member, request).unwrap() {
            RepairResponse::Message(m) => m,
            other => panic!("no message: {other:?}"),
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(error: &DaemonError) -> String {
    match error {
        DaemonError::Refused(r) => r.code.as_str().to_owned(),
        other => panic!("not a refusal: {other}"),
    }
}

/// A repair driven step by step, as a coordinator does, so a test can stop
/// between steps.
struct Steps {
    session: RepairSession,
    joined: Option<SignedRepairMessage>,
    opened: Vec<SignedRepairMessage>,
    dealt: Vec<SignedRepairMessage>,
    summed: Vec<SignedRepairMessage>,
}

const HELPERS: [u16; 2] = [1, 2];

impl Steps {
    fn new(nonce: u8) -> Self {
        Self {
            session: RepairSession::new(
                WalletId::new(WALLET.to_owned()).unwrap(),
                WalletEpoch(0),
                seat(LOST),
                HELPERS.iter().map(|h| seat(*h)).collect::<Vec<Seat>>(),
                [nonce; 32],
            ),
            joined: None,
            opened: Vec::new(),
            dealt: Vec::new(),
            summed: Vec::new(),
        }
    }

    fn open(&mut self, lab: &Lab) {
        let session = self.session.clone();
        self.joined = Some(lab.message(
            LOST,
            RepairRequest::Join {
                session: session.clone(),
            },
        ));
        for h in HELPERS {
            let request = RepairRequest::Open {
                session: session.clone(),
            };
            self.opened.push(lab.message(h, request));
        }
    }

    fn deal_at(&self, lab: &Lab, helper: u16) -> Result<RepairResponse, DaemonError> {
        lab.step(
            helper,
            RepairRequest::Deal {
                session: self.session.clone(),
                opened: self.opened.clone(),
            },
        )
    }

    fn deal(&mut self, lab: &Lab) {
        for h in HELPERS {
            match self.deal_at(lab, h).unwrap() {
                RepairResponse::Message(m) => self.dealt.push(m),
                other => panic!("{other:?}"),
            }
        }
    }

    fn sum(&mut self, lab: &Lab) {
        for h in HELPERS {
            let request = RepairRequest::Sum {
                session: self.session.clone(),
                joined: self.joined.clone().unwrap(),
                dealt: self.dealt.clone(),
            };
            self.summed.push(lab.message(h, request));
        }
    }

    fn finish(&self, lab: &Lab) -> Result<RepairResponse, DaemonError> {
        lab.step(
            LOST,
            RepairRequest::Finish {
                session: self.session.clone(),
                opened: self.opened.clone(),
                dealt: self.dealt.clone(),
                summed: self.summed.clone(),
            },
        )
    }
}

/// After the interruption: the lost member is still without a key, the
/// wallet signs with the others, and a new repair (each helper approving
/// again where its restart dropped the approval) completes, after which
/// the repaired member signs.
fn recovers(lab: &mut Lab, approve_again: &[u16]) {
    assert_eq!(lab.state(LOST), "dkg_pending");
    lab.signs_without(LOST, 0x21);
    for h in approve_again {
        lab.approve(*h);
    }
    let out = lab.repair();
    assert!(out.status.success(), "{}", stderr(&out));
    lab.signs_without(2, 0x22);
}

/// A helper whose wallet is rekeying never helps again: `thresig repair`
/// exits 1 (terminal) naming the rekey, and nothing changes.
#[test]
fn a_repair_whose_helper_is_rekeying_exits_1_and_changes_nothing() {
    let mut lab = Lab::new(39);
    lab.lose_disk();
    // Member 2's wallet gets a successor (a restart reads it), and its
    // operator starts the wallet's emergency rekey there.
    lab.restart(2, |lab| name_successor(Path::new(&lab.config(2)), "next"));
    let rekey = thresig(&[
        "wallet",
        "rekey",
        "--config",
        &lab.config(2),
        "--wallet",
        WALLET,
        "--json",
    ]);
    assert!(rekey.status.success(), "{}", stderr(&rekey));
    assert_eq!(lab.state(2), "rekeying");
    lab.approve(1);
    lab.approve(2);
    let out = lab.repair();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let why = stderr(&out);
    assert!(
        why.contains("rekey_in_progress") && why.contains("being rekeyed"),
        "{why}"
    );
    assert_eq!(lab.state(LOST), "dkg_pending");
    assert_eq!(lab.state(2), "rekeying");
    // Helper 1's approval is not used up (no sum ran): status lists it.
    let pending = &lab.wallet_status(1)["pending"];
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["op"] == "repair_approval"),
        "{pending}"
    );
}

#[test]
fn a_member_restored_from_before_the_dkg_is_repaired_and_signs() {
    let mut lab = Lab::new(31);
    lab.lose_disk();
    assert_eq!(lab.state(LOST), "dkg_pending");
    lab.approve(1);
    lab.approve(2);
    let out = lab.repair();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["member"], LOST);
    assert_eq!(report["helpers"], serde_json::json!([1, 2]));
    assert_eq!(lab.state(LOST), "active");
    // Members 1 and 3 alone: the repaired share signs.
    lab.signs_without(2, 0x11);
}

#[test]
fn a_repair_without_every_helpers_approval_does_nothing() {
    let mut lab = Lab::new(32);
    lab.lose_disk();
    lab.approve(1);
    let out = lab.repair();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("repair_not_approved"),
        "{}",
        stderr(&out)
    );
    assert_eq!(lab.state(LOST), "dkg_pending");
    lab.signs_without(LOST, 0x12);
}

/// A lying helper over the network: helper 2 sends the repaired member a
/// sigma that is not the sum of the deltas it committed to, sealed to the
/// member's per-session key and signed with helper 2's own identity key, as
/// a helper that means to cheat would send it. The repaired member refuses
/// to store the share and names helper 2 (its commitments δ·G prove the
/// sigma wrong), stays without a share, and a repair by the same helpers
/// answering honestly then completes and the member signs.
#[test]
fn a_helper_sending_a_wrong_sigma_is_named_and_the_member_stays_without_a_share() {
    let mut lab = Lab::new(46);
    lab.lose_disk();
    let liar = lab.identity_key(2);
    lab.approve(1);
    lab.approve(2);
    let mut steps = Steps::new(16);
    steps.open(&lab);
    steps.deal(&lab);
    steps.sum(&lab);
    let Some(RepairPayload::Joined { hpke_key }) = steps.joined.as_ref().map(|j| &j.payload) else {
        panic!("no Joined message");
    };
    let honest = steps.summed[1].clone();
    assert_eq!(honest.sender, seat(2));
    let RepairPayload::Summed {
        commitments,
        joined,
        ..
    } = honest.payload
    else {
        panic!("not a Summed message: {:?}", honest.payload);
    };
    // Any valid scalar that is not helper 2's sum.
    let sealed = seal_repair_value(
        &steps.session,
        seat(2),
        seat(LOST),
        &hpke_key.0,
        &[0x05; 32],
        &mut rand_core::OsRng,
    )
    .unwrap();
    steps.summed[1] = SignedRepairMessage::sign(
        &liar,
        steps.session.clone(),
        seat(2),
        RepairPayload::Summed {
            sealed,
            commitments,
            joined,
        },
    );
    let err = steps.finish(&lab).unwrap_err();
    assert_eq!(code(&err), "repair_failed", "{err}");
    let why = err.to_string();
    assert!(
        why.contains("seat 3 accuses seat 2") && why.contains("BadSigma"),
        "{why}"
    );
    assert_eq!(lab.state(LOST), "dkg_pending");
    // The helpers' sums used their approvals up.
    recovers(&mut lab, &HELPERS);
}

/// Boundary: join and open done. A helper killed there loses its
/// per-session key and its approval: the deal is refused, nothing changed.
#[test]
fn kill_9_of_a_helper_after_open_changes_nothing() {
    let mut lab = Lab::approved(33);
    let mut steps = Steps::new(1);
    steps.open(&lab);
    lab.restart(1, |_| {});
    let err = steps.deal_at(&lab, 1).unwrap_err();
    assert_eq!(code(&err), "repair_not_approved");
    lab.approve(1);
    let err = steps.deal_at(&lab, 1).unwrap_err();
    assert_eq!(code(&err), "repair_not_in_phase");
    recovers(&mut lab, &[]);
}

/// Boundary: deal done. The member being repaired killed there loses its
/// per-session key: the helpers' sums are sealed to a key it no longer
/// has, and its finish is refused; nothing was stored.
#[test]
fn kill_9_of_the_repaired_member_after_deal_changes_nothing() {
    let mut lab = Lab::approved(34);
    let mut steps = Steps::new(2);
    steps.open(&lab);
    steps.deal(&lab);
    lab.restart(LOST, |_| {});
    steps.sum(&lab);
    let err = steps.finish(&lab).unwrap_err();
    assert_eq!(code(&err), "repair_not_in_phase");
    // Each helper's sum used its approval up: a new repair needs new ones.
    recovers(&mut lab, &HELPERS);
}

/// Boundary: sum done. A helper killed there has already sent its sum:
/// the repair completes without it.
#[test]
fn kill_9_of_a_helper_after_sum_still_completes() {
    let mut lab = Lab::approved(35);
    let mut steps = Steps::new(3);
    steps.open(&lab);
    steps.deal(&lab);
    steps.sum(&lab);
    lab.cluster.local.kill(seat(2)).unwrap();
    assert!(matches!(
        steps.finish(&lab).unwrap(),
        RepairResponse::Repaired { .. }
    ));
    lab.restart(2, |_| {});
    lab.signs_without(2, 0x13);
}

/// Boundary: finish done. The repaired member killed right after its
/// finish answered comes back with its share (the commit was durable).
#[test]
fn kill_9_of_the_repaired_member_after_finish_keeps_the_share() {
    let mut lab = Lab::approved(36);
    let mut steps = Steps::new(4);
    steps.open(&lab);
    steps.deal(&lab);
    steps.sum(&lab);
    steps.finish(&lab).unwrap();
    lab.restart(LOST, |_| {});
    assert_eq!(lab.state(LOST), "active");
    lab.signs_without(2, 0x14);
}

/// The coordinator dies after the deal (it keeps no state): every member
/// is as it was, and a new repair under the same approvals completes.
#[test]
fn the_coordinator_dying_after_deal_changes_nothing() {
    let mut lab = Lab::approved(37);
    let mut steps = Steps::new(5);
    steps.open(&lab);
    steps.deal(&lab);
    drop(steps);
    recovers(&mut lab, &[]);
}

/// Boundary: join done. The member being repaired killed there loses its
/// per-session key: the helpers deal and sum, but its finish is refused;
/// nothing stored.
#[test]
fn kill_9_of_the_repaired_member_after_join_changes_nothing() {
    let mut lab = Lab::approved(41);
    let mut steps = Steps::new(11);
    steps.open(&lab);
    lab.restart(LOST, |_| {});
    steps.deal(&lab);
    steps.sum(&lab);
    let err = steps.finish(&lab).unwrap_err();
    assert_eq!(code(&err), "repair_not_in_phase");
    recovers(&mut lab, &HELPERS);
}

/// Boundary: deal done. A helper killed there loses its per-session key
/// (and its approval): its sum is refused, nothing changed.
#[test]
fn kill_9_of_a_helper_after_deal_changes_nothing() {
    let mut lab = Lab::approved(42);
    let mut steps = Steps::new(12);
    steps.open(&lab);
    steps.deal(&lab);
    lab.restart(2, |_| {});
    let err = lab
        .step(
            2,
            RepairRequest::Sum {
                session: steps.session.clone(),
                joined: steps.joined.clone().unwrap(),
                dealt: steps.dealt.clone(),
            },
        )
        .unwrap_err();
    assert_eq!(code(&err), "repair_not_in_phase");
    recovers(&mut lab, &[2]);
}

/// The coordinator dies after join and open: every member is as it was,
/// and a new repair under the same approvals completes.
#[test]
fn the_coordinator_dying_after_open_changes_nothing() {
    let mut lab = Lab::approved(43);
    let mut steps = Steps::new(13);
    steps.open(&lab);
    drop(steps);
    recovers(&mut lab, &[]);
}

/// The coordinator dies after the sum: nothing is stored; the helpers'
/// sums used their approvals up, so a new repair needs new ones.
#[test]
fn the_coordinator_dying_after_sum_changes_nothing() {
    let mut lab = Lab::approved(44);
    let mut steps = Steps::new(14);
    steps.open(&lab);
    steps.deal(&lab);
    steps.sum(&lab);
    drop(steps);
    recovers(&mut lab, &HELPERS);
}

/// The coordinator dies once it sent the finish, before it reads the
/// reply: the repaired member checked and stored its share, is active and
/// signs; a retried finish answers `Repaired` again.
#[test]
fn the_coordinator_dying_at_finish_leaves_the_repair_complete() {
    let mut lab = Lab::approved(45);
    let mut steps = Steps::new(15);
    steps.open(&lab);
    steps.deal(&lab);
    steps.sum(&lab);
    drop(steps.finish(&lab));
    assert!(matches!(
        steps.finish(&lab).unwrap(),
        RepairResponse::Repaired { .. }
    ));
    assert_eq!(lab.state(LOST), "active");
    lab.signs_without(2, 0x15);
}

/// Replacing member [`LOST`]'s machine: a new store with a new identity key
/// and a new TLS key, which every member's configuration then names for the
/// seat. The repair onto the new key completes, and the new machine signs.
#[test]
fn a_replaced_machine_is_repaired_onto_its_new_identity_key_and_signs() {
    let mut lab = Lab::new(38);
    let old = &lab.cluster.local.members()[usize::from(LOST) - 1];
    let (old_dir, old_identity, old_pin) = (
        old.dir.clone(),
        hex::encode(old.identity.to_bytes()),
        hex::encode(old.tls_key_sha256),
    );
    let cluster_dir = old_dir.parent().unwrap().to_path_buf();
    // The new machine, provisioned from the cluster's CA.
    let ca = thresig_daemon::ClusterCa::load(
        thresig_daemon::ClusterName::new("test".to_owned()).unwrap(),
        &cluster_dir.join("ca/ca.pem"),
        &cluster_dir.join("ca/ca.key"),
    )
    .unwrap();
    let fresh = lab.work.path().join("new-machine");
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(0x5eed_0038);
    let new = thresig_cluster::provision::init_member(
        &fresh,
        seat(LOST),
        &ca,
        std::time::SystemTime::now(),
        &mut rng,
    )
    .unwrap();
    let (new_identity, new_pin) = (
        hex::encode(new.identity.to_bytes()),
        hex::encode(new.tls_key_sha256),
    );
    // The old machine is gone; the new one takes its place (same path).
    lab.cluster.local.kill(seat(LOST)).unwrap();
    for part in ["store", "tls"] {
        std::fs::remove_dir_all(old_dir.join(part)).unwrap();
        copy_dir(&fresh.join(part), &old_dir.join(part));
    }
    std::fs::copy(fresh.join("kek"), old_dir.join("kek")).unwrap();
    // Every member's configuration names the seat's new keys.
    for member in 1..=3 {
        let path = lab.cluster.config_path(seat(member));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&old_identity) && text.contains(&old_pin));
        std::fs::write(
            &path,
            text.replace(&old_identity, &new_identity)
                .replace(&old_pin, &new_pin),
        )
        .unwrap();
    }
    for member in 1..=3 {
        lab.restart(member, |_| {});
    }
    assert_eq!(lab.state(LOST), "dkg_pending");
    lab.approve(1);
    lab.approve(2);
    let out = lab.repair();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.state(LOST), "active");
    lab.signs_without(2, 0x15);
}

/// User plus system CPU of process `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap();
    ticks as f64 / per_second as f64
}

/// A 51-of-100 wallet over 100 signer processes: the member at seat 100
/// loses its disk and 51 helpers repair it. Prints the repair's wall time
/// and the CPU all signers spent on it (docs/BENCHMARKS.md). Minutes of
/// work on two cores, so ignored by default:
/// `cargo test --release -p thresig --test repair -- --ignored --nocapture`
#[test]
#[ignore = "a 100-process cluster: minutes of CPU"]
fn repair_of_a_51_of_100_wallet_completes() {
    const N: u16 = 100;
    let mut cluster = ProcessCluster::provision(N, 51, &[], 51);
    let before_dkg = tempfile::tempdir().unwrap();
    copy_dir(&Lab::store_of(&cluster, N), before_dkg.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    cluster.start_all(&runtime);
    let configs: Vec<String> = (1..=N)
        .map(|m| cluster.config_path(seat(m)).to_str().unwrap().to_owned())
        .collect();
    let config = |m: u16| configs[usize::from(m) - 1].clone();
    let started = std::time::Instant::now();
    dkg(&cluster.config_path(seat(1)), WALLET);
    eprintln!("dkg: {:.1} s wall", started.elapsed().as_secs_f64());
    cluster.local.kill(seat(N)).unwrap();
    let store = Lab::store_of(&cluster, N);
    std::fs::remove_dir_all(&store).unwrap();
    copy_dir(before_dkg.path(), &store);
    cluster.local.start(seat(N)).unwrap();
    runtime.block_on(wait_ready(&cluster.peers(seat(1)), seat(N)));
    for helper in 1..=51 {
        let out = thresig(&[
            "repair",
            "approve",
            "--config",
            &config(helper),
            "--wallet",
            WALLET,
            "--member",
            "100",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let pids: Vec<u32> = (1..=N).filter_map(|m| cluster.local.pid(seat(m))).collect();
    let cpu_before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let started = std::time::Instant::now();
    let out = thresig(&[
        "repair",
        "--config",
        &config(1),
        "--wallet",
        WALLET,
        "--member",
        "100",
        "--json",
    ]);
    let wall = started.elapsed();
    let cpu: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu_before;
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!(
        "repair/51-of-100: {:.2} s wall, {cpu:.2} s signer CPU (all 100 signers)",
        wall.as_secs_f64()
    );
}

/// A malicious coordinator over the network: it opens a repair with
/// helpers {1, 2}, then asks helper 1 to deal for another helper set, or
/// for another lost seat. Refused, nothing dealt, nothing changed.
#[test]
fn a_coordinator_that_changes_the_repair_between_steps_is_refused_over_the_network() {
    let mut lab = Lab::approved(39);
    let mut steps = Steps::new(6);
    steps.open(&lab);
    let mut other_lost = steps.session.clone();
    other_lost.lost = seat(2);
    other_lost.helpers = vec![seat(1), seat(3)];
    let mut other_nonce = steps.session.clone();
    other_nonce.nonce = [9; 32];
    // An approval names its seat: another lost seat is not approved; the
    // approved seat under another session is not the one opened.
    for (changed, expected) in [
        (other_lost, "repair_not_approved"),
        (other_nonce, "repair_not_in_phase"),
    ] {
        let err = lab
            .step(
                1,
                RepairRequest::Deal {
                    session: changed,
                    opened: steps.opened.clone(),
                },
            )
            .unwrap_err();
        assert_eq!(code(&err), expected, "{err}");
    }
    recovers(&mut lab, &[]);
}
