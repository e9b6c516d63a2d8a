//! Transferable blame for the DKG: a member's round-2 package that does
//! not open, decode or verify against its sender's own round-1
//! commitments, proven with the roster alone (docs/blame.md, "The DKG").
//!
//! A [`DkgShareProof`] holds every signed round-1 message of the session,
//! the accused's signed round-2 message to the accuser, and the accuser's
//! signed accusation, which reveals its HPKE key of the session. The
//! accused's round-2 message carries its echo hash, which covers the
//! session, the wallet, the session's kind (fresh, or a refresh with its
//! epoch and removal set) and every (seat, round-1 package, HPKE key) the
//! accused saw, its own included. So a proof whose round-1 messages hash to
//! that echo shows exactly the commitments the accused shared against and
//! the key it sealed to: an honest member's package, opened with the key
//! its recipient revealed, always verifies against those commitments, and
//! nothing else a relay can assemble hashes to its echo. No record of the
//! round-1 message a member signed is needed: a member that signed two for
//! one session (restarted, or its session expired) is held to the one its
//! round-2 message names.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thresig_crypto::{Round1Package, Round2Package, Seat, ShareKind, verify_round2_share};
use thresig_store::WalletId;

use crate::blame::{BlameError, PROOF_VERSION, check_header};
use crate::config::WalletConfig;
use crate::dkg_msg::{DkgKind, DkgPayload, DkgSessionId, HpkeSecret, SignedDkgMessage, echo_hash};

/// Each participant's round-1 package and HPKE key, by seat.
type Round1Set<'a> = BTreeMap<Seat, (&'a [u8], &'a [u8])>;

/// The `kind` a DKG proof file names (a signing proof names none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DkgProofKind {
    /// An invalid round-2 share.
    DkgShare,
    /// A round-1 package that fails part 2's checks.
    DkgRound1,
}

/// Evidence that a member's round-2 package of a DKG or refresh session
/// to another member does not open, decode or verify. Serialized as JSON
/// (`culprit-<seat>.proof.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DkgShareProof {
    /// The format version (1).
    pub version: u32,
    /// Always `dkg_share`: tells the file from a signing proof.
    pub kind: DkgProofKind,
    /// The wallet.
    pub wallet: WalletId,
    /// The session.
    pub session: DkgSessionId,
    /// The session's kind, as the echo hash covers it.
    pub dkg: DkgKind,
    /// Every signed round-1 message of the session, one per participant.
    pub round1: Vec<SignedDkgMessage>,
    /// The accused's signed round-2 message to the accuser.
    pub round2: SignedDkgMessage,
    /// The accuser's signed accusation, revealing its session key.
    pub accusation: SignedDkgMessage,
}

/// What is wrong with the accused's package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DkgShareFault {
    /// It does not open with the accuser's revealed session key.
    Unopened,
    /// It opens, but is no round-2 package.
    Undecodable,
    /// Its share does not verify against the accused's commitments at the
    /// accuser's seat.
    Invalid,
}

impl DkgShareFault {
    /// A stable snake-case name (`--json` output).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Unopened => "unopened",
            Self::Undecodable => "undecodable",
            Self::Invalid => "invalid",
        }
    }
}

/// What a verified DKG proof shows.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProvenDkgFault {
    /// The wallet.
    pub wallet: WalletId,
    /// The session.
    pub session: DkgSessionId,
    /// The accused wallet seat (whose identity key signed the package).
    pub accused: Seat,
    /// The wallet seat the package was sent to.
    pub accuser: Seat,
    /// What is wrong with it.
    pub fault: DkgShareFault,
}

impl DkgShareProof {
    /// The proof of `accusation` (of `dkg`'s session): `round1` is every
    /// round-1 message the relay handed out, `round2` the accused's
    /// round-2 message to the accuser.
    #[must_use]
    pub fn new(
        dkg: DkgKind,
        round1: Vec<SignedDkgMessage>,
        round2: SignedDkgMessage,
        accusation: SignedDkgMessage,
    ) -> Self {
        Self {
            version: PROOF_VERSION,
            kind: DkgProofKind::DkgShare,
            wallet: accusation.wallet.clone(),
            session: accusation.session,
            dkg,
            // Without kind-bound signatures, which this proof does not
            // check (and only round-1 messages may carry): its file then
            // reads in builds that predate them.
            round1: round1
                .into_iter()
                .map(|m| m.with_kind_signature(None))
                .collect(),
            round2: round2.with_kind_signature(None),
            accusation: accusation.with_kind_signature(None),
        }
    }

    /// The accused seat the accusation names, if it is one.
    #[must_use]
    pub fn accused(&self) -> Option<Seat> {
        match &self.accusation.payload {
            DkgPayload::Accuse { accused, .. } => Some(*accused),
            _ => None,
        }
    }

