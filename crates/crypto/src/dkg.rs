//! Distributed key generation and share refresh, one state type per step.
//!
//! ```text
//! DkgRound1::start / DkgRound1::refresh --(own Round1Package to all)-->
//! DkgRound1::receive(peers' round-1) ----(one Round2Package per peer)-->
//! DkgRound2::finish(peers' round-2) ----> DkgOutput { KeyShare, WalletKey, transcript }
//! ```
//! Each transition consumes the previous state, so a step cannot be run twice.
//!
//! The output carries a transcript digest over every round-1 package this
//! member saw (its own included), the roster, the threshold and, for a
//! refresh, the removal set and the wallet record being refreshed. A refresh
//! has no proof of knowledge and forces every polynomial's constant term to
//! zero, so a member that shows different round-1 packages to different
//! peers leaves every key unchanged while the new shares no longer fit
//! together: only the digests differ. Members must therefore agree on the
//! digest (the engine's signed confirmation carries it) before anyone uses
//! the result.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use frost_core::keys::VerifiableSecretSharingCommitment;
use frost_secp256k1_tr::keys::dkg::{self, round1, round2};
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage, refresh};
use frost_secp256k1_tr::{Error as FrostError, Identifier};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

use crate::codec::codec;
use crate::dkg_batch;
use crate::poly;
use crate::{
    Encoding, Error, GroupParams, KeyShare, Result, ScriptTree, Seat, WalletKey, XOnlyKey,
};

/// A member's public round-1 message (polynomial commitment and proof of knowledge).
///
/// # Invariants
/// `bytes` is the canonical encoding of `package`: the bytes it was
/// decoded from, or its encoding made once when the package was. Decoding
/// reads frost's layout itself and accepts only the canonical encoding by
/// construction (`wire::parse_round1_package`: minimal lengths, compressed
/// points, nothing trailing), so it never encodes the package to check it
/// and costs one square root a point, each point's decompression. The
/// transcript hashes the bytes and [`Round1Package::to_bytes`] copies them,
/// so no package is encoded again after that: each encoding costs a field
/// inversion for each of its t points, and the transcript's was half of a
/// member's part 2 at (51, 100).
#[derive(Clone, PartialEq, Eq)]
pub struct Round1Package {
    package: round1::Package,
    bytes: Vec<u8>,
}

/// A secret round-2 message for one recipient (its share of the sender's
/// polynomial). Must travel encrypted to that recipient; zeroized on drop.
pub struct Round2Package(round2::Package);

impl fmt::Debug for Round1Package {
    /// The length only: the points say nothing a reader can use, and a
    /// package of t = 51 is almost two kilobytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Round1Package({} bytes)", self.bytes.len())
    }
}

impl Round1Package {
    /// The package with its encoding.
    fn new(package: round1::Package) -> Result<Self> {
        let bytes = crate::codec::encode_exact(&package)?.to_vec();
        Ok(Self { package, bytes })
    }

    /// The canonical encoding, for sending or storing.
    ///
    /// # Errors
    /// None: the encoding was made with the package (the `Result` keeps
    /// the signature of every other encoding in this crate).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.bytes.clone())
    }

    /// Decodes a package received from a peer or read from storage; only
    /// the canonical encoding (as [`Self::to_bytes`] writes it) is
    /// accepted, and it is kept as it arrived.
    ///
    /// # Errors
    /// [`Error::Decode`] for malformed or non-canonical bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let package = crate::wire::parse_round1_package(bytes).ok_or(Error::Decode {
            what: Encoding::Round1Package,
        })?;
        Ok(Self {
            package,
            bytes: bytes.to_vec(),
        })
    }
}

codec!(
    Round2Package,
    Round2Package,
    Zeroizing<Vec<u8>>,
    |v: Zeroizing<Vec<u8>>| v
);

impl fmt::Debug for Round2Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Round2Package(<redacted>)")
    }
}

/// Fresh key generation or refresh of an existing wallet's shares.
enum Mode {
    Fresh {
        tree: ScriptTree,
    },
    Refresh {
        old: Box<KeyPackage>,
        wallet: Box<WalletKey>,
    },
}

