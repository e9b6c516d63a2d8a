//! `thresig refresh` end to end over real signer processes on loopback:
//! the wallet keeps its output key and signs at the next epoch (checked by
//! libbitcoinconsensus), a removal must be in every member's own
//! configuration, and an offline member fails the refresh with nobody
//! switched; a removed member's old share does not sign with a new one;
//! kill -9 at each step boundary, including inside the DEK rotation a
//! switch leaves due (docs/lifecycle.md lists the boundaries).

mod common;
#[path = "../../engine/tests/shared/removed_share.rs"]
mod removed_share;

use std::collections::BTreeMap;

use bitcoin::Transaction;
use bitcoin::consensus::encode::deserialize_hex;
use common::{Made, ProcessCluster, WALLET, dkg, json, seat, self_payment, thresig};
use thresig_cluster::node::wall_clock;
use thresig_consensus::verify_with_core;
use thresig_crypto::Seat;
use thresig_engine::{
    DkgKind, DkgPayload, DkgProposal, DkgSessionId, SignedDkgMessage, WalletEpoch, WalletId,
};

/// A 2-of-3 cluster, started, with its wallet made by a DKG.
fn keyed(seed: u64) -> (ProcessCluster, tokio::runtime::Runtime, Made) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[], seed);
    cluster.start_all(&runtime);
    let made = dkg(&cluster.config_path(seat(1)), WALLET);
    (cluster, runtime, made)
}

/// `thresig refresh` from seat 1's configuration with `extra` arguments.
fn refresh(cluster: &ProcessCluster, extra: &[&str]) -> std::process::Output {
    let config = cluster.config_path(seat(1));
    let mut args = vec![
        "refresh",
        "--config",
        config.to_str().unwrap(),
        "--wallet",
        WALLET,
        "--json",
    ];
    args.extend_from_slice(extra);
    thresig(&args)
}

/// Each member's (state, epoch) of the wallet, as `thresig status` shows it.
fn states(cluster: &ProcessCluster) -> Vec<(String, Option<u64>)> {
    status(cluster)["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let wallet = &m["wallets"][0];
            (
                wallet["state"].as_str().unwrap_or("unreachable").to_owned(),
                wallet["epoch"].as_u64(),
            )
        })
        .collect()
}

/// Signs a payment of the wallet back to itself through `thresig sign`
/// and checks the transaction with libbitcoinconsensus.
fn signs_and_consensus_accepts(cluster: &ProcessCluster, made: &Made, byte: u8) {
    let dir = tempfile::tempdir().unwrap();
    let psbt = self_payment(dir.path(), made, byte);
    let signed = common::sign_report(&cluster.config_path(seat(1)), &psbt);
    let tx_hex = std::fs::read_to_string(signed["tx"].as_str().unwrap()).unwrap();
    let tx: Transaction = deserialize_hex(tx_hex.trim()).unwrap();
    let prevout = bitcoin::TxOut {
        value: bitcoin::Amount::from_sat(60_000),
        script_pubkey: bitcoin::ScriptBuf::from_bytes(
            hex::decode(format!("5120{}", made.output_key)).unwrap(),
        ),
    };
    verify_with_core(&tx, &[prevout]).unwrap();
}

/// Adds `remove = [..]` to the wallet of `seat`'s configuration and
/// restarts that member (an operator's approval of the removal).
fn approve_removal(
    cluster: &mut ProcessCluster,
    at: Seat,
    removed: &[u16],
    runtime: &tokio::runtime::Runtime,
) {
    let path = cluster.config_path(at);
    let text = std::fs::read_to_string(&path).unwrap();
    let list: Vec<String> = removed.iter().map(u16::to_string).collect();
    let edited = text.replacen(
        "[[wallets]]\n",
        &format!("[[wallets]]\nremove = [{}]\n", list.join(", ")),
        1,
    );
    assert_ne!(edited, text, "no [[wallets]] table in {}", path.display());
    std::fs::write(&path, edited).unwrap();
    restart(cluster, at, runtime);
}

fn restart(cluster: &mut ProcessCluster, at: Seat, runtime: &tokio::runtime::Runtime) {
    cluster.local.stop(at).unwrap();
    cluster.local.start(at).unwrap();
    let peers = cluster.peers(seat(1));
    runtime.block_on(common::wait_ready(&peers, at));
}

