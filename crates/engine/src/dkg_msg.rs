//! DKG messages: signed envelopes, the echo hash and HPKE sealing.
//!
//! Every DKG message is signed by its sender's Ed25519 identity key over
//! (session, wallet, sender, payload), round-1 packages included, because
//! frost's proof of knowledge binds only the identifier, not the session.
//! Round-1 messages carry a fresh per-session X25519 key; round-2 packages
//! are sealed to it with HPKE (X25519, HKDF-SHA256, ChaCha20-Poly1305), so
//! the coordinator that relays them learns no secret.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

use crate::api::HexBytes;
use crate::config::{IdentityKey, WalletConfig};
use thresig_crypto::Seat;
use thresig_store::WalletId;

/// A DKG session, named by whoever starts it (32 random bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DkgSessionId(#[serde(with = "hex::serde")] pub [u8; 32]);

impl std::fmt::Debug for DkgSessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DkgSessionId({})", hex::encode(self.0))
    }
}

/// What a DKG message carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DkgPayload {
    /// Part 1: the sender's round-1 package and its per-session HPKE key.
    Round1 {
        /// The encoded frost round-1 package.
        package: HexBytes,
        /// The sender's fresh X25519 public key for this session.
        hpke_key: HexBytes,
    },
    /// Part 2: one round-2 package, sealed to its recipient.
    Round2 {
        /// The recipient's seat (a seat number from 1 in the signed bytes
        /// and in JSON).
        to: Seat,
        /// HPKE encapsulated key followed by the ciphertext.
        sealed: HexBytes,
        /// The sender's echo hash of the session's round-1 packages.
        echo: HexBytes,
    },
    /// The confirmation of a finished DKG.
    Confirm {
        /// The wallet's BIP341 output key.
        output_key: HexBytes,
        /// The transcript hash (the echo hash all members agreed on).
        transcript: HexBytes,
    },
    /// The confirmation of a finished share refresh: the whole new public
    /// key record, not just the output key, because a refresh keeps the
    /// output key whatever a member equivocated.
    RefreshConfirm {
        /// SHA-256 of the new wallet key record's bytes (verifying shares
        /// and members).
        wallet_key: HexBytes,
        /// The refresh transcript: the echo hash and the crypto layer's
        /// transcript digest of every round-1 package, hashed together.
        transcript: HexBytes,
        /// The seats the refresh removed, ascending.
        removed: Vec<Seat>,
        /// The wallet epoch the refresh starts from: a session id run
        /// again at a later epoch cannot have this confirmation replayed
        /// into it to blame its signer.
        from_epoch: crate::ids::WalletEpoch,
    },
    /// The sender's veto of a share refresh of the wallet's epoch
    /// `from_epoch`: it never released a confirmation of the session and
    /// never will, so nobody can switch to it while the sender is honest.
    /// The epoch is signed so that a veto cannot be replayed against a
    /// later refresh that reuses the session id.
    RefreshAbandon {
        /// The wallet epoch the vetoed refresh starts from.
        from_epoch: crate::ids::WalletEpoch,
    },
    /// The sender's accusation, from a part 3 that failed because the
    /// round-2 package `accused` sent it does not open, decode or verify:
    /// it reveals the session's HPKE private key so that anyone can open
    /// that package and check it (a DKG blame proof, docs/blame.md). Only
    /// a session that computed nothing is ever revealed.
    Accuse {
        /// The seat whose round-2 package failed.
        accused: Seat,
        /// The sender's HPKE private key of the session.
        hpke_secret: RevealedHpkeKey,
    },
}

/// A session's HPKE private key, revealed in an accusation. Once revealed
/// it protects nothing of a live session (its session computed no result),
/// but it stays out of `Debug`, logs and error messages, and is wiped on
/// drop like every other key.
#[derive(Clone, PartialEq, Eq)]
pub struct RevealedHpkeKey(Zeroizing<Vec<u8>>);

/// Lowercase hex in JSON, like [`HexBytes`]; the text is wiped too.
impl Serialize for RevealedHpkeKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&Zeroizing::new(hex::encode(self.as_bytes())))
    }
}

impl<'de> Deserialize<'de> for RevealedHpkeKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        hex::decode(text.as_bytes())
            .map(Self::new)
            .map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Debug for RevealedHpkeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevealedHpkeKey(<redacted>)")
    }
}