    /// Checks the proof against `wallet`'s roster alone.
    ///
    /// # Errors
    /// [`BlameError`], checked in this order: wallet, version, that each
    /// message belongs to the session, signatures, that the messages are
    /// an accusation and the accused's round-2 message to the accuser, the
    /// round-1 set, the echo hash, the revealed key, then the package
    /// (`NoFault` when it verifies).
    pub fn verify(&self, wallet: &WalletConfig) -> Result<ProvenDkgFault, BlameError> {
        let id = &wallet.id;
        let messages = || self.round1.iter().chain([&self.round2, &self.accusation]);
        let named = std::iter::once(&self.wallet).chain(messages().map(|m| &m.wallet));
        check_header(id, named, self.version)?;
        let parts = || BlameError::DkgParts { wallet: id.clone() };
        if messages().any(|m| m.session != self.session) {
            return Err(parts());
        }
        if let Some(m) = messages().find(|m| !m.verify(wallet)) {
            return Err(BlameError::DkgSignature {
                wallet: id.clone(),
                seat: m.sender,
            });
        }
        let (accuser, accused) = (self.accusation.sender, self.round2.sender);
        let DkgPayload::Accuse { hpke_secret, .. } = &self.accusation.payload else {
            return Err(parts());
        };
        let DkgPayload::Round2 { to, sealed, echo } = &self.round2.payload else {
            return Err(parts());
        };
        if self.accused() != Some(accused) || *to != accuser || accused == accuser {
            return Err(parts());
        }
        let round1 = self.round1_set(wallet)?;
        let (Some((commitments, _)), Some((_, accuser_key))) =
            (round1.get(&accused), round1.get(&accuser))
        else {
            return Err(BlameError::DkgRound1Set { wallet: id.clone() });
        };
        let entries: Vec<(Seat, &[u8], &[u8])> =
            round1.iter().map(|(s, (p, k))| (*s, *p, *k)).collect();
        if echo_hash(&self.session, wallet, &self.dkg, &entries).as_slice() != echo.0 {
            return Err(BlameError::DkgEcho {
                wallet: id.clone(),
                seat: accused,
            });
        }
        let secret = HpkeSecret::from_revealed(hpke_secret)
            .filter(|(_, public)| public == accuser_key)
            .map(|(secret, _)| secret)
            .ok_or_else(|| BlameError::DkgKey {
                wallet: id.clone(),
                seat: accuser,
            })?;
        let proven = |fault| ProvenDkgFault {
            wallet: id.clone(),
            session: self.session,
            accused,
            accuser,
            fault,
        };
        let session = &self.session;
        let Some(plain) = crate::dkg_msg::open(&secret, session, id, accused, accuser, &sealed.0)
        else {
            return Ok(proven(DkgShareFault::Unopened));
        };
        let Ok(package) = Round2Package::from_bytes(&plain) else {
            return Ok(proven(DkgShareFault::Undecodable));
        };
        let unusable = || BlameError::DkgUnusable {
            wallet: id.clone(),
            seat: accused,
        };
        let commitments = Round1Package::from_bytes(commitments).map_err(|_| unusable())?;
        let kind = match self.dkg {
            DkgKind::Fresh => ShareKind::Fresh,
            DkgKind::Refresh { .. } => ShareKind::Refresh,
        };
        match verify_round2_share(kind, (accused, &commitments), accuser, &package) {
            Ok(()) => Err(BlameError::NoFault {
                wallet: id.clone(),
                seat: accused,
            }),
            Err(thresig_crypto::Error::BadShare { .. }) => Ok(proven(DkgShareFault::Invalid)),
            Err(_) => Err(unusable()),
        }
    }

    /// The round-1 packages and HPKE keys by seat, checked to be one
    /// round-1 message from each participant a session of the proof's kind
    /// can have: every roster seat for a fresh DKG; for a refresh, seats
    /// of the roster outside its removal set, at least the threshold of
    /// them (an earlier refresh may have removed others, which the roster
    /// does not show; the accused's echo fixes the set anyway).
    fn round1_set<'a>(&'a self, wallet: &WalletConfig) -> Result<Round1Set<'a>, BlameError> {
        let wrong = || BlameError::DkgRound1Set {
            wallet: wallet.id.clone(),
        };
        let mut set = BTreeMap::new();
        for m in &self.round1 {
            let DkgPayload::Round1 { package, hpke_key } = &m.payload else {
                return Err(wrong());
            };
            if set
                .insert(m.sender, (package.0.as_slice(), hpke_key.0.as_slice()))
                .is_some()
            {
                return Err(wrong());
            }
        }
        let roster: BTreeSet<Seat> = (1..=wallet.roster.len())
            .filter_map(|n| Seat::try_from(u16::try_from(n).ok()?).ok())
            .collect();
        let seats: BTreeSet<Seat> = set.keys().copied().collect();
        let fits = match &self.dkg {
            DkgKind::Fresh => seats == roster,
            DkgKind::Refresh { removed, .. } => {
                seats.is_subset(&roster)
                    && removed.iter().all(|s| !seats.contains(s))
                    && seats.len() >= usize::from(wallet.threshold)
            }
        };
        if fits { Ok(set) } else { Err(wrong()) }
    }
}
