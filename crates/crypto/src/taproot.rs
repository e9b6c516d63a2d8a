//! BIP341 keys and the per-wallet key convention.

use std::collections::BTreeMap;
use std::fmt;

use frost_secp256k1_tr::VerifyingKey;
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage, Tweak as _};
use sha2::{Digest as _, Sha256};

use crate::{Encoding, Error, GroupParams, Result, Seat, poly};

/// A BIP340 x-only public key (32 bytes), always a valid curve point.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct XOnlyKey([u8; 32]);

impl XOnlyKey {
    /// Parses and validates an x-only key.
    ///
    /// # Errors
    /// [`Error::Decode`] if the bytes are not the x coordinate of a curve point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self> {
        let key = Self(bytes);
        key.to_verifying_key()?;
        Ok(key)
    }

    /// The 32 key bytes.
    #[must_use]
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// The even-y point with this x coordinate (BIP340 lift_x).
    pub(crate) fn to_verifying_key(self) -> Result<VerifyingKey> {
        let mut compressed = [0u8; 33];
        let (prefix, x) = compressed.split_at_mut(1);
        prefix.copy_from_slice(&[0x02]);
        x.copy_from_slice(&self.0);
        VerifyingKey::deserialize(&compressed).map_err(|_| Error::Decode {
            what: Encoding::XOnlyKey,
        })
    }

    /// The x coordinate of a frost verifying key.
    pub(crate) fn of(key: &VerifyingKey) -> Result<Self> {
        let compressed = key.serialize()?;
        let x: [u8; 32] =
            compressed
                .get(1..)
                .and_then(|x| x.try_into().ok())
                .ok_or(Error::Decode {
                    what: Encoding::XOnlyKey,
                })?;
        Ok(Self(x))
    }
}

impl fmt::Debug for XOnlyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XOnlyKey({self:x})")
    }
}

impl fmt::LowerHex for XOnlyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The 32-byte root of a Taproot script tree (BIP341 `taproot merkle root`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MerkleRoot(pub [u8; 32]);

/// Whether a Taproot output commits to a script tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScriptTree {
    /// Key path only: the output key is `tweak(internal, none)`.
    KeyPathOnly,
    /// A script tree with this root: the output key is `tweak(internal, root)`.
    Root(MerkleRoot),
}

impl ScriptTree {
    pub(crate) fn root_bytes(&self) -> Option<[u8; 32]> {
        match self {
            Self::KeyPathOnly => None,
            Self::Root(root) => Some(root.0),
        }
    }
}

/// How a wallet's key came to be, which decides how it is tweaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyOrigin {
    /// Distributed key generation: frost's output is already key-path tweaked.
    Dkg,
    /// Trusted-dealer split of an existing key: frost's output is untweaked.
    Imported,
}

/// The BIP341 TapTweak scalar `hash_TapTweak(internal || root)`, big-endian.
#[must_use]
pub fn tap_tweak(internal: &XOnlyKey, tree: &ScriptTree) -> [u8; 32] {
    let tag = Sha256::digest(b"TapTweak");
    let mut hasher = Sha256::new();
    hasher.update(tag);
    hasher.update(tag);
    hasher.update(internal.0);
    if let Some(root) = tree.root_bytes() {
        hasher.update(root);
    }
    hasher.finalize().into()
}

/// The BIP341 output key `lift_x(internal) + tap_tweak(internal, tree)·G`, x-only.
///
/// # Errors
/// [`Error::Frost`] in the negligible case that the tweak is out of range or
/// the sum is the point at infinity.
pub fn taproot_output_key(internal: &XOnlyKey, tree: &ScriptTree) -> Result<XOnlyKey> {
    let lifted = PublicKeyPackage::new(BTreeMap::new(), internal.to_verifying_key()?, None);
    XOnlyKey::of(lifted.tweak(tree.root_bytes()).verifying_key())
}

