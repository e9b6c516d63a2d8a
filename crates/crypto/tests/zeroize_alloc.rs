//! Secret bytes must not be left behind in freed heap buffers by
//! serialization (including intermediate buffers, not only the output) or
//! by drawing a nonce. A scanning allocator inspects every buffer as it is
//! freed.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use common::*;
use thresig_crypto::*;

const LEN: usize = 12;
static NEEDLE: [AtomicU8; LEN] = [const { AtomicU8::new(0) }; LEN];
static ARMED: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicUsize = AtomicUsize::new(0);

struct Scanning;

unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::SeqCst) && layout.size() >= LEN {
            let freed = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            let hit = freed.windows(LEN).any(|w| {
                w.iter()
                    .zip(&NEEDLE)
                    .all(|(b, n)| *b == n.load(Ordering::Relaxed))
            });
            if hit {
                FOUND.fetch_add(1, Ordering::SeqCst);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Scanning = Scanning;

fn arm(secret: &[u8]) {
    for (n, b) in NEEDLE.iter().zip(secret) {
        n.store(*b, Ordering::Relaxed);
    }
    FOUND.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
}

fn disarm() -> usize {
    ARMED.store(false, Ordering::SeqCst);
    FOUND.load(Ordering::SeqCst)
}

/// frost's key package inside a share's encoding.
fn key_package(
    encoded: &[u8],
) -> frost_core::keys::KeyPackage<frost_secp256k1_tr::Secp256K1Sha256TR> {
    frost_core::keys::KeyPackage::deserialize(encoded).unwrap()
}

/// The first bytes in memory of the hiding nonce that `commit` draws next
/// for `share` from `rng`, learnt by drawing it with frost from a copy of
/// the generator. A k256 scalar sits in memory as its little-endian bytes,
/// the reverse of its encoding.
fn next_hiding_nonce(share: &KeyShare, rng: &rand_chacha::ChaCha20Rng) -> [u8; LEN] {
    let package = key_package(&share.to_bytes().unwrap());
    let nonces =
        frost_secp256k1_tr::round1::SigningNonces::new(package.signing_share(), &mut rng.clone());
    let mut hiding = nonces.hiding().serialize();
    hiding.reverse();
    let mut needle = [0u8; LEN];
    needle.copy_from_slice(&hiding[..LEN]);
    needle
}

/// The only test in this binary (the allocator is global).
#[test]
fn serialization_leaves_no_secret_bytes_in_freed_buffers() {
    let rng = &mut rng(201);
    let (shares, _) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let share = &shares[&seat(1)];
    // The signing share sits after header (5) and identifier (32).
    let encoded = share.to_bytes().unwrap();
    let package = key_package(&encoded);
    let secret = package.signing_share().serialize();
    assert_eq!(&encoded[37..69], &secret[..], "layout as assumed");
    let mut needle = [0u8; LEN];
    needle.copy_from_slice(&secret[..LEN]);
    drop((package, secret, encoded));

    let mut leaks = Vec::new();
    arm(&needle);
    let bytes = share.to_bytes().unwrap(); // Zeroizing: wiped on drop
    drop(bytes);
    leaks.push(("KeyShare::to_bytes", disarm()));

    let bytes = share.to_bytes().unwrap();
    arm(&needle);
    let decoded = KeyShare::from_bytes(&bytes).unwrap();
    leaks.push(("KeyShare::from_bytes", disarm()));
    drop((decoded, bytes));

    // A DKG round-2 package: the secret is the share after header (5).
    let (_, out) = seat_one_round2(rng);
    let encoded = out[0].1.to_bytes().unwrap();
    let inner = frost_secp256k1_tr::keys::dkg::round2::Package::deserialize(&encoded).unwrap();
    let secret = inner.signing_share().serialize();
    assert_eq!(&encoded[5..37], &secret[..], "layout as assumed");
    needle.copy_from_slice(&secret[..LEN]);
    drop((inner, secret, encoded));
    arm(&needle);
    drop(out[0].1.to_bytes().unwrap());
    leaks.push(("Round2Package::to_bytes", disarm()));

    // A repair delta: the secret is the whole 32-byte encoding.
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let deltas = repair_step1(&shares[&seat(1)], &wallet, &seats(&[1, 2]), seat(3), rng)
        .unwrap()
        .into_deltas();
    needle.copy_from_slice(&deltas[0].1.to_bytes().unwrap()[..LEN]);
    arm(&needle);
    drop(deltas[0].1.to_bytes().unwrap());
    leaks.push(("RepairDelta::to_bytes", disarm()));

    // A round-1 nonce pair.
    let share = &shares[&seat(1)];
    needle = next_hiding_nonce(share, rng);
    arm(&needle);
    drop(commit(share, rng).0);
    leaks.push(("commit (its nonce)", disarm()));

    // A nonce dropped from the heap, and nonces moved out of a vector (as
    // the engine's pool takes them in and hands them to `sign`): a move
    // copies a value's bytes and frees the buffer it left unwiped, so the
    // pair must not be among the bytes that move.
    needle = next_hiding_nonce(share, rng);
    let boxed = Box::new(commit(share, rng).0);
    arm(&needle);
    drop(boxed);
    leaks.push(("a boxed nonce dropped", disarm()));
    needle = next_hiding_nonce(share, rng);
    let entries = vec![(0u8, commit(share, rng).0)];
    arm(&needle);
    let (_, moved): (Vec<u8>, Vec<SecretNonce>) = entries.into_iter().unzip();
    leaks.push(("nonces moved out of a vector", disarm()));
    let other = commit(&shares[&seat(2)], rng).1;
    let commitments = [(seat(1), moved[0].commitment()), (seat(2), other)]
        .into_iter()
        .collect();
    let signing = SigningPackage::new(&commitments, &[7; 32]).unwrap();
    arm(&needle);
    let signed: Vec<SignatureShare> = moved
        .into_iter()
        .map(|nonce| sign(nonce, &signing, share, &wallet).unwrap())
        .collect();
    leaks.push(("nonces moved out of a vector into sign", disarm()));
    drop(signed);

    // Each nonce is hashed from fresh randomness and the signing share,
    // whose encoding sits after header (5) and identifier (32).
    needle.copy_from_slice(&share.to_bytes().unwrap()[37..37 + LEN]);
    arm(&needle);
    drop(commit(share, rng).0);
    leaks.push(("commit (the signing share)", disarm()));

    // A refresh holds a copy of the old share's key package; in memory the
    // scalar sits as little-endian limbs, so the needle is the encoding
    // reversed.
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let encoded = shares[&seat(1)].to_bytes().unwrap();
    let mut in_memory = encoded[37..69].to_vec();
    in_memory.reverse();
    needle.copy_from_slice(&in_memory[..LEN]);
    drop((encoded, in_memory));
    arm(&needle);
    let started = shares
        .values()
        .map(|s| DkgRound1::refresh(s, &wallet, &[], rng).unwrap())
        .collect();
    drop(run_in_process(started).unwrap());
    leaks.push(("refresh", disarm()));

    leaks.retain(|(_, n)| *n > 0);
    assert!(
        leaks.is_empty(),
        "freed heap buffers still holding a secret, by operation: {leaks:?}"
    );
}
