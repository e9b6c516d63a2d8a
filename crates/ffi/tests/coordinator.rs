//! The coordinator handle's runs end cleanly: nonces a run did not use are
//! released, a member's malformed or refusing answer ends the run with the
//! right verdict.

mod common;

use common::{Coordinator, Member, WALLET};
use serde_json::{Value, json};
use thresig_engine::{
    BlameProof, DkgKind, DkgPayload, Round2Request, Round2Response, SignedDkgMessage, package_hash,
};

/// A keyed 2-of-3 cluster: its directory, configuration files and members.
fn keyed() -> (tempfile::TempDir, Vec<std::path::PathBuf>, Vec<Member>) {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    let members: Vec<Member> = configs.iter().map(|c| Member::open(c)).collect();
    common::dkg(&configs, &members);
    (dir, configs, members)
}

/// A signing run of a self-spend, coordinated by member 1.
fn signing_run(configs: &[std::path::PathBuf], members: &[Member], byte: u8) -> Coordinator {
    let first = &members[0];
    let status = first.ok("status", json!({"from": 1, "wallet": WALLET}));
    let key = first.ok("wallet_key", json!({"from": 1, "wallet": WALLET}))["key"].clone();
    let psbt = common::self_spend(first, byte);
    Coordinator::open(&json!({
        "kind": "sign", "config_path": configs[0], "wallet": WALLET, "key": key,
        "epoch": status["epoch"], "psbt": psbt, "now_ms": 0,
    }))
}

/// Relays every transmit to its member until none is left; the ops sent.
fn relay_all(run: &Coordinator, members: &[Member]) -> Vec<String> {
    let mut ops = Vec::new();
    loop {
        let transmit = run.call("poll_transmit", json!({}));
        if transmit.is_null() {
            return ops;
        }
        let to = transmit["to"].as_u64().unwrap();
        ops.push(transmit["envelope"]["op"].as_str().unwrap().to_owned());
        let member = &members[usize::try_from(to).unwrap() - 1];
        let response = member.relay(&transmit["envelope"], 1);
        run.call(
            "handle_reply",
            json!({"from": to, "tag": transmit["tag"], "now_ms": 0, "response": response}),
        );
    }
}

/// Every event queued now.
fn events(run: &Coordinator) -> Vec<Value> {
    std::iter::from_fn(|| Some(run.call("poll_event", json!({}))).filter(|e| !e.is_null()))
        .collect()
}

/// A fresh cluster's members and a DKG relay of its wallet, not yet polled.
fn dkg_relay() -> (tempfile::TempDir, Vec<Member>, Coordinator) {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    let members: Vec<Member> = configs.iter().map(|c| Member::open(c)).collect();
    let relay = Coordinator::open(&json!({
        "kind": "dkg", "config_path": configs[0], "wallet": WALLET,
    }));
    (dir, members, relay)
}

#[test]
fn a_finished_signing_run_releases_every_unused_nonce() {
    let (_dir, configs, members) = keyed();
    let run = signing_run(&configs, &members, 0x31);
    let mut ops = Vec::new();
    let mut done = false;
    while !done {
        let relayed = relay_all(&run, &members);
        let ended = events(&run);
        assert!(ended.iter().all(|e| e["type"] != "failed"), "{ended:?}");
        done = ended.iter().any(|e| e["type"] == "done");
        assert!(done || !relayed.is_empty(), "the run is idle undone");
        ops.extend(relayed);
    }
    ops.extend(relay_all(&run, &members));
    assert!(ops.iter().any(|op| op == "abort"), "no abort: {ops:?}");
    for (i, member) in members.iter().enumerate() {
        let status = member.ok("status", json!({"from": 1, "wallet": WALLET}));
        assert_eq!(status["live_nonces"], 0, "member {}: {status}", i + 1);
    }
}