/// Who takes part and who this participant is.
struct Session {
    me: Seat,
    roster: BTreeSet<Seat>,
    /// The seats a refresh leaves out (empty for a fresh DKG).
    removed: BTreeSet<Seat>,
    threshold: u16,
    mode: Mode,
}

impl Session {
    /// Number of coefficient commitments every peer's round-1 package must carry
    /// (refresh packages omit the zero constant term).
    fn commitment_len(&self) -> usize {
        match self.mode {
            Mode::Fresh { .. } => usize::from(self.threshold),
            Mode::Refresh { .. } => usize::from(self.threshold).saturating_sub(1),
        }
    }

    /// The transcript digest over `round1` (every member's package
    /// encoding, this member's own included) and the session's parameters;
    /// see the module docs for why every member must end with the same one.
    fn transcript(&self, round1: &BTreeMap<Identifier, &[u8]>) -> Result<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(TRANSCRIPT_DOMAIN);
        match &self.mode {
            // Key path only is a tag of its own: hashed as a zero root, it
            // would match a tree whose root is 32 zero bytes.
            Mode::Fresh { tree } => match tree.root_bytes() {
                None => h.update([0]),
                Some(root) => {
                    h.update([2]);
                    h.update(root);
                }
            },
            Mode::Refresh { wallet, .. } => {
                h.update([1]);
                framed_update(&mut h, &wallet.to_bytes()?);
            }
        }
        h.update(self.threshold.to_be_bytes());
        for set in [&self.roster, &self.removed] {
            h.update((set.len() as u64).to_be_bytes());
            for seat in set {
                h.update(seat.get().to_be_bytes());
            }
        }
        for (id, package) in round1 {
            let seat = Seat::from_identifier(id).ok_or(Error::OwnPackageEchoed)?;
            h.update(seat.get().to_be_bytes());
            framed_update(&mut h, package);
        }
        Ok(h.finalize().into())
    }

    /// Indexes peers' packages by identifier, refusing our own seat, seats
    /// outside the roster, duplicates and a wrong count.
    fn collect<P>(&self, packages: Vec<(Seat, P)>) -> Result<BTreeMap<Identifier, P>> {
        let expected = self.roster.len().saturating_sub(1);
        let got = packages.len();
        let mut out = BTreeMap::new();
        for (seat, package) in packages {
            if seat == self.me {
                return Err(Error::OwnPackageEchoed);
            }
            if !self.roster.contains(&seat) {
                return Err(Error::UnknownSender { seat });
            }
            if out.insert(seat.identifier(), package).is_some() {
                return Err(Error::DuplicateSender { seat });
            }
        }
        if got != expected {
            return Err(Error::WrongPackageCount { expected, got });
        }
        Ok(out)
    }
}

/// Domain separation tag of the transcript digest.
const TRANSCRIPT_DOMAIN: &[u8] = b"thresig/crypto/dkg-transcript/v1";

