//! Adversarial review: secret bytes must not be left behind in freed heap
//! buffers by serialization (brief: "secrets not zeroized, including
//! intermediate buffers, e.g. serialization output"). A counting allocator
//! inspects every buffer as it is freed.
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
            let hit = freed
                .windows(LEN)
                .any(|w| w.iter().zip(&NEEDLE).all(|(b, n)| *b == n.load(Ordering::Relaxed)));
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

/// The only test in this binary (the allocator is global).
#[test]
fn serialization_leaves_no_secret_bytes_in_freed_buffers() {
    let rng = &mut rng(201);
    let (shares, _) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let share = &shares[&seat(1)];
    // The signing share sits after header (5) and identifier (32).
    let encoded = share.to_bytes().unwrap();
    let package = frost_core::keys::KeyPackage::<frost_secp256k1_tr::Secp256K1Sha256TR>::deserialize(&encoded).unwrap();
    let secret = package.signing_share().serialize();
    assert_eq!(&encoded[37..69], &secret[..], "layout as assumed");
    let mut needle = [0u8; LEN];
    needle.copy_from_slice(&secret[..LEN]);
    drop((package, secret, encoded));

    arm(&needle);
    let bytes = share.to_bytes().unwrap(); // Zeroizing: wiped on drop
    drop(bytes);
    let leaked = disarm();
    assert_eq!(
        leaked, 0,
        "KeyShare::to_bytes freed {leaked} heap buffer(s) still holding the secret share"
    );
}