impl RevealedHpkeKey {
    /// The key's bytes as revealed (an X25519 private key, if the
    /// accuser is honest).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A revealed key of `bytes`, as a proof file or the wire carries it.
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

impl DkgPayload {
    /// The canonical byte encoding: a tag (1 round 1, 2 round 2, 3
    /// confirm, 4 refresh confirm, 5 refresh veto, 6 accusation), then each field length-prefixed (8-byte big-endian length).
    /// It is what signatures cover, and how a payload travels on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Round1 { package, hpke_key } => framed(TAG_ROUND1, &[&package.0, &hpke_key.0]),
            Self::Round2 { to, sealed, echo } => {
                framed(TAG_ROUND2, &[&to.get().to_be_bytes(), &sealed.0, &echo.0])
            }
            Self::Confirm {
                output_key,
                transcript,
            } => framed(TAG_CONFIRM, &[&output_key.0, &transcript.0]),
            Self::RefreshConfirm {
                wallet_key,
                transcript,
                removed,
                from_epoch,
            } => framed(
                TAG_REFRESH_CONFIRM,
                &[
                    &wallet_key.0,
                    &transcript.0,
                    &seat_list(removed),
                    &from_epoch.0.to_be_bytes(),
                ],
            ),
            Self::RefreshAbandon { from_epoch } => {
                framed(TAG_REFRESH_ABANDON, &[&from_epoch.0.to_be_bytes()])
            }
            Self::Accuse {
                accused,
                hpke_secret,
            } => framed(
                TAG_ACCUSE,
                &[&accused.get().to_be_bytes(), hpke_secret.as_bytes()],
            ),
        }
    }

    /// Decodes what [`DkgPayload::to_bytes`] wrote.
    ///
    /// Only the canonical encoding is accepted, so a payload has exactly one
    /// byte form and the signature over it cannot be replayed under another.
    ///
    /// # Errors
    /// [`InvalidDkgPayload`] for an unknown tag, a truncated field, a
    /// recipient seat that is not 2 bytes or is not a seat (0, or above
    /// [`thresig_crypto::MAX_SIGNERS`]), or bytes after the last field.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidDkgPayload> {
        let (tag, fields) = unframed(bytes).ok_or(InvalidDkgPayload)?;
        let hex = |field: &&[u8]| HexBytes(field.to_vec());
        match (tag, fields.as_slice()) {
            (TAG_ROUND1, [package, hpke_key]) => Ok(Self::Round1 {
                package: hex(package),
                hpke_key: hex(hpke_key),
            }),
            (TAG_ROUND2, [to, sealed, echo]) => Ok(Self::Round2 {
                to: seat_from_field(to).ok_or(InvalidDkgPayload)?,
                sealed: hex(sealed),
                echo: hex(echo),
            }),
            (TAG_CONFIRM, [output_key, transcript]) => Ok(Self::Confirm {
                output_key: hex(output_key),
                transcript: hex(transcript),
            }),
            (TAG_REFRESH_CONFIRM, [wallet_key, transcript, removed, epoch]) => {
                Ok(Self::RefreshConfirm {
                    wallet_key: hex(wallet_key),
                    transcript: hex(transcript),
                    removed: seats_of(removed).ok_or(InvalidDkgPayload)?,
                    from_epoch: epoch_from_field(epoch)?,
                })
            }
            (TAG_REFRESH_ABANDON, [epoch]) => Ok(Self::RefreshAbandon {
                from_epoch: epoch_from_field(epoch)?,
            }),
            (TAG_ACCUSE, [accused, secret]) => Ok(Self::Accuse {
                accused: seat_from_field(accused).ok_or(InvalidDkgPayload)?,
                hpke_secret: RevealedHpkeKey::new(secret.to_vec()),
            }),
            _ => Err(InvalidDkgPayload),
        }
    }
}

const TAG_ROUND1: u8 = 1;
const TAG_ROUND2: u8 = 2;
const TAG_CONFIRM: u8 = 3;
const TAG_REFRESH_CONFIRM: u8 = 4;
const TAG_REFRESH_ABANDON: u8 = 5;
const TAG_ACCUSE: u8 = 6;

/// A wallet epoch encoded in exactly eight big-endian bytes.
fn epoch_from_field(field: &[u8]) -> Result<crate::ids::WalletEpoch, InvalidDkgPayload> {
    let bytes = <[u8; 8]>::try_from(field).map_err(|_| InvalidDkgPayload)?;
    Ok(crate::ids::WalletEpoch(u64::from_be_bytes(bytes)))
}