/// Hashes `bytes` behind its length, so adjacent fields cannot run together.
fn framed_update(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn blame(err: FrostError) -> Error {
    let seat = |id: &Identifier| Seat::from_identifier(id);
    match err {
        FrostError::InvalidProofOfKnowledge { culprit } => match seat(&culprit) {
            Some(culprit) => Error::BadProofOfKnowledge { culprit },
            None => Error::Frost(err),
        },
        FrostError::InvalidSecretShare {
            culprit: Some(culprit),
        } => match seat(&culprit) {
            Some(culprit) => Error::BadShare { culprit },
            None => Error::Frost(err),
        },
        other => Error::Frost(other),
    }
}

/// DKG state after part 1: holds the secret polynomial, waits for peers' round-1 packages.
pub struct DkgRound1 {
    session: Session,
    secret: round1::SecretPackage,
    own: Round1Package,
}

impl DkgRound1 {
    /// Starts a new key generation for seat `me` of a `params` group whose
    /// output key will commit to `tree`.
    ///
    /// # Errors
    /// [`Error::UnknownSeat`] if `me` is not in `params`' roster.
    pub fn start(
        params: GroupParams,
        me: Seat,
        tree: ScriptTree,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, Round1Package)> {
        params.check_seat(me)?;
        let roster = params.seats().collect();
        let sets = (roster, BTreeSet::new());
        Self::begin(me, sets, params, Mode::Fresh { tree }, rng)
    }

    /// Starts a refresh of `share` (DKG variant: every member contributes a
    /// zero-secret polynomial; no one learns another's share). The group key
    /// stays; every share changes. Seats in `removed` are left out of the new
    /// sharing and their old shares stop combining with the new ones; nobody
    /// else is ever dropped. All remaining members must take part, and every
    /// one must be given the same `removed` (it enters the transcript).
    ///
    /// # Errors
    /// [`Error::WrongWallet`] if the share is not the wallet's,
    /// [`Error::UnknownSeat`] if this member is among `removed`, or a seat
    /// in `removed` is not a member of the wallet or is named twice,
    /// [`Error::InvalidParams`] if fewer than the threshold would remain.
    pub fn refresh(
        share: &KeyShare,
        wallet: &WalletKey,
        removed: &[Seat],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, Round1Package)> {
        share.check_wallet(wallet)?;
        let me = share.seat();
        let members = wallet.members();
        let mut removal = BTreeSet::new();
        for seat in removed {
            // A seat that is no member, or one named twice, is most likely a
            // typo: ignoring it would remove nobody, or not whom was meant.
            if !members.contains(seat) || !removal.insert(*seat) {
                return Err(Error::UnknownSeat { seat: seat.get() });
            }
        }
        let roster: BTreeSet<Seat> = members
            .into_iter()
            .filter(|seat| !removal.contains(seat))
            .collect();
        if !roster.contains(&me) {
            return Err(Error::UnknownSeat { seat: me.get() });
        }
        let params = GroupParams::with_roster(wallet.threshold(), roster.iter().copied())?;
        let mode = Mode::Refresh {
            old: Box::new(share.package().clone()),
            wallet: Box::new(wallet.clone()),
        };
        Self::begin(me, (roster, removal), params, mode, rng)
    }

    /// Part 1 of either variant for `me` among `roster`, with `removed`
    /// left out.
    fn begin(
        me: Seat,
        (roster, removed): (BTreeSet<Seat>, BTreeSet<Seat>),
        params: GroupParams,
        mode: Mode,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, Round1Package)> {
        let (id, n, t) = (me.identifier(), params.signers(), params.threshold());
        let (secret, own) = match mode {
            Mode::Fresh { .. } => dkg::part1(id, n, t, &mut *rng),
            Mode::Refresh { .. } => refresh::refresh_dkg_part1(id, n, t, &mut *rng),
        }?;
        let session = Session {
            me,
            roster,
            removed,
            threshold: t,
            mode,
        };
        let own = Round1Package::new(own)?;
        Ok((
            Self {
                session,
                secret,
                own: own.clone(),
            },
            own,
        ))
    }

    /// This participant's seat.
    #[must_use]
    pub fn seat(&self) -> Seat {
        self.session.me
    }

    /// Part 2: checks every peer's round-1 package (exactly one from each
    /// other member of the roster) and produces one secret round-2 package per
    /// peer, keyed by recipient seat.
    ///
    /// # Errors
    /// [`Error::OwnPackageEchoed`], [`Error::UnknownSender`],
    /// [`Error::DuplicateSender`], [`Error::WrongPackageCount`],
    /// [`Error::WrongCommitmentLength`] or [`Error::BadProofOfKnowledge`]
    /// naming the culprit. The session is over either way.
    pub fn receive(
        self,
        packages: Vec<(Seat, Round1Package)>,
    ) -> Result<(DkgRound2, Vec<(Seat, Round2Package)>)> {
        let round1 = self.session.collect(packages)?;
        for (id, package) in &round1 {
            // Counted, not encoded: encoding every peer's t coefficients
            // costs one field inversion each.
            let len = package.package.commitment().coefficients().len();
            if len != self.session.commitment_len() {
                let culprit = Seat::from_identifier(id).ok_or(Error::OwnPackageEchoed)?;
                return Err(Error::WrongCommitmentLength { culprit });
            }
        }
        let mut everyone: BTreeMap<Identifier, &[u8]> = round1
            .iter()
            .map(|(id, p)| (*id, p.bytes.as_slice()))
            .collect();
        everyone.insert(self.session.me.identifier(), self.own.bytes.as_slice());
        let transcript = self.session.transcript(&everyone)?;
        let round1: BTreeMap<Identifier, round1::Package> =
            round1.into_iter().map(|(id, p)| (id, p.package)).collect();
        let (secret, outgoing) = match self.session.mode {
            Mode::Fresh { .. } => dkg::part2(self.secret, &round1),
            Mode::Refresh { .. } => refresh::refresh_dkg_part2(self.secret, &round1),
        }
        .map_err(blame)?;
        let outgoing = outgoing
            .into_iter()
            .filter_map(|(id, p)| Some((Seat::from_identifier(&id)?, Round2Package(p))))
            .collect();
        let state = DkgRound2 {
            session: self.session,
            secret,
            own: self.own.package,
            round1,
            transcript,
        };
        Ok((state, outgoing))
    }
}

/// DKG state after part 2: waits for the peers' secret round-2 packages.
pub struct DkgRound2 {
    session: Session,
    secret: round2::SecretPackage,
    own: round1::Package,
    round1: BTreeMap<Identifier, round1::Package>,
    transcript: [u8; 32],
}

impl DkgRound2 {
    /// This participant's seat.
    #[must_use]
    pub fn seat(&self) -> Seat {
        self.session.me
    }

    /// Part 3: checks every peer's share against its round-1 commitment and
    /// derives this member's key share and the wallet key record. For a fresh
    /// DKG the internal key P is the sum of all members' constant-term
    /// commitments, checked to tweak (BIP341, no script) to frost's key Q.
    ///
    /// # Errors
    /// The sender errors of [`DkgRound1::receive`], [`Error::BadShare`]
    /// naming the culprit (in a refresh too: each share is checked against
    /// its sender's commitment before frost combines them),
    /// [`Error::InternalKeyMismatch`].
    pub fn finish(self, packages: Vec<(Seat, Round2Package)>) -> Result<DkgOutput> {
        let round2 = self.session.collect(packages)?;
        let round2: BTreeMap<Identifier, round2::Package> =
            round2.into_iter().map(|(id, p)| (id, p.0)).collect();
        let (key_package, wallet) = match self.session.mode {
            Mode::Fresh { tree } => {
                let (key, group) =
                    dkg_batch::part3(&self.secret, &self.round1, &round2).map_err(blame)?;
                let untweaked = untweaked_group_key(&self.round1, self.session.me, &self.own)?;
                (key, WalletKey::from_dkg(untweaked, group, tree)?)
            }
            Mode::Refresh { old, wallet } => {
                // frost reports a bad refresh share without its sender; check
                // each first so the culprit is named.
                for (id, package) in &round2 {
                    check_refresh_share(self.session.me, id, package, |id| self.round1.get(id))?;
                }
                // frost takes the old key package by value; a clone moves in
                // (and is wiped when frost drops it) while the box is wiped
                // here. Moving it out of the box would free the box's memory
                // with the share still in it.
                let (key, group) = refresh::refresh_dkg_shares(
                    &self.secret,
                    &self.round1,
                    &round2,
                    wallet.group().clone(),
                    KeyPackage::clone(&old),
                )
                .map_err(blame)?;
                drop(old);
                (key, wallet.with_group(group)?)
            }
        };
        Ok(DkgOutput {
            key_share: KeyShare::new(key_package)?,
            wallet,
            transcript: self.transcript,
        })
    }
}

/// What a DKG session shares: a fresh key, or zero (a refresh, whose
/// round-1 commitments leave out the constant term).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareKind {
    /// A fresh key generation.
    Fresh,
    /// A share refresh.
    Refresh,
}

