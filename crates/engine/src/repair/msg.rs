//! Repair messages: the session every message is bound to, the signed
//! envelope and the requests and answers of the repair protocol.
//!
//! Every repair message is signed by its sender's identity key over the
//! whole [`RepairSession`] (wallet, wallet epoch, lost seat, helper set and
//! the coordinator's nonce), so a message of one repair can be used in no
//! other, and a coordinator that changes the helper set or the lost seat
//! between steps is caught by the first member that compares.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use thresig_crypto::Seat;
use thresig_store::WalletId;

use crate::api::HexBytes;
use crate::check::tagged_hash;
use crate::config::WalletConfig;
use crate::dkg_msg::{framed, identity_sign, identity_verify, seal_to, seat_from_field, unframed};
use crate::ids::WalletEpoch;

/// One repair, as the coordinator names it: every message and request of
/// the repair carries it whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RepairSession {
    /// The wallet.
    pub wallet: WalletId,
    /// The wallet epoch whose share is rebuilt (the helpers' current one).
    pub epoch: WalletEpoch,
    /// The seat whose share is rebuilt.
    pub lost: Seat,
    /// The helpers, ascending: at least the threshold, `lost` not among them.
    pub helpers: Vec<Seat>,
    /// The coordinator's fresh 32 random bytes, so two repairs of one seat
    /// never share messages.
    #[serde(with = "hex::serde")]
    pub nonce: [u8; 32],
}

impl RepairSession {
    /// A session (see the field docs).
    pub fn new(
        wallet: WalletId,
        epoch: WalletEpoch,
        lost: Seat,
        helpers: Vec<Seat>,
        nonce: [u8; 32],
    ) -> Self {
        Self {
            wallet,
            epoch,
            lost,
            helpers,
            nonce,
        }
    }

    /// The session's digest: what every signature and seal binds.
    pub fn id(&self) -> [u8; 32] {
        let helpers: Vec<u8> = self
            .helpers
            .iter()
            .flat_map(|s| s.get().to_be_bytes())
            .collect();
        tagged_hash(
            b"thresig/repair/session/v1",
            &[
                self.wallet.as_str().as_bytes(),
                &self.epoch.0.to_be_bytes(),
                &self.lost.get().to_be_bytes(),
                &helpers,
                &self.nonce,
            ],
        )
    }
}

/// What a repair message carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RepairPayload {
    /// The member being repaired joins: its fresh per-session X25519 key,
    /// to which the helpers seal their sigmas.
    Joined {
        /// The encoded public key.
        hpke_key: HexBytes,
    },
    /// A helper (its operator approved the repair) opens: its fresh
    /// per-session key, to which the other helpers seal their deltas, and
    /// the wallet's public key record as it holds it.
    Opened {
        /// The encoded public key.
        hpke_key: HexBytes,
        /// The wallet's `WalletKey` encoding.
        wallet_key: HexBytes,
    },
    /// A helper's deltas, each sealed to its recipient helper, and its
    /// public commitments to them.
    Dealt {
        /// The encoded `RepairCommitments`.
        commitments: HexBytes,
        /// One sealed delta per helper (itself included), ascending.
        sealed: Vec<(Seat, HexBytes)>,
        /// The hash of the `Opened` messages whose keys it sealed to: a
        /// helper that holds another list (its session was replaced and
        /// opened again) accuses no one of a seal it cannot open.
        opened: HexBytes,
    },
    /// A helper's sigma, sealed to the member being repaired, with the
    /// digest of every helper's commitments it checked its deltas against.
    Summed {
        /// The sealed sigma.
        sealed: HexBytes,
        /// [`commitments_digest`] of the commitments it used.
        commitments: HexBytes,
        /// The hash of the `Joined` message whose key it sealed to.
        joined: HexBytes,
    },
}

const TAG_JOINED: u8 = 1;
const TAG_OPENED: u8 = 2;
const TAG_DEALT: u8 = 3;
const TAG_SUMMED: u8 = 4;

impl RepairPayload {
    /// The canonical encoding: a tag (1 joined, 2 opened, 3 dealt, 4
    /// summed), then each field length-prefixed (8-byte big-endian length)
    /// in declaration order; a dealt payload's sealed deltas are one field
    /// holding a framed list of (seat, sealed delta) entries. It is what signatures cover, and
    /// how a payload travels on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Joined { hpke_key } => framed(TAG_JOINED, &[&hpke_key.0]),
            Self::Opened {
                hpke_key,
                wallet_key,
            } => framed(TAG_OPENED, &[&hpke_key.0, &wallet_key.0]),
            Self::Dealt {
                commitments,
                sealed,
                opened,
            } => {
                let entries: Vec<Vec<u8>> = sealed
                    .iter()
                    .map(|(to, s)| framed(0, &[&to.get().to_be_bytes(), &s.0]))
                    .collect();
                let entries: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
                framed(
                    TAG_DEALT,
                    &[&commitments.0, &framed(0, &entries), &opened.0],
                )
            }
            Self::Summed {
                sealed,
                commitments,
                joined,
            } => framed(TAG_SUMMED, &[&sealed.0, &commitments.0, &joined.0]),
        }
    }
}

