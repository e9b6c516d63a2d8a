//! A transparent stand-in scheme: fast, so protocol tests can run many
//! cases, and every value is easy to inspect. Real FROST runs in `frost.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use thresig_roast::{Refusal, Scheme, Seat, Verdict};

use crate::harness::Backend;

/// The coordinator's side: shares are a keyed mix of seat and package.
pub(crate) struct Toy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToyPackage {
    message: u64,
    pub(crate) commitments: BTreeMap<Seat, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToySignature {
    message: u64,
    signers: Vec<Seat>,
}

#[derive(Debug)]
pub(crate) struct ToyError;

impl fmt::Display for ToyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("toy scheme error")
    }
}

impl std::error::Error for ToyError {}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The only valid share of `seat` for `package`.
pub(crate) fn share_of(seat: Seat, package: &ToyPackage) -> u64 {
    let binding = package
        .commitments
        .iter()
        .fold(mix(package.message), |h, (s, c)| {
            mix(h ^ u64::from(s.get()) ^ c)
        });
    mix(binding ^ u64::from(seat.get()))
}

impl Scheme for Toy {
    type Message = u64;
    type Commitment = u64;
    type Package = ToyPackage;
    type Share = u64;
    type Signature = ToySignature;
    type Error = ToyError;

    fn package(
        &self,
        message: &u64,
        commitments: &BTreeMap<Seat, u64>,
    ) -> Result<ToyPackage, ToyError> {
        Ok(ToyPackage {
            message: *message,
            commitments: commitments.clone(),
        })
    }

    fn verify_share(
        &self,
        package: &ToyPackage,
        seat: Seat,
        share: &u64,
    ) -> Result<Verdict, ToyError> {
        if !package.commitments.contains_key(&seat) {
            return Err(ToyError);
        }
        Ok(if *share == share_of(seat, package) {
            Verdict::Valid
        } else {
            Verdict::Invalid
        })
    }

    fn aggregate(
        &self,
        package: &ToyPackage,
        shares: &BTreeMap<Seat, u64>,
    ) -> Result<ToySignature, ToyError> {
        let complete = shares.keys().eq(package.commitments.keys());
        if !complete
            || shares
                .iter()
                .any(|(seat, share)| *share != share_of(*seat, package))
        {
            return Err(ToyError);
        }
        Ok(ToySignature {
            message: package.message,
            signers: shares.keys().copied().collect(),
        })
    }
}

/// The signers' side of the toy scheme.
pub(crate) struct ToyCluster {
    threshold: u16,
    seats: Vec<Seat>,
    /// Live (unused) commitments per seat.
    live: BTreeMap<Seat, BTreeSet<u64>>,
}

impl ToyCluster {
    pub(crate) fn new(threshold: u16, signers: u16) -> Self {
        Self {
            threshold,
            seats: (1..=signers).map(crate::harness::seat).collect(),
            live: BTreeMap::new(),
        }
    }
}

impl Backend for ToyCluster {
    type S = Toy;

    fn seats(&self) -> Vec<Seat> {
        self.seats.clone()
    }

    fn threshold(&self) -> u16 {
        self.threshold
    }

    fn scheme(&self) -> Toy {
        Toy
    }

    fn message(&self, rng: &mut ChaCha20Rng) -> u64 {
        rng.next_u64()
    }

    fn commit(&mut self, seat: Seat, inputs: usize, rng: &mut ChaCha20Rng) -> Vec<u64> {
        let commitments: Vec<u64> = (0..inputs).map(|_| rng.next_u64()).collect();
        self.live.entry(seat).or_default().extend(&commitments);
        commitments
    }

    fn sign(&mut self, seat: Seat, packages: &[ToyPackage]) -> Result<Vec<u64>, Refusal> {
        let live = self.live.entry(seat).or_default();
        let mut shares = Vec::new();
        for package in packages {
            let commitment = package.commitments.get(&seat).ok_or(Refusal::Rejected)?;
            if !live.remove(commitment) {
                return Err(Refusal::NonceUnknown);
            }
            shares.push(share_of(seat, package));
        }
        Ok(shares)
    }

    fn corrupt(&self, share: &u64) -> u64 {
        share.wrapping_add(1)
    }

    fn verify(&self, message: &u64, signature: &ToySignature) -> bool {
        signature.message == *message && signature.signers.len() == usize::from(self.threshold)
    }

    fn forget(&mut self, seat: Seat) {
        self.live.remove(&seat);
    }
}