/// A wallet's public key material and its key convention: the only input
/// that decides how signing, share verification and aggregation tweak keys.
///
/// | origin     | script tree | internal key | output key       | signing tweak |
/// |------------|-------------|--------------|------------------|---------------|
/// | `Dkg`      | key path    | P            | Q = tweak(P)     | none          |
/// | `Dkg`      | root m      | Q            | tweak(Q, m)      | m             |
/// | `Imported` | key path    | P            | tweak(P)         | key path      |
/// | `Imported` | root m      | P            | tweak(P, m)      | m             |
///
/// P is the untweaked group key (for DKG, the sum of the members' round-1
/// constant-term commitments); Q is frost's DKG verifying key. Invariant:
/// the tweaked public key package held here has verifying key `output_key`,
/// checked at construction and decoding, so no key is tweaked twice.
#[derive(Clone, PartialEq, Eq)]
pub struct WalletKey {
    origin: KeyOrigin,
    tree: ScriptTree,
    internal: XOnlyKey,
    output: XOnlyKey,
    /// The internal key recorded at DKG time (P), for `Dkg` wallets.
    dkg_untweaked: Option<XOnlyKey>,
    /// frost's public key package as produced (DKG: key Q; import: key P).
    group: PublicKeyPackage,
    /// `group` with the signing tweak applied; its key is `output`.
    signing_group: PublicKeyPackage,
}

const WALLET_KEY_VERSION: u8 = 1;

/// Where the bytes of a wallet key record come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A peer, a file, an operator: every check applies.
    Outside,
    /// The caller's own authenticated storage, which sealed the output of
    /// [`WalletKey::to_bytes`].
    Stored,
}

impl WalletKey {
    /// Records a DKG wallet from its untweaked key P and frost's package (key Q).
    pub(crate) fn from_dkg(
        untweaked: XOnlyKey,
        group: PublicKeyPackage,
        tree: ScriptTree,
    ) -> Result<Self> {
        let q = XOnlyKey::of(group.verifying_key())?;
        if taproot_output_key(&untweaked, &ScriptTree::KeyPathOnly)? != q {
            return Err(Error::InternalKeyMismatch);
        }
        let (internal, signing_group) = match tree {
            ScriptTree::KeyPathOnly => (untweaked, group.clone()),
            ScriptTree::Root(root) => (q, group.clone().tweak(Some(root.0))),
        };
        Self::finish(
            KeyOrigin::Dkg,
            tree,
            internal,
            Some(untweaked),
            group,
            signing_group,
        )
    }

    /// Records an imported (dealer-split) wallet from frost's package (key P).
    pub(crate) fn from_import(group: PublicKeyPackage, tree: ScriptTree) -> Result<Self> {
        let internal = XOnlyKey::of(group.verifying_key())?;
        let signing_group = group.clone().tweak(tree.root_bytes());
        Self::finish(
            KeyOrigin::Imported,
            tree,
            internal,
            None,
            group,
            signing_group,
        )
    }

    fn finish(
        origin: KeyOrigin,
        tree: ScriptTree,
        internal: XOnlyKey,
        dkg_untweaked: Option<XOnlyKey>,
        group: PublicKeyPackage,
        signing_group: PublicKeyPackage,
    ) -> Result<Self> {
        let output = taproot_output_key(&internal, &tree)?;
        if XOnlyKey::of(signing_group.verifying_key())? != output {
            return Err(Error::InternalKeyMismatch);
        }
        Ok(Self {
            origin,
            tree,
            internal,
            output,
            dkg_untweaked,
            group,
            signing_group,
        })
    }

    /// The same wallet with a refreshed public key package (same group key).
    pub(crate) fn with_group(&self, group: PublicKeyPackage) -> Result<Self> {
        if group.verifying_key() != self.group.verifying_key() {
            return Err(Error::InternalKeyMismatch);
        }
        match (self.origin, self.dkg_untweaked) {
            (KeyOrigin::Dkg, Some(p)) => Self::from_dkg(p, group, self.tree),
            _ => Self::from_import(group, self.tree),
        }
    }

    /// How the key was made.
    #[must_use]
    pub fn origin(&self) -> KeyOrigin {
        self.origin
    }

    /// The script tree the output key commits to.
    #[must_use]
    pub fn script_tree(&self) -> ScriptTree {
        self.tree
    }

    /// The BIP341 internal key, as put in a PSBT's `tap_internal_key`.
    #[must_use]
    pub fn internal_key(&self) -> XOnlyKey {
        self.internal
    }