/// Bytes that are not the canonical encoding of a [`RepairPayload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a repair payload must be one canonical tagged, length-prefixed encoding")]
pub struct InvalidRepairPayload;

impl RepairPayload {
    /// Decodes what [`RepairPayload::to_bytes`] wrote; only that canonical
    /// encoding is accepted, so a payload has exactly one byte form.
    ///
    /// # Errors
    /// [`InvalidRepairPayload`] for an unknown tag, a truncated field, the
    /// wrong number of fields, or a recipient that is not a seat.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidRepairPayload> {
        let (tag, fields) = unframed(bytes).ok_or(InvalidRepairPayload)?;
        let hex = |field: &&[u8]| HexBytes(field.to_vec());
        match (tag, fields.as_slice()) {
            (TAG_JOINED, [hpke_key]) => Ok(Self::Joined {
                hpke_key: hex(hpke_key),
            }),
            (TAG_OPENED, [hpke_key, wallet_key]) => Ok(Self::Opened {
                hpke_key: hex(hpke_key),
                wallet_key: hex(wallet_key),
            }),
            (TAG_DEALT, [commitments, list, opened]) => {
                let (0, entries) = unframed(list).ok_or(InvalidRepairPayload)? else {
                    return Err(InvalidRepairPayload);
                };
                let sealed = entries
                    .iter()
                    .map(|entry| match unframed(entry) {
                        Some((0, fields)) => match fields.as_slice() {
                            [to, sealed] => Some((seat_from_field(to)?, hex(sealed))),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect::<Option<_>>()
                    .ok_or(InvalidRepairPayload)?;
                Ok(Self::Dealt {
                    commitments: hex(commitments),
                    sealed,
                    opened: hex(opened),
                })
            }
            (TAG_SUMMED, [sealed, commitments, joined]) => Ok(Self::Summed {
                sealed: hex(sealed),
                commitments: hex(commitments),
                joined: hex(joined),
            }),
            _ => Err(InvalidRepairPayload),
        }
    }
}

/// A repair message signed by its sender's identity key over (session,
/// sender, payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignedRepairMessage {
    /// The repair it belongs to.
    pub session: RepairSession,
    /// The sender's seat.
    pub sender: Seat,
    /// The content.
    pub payload: RepairPayload,
    /// Ed25519 signature over (session id, sender, payload).
    pub signature: HexBytes,
}

/// Domain tag of repair message signatures.
const SIGN_DOMAIN: &[u8] = b"thresig/repair/message/v1";

fn signed_bytes(session: &RepairSession, sender: Seat, payload: &RepairPayload) -> Vec<u8> {
    let mut out = SIGN_DOMAIN.to_vec();
    out.extend_from_slice(&framed(
        0,
        &[
            &session.id(),
            &sender.get().to_be_bytes(),
            &payload.to_bytes(),
        ],
    ));
    out
}

impl SignedRepairMessage {
    /// A message as received from a relay, not yet verified.
    pub fn new(
        session: RepairSession,
        sender: Seat,
        payload: RepairPayload,
        signature: HexBytes,
    ) -> Self {
        Self {
            session,
            sender,
            payload,
            signature,
        }
    }

    /// Signs `payload` as seat `sender` with that member's identity `key`:
    /// what a helper or the member being repaired sends (a test playing a
    /// member that lies signs its altered message with it too). Public for
    /// the same reason as [`seal_repair_value`]: only the holder of `key`
    /// can make a signature that verifies as that seat's.
    pub fn sign(
        key: &ed25519_dalek::SigningKey,
        session: RepairSession,
        sender: Seat,
        payload: RepairPayload,
    ) -> Self {
        let signature = identity_sign(key, &signed_bytes(&session, sender, &payload));
        Self {
            session,
            sender,
            payload,
            signature,
        }
    }