#[test]
fn a_malformed_reply_in_a_dkg_fails_it_naming_the_member() {
    let (_dir, _members, relay) = dkg_relay();
    let transmit = relay.call("poll_transmit", json!({}));
    let to = transmit["to"].as_u64().unwrap();
    relay.call(
        "handle_reply",
        json!({"from": to, "tag": transmit["tag"], "now_ms": 0, "response": {"ok": 1}}),
    );
    let failed: Vec<Value> = events(&relay)
        .into_iter()
        .filter(|e| e["type"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["code"], "dkg_failed");
    let message = failed[0]["message"].as_str().unwrap();
    assert!(message.contains(&format!("member {to}")), "{message}");
}

#[test]
fn a_run_only_passing_refusals_failed_may_be_retried() {
    let (_dir, configs, members) = keyed();
    let run = signing_run(&configs, &members, 0x32);
    let refusal = json!({"error": {
        "code": "policy_denied", "retryable": true, "message": "the rate limit holds",
    }});
    let failed = loop {
        let transmit = run.call("poll_transmit", json!({}));
        if transmit.is_null() {
            let failed = events(&run).into_iter().find(|e| e["type"] == "failed");
            break failed.expect("the run neither failed nor sent a request");
        }
        let to = transmit["to"].as_u64().unwrap();
        let response = if to == 1 {
            members[0].relay(&transmit["envelope"], 1)
        } else {
            refusal.clone()
        };
        run.call(
            "handle_reply",
            json!({"from": to, "tag": transmit["tag"], "now_ms": 0, "response": response}),
        );
    };
    assert_eq!(failed["code"], "signing_failed");
    assert_eq!(failed["retryable"], true, "{failed}");
}

#[test]
fn an_open_signer_handle_prunes_its_engine() {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    let member = Member::open(&configs[0]);
    // A round of the handle's pruning thread, woken now and waited for.
    assert_eq!(member.ok("prune", json!({})), json!({"pruned": true}));
}

/// The error code of a coordinator call that must fail.
fn refused(run: &Coordinator, op: &str, request: Value) -> String {
    let response = run.call_raw(op, request);
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("{op}: {response}"));
    error["code"].as_str().unwrap().to_owned()
}

#[test]
fn silent_members_time_out_and_the_run_fails_at_its_deadline() {
    let (_dir, configs, members) = keyed();
    let run = signing_run(&configs, &members, 0x33);
    let mut seen = Vec::new();
    let mut now_ms = 0;
    let failed = loop {
        while let Some(transmit) =
            Some(run.call("poll_transmit", json!({}))).filter(|t| !t.is_null())
        {
            // Only member 1 answers; members 2 and 3 stay silent.
            if transmit["to"] == 1 {
                let response = members[0].relay(&transmit["envelope"], 1);
                run.call(
                    "handle_reply",
                    json!({"from": 1, "tag": transmit["tag"], "now_ms": now_ms, "response": response}),
                );
            }
        }
        let ended = events(&run);
        seen.extend(ended.iter().cloned());
        if let Some(failed) = ended.iter().find(|e| e["type"] == "failed") {
            break failed.clone();
        }
        let at = run.call("poll_timeout", json!({}))["at_ms"].as_u64();
        let at = at.expect("a run waiting for members names a timeout");
        assert!(at >= now_ms, "the timeout {at} is before now {now_ms}");
        now_ms = at;
        run.call("handle_timeout", json!({"now_ms": now_ms}));
    };
    let silent: Vec<&Value> = seen
        .iter()
        .filter(|e| e["type"] == "unresponsive")
        .map(|e| &e["member"])
        .collect();
    assert!(
        silent.contains(&&json!(2)) && silent.contains(&&json!(3)),
        "{seen:?}"
    );
    assert_eq!(failed["code"], "signing_failed");
    assert_eq!(
        failed["retryable"], true,
        "a missed deadline may pass: {failed}"
    );
}

#[test]
fn a_reply_with_a_wrong_tag_or_member_is_refused_and_changes_nothing() {
    let (_dir, members, relay) = dkg_relay();
    let transmit = relay.call("poll_transmit", json!({}));
    let to = transmit["to"].as_u64().unwrap();
    let tag = transmit["tag"].as_u64().unwrap();
    let response = members[usize::try_from(to).unwrap() - 1].relay(&transmit["envelope"], 1);
    let other = to % 3 + 1;
    for (from, tag) in [(other, tag), (to, tag + 1000)] {
        let reply = json!({"from": from, "tag": tag, "now_ms": 0, "response": response});
        assert_eq!(refused(&relay, "handle_reply", reply), "invalid_request");
    }
    let malformed = json!({"from": to, "tag": tag});
    assert_eq!(
        refused(&relay, "handle_reply", malformed),
        "invalid_request"
    );
    assert_eq!(
        refused(&relay, "no_such_op", json!({})),
        "unknown_op",
        "an unknown op on a coordinator handle"
    );
    // The right reply is still taken: nothing above consumed the tag.
    let reply = json!({"from": to, "tag": tag, "now_ms": 0, "response": response});
    assert_eq!(relay.call("handle_reply", reply), json!({"accepted": true}));
    assert!(events(&relay).is_empty());
}

