//! Transferable blame: every round-2 answer is signed by its member's
//! identity key over the request it answers, so a coordinator that finds an
//! invalid share holds evidence, not an assertion.
//!
//! A member signs (domain tag, the request's [`package_hash`] — wallet,
//! epoch, signer set, target and every package byte —, the public key
//! record it signed with, the wallet, its seat, its shares and its fresh
//! commitments). A [`BlameProof`] is that signed answer with the request it
//! answers and that key record; [`BlameProof::verify`] needs only the
//! wallet's roster, and succeeds only when the signature is the accused
//! seat's AND one of its shares does not verify under the key record the
//! signature covers. An honest member signs only shares it computed for
//! exactly that request with its share of exactly the key record it signs,
//! which always verify, so no coordinator can turn an honest answer into a
//! proof: changing a share, a commitment, the request, its epoch or the key
//! record breaks the signature.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use thresig_crypto::{Seat, SignatureShare, SigningPackage, WalletKey};
use thresig_store::{PackageHash, Recovery, WalletId};

use crate::api::{HexBytes, Round2Request, Round2Response};
use crate::check::package_hash;
use crate::config::WalletConfig;
use crate::dkg_msg::{framed, identity_sign, identity_verify};

/// Domain tag of round-2 answer signatures (no other signed message of
/// thresig starts with it, so an answer signature is never valid as a DKG
/// or repair message, nor the other way round).
const ANSWER_DOMAIN: &[u8] = b"thresig/sign/round2-answer/v1";

/// The bytes a member's identity key signs for `answer` to the request
/// whose hash is `request`, made with the key whose public record
/// (`WalletKey::to_bytes`) is `key_record`. The share count is framed too,
/// so the split between shares and commitments is part of what is signed.
fn answer_bytes(request: &PackageHash, key_record: &[u8], answer: &Round2Response) -> Vec<u8> {
    let seat = answer.seat.get().to_be_bytes();
    let count = (answer.shares.len() as u64).to_be_bytes();
    let mut fields: Vec<&[u8]> = vec![
        &request.0,
        key_record,
        answer.wallet.as_str().as_bytes(),
        &seat,
        &count,
    ];
    fields.extend(answer.shares.iter().map(|s| s.0.as_slice()));
    fields.extend(answer.commitments.iter().map(|c| c.0.as_slice()));
    let mut out = ANSWER_DOMAIN.to_vec();
    out.extend_from_slice(&framed(0, &fields));
    out
}

impl Round2Response {
    /// Signs this answer to the request whose [`package_hash`] is
    /// `request`, computed with the key whose public record is `key_record`
    /// (`WalletKey::to_bytes`), with the answering member's identity `key`.
    pub fn sign(&mut self, key: &SigningKey, request: &PackageHash, key_record: &[u8]) {
        self.signature = identity_sign(key, &answer_bytes(request, key_record, self));
    }

    /// Whether this answer is signed, under the roster key of its seat in
    /// `wallet`, as an answer of `wallet` to the request whose
    /// [`package_hash`] is `request`, made with the key record
    /// `key_record`. A coordinator uses an answer only if it is: an
    /// unsigned or badly signed one counts as missing, since it proves
    /// nothing about the seat it names.
    pub fn signed_for(
        &self,
        wallet: &WalletConfig,
        request: &PackageHash,
        key_record: &[u8],
    ) -> bool {
        self.wallet == wallet.id
            && identity_verify(
                wallet,
                self.seat,
                &answer_bytes(request, key_record, self),
                &self.signature,
            )
    }
}

/// The format version a proof file carries.
pub(crate) const PROOF_VERSION: u32 = 1;

/// Evidence that a member sent an invalid share: its signed answer, the
/// round-2 request it answers, and the wallet key record its signature
/// covers. Serialized as JSON (`culprit-<seat>.proof.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BlameProof {
    /// The format version (1).
    pub version: u32,
    /// The wallet's public key record (`WalletKey` bytes: every seat's
    /// verifying share and the tweak) the member signed its answer with;
    /// its signature covers these bytes, so the proof needs no other copy.
    pub wallet_key: HexBytes,
    /// The round-2 request the member answered (its signing packages and
    /// the target they sign).
    pub request: Round2Request,
    /// The member's signed answer.
    pub answer: Round2Response,
}

/// What a verified proof shows.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProvenFault {
    /// The wallet.
    pub wallet: WalletId,
    /// The accused wallet seat (the one whose identity key signed).
    pub seat: Seat,
    /// The first input (from 0) whose share does not verify or decode.
    pub input: usize,
}

