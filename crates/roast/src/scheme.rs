//! The per-input cryptography the coordinator needs, as a trait.

use std::collections::BTreeMap;

use crate::Seat;

/// The result of checking one signer's share for one input.
///
/// Kept apart from [`Scheme::Error`] on purpose: only [`Verdict::Invalid`]
/// makes a signer malicious. A check that cannot run at all (a key that
/// lacks the seat, say) is the coordinator's own setup error and must never
/// be blamed on the signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The share is valid for this seat, package and key.
    Valid,
    /// The share does not verify: its sender is malicious.
    Invalid,
}

/// Threshold-signature operations for one input (one message), which the
/// coordinator applies element-wise to the per-input vectors it handles.
///
/// ROAST itself is independent of the signature scheme; keeping the scheme
/// behind this trait lets the protocol logic be tested with scripted faults
/// and lets the real implementation (FROST over secp256k1 with the wallet's
/// Taproot tweak) live beside the crypto it wraps. Every method is a pure
/// function of its arguments and the implementor's public key material: no
/// clock, no randomness.
///
/// # Invariants
/// An implementation must verify shares against exactly the key package the
/// signers sign with (for Taproot, the same tweak), or every honest signer
/// would be reported as malicious.
pub trait Scheme {
    /// What one input signs (for Taproot, its 32-byte BIP341 sighash).
    type Message;
    /// One signer's round-1 commitment for one input. Compared for equality
    /// so that no commitment is handed out twice.
    type Commitment: Clone + PartialEq;
    /// The round-2 request for one input: the message and the commitments of
    /// every signer of the session.
    type Package;
    /// One signer's signature share for one input.
    type Share;
    /// The final signature for one input.
    type Signature;
    /// Why an operation could not run (not a verdict on a signer).
    type Error: std::error::Error;

    /// Builds the signing package for one input from the commitments of a
    /// session's signers.
    ///
    /// # Errors
    /// If the implementation cannot build a package from these commitments;
    /// the coordinator then fails the run ([`crate::Failure::Scheme`]).
    fn package(
        &self,
        message: &Self::Message,
        commitments: &BTreeMap<Seat, Self::Commitment>,
    ) -> Result<Self::Package, Self::Error>;

    /// Checks `seat`'s share for the input `package` signs.
    ///
    /// # Errors
    /// If the check cannot run (for example the key has no verifying share
    /// for `seat`); an invalid share is `Ok(Verdict::Invalid)`, not an error.
    fn verify_share(
        &self,
        package: &Self::Package,
        seat: Seat,
        share: &Self::Share,
    ) -> Result<Verdict, Self::Error>;

    /// Combines the verified shares of every signer of `package` into the
    /// input's signature and verifies that signature under the output key.
    ///
    /// # Errors
    /// If aggregation or the final verification fails; with every share
    /// verified beforehand that means the key material is inconsistent.
    fn aggregate(
        &self,
        package: &Self::Package,
        shares: &BTreeMap<Seat, Self::Share>,
    ) -> Result<Self::Signature, Self::Error>;
}