/// Checks the round-2 share `package` that `from` sent to `to` against
/// `from`'s round-1 commitments, as part 3 of a session of `kind` checks
/// it (a pure function of public data and the one share, for a third
/// party holding the opened package: a DKG blame proof).
///
/// # Errors
/// [`Error::BadShare`] naming `from` if the share does not verify.
pub fn verify_round2_share(
    kind: ShareKind,
    (from, commitments): (Seat, &Round1Package),
    to: Seat,
    package: &Round2Package,
) -> Result<()> {
    let id = from.identifier();
    match kind {
        ShareKind::Fresh => dkg_batch::check_one(to.identifier(), &id, &package.0, |_| {
            Some(&commitments.package)
        })
        .map_err(blame),
        ShareKind::Refresh => {
            check_refresh_share(to, &id, &package.0, |_| Some(&commitments.package))
        }
    }
}

/// Why a round-1 package fails the checks part 2 of a session makes of
/// every peer's package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Round1Fault {
    /// It is not the canonical encoding of a round-1 package.
    Undecodable,
    /// It carries another number of commitments than the session's kind
    /// and threshold make every member's carry.
    WrongCommitmentLength,
    /// Its proof of knowledge does not verify for its sender (a fresh DKG;
    /// a refresh has none to check).
    BadProofOfKnowledge,
}

