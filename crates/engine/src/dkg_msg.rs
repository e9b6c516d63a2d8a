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
use zeroize::Zeroizing;

use crate::api::HexBytes;
use crate::config::WalletConfig;
use crate::ids::WalletId;

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
        /// The recipient's seat number.
        to: u16,
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
}

impl DkgPayload {
    /// A canonical encoding for signing: a tag, then each field
    /// length-prefixed.
    fn canonical(&self) -> Vec<u8> {
        let (tag, fields): (u8, Vec<&[u8]>) = match self {
            Self::Round1 { package, hpke_key } => (1, vec![&package.0, &hpke_key.0]),
            Self::Round2 { to, sealed, echo } => {
                return framed(2, &[&to.to_be_bytes(), &sealed.0, &echo.0]);
            }
            Self::Confirm {
                output_key,
                transcript,
            } => (3, vec![&output_key.0, &transcript.0]),
        };
        framed(tag, &fields)
    }
}

fn framed(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
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
    /// The sender's seat number.
    pub sender: u16,
    /// The content.
    pub payload: DkgPayload,
    /// Ed25519 signature over (session, wallet, sender, payload).
    pub signature: HexBytes,
}

/// Domain tag of DKG message signatures.
const SIGN_DOMAIN: &[u8] = b"thresig/dkg/message/v1";

fn signed_bytes(session: &DkgSessionId, wallet: &WalletId, sender: u16, p: &DkgPayload) -> Vec<u8> {
    let mut out = SIGN_DOMAIN.to_vec();
    out.extend_from_slice(&framed(
        0,
        &[
            &session.0,
            wallet.as_str().as_bytes(),
            &sender.to_be_bytes(),
            &p.canonical(),
        ],
    ));
    out
}

impl SignedDkgMessage {
    /// Signs `payload` as seat `sender` with that member's identity `key`.
    pub fn sign(
        key: &SigningKey,
        session: DkgSessionId,
        wallet: WalletId,
        sender: u16,
        payload: DkgPayload,
    ) -> Self {
        let signature = key.sign(&signed_bytes(&session, &wallet, sender, &payload));
        Self {
            session,
            wallet,
            sender,
            payload,
            signature: HexBytes(signature.to_bytes().to_vec()),
        }
    }

    /// Whether the signature verifies under the roster key of the sender's
    /// seat in `wallet`.
    pub(crate) fn verify(&self, wallet: &WalletConfig) -> bool {
        let Ok(seat) = thresig_crypto::Seat::try_from(self.sender) else {
            return false;
        };
        let Some(key) = wallet.member(seat) else {
            return false;
        };
        let Ok(key) = VerifyingKey::from_bytes(&key.to_bytes()) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&self.signature.0) else {
            return false;
        };
        let bytes = signed_bytes(&self.session, &self.wallet, self.sender, &self.payload);
        key.verify_strict(&bytes, &sig).is_ok()
    }
}

/// The echo hash: (session, wallet, t, n, roster, every round-1 package and
/// HPKE key in seat order). Every member must compute the same one.
pub(crate) fn echo_hash(
    session: &DkgSessionId,
    wallet: &WalletConfig,
    round1: &[(u16, &[u8], &[u8])],
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
        h.update(seat.to_be_bytes());
        h.update((package.len() as u64).to_be_bytes());
        h.update(package);
        h.update((hpke_key.len() as u64).to_be_bytes());
        h.update(hpke_key);
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

/// A fresh HPKE key pair: the secret and the encoded public key.
pub(crate) fn hpke_keypair<R: RngCore + CryptoRng>(rng: &mut R) -> (HpkeSecret, Vec<u8>) {
    let (secret, public) = X25519HkdfSha256::gen_keypair(rng);
    (HpkeSecret(secret), public.to_bytes().to_vec())
}

/// Binds a sealed package to its session, wallet, sender and recipient.
fn seal_info(session: &DkgSessionId, wallet: &WalletId, from: u16, to: u16) -> Vec<u8> {
    let mut out = b"thresig/dkg/round2/v1".to_vec();
    out.extend_from_slice(&framed(
        0,
        &[
            &session.0,
            wallet.as_str().as_bytes(),
            &from.to_be_bytes(),
            &to.to_be_bytes(),
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
    from: u16,
    to: u16,
    plaintext: &[u8],
    rng: &mut R,
) -> Option<Vec<u8>> {
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(recipient_key).ok()?;
    let info = seal_info(session, wallet, from, to);
    let (encapped, ct) =
        hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
            &OpModeS::Base,
            &pk,
            &info,
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
    from: u16,
    to: u16,
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let (encapped, ct) = sealed.split_at_checked(ENCAPPED_LEN)?;
    let encapped = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(encapped).ok()?;
    let info = seal_info(session, wallet, from, to);
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &secret.0,
        &encapped,
        &info,
        ct,
        &[],
    )
    .ok()
    .map(Zeroizing::new)
}
