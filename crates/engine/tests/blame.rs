//! Blame proofs (docs/blame.md), sans-IO: real signers answer round 2 and
//! a coordinator holding their answers tries to turn them into proofs.
//! Only an answer the accused member's identity key signed, with a share
//! that fails against the request's package and the key record the member
//! signed, verifies with the roster alone; an honest member's real answer,
//! altered or not, never does.

mod common;

use std::collections::BTreeMap;

use common::*;
use thresig_crypto::Commitment;
use thresig_engine::{
    BlameError, BlameProof, HexBytes, Round2Request, Round2Response, WalletConfig, package_hash,
};

const D1: [u8; 32] = [1; 32];
const D2: [u8; 32] = [2; 32];

/// A 2-of-3 wallet `w` (and `v`, another key) and seat 1's honest answer
/// to a two-input request signed by seats 1 and 2, with seat 2's answer.
struct Answered {
    c: Cluster,
    config: WalletConfig,
    request: Round2Request,
    honest: Round2Response,
    other: Round2Response,
}

fn answered(seed: u64) -> Answered {
    let mut c = Cluster::new(seed, 2, 3, &["w", "v"], small_limits());
    let commitments: BTreeMap<u16, Vec<Commitment>> = [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, COORD_A, "w", 2).unwrap()))
        .collect();
    let request = c.request("w", &commitments, &[D1, D2]);
    let honest = c.round2_reply(1, &request).unwrap();
    let other = c.round2_reply(2, &request).unwrap();
    let config = WalletConfig::new(wid("w"), 2, (1..=3).map(identity).collect());
    Answered {
        c,
        config,
        request,
        honest,
        other,
    }
}

impl Answered {
    fn verify(&self, proof: &BlameProof) -> Result<thresig_engine::ProvenFault, BlameError> {
        proof.verify(&self.config)
    }

    /// The public key record of wallet `w` (or `v`), as members sign it.
    fn record(&self, wallet: &str) -> Vec<u8> {
        self.c.keys[&wid(wallet)].to_bytes().unwrap()
    }

    fn proof(&self, request: Round2Request, answer: Round2Response) -> BlameProof {
        BlameProof::new(&self.record("w"), request, answer)
    }
}

#[test]
fn an_honest_answer_is_signed_over_its_request_and_proves_no_fault() {
    let a = answered(1);
    let hash = package_hash(&a.request);
    assert!(a.honest.signed_for(&a.config, &hash, &a.record("w")));
    assert!(!a.honest.signature.0.is_empty());
    let proof = a.proof(a.request.clone(), a.honest.clone());
    assert_eq!(
        a.verify(&proof),
        Err(BlameError::NoFault {
            wallet: wid("w"),
            seat: seat(1)
        })
    );
}

#[test]
fn a_coordinator_that_alters_an_honest_share_cannot_build_a_verifying_proof() {
    let a = answered(2);
    // Seat 2's share is a valid encoding and invalid for seat 1.
    let mut altered = a.honest.clone();
    altered.shares[1] = a.other.shares[1].clone();
    let proof = a.proof(a.request.clone(), altered.clone());
    assert_eq!(
        a.verify(&proof),
        Err(BlameError::BadSignature {
            wallet: wid("w"),
            seat: seat(1)
        })
    );
    // The coordinator (seat 3, a member) signing the altered answer with
    // its own identity key does not make it seat 1's.
    altered.sign(
        &identity_secret(COORD_A),
        &package_hash(&a.request),
        &a.record("w"),
    );
    let proof = a.proof(a.request.clone(), altered);
    assert!(matches!(
        a.verify(&proof),
        Err(BlameError::BadSignature { .. })
    ));
}

#[test]
fn a_coordinator_that_alters_a_commitment_cannot_build_a_verifying_proof() {
    let a = answered(3);
    // A fresh commitment of the answer.
    let mut altered = a.honest.clone();
    altered.commitments[0] = a.other.commitments[0].clone();
    assert!(matches!(
        a.verify(&a.proof(a.request.clone(), altered)),
        Err(BlameError::BadSignature { .. })
    ));
    // A commitment in the signing package the honest share answers: the
    // share no longer fits the package, but the member never signed it.
    let mut c = a.c;
    let swapped: BTreeMap<u16, Vec<Commitment>> = [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, COORD_A, "w", 2).unwrap()))
        .collect();
    let mut forged = a.request.clone();
    let other = c.request("w", &swapped, &[D1, D2]);
    forged.packages[0] = other.packages[0].clone();
    let a = Answered { c, ..a };
    assert!(matches!(
        a.verify(&a.proof(forged, a.honest.clone())),
        Err(BlameError::BadSignature { .. })
    ));
}

#[test]
fn a_coordinator_that_substitutes_the_key_record_or_epoch_cannot_build_a_verifying_proof() {
    let a = answered(4);
    // Another key record in the proof of an honest answer (one whose
    // verifying share for seat 1 makes the honest shares fail): the member
    // never signed it.
    let mut proof = a.proof(a.request.clone(), a.honest.clone());
    proof.wallet_key = HexBytes(a.record("v"));
    assert_eq!(
        a.verify(&proof),
        Err(BlameError::BadSignature {
            wallet: wid("w"),
            seat: seat(1)
        })
    );
    // The request replayed at another epoch (a later key): not signed.
    let mut later = a.request.clone();
    later.epoch = thresig_engine::WalletEpoch(later.epoch.0 + 1);
    let proof = a.proof(later, a.honest.clone());
    assert_eq!(a.verify(&proof).unwrap_err().code(), "blame_bad_signature");
}

#[test]
fn a_member_that_signs_a_key_record_without_its_seat_proves_nothing() {
    let a = answered(6);
    let mut cheat = a.honest.clone();
    cheat.shares[0] = a.other.shares[0].clone();
    let garbage = vec![7u8; 40];
    cheat.sign(&identity_secret(1), &package_hash(&a.request), &garbage);
    let proof = BlameProof::new(&garbage, a.request.clone(), cheat);
    assert_eq!(
        a.verify(&proof),
        Err(BlameError::KeyRecord {
            wallet: wid("w"),
            seat: seat(1)
        })
    );
}

#[test]
fn a_member_that_signs_an_invalid_share_is_proven_and_the_proof_survives_json() {
    let a = answered(5);
    let mut cheat = a.honest.clone();
    cheat.shares[1] = a.other.shares[1].clone();
    cheat.sign(
        &identity_secret(1),
        &package_hash(&a.request),
        &a.record("w"),
    );
    let proof = a.proof(a.request.clone(), cheat);
    let fault = a.verify(&proof).unwrap();
    assert_eq!((fault.seat, fault.input), (seat(1), 1));
    let json = serde_json::to_string(&proof).unwrap();
    let back: BlameProof = serde_json::from_str(&json).unwrap();
    assert_eq!(a.verify(&back), Ok(fault));
    // One signature byte changed: the answer is nobody's.
    let mut flipped = back.clone();
    flipped.answer.signature.0[0] ^= 1;
    assert!(matches!(
        a.verify(&flipped),
        Err(BlameError::BadSignature { .. })
    ));
}