/// Seats as consecutive 2-byte big-endian numbers.
pub(crate) fn seat_list(seats: &[Seat]) -> Vec<u8> {
    seats.iter().flat_map(|s| s.get().to_be_bytes()).collect()
}

/// Decodes [`seat_list`]: `None` for an odd length, a number that is no
/// seat, or seats not strictly ascending (one canonical form per set).
fn seats_of(bytes: &[u8]) -> Option<Vec<Seat>> {
    let pairs = bytes.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let seats = pairs
        .map(|p| Seat::try_from(u16::from_be_bytes([*p.first()?, *p.get(1)?])).ok())
        .collect::<Option<Vec<Seat>>>()?;
    seats
        .windows(2)
        .all(|w| w.first() < w.get(1))
        .then_some(seats)
}

/// What a DKG session makes: a new wallet key, or new shares of the
/// wallet's existing key (a refresh, DESIGN.md §4).
///
/// Exhaustive on purpose: a transport that carries proposals must name
/// every kind, so a new one cannot travel as another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DkgKind {
    /// A fresh key generation.
    #[default]
    Fresh,
    /// A refresh of the shares of wallet epoch `from_epoch`; the seats in
    /// `removed` (ascending) are left out of the new sharing. Every member
    /// joins only if `removed` equals its own configuration's removal set.
    Refresh {
        /// The wallet epoch being refreshed (the new shares are its
        /// successor's).
        from_epoch: crate::ids::WalletEpoch,
        /// The seats to remove, ascending.
        removed: Vec<Seat>,
    },
}

/// Bytes that are not the canonical encoding of a [`DkgPayload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a DKG payload must be one canonical tagged, length-prefixed encoding")]
pub struct InvalidDkgPayload;

/// Splits what [`framed`] wrote into its tag and fields. `None` for empty
/// input or a truncated field. Each byte string has exactly one split, so
/// a decoder that also checks the tag and the number of fields accepts
/// only canonical encodings.
pub(crate) fn unframed(bytes: &[u8]) -> Option<(u8, Vec<&[u8]>)> {
    let (&tag, mut rest) = bytes.split_first()?;
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<8>()?;
        let len = usize::try_from(u64::from_be_bytes(*len)).ok()?;
        let (value, tail) = tail.split_at_checked(len)?;
        fields.push(value);
        rest = tail;
    }
    Some((tag, fields))
}

/// A seat encoded as its number in exactly two big-endian bytes.
pub(crate) fn seat_from_field(field: &[u8]) -> Option<Seat> {
    let bytes = <[u8; 2]>::try_from(field).ok()?;
    Seat::try_from(u16::from_be_bytes(bytes)).ok()
}

