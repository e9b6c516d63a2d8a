//! One signer handle used from 8 threads at once stays consistent: every
//! nonce drawn is distinct and counted, and a round 2 sent by 8 threads at
//! once is answered with the same shares (one marker).

mod common;

use std::collections::BTreeSet;

use common::{Coordinator, Member, WALLET};
use serde_json::{Value, json};

const THREADS: usize = 8;

#[test]
fn one_handle_used_from_eight_threads_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    let members: Vec<Member> = configs.iter().map(|c| Member::open(c)).collect();
    common::dkg(&configs, &members);
    let first = &members[0];

    // Nonces: 8 threads draw round-1 vectors as the three coordinators.
    let drawn: Vec<Vec<Value>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                scope.spawn(move || {
                    let from = i % 3 + 1;
                    let round1 = first.ok(
                        "round1",
                        json!({"from": from, "wallet": WALLET, "inputs": 2}),
                    );
                    round1["commitments"].as_array().unwrap().clone()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let all: BTreeSet<String> = drawn.iter().flatten().map(|c| c.to_string()).collect();
    assert_eq!(all.len(), THREADS * 2, "a commitment was handed out twice");
    let status = first.ok("status", json!({"from": 1, "wallet": WALLET}));
    assert_eq!(status["live_nonces"], THREADS * 2);

    // Markers: the coordinator's round 2 for member 1, sent by 8 threads.
    let key = first.ok("wallet_key", json!({"from": 1, "wallet": WALLET}))["key"].clone();
    let psbt = common::self_spend(first, 0x22);
    let run = Coordinator::open(&json!({
        "kind": "sign", "config_path": configs[0], "wallet": WALLET, "key": key,
        "epoch": status["epoch"], "psbt": psbt, "now_ms": 0,
    }));
    let mut raced = false;
    let mut polls = 0;
    let done = loop {
        polls += 1;
        assert!(polls < 100, "the signing run did not finish");
        while let Some(transmit) =
            Some(run.call("poll_transmit", json!({}))).filter(|t| !t.is_null())
        {
            let to = transmit["to"].as_u64().unwrap();
            let mut envelope = transmit["envelope"].clone();
            envelope["request"]["from"] = json!(1);
            let envelope = envelope.to_string();
            let member = &members[usize::try_from(to).unwrap() - 1];
            let response = if to == 1 && transmit["envelope"]["op"] == "round2" {
                raced = true;
                let answers: Vec<Value> = std::thread::scope(|scope| {
                    let threads: Vec<_> = (0..THREADS)
                        .map(|_| scope.spawn(|| member.call_bytes(envelope.as_bytes())))
                        .collect();
                    threads.into_iter().map(|t| t.join().unwrap()).collect()
                });
                let shares: BTreeSet<String> = answers
                    .iter()
                    .map(|a| a["ok"]["shares"].to_string())
                    .collect();
                assert!(answers.iter().all(|a| a.get("ok").is_some()), "{answers:?}");
                assert_eq!(
                    shares.len(),
                    1,
                    "one attempt gave different shares: {shares:?}"
                );
                answers[0].clone()
            } else {
                member.call_bytes(envelope.as_bytes())
            };
            run.call(
                "handle_reply",
                json!({"from": to, "tag": transmit["tag"], "now_ms": 0, "response": response}),
            );
        }
        let event = run.call("poll_event", json!({}));
        assert_ne!(event["type"], "failed", "{event}");
        if event["type"] == "done" {
            break event;
        }
    };
    assert!(raced, "member 1 was not in the signing session");
    assert_eq!(done["signatures"].as_array().unwrap().len(), 1);
}
