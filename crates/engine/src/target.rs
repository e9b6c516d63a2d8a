//! What an attempt signs, and the derivation of the messages a signer signs.
//!
//! This is the seam where transaction checks plug in. The signer never
//! signs a message because a coordinator sent it: it derives each input's
//! message itself from the [`SigningTarget`] and refuses a package whose
//! message differs. Today the only target is a list of raw 32-byte digests,
//! allowed only where the wallet's configuration says so; the Taproot PSBT
//! target (sighash computed by the `tx` crate, prevout scripts compared with
//! the wallet's output key, sighash type and policy checked, counters charged
//! in the marker's transaction) is added here as a new variant.

use serde::{Deserialize, Serialize};

use crate::config::{RawDigestPolicy, WalletConfig};
use crate::error::{Error, PolicyReason};

/// A 32-byte message (a digest) to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(#[serde(with = "hex::serde")] pub [u8; 32]);

/// What one attempt signs: one message per input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SigningTarget {
    /// Raw digests, one per input, signed as given (only for wallets whose
    /// configuration allows raw digests).
    Digests {
        /// The digests in input order.
        digests: Vec<Digest>,
    },
}

impl SigningTarget {
    /// Raw digests, one per input.
    pub fn digests(digests: Vec<Digest>) -> Self {
        Self::Digests { digests }
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
        }
    }
}

/// The messages this signer signs for `target` on `wallet`, in input order,
/// after the wallet's policy allowed the target.
///
/// # Errors
/// [`Error::PolicyDenied`] when the wallet does not sign raw digests.
pub(crate) fn derive_messages(
    wallet: &WalletConfig,
    target: &SigningTarget,
) -> Result<Vec<[u8; 32]>, Error> {
    match target {
        SigningTarget::Digests { digests } => match wallet.raw_digests {
            RawDigestPolicy::Allow => Ok(digests.iter().map(|d| d.0).collect()),
            RawDigestPolicy::Deny => Err(Error::PolicyDenied {
                wallet: wallet.id.clone(),
                reason: PolicyReason::RawDigestsNotAllowed,
            }),
        },
    }
}
