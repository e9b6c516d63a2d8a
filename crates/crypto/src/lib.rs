//! Threshold Schnorr signatures for Bitcoin Taproot, over `frost-secp256k1-tr`.
//!
//! This is the only crate of thresig that touches FROST. It offers, per member:
//!
//! - **DKG** ([`DkgRound1`] → [`DkgRound2`] → [`DkgOutput`]): a state machine
//!   over the three FROST DKG parts, each step consuming the previous state,
//!   with typed errors that name the culprit seat.
//! - **Key convention** ([`WalletKey`]): frost's DKG output is already
//!   BIP341-tweaked for the key path, dealer output is not. A `WalletKey`
//!   records the origin, the script tree, the internal and output keys, and
//!   is the only input from which signing, share verification and
//!   aggregation take their tweak, so no key is tweaked twice.
//! - **Signing**: [`commit`] (round 1, a [`SecretNonce`] that can be
//!   neither cloned nor serialized) → [`sign`] (round 2, consumes the nonce)
//!   → [`verify_share`] per share as it arrives → [`aggregate`] (blames every
//!   invalid share) → [`verify`] (BIP340). A coordinator that checks every
//!   share of one package prepares it once ([`PreparedPackage`]: encoded
//!   once, the session's binding factors and group commitment computed once)
//!   and checks each share against it, then aggregates against it too.
//! - **In-process runs** ([`dkg_in_process`], [`run_in_process`]): every
//!   member in one process, for demos, tests and benchmarks.
//! - **Lifecycle**: share refresh by the DKG variant ([`DkgRound1::refresh`]),
//!   share repair ([`repair_step1`], [`repair_step2`], [`repair_step3`]),
//!   import of an existing key by a trusted-dealer split ([`import_key`]).
//!
//! Members are [`Seat`]s, `1..=n` at key generation; a seat's FROST
//! identifier is the scalar equal to its number. A refresh can remove seats,
//! so a wallet's members are [`WalletKey::members`]: signing, share
//! verification, aggregation and repair accept only members
//! ([`WalletKey::check_member`]). Everything other layers store or send has
//! `to_bytes`/`from_bytes`; decoding never panics and accepts only the
//! canonical encoding (the one `to_bytes` writes), so equal values have
//! equal bytes. Secrets ([`KeyShare`], [`SecretNonce`], [`Round2Package`],
//! repair values) are zeroized on drop, redacted in `Debug`, and encoded into
//! buffers of exact size that are wiped on drop. Randomness is always a
//! caller-supplied `RngCore + CryptoRng` (rand_core 0.6).
//!
//! ```
//! use std::collections::BTreeMap;
//! use rand_core::OsRng;
//! use thresig_crypto::*;
//!
//! # fn main() -> Result<(), Error> {
//! let params = GroupParams::new(2, 3)?;
//! let rng = &mut OsRng;
//! // Part 1: every member publishes a round-1 package.
//! let mut round1 = Vec::new();
//! let mut states = Vec::new();
//! for seat in params.seats() {
//!     let (state, package) = DkgRound1::start(params, seat, ScriptTree::KeyPathOnly, rng)?;
//!     round1.push((seat, package));
//!     states.push(state);
//! }
//! // Part 2: each receives the others' round-1 packages, sends one secret package per peer.
//! let mut inbox: BTreeMap<Seat, Vec<(Seat, Round2Package)>> = BTreeMap::new();
//! let mut states2 = Vec::new();
//! for state in states {
//!     let me = state.seat();
//!     let peers = round1.iter().filter(|(s, _)| *s != me).cloned().collect();
//!     let (state, outgoing) = state.receive(peers)?;
//!     for (to, package) in outgoing {
//!         inbox.entry(to).or_default().push((me, package));
//!     }
//!     states2.push(state);
//! }
//! // Part 3: each derives its key share and the wallet key.
//! let mut shares = BTreeMap::new();
//! let mut wallet = None;
//! for state in states2 {
//!     let me = state.seat();
//!     let (share, key, _transcript) =
//!         state.finish(inbox.remove(&me).unwrap_or_default())?.into_parts();
//!     shares.insert(me, share);
//!     wallet = Some(key);
//! }
//! let wallet = wallet.ok_or(Error::InvalidSignature)?;
//!
//! // Sign with seats 1 and 3.
//! let message = [7u8; 32];
//! let signers: Vec<&KeyShare> = [1u16, 3].iter().filter_map(|s| shares.get(&Seat::try_from(*s).ok()?)).collect();
//! let (nonces, commitments): (Vec<_>, BTreeMap<_, _>) = signers
//!     .iter()
//!     .map(|share| { let (n, c) = commit(share, rng); (n, (share.seat(), c)) })
//!     .unzip();
//! let package = SigningPackage::new(&commitments, &message)?;
//! let mut sig_shares = BTreeMap::new();
//! for (nonce, share) in nonces.into_iter().zip(signers) {
//!     let s = sign(nonce, &package, share, &wallet)?;
//!     verify_share(&wallet, &package, share.seat(), &s)?;
//!     sig_shares.insert(share.seat(), s);
//! }
//! let signature = aggregate(&wallet, &package, &sig_shares)?;
//! verify(&wallet.output_key(), &message, &signature)?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod codec;
mod dealer;
mod dkg;
mod dkg_batch;
mod error;
mod ids;
mod keys;
mod local;
mod poly;
mod repair;
mod session;
mod sign;
mod taproot;
mod wire;

pub use dealer::import_key;
pub use dkg::{
    DkgOutput, DkgRound1, DkgRound2, Round1Fault, Round1Package, Round2Package, ShareKind,
    check_round1_package, verify_round2_share,
};
pub use error::{Encoding, Error, Result};
pub use ids::{GroupParams, MAX_SIGNERS, Seat};
pub use keys::KeyShare;
pub use local::{LocalGroup, dkg_in_process, run_in_process};
pub use repair::{
    HelperDeltas, RepairCommitments, RepairDelta, RepairSigma, repair_step1, repair_step2,
    repair_step3,
};
pub use session::PreparedPackage;
pub use sign::{
    Commitment, SecretNonce, Signature, SignatureShare, SigningPackage, aggregate, commit, sign,
    verify, verify_share,
};
pub use taproot::{
    KeyOrigin, MerkleRoot, ScriptTree, WalletKey, XOnlyKey, tap_tweak, taproot_output_key,
};