/// Checks the round-1 package `bytes` that seat `from` sent in a session
/// of `kind` at `threshold`, as part 2 checks a peer's, a pure function of
/// public data (for a third party: a DKG round-1 blame proof). Every
/// package an honest member makes passes, whatever the session.
///
/// # Errors
/// The [`Round1Fault`] it fails with.
pub fn check_round1_package(
    kind: ShareKind,
    threshold: u16,
    from: Seat,
    bytes: &[u8],
) -> std::result::Result<(), Round1Fault> {
    let package = Round1Package::from_bytes(bytes).map_err(|_| Round1Fault::Undecodable)?;
    let commitment = package.package.commitment();
    let expected = match kind {
        ShareKind::Fresh => usize::from(threshold),
        ShareKind::Refresh => usize::from(threshold).saturating_sub(1),
    };
    if commitment.coefficients().len() != expected {
        return Err(Round1Fault::WrongCommitmentLength);
    }
    match kind {
        // The check frost's part 2 makes, with the sender's identifier.
        ShareKind::Fresh => frost_core::keys::dkg::verify_proof_of_knowledge(
            from.identifier(),
            commitment,
            package.package.proof_of_knowledge(),
        )
        .map_err(|_| Round1Fault::BadProofOfKnowledge),
        ShareKind::Refresh => Ok(()),
    }
}

/// Checks one peer's refresh share against its round-1 commitment, whose
/// constant term is the identity (a refresh polynomial shares zero):
/// `share·G == Σ_{k≥1} x^k · C_k` at `x` = this member's seat. `round1`
/// finds the sender's round-1 package.
///
/// # Errors
/// [`Error::BadShare`] naming the sender if it does not hold.
fn check_refresh_share<'a>(
    me: Seat,
    from: &Identifier,
    package: &round2::Package,
    round1: impl FnOnce(&Identifier) -> Option<&'a round1::Package>,
) -> Result<()> {
    let culprit = Seat::from_identifier(from).ok_or(Error::OwnPackageEchoed)?;
    let commitment = round1(from).ok_or(Error::UnknownSender { seat: culprit })?;
    // A refresh commits to no constant term: the sender's polynomial is
    // zero at 0.
    let coefficients: Vec<_> = std::iter::once(k256::ProjectivePoint::IDENTITY)
        .chain(
            commitment
                .commitment()
                .coefficients()
                .iter()
                .map(|c| c.value()),
        )
        .collect();
    let mut share = package.signing_share().to_scalar();
    let image = poly::base_mul(&share);
    share.zeroize();
    if image != dkg_batch::evaluate(&coefficients, &me.identifier()) {
        return Err(Error::BadShare { culprit });
    }
    Ok(())
}