/// `tag`, then each field with its 8-byte big-endian length: the one
/// framing of every signed and sealed context of the DKG and of repair.
pub(crate) fn framed(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![tag];
    for f in fields {
        out.extend_from_slice(&(f.len() as u64).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// A DKG message signed by its sender's identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignedDkgMessage {
    /// The session.
    pub session: DkgSessionId,
    /// The wallet.
    pub wallet: WalletId,
    /// The sender's seat (a seat number from 1 on the wire and in JSON).
    pub sender: Seat,
    /// The content.
    pub payload: DkgPayload,
    /// Ed25519 signature over (session, wallet, sender, payload).
    pub signature: HexBytes,
    /// A round-1 message's second signature, over the same fields, the
    /// session's [`DkgKind`] and the wallet's threshold under a domain of
    /// its own: it makes a bad round-1 package a transferable proof
    /// (docs/blame.md). Absent from
    /// members that predate it, and then left out of the JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind_signature: Option<HexBytes>,
}

/// Domain tag of DKG message signatures.
const SIGN_DOMAIN: &[u8] = b"thresig/dkg/message/v1";

/// Domain tag of a round-1 message's kind-bound signature: it differs
/// from [`SIGN_DOMAIN`] within both tags' length, so neither signature
/// is ever valid as the other.
const KIND_SIGN_DOMAIN: &[u8] = b"thresig/dkg/round1-kind/v1";

/// The bytes a kind-bound signature covers: the message's own fields, the
/// session's kind (1 fresh; 2 refresh, its epoch and removal set) and the
/// wallet's threshold, which with the kind fixes what the package must
/// hold: a verifier configured with another threshold finds the signature
/// invalid, never an honest package of the wrong size.
fn kind_signed_bytes(m: &SignedDkgMessage, kind: &DkgKind, threshold: u16) -> Vec<u8> {
    let kind = match kind {
        DkgKind::Fresh => framed(1, &[]),
        DkgKind::Refresh {
            from_epoch,
            removed,
        } => framed(2, &[&from_epoch.0.to_be_bytes(), &seat_list(removed)]),
    };
    let mut out = KIND_SIGN_DOMAIN.to_vec();
    out.extend_from_slice(&framed(
        0,
        &[
            &m.session.0,
            m.wallet.as_str().as_bytes(),
            &m.sender.get().to_be_bytes(),
            &m.payload.to_bytes(),
            &kind,
            &threshold.to_be_bytes(),
        ],
    ));
    out
}

fn signed_bytes(
    session: &DkgSessionId,
    wallet: &WalletId,
    sender: Seat,
    p: &DkgPayload,
) -> Vec<u8> {
    let mut out = SIGN_DOMAIN.to_vec();
    out.extend_from_slice(&framed(
        0,
        &[
            &session.0,
            wallet.as_str().as_bytes(),
            &sender.get().to_be_bytes(),
            &p.to_bytes(),
        ],
    ));
    out
}

impl SignedDkgMessage {
    /// A message as received from a relay, not yet verified: the engine
    /// checks the signature against its own roster when it handles it.
    pub fn new(
        session: DkgSessionId,
        wallet: WalletId,
        sender: Seat,
        payload: DkgPayload,
        signature: HexBytes,
    ) -> Self {
        Self {
            session,
            wallet,
            sender,
            payload,
            signature,
            kind_signature: None,
        }
    }

    /// The message with `kind_signature` as its kind-bound signature, as
    /// received (checked by [`SignedDkgMessage::kind_signed`]).
    #[must_use]
    pub fn with_kind_signature(mut self, kind_signature: Option<HexBytes>) -> Self {
        self.kind_signature = kind_signature;
        self
    }

    /// Signs a round-1 `payload` as [`SignedDkgMessage::sign`] does and
    /// adds the kind-bound signature over the session's `kind` and the
    /// wallet's `threshold`.
    pub fn sign_round1(
        key: &SigningKey,
        session: DkgSessionId,
        wallet: WalletId,
        sender: Seat,
        payload: DkgPayload,
        (kind, threshold): (&DkgKind, u16),
    ) -> Self {
        let mut message = Self::sign(key, session, wallet, sender, payload);
        let bytes = kind_signed_bytes(&message, kind, threshold);
        message.kind_signature = Some(identity_sign(key, &bytes));
        message
    }

    /// Whether the kind-bound signature verifies strictly under the roster
    /// key of the sender's seat in `wallet` for a session of `kind` at
    /// `wallet`'s threshold; `None` for a message without one (a sender of
    /// an earlier version).
    #[must_use]
    pub fn kind_signed(&self, wallet: &WalletConfig, kind: &DkgKind) -> Option<bool> {
        let signature = self.kind_signature.as_ref()?;
        let bytes = kind_signed_bytes(self, kind, wallet.threshold);
        Some(identity_verify(wallet, self.sender, &bytes, signature))
    }

    /// Signs `payload` as seat `sender` with that member's identity `key`.
    pub fn sign(
        key: &SigningKey,
        session: DkgSessionId,
        wallet: WalletId,
        sender: Seat,
        payload: DkgPayload,
    ) -> Self {
        let signature = identity_sign(key, &signed_bytes(&session, &wallet, sender, &payload));
        Self {
            session,
            wallet,
            sender,
            payload,
            signature,
            kind_signature: None,
        }
    }

    /// Whether the signature verifies under the roster key of the sender's
    /// seat in `wallet` (a relay checks this to name a member that answers
    /// with a message it did not sign; every member checks it again).
    pub fn verify(&self, wallet: &WalletConfig) -> bool {
        let bytes = signed_bytes(&self.session, &self.wallet, self.sender, &self.payload);
        identity_verify(wallet, self.sender, &bytes, &self.signature)
    }
}

/// An Ed25519 signature by a member's identity key over `bytes` (which
/// start with the message kind's own domain tag).
pub(crate) fn identity_sign(key: &SigningKey, bytes: &[u8]) -> HexBytes {
    HexBytes(key.sign(bytes).to_bytes().to_vec())
}

/// Whether `signature` over `bytes` verifies (strictly) under the roster
/// key of `sender`'s seat in `wallet`.
pub(crate) fn identity_verify(
    wallet: &WalletConfig,
    sender: Seat,
    bytes: &[u8],
    signature: &HexBytes,
) -> bool {
    wallet
        .member(sender)
        .is_some_and(|key| signed_by(key, bytes, &signature.0))
}

/// Whether `signature` over `bytes` verifies strictly under the identity
/// key `key`: every identity signature the engine checks goes through here.
pub(crate) fn signed_by(key: &IdentityKey, bytes: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&key.to_bytes()) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(bytes, &sig).is_ok()
}

/// The echo hash: (session, wallet, t, n, roster, every round-1 package and
/// HPKE key in seat order, and for a refresh its epoch and removal set).
/// Every member must compute the same one.
pub(crate) fn echo_hash(
    session: &DkgSessionId,
    wallet: &WalletConfig,
    kind: &DkgKind,
    round1: &[(Seat, &[u8], &[u8])],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"thresig/dkg/echo/v1");
    h.update(session.0);
    h.update((wallet.id.as_str().len() as u64).to_be_bytes());
    h.update(wallet.id.as_str().as_bytes());
    h.update(wallet.threshold.to_be_bytes());
    h.update((wallet.roster.len() as u64).to_be_bytes());
    for key in &wallet.roster {
        h.update(key.to_bytes());
    }
    for (seat, package, hpke_key) in round1 {
        h.update(seat.get().to_be_bytes());
        h.update((package.len() as u64).to_be_bytes());
        h.update(package);
        h.update((hpke_key.len() as u64).to_be_bytes());
        h.update(hpke_key);
    }
    // A fresh DKG's hash is left as it always was; a refresh appends what
    // it refreshes and whom it removes, so members told different
    // removal sets or epochs disagree from round 2 on.
    if let DkgKind::Refresh {
        from_epoch,
        removed,
    } = kind
    {
        h.update(b"refresh");
        h.update(from_epoch.0.to_be_bytes());
        let removed = seat_list(removed);
        h.update((removed.len() as u64).to_be_bytes());
        h.update(removed);
    }
    h.finalize().into()
}