#[test]
fn a_transmit_names_no_sender_so_the_host_must() {
    let (_dir, members, relay) = dkg_relay();
    let transmit = relay.call("poll_transmit", json!({}));
    let envelope = &transmit["envelope"];
    assert!(envelope["request"].get("from").is_none(), "{envelope}");
    // Forwarded as is, the member refuses it: the sender is the host's to
    // name, from its own authentication of the peer.
    let to = usize::try_from(transmit["to"].as_u64().unwrap()).unwrap();
    let forwarded = members[to - 1].call_bytes(envelope.to_string().as_bytes());
    assert_eq!(forwarded["error"]["code"], "invalid_request", "{forwarded}");
    let relayed = members[to - 1].relay(envelope, 1);
    assert!(relayed.get("ok").is_some(), "{relayed}");
}

/// Drives `run` to its end with virtual time, relaying every transmit to
/// its member and letting `alter` change each round-2 answer (by member,
/// with the envelope it answers) before the run sees it. Returns every event and, for each round-2
/// answer, its member and whether the run took it.
fn drive(
    run: &Coordinator,
    members: &[Member],
    mut alter: impl FnMut(u64, &Value, &mut Value),
) -> (Vec<Value>, Vec<(u64, bool)>) {
    let mut taken = Vec::new();
    let seen = drive_all(
        run,
        members,
        |to, envelope, response| {
            if envelope["op"] != "round2" {
                return None;
            }
            let signature = response["ok"]["signature"].as_str().unwrap();
            assert_eq!(signature.len(), 128, "an Ed25519 signature: {response}");
            alter(to, envelope, response);
            Some(to)
        },
        |to, reply| taken.push((to, reply["accepted"] == true)),
    );
    (seen, taken)
}

/// Drives `run` (a signing run or a DKG) to its end with virtual time,
/// relaying every transmit to its member; `alter` sees each answer (by
/// member, with the envelope it answers) before the run does, and
/// `replied` the run's reply to each answer `alter` returned a member for.
/// Returns every event.
fn drive_all(
    run: &Coordinator,
    members: &[Member],
    mut alter: impl FnMut(u64, &Value, &mut Value) -> Option<u64>,
    mut replied: impl FnMut(u64, &Value),
) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut now_ms = 0;
    loop {
        while let Some(transmit) =
            Some(run.call("poll_transmit", json!({}))).filter(|t| !t.is_null())
        {
            let to = transmit["to"].as_u64().unwrap();
            let member = &members[usize::try_from(to).unwrap() - 1];
            let mut response = member.relay(&transmit["envelope"], 1);
            let watched = alter(to, &transmit["envelope"], &mut response);
            let reply = run.call(
                "handle_reply",
                json!({"from": to, "tag": transmit["tag"], "now_ms": now_ms, "response": response}),
            );
            if let Some(to) = watched {
                replied(to, &reply);
            }
        }
        let ended = events(run);
        seen.extend(ended.iter().cloned());
        if ended
            .iter()
            .any(|e| ["done", "dkg_done", "failed"].contains(&e["type"].as_str().unwrap_or("")))
        {
            return seen;
        }
        now_ms = run.call("poll_timeout", json!({}))["at_ms"]
            .as_u64()
            .unwrap();
        run.call("handle_timeout", json!({"now_ms": now_ms}));
    }
}