/// Why a blame proof does not verify. Every variant is terminal: the same
/// proof against the same roster and key record fails the same way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlameError {
    /// The proof is for another wallet than the one checked, or its answer
    /// and request name different wallets.
    #[error(
        "the proof is for wallet {proof}, not {wallet}; verify it with the configuration of a member of {proof}"
    )]
    OtherWallet {
        /// The wallet the verifier checked against.
        wallet: WalletId,
        /// The wallet the proof names.
        proof: WalletId,
    },
    /// The proof has another format version.
    #[error(
        "the proof has format version {version}, this build reads version {PROOF_VERSION}; verify it with a matching thresig"
    )]
    Version {
        /// The proof's version.
        version: u32,
    },
    /// The identity signature does not verify under the roster key of the
    /// accused seat: the answer is not that member's (or was altered).
    #[error(
        "wallet {wallet}: the answer is not signed by seat {seat}'s identity key over this request; the proof accuses nobody, and whoever altered it is not the member"
    )]
    BadSignature {
        /// The wallet.
        wallet: WalletId,
        /// The seat the answer names.
        seat: Seat,
    },
    /// The key record the member signed does not decode, or holds no
    /// verifying share for the accused seat: nothing can be checked
    /// against it.
    #[error(
        "wallet {wallet}: the proof's wallet key record does not decode or has no share of seat {seat}; the proof shows no fault"
    )]
    KeyRecord {
        /// The wallet.
        wallet: WalletId,
        /// The accused seat.
        seat: Seat,
    },
    /// The request cannot be checked (a package that does not decode or
    /// whose signers hold no share of the key), so it shows no fault.
    #[error(
        "wallet {wallet}: input {input}'s signing package cannot be checked against the wallet key; the proof shows no fault"
    )]
    Unusable {
        /// The wallet.
        wallet: WalletId,
        /// The input (from 0).
        input: usize,
    },
    /// A DKG proof's message is not signed by its sender's identity key
    /// (or was altered).
    #[error(
        "wallet {wallet}: a DKG message of seat {seat} in the proof is not signed by that seat's identity key; the proof accuses nobody, and whoever altered it is not the member"
    )]
    DkgSignature {
        /// The wallet.
        wallet: WalletId,
        /// The seat the message names as its sender.
        seat: Seat,
    },
    /// A DKG proof's messages are not of its session, or are not an
    /// accusation and the accused's round-2 message to its accuser.
    #[error(
        "wallet {wallet}: the DKG proof's messages are not one session's accusation and the accused's round-2 message to the accuser; the proof shows no fault"
    )]
    DkgParts {
        /// The wallet.
        wallet: WalletId,
    },
    /// A DKG proof's round-1 messages are not one from each participant
    /// of its session (a seat missing, twice, removed or outside the
    /// roster, or a message of another round).
    #[error(
        "wallet {wallet}: the DKG proof's round-1 messages are not one from each member taking part; the proof shows no fault"
    )]
    DkgRound1Set {
        /// The wallet.
        wallet: WalletId,
    },
    /// The proof's round-1 messages and session kind do not hash to the
    /// echo the accused signed: they are not what it answered.
    #[error(
        "wallet {wallet}: the DKG proof's round-1 messages or session kind are not the ones seat {seat} answered (its signed echo hash differs); the proof shows no fault"
    )]
    DkgEcho {
        /// The wallet.
        wallet: WalletId,
        /// The accused seat.
        seat: Seat,
    },
    /// The accusation's revealed key is not the session key of the
    /// accuser's round-1 message.
    #[error(
        "wallet {wallet}: the key seat {seat} revealed is not the session key of its round-1 message; the proof shows no fault"
    )]
    DkgKey {
        /// The wallet.
        wallet: WalletId,
        /// The accuser's seat.
        seat: Seat,
    },
    /// The accused's round-1 commitments cannot be read, so its share
    /// cannot be checked against them.
    #[error(
        "wallet {wallet}: seat {seat}'s round-1 commitments cannot be checked against; the proof shows no fault"
    )]
    DkgUnusable {
        /// The wallet.
        wallet: WalletId,
        /// The accused seat.
        seat: Seat,
    },
    /// A DKG round-1 proof's message is not a round-1 message of the
    /// proof's session.
    #[error(
        "wallet {wallet}: the DKG round-1 proof's message is not a round-1 message of its session; the proof shows no fault"
    )]
    DkgRound1Message {
        /// The wallet.
        wallet: WalletId,
    },
    /// The round-1 package passes every check a member of the session's
    /// kind makes of it: the member sent a valid one.
    #[error(
        "wallet {wallet}: seat {seat}'s round-1 package passes every check of its session's kind; the proof shows no fault, do not act on it"
    )]
    DkgRound1NoFault {
        /// The wallet.
        wallet: WalletId,
        /// The seat.
        seat: Seat,
    },
    /// Every share verifies: the member answered correctly.
    #[error(
        "wallet {wallet}: every share of seat {seat} verifies; the proof shows no fault, do not act on it"
    )]
    NoFault {
        /// The wallet.
        wallet: WalletId,
        /// The seat.
        seat: Seat,
    },
}