/// A per-session HPKE private key, erased on drop (the x25519-dalek secret
/// inside is zeroize-on-drop).
pub(crate) struct HpkeSecret(<X25519HkdfSha256 as hpke::Kem>::PrivateKey);

impl std::fmt::Debug for HpkeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HpkeSecret(<redacted>)")
    }
}

impl HpkeSecret {
    /// The key's bytes, for an accusation that reveals it.
    pub(crate) fn reveal(&self) -> RevealedHpkeKey {
        let mut bytes = self.0.to_bytes();
        let revealed = RevealedHpkeKey::new(bytes.to_vec());
        bytes.as_mut_slice().zeroize();
        revealed
    }

    /// The revealed key `revealed` and the encoded public key it derives;
    /// `None` if it is no X25519 private key.
    pub(crate) fn from_revealed(revealed: &RevealedHpkeKey) -> Option<(Self, Vec<u8>)> {
        let secret =
            <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(revealed.as_bytes()).ok()?;
        let public = X25519HkdfSha256::sk_to_pk(&secret).to_bytes().to_vec();
        Some((Self(secret), public))
    }
}

/// A fresh HPKE key pair: the secret and the encoded public key.
pub(crate) fn hpke_keypair<R: RngCore + CryptoRng>(rng: &mut R) -> (HpkeSecret, Vec<u8>) {
    let (secret, public) = X25519HkdfSha256::gen_keypair(rng);
    (HpkeSecret(secret), public.to_bytes().to_vec())
}

/// Binds a sealed package to its session, wallet, sender and recipient.
fn seal_info(session: &DkgSessionId, wallet: &WalletId, from: Seat, to: Seat) -> Vec<u8> {
    let mut out = b"thresig/dkg/round2/v1".to_vec();
    out.extend_from_slice(&framed(
        0,
        &[
            &session.0,
            wallet.as_str().as_bytes(),
            &from.get().to_be_bytes(),
            &to.get().to_be_bytes(),
        ],
    ));
    out
}

/// The length of an X25519 encapsulated key.
const ENCAPPED_LEN: usize = 32;