/// A member's round-2 answer carries its identity signature (the `round2`
/// op returns the signed answer); an answer changed on the way (here one
/// share) is not taken, does not convict the member, and the run signs
/// without it once the member times out.
#[test]
fn a_round2_answer_altered_after_its_member_signed_it_is_not_taken_and_blames_no_one() {
    let (_dir, configs, members) = keyed();
    let run = signing_run(&configs, &members, 0x34);
    let (seen, taken) = drive(&run, &members, |to, _, response| {
        if to == 2 {
            let share = response["ok"]["shares"][0].as_str().unwrap();
            let last = if share.ends_with('0') { "1" } else { "0" };
            response["ok"]["shares"][0] = json!(format!("{}{last}", &share[..share.len() - 1]));
        }
    });
    let forged: Vec<_> = taken.iter().filter(|(to, _)| *to == 2).collect();
    assert_eq!(
        forged,
        [&(2, false)],
        "member 2 was asked for shares once: {seen:?}"
    );
    assert!(taken.iter().all(|(to, ok)| *ok == (*to != 2)), "{taken:?}");
    assert!(seen.iter().any(|e| e["type"] == "done"), "{seen:?}");
    assert!(seen.iter().all(|e| e["type"] != "culprit"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|e| e["type"] == "unresponsive" && e["member"] == 2),
        "{seen:?}"
    );
}

/// Members that answer without the identity signature (older than the
/// coordinator) fail the run with that cause named in its message.
#[test]
fn a_run_that_unsigned_answers_stop_names_the_members_to_upgrade() {
    let (_dir, configs, members) = keyed();
    let run = signing_run(&configs, &members, 0x35);
    let (seen, _) = drive(&run, &members, |to, _, response| {
        if to != 1 {
            response["ok"]["signature"] = json!("");
        }
    });
    let failed = seen.iter().find(|e| e["type"] == "failed").expect("failed");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("members 2, 3 answered without a valid identity signature"),
        "{message}"
    );
    assert!(message.contains("upgrade"), "{message}");
}

/// A member that signs an invalid share is a culprit, and the `culprit`
/// event carries its proof, which verifies with the roster alone and names
/// the share the run found invalid.
#[test]
fn a_culprit_event_carries_a_proof_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    // Member 2's identity key, read before its handle locks the store: it
    // signs the invalid answers below, as a cheating member would.
    let identity = thresig_cluster::node::Node::open(&configs[1])
        .unwrap()
        .identity_key()
        .unwrap();
    let members: Vec<Member> = configs.iter().map(|c| Member::open(c)).collect();
    common::dkg(&configs, &members);
    let record = members[0].ok("wallet_key", json!({"from": 1, "wallet": WALLET}))["key"]
        .as_str()
        .map(|k| hex::decode(k).unwrap())
        .unwrap();
    let run = signing_run(&configs, &members, 0x36);
    let (seen, _) = drive(&run, &members, |to, envelope, response| {
        if to != 2 {
            return;
        }
        let request: Round2Request = serde_json::from_value(envelope["request"].clone()).unwrap();
        let mut answer = response["ok"].clone();
        answer.as_object_mut().unwrap().remove("type");
        let mut answer: Round2Response = serde_json::from_value(answer).unwrap();
        let share = answer.shares[0].0.last_mut().unwrap();
        *share = share.wrapping_add(1);
        answer.sign(&identity, &package_hash(&request), &record);
        let mut signed = serde_json::to_value(&answer).unwrap();
        signed["type"] = json!("round2");
        response["ok"] = signed;
    });
    let culprit = seen
        .iter()
        .find(|e| e["type"] == "culprit")
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(culprit["member"], 2, "{culprit}");
    let proof: BlameProof = serde_json::from_value(culprit["proof"].clone()).unwrap();
    let roster = thresig_cluster::config::Config::load(&configs[2]).unwrap();
    let wallet = roster
        .node
        .as_ref()
        .unwrap()
        .wallet(&proof.request.wallet)
        .unwrap();
    let fault = proof.verify(&wallet.config).unwrap();
    assert_eq!((fault.seat.get(), fault.input), (2, 0));
}

/// A member whose round-1 answer carries a kind-bound signature that does
/// not verify is named by the relay, before any member's part 2 refuses
/// the message without knowing who changed it.
#[test]
fn a_round1_answer_with_a_bad_kind_signature_fails_the_dkg_naming_its_member() {
    let message = dkg_failure_names_member_3(Altered::BadKindSignature);
    assert!(
        message.contains("kind-bound signature its identity key did not make"),
        "{message}"
    );
}

