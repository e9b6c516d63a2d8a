//! The checks a signer makes before it releases a share.
//!
//! The coordinator is not trusted. [`check_round2`] is the only way to make
//! a [`CheckedRound2`], and signing takes one, so a share cannot be computed
//! for a request that skipped a check. What it checks (DESIGN.md §4):
//! the request's size; the epoch; the messages, derived by the signer itself
//! from the target (with the wallet's policy); every signer in the roster
//! and at least `t` of them; the same signer set in every package; this
//! signer's commitment present in every package, and distinct across inputs.
//! That those commitments are live and form exactly one round-1 vector is
//! checked against the nonce pool when the nonces are taken. The tweak is not
//! an input at all: signing takes it from the wallet record.

use std::collections::{BTreeSet, HashMap};

use thresig_crypto::{Commitment, Seat, SigningPackage, WalletKey};

use crate::api::Round2Request;
use crate::config::{Limits, WalletConfig};
use crate::error::{Error, RequestPart};
use crate::target::{Authority, Spend, derive_messages};
use crate::wallet::SigningKey;
use sha2::{Digest, Sha256};
use thresig_store::{CommitmentHash, PackageHash};

/// A round-2 request that passed every check that does not need the nonce
/// pool. Only [`check_round2`] builds one.
#[derive(Debug)]
pub(crate) struct CheckedRound2 {
    packages: Vec<SigningPackage>,
    own: Vec<CommitmentHash>,
    lead: CommitmentHash,
    hash: PackageHash,
    spend: Spend,
}

impl CheckedRound2 {
    /// The decoded packages, in input order.
    pub(crate) fn packages(&self) -> &[SigningPackage] {
        &self.packages
    }

    /// This signer's commitments, in input order.
    pub(crate) fn own(&self) -> &[CommitmentHash] {
        &self.own
    }

    /// This signer's commitment in the first input: the marker's key.
    pub(crate) fn lead(&self) -> CommitmentHash {
        self.lead
    }

    /// The hash binding the request's exact content.
    pub(crate) fn hash(&self) -> PackageHash {
        self.hash
    }

    /// What the messages authorize (a transaction is still to pass the
    /// policy with the rate ledger).
    pub(crate) fn spend(&self) -> &Spend {
        &self.spend
    }
}

/// Domain separation tag of commitment hashes.
const COMMITMENT_DOMAIN: &[u8] = b"thresig/engine/commitment/v1";
/// Domain separation tag of package hashes.
const PACKAGE_DOMAIN: &[u8] = b"thresig/engine/round2-request/v1";

/// SHA-256 of `domain` and each part, length-prefixed.
pub(crate) fn tagged_hash(domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The key under which one of this signer's commitments' nonce is kept in
/// memory and, for an attempt's first commitment, its marker in the store:
/// the hash of its canonical encoding, as kept from the wire or from
/// round 1 (never encoded again).
#[must_use]
pub fn commitment_hash(c: &Commitment) -> CommitmentHash {
    CommitmentHash(tagged_hash(COMMITMENT_DOMAIN, &[c.as_bytes()]))
}

/// The hash of a round-2 request's content: wallet, epoch, signer set,
/// target and every package byte, each length-prefixed.
pub fn package_hash(req: &Round2Request) -> PackageHash {
    let epoch = req.epoch.0.to_be_bytes();
    let signers: Vec<u8> = req
        .signers
        .iter()
        .flat_map(|s| s.get().to_be_bytes())
        .collect();
    let target = req.target.canonical_bytes();
    let mut parts: Vec<&[u8]> = vec![req.wallet.as_str().as_bytes(), &epoch, &signers, &target];
    parts.extend(req.packages.iter().map(|p| p.0.as_slice()));
    PackageHash(tagged_hash(PACKAGE_DOMAIN, &parts))
}

/// Checks a round-2 request for `wallet`, where this signer holds `seat` and
/// signs with `key` under `authority`. The request must ask for exactly the
/// inputs the target makes the wallet sign (for a PSBT: every input of the
/// wallet, in input order), each with exactly the message derived here.
///
/// # Errors
/// The first failed check, each with its own [`Error`] variant.
pub(crate) fn check_round2(
    wallet: &WalletConfig,
    seat: Seat,
    key: &SigningKey,
    limits: &Limits,
    authority: &Authority<'_>,
    req: &Round2Request,
) -> Result<CheckedRound2, Error> {
    let id = &wallet.id;
    let malformed = |part| Error::Malformed {
        wallet: id.clone(),
        part,
    };
    let inputs = req.packages.len();
    if inputs == 0 {
        return Err(malformed(RequestPart::NoInputs));
    }
    if inputs > limits.max_inputs {
        return Err(Error::TooManyInputs {
            wallet: id.clone(),
            requested: inputs,
            max: limits.max_inputs,
        });
    }
    if req.epoch != key.epoch {
        return Err(Error::StaleEpoch {
            wallet: id.clone(),
            requested: req.epoch,
            current: key.epoch,
        });
    }
    let derived = derive_messages(id, authority, &req.target)?;
    let messages = derived.messages;
    if messages.len() != inputs {
        return Err(malformed(RequestPart::InputCount {
            packages: inputs,
            messages: messages.len(),
        }));
    }
    let signers = check_signer_set(wallet, key.key(), &req.signers)?;

    let mut packages = Vec::with_capacity(inputs);
    let mut own = Vec::with_capacity(inputs);
    let mut seen: HashMap<CommitmentHash, usize> = HashMap::with_capacity(inputs);
    for (input, (bytes, message)) in req.packages.iter().zip(&messages).enumerate() {
        let package = SigningPackage::from_bytes(&bytes.0)
            .map_err(|_| malformed(RequestPart::SigningPackage { input }))?;
        if package.signers() != signers {
            return Err(malformed(RequestPart::SignerSet { input }));
        }
        if package.message() != message.as_slice() {
            return Err(Error::MessageMismatch {
                wallet: id.clone(),
                input,
            });
        }
        let mine = package
            .commitment(seat)
            .ok_or_else(|| Error::OwnCommitmentMissing {
                wallet: id.clone(),
                seat,
                input,
            })?;
        let hash = commitment_hash(&mine);
        if let Some(first) = seen.insert(hash, input) {
            return Err(Error::CommitmentReused {
                wallet: id.clone(),
                commitment: hash,
                first,
                second: input,
            });
        }
        own.push(hash);
        packages.push(package);
    }
    let lead = *own
        .first()
        .ok_or_else(|| malformed(RequestPart::NoInputs))?;
    Ok(CheckedRound2 {
        packages,
        own,
        lead,
        hash: package_hash(req),
        spend: derived.spend,
    })
}

/// Checks the request's signer set against the members of the wallet's
/// key record `key` (a seat a refresh removed stays in the roster) and the
/// threshold, and returns it as ascending seats (the order
/// `SigningPackage::signers` uses).
fn check_signer_set(
    wallet: &WalletConfig,
    key: &WalletKey,
    seats: &[Seat],
) -> Result<Vec<Seat>, Error> {
    let mut set = BTreeSet::new();
    for &seat in seats {
        if wallet.member(seat).is_none() || key.check_member(seat).is_err() {
            return Err(Error::IdentifierNotInRoster {
                wallet: wallet.id.clone(),
                identifier: seat,
            });
        }
        set.insert(seat);
    }
    if set.len() < usize::from(wallet.threshold) {
        return Err(Error::TooFewSigners {
            wallet: wallet.id.clone(),
            signers: set.len(),
            threshold: wallet.threshold,
        });
    }
    Ok(set.into_iter().collect())
}