    /// The BIP341 output key: what the wallet's scriptPubKey holds and what
    /// every signature of the wallet verifies under.
    #[must_use]
    pub fn output_key(&self) -> XOnlyKey {
        self.output
    }

    /// The threshold `t`.
    #[must_use]
    pub fn threshold(&self) -> u16 {
        self.group.min_signers().unwrap_or(u16::MAX)
    }

    /// The seats holding shares, ascending.
    #[must_use]
    pub fn members(&self) -> Vec<Seat> {
        self.group
            .verifying_shares()
            .keys()
            .filter_map(Seat::from_identifier)
            .collect()
    }

    /// Checks that `seat` holds a share of this wallet (is one of
    /// [`Self::members`]). After a refresh that removed seats, the members
    /// are not `1..=n`: every check of a seat against a wallet goes here.
    ///
    /// # Errors
    /// [`Error::UnknownSeat`] otherwise.
    pub fn check_member(&self, seat: Seat) -> Result<()> {
        if self
            .group
            .verifying_shares()
            .contains_key(&seat.identifier())
        {
            Ok(())
        } else {
            Err(Error::UnknownSeat { seat: seat.get() })
        }
    }

    /// The threshold and the roster of current members: `signers()` is the
    /// member count, `seats()` and `check_seat` describe [`Self::members`]
    /// (not `1..=n` once a refresh has removed a seat).
    ///
    /// # Errors
    /// [`Error::InvalidParams`] if the stored package violates the bounds
    /// (never for a record made or decoded by this crate).
    pub fn params(&self) -> Result<GroupParams> {
        GroupParams::with_roster(self.threshold(), self.members())
    }

    /// Checks the invariants every record of this crate holds: a valid
    /// threshold, every identifier a seat, and verifying shares that lie on
    /// one polynomial of degree `t - 1` through the group key (so a record
    /// with swapped or altered shares, which would blame honest signers, is
    /// refused). Interpolates `t` shares in the exponent to the group key and
    /// to every other member's share: `(n - t + 1)·t` scalar multiplications.
    fn check_consistent(&self) -> Result<()> {
        let bad = || Error::Decode {
            what: Encoding::WalletKey,
        };
        let shares = self.group.verifying_shares();
        if self.members().len() != shares.len() {
            return Err(bad());
        }
        self.params().map_err(|_| bad())?;
        let mut points = Vec::with_capacity(shares.len());
        for (id, share) in shares {
            let seat = Seat::from_identifier(id).ok_or_else(bad)?;
            let element = poly::element(&share.serialize()?).ok_or_else(bad)?;
            points.push((poly::seat_scalar(seat), element));
        }
        let (base, rest) = points
            .split_at_checked(usize::from(self.threshold()))
            .ok_or_else(bad)?;
        let key = poly::element(&self.group.verifying_key().serialize()?).ok_or_else(bad)?;
        let zero = poly::zero();
        if poly::interpolate(base, &zero) != Some(key) {
            return Err(bad());
        }
        for (x, y) in rest {
            if poly::interpolate(base, x) != Some(*y) {
                return Err(bad());
            }
        }
        Ok(())
    }

    pub(crate) fn group(&self) -> &PublicKeyPackage {
        &self.group
    }

    pub(crate) fn signing_group(&self) -> &PublicKeyPackage {
        &self.signing_group
    }

    /// A member's key package with the signing tweak applied, matching
    /// [`Self::signing_group`].
    pub(crate) fn signing_key_package(&self, key: &KeyPackage) -> KeyPackage {
        match (self.origin, self.tree) {
            (KeyOrigin::Dkg, ScriptTree::KeyPathOnly) => key.clone(),
            (_, tree) => key.clone().tweak(tree.root_bytes()),
        }
    }

