//! Shared helpers: run a whole DKG or refresh in one process, sign with a subset.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_crypto::*;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub fn seat(n: u16) -> Seat {
    Seat::try_from(n).unwrap()
}

/// Parts 2 and 3 for every started member; checks they agree on the wallet.
pub fn run_rounds(started: Vec<(DkgRound1, Round1Package)>) -> Result<LocalGroup, Error> {
    run_in_process(started)
}

/// Part 2 for every started member: the states waiting for part 3 (in
/// seat order) and every round-2 package, keyed by (sender, recipient).
pub fn part2_all(
    started: Vec<(DkgRound1, Round1Package)>,
) -> (Vec<DkgRound2>, BTreeMap<(Seat, Seat), Round2Package>) {
    let round1: Vec<_> = started.iter().map(|(s, p)| (s.seat(), p.clone())).collect();
    let mut states = Vec::new();
    let mut sent = BTreeMap::new();
    for (state, _) in started {
        let me = state.seat();
        let peers = round1.iter().filter(|(s, _)| *s != me).cloned().collect();
        let (state, out) = state.receive(peers).unwrap();
        for (to, p) in out {
            sent.insert((me, to), p);
        }
        states.push(state);
    }
    (states, sent)
}

/// A DKG package with its sender (round 1) or recipient (round 2).
pub type Sent<P> = (Seat, P);

/// A fresh 2-of-3 DKG up to part 2 of seat 1: every round-1 package and
/// seat 1's outgoing round-2 packages.
pub fn seat_one_round2(
    rng: &mut ChaCha20Rng,
) -> (Vec<Sent<Round1Package>>, Vec<Sent<Round2Package>>) {
    let params = GroupParams::new(2, 3).unwrap();
    let started: Vec<_> = params
        .seats()
        .map(|s| DkgRound1::start(params, s, ScriptTree::KeyPathOnly, rng).unwrap())
        .collect();
    let round1: Vec<_> = started.iter().map(|(s, p)| (s.seat(), p.clone())).collect();
    let (first, _) = started.into_iter().next().unwrap();
    let (_, out) = first.receive(round1[1..].to_vec()).unwrap();
    (round1, out)
}

pub fn dkg(t: u16, n: u16, tree: ScriptTree, rng: &mut ChaCha20Rng) -> LocalGroup {
    dkg_in_process(GroupParams::new(t, n).unwrap(), tree, rng).unwrap()
}

pub fn import(
    t: u16,
    n: u16,
    tree: ScriptTree,
    rng: &mut ChaCha20Rng,
) -> (BTreeMap<Seat, KeyShare>, WalletKey) {
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(rng, &mut secret);
    secret[0] &= 0x7f; // below the group order
    let (wallet, shares) = import_key(&secret, GroupParams::new(t, n).unwrap(), tree, rng).unwrap();
    (shares.into_iter().map(|s| (s.seat(), s)).collect(), wallet)
}

/// Round 1 and round 2 for `signers`; shares are returned unverified.
pub fn sign_shares(
    shares: &BTreeMap<Seat, KeyShare>,
    wallet: &WalletKey,
    signers: &[Seat],
    message: &[u8; 32],
    rng: &mut ChaCha20Rng,
) -> (SigningPackage, BTreeMap<Seat, SignatureShare>) {
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for s in signers {
        let (nonce, c) = commit(&shares[s], rng);
        nonces.push(nonce);
        commitments.insert(*s, c);
    }
    let package = SigningPackage::new(&commitments, message).unwrap();
    let mut out = BTreeMap::new();
    for nonce in nonces {
        let s = nonce.seat();
        out.insert(s, sign(nonce, &package, &shares[&s], wallet).unwrap());
    }
    (package, out)
}

/// Signs with `signers`, verifying each share, aggregating, and checking
/// the signature with libsecp256k1.
pub fn sign_all(
    shares: &BTreeMap<Seat, KeyShare>,
    wallet: &WalletKey,
    signers: &[Seat],
    message: &[u8; 32],
    rng: &mut ChaCha20Rng,
) -> Signature {
    let (package, sig_shares) = sign_shares(shares, wallet, signers, message, rng);
    for (s, share) in &sig_shares {
        verify_share(wallet, &package, *s, share).unwrap();
    }
    let sig = aggregate(wallet, &package, &sig_shares).unwrap();
    assert!(
        secp_verify(&wallet.output_key(), message, &sig),
        "libsecp256k1 accepts"
    );
    sig
}

/// Independent BIP340 verification (libsecp256k1, not frost).
pub fn secp_verify(key: &XOnlyKey, message: &[u8; 32], sig: &Signature) -> bool {
    let secp = secp256k1::Secp256k1::verification_only();
    let key = secp256k1::XOnlyPublicKey::from_slice(&key.to_bytes()).unwrap();
    let sig = secp256k1::schnorr::Signature::from_slice(&sig.to_bytes().unwrap()).unwrap();
    secp.verify_schnorr(&sig, &secp256k1::Message::from_digest(*message), &key)
        .is_ok()
}

pub fn seats(v: &[u16]) -> Vec<Seat> {
    v.iter().map(|n| seat(*n)).collect()
}

/// Everything a repair run hands the repaired member: each helper's sigma
/// and commitments, keyed by helper seat.
#[derive(Debug)]
pub struct RepairRun {
    pub sigmas: Vec<(Seat, RepairSigma)>,
    pub commitments: BTreeMap<Seat, RepairCommitments>,
}

/// Repair steps 1 and 2 for `lost` by `helpers`, every message delivered
/// as sent.
pub fn repair_run(
    shares: &BTreeMap<Seat, KeyShare>,
    wallet: &WalletKey,
    helpers: &[Seat],
    lost: Seat,
    rng: &mut ChaCha20Rng,
) -> Result<RepairRun, Error> {
    let mut inbox: BTreeMap<Seat, Vec<(Seat, RepairDelta)>> = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for h in helpers {
        let out = repair_step1(&shares[h], wallet, helpers, lost, rng)?;
        commitments.insert(*h, out.commitments().clone());
        for (to, d) in out.into_deltas() {
            inbox.entry(to).or_default().push((*h, d));
        }
    }
    let sigmas = inbox
        .into_iter()
        .map(|(me, received)| Ok((me, repair_step2(me, received, &commitments)?)))
        .collect::<Result<_, Error>>()?;
    Ok(RepairRun {
        sigmas,
        commitments,
    })
}