/// Every member's config file with `[signer] require_round1_kind_signature`.
fn requiring_kind_signature(configs: &[std::path::PathBuf]) {
    for path in configs {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(!text.contains("[signer]"), "{text}");
        let text = text.replacen(
            "[[wallets]]",
            "[signer]\nrequire_round1_kind_signature = true\n\n[[wallets]]",
            1,
        );
        std::fs::write(path, text).unwrap();
    }
}

/// How member 3's round-1 answer to its start is altered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Altered {
    /// Its kind-bound signature with byte 0 flipped.
    BadKindSignature,
    /// Its kind-bound signature removed, the members requiring one.
    Unbound,
    /// Re-signed (both signatures) for a session with byte 0 flipped.
    OtherSession,
    /// Its package's last byte (of the proof of knowledge's response
    /// scalar) flipped, re-signed under a valid kind-bound signature.
    BadPackage,
}

/// The `failed` message of a fresh cluster's DKG through the C library's
/// relay, member 3's round-1 answer `altered`, asserting it names member 3
/// and neither other member.
fn dkg_failure_names_member_3(altered: Altered) -> String {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    if altered == Altered::Unbound {
        requiring_kind_signature(&configs);
    }
    // Member 3's identity key, read before its handle locks the store.
    let identity = thresig_cluster::node::Node::open(&configs[2])
        .unwrap()
        .identity_key()
        .unwrap();
    let members: Vec<Member> = configs.iter().map(|c| Member::open(c)).collect();
    let relay = Coordinator::open(&json!({
        "kind": "dkg", "config_path": configs[0], "wallet": WALLET,
    }));
    let alter = |message: &mut Value| {
        if altered == Altered::BadKindSignature {
            let mut signature = hex::decode(message["kind_signature"].as_str().unwrap()).unwrap();
            signature[0] ^= 1;
            message["kind_signature"] = json!(hex::encode(signature));
            return;
        }
        if altered == Altered::Unbound {
            message.as_object_mut().unwrap().remove("kind_signature");
            return;
        }
        let honest: SignedDkgMessage = serde_json::from_value(message.clone()).unwrap();
        let (mut session, mut payload) = (honest.session, honest.payload.clone());
        if altered == Altered::OtherSession {
            session.0[0] ^= 1;
        } else if let DkgPayload::Round1 { package, .. } = &mut payload {
            *package.0.last_mut().unwrap() ^= 1;
        }
        let resigned = SignedDkgMessage::sign_round1(
            &identity,
            session,
            honest.wallet.clone(),
            honest.sender,
            payload,
            (&DkgKind::Fresh, 2),
        );
        *message = serde_json::to_value(&resigned).unwrap();
    };
    let seen = drive_all(
        &relay,
        &members,
        |to, envelope, response| {
            if to == 3 && envelope["op"] == "dkg_start" {
                alter(&mut response["ok"]["messages"][0]);
            }
            None
        },
        |_, _| {},
    );
    let failed = seen
        .iter()
        .find(|e| e["type"] == "failed")
        .unwrap_or_else(|| panic!("{seen:?}"));
    let message = failed["message"].as_str().unwrap().to_owned();
    assert!(message.contains("member 3"), "{message}");
    assert!(
        !message.contains("member 1") && !message.contains("member 2"),
        "{message}"
    );
    message
}

/// Members requiring the kind-bound signature refuse part 2 when member 3
/// answered without one; the C library's relay, which cannot enforce the
/// setting, names member 3 (whose answer it received directly), not the
/// refusing member.
#[test]
fn members_refusing_an_unbound_round1_message_make_the_relay_name_its_sender() {
    let message = dkg_failure_names_member_3(Altered::Unbound);
    assert!(message.contains("kind-bound signature"), "{message}");
}

/// A round-1 answer re-signed for another session names its member.
#[test]
fn a_round1_answer_of_another_session_fails_the_dkg_naming_its_member() {
    let message = dkg_failure_names_member_3(Altered::OtherSession);
    assert!(message.contains("another session"), "{message}");
}

/// A round-1 package that fails part 2's checks under a valid kind-bound
/// signature names its member alone.
#[test]
fn a_round1_package_failing_its_checks_fails_the_dkg_naming_its_member() {
    let message = dkg_failure_names_member_3(Altered::BadPackage);
    assert!(message.contains("fails the checks"), "{message}");
}