/// Every member reports the wallet in `state` at `epoch`.
fn all_at(cluster: &ProcessCluster, state: &str, epoch: u64) {
    for member in states(cluster) {
        assert_eq!((member.0.as_str(), member.1), (state, Some(epoch)));
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_refresh_keeps_the_output_key_and_the_wallet_signs_at_the_next_epoch() {
    let (cluster, _runtime, made) = keyed(71);
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["wallet"], WALLET);
    assert_eq!(report["output_key"], made.output_key.as_str());
    assert_eq!(report["epoch"], 1);
    all_at(&cluster, "active", 1);
    signs_and_consensus_accepts(&cluster, &made, 0x21);
    // A second refresh moves on again.
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    signs_and_consensus_accepts(&cluster, &made, 0x22);
}

#[test]
fn an_offline_member_fails_the_refresh_and_nobody_switches() {
    let (mut cluster, _runtime, made) = keyed(72);
    assert!(cluster.local.stop(seat(3)).unwrap());
    let out = refresh(&cluster, &[]);
    assert_ne!(out.status.code(), Some(0));
    let states = states(&cluster);
    for state in &states[..2] {
        assert_eq!(
            (state.0.as_str(), state.1),
            ("active", Some(0)),
            "{states:?}"
        );
    }
    signs_and_consensus_accepts(&cluster, &made, 0x23);
}

#[test]
fn a_removal_must_be_in_every_members_configuration() {
    let (mut cluster, runtime, made) = keyed(73);
    // Not in seat 1's own configuration: refused before anything runs.
    let out = refresh(&cluster, &["--remove", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("`remove`"), "{}", stderr(&out));
    // In seat 1's configuration only: seat 2 refuses the proposal.
    approve_removal(&mut cluster, seat(1), &[3], &runtime);
    let out = refresh(&cluster, &["--remove", "3"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("dkg_mismatch"), "{}", stderr(&out));
    all_at(&cluster, "active", 0);
    // Approved on seat 2 as well (seat 3, removed, takes no part): done,
    // and the wallet signs with the remaining members alone.
    approve_removal(&mut cluster, seat(2), &[3], &runtime);
    let out = refresh(&cluster, &["--remove", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["output_key"], made.output_key.as_str());
    assert_eq!(report["epoch"], 1);
    let states = states(&cluster);
    assert_eq!(states[0], ("active".to_owned(), Some(1)));
    assert_eq!(states[1], ("active".to_owned(), Some(1)));
    // The removed member still holds its old share at epoch 0, which no
    // longer signs with the others: the run completes with seats 1 and 2.
    assert_eq!(states[2].1, Some(0), "{states:?}");
    signs_and_consensus_accepts(&cluster, &made, 0x24);
}

/// Where a step-by-step refresh (this test as its coordinator, seat 1)
/// stops for a kill -9.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// Every member answered part 1.
    Part1,
    /// Every member answered part 2.
    Part2,
    /// Member 1 stored its pending shares; members 2 and 3 never got their
    /// part 3.
    Part3OnOne,
    /// Members 1 and 2 stored their pending shares; member 3 never got
    /// its part 3.
    Part3OnTwo,
    /// Every member stored its pending shares (part 3).
    Part3,
    /// Members 1 and 2 switched; member 3 has not had its confirmations.
    Confirmed,
}

/// A refresh of epoch 0 run step by step from seat 1 up to `until`.
struct Stepped {
    proposal: DkgProposal,
    /// The confirmations the members released at part 3.
    confirmations: Vec<SignedDkgMessage>,
    /// The part-3 messages of each member that did not run part 3.
    unfinished: BTreeMap<Seat, Vec<SignedDkgMessage>>,
}

fn wallet_id() -> WalletId {
    WalletId::new(WALLET.to_owned()).unwrap()
}

fn step_to(cluster: &ProcessCluster, runtime: &tokio::runtime::Runtime, until: Step) -> Stepped {
    let node = cluster.node(seat(1));
    let peers = cluster.peers(seat(1));
    let wallet = node.wallet(&wallet_id()).unwrap().clone();
    let proposal = DkgProposal::new(
        DkgSessionId([0x5e; 32]),
        wallet_id(),
        wallet.config.threshold,
        wallet.config.roster.clone(),
    )
    .with_kind(DkgKind::Refresh {
        from_epoch: WalletEpoch(0),
        removed: Vec::new(),
    });
    let session = proposal.session;
    runtime.block_on(async {
        let client = |s: Seat| {
            let peers = peers.clone();
            async move { peers.client(s).await.unwrap() }
        };
        let seats = cluster.seats();
        let mut round1 = Vec::new();
        for s in &seats {
            round1.push(client(*s).await.dkg_start(proposal.clone()).await.unwrap());
        }
        let mut confirmations = Vec::new();
        let mut inbox: BTreeMap<Seat, Vec<SignedDkgMessage>> = BTreeMap::new();
        if until >= Step::Part2 {
            for s in &seats {
                let others = round1.iter().filter(|m| m.sender != *s).cloned().collect();
                let out = client(*s)
                    .await
                    .dkg_round2(wallet_id(), session, others)
                    .await
                    .unwrap();
                for m in out {
                    if let DkgPayload::Round2 { to, .. } = &m.payload {
                        inbox.entry(*to).or_default().push(m);
                    }
                }
            }
            if until >= Step::Part3OnOne {
                let finishing: &[u16] = match until {
                    Step::Part3OnOne => &[1],
                    Step::Part3OnTwo => &[1, 2],
                    _ => &[1, 2, 3],
                };
                for s in seats.iter().filter(|s| finishing.contains(&s.get())) {
                    let mine = inbox.remove(s).unwrap();
                    confirmations.push(
                        client(*s)
                            .await
                            .dkg_finish(wallet_id(), session, mine)
                            .await
                            .unwrap(),
                    );
                }
            }
        }
        if until >= Step::Confirmed {
            for s in [seat(1), seat(2)] {
                for m in &confirmations {
                    client(s)
                        .await
                        .dkg_confirm(wallet_id(), m.clone())
                        .await
                        .unwrap();
                }
            }
        }
        Stepped {
            proposal,
            confirmations,
            unfinished: inbox,
        }
    })
}

/// Kills member 3 with SIGKILL and starts it again over the same store.
fn kill_and_restart(cluster: &mut ProcessCluster, runtime: &tokio::runtime::Runtime) {
    kill_and_restart_seats(cluster, runtime, &[3]);
}

/// Kills `seats` with SIGKILL and starts them again over the same stores.
fn kill_and_restart_seats(
    cluster: &mut ProcessCluster,
    runtime: &tokio::runtime::Runtime,
    seats: &[u16],
) {
    let peers = cluster.peers(seat(1));
    for s in seats {
        cluster.local.kill(seat(*s)).unwrap();
        cluster.local.start(seat(*s)).unwrap();
        runtime.block_on(common::wait_ready(&peers, seat(*s)));
    }
}

/// The coordinator (member 1) cancels the stepped session at members 2
/// and 3, as a failed run does (until then they still run it and may yet
/// release, so `--abort` asks nobody for a veto); then `thresig refresh
/// --abort SESSION` succeeds on the vetoes of members 2 and 3, and member
/// 1 discards its pending result; the report.
fn aborted_on_the_vetoes_of_2_and_3(
    cluster: &ProcessCluster,
    runtime: &tokio::runtime::Runtime,
    run: &Stepped,
) -> serde_json::Value {
    cancel_at(cluster, runtime, run, &[2, 3]);
    let session = hex::encode(run.proposal.session.0);
    let out = refresh(cluster, &["--abort", &session]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["abandoned_by"], serde_json::json!([2, 3]));
    assert_eq!(report["discarded"], serde_json::json!([1]));
    report
}

/// `thresig refresh --resume` of the stepped session finishes it: every
/// member at epoch 1, the output key unchanged.
fn resumed(cluster: &ProcessCluster, run: &Stepped) {
    let session = hex::encode(run.proposal.session.0);
    let out = refresh(cluster, &["--resume", &session]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["epoch"], 1);
    all_at(cluster, "active", 1);
}

/// Tells every member to drop the session, as the driver does when a run
/// fails.
fn cancel_all(cluster: &ProcessCluster, runtime: &tokio::runtime::Runtime, run: &Stepped) {
    let seats: Vec<u16> = cluster.seats().iter().map(|s| s.get()).collect();
    cancel_at(cluster, runtime, run, &seats);
}

/// Tells members `seats` to drop the session.
fn cancel_at(
    cluster: &ProcessCluster,
    runtime: &tokio::runtime::Runtime,
    run: &Stepped,
    seats: &[u16],
) {
    let peers = cluster.peers(seat(1));
    runtime.block_on(async {
        for s in seats {
            let client = peers.client(seat(*s)).await.unwrap();
            client
                .dkg_cancel(wallet_id(), run.proposal.session)
                .await
                .unwrap();
        }
    });
}

/// A member killed after part 1 or 2 lost the session (memory only): the
/// run cannot go on, every member stays on epoch 0 and signs, and once
/// the run is cancelled a new refresh completes.
fn killed_before_part3_aborts(step: Step, seed: u64) {
    let (mut cluster, runtime, made) = keyed(seed);
    let run = step_to(&cluster, &runtime, step);
    kill_and_restart(&mut cluster, &runtime);
    let peers = cluster.peers(seat(1));
    let refused = runtime.block_on(async {
        let client = peers.client(seat(3)).await.unwrap();
        client
            .dkg_round2(wallet_id(), run.proposal.session, Vec::new())
            .await
            .unwrap_err()
    });
    assert!(
        refused.to_string().contains("dkg_not_in_phase"),
        "{refused}"
    );
    cancel_all(&cluster, &runtime, &run);
    all_at(&cluster, "active", 0);
    signs_and_consensus_accepts(&cluster, &made, 0x31);
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    signs_and_consensus_accepts(&cluster, &made, 0x32);
}

#[test]
fn kill_9_of_a_member_after_part_1_aborts_the_refresh_with_nobody_switched() {
    killed_before_part3_aborts(Step::Part1, 81);
}

#[test]
fn kill_9_of_a_member_after_part_2_aborts_the_refresh_with_nobody_switched() {
    killed_before_part3_aborts(Step::Part2, 82);
}

/// Member 3 killed at `step` (from part 3 on) comes back `refreshing` at
/// epoch 0; the wallet signs meanwhile (with the old epoch, or with the
/// members that switched), and `thresig refresh --resume` finishes the
/// refresh on every member.
fn killed_from_part3_switches_on_resume(step: Step, seed: u64) {
    let (mut cluster, runtime, made) = keyed(seed);
    let run = step_to(&cluster, &runtime, step);
    kill_and_restart(&mut cluster, &runtime);
    assert_eq!(states(&cluster)[2], ("refreshing".to_owned(), Some(0)));
    // The release and the confirmations it counted survive the kill.
    let refresh = &status(&cluster)["members"][2]["wallets"][0]["refresh"];
    assert_eq!(refresh["released"], true, "{refresh}");
    signs_and_consensus_accepts(&cluster, &made, 0x33);
    resumed(&cluster, &run);
    signs_and_consensus_accepts(&cluster, &made, 0x34);
}

#[test]
fn kill_9_of_a_member_after_part_3_comes_back_refreshing_and_switches_on_resume() {
    killed_from_part3_switches_on_resume(Step::Part3, 83);
}

/// Two members switched before member 3 was killed.
#[test]
fn kill_9_of_a_member_during_the_confirmations_switches_it_on_resume() {
    killed_from_part3_switches_on_resume(Step::Confirmed, 84);
}

/// The coordinator dies after part 3 (its confirmations lost with it):
/// every member keeps signing at epoch 0, and `thresig refresh --resume`
/// of the session (run from any member) collects each member's
/// confirmation again and finishes the refresh.
#[test]
fn a_coordinator_lost_after_part_3_leaves_the_old_epoch_signing_and_the_refresh_resumable() {
    let (cluster, runtime, made) = keyed(85);
    let run = step_to(&cluster, &runtime, Step::Part3);
    all_at(&cluster, "refreshing", 0);
    signs_and_consensus_accepts(&cluster, &made, 0x37);
    resumed(&cluster, &run);
    signs_and_consensus_accepts(&cluster, &made, 0x38);
}

/// `thresig status --json` from seat 1's configuration.
fn status(cluster: &ProcessCluster) -> serde_json::Value {
    let config = cluster.config_path(seat(1));
    json(&["status", "--config", config.to_str().unwrap()], 0)
}

/// The coordinator sends part 3 to member 1 only and dies: member 1 holds
/// the result pending (it released its confirmation), members 2 and 3
/// never released theirs, so `--resume` cannot finish it. `thresig
/// refresh --abort` collects the vetoes of members 2 and 3 (the
/// threshold) and member 1 discards its pending shares on them: every
/// member is active at epoch 0 again, signs, and a new refresh completes.
#[test]
fn a_refresh_stuck_after_part_3_on_one_member_is_aborted_and_a_new_one_completes() {
    let (cluster, runtime, made) = keyed(86);
    let run = step_to(&cluster, &runtime, Step::Part3OnOne);
    let held = states(&cluster);
    assert_eq!(held[0], ("refreshing".to_owned(), Some(0)), "{held:?}");
    assert_eq!(held[1], ("active".to_owned(), Some(0)), "{held:?}");
    let session = hex::encode(run.proposal.session.0);
    // `thresig status` names the session, the confirmations each member
    // holds, and whether it released its own.
    let status = status(&cluster);
    for (i, member) in status["members"].as_array().unwrap().iter().enumerate() {
        let refresh = &member["wallets"][0]["refresh"];
        assert_eq!(refresh["session"], session.as_str(), "{status}");
        assert_eq!(refresh["released"], i == 0, "{status}");
        if i == 0 {
            assert_eq!(refresh["confirmed"], serde_json::json!([1]), "{status}");
        }
    }
    let stuck = refresh(&cluster, &["--resume", &session]);
    assert_ne!(stuck.status.code(), Some(0));
    // A resume that cannot finish says, as a failed run does, how to
    // finish or abandon the refresh, with its session.
    let said = stderr(&stuck);
    assert!(
        said.contains(&format!("--resume {session}"))
            && said.contains(&format!("--abort {session}")),
        "{said}"
    );
    aborted_on_the_vetoes_of_2_and_3(&cluster, &runtime, &run);
    all_at(&cluster, "active", 0);
    signs_and_consensus_accepts(&cluster, &made, 0x39);
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    all_at(&cluster, "active", 1);
    signs_and_consensus_accepts(&cluster, &made, 0x3a);
}

/// The coordinator sends part 3 to members 1 and 2 only and stalls: both
/// released their confirmation, and only member 3 never did. One member
/// that never released is fewer than the threshold (2), so `--abort` asks
/// nobody for a veto, discards nothing and says to use `--resume`: members
/// 1 and 2 keep their pending shares and the wallet signs at epoch 0 with
/// them. Member 3 still holds its session, so the coordinator's late part
/// 3 reaches it and `--resume` finishes the refresh.
#[test]
fn a_refresh_stuck_after_part_3_on_two_members_is_kept_and_resumes_after_a_late_part_3() {
    let (cluster, runtime, made) = keyed(88);
    let run = step_to(&cluster, &runtime, Step::Part3OnTwo);
    let session = hex::encode(run.proposal.session.0);
    let out = refresh(&cluster, &["--abort", &session]);
    // Terminal: member 3, running the session, may yet release, but its
    // veto alone could never be the threshold.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--resume"), "{}", stderr(&out));
    let held = states(&cluster);
    assert_eq!(held[0], ("refreshing".to_owned(), Some(0)), "{held:?}");
    assert_eq!(held[1], ("refreshing".to_owned(), Some(0)), "{held:?}");
    signs_and_consensus_accepts(&cluster, &made, 0x3b);
    let peers = cluster.peers(seat(1));
    runtime.block_on(async {
        let third = peers.client(seat(3)).await.unwrap();
        let late = run.unfinished[&seat(3)].clone();
        third
            .dkg_finish(wallet_id(), run.proposal.session, late)
            .await
            .unwrap();
    });
    resumed(&cluster, &run);
}

/// 2-of-3: part 3 reached members 1 and 2, which released, and member 3,
/// which never got its part 3, is killed. Even back (its session lost,
/// it would veto), member 3 alone is fewer than the threshold, so no
/// `--abort` can ever discard the refresh: it exits 1 (terminal), names
/// no member to wait for, and says what can finish it.
#[test]
fn an_abort_that_no_member_out_of_reach_can_complete_is_terminal() {
    let (mut cluster, runtime, _) = keyed(101);
    let run = step_to(&cluster, &runtime, Step::Part3OnTwo);
    cluster.local.kill(seat(3)).unwrap();
    let session = hex::encode(run.proposal.session.0);
    let out = refresh(&cluster, &["--abort", &session]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("refresh abort: ") && said.contains("--resume") && said.contains("rekey"),
        "{said}"
    );
    assert!(!said.contains("run --abort again"), "{said}");
    let held = states(&cluster);
    assert_eq!(held[0], ("refreshing".to_owned(), Some(0)), "{held:?}");
    assert_eq!(held[1], ("refreshing".to_owned(), Some(0)), "{held:?}");
}

/// 2-of-3: part 3 reached member 1 only and its coordinator died; member
/// 2 dropped the session, member 3 is down. Member 2's veto alone is fewer
/// than the threshold, but with member 3's it is enough: `--abort` exits 2
/// (retryable) naming member 3, and run again once member 3 is back (its
/// session lost in the restart) it discards the refresh at member 1.
#[test]
fn an_abort_missing_a_member_out_of_reach_is_retryable_and_completes_once_it_is_back() {
    let (mut cluster, runtime, made) = keyed(102);
    let run = step_to(&cluster, &runtime, Step::Part3OnOne);
    cancel_at(&cluster, &runtime, &run, &[2]);
    cluster.local.kill(seat(3)).unwrap();
    let session = hex::encode(run.proposal.session.0);
    let out = refresh(&cluster, &["--abort", &session]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("refresh abort: member 3") && said.contains("run --abort again"),
        "{said}"
    );
    cluster.local.start(seat(3)).unwrap();
    runtime.block_on(common::wait_ready(&cluster.peers(seat(1)), seat(3)));
    let out = refresh(&cluster, &["--abort", &session]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["abandoned_by"], serde_json::json!([2, 3]));
    assert_eq!(report["discarded"], serde_json::json!([1]));
    all_at(&cluster, "active", 0);
    signs_and_consensus_accepts(&cluster, &made, 0x43);
}

/// 2-of-4: the coordinator sends part 3 to member 1 only and dies, and
/// member 4 is down. `--abort` needs no answer from it: the vetoes of
/// members 2 and 3 are the threshold, member 1 discards on them, and the
/// report names member 4 as missed. Back up, member 4 (its session lost
/// in the restart) is active at epoch 0 too, and a new refresh completes.
#[test]
fn an_abort_skips_a_member_that_is_down_when_the_others_vetoes_suffice() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(4, 2, &[], 92);
    cluster.start_all(&runtime);
    let made = dkg(&cluster.config_path(seat(1)), WALLET);
    let run = step_to(&cluster, &runtime, Step::Part3OnOne);
    cluster.local.stop(seat(4)).unwrap();
    let report = aborted_on_the_vetoes_of_2_and_3(&cluster, &runtime, &run);
    assert_eq!(report["missed"], serde_json::json!([4]));
    cluster.local.start(seat(4)).unwrap();
    runtime.block_on(common::wait_ready(&cluster.peers(seat(1)), seat(4)));
    all_at(&cluster, "active", 0);
    signs_and_consensus_accepts(&cluster, &made, 0x3f);
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    all_at(&cluster, "active", 1);
}

/// The split the old veto rule allowed, over the network: every member
/// released its confirmation; the coordinator switches member 1, then asks
/// member 2 for a veto. Member 2 refuses (`refresh_confirmed`) and keeps
/// its pending shares, so `--abort` discards nothing; member 2 is killed
/// and restarted, and `--resume`, gathering the confirmations member 1
/// stored, switches members 2 and 3; the wallet signs at epoch 1.
#[test]
fn a_released_member_refuses_to_veto_over_the_network_and_resume_switches_it() {
    let (mut cluster, runtime, made) = keyed(91);
    let run = step_to(&cluster, &runtime, Step::Part3);
    let peers = cluster.peers(seat(1));
    let refused = runtime.block_on(async {
        let first = peers.client(seat(1)).await.unwrap();
        for m in &run.confirmations {
            first.dkg_confirm(wallet_id(), m.clone()).await.unwrap();
        }
        let second = peers.client(seat(2)).await.unwrap();
        second
            .refresh_abandon(wallet_id(), run.proposal.session)
            .await
            .unwrap_err()
    });
    assert!(
        refused.to_string().contains("refresh_confirmed"),
        "{refused}"
    );
    let session = hex::encode(run.proposal.session.0);
    let out = refresh(&cluster, &["--abort", &session]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let held = states(&cluster);
    assert_eq!(held[0], ("active".to_owned(), Some(1)), "{held:?}");
    assert_eq!(held[1], ("refreshing".to_owned(), Some(0)), "{held:?}");
    cluster.local.kill(seat(2)).unwrap();
    cluster.local.start(seat(2)).unwrap();
    runtime.block_on(common::wait_ready(&peers, seat(2)));
    resumed(&cluster, &run);
    signs_and_consensus_accepts(&cluster, &made, 0x3e);
}

/// The coordinator dies after part 1 or 2 (the test, coordinating from
/// seat 1, stops there): no member released its confirmation, every
/// member keeps signing at epoch 0, and the session held in memory would
/// block a new refresh until it expires. While the members still run it,
/// `thresig refresh --abort` asks nobody for a veto (a late part 3 could
/// still reach them) and says to wait; once the coordinator's cancel has
/// dropped the sessions, it gets every member's veto, and a new refresh
/// completes at once.
fn coordinator_lost_before_part3(step: Step, seed: u64) {
    let (cluster, runtime, made) = keyed(seed);
    let run = step_to(&cluster, &runtime, step);
    all_at(&cluster, "active", 0);
    signs_and_consensus_accepts(&cluster, &made, 0x3c);
    let session = hex::encode(run.proposal.session.0);
    let out = refresh(&cluster, &["--abort", &session]);
    // Retryable: once the sessions end, every member can veto.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dkg_session_ttl_secs"),
        "{}",
        stderr(&out)
    );
    cancel_all(&cluster, &runtime, &run);
    let out = refresh(&cluster, &["--abort", &session]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["abandoned_by"], serde_json::json!([1, 2, 3]));
    assert_eq!(report["discarded"], serde_json::json!([]));
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    all_at(&cluster, "active", 1);
    signs_and_consensus_accepts(&cluster, &made, 0x3d);
}

#[test]
fn a_coordinator_lost_after_part_1_is_aborted_on_every_veto_and_a_new_refresh_completes() {
    coordinator_lost_before_part3(Step::Part1, 89);
}

#[test]
fn a_coordinator_lost_after_part_2_is_aborted_on_every_veto_and_a_new_refresh_completes() {
    coordinator_lost_before_part3(Step::Part2, 90);
}

/// A 51-of-100 wallet refreshed in a local cluster of 100 signer
/// processes. Ignored for its length (a 100-member DKG and refresh on two
/// cores); run it alone, timed (docs/BENCHMARKS.md):
/// `cargo build -p thresig && /usr/bin/time cargo test -p thresig --test refresh -- --ignored --nocapture`.
#[test]
#[ignore = "100 signer processes: minutes on two cores"]
fn a_fifty_one_of_a_hundred_wallet_refreshes_in_a_local_cluster() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(100, 51, &[], 86);
    cluster.start_all(&runtime);
    let made = dkg(&cluster.config_path(seat(1)), WALLET);
    let started = std::time::Instant::now();
    let out = refresh(&cluster, &[]);
    eprintln!(
        "refresh 51-of-100: {:.1} s wall",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["output_key"], made.output_key.as_str());
    assert_eq!(report["epoch"], 1);
    signs_and_consensus_accepts(&cluster, &made, 0x41);
}

/// A malicious coordinator over the network: it proposes a refresh that
/// removes seat 3, which no member's configuration approves, to split the
/// group. Every member refuses it (`dkg_mismatch`) before doing anything,
/// and the wallet keeps signing at epoch 0.
#[test]
fn members_refuse_a_removal_their_configuration_does_not_approve_over_the_network() {
    let (cluster, runtime, made) = keyed(87);
    let node = cluster.node(seat(1));
    let wallet = node.wallet(&wallet_id()).unwrap().clone();
    let proposal = DkgProposal::new(
        DkgSessionId([0x6d; 32]),
        wallet_id(),
        wallet.config.threshold,
        wallet.config.roster.clone(),
    )
    .with_kind(DkgKind::Refresh {
        from_epoch: WalletEpoch(0),
        removed: vec![seat(3)],
    });
    let peers = cluster.peers(seat(1));
    runtime.block_on(async {
        for s in cluster.seats() {
            let client = peers.client(s).await.unwrap();
            let refused = client.dkg_start(proposal.clone()).await.unwrap_err();
            assert!(
                refused.to_string().contains("dkg_mismatch"),
                "seat {s}: {refused}"
            );
        }
    });
    all_at(&cluster, "active", 0);
    signs_and_consensus_accepts(&cluster, &made, 0x39);
}

/// Drops the `remove` list from the wallet of `at`'s configuration and
/// restarts that member.
fn clear_removal(cluster: &mut ProcessCluster, at: Seat, runtime: &tokio::runtime::Runtime) {
    let path = cluster.config_path(at);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("remove = [").unwrap();
    let end = start + text[start..].find('\n').unwrap() + 1;
    std::fs::write(&path, format!("{}{}", &text[..start], &text[end..])).unwrap();
    restart(cluster, at, runtime);
}

/// After a refresh removed seat 3, the remaining members refresh again,
/// with the removal kept in their configurations and then cleared: the
/// members of the key record take part, not the roster.
#[test]
fn a_wallet_refreshes_again_after_a_removal_with_the_list_kept_then_cleared() {
    let (mut cluster, runtime, made) = keyed(91);
    for s in [seat(1), seat(2)] {
        approve_removal(&mut cluster, s, &[3], &runtime);
    }
    for epoch in [1, 2] {
        let out = refresh(&cluster, &["--remove", "3"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["epoch"], epoch);
    }
    for s in [seat(1), seat(2)] {
        clear_removal(&mut cluster, s, &runtime);
    }
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let states = states(&cluster);
    assert_eq!(
        states[..2],
        [
            ("active".to_owned(), Some(3)),
            ("active".to_owned(), Some(3))
        ]
    );
    signs_and_consensus_accepts(&cluster, &made, 0x3a);
}

/// `--abort` killed between its veto and discard steps: part 3 reached
/// member 1 only; members 2 and 3 signed their vetoes (as `--abort` asks
/// them), then the driver died, and members 1 and 2 were killed with
/// SIGKILL. Member 2's veto is durable (it signs it again, writing
/// nothing) and member 1 still holds its result pending, so `--abort` run
/// again discards it, and a new refresh completes.
#[test]
fn kill_9_between_the_veto_and_discard_steps_of_abort_then_abort_again_discards() {
    let (mut cluster, runtime, made) = keyed(93);
    let run = step_to(&cluster, &runtime, Step::Part3OnOne);
    let peers = cluster.peers(seat(1));
    runtime.block_on(async {
        for s in [2, 3] {
            let client = peers.client(seat(s)).await.unwrap();
            client
                .refresh_abandon(wallet_id(), run.proposal.session)
                .await
                .unwrap();
        }
    });
    kill_and_restart_seats(&mut cluster, &runtime, &[1, 2]);
    let held = states(&cluster);
    assert_eq!(held[0], ("refreshing".to_owned(), Some(0)), "{held:?}");
    aborted_on_the_vetoes_of_2_and_3(&cluster, &runtime, &run);
    all_at(&cluster, "active", 0);
    signs_and_consensus_accepts(&cluster, &made, 0x40);
    let out = refresh(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    all_at(&cluster, "active", 1);
}

/// `--resume` killed between its delivery steps: members 1 and 2 got
/// every confirmation and switched, then the driver died before member 3,
/// and members 1 and 2 were killed with SIGKILL. They kept the
/// confirmations they switched on, so `--resume` run again gathers them
/// and switches member 3.
#[test]
fn kill_9_of_the_switched_members_between_resume_deliveries_then_resume_again_switches() {
    let (mut cluster, runtime, made) = keyed(94);
    let run = step_to(&cluster, &runtime, Step::Confirmed);
    kill_and_restart_seats(&mut cluster, &runtime, &[1, 2]);
    let held = states(&cluster);
    assert_eq!(held[0], ("active".to_owned(), Some(1)), "{held:?}");
    assert_eq!(held[2], ("refreshing".to_owned(), Some(0)), "{held:?}");
    resumed(&cluster, &run);
    signs_and_consensus_accepts(&cluster, &made, 0x41);
}

/// Member 3 asks member 2 for vetoes of made-up sessions until it refuses
/// (`capacity_exhausted`), then part 3 reaches member 1 only. Member 3
/// used up only its own share of member 2's veto slots, so `--abort` run
/// from member 1 still gets member 2's veto and member 1 discards.
#[test]
fn an_abort_still_gets_a_veto_after_another_member_filled_its_veto_slots() {
    let (cluster, runtime, made) = keyed(95);
    let third = cluster.peers(seat(3));
    let refused = runtime.block_on(async {
        let second = third.client(seat(2)).await.unwrap();
        for made_up in 0u8..=16 {
            let asked = second
                .refresh_abandon(wallet_id(), DkgSessionId([made_up; 32]))
                .await;
            if let Err(error) = asked {
                return error.to_string();
            }
        }
        String::new()
    });
    // Terminal: asking member 2 again cannot succeed before a switch.
    assert!(
        refused.contains("capacity_exhausted (terminal)"),
        "{refused}"
    );
    let run = step_to(&cluster, &runtime, Step::Part3OnOne);
    aborted_on_the_vetoes_of_2_and_3(&cluster, &runtime, &run);
    all_at(&cluster, "active", 0);
    signs_and_consensus_accepts(&cluster, &made, 0x42);
}

/// After a refresh removed seat 3 over the network, its old share plus one
/// new share (t − 1 = 1) cannot sign: member 1 refuses the removed member
/// as a coordinator (`coordinator_not_member`), and the shares read from
/// the members' stores make no signature valid under the output key,
/// whatever key record they are combined under (the engine's
/// `a_removed_members_old_share_does_not_sign_with_a_new_share` check,
/// shared).
#[test]
fn a_removed_members_old_share_and_one_new_share_cannot_sign_over_the_network() {
    let (mut cluster, runtime, _) = keyed(96);
    for at in [1, 2] {
        approve_removal(&mut cluster, seat(at), &[3], &runtime);
    }
    let out = refresh(&cluster, &["--remove", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let removed = cluster.peers(seat(3));
    let refused = runtime.block_on(async {
        let first = removed.client(seat(1)).await.unwrap();
        first
            .round1(thresig_engine::Round1Request::new(wallet_id(), 1))
            .await
            .unwrap_err()
            .to_string()
    });
    assert!(refused.contains("coordinator_not_member"), "{refused}");
    cluster.local.stop_all().unwrap();
    let opened =
        |at: u16| thresig_cluster::node::LocalEngine::open(&cluster.config_path(seat(at))).unwrap();
    let (first, third) = (opened(1), opened(3));
    let (new_key, old_key) = (
        first.signer.wallet_key(&wallet_id()).unwrap(),
        third.signer.wallet_key(&wallet_id()).unwrap(),
    );
    // Key epoch 1 holds wallet epoch 0's share, key epoch 2 epoch 1's.
    let share = |engine: &thresig_cluster::node::LocalEngine, epoch: u64| {
        use thresig_store::Store as _;
        let bytes = engine
            .store
            .key_package(&wallet_id(), thresig_store::KeyEpoch(epoch))
            .unwrap()
            .unwrap();
        thresig_crypto::KeyShare::from_bytes(&bytes).unwrap()
    };
    let (new, old) = (share(&first, 2), share(&third, 1));
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(96);
    removed_share::old_and_new_shares_make_no_signature(
        (&old, &old_key),
        (&new, &new_key),
        &mut rng,
    );
}

/// Member 1's switch to a stepped refresh, then a kill -9 at the boundary
/// `step` names: `switched` (right after the switch committed, its DEK
/// rotation due), or one inside that rotation (run step by step up to it:
/// [`common::rotate_dek_up_to`]). The switch runs in a child process on
/// the stopped member's store, which then kills itself: in a running
/// signer its pruner could retire the DEK before any kill. The retirement
/// is still due after the kill; the member's signer, opened on the store
/// with no key manager or pruner thread running, finishes the rotation in
/// its first prune (the due record cleared): the DEK that sealed the old
/// share is retired, no other DEK is active, and the store holds the new
/// share only. Started again, member 1 gives `--resume` its confirmations,
/// every member is `active` at epoch 1 and the wallet signs with member 1
/// needed for the threshold.
fn switch_killed_inside_its_dek_rotation(seed: u64, step: &str) {
    use thresig_store::Store as _;
    let (mut cluster, runtime, made) = keyed(seed);
    let config = cluster.config_path(seat(1));
    common::reseal_one_per_batch(&config);
    restart(&mut cluster, seat(1), &runtime);
    let keys = json(&["keys", "status", "--config", config.to_str().unwrap()], 0);
    let sealing = keys["current_dek"].as_u64().unwrap();
    let run = step_to(&cluster, &runtime, Step::Part3);
    assert!(cluster.local.stop(seat(1)).unwrap());
    let confirmations = config.with_file_name("confirmations.json");
    std::fs::write(
        &confirmations,
        serde_json::to_string(&run.confirmations).unwrap(),
    )
    .unwrap();
    common::killed_child(
        "child_switches_and_is_killed",
        &[
            (common::CHILD_CONFIG, config.to_str().unwrap()),
            (common::CHILD_STEP, step),
            (CHILD_CONFIRMATIONS, confirmations.to_str().unwrap()),
        ],
    );
    common::assert_store_left_open(&config);
    let due = |store: &thresig_store::EncryptedStore| {
        let name = thresig_store::MetaName::new(b"dek_retire_due".to_vec()).unwrap();
        store.meta(&name).unwrap().map(|v| v.as_slice().to_vec())
    };
    let store = common::open_store(&config);
    let killed = store.keyring_status().unwrap();
    if step == "switched" {
        assert_eq!(killed.current.0, sealing, "not started: {killed:?}");
    } else {
        assert_eq!(killed.deks.len(), 2, "inside the rotation: {killed:?}");
    }
    assert_eq!(due(&store), Some(vec![1]), "the retirement is still due");
    drop(store);
    let engine = thresig_cluster::node::LocalEngine::open(&config).unwrap();
    engine.signer.prune(wall_clock()).unwrap();
    assert_eq!(due(&engine.store), Some(vec![0]), "the prune retired it");
    let keyring = engine.store.keyring_status().unwrap();
    assert!(
        keyring.retired.iter().any(|t| t.0 == sealing),
        "the DEK that sealed the old share is retired: {keyring:?}"
    );
    assert_eq!(keyring.deks.len(), 1, "one DEK active: {keyring:?}");
    let held = |epoch: u64| {
        engine
            .store
            .key_package(&wallet_id(), thresig_store::KeyEpoch(epoch))
            .unwrap()
            .is_some()
    };
    // Key epoch 1 held wallet epoch 0's share, key epoch 2 holds epoch 1's.
    assert!(!held(1) && held(2), "only the new share is stored");
    drop(engine);
    cluster.local.start(seat(1)).unwrap();
    runtime.block_on(common::wait_ready(&cluster.peers(seat(1)), seat(1)));
    resumed(&cluster, &run);
    assert!(cluster.local.stop(seat(2)).unwrap());
    signs_and_consensus_accepts(&cluster, &made, seed.to_le_bytes()[0]);
}

/// The file of the confirmations [`child_switches_and_is_killed`] gives
/// member 1's engine.
const CHILD_CONFIRMATIONS: &str = "THRESIG_TEST_CHILD_CONFIRMATIONS";

/// Boundary: member 1's switch killed right after it committed, its DEK
/// rotation due and not started.
#[test]
fn kill_9_of_a_member_after_its_switch_rotates_its_dek_at_the_next_prune() {
    switch_killed_inside_its_dek_rotation(97, "switched");
}

/// Boundary: inside the switch's DEK rotation, the new DEK promoted and
/// no record re-sealed yet.
#[test]
fn kill_9_after_the_switchs_new_dek_is_promoted_finishes_the_rotation_at_the_next_prune() {
    switch_killed_inside_its_dek_rotation(98, "promoted");
}

/// Boundary: inside the switch's DEK rotation, between two re-seal
/// batches.
#[test]
fn kill_9_between_two_reseal_batches_of_the_switch_finishes_the_rotation_at_the_next_prune() {
    switch_killed_inside_its_dek_rotation(99, "resealed_one");
}

/// Boundary: inside the switch's DEK rotation, every record re-sealed and
/// the old DEK not retired yet.
#[test]
fn kill_9_before_the_switchs_old_dek_is_retired_finishes_the_rotation_at_the_next_prune() {
    switch_killed_inside_its_dek_rotation(100, "resealed");
}

/// The switch the tests of [`switch_killed_inside_its_dek_rotation`] run
/// and kill: member 1's engine, on its stopped store, takes every
/// confirmation of the refresh (as `dkg_confirm` from a coordinator does)
/// and switches; then, unless [`common::CHILD_STEP`] is `switched`, runs
/// the DEK rotation the switch left due step by step up to that boundary.
#[test]
#[ignore = "a child process of the switch_killed_inside_its_dek_rotation tests"]
fn child_switches_and_is_killed() {
    let (Ok(config), Ok(step), Ok(confirmations)) = (
        std::env::var(common::CHILD_CONFIG),
        std::env::var(common::CHILD_STEP),
        std::env::var(CHILD_CONFIRMATIONS),
    ) else {
        return;
    };
    let confirmations: Vec<SignedDkgMessage> =
        serde_json::from_str(&std::fs::read_to_string(confirmations).unwrap()).unwrap();
    // Held across the kill: dropped first, the store would close cleanly.
    let path = std::path::Path::new(&config);
    let engine = thresig_cluster::node::LocalEngine::open(path).unwrap();
    // Member 1 relays the confirmations to itself, as its own coordinator.
    let node = thresig_cluster::config::Config::load(path)
        .unwrap()
        .into_node(path)
        .unwrap();
    let from = thresig_engine::CoordinatorId(node.identity.to_bytes());
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(0);
    for confirmation in confirmations {
        let request = thresig_engine::Request::DkgConfirm {
            wallet: wallet_id(),
            confirmation,
        };
        engine
            .signer
            .handle(wall_clock, from, request, &mut rng)
            .unwrap();
    }
    if step != "switched" {
        common::rotate_dek_up_to(&engine.store, &step);
    }
    common::kill_9_self();
}