/// Seals `plaintext` to `recipient_key` (an encoded X25519 public key).
/// `None` if the key does not decode or sealing fails.
pub(crate) fn seal<R: RngCore + CryptoRng>(
    recipient_key: &[u8],
    session: &DkgSessionId,
    wallet: &WalletId,
    from: Seat,
    to: Seat,
    plaintext: &[u8],
    rng: &mut R,
) -> Option<Vec<u8>> {
    seal_to(
        recipient_key,
        &seal_info(session, wallet, from, to),
        plaintext,
        rng,
    )
}

/// Seals `plaintext` to `recipient_key` (an encoded X25519 public key)
/// under the context `info`, which binds it to its session, sender and
/// recipient. `None` if the key does not decode or sealing fails.
pub(crate) fn seal_to<R: RngCore + CryptoRng>(
    recipient_key: &[u8],
    info: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Option<Vec<u8>> {
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(recipient_key).ok()?;
    let (encapped, ct) =
        hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
            &OpModeS::Base,
            &pk,
            info,
            plaintext,
            &[],
            rng,
        )
        .ok()?;
    Some([encapped.to_bytes().as_slice(), &ct].concat())
}

/// Opens what [`seal`] produced for this member. `None` if it does not
/// authenticate (sealed to another key, or for another context).
pub(crate) fn open(
    secret: &HpkeSecret,
    session: &DkgSessionId,
    wallet: &WalletId,
    from: Seat,
    to: Seat,
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    open_with(secret, &seal_info(session, wallet, from, to), sealed)
}

