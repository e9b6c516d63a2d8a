//! The requests a coordinator sends a signer and the signer's answers:
//! what [`crate::Signer::handle`] takes and returns.
//!
//! These are domain types, not a wire format: the daemon converts its
//! protobuf messages to and from them at its edge. Seats are their numbers
//! (`1..=n`); byte fields are [`HexBytes`], which serde shows as hex.

use serde::{Deserialize, Serialize};

use crate::dkg::{ConfirmationStatus, DkgProposal};
use crate::dkg_msg::{DkgSessionId, SignedDkgMessage};
use crate::ids::WalletEpoch;
use crate::target::SigningTarget;
use crate::wallet::WalletStateKind;
use thresig_crypto::Seat;
use thresig_store::{Timestamp, WalletId};

/// Bytes, encoded as lowercase hex in JSON.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HexBytes(#[serde(with = "hex::serde")] pub Vec<u8>);

impl std::fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(&self.0))
    }
}

/// Signing round 1: fresh nonce commitments, one per input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Round1Request {
    /// The wallet.
    pub wallet: WalletId,
    /// Number of inputs (nonces) wanted.
    pub inputs: usize,
}

impl Round1Request {
    /// A request for `inputs` fresh commitments of `wallet`.
    pub fn new(wallet: WalletId, inputs: usize) -> Self {
        Self { wallet, inputs }
    }
}

/// Signing round 2: one share per input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Round2Request {
    /// The wallet.
    pub wallet: WalletId,
    /// The wallet epoch the coordinator believes current.
    pub epoch: WalletEpoch,
    /// The seats of the signer set, identical in every package.
    pub signers: Vec<Seat>,
    /// What is signed; the signer derives each input's message from it.
    pub target: SigningTarget,
    /// One encoded FROST signing package per input, in input order.
    pub packages: Vec<HexBytes>,
}

impl Round2Request {
    /// A round-2 request (see the field docs).
    pub fn new(
        wallet: WalletId,
        epoch: WalletEpoch,
        signers: Vec<Seat>,
        target: SigningTarget,
        packages: Vec<HexBytes>,
    ) -> Self {
        Self {
            wallet,
            epoch,
            signers,
            target,
            packages,
        }
    }
}

/// Destroys live nonces a coordinator no longer needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AbortRequest {
    /// The wallet.
    pub wallet: WalletId,
    /// Commitments (as returned by round 1) whose round-1 vectors are
    /// dropped; only the requesting coordinator's own vectors are touched.
    pub commitments: Vec<HexBytes>,
}

impl AbortRequest {
    /// An abort of the vectors holding `commitments`.
    pub fn new(wallet: WalletId, commitments: Vec<HexBytes>) -> Self {
        Self {
            wallet,
            commitments,
        }
    }
}

/// A request to the signer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Signing round 1.
    Round1(Round1Request),
    /// Signing round 2.
    Round2(Round2Request),
    /// Drop live nonces.
    Abort(AbortRequest),
    /// One wallet's status.
    Status {
        /// The wallet.
        wallet: WalletId,
    },
    /// The status of every configured wallet the requesting coordinator is
    /// a member of.
    ListWallets,
    /// The public key record of a wallet that holds a key (what a
    /// coordinator verifies shares and aggregates with).
    WalletKey {
        /// The wallet.
        wallet: WalletId,
    },
    /// DKG part 1 for a proposal.
    DkgStart(DkgProposal),
    /// DKG part 2: the other members' round-1 messages.
    DkgRound2 {
        /// The wallet.
        wallet: WalletId,
        /// The session.
        session: DkgSessionId,
        /// One round-1 message from each other member.
        round1: Vec<SignedDkgMessage>,
    },
    /// DKG part 3: the round-2 messages addressed to this member.
    DkgFinish {
        /// The wallet.
        wallet: WalletId,
        /// The session.
        session: DkgSessionId,
        /// One round-2 message from each other member.
        round2: Vec<SignedDkgMessage>,
    },
    /// A member's confirmation of a finished DKG.
    DkgConfirm {
        /// The wallet.
        wallet: WalletId,
        /// The signed confirmation.
        confirmation: SignedDkgMessage,
    },
    /// A relay whose DKG failed: drop the session if it is still in part 1
    /// or 2 (a finished one is left to the operator). With `abandon` or
    /// `abandonments`, a share refresh's abort (`thresig refresh --abort`).
    DkgCancel {
        /// The wallet.
        wallet: WalletId,
        /// The session.
        session: DkgSessionId,
        /// Asks the member to abandon the refresh `session`: it signs an
        /// abandonment if it holds no part-3 result of it, and drops the
        /// session for good.
        #[serde(default)]
        abandon: bool,
        /// Other members' signed abandonments of the refresh `session`:
        /// proof that nobody can switch to it, so a member holding its
        /// result pending discards it.
        #[serde(default)]
        abandonments: Vec<SignedDkgMessage>,
    },
    /// The signed confirmations of the refresh `session` this member
    /// holds: its own (signed again) and every other member's it counted,
    /// from its pending result or from the one it switched on. `thresig
    /// refresh --resume` gathers them from every reachable member when
    /// the coordinator lost them; each is self-proving.
    RefreshConfirmations {
        /// The wallet.
        wallet: WalletId,
        /// The refresh session.
        session: DkgSessionId,
    },
    /// A step of a member repair.
    Repair(crate::repair::RepairRequest),
}