    /// Whether the signature verifies under the roster key of the sender's
    /// seat in `wallet`.
    pub fn verify(&self, wallet: &WalletConfig) -> bool {
        let bytes = signed_bytes(&self.session, self.sender, &self.payload);
        identity_verify(wallet, self.sender, &bytes, &self.signature)
    }
}

/// The sealing context of a delta or sigma: the session, its sender and
/// its recipient.
pub(crate) fn seal_info(session: &RepairSession, from: Seat, to: Seat) -> Vec<u8> {
    let mut out = b"thresig/repair/seal/v1".to_vec();
    out.extend_from_slice(&framed(
        0,
        &[
            &session.id(),
            &from.get().to_be_bytes(),
            &to.get().to_be_bytes(),
        ],
    ));
    out
}

/// Seals a delta or sigma `value` from seat `from` to seat `to` in
/// `session`, under the recipient's per-session HPKE key `recipient_key`
/// (from its `Opened` or `Joined` message): the seal opens only with that
/// key, and only under this session's and these seats' binding. HPKE base
/// mode does not authenticate the sender: anyone holding the public key
/// can seal a value naming any `from`; only the Ed25519 signature of the
/// message that carries the seal ([`SignedRepairMessage`]) says who sent
/// it. Public (not behind the `test-util` feature) because the process
/// tests of `thresig`, which build the engine without it, seal a lying
/// helper's value with it; it gives nobody a capability the public key
/// does not. `None` if the key does not decode.
pub fn seal_repair_value<R: RngCore + CryptoRng>(
    session: &RepairSession,
    from: Seat,
    to: Seat,
    recipient_key: &[u8],
    value: &[u8],
    rng: &mut R,
) -> Option<HexBytes> {
    seal_to(recipient_key, &seal_info(session, from, to), value, rng).map(HexBytes)
}

/// The digest of every helper's commitments, in seat order: what a helper
/// that sums and the repaired member must agree on.
pub(crate) fn commitments_digest(commitments: &[(Seat, &[u8])]) -> [u8; 32] {
    let parts: Vec<Vec<u8>> = commitments
        .iter()
        .map(|(seat, c)| framed(0, &[&seat.get().to_be_bytes(), c]))
        .collect();
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    tagged_hash(b"thresig/repair/commitments/v1", &parts)
}

/// A repair request to a signer. Helpers take `Open`, `Deal` and `Sum`
/// (each only with an unexpired approval of their own operator for the
/// wallet and lost seat); the member being repaired takes `Join` and
/// `Finish`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RepairRequest {
    /// To the member being repaired: start, answer a `Joined` message.
    Join {
        /// The repair.
        session: RepairSession,
    },
    /// To each helper: start, answer an `Opened` message.
    Open {
        /// The repair.
        session: RepairSession,
    },
    /// To each helper: every helper's `Opened`; answer a `Dealt` message.
    Deal {
        /// The repair.
        session: RepairSession,
        /// One `Opened` message from each helper.
        opened: Vec<SignedRepairMessage>,
    },
    /// To each helper: the repaired member's `Joined` and every helper's
    /// `Dealt`; answer a `Summed` message.
    Sum {
        /// The repair.
        session: RepairSession,
        /// The member being repaired's `Joined` message.
        joined: SignedRepairMessage,
        /// One `Dealt` message from each helper.
        dealt: Vec<SignedRepairMessage>,
    },
    /// To the member being repaired: every helper's `Opened`, `Dealt` and
    /// `Summed`; it checks them, rebuilds its share and stores it.
    Finish {
        /// The repair.
        session: RepairSession,
        /// One `Opened` message from each helper.
        opened: Vec<SignedRepairMessage>,
        /// One `Dealt` message from each helper.
        dealt: Vec<SignedRepairMessage>,
        /// One `Summed` message from each helper.
        summed: Vec<SignedRepairMessage>,
    },
}

impl RepairRequest {
    /// The repair the request belongs to.
    pub fn session(&self) -> &RepairSession {
        match self {
            Self::Join { session }
            | Self::Open { session }
            | Self::Deal { session, .. }
            | Self::Sum { session, .. }
            | Self::Finish { session, .. } => session,
        }
    }
}

/// A signer's answer to a repair request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RepairResponse {
    /// The signed message of this step.
    Message(SignedRepairMessage),
    /// The member's share is rebuilt, checked and stored: the wallet is
    /// active on it again at this epoch.
    Repaired {
        /// The wallet.
        wallet: WalletId,
        /// The repaired seat.
        seat: Seat,
        /// The wallet epoch of the rebuilt share.
        epoch: WalletEpoch,
    },
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bytes() -> impl Strategy<Value = HexBytes> {
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(HexBytes)
    }

    fn payload() -> impl Strategy<Value = RepairPayload> {
        let seat = (1..=thresig_crypto::MAX_SIGNERS).prop_map(|n| Seat::try_from(n).unwrap());
        prop_oneof![
            bytes().prop_map(|hpke_key| RepairPayload::Joined { hpke_key }),
            (bytes(), bytes()).prop_map(|(hpke_key, wallet_key)| RepairPayload::Opened {
                hpke_key,
                wallet_key
            }),
            (
                bytes(),
                proptest::collection::vec((seat, bytes()), 0..4),
                bytes()
            )
                .prop_map(|(commitments, sealed, opened)| RepairPayload::Dealt {
                    commitments,
                    sealed,
                    opened
                }),
            (bytes(), bytes(), bytes()).prop_map(|(sealed, commitments, joined)| {
                RepairPayload::Summed {
                    sealed,
                    commitments,
                    joined,
                }
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn payloads_round_trip_and_only_their_own_bytes_decode(
            p in payload(),
            extra in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let encoded = p.to_bytes();
            prop_assert_eq!(RepairPayload::from_bytes(&encoded), Ok(p));
            let mut longer = encoded.clone();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(RepairPayload::from_bytes(&longer), Err(InvalidRepairPayload));
        }

        #[test]
        fn arbitrary_bytes_decode_only_to_their_canonical_payload(
            raw in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Ok(p) = RepairPayload::from_bytes(&raw) {
                prop_assert_eq!(p.to_bytes(), raw);
            }
        }
    }
}
