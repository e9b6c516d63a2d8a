//! What an attempt signs, and the derivation of the messages a signer signs.
//!
//! The signer never signs a message because a coordinator sent it: it
//! derives each input's message itself from the [`SigningTarget`] and
//! refuses a package whose message differs. A Taproot PSBT is parsed
//! against the wallet's own record (keys and script-tree root from the
//! store, network from the signer's configuration, never from the request)
//! and every input the wallet signs gets its BIP341 key-path sighash; raw
//! 32-byte digests are signed only where the wallet's policy allows them.
//! The transaction's policy check and rate charge follow in the signer,
//! inside the marker's commit.

use bitcoin::hashes::Hash;
use bitcoin::key::XOnlyPublicKey;
use bitcoin::taproot::TapNodeHash;
use serde::{Deserialize, Serialize};
use thresig_crypto::{ScriptTree, WalletKey};
use thresig_tx::{Network, Policy, TaprootWallet, WalletPsbt};

use crate::api::HexBytes;
use crate::error::{Error, InternalFault};
use crate::wallet::Role;
use thresig_store::WalletId;

/// A 32-byte message (a digest) to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(#[serde(with = "hex::serde")] pub [u8; 32]);

/// What one attempt signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SigningTarget {
    /// Raw digests, one per input, signed as given (only for wallets whose
    /// policy sets `allow_raw_digests`).
    Digests {
        /// The digests in input order.
        digests: Vec<Digest>,
    },
    /// A PSBT (BIP174 binary encoding): one message per input the wallet
    /// signs, in input order, each the BIP341 key-path sighash the signer
    /// computes itself.
    Psbt {
        /// The PSBT's bytes.
        psbt: HexBytes,
    },
}

impl SigningTarget {
    /// Raw digests, one per input.
    pub fn digests(digests: Vec<Digest>) -> Self {
        Self::Digests { digests }
    }

    /// A PSBT in its binary encoding.
    pub fn psbt(bytes: Vec<u8>) -> Self {
        Self::Psbt {
            psbt: HexBytes(bytes),
        }
    }

    /// A canonical byte encoding, hashed into the package hash so that two
    /// requests with different targets are never the same attempt.
    pub(crate) fn canonical_bytes(&self) -> Vec<u8> {
        match self {
            Self::Digests { digests } => {
                let mut out = Vec::with_capacity(1 + 32 * digests.len());
                out.push(0x01);
                for d in digests {
                    out.extend_from_slice(&d.0);
                }
                out
            }
            Self::Psbt { psbt } => [&[0x02][..], &psbt.0].concat(),
        }
    }
}

/// What a signing target authorizes, once its messages were derived.
#[derive(Debug)]
pub(crate) enum Spend {
    /// Raw digests the wallet's policy allows.
    RawDigests,
    /// A transaction, still to be checked by the policy (with the rate
    /// ledger) inside the marker's commit.
    Transaction(Box<WalletPsbt>),
}

/// The messages this signer signs for a target, in input order, and what
/// they authorize.
#[derive(Debug)]
pub(crate) struct Derived {
    pub(crate) messages: Vec<[u8; 32]>,
    pub(crate) spend: Spend,
}

/// What decides which targets a wallet signs: its validated policy, its
/// role (active or rekeying) and its own spend identity.
#[derive(Debug)]
pub(crate) struct Authority<'a> {
    pub(crate) policy: &'a Policy,
    pub(crate) role: Role,
    pub(crate) taproot: &'a TaprootWallet,
}

/// Derives the messages of `target` for the wallet `id` under `authority`.
///
/// # Errors
/// [`Error::RekeyInProgress`] for raw digests on a rekeying wallet;
/// [`Error::PolicyDenied`] for raw digests the policy refuses;
/// [`Error::Transaction`] for a PSBT that does not parse or cannot be
/// signed for the wallet.
pub(crate) fn derive_messages(
    id: &WalletId,
    authority: &Authority<'_>,
    target: &SigningTarget,
) -> Result<Derived, Error> {
    match target {
        SigningTarget::Digests { digests } => {
            if authority.role == Role::Rekeying {
                return Err(Error::RekeyInProgress { wallet: id.clone() });
            }
            authority
                .policy
                .check_raw_digests()
                .map_err(|e| tx_error(id, e))?;
            Ok(Derived {
                messages: digests.iter().map(|d| d.0).collect(),
                spend: Spend::RawDigests,
            })
        }
        SigningTarget::Psbt { psbt } => {
            let psbt =
                WalletPsbt::from_bytes(&psbt.0, authority.taproot).map_err(|e| tx_error(id, e))?;
            let messages = psbt
                .wallet_sighashes()
                .map_err(|e| tx_error(id, e))?
                .iter()
                .map(|s| s.sighash.to_byte_array())
                .collect();
            Ok(Derived {
                messages,
                spend: Spend::Transaction(Box::new(psbt)),
            })
        }
    }
}

/// The engine error of a `tx` crate error: a policy refusal stays
/// structured as `policy_denied`, anything else refuses the transaction.
pub(crate) fn tx_error(wallet: &WalletId, e: thresig_tx::Error) -> Error {
    match e {
        thresig_tx::Error::PolicyDenied(denial) => Error::PolicyDenied {
            wallet: wallet.clone(),
            denial,
        },
        source => Error::Transaction {
            wallet: wallet.clone(),
            source,
        },
    }
}

/// The wallet's spend identity on `network`, from its key record only.
///
/// # Errors
/// [`Error::Internal`] if the record's keys are not valid BIP340 keys or
/// its output key is not the tweak of its internal key (the crypto crate
/// checks both when the record is decoded).
pub fn taproot_wallet(network: Network, key: &WalletKey) -> Result<TaprootWallet, Error> {
    let invariant = |_| Error::Internal(InternalFault::Invariant);
    let internal = XOnlyPublicKey::from_slice(&key.internal_key().to_bytes()).map_err(invariant)?;
    let output = XOnlyPublicKey::from_slice(&key.output_key().to_bytes()).map_err(invariant)?;
    let root = match key.script_tree() {
        ScriptTree::Root(root) => Some(TapNodeHash::from_byte_array(root.0)),
        ScriptTree::KeyPathOnly => None,
        _ => return Err(Error::Internal(InternalFault::Invariant)),
    };
    TaprootWallet::from_keys(network, internal, root, output)
        .map_err(|_| Error::Internal(InternalFault::Invariant))
}