/// P = sum of every member's commitment to its constant term (the untweaked group key).
fn untweaked_group_key(
    peers: &BTreeMap<Identifier, round1::Package>,
    me: Seat,
    own: &round1::Package,
) -> Result<XOnlyKey> {
    let constant_terms = peers
        .iter()
        .chain(std::iter::once((&me.identifier(), own)))
        .map(|(id, package)| {
            // Only the constant term, taken as it is (encoding all t
            // coefficients to keep one costs t field inversions).
            let constant = package
                .commitment()
                .coefficients()
                .first()
                .copied()
                .ok_or(Error::Frost(FrostError::MissingCommitment))?;
            Ok((*id, VerifiableSecretSharingCommitment::new(vec![constant])))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let by_ref = constant_terms.iter().map(|(id, c)| (*id, c)).collect();
    let sum = PublicKeyPackage::from_dkg_commitments(&by_ref)?;
    XOnlyKey::of(sum.verifying_key())
}

/// The result of a DKG or refresh for one member.
#[derive(Debug)]
pub struct DkgOutput {
    key_share: KeyShare,
    wallet: WalletKey,
    transcript: [u8; 32],
}

impl DkgOutput {
    /// The member's secret key share.
    #[must_use]
    pub fn key_share(&self) -> &KeyShare {
        &self.key_share
    }

    /// The wallet's public key record (same for every member).
    #[must_use]
    pub fn wallet(&self) -> &WalletKey {
        &self.wallet
    }

    /// The transcript digest (see the module docs): the result may be used
    /// only once every member is known to hold the same digest and wallet.
    #[must_use]
    pub fn transcript(&self) -> [u8; 32] {
        self.transcript
    }

    /// Splits the output into its parts: the share, the wallet key and
    /// the transcript digest, which a caller must still compare with every
    /// other member's before using the others.
    #[must_use]
    pub fn into_parts(self) -> (KeyShare, WalletKey, [u8; 32]) {
        (self.key_share, self.wallet, self.transcript)
    }
}

impl Session {
    /// `Debug` of a DKG state: who and among whom, never the secrets.
    fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("seat", &self.me)
            .field("roster", &self.roster)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for DkgRound1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.session.debug("DkgRound1", f)
    }
}

impl fmt::Debug for DkgRound2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.session.debug("DkgRound2", f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng as _;

    /// The transcript hashes each package's kept bytes. A member of an
    /// earlier version encoded every package again instead; both give the
    /// same digest, for packages made here and packages decoded from a
    /// peer's bytes, so members upgraded at different times still agree.
    #[test]
    fn the_transcript_is_the_one_encoding_every_package_again_gives() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let params = GroupParams::new(3, 4).unwrap();
        let started: Vec<(DkgRound1, Round1Package)> = params
            .seats()
            .map(|me| DkgRound1::start(params, me, ScriptTree::KeyPathOnly, &mut rng))
            .collect::<Result<_>>()
            .unwrap();
        let sent: Vec<(Seat, Vec<u8>)> = started
            .iter()
            .map(|(state, own)| (state.seat(), own.to_bytes().unwrap()))
            .collect();
        for (state, own) in started {
            let me = state.seat();
            let peers: Vec<(Seat, Round1Package)> = sent
                .iter()
                .filter(|(seat, _)| *seat != me)
                .map(|(seat, bytes)| (*seat, Round1Package::from_bytes(bytes).unwrap()))
                .collect();
            let encoded_again: Vec<(Identifier, Vec<u8>)> = peers
                .iter()
                .chain(std::iter::once(&(me, own)))
                .map(|(seat, p)| {
                    let bytes = crate::codec::encode_exact(&p.package).unwrap().to_vec();
                    assert_eq!(bytes, p.bytes);
                    (seat.identifier(), bytes)
                })
                .collect();
            let earlier: BTreeMap<Identifier, &[u8]> = encoded_again
                .iter()
                .map(|(id, bytes)| (*id, bytes.as_slice()))
                .collect();
            let expected = state.session.transcript(&earlier).unwrap();
            let (next, _) = state.receive(peers).unwrap();
            assert_eq!(next.transcript, expected);
            // The digest the version before packages kept their bytes
            // (4074204) computes for this seed, which encoded every
            // package again: members of both versions agree.
            assert_eq!(
                hex::encode(next.transcript),
                "db46cb7403d4b1d816a68c2101876a0f0ab2bfbdf855072a50b83f3af3c1ab4d"
            );
        }
    }
}
