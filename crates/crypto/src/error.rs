//! The crate's single error type.

use crate::Seat;

/// What a byte string was supposed to decode into, for [`Error::Decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// A [`crate::KeyShare`].
    KeyShare,
    /// A [`crate::WalletKey`].
    WalletKey,
    /// A [`crate::Round1Package`].
    Round1Package,
    /// A [`crate::Round2Package`].
    Round2Package,
    /// A [`crate::Commitment`].
    Commitment,
    /// A [`crate::SigningPackage`].
    SigningPackage,
    /// A [`crate::SignatureShare`].
    SignatureShare,
    /// A [`crate::Signature`].
    Signature,
    /// An [`crate::XOnlyKey`].
    XOnlyKey,
    /// A secret key to import.
    SecretKey,
    /// A [`crate::RepairDelta`] or [`crate::RepairSigma`].
    RepairValue,
    /// A [`crate::RepairCommitments`].
    RepairCommitments,
}

/// Every way an operation of this crate can fail.
///
/// All failures are deterministic in their inputs: retrying the same call
/// with the same inputs fails the same way, so this crate has no retry
/// class (callers classify: a caller recovers by obtaining different
/// inputs, such as fresh packages or another signer set). Where a peer is
/// to blame, the variant names its seat ([`Error::culprits`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Threshold and group size violate `2 <= threshold <= signers <= MAX_SIGNERS`.
    #[error("invalid group parameters: threshold {threshold}, signers {signers}")]
    InvalidParams {
        /// Requested threshold.
        threshold: u16,
        /// Requested group size.
        signers: u16,
    },
    /// A seat number is zero, above [`crate::MAX_SIGNERS`], or not a member
    /// of the group or wallet it was used with (for example a seat a refresh
    /// removed, named in a signing package or a repair).
    #[error("seat {seat} is not a member of the group")]
    UnknownSeat {
        /// The offending seat number.
        seat: u16,
    },
    /// A DKG round-1 package carries an invalid proof of knowledge.
    #[error("seat {culprit} sent an invalid proof of knowledge")]
    BadProofOfKnowledge {
        /// The sender of the bad package.
        culprit: Seat,
    },
    /// A DKG round-2 share does not match its sender's commitment.
    #[error("seat {culprit} sent a share inconsistent with its commitment")]
    BadShare {
        /// The sender of the bad share.
        culprit: Seat,
    },
    /// A DKG round-1 package commits to a polynomial of the wrong degree.
    #[error("seat {culprit} committed to the wrong threshold")]
    WrongCommitmentLength {
        /// The sender of the bad package.
        culprit: Seat,
    },
    /// A round received a different number of packages than the roster needs.
    #[error("expected {expected} packages, got {got}")]
    WrongPackageCount {
        /// Packages needed (every other member exactly once).
        expected: usize,
        /// Packages received.
        got: usize,
    },
    /// Two packages in one round claim the same sender.
    #[error("two packages from seat {seat}")]
    DuplicateSender {
        /// The repeated sender.
        seat: Seat,
    },
    /// A package names a sender outside the roster.
    #[error("package from seat {seat}, which is not in the roster")]
    UnknownSender {
        /// The unknown sender.
        seat: Seat,
    },
    /// A participant's own package was handed back to it as a peer's.
    #[error("own package received as a peer's")]
    OwnPackageEchoed,
    /// The BIP341 tweak of the internal key is not the group's key.
    #[error("internal key does not tweak to the group key")]
    InternalKeyMismatch,
    /// Members of one DKG or refresh ended with different transcript
    /// digests: someone showed different round-1 packages to different
    /// members, or members were given different removal sets. The result
    /// must not be used.
    #[error("members disagree on the DKG transcript; discard the result")]
    TranscriptMismatch,
    /// A key share does not belong to the wallet it was used with.
    #[error("key share of seat {seat} does not belong to this wallet")]
    WrongWallet {
        /// The share's seat.
        seat: Seat,
    },
    /// A signing package has fewer commitments than the threshold.
    #[error("{got} signers, threshold is {needed}")]
    TooFewSigners {
        /// The wallet's threshold.
        needed: u16,
        /// Commitments or shares present.
        got: usize,
    },
    /// The signer's own commitment is missing from, or differs in, the signing package.
    #[error("signing package does not hold seat {seat}'s commitment")]
    CommitmentMismatch {
        /// The signer whose commitment is missing.
        seat: Seat,
    },
    /// A share was supplied for a seat that has no commitment in the signing package,
    /// or commitments and shares disagree.
    #[error("signature shares do not match the signing package's commitments")]
    SharesMismatch,
    /// One or more signature shares are invalid; every culprit is listed.
    #[error("invalid signature shares from seats {culprits:?}")]
    InvalidShares {
        /// Every seat whose share failed verification, ascending.
        culprits: Vec<Seat>,
    },
    /// A signature does not verify under the key.
    #[error("signature does not verify")]
    InvalidSignature,
    /// A share repair was asked with fewer distinct helpers than the threshold,
    /// or with the lost seat among its helpers.
    #[error("repair needs at least the threshold of distinct helpers")]
    NotEnoughHelpers,
    /// A repair helper's delta does not match the commitment that helper
    /// published for its recipient.
    #[error("repair helper {culprit} sent a delta that does not match its commitment")]
    BadRepairDelta {
        /// The helper that sent the delta.
        culprit: Seat,
    },
    /// A repair helper's commitments do not cover exactly the helper set,
    /// or do not sum to its Lagrange-weighted verifying share on record.
    #[error("repair helper {culprit} published commitments inconsistent with its verifying share")]
    BadRepairCommitment {
        /// The helper that published the commitments.
        culprit: Seat,
    },
    /// A repair helper's sigma is not the sum of the deltas committed to it.
    #[error("repair helper {culprit} sent a sigma that is not the sum of its committed deltas")]
    BadRepairSigma {
        /// The helper that sent the sigma.
        culprit: Seat,
    },
    /// Bytes did not decode into the expected type.
    #[error("malformed {what:?} encoding")]
    Decode {
        /// What the bytes should have been.
        what: Encoding,
    },
    /// Any other failure reported by the FROST library.
    #[error("FROST: {0}")]
    Frost(#[from] frost_secp256k1_tr::Error),
}

impl Error {
    /// The seats this error blames, if any (empty when no peer is at fault).
    #[must_use]
    pub fn culprits(&self) -> Vec<Seat> {
        match self {
            Self::BadProofOfKnowledge { culprit }
            | Self::BadShare { culprit }
            | Self::WrongCommitmentLength { culprit }
            | Self::BadRepairDelta { culprit }
            | Self::BadRepairCommitment { culprit }
            | Self::BadRepairSigma { culprit } => vec![*culprit],
            Self::InvalidShares { culprits } => culprits.clone(),
            _ => Vec::new(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