impl Request {
    /// The wallet a request addresses, if it addresses one.
    pub fn wallet(&self) -> Option<&WalletId> {
        match self {
            Self::Round1(r) => Some(&r.wallet),
            Self::Round2(r) => Some(&r.wallet),
            Self::Abort(r) => Some(&r.wallet),
            Self::DkgStart(p) => Some(&p.wallet),
            Self::Repair(r) => Some(&r.session().wallet),
            Self::Status { wallet }
            | Self::WalletKey { wallet }
            | Self::DkgRound2 { wallet, .. }
            | Self::DkgFinish { wallet, .. }
            | Self::DkgConfirm { wallet, .. }
            | Self::DkgCancel { wallet, .. }
            | Self::RefreshConfirmations { wallet, .. } => Some(wallet),
            Self::ListWallets => None,
        }
    }
}

/// The answer to a round-1 request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Round1Response {
    /// The wallet.
    pub wallet: WalletId,
    /// This signer's seat.
    pub seat: Seat,
    /// The wallet epoch (the generation of its key shares).
    pub epoch: WalletEpoch,
    /// Encoded commitments, one per input.
    pub commitments: Vec<HexBytes>,
}

impl Round1Response {
    /// A round-1 answer (see the field docs), as a transport decodes it.
    pub fn new(
        wallet: WalletId,
        seat: Seat,
        epoch: WalletEpoch,
        commitments: Vec<HexBytes>,
    ) -> Self {
        Self {
            wallet,
            seat,
            epoch,
            commitments,
        }
    }
}

/// The answer to a round-2 request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Round2Response {
    /// The wallet.
    pub wallet: WalletId,
    /// This signer's seat.
    pub seat: Seat,
    /// Encoded signature shares, one per input.
    pub shares: Vec<HexBytes>,
    /// A fresh round-1 vector of as many commitments, for the
    /// coordinator's next ROAST session (live nonces in this signer's
    /// pool); empty when the wallet's nonce capacity is exhausted.
    pub commitments: Vec<HexBytes>,
    /// The member's Ed25519 identity signature over this answer and the
    /// request it answers (`Round2Response::sign`, in `blame.rs`); empty
    /// until signed. A coordinator ignores an answer whose signature does
    /// not verify, and keeps a verified one as evidence.
    #[serde(default)]
    pub signature: HexBytes,
}

impl Round2Response {
    /// A round-2 answer (see the field docs), as a transport decodes it.
    pub fn new(
        wallet: WalletId,
        seat: Seat,
        shares: Vec<HexBytes>,
        commitments: Vec<HexBytes>,
    ) -> Self {
        Self {
            wallet,
            seat,
            shares,
            commitments,
            signature: HexBytes(Vec::new()),
        }
    }

    /// The answer with `signature` as its identity signature, as a
    /// transport decodes it.
    #[must_use]
    pub fn with_signature(mut self, signature: HexBytes) -> Self {
        self.signature = signature;
        self
    }
}