    /// Serializes the record for storage.
    ///
    /// # Errors
    /// [`Error::Frost`] if frost fails to encode its package (not expected).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = vec![WALLET_KEY_VERSION];
        out.push(match self.origin {
            KeyOrigin::Dkg => 0,
            KeyOrigin::Imported => 1,
        });
        match self.tree {
            ScriptTree::KeyPathOnly => out.push(0),
            ScriptTree::Root(root) => {
                out.push(1);
                out.extend_from_slice(&root.0);
            }
        }
        out.extend_from_slice(&self.dkg_untweaked.unwrap_or(self.internal).0);
        out.extend_from_slice(&self.output.0);
        out.extend_from_slice(&self.group.serialize()?);
        Ok(out)
    }

    /// Decodes a record written by [`Self::to_bytes`], re-deriving every key
    /// and checking it against the recorded ones.
    ///
    /// Also refuses a threshold outside `2..=members`, identifiers that are
    /// not seats, and verifying shares that do not lie on one polynomial
    /// through the group key.
    ///
    /// # Errors
    /// [`Error::Decode`] for malformed or inconsistent bytes,
    /// [`Error::InternalKeyMismatch`] if the recorded keys do not follow from
    /// the package.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let wallet = Self::decode(bytes, Source::Outside)?;
        wallet.check_consistent()?;
        Ok(wallet)
    }

    /// Decodes a record that the caller's own authenticated storage hands
    /// back: bytes that were [`Self::to_bytes`] of a `WalletKey` when they
    /// were sealed. Everything [`Self::from_bytes`] checks is checked except
    /// that the encoding is canonical (it was made by [`Self::to_bytes`]) and
    /// that the verifying shares lie on one polynomial: every `WalletKey`
    /// already passed that when it was made (a DKG or refresh computes each
    /// verifying share from the commitments, a dealer from its polynomial,
    /// and bytes from elsewhere go through [`Self::from_bytes`]), and the
    /// check costs `(n - t + 1)·t` scalar multiplications (about 0.13 s at
    /// 51-of-100), which a signer would otherwise pay for every wallet at
    /// every start.
    ///
    /// Never use it for bytes a peer, a file or an operator supplied.
    ///
    /// # Errors
    /// As for [`Self::from_bytes`], except for inconsistent verifying shares.
    pub fn from_stored_bytes(bytes: &[u8]) -> Result<Self> {
        Self::decode(bytes, Source::Stored)
    }

    /// Decodes and re-derives the keys; the verifying shares' consistency
    /// is the caller's to check.
    fn decode(bytes: &[u8], source: Source) -> Result<Self> {
        let bad = || Error::Decode {
            what: Encoding::WalletKey,
        };
        let mut reader = Reader(bytes);
        if reader.take::<1>().ok_or_else(bad)? != [WALLET_KEY_VERSION] {
            return Err(bad());
        }
        let origin = match reader.take::<1>().ok_or_else(bad)? {
            [0] => KeyOrigin::Dkg,
            [1] => KeyOrigin::Imported,
            _ => return Err(bad()),
        };
        let tree = match reader.take::<1>().ok_or_else(bad)? {
            [0] => ScriptTree::KeyPathOnly,
            [1] => ScriptTree::Root(MerkleRoot(reader.take::<32>().ok_or_else(bad)?)),
            _ => return Err(bad()),
        };
        let recorded = XOnlyKey::from_bytes(reader.take::<32>().ok_or_else(bad)?)?;
        let output = XOnlyKey::from_bytes(reader.take::<32>().ok_or_else(bad)?)?;
        let group = PublicKeyPackage::deserialize(reader.0).map_err(|_| bad())?;
        // Only the canonical encoding, with a threshold, is accepted (a
        // truncated package can otherwise decode without its threshold);
        // stored bytes are `to_bytes` output, canonical when sealed.
        if group.min_signers().is_none()
            || (source == Source::Outside && group.serialize()? != reader.0)
        {
            return Err(bad());
        }
        let wallet = match origin {
            KeyOrigin::Dkg => Self::from_dkg(recorded, group, tree)?,
            KeyOrigin::Imported => Self::from_import(group, tree)?,
        };
        if wallet.dkg_untweaked.unwrap_or(wallet.internal) != recorded || wallet.output != output {
            return Err(Error::InternalKeyMismatch);
        }
        Ok(wallet)
    }
}

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalletKey")
            .field("origin", &self.origin)
            .field("script_tree", &self.tree)
            .field("internal_key", &self.internal)
            .field("output_key", &self.output)
            .field("threshold", &self.threshold())
            .field("members", &self.members())
            .finish()
    }
}

/// A cursor over untrusted bytes that never panics.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
}