impl BlameError {
    /// The stable code (`docs/errors.md`, "Blame proof codes").
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::OtherWallet { .. } => "blame_other_wallet",
            Self::Version { .. } => "blame_version",
            Self::BadSignature { .. } | Self::DkgSignature { .. } => "blame_bad_signature",
            Self::DkgParts { .. } | Self::DkgRound1Message { .. } => "blame_dkg_parts",
            Self::DkgRound1Set { .. } => "blame_dkg_round1",
            Self::DkgEcho { .. } => "blame_dkg_echo",
            Self::DkgKey { .. } => "blame_dkg_key",
            Self::DkgUnusable { .. } => "blame_unusable",
            Self::KeyRecord { .. } => "blame_key_record",
            Self::Unusable { .. } => "blame_unusable",
            Self::NoFault { .. } | Self::DkgRound1NoFault { .. } => "blame_no_fault",
        }
    }

    /// Always terminal (see the type's docs).
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        Recovery::Terminal
    }
}

impl BlameProof {
    /// The proof that `answer` to `request`, signed over the key record
    /// `key_record` (`WalletKey::to_bytes`), is invalid.
    #[must_use]
    pub fn new(key_record: &[u8], request: Round2Request, answer: Round2Response) -> Self {
        Self {
            version: PROOF_VERSION,
            wallet_key: HexBytes(key_record.to_vec()),
            request,
            answer,
        }
    }

    /// Checks the proof against `wallet`'s roster alone: the answer must
    /// be signed by the accused seat's identity key over the request and
    /// the proof's key record, and one of its shares must fail to decode or
    /// verify against its package and that seat's verifying share in that
    /// record (or the answer must carry another number of shares than the
    /// request has inputs). The record needs no other source: the accused
    /// signed it, and an honest member signs only the record its share is
    /// valid under.
    ///
    /// # Errors
    /// [`BlameError`], checked in this order: wallet, version, signature,
    /// key record, then the shares.
    pub fn verify(&self, wallet: &WalletConfig) -> Result<ProvenFault, BlameError> {
        let id = &wallet.id;
        check_header(
            id,
            [&self.request.wallet, &self.answer.wallet],
            self.version,
        )?;
        let seat = self.answer.seat;
        let request = package_hash(&self.request);
        if !self.answer.signed_for(wallet, &request, &self.wallet_key.0) {
            return Err(BlameError::BadSignature {
                wallet: id.clone(),
                seat,
            });
        }
        let key = WalletKey::from_bytes(&self.wallet_key.0)
            .ok()
            .filter(|key| key.check_member(seat).is_ok())
            .ok_or_else(|| BlameError::KeyRecord {
                wallet: id.clone(),
                seat,
            })?;
        let fault = |input| ProvenFault {
            wallet: id.clone(),
            seat,
            input,
        };
        for (input, package) in self.request.packages.iter().enumerate() {
            let unusable = || BlameError::Unusable {
                wallet: id.clone(),
                input,
            };
            let package = SigningPackage::from_bytes(&package.0).map_err(|_| unusable())?;
            // A signed answer without a share for an input answers the
            // request wrongly, which no honest member does.
            let Some(share) = self.answer.shares.get(input) else {
                return Ok(fault(input));
            };
            let Ok(share) = SignatureShare::from_bytes(&share.0) else {
                return Ok(fault(input));
            };
            match thresig_crypto::verify_share(&key, &package, seat, &share) {
                Ok(()) => {}
                Err(thresig_crypto::Error::InvalidShares { .. }) => return Ok(fault(input)),
                Err(_) => return Err(unusable()),
            }
        }
        if self.answer.shares.len() != self.request.packages.len() {
            return Ok(fault(self.request.packages.len()));
        }
        Err(BlameError::NoFault {
            wallet: id.clone(),
            seat,
        })
    }
}

/// The first checks of a proof of any kind: every wallet it names is
/// `wallet`, then its format version is this build's.
///
/// # Errors
/// [`BlameError::OtherWallet`], [`BlameError::Version`].
pub(crate) fn check_header<'a>(
    wallet: &WalletId,
    named: impl IntoIterator<Item = &'a WalletId>,
    version: u32,
) -> Result<(), BlameError> {
    if let Some(other) = named.into_iter().find(|named| *named != wallet) {
        return Err(BlameError::OtherWallet {
            wallet: wallet.clone(),
            proof: other.clone(),
        });
    }
    if version != PROOF_VERSION {
        return Err(BlameError::Version { version });
    }
    Ok(())
}