/// A wallet as `status` and `list_wallets` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WalletStatus {
    /// The wallet.
    pub wallet: WalletId,
    /// Its state.
    pub state: WalletStateKind,
    /// Its threshold.
    pub threshold: u16,
    /// Its roster size.
    pub members: u16,
    /// This signer's seat.
    pub seat: Seat,
    /// The wallet epoch, for wallets that hold a key.
    pub epoch: Option<WalletEpoch>,
    /// The BIP341 output key, for wallets that hold a key.
    pub output_key: Option<HexBytes>,
    /// Live nonces held for this wallet.
    pub live_nonces: usize,
    /// The repairs this signer's operator approved and no helper's sum
    /// has used up yet: the seat, and when its approval expires (an
    /// expired one is dropped at the next prune). Memory only.
    pub repair_approvals: Vec<(Seat, Timestamp)>,
    /// The seat a repair this member takes part in rebuilds, while that
    /// repair runs here (memory only).
    pub repairing: Option<Seat>,
    /// The share refresh whose result this member holds pending
    /// (`refreshing`), for the operator to finish or abort it.
    pub refresh: Option<RefreshStatus>,
    /// The policy version the wallet applies (`None` from a signer that
    /// does not report it, or whose rollout record cannot be read).
    #[serde(default)]
    pub policy_version: Option<u32>,
    /// The staged rollout that names the wallet, if any
    /// (docs/policy.md, "Staged rollout").
    #[serde(default)]
    pub policy_rollout: Option<crate::rollout::WalletRollout>,
}

/// A pending share refresh, as `thresig status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RefreshStatus {
    /// The refresh session (`thresig refresh --resume` or `--abort` it).
    pub session: DkgSessionId,
    /// The wallet seats whose confirmations this member holds (its own
    /// included), ascending.
    pub confirmed: Vec<Seat>,
    /// Whether this member released its confirmation (its part 3
    /// committed): it then never vetoes, and keeps the pending shares
    /// until it switches (`--resume`); otherwise the refresh is still
    /// running here and a veto (`--abort`) is its to sign.
    #[serde(default)]
    pub released: bool,
}

impl RefreshStatus {
    /// A refresh this member has not released its confirmation of (see
    /// the field docs), as a transport decodes it.
    pub fn new(session: DkgSessionId, confirmed: Vec<Seat>) -> Self {
        Self {
            session,
            confirmed,
            released: false,
        }
    }

    /// This status with `released` set.
    #[must_use]
    pub fn released(mut self, released: bool) -> Self {
        self.released = released;
        self
    }
}

impl WalletStatus {
    /// The status of a wallet without a key and without live nonces; a
    /// transport decoding a status sets the remaining fields.
    pub fn new(
        wallet: WalletId,
        state: WalletStateKind,
        threshold: u16,
        members: u16,
        seat: Seat,
    ) -> Self {
        Self {
            wallet,
            state,
            threshold,
            members,
            seat,
            epoch: None,
            output_key: None,
            live_nonces: 0,
            repair_approvals: Vec::new(),
            repairing: None,
            refresh: None,
            policy_version: None,
            policy_rollout: None,
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// Round-1 commitments.
    Round1(Round1Response),
    /// Round-2 shares.
    Round2(Round2Response),
    /// Nonces destroyed by an abort.
    Aborted {
        /// How many.
        destroyed: usize,
    },
    /// One wallet's status.
    Status(WalletStatus),
    /// Every wallet's status.
    Wallets {
        /// The wallets, in id order.
        wallets: Vec<WalletStatus>,
    },
    /// DKG messages this member sends (part 1: one; part 2: one per peer;
    /// part 3: its confirmation).
    DkgMessages {
        /// The signed messages.
        messages: Vec<SignedDkgMessage>,
    },
    /// How far the wallet's confirmations are.
    Confirmations(ConfirmationStatus),
    /// A wallet's public key record, in the crypto crate's canonical
    /// encoding (`thresig_crypto::WalletKey::to_bytes`).
    WalletKey {
        /// The encoded record.
        key: HexBytes,
    },
    /// What a DKG cancel did.
    DkgCancelled {
        /// Whether a session in part 1 or 2 was dropped (false: there was
        /// none of that id, as after an earlier cancel; with
        /// abandonments: whether a pending refresh result was discarded).
        dropped: bool,
        /// This member's signed abandonment, when it was asked for one.
        #[serde(default)]
        abandonment: Option<SignedDkgMessage>,
    },
    /// A repair step's answer.
    Repair(crate::repair::RepairResponse),
}
