//! Test-only exports for other crates' tests (the `test-util` feature):
//! deterministic member identities, the store writes that activate a
//! wallet without a DKG, and the cluster harness the engine's own tests run
//! on ([`cluster::Cluster`]: members over the real encrypted store on
//! simulated disks, a virtual clock, a seeded RNG, a fault-injecting store
//! decorator; [`ask::Via`]: a coordinator's requests by kind; [`dkg`]: a DKG
//! driven as a coordinator would; [`repair`]: a member repair driven as a
//! coordinator would, and the lies a malicious helper can tell). Nothing here is used by the signer itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test harness: a failure here is a failed test"
)]

pub mod ask;
pub mod cluster;
pub mod dkg;
pub mod repair;

use ed25519_dalek::SigningKey;
use thresig_tx::PolicyConfig;

pub use crate::durable::activation_ops;
use crate::{CoordinatorId, IdentityKey};

/// The identity signing key of member `seat` (deterministic: the same
/// seat gets the same key in every test and crate).
pub fn identity_secret(seat: u16) -> SigningKey {
    let mut secret = [0u8; 32];
    secret[..2].copy_from_slice(&seat.to_be_bytes());
    secret[2] = 0x5e;
    SigningKey::from_bytes(&secret)
}

/// The identity key of member `seat` (as a roster lists it).
pub fn identity(seat: u16) -> IdentityKey {
    IdentityKey::from(identity_secret(seat).verifying_key())
}

/// Member `seat` acting as a coordinator.
pub fn coordinator(seat: u16) -> CoordinatorId {
    CoordinatorId(identity(seat).to_bytes())
}

/// The default policy with raw 32-byte digests allowed: what tests that
/// sign digests rather than transactions configure.
pub fn raw_policy() -> PolicyConfig {
    let mut policy = PolicyConfig::default();
    policy.allow_raw_digests = true;
    policy
}
