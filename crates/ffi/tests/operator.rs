//! The member's lifecycle through the signer handle: the engine's operator
//! commands (`operate`) and a coordinator's repair steps (`repair`) reach
//! the same engine a served signer runs.

mod common;

use common::Member;
use serde_json::{Value, json};

/// A keyed 2-of-3 cluster's members, opened in the tests' directory.
fn keyed() -> (tempfile::TempDir, Vec<Member>) {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    let members: Vec<Member> = configs.iter().map(|c| Member::open(c)).collect();
    common::dkg(&configs, &members);
    (dir, members)
}

/// The wallet's status on `member`, asked as seat 2.
fn status(member: &Member) -> Value {
    member.ok("status", json!({"from": 2, "wallet": common::WALLET}))
}

#[test]
fn an_approved_repair_is_answered_through_the_repair_op() {
    let (_dir, members) = keyed();
    let helper = &members[0];
    let epoch = status(helper)["epoch"].clone();
    let open = json!({
        "from": 2,
        "step": "open",
        "session": {
            "wallet": common::WALLET,
            "epoch": epoch,
            "lost": 3,
            "helpers": [1, 2],
            "nonce": "11".repeat(32),
        },
    });
    let refused = helper.call("repair", open.clone());
    assert_eq!(refused["error"]["code"], "repair_not_approved", "{refused}");

    let approved = helper.ok(
        "operate",
        json!({"approve_repair": {"wallet": common::WALLET, "seat": 3, "expires_in_secs": 600}}),
    );
    assert_eq!(approved["transition"], "done", "{approved}");
    assert!(approved["expires"].as_u64().is_some(), "{approved}");
    assert_eq!(
        approved["status"]["repair_approvals"][0][0], 3,
        "{approved}"
    );

    let opened = helper.ok("repair", open);
    assert_eq!(opened["type"], "repair", "{opened}");
    assert_eq!(opened["kind"], "message", "{opened}");
}

#[test]
fn operator_commands_reach_the_engine_and_a_refused_one_changes_nothing() {
    let (_dir, members) = keyed();
    let member = &members[0];
    let before = status(member);

    let retire = member.call("operate", json!({"retire": {"wallet": common::WALLET}}));
    assert_eq!(retire["error"]["code"], "invalid_request", "{retire}");
    assert!(
        retire["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rekey")),
        "a retire of an active wallet is told to rekey first: {retire}"
    );
    // No successor is configured, so the engine refuses the rekey itself.
    let rekey = member.call(
        "operate",
        json!({"begin_rekey": {"wallet": common::WALLET}}),
    );
    assert!(
        rekey["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot begin a rekey")),
        "{rekey}"
    );
    let unknown = member.call(
        "operate",
        json!({"retire": {"wallet": common::WALLET, "now": 1}}),
    );
    assert_eq!(unknown["error"]["code"], "invalid_request", "{unknown}");
    assert_eq!(status(member), before);
}

/// The `key_step` entries (command, action) in the audit log of the member
/// configured at `config`, read once its handle is closed.
fn key_steps(config: &std::path::Path) -> Vec<(String, String)> {
    use thresig_engine::audit::AuditEvent;
    use thresig_store::Store as _;
    let engine = thresig_cluster::node::LocalEngine::open_unrecorded(config).unwrap();
    engine
        .store
        .audit(thresig_store::AuditSeq(1), 1_000)
        .unwrap()
        .iter()
        .filter_map(|e| match serde_json::from_slice(&e.body).unwrap() {
            AuditEvent::KeyStep {
                command, action, ..
            } => Some((command, action)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_dek_rotation_through_the_handle_logs_each_key_change() {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    let member = Member::open(&configs[0]);
    let rotated = member.ok("keys_rotate_dek", json!({}));
    assert!(rotated["rotated_to"].as_u64().is_some(), "{rotated}");
    drop(member);
    let step = |action: &str| ("rotate_dek".to_owned(), action.to_owned());
    assert_eq!(
        key_steps(&configs[0]),
        [step("promote_dek"), step("retire_dek")]
    );
}