/// Opens what [`seal_to`] sealed under `info` for this member. `None` if it
/// does not authenticate.
pub(crate) fn open_with(
    secret: &HpkeSecret,
    info: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let (encapped, ct) = sealed.split_at_checked(ENCAPPED_LEN)?;
    let encapped = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(encapped).ok()?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &secret.0,
        &encapped,
        info,
        ct,
        &[],
    )
    .ok()
    .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The echo hash and the sealing context of a fixed DKG, as this format
    /// defines them: members of different versions must compute the
    /// same bytes, so a change on both sides at once (which every
    /// in-process DKG would accept) fails here.
    #[test]
    fn the_echo_hash_and_the_sealing_context_keep_their_bytes() {
        let identity = |n: u8| {
            crate::config::IdentityKey::from(
                ed25519_dalek::SigningKey::from_bytes(&[n; 32]).verifying_key(),
            )
        };
        let wallet_id = WalletId::new("w").unwrap();
        let config = WalletConfig::new(wallet_id.clone(), 2, (1..=3).map(identity).collect());
        let session = DkgSessionId([7; 32]);
        let seat = |n: u16| Seat::try_from(n).unwrap();
        let round1: [(Seat, &[u8], &[u8]); 2] = [(seat(1), b"p1", b"k1"), (seat(2), b"p2", b"k2")];
        assert_eq!(
            hex::encode(echo_hash(&session, &config, &DkgKind::Fresh, &round1)),
            "119ab827c7009fea4e587eaaa988153b9c2ad40852910ee8f7dfbb10618d249c"
        );
        assert_eq!(
            hex::encode(seal_info(&session, &wallet_id, seat(3), seat(2))),
            "746872657369672f646b672f726f756e64322f763100000000000000002007070707070707070707070707070707070707070707070707070707070707070000000000000001770000000000000002000300000000000000020002"
        );
    }

    fn bytes() -> impl Strategy<Value = HexBytes> {
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(HexBytes)
    }

    fn payload() -> impl Strategy<Value = DkgPayload> {
        prop_oneof![
            (bytes(), bytes())
                .prop_map(|(package, hpke_key)| DkgPayload::Round1 { package, hpke_key }),
            (1..=thresig_crypto::MAX_SIGNERS, bytes(), bytes()).prop_map(|(to, sealed, echo)| {
                DkgPayload::Round2 {
                    to: Seat::try_from(to).unwrap(),
                    sealed,
                    echo,
                }
            }),
            (bytes(), bytes()).prop_map(|(output_key, transcript)| DkgPayload::Confirm {
                output_key,
                transcript
            }),
            (
                bytes(),
                bytes(),
                proptest::collection::btree_set(1..=thresig_crypto::MAX_SIGNERS, 0..4),
                any::<u64>()
            )
                .prop_map(|(wallet_key, transcript, removed, epoch)| {
                    DkgPayload::RefreshConfirm {
                        wallet_key,
                        transcript,
                        removed: removed
                            .into_iter()
                            .map(|n| Seat::try_from(n).unwrap())
                            .collect(),
                        from_epoch: crate::ids::WalletEpoch(epoch),
                    }
                }),
            any::<u64>().prop_map(|epoch| DkgPayload::RefreshAbandon {
                from_epoch: crate::ids::WalletEpoch(epoch)
            }),
            (1..=thresig_crypto::MAX_SIGNERS, bytes()).prop_map(|(accused, secret)| {
                DkgPayload::Accuse {
                    accused: Seat::try_from(accused).unwrap(),
                    hpke_secret: RevealedHpkeKey::new(secret.0),
                }
            }),
        ]
    }

    /// A signed DKG message's signed bytes and its JSON are fixed: the
    /// sender enters the signature as its seat number in two big-endian
    /// bytes, and the JSON holds it as a number, whatever type holds it.
    #[test]
    fn the_signed_bytes_and_json_of_a_message_are_unchanged() {
        let message = golden_message(DkgPayload::Confirm {
            output_key: HexBytes(vec![1; 32]),
            transcript: HexBytes(vec![2; 4]),
        });
        assert_eq!(hex::encode(&message.signature.0), GOLDEN_SIGNATURE);
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(json["sender"], serde_json::json!(3));
        assert_reads_back(json, &message);
    }

    /// `payload` as seat 3 signs it in a fixed session of wallet `w`.
    fn golden_message(payload: DkgPayload) -> SignedDkgMessage {
        SignedDkgMessage::sign(
            &SigningKey::from_bytes(&[5; 32]),
            DkgSessionId([7; 32]),
            WalletId::new("w").unwrap(),
            Seat::try_from(3).unwrap(),
            payload,
        )
    }

    /// `json` decodes back to `message`.
    fn assert_reads_back(json: serde_json::Value, message: &SignedDkgMessage) {
        let back: SignedDkgMessage = serde_json::from_value(json).unwrap();
        assert_eq!(&back, message);
    }

    /// A round-2 message's recipient enters the signature and the JSON the
    /// same way: two big-endian bytes, a number.
    #[test]
    fn the_signed_bytes_and_json_of_a_round2_message_are_unchanged() {
        let message = golden_message(DkgPayload::Round2 {
            to: Seat::try_from(2).unwrap(),
            sealed: HexBytes(vec![4; 8]),
            echo: HexBytes(vec![6; 32]),
        });
        assert_eq!(hex::encode(&message.signature.0), GOLDEN_ROUND2_SIGNATURE);
        assert_eq!(serde_json::to_string(&message).unwrap(), GOLDEN_ROUND2_JSON);
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(json["payload"]["to"], serde_json::json!(2));
        assert_eq!(json["payload"]["kind"], serde_json::json!("round2"));
        assert_reads_back(json, &message);
    }

    /// A round-1 message's kind-bound signature covers the kind under its
    /// own domain: fixed bytes (members of different versions must agree),
    /// different for each kind, never the ordinary signature; and a message
    /// without one keeps the JSON an earlier member reads.
    #[test]
    fn the_kind_bound_signature_of_a_round1_message_is_unchanged() {
        let payload = DkgPayload::Round1 {
            package: HexBytes(vec![1; 8]),
            hpke_key: HexBytes(vec![2; 32]),
        };
        let signed = |kind: &DkgKind| {
            SignedDkgMessage::sign_round1(
                &SigningKey::from_bytes(&[5; 32]),
                DkgSessionId([7; 32]),
                WalletId::new("w").unwrap(),
                Seat::try_from(3).unwrap(),
                payload.clone(),
                (kind, 2),
            )
        };
        let refresh = DkgKind::Refresh {
            from_epoch: crate::ids::WalletEpoch(4),
            removed: vec![Seat::try_from(2).unwrap()],
        };
        let (fresh, refreshed) = (signed(&DkgKind::Fresh), signed(&refresh));
        let hex_of = |m: &SignedDkgMessage| hex::encode(&m.kind_signature.as_ref().unwrap().0);
        assert_eq!(hex_of(&fresh), GOLDEN_FRESH_KIND_SIGNATURE);
        assert_eq!(hex_of(&refreshed), GOLDEN_REFRESH_KIND_SIGNATURE);
        assert_eq!(fresh.signature, refreshed.signature);
        assert_ne!(fresh.kind_signature, Some(fresh.signature.clone()));
        let unbound = fresh.clone().with_kind_signature(None);
        let json = serde_json::to_value(&unbound).unwrap();
        assert!(json.get("kind_signature").is_none(), "{json}");
        assert_reads_back(json, &unbound);
        assert_reads_back(serde_json::to_value(&fresh).unwrap(), &fresh);
    }

    const GOLDEN_FRESH_KIND_SIGNATURE: &str = "c2f91d06114cec667ceb072f4ba1b51ac5f2a8a20db0102209f2d3d212fbeca13741ed1e9134c544f5a157ced3a5cbe7b98c5cb63eee1f680205c0cd3310960d";

    const GOLDEN_REFRESH_KIND_SIGNATURE: &str = "84b0c236303b961c1f849b15d7e13a63b6c5c755a1baeaa537cfebbad5d79bcde8301a8f7701ac48ad1cd8052dacfb310998df72970020ee205fdd3bb80fad01";

    const GOLDEN_ROUND2_SIGNATURE: &str = "5a9b28139bd3491175d1c10394d80e0e65e7d104b9df275344a8a1ad99d6ba9d1098ae7766cd3be1508914eab0dc7c8a4c5d7b544425562cd19b53b696a00205";

    const GOLDEN_ROUND2_JSON: &str = r#"{"session":"0707070707070707070707070707070707070707070707070707070707070707","wallet":"w","sender":3,"payload":{"kind":"round2","to":2,"sealed":"0404040404040404","echo":"0606060606060606060606060606060606060606060606060606060606060606"},"signature":"5a9b28139bd3491175d1c10394d80e0e65e7d104b9df275344a8a1ad99d6ba9d1098ae7766cd3be1508914eab0dc7c8a4c5d7b544425562cd19b53b696a00205"}"#;

    const GOLDEN_SIGNATURE: &str = "6d28446fb3cf5319005510310bbce13bd30c67f79a62c32cfb5e0437ae51fccd605c540d99b95386629a9af735e80ac30be5057e7c58add7937b9d3fdb48eb08";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn payloads_round_trip_and_only_their_own_bytes_decode(
            p in payload(),
            extra in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let encoded = p.to_bytes();
            prop_assert_eq!(DkgPayload::from_bytes(&encoded), Ok(p));
            let mut longer = encoded.clone();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(DkgPayload::from_bytes(&longer), Err(InvalidDkgPayload));
            prop_assert_eq!(
                DkgPayload::from_bytes(&encoded[..encoded.len() - 1]),
                Err(InvalidDkgPayload)
            );
        }

        #[test]
        fn arbitrary_bytes_decode_only_to_their_canonical_payload(
            raw in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Ok(p) = DkgPayload::from_bytes(&raw) {
                prop_assert_eq!(p.to_bytes(), raw);
            }
        }
    }

    #[test]
    fn bad_tags_and_recipients_are_refused() {
        let confirm = DkgPayload::Confirm {
            output_key: HexBytes(vec![1; 32]),
            transcript: HexBytes(vec![2; 32]),
        };
        let mut bytes = confirm.to_bytes();
        for tag in [0u8, 5, 0xff] {
            bytes[0] = tag;
            assert_eq!(DkgPayload::from_bytes(&bytes), Err(InvalidDkgPayload));
        }
        // A round-2 recipient of 3 bytes, otherwise well framed.
        let wide = framed(TAG_ROUND2, &[&[0, 0, 1], b"sealed", b"echo"]);
        assert_eq!(DkgPayload::from_bytes(&wide), Err(InvalidDkgPayload));
        // A round-2 recipient that is no seat: 0, or above the largest.
        let above = thresig_crypto::MAX_SIGNERS + 1;
        for to in [0u16, above, u16::MAX] {
            let bad = framed(TAG_ROUND2, &[&to.to_be_bytes(), b"sealed", b"echo"]);
            assert_eq!(DkgPayload::from_bytes(&bad), Err(InvalidDkgPayload));
        }
        let max = thresig_crypto::MAX_SIGNERS.to_be_bytes();
        let last = framed(TAG_ROUND2, &[&max, b"sealed", b"echo"]);
        assert!(DkgPayload::from_bytes(&last).is_ok());
        // A length prefix far beyond the input.
        let mut huge = vec![TAG_ROUND1];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(DkgPayload::from_bytes(&huge), Err(InvalidDkgPayload));
        assert_eq!(DkgPayload::from_bytes(&[]), Err(InvalidDkgPayload));
    }
}
