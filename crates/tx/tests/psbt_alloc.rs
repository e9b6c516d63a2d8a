//! A PSBT with more inputs or outputs than any standard transaction is
//! refused before it is decoded: parsing it whole first would allocate
//! about 30 times its size (a decoded output map weighs some 280 bytes, an
//! empty output 10 on the wire). Its own test binary, for the counting
//! allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bitcoin::key::Keypair;
use bitcoin::secp256k1::{SECP256K1, SecretKey};
use thresig_tx::{
    Error, MAX_INPUTS, MAX_OUTPUTS, MAX_PSBT_ENTRIES, Network, TaprootWallet, WalletPsbt,
};

/// The system allocator, keeping the peak of bytes allocated at once.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are
// updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A serialized PSBT of `inputs` inputs and `outputs` outputs of 0 sat with
/// empty scripts, and empty maps.
fn psbt(inputs: usize, outputs: usize) -> Vec<u8> {
    fn compact_size(out: &mut Vec<u8>, n: usize) {
        match n {
            0..0xfd => out.push(u8::try_from(n).unwrap()),
            0xfd..=0xffff => {
                out.push(0xfd);
                out.extend(u16::try_from(n).unwrap().to_le_bytes());
            }
            _ => {
                out.push(0xfe);
                out.extend(u32::try_from(n).unwrap().to_le_bytes());
            }
        }
    }
    let mut tx = 2u32.to_le_bytes().to_vec();
    compact_size(&mut tx, inputs);
    for i in 0..inputs {
        tx.extend([0; 32]);
        tx.extend(u32::try_from(i).unwrap().to_le_bytes());
        tx.extend([0x00, 0xff, 0xff, 0xff, 0xff]);
    }
    compact_size(&mut tx, outputs);
    for _ in 0..outputs {
        tx.extend([0; 8]);
        tx.push(0x00);
    }
    tx.extend([0; 4]);
    let mut out = b"psbt\xff".to_vec();
    // An unknown global entry first: the unsigned transaction need not lead.
    out.extend([0x01, 0x20, 0x01, 0x07]);
    out.extend([0x01, 0x00]);
    compact_size(&mut out, tx.len());
    out.extend(tx);
    out.push(0x00);
    out.extend(std::iter::repeat_n(0x00, inputs + outputs));
    out
}

fn wallet() -> TaprootWallet {
    let sk = SecretKey::from_slice(&[7; 32]).unwrap();
    let keypair = Keypair::from_secret_key(SECP256K1, &sk);
    TaprootWallet::new(Network::Regtest, keypair.x_only_public_key().0, None)
}

/// The outcome of parsing `bytes`, and the most bytes allocated at once
/// meanwhile beyond what was allocated before.
fn parse(bytes: &[u8], wallet: &TaprootWallet) -> (Result<WalletPsbt, Error>, usize) {
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let outcome = WalletPsbt::from_bytes(bytes, wallet);
    (outcome, PEAK.load(Ordering::Relaxed) - before)
}

// One test function: the allocator's counters are global to the binary.
#[test]
fn too_many_inputs_or_outputs_are_refused_before_the_psbt_is_decoded() {
    let wallet = wallet();

    let outputs = psbt(1, 400_000);
    let (outcome, peak) = parse(&outputs, &wallet);
    assert!(
        matches!(
            outcome,
            Err(Error::TooManyOutputs {
                outputs: 400_000,
                max: MAX_OUTPUTS
            })
        ),
        "{outcome:?}"
    );
    assert!(
        peak < 2 * outputs.len(),
        "parsing {} bytes allocated {peak} bytes at once",
        outputs.len()
    );

    let inputs = psbt(90_000, 1);
    let (outcome, peak) = parse(&inputs, &wallet);
    assert!(
        matches!(
            outcome,
            Err(Error::TooManyInputs {
                inputs: 90_000,
                max: MAX_INPUTS
            })
        ),
        "{outcome:?}"
    );
    assert!(
        peak < 2 * inputs.len(),
        "parsing {} bytes allocated {peak} bytes at once",
        inputs.len()
    );

    // One input whose map holds 600,000 unknown entries of 6 bytes each
    // (about 100 bytes each decoded).
    let mut entries = psbt(1, 1);
    entries.truncate(entries.len() - 2);
    for i in 0..600_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        entries.extend([0x04, 0x20, a, b, c, 0x00]);
    }
    entries.extend([0x00, 0x00]);
    let (outcome, peak) = parse(&entries, &wallet);
    assert!(
        matches!(
            outcome,
            Err(Error::TooManyPsbtEntries {
                max: MAX_PSBT_ENTRIES,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(
        peak < 2 * entries.len(),
        "parsing {} bytes allocated {peak} bytes at once",
        entries.len()
    );

    // At the limits, the same PSBTs are decoded and refused for what they
    // are (no input of the wallet here), not for their counts.
    let (outcome, _) = parse(&psbt(1, MAX_OUTPUTS), &wallet);
    assert!(
        !matches!(outcome, Err(Error::TooManyOutputs { .. })),
        "{outcome:?}"
    );
}
