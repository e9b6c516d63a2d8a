//! Random sequences of rounds, replays, aborts, restarts and storage faults
//! (including ambiguous commits) never make a signer release two different
//! shares from one nonce, and every released share is in a durable marker.
//!
//! Larger runs: `PROPTEST_CASES=2000 cargo test -p thresig-engine --test property`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use thresig_crypto::Commitment;
use thresig_engine::{HexBytes, Round2Request, commitment_hash, decode_shares};
use thresig_store::{CommitmentHash, Store};

#[derive(Clone, Debug)]
enum Op {
    Round1 {
        coordinator: bool,
        inputs: usize,
    },
    /// Round 2 over seat 1's vector `vector` (modulo how many exist) with
    /// digest family `variant` (different variants are different packages
    /// for the same commitments).
    Round2 {
        vector: usize,
        variant: u8,
    },
    Replay {
        request: usize,
    },
    Abort {
        vector: usize,
    },
    Restart,
    Fault {
        ambiguous: bool,
    },
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), 1usize..=3).prop_map(|(coordinator, inputs)| Op::Round1 { coordinator, inputs }),
        4 => (0usize..8, 0u8..3).prop_map(|(vector, variant)| Op::Round2 { vector, variant }),
        2 => (0usize..8).prop_map(|request| Op::Replay { request }),
        1 => (0usize..8).prop_map(|vector| Op::Abort { vector }),
        1 => Just(Op::Restart),
        2 => any::<bool>().prop_map(|ambiguous| Op::Fault { ambiguous }),
        1 => (0u64..40).prop_map(|secs| Op::Advance { secs }),
    ]
}

fn hash(c: &Commitment) -> CommitmentHash {
    commitment_hash(c)
}

/// Runs `ops` against seat 1 (seat 2 is an honest partner that always
/// answers round 1) and checks the invariants after every step.
fn run(seed: u64, ops: &[Op]) {
    let mut c = Cluster::new(seed, 2, 3, &["w"], small_limits());
    // Seat 1's round-1 vectors with seat 2's matching vectors.
    let mut vectors: Vec<(Vec<Commitment>, Vec<Commitment>)> = Vec::new();
    let mut requests: Vec<Round2Request> = Vec::new();
    // Every share released per seat-1 commitment, with the request it answered.
    let mut released: HashMap<CommitmentHash, (Vec<u8>, Vec<u8>)> = HashMap::new();
    for op in ops {
        match op {
            Op::Round1 {
                coordinator,
                inputs,
            } => {
                let from = if *coordinator { COORD_A } else { COORD_B };
                if let Ok(mine) = c.round1(1, from, "w", *inputs) {
                    let partner = c.round1(2, COORD_A, "w", *inputs).unwrap();
                    vectors.push((mine, partner));
                }
            }
            Op::Round2 { vector, variant } => {
                if vectors.is_empty() {
                    continue;
                }
                let (mine, partner) = vectors[vector % vectors.len()].clone();
                let digests: Vec<[u8; 32]> = (0..mine.len())
                    .map(|i| [variant * 16 + u8::try_from(i).unwrap(); 32])
                    .collect();
                let comms: BTreeMap<u16, Vec<Commitment>> = [(1, mine), (2, partner)].into();
                let req = c.request("w", &comms, &digests);
                requests.push(req);
            }
            Op::Replay { request } => {
                if requests.is_empty() {
                    continue;
                }
                let req = requests[request % requests.len()].clone();
                requests.push(req);
            }
            Op::Abort { vector } => {
                if vectors.is_empty() {
                    continue;
                }
                let (mine, _) = &vectors[vector % vectors.len()];
                let commitments = mine.iter().map(|m| HexBytes(m.to_bytes())).collect();
                let req = thresig_engine::AbortRequest::new(wid("w"), commitments);
                for from in [COORD_A, COORD_B] {
                    c.member(1)
                        .signer()
                        .abort(c.now, coordinator(from), &req)
                        .unwrap();
                }
            }
            Op::Restart => c.restart(1),
            Op::Fault { ambiguous } => c.member(1).store().fail_next_commit(if *ambiguous {
                Fault::Ambiguous
            } else {
                Fault::Lost
            }),
            Op::Advance { secs } => c.advance(Duration::from_secs(*secs)),
        }
        // Round-2 ops and replays send the newest request.
        if matches!(op, Op::Round2 { .. } | Op::Replay { .. }) {
            let Some(req) = requests.last() else { continue };
            if let Ok(shares) = c.round2(1, req) {
                check_release(&c, req, &shares, &mut released);
            }
        }
    }
}

fn check_release(
    c: &Cluster,
    req: &Round2Request,
    shares: &[Vec<u8>],
    released: &mut HashMap<CommitmentHash, (Vec<u8>, Vec<u8>)>,
) {
    let mine: Vec<CommitmentHash> = req
        .packages
        .iter()
        .map(|p| {
            let package = thresig_crypto::SigningPackage::from_bytes(&p.0).unwrap();
            hash(&package.commitment(seat(1)).unwrap())
        })
        .collect();
    // Every released share is in a durable marker, keyed by the attempt's
    // first commitment.
    let marker = c
        .member(1)
        .store()
        .inner
        .marker(&wid("w"), &mine[0])
        .unwrap()
        .expect("a released share has a durable marker");
    assert_eq!(
        decode_shares(&marker).unwrap(),
        shares,
        "released shares equal the marker's"
    );
    // No nonce ever answers two different packages.
    for (i, commitment) in mine.iter().enumerate() {
        let package = req.packages[i].0.clone();
        let entry = released
            .entry(*commitment)
            .or_insert_with(|| (package.clone(), shares[i].clone()));
        assert_eq!(entry.0, package, "one nonce, two packages");
        assert_eq!(entry.1, shares[i], "one nonce, two shares");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn nonces_never_sign_twice_and_releases_are_durable(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        run(seed, &ops);
    }
}
