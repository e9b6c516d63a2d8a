//! Running a wallet's DKG over the network (DESIGN.md §6).
//!
//! The coordinator only relays: every message is signed by its author's
//! identity key and checked by every recipient against its own roster,
//! round-2 packages are sealed to each recipient's per-session key, and
//! every round-2 payload carries the author's echo hash of all round-1
//! packages. The wallet becomes active only when each member holds all n
//! confirmations; the output key is reported only then.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::Seat;
use thresig_daemon::{Code, Error as DaemonError, RpcCode};
use thresig_engine::{
    DkgKind, DkgPayload, DkgProposal, DkgRound1Proof, DkgSessionId, DkgShareProof, ErrorCode,
    Round1Answer, SignedDkgMessage, check_round1_answer, unbound_round1_refusal,
    unbound_round1_senders,
};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::NodeWallet;
use crate::peers::Peers;
use crate::progress::Progress;
use thresig_store::Recovery;

/// A finished DKG.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DkgOutcome {
    /// The session.
    pub session: DkgSessionId,
    /// The wallet's x-only BIP341 output key, as every member confirmed it.
    pub output_key: [u8; 32],
}

/// Why a DKG failed. Nothing is active after a failure: a member keeps a
/// wallet `dkg_pending` until it holds every confirmation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DkgError {
    /// A member refused or could not be reached in a phase. From part 3
    /// (`finish`) on the message says to check `thresig status` first: a
    /// new run may not simply follow ([`DkgError::is_retryable`]).
    #[error("{phase}: member {seat}: {error}{}", after_part3(phase))]
    Member {
        /// The phase.
        phase: DkgPhase,
        /// The member's cluster seat.
        seat: Seat,
        /// What it answered.
        #[source]
        error: DaemonError,
    },
    /// A member's answer does not fit the protocol (wrong count, wrong
    /// recipient, confirmations of different keys).
    #[error("{phase}: member {seat} answered out of protocol: {problem}")]
    Protocol {
        /// The phase.
        phase: DkgPhase,
        /// The member's cluster seat.
        seat: Seat,
        /// What is wrong.
        problem: &'static str,
    },
    /// A member is in another DKG session or phase than this run
    /// (`dkg_busy`: another coordinator's session holds the wallet;
    /// `dkg_not_in_phase`: the member lost or never had this run's
    /// session). That is a coordination fault, not the member's: no member
    /// is blamed.
    #[error(
        "{phase}: member {reported_by} is not in this run's session or phase (a coordination fault, not the member's): {error}"
    )]
    Coordination {
        /// The phase.
        phase: DkgPhase,
        /// The cluster seat of the first member that answered so, for the
        /// operator to look at its session; not a culprit.
        reported_by: Seat,
        /// What it answered.
        #[source]
        error: DaemonError,
    },
    /// A member's part 3 found the round-2 package another member sent it
    /// invalid (it does not open, decode or verify) and signed an
    /// accusation; with the messages this relay handed out, it is a proof
    /// anyone can check with the roster (`thresig blame verify`).
    #[error(
        "{phase}: member {accuser} accuses member {accused} of an invalid round-2 package, with a proof: {error}{}",
        after_part3(phase)
    )]
    Accused {
        /// The phase (a DKG's or a refresh's finish).
        phase: DkgPhase,
        /// The accusing member's cluster seat.
        accuser: Seat,
        /// The accused member's cluster seat.
        accused: Seat,
        /// The accuser's refusal (boxed, with the proof, so that a
        /// [`DkgError`] stays small).
        #[source]
        error: Box<DaemonError>,
        /// The proof against the accused.
        proof: Box<DkgShareProof>,
        /// The proofs other members' accusations of the same part 3 made,
        /// each with its accused member's cluster seat (in the order they
        /// arrived).
        others: Vec<(Seat, DkgShareProof)>,
    },
    /// A member's round-1 package fails the checks every member makes of
    /// it in part 2 (it does not decode, carries the wrong number of
    /// commitments, or its proof of knowledge does not verify): this relay
    /// checked it before handing it out, and the member's kind-bound
    /// signature makes it a proof anyone can check with the roster
    /// (`thresig blame verify`). Nothing was handed out.
    #[error(
        "{phase}: member {accused} sent {}, with a proof; the run is over and nothing is stored, so leave the member out or fix it before a new run",
        Round1Answer::PROVEN
    )]
    Round1Proven {
        /// The phase (a DKG's or a refresh's start).
        phase: DkgPhase,
        /// The accused member's cluster seat.
        accused: Seat,
        /// The proof against it.
        proof: Box<DkgRound1Proof>,
    },
    /// The run could not proceed at all.
    #[error("{} aborted: {problem}", if *refresh { "refresh" } else { "DKG" })]
    Aborted {
        /// Whether the run is a share refresh, not a fresh DKG.
        refresh: bool,
        /// Why.
        problem: &'static str,
    },
    /// `--abort` found fewer than the threshold of members that can never
    /// release their confirmation (or that vetoed), while some that still
    /// run the refresh session could make up the difference once their
    /// sessions end (a coordinator could still finish it, so they are not
    /// asked for a veto before).
    #[error(
        "refresh abort: members {running:?} still run the refresh session and may yet release their confirmations, and without them fewer than the threshold of members vetoed, so nothing was discarded; wait until their sessions expire (dkg_session_ttl_secs) or the coordinator cancels, then run --abort again (or --resume once every member released)"
    )]
    RefreshRunning {
        /// The cluster seats still running the session.
        running: Vec<Seat>,
    },
    /// `--abort` got fewer than the threshold of vetoes because the other
    /// members released their confirmation meanwhile (none was out of
    /// reach or refused in a way that could have changed that); those it
    /// got are stored at their members for good.
    #[error(
        "refresh abort: only members {vetoed:?} vetoed, fewer than the threshold, because the others released their confirmations, so nothing was discarded and no --abort can discard the refresh; finish it with --resume SESSION (if a member never releases, the members that released keep signing at the old epoch: rekey the wallet if needed)"
    )]
    TooFewVetoes {
        /// The cluster seats that vetoed.
        vetoed: Vec<Seat>,
    },
    /// `--abort` could not get a member's answer (out of reach, or a
    /// refusal other than a release) when fewer than the threshold of
    /// members vetoed or never released without it.
    #[error(
        "refresh abort: member {seat} gave no veto ({error}), and without it fewer than the threshold of members vetoed, so nothing was discarded; {}",
        if *retryable { "run --abort again once it answers" } else { "it refused for good: do what its refusal says, or finish the refresh with --resume SESSION" }
    )]
    AbortMember {
        /// The member's cluster seat.
        seat: Seat,
        /// What it answered.
        #[source]
        error: DaemonError,
        /// Whether running `--abort` again can succeed: this member, or
        /// others that were out of reach or still ran the session, may
        /// answer then and bring the vetoes to the threshold.
        retryable: bool,
    },
    /// `--abort` found fewer than the threshold of members that never
    /// released their confirmation, even counting those it missed (out of
    /// reach, or still running the session): no `--abort` can discard the
    /// refresh, only `--resume` can finish it.
    #[error(
        "refresh abort: fewer than the threshold of members never released their confirmation, even counting those out of reach or still running the session, so nothing was discarded and no --abort can discard the refresh; finish it with --resume SESSION once every member released (meanwhile the members that released keep it pending and sign at the old epoch; if a member never releases, rekey the wallet if needed)"
    )]
    Released,
    /// `--resume` reached no member holding this member's confirmation of
    /// the refresh (neither the member itself nor any that counted it).
    #[error(
        "refresh resume: no reachable member holds member {seat}'s confirmation; bring that member (or one that switched) back and run --resume again"
    )]
    Unconfirmed {
        /// The member's cluster seat.
        seat: Seat,
    },
}

impl DkgError {
    /// The proof against the accused member (its cluster seat) of a run
    /// that failed on a member's accusation.
    #[must_use]
    pub fn proof(&self) -> Option<(Seat, &DkgShareProof)> {
        match self {
            Self::Accused { accused, proof, .. } => Some((*accused, proof)),
            _ => None,
        }
    }

    /// Every proof the failed run holds, each with its accused member's
    /// cluster seat: [`DkgError::proof`]'s first.
    #[must_use]
    pub fn proofs(&self) -> Vec<(Seat, &DkgShareProof)> {
        let others = match self {
            Self::Accused { others, .. } => others.as_slice(),
            _ => &[],
        };
        self.proof()
            .into_iter()
            .chain(others.iter().map(|(seat, proof)| (*seat, proof)))
            .collect()
    }

    /// The proof against the member (its cluster seat) whose round-1
    /// package failed the relay's checks, of a run that failed so.
    #[must_use]
    pub fn round1_proof(&self) -> Option<(Seat, &DkgRound1Proof)> {
        match self {
            Self::Round1Proven { accused, proof, .. } => Some((*accused, proof)),
            _ => None,
        }
    }

    /// Whether the message already says how to finish or abandon the
    /// refresh it failed, with its session (a member failing it from part 3
    /// on), so that a caller naming the session does not say it again.
    #[must_use]
    pub fn names_refresh_recovery(&self) -> bool {
        match self {
            Self::Member { phase, .. } | Self::Accused { phase, .. } => {
                phase.refresh.is_some() && !phase.before_part3()
            }
            _ => false,
        }
    }

    /// Whether a fresh run can succeed without operator action: when a
    /// member was unreachable or refused transiently.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        let fresh_run_can_succeed = match self {
            // Before part 3 nothing is stored: a fresh run starts clean.
            // From part 3 on, members may hold this run's unconfirmed key
            // package, which a new run never overwrites: an operator must
            // look first.
            Self::Member { phase, error, .. } => {
                phase.before_part3()
                    && (retryable(error)
                        || matches!(
                            error,
                            DaemonError::Rpc {
                                code: RpcCode::DeadlineExceeded,
                                ..
                            }
                        ))
            }
            // Another coordinator's session expires or finishes
            // (`dkg_busy`), or a member lost this run's session
            // (`dkg_not_in_phase`: restarted, expired): a new run, with a
            // new session, is the fix (docs/errors.md).
            Self::Coordination { .. } => true,
            // The sessions expire (or their coordinator ends them).
            Self::RefreshRunning { .. } => true,
            // Judged from every member the abort missed, not this one's
            // answer alone.
            Self::AbortMember { retryable, .. } => *retryable,
            Self::Protocol { .. }
            | Self::Accused { .. }
            | Self::Round1Proven { .. }
            | Self::Aborted { .. }
            | Self::Unconfirmed { .. }
            | Self::Released
            | Self::TooFewVetoes { .. } => false,
        };
        if fresh_run_can_succeed {
            Recovery::Retryable
        } else {
            Recovery::Terminal
        }
    }
}

/// A phase of a run, as its failures name it. A DKG and a share refresh
/// run the same phases, but a failed refresh is finished or abandoned
/// with `thresig refresh`, never by a DKG, so its messages must not speak
/// of one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DkgPhase {
    /// The step (`start`, `round 2`, `finish`, `confirm`).
    pub name: &'static str,
    /// The session of the share refresh, if the run is one (not a fresh
    /// DKG): what finishes or abandons it names it. Boxed, so that a
    /// [`DkgError`] stays small.
    pub refresh: Option<Box<DkgSessionId>>,
}

impl DkgPhase {
    /// The phase `name` of the run `session` of `kind`.
    pub(crate) fn of(kind: &DkgKind, session: DkgSessionId, name: &'static str) -> Self {
        Self {
            name,
            refresh: matches!(kind, DkgKind::Refresh { .. }).then(|| Box::new(session)),
        }
    }

    /// The run, in this phase, cannot proceed at all.
    pub(crate) fn aborted(&self, problem: &'static str) -> DkgError {
        DkgError::Aborted {
            refresh: self.refresh.is_some(),
            problem,
        }
    }

    /// Whether members store nothing of the run yet in this phase.
    fn before_part3(&self) -> bool {
        matches!(self.name, "start" | "round 2")
    }
}

impl std::fmt::Display for DkgPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let run = if self.refresh.is_some() {
            "refresh"
        } else {
            "DKG"
        };
        write!(f, "{run} {}", self.name)
    }
}

/// What a member's failure from part 3 on adds to its message: members
/// may hold this run's unconfirmed key package, so what to look at before
/// another run. Of a refresh they may hold its new shares, and refuse a
/// new refresh (`dkg_busy`) until it is finished or abandoned: the
/// commands that do so, with its session.
fn after_part3(phase: &DkgPhase) -> String {
    match &phase.refresh {
        _ if phase.before_part3() => String::new(),
        Some(session) => {
            let session = hex::encode(session.0);
            format!(
                "; members may hold this run's new shares and refuse a new refresh until it is \
                 finished or abandoned: check `thresig status`, then finish it with \
                 `thresig refresh --resume {session}`, or, if a threshold of members never \
                 released their confirmation, abandon it with `thresig refresh --abort {session}` \
                 (docs/lifecycle.md)"
            )
        }
        None => "; members may hold this run's key package: check `thresig status` before running `thresig dkg` again (docs/cluster.md)".to_owned(),
    }
}

/// Runs the DKG of `wallet` among its members through `peers`. If the run
/// fails, every member is told to drop the session (if still in part 1 or
/// 2), so the next DKG does not wait for it to expire.
///
/// # Errors
/// [`DkgError`] naming the first member that failed a phase, or a
/// coordination fault naming none.
pub async fn run_dkg(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    rng: &mut (impl RngCore + CryptoRng),
    progress: &dyn Progress,
) -> Result<DkgOutcome, DkgError> {
    let mut id = [0u8; 32];
    rng.fill_bytes(&mut id);
    let session = DkgSessionId(id);
    let agreed = run(peers, wallet, session, DkgKind::Fresh, None, progress).await?;
    let output_key = output_key_of(&agreed).ok_or(DkgError::Aborted {
        refresh: false,
        problem: "no output key confirmed",
    })?;
    Ok(DkgOutcome {
        session,
        output_key,
    })
}

/// Runs the DKG `session` (fresh random bytes) of `kind` (a fresh DKG or
/// a share refresh) among the wallet's members that take part (of a
/// refresh: among `holders`, the seats of the current key record); the
/// confirmation payload every one of them signed. If the run fails, every
/// member is told to drop the session (if still in part 1 or 2), so the
/// next run does not wait for it to expire.
pub(crate) async fn run(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    session: DkgSessionId,
    kind: DkgKind,
    holders: Option<&[Seat]>,
    progress: &dyn Progress,
) -> Result<DkgPayload, DkgError> {
    let members = taking_part(wallet, &kind, holders);
    let proposal = DkgProposal::new(
        session,
        wallet.id().clone(),
        wallet.config.threshold,
        wallet.config.roster.clone(),
    )
    .with_kind(kind);
    let outcome = run_session(peers, wallet, proposal, &members, progress).await;
    if outcome.is_err() {
        cancel(peers, wallet, session).await;
    }
    outcome
}

/// The output key a fresh DKG's confirmation names, if it is 32 bytes.
fn output_key_of(payload: &DkgPayload) -> Option<[u8; 32]> {
    match payload {
        DkgPayload::Confirm { output_key, .. } => output_key.0.as_slice().try_into().ok(),
        _ => None,
    }
}

/// Tells every member to drop `session`, concurrently and at most once
/// each: a member that does not answer keeps it until it expires.
async fn cancel(peers: &Arc<Peers>, wallet: &NodeWallet, session: DkgSessionId) {
    let mut calls = JoinSet::new();
    for (_, cluster) in members(wallet) {
        let (peers, wallet_id) = (peers.clone(), wallet.id().clone());
        calls.spawn(async move {
            let client = peers.client(cluster).await?;
            peers
                .within(cluster, client.dkg_cancel(wallet_id, session))
                .await
                .map(|dropped| (cluster, dropped))
        });
    }
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok(Ok((cluster, dropped))) => info!(%cluster, dropped, "DKG session cancelled"),
            Ok(Err(error)) => info!(%error, "a member could not be told to cancel"),
            Err(_) => info!("a cancel task failed"),
        }
    }
}

/// [`run`] of `proposal`: the confirmation payload every member signed.
async fn run_session(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    proposal: DkgProposal,
    members: &[(Seat, Seat)],
    progress: &dyn Progress,
) -> Result<DkgPayload, DkgError> {
    let session = proposal.session;
    let [at_start, at_round2, at_finish] =
        ["start", "round 2", "finish"].map(|name| DkgPhase::of(&proposal.kind, session, name));
    info!(wallet = %wallet.id(), members = members.len(), "DKG part 1");
    let round1 = each(peers, members, &at_start, progress, |client, _| {
        let proposal = proposal.clone();
        async move { client.dkg_start(proposal).await }
    })
    .await?;
    for (seat, message) in &round1 {
        if message.sender != *seat || !matches!(message.payload, DkgPayload::Round1 { .. }) {
            return Err(protocol(
                at_start,
                wallet,
                *seat,
                "not its own round-1 message",
            ));
        }
        if !message.verify(&wallet.config) {
            return Err(protocol(at_start, wallet, *seat, UNSIGNED));
        }
        round1_checked(peers, wallet, (&proposal.kind, session), message, &at_start)?;
    }
    let round1: Vec<SignedDkgMessage> = round1.into_values().collect();

    info!("DKG part 2");
    let all_round1 = Arc::new(round1);
    let round2 = each(peers, members, &at_round2, progress, |client, seat| {
        let wallet_id = wallet.id().clone();
        let others: Vec<SignedDkgMessage> = all_round1
            .iter()
            .filter(|m| m.sender != seat)
            .cloned()
            .collect();
        async move { client.dkg_round2(wallet_id, session, others).await }
    })
    .await
    .map_err(|error| unbound_refused(wallet, all_round1.as_slice(), error))?;
    // Each member must send exactly one message of its own to every other
    // member: checked here, so that a member that misroutes is named, not
    // the member it left without a package.
    let mut inbox: BTreeMap<Seat, Vec<SignedDkgMessage>> = BTreeMap::new();
    for (seat, messages) in round2 {
        let mut recipients: Vec<Seat> = Vec::with_capacity(messages.len());
        for message in &messages {
            let DkgPayload::Round2 { to, .. } = &message.payload else {
                return Err(protocol(at_round2, wallet, seat, "not a round-2 message"));
            };
            if message.sender != seat {
                return Err(protocol(
                    at_round2,
                    wallet,
                    seat,
                    "a message of another sender",
                ));
            }
            if !message.verify(&wallet.config) {
                return Err(protocol(at_round2, wallet, seat, UNSIGNED));
            }
            recipients.push(*to);
        }
        recipients.sort_unstable();
        let expected: Vec<Seat> = members
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| *s != seat)
            .collect();
        if recipients != expected {
            return Err(protocol(
                at_round2,
                wallet,
                seat,
                "not one message to each other member",
            ));
        }
        for message in messages {
            if let DkgPayload::Round2 { to, .. } = &message.payload {
                inbox.entry(*to).or_default().push(message);
            }
        }
    }

    info!("DKG part 3");
    let inbox = Arc::new(inbox);
    // Every member's answer is awaited, also after a failure: a member
    // that refuses its own part 3 at once must not keep the accusation of
    // the member it cheated, arriving later, from being heard.
    let confirmations = each_settled(peers, members, &at_finish, progress, |client, seat| {
        let wallet_id = wallet.id().clone();
        let mine = inbox.get(&seat).cloned().unwrap_or_default();
        async move { client.dkg_finish(wallet_id, session, mine).await }
    })
    .await
    .map_err(|failures| {
        let relayed = (&proposal.kind, all_round1.as_slice(), inbox.as_ref());
        proven_first(wallet, relayed, failures, &at_finish)
    })?;
    let agreed = agree(wallet, (&proposal.kind, session), &confirmations)?;
    info!("DKG confirmations");
    deliver(
        peers,
        wallet,
        members,
        (&proposal.kind, session),
        confirmations,
        progress,
    )
    .await?;
    Ok(agreed)
}

/// Checks a member's round-1 `message` as every member's part 2 will
/// ([`check_round1_answer`], shared with the C library's relay, which
/// words its problems alike: [`Round1Answer::problem`]): a message of
/// another session or wallet, or a kind-bound signature that does not
/// verify for the session's `kind`, names the member (it answered this
/// relay directly), and a package that fails part 2's checks under a
/// kind-bound signature fails the run with the proof. A message without
/// one (a member of an earlier version) passes unless `peers` require it:
/// its fault, if any, surfaces in part 2, naming it without proof.
fn round1_checked(
    peers: &Peers,
    wallet: &NodeWallet,
    (kind, session): (&DkgKind, DkgSessionId),
    message: &SignedDkgMessage,
    phase: &DkgPhase,
) -> Result<(), DkgError> {
    let seat = message.sender;
    match check_round1_answer(&wallet.config, (kind, session), message) {
        Round1Answer::Proven(proof) => {
            warn!(%seat, "a member's round-1 package fails part 2's checks");
            Err(DkgError::Round1Proven {
                phase: phase.clone(),
                accused: wallet.cluster_seat(seat).unwrap_or(seat),
                proof,
            })
        }
        Round1Answer::Unbound if peers.requires_kind_signature() => {
            Err(protocol(phase.clone(), wallet, seat, UNBOUND))
        }
        answer => match answer.problem() {
            Some(problem) => Err(protocol(phase.clone(), wallet, seat, problem)),
            None => Ok(()),
        },
    }
}

/// A member's refusal of part 2 (`error`) for a round-1 message without
/// the kind-bound signature it requires, when this relay does not require
/// it (its own file lacks the setting, mid-rollout): the first sender of
/// such a message in `round1`, which answered this relay directly, is
/// named ([`unbound_round1_senders`]), not the refusing member, which
/// accuses no one. Any other error is returned as it is.
fn unbound_refused(wallet: &NodeWallet, round1: &[SignedDkgMessage], error: DkgError) -> DkgError {
    let DkgError::Member {
        phase,
        error: DaemonError::Refused(refusal),
        ..
    } = &error
    else {
        return error;
    };
    let code = refusal.code.as_str();
    match unbound_round1_senders((code, &refusal.message), round1).first() {
        Some(&seat) => {
            warn!(%seat, "members refused part 2: a round-1 message without the kind-bound signature");
            protocol(phase.clone(), wallet, seat, unbound_round1_refusal(1))
        }
        None => error,
    }
}

/// Of a part 3's `failures` (in the order they arrived), the first that
/// is an accusation making a verifying proof ([`accused`]), carrying the
/// proofs of any later ones, or else the first. Every failure is logged,
/// one line each (an error's text holds no revealed key).
fn proven_first(
    wallet: &NodeWallet,
    relayed: (
        &DkgKind,
        &[SignedDkgMessage],
        &BTreeMap<Seat, Vec<SignedDkgMessage>>,
    ),
    failures: Vec<DkgError>,
    phase: &DkgPhase,
) -> DkgError {
    let mut first = None;
    let mut proven: Option<DkgError> = None;
    for failure in failures {
        warn!("{failure}");
        match (accused(wallet, relayed, failure), &mut proven) {
            (DkgError::Accused { accused, proof, .. }, Some(DkgError::Accused { others, .. })) => {
                others.push((accused, *proof))
            }
            (accusation @ DkgError::Accused { .. }, None) => proven = Some(accusation),
            (other, _) => {
                first.get_or_insert(other);
            }
        }
    }
    proven
        .or(first)
        .unwrap_or_else(|| phase.aborted("a part 3 failed without a failure"))
}

/// `error` as [`DkgError::Accused`] when it is a member's part-3 refusal
/// carrying an accusation that, with the round-1 messages and the
/// round-2 inboxes this relay handed out, makes a proof that verifies
/// (checked here, so that a member's false accusation is reported as the
/// plain refusal it is, not as proof); `error` unchanged otherwise.
fn accused(
    wallet: &NodeWallet,
    (kind, round1, inbox): (
        &DkgKind,
        &[SignedDkgMessage],
        &BTreeMap<Seat, Vec<SignedDkgMessage>>,
    ),
    error: DkgError,
) -> DkgError {
    let DkgError::Member {
        phase,
        seat: accuser,
        error: DaemonError::Refused(refusal),
    } = &error
    else {
        return error;
    };
    if phase.name != "finish" {
        return error;
    }
    let Some(accusation) = refusal.accusation.as_deref() else {
        return error;
    };
    let DkgPayload::Accuse { accused, .. } = &accusation.payload else {
        return error;
    };
    let Some(round2) = inbox
        .get(&accusation.sender)
        .and_then(|mine| mine.iter().find(|m| m.sender == *accused))
    else {
        return error;
    };
    let proof = DkgShareProof::new(
        kind.clone(),
        round1.to_vec(),
        round2.clone(),
        accusation.clone(),
    );
    if let Err(e) = proof.verify(&wallet.config) {
        info!(%accuser, code = e.code(), "a member's accusation does not make a proof");
        return error;
    }
    let accused = wallet.cluster_seat(*accused).unwrap_or(*accused);
    let (phase, accuser, error) = match error {
        DkgError::Member { phase, seat, error } => (phase, seat, error),
        other => return other,
    };
    DkgError::Accused {
        phase,
        accuser,
        accused,
        error: Box::new(error),
        proof: Box::new(proof),
        others: Vec::new(),
    }
}

/// The confirmation payload every member signed, each checked to be of
/// `kind`, its own and validly signed.
///
/// # Errors
/// [`DkgError::Protocol`] naming the first member whose confirmation is
/// not, or confirms another result.
pub(crate) fn agree(
    wallet: &NodeWallet,
    (kind, session): (&DkgKind, DkgSessionId),
    confirmations: &BTreeMap<Seat, SignedDkgMessage>,
) -> Result<DkgPayload, DkgError> {
    let finish = DkgPhase::of(kind, session, "finish");
    let mut agreed: Option<&DkgPayload> = None;
    for (seat, confirmation) in confirmations {
        let of_kind = matches!(
            (kind, &confirmation.payload),
            (DkgKind::Fresh, DkgPayload::Confirm { .. })
                | (DkgKind::Refresh { .. }, DkgPayload::RefreshConfirm { .. })
        );
        if !of_kind {
            return Err(protocol(finish, wallet, *seat, "not a confirmation"));
        }
        if confirmation.sender != *seat {
            return Err(protocol(
                finish,
                wallet,
                *seat,
                "another member's confirmation",
            ));
        }
        if !confirmation.verify(&wallet.config) {
            return Err(protocol(finish, wallet, *seat, UNSIGNED));
        }
        if *kind == DkgKind::Fresh && output_key_of(&confirmation.payload).is_none() {
            return Err(protocol(
                finish,
                wallet,
                *seat,
                "output key is not 32 bytes",
            ));
        }
        // Every member must confirm the same result: for a refresh the
        // whole key record and transcript, not just the (unchanged) key.
        if agreed.is_some_and(|p| *p != confirmation.payload) {
            return Err(protocol(finish, wallet, *seat, "confirmed another key"));
        }
        agreed = Some(&confirmation.payload);
    }
    agreed
        .cloned()
        .ok_or_else(|| finish.aborted("the wallet has no members"))
}

/// Delivers every confirmation to every one of `members`, which must each
/// then report the wallet active (switched, for a refresh).
///
/// # Errors
/// [`DkgError`] naming the first member that refused or stayed inactive.
pub(crate) async fn deliver(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    members: &[(Seat, Seat)],
    (kind, session): (&DkgKind, DkgSessionId),
    confirmations: BTreeMap<Seat, SignedDkgMessage>,
    progress: &dyn Progress,
) -> Result<(), DkgError> {
    let confirm = DkgPhase::of(kind, session, "confirm");
    let confirmations: Arc<Vec<SignedDkgMessage>> = Arc::new(confirmations.into_values().collect());
    let statuses = each(peers, members, &confirm, progress, |client, _| {
        let wallet_id = wallet.id().clone();
        let confirmations = confirmations.clone();
        // CONFIRMATIONS_IN_FLIGHT at a time (the member takes them in any
        // order): a member admits only a few requests of one coordinator at
        // once and refuses the rest as overloaded.
        async move {
            let mut calls = JoinSet::new();
            let mut active = false;
            for confirmation in confirmations.iter().cloned() {
                if calls.len() >= CONFIRMATIONS_IN_FLIGHT
                    && let Some(joined) = calls.join_next().await
                {
                    active |= confirmed(joined)?;
                }
                let (client, wallet_id) = (client.clone(), wallet_id.clone());
                calls.spawn(async move { client.dkg_confirm(wallet_id, confirmation).await });
            }
            while let Some(joined) = calls.join_next().await {
                active |= confirmed(joined)?;
            }
            Ok(active)
        }
    })
    .await?;
    for (seat, active) in statuses {
        if !active {
            return Err(protocol(confirm, wallet, seat, "wallet not active"));
        }
    }
    Ok(())
}

/// Confirmations sent to one member at a time. A member admits at most
/// `max_requests_per_seat` requests of one coordinator at once (8 by
/// default, as little as 1) and refuses the rest as overloaded, which failed
/// the DKG when all n were sent together; two keep a round trip's latency
/// half hidden and fit any setting but the smallest.
const CONFIRMATIONS_IN_FLIGHT: usize = 2;

/// Whether one confirmation's answer says the member's wallet is active.
fn confirmed(
    joined: Result<Result<thresig_engine::ConfirmationStatus, DaemonError>, tokio::task::JoinError>,
) -> Result<bool, DaemonError> {
    let status = joined.map_err(|_| DaemonError::Malformed("a confirmation task failed"))??;
    Ok(status.active)
}

/// What a member answered with a message its identity key did not sign.
const UNSIGNED: &str = "a message its identity key did not sign";

/// A member's round-1 message without the kind-bound signature this relay
/// requires (`require_round1_kind_signature`).
const UNBOUND: &str = "a round-1 message without the kind-bound signature this relay requires (require_round1_kind_signature)";

/// The wallet's seats that take part in a session of `kind` (a refresh
/// leaves its removed seats out, and those not among `holders`, the
/// members of the key record it refreshes: an earlier refresh may have
/// removed a seat that stays in the roster), with their cluster seats.
pub(crate) fn taking_part(
    wallet: &NodeWallet,
    kind: &DkgKind,
    holders: Option<&[Seat]>,
) -> Vec<(Seat, Seat)> {
    let removed: &[Seat] = match kind {
        DkgKind::Fresh => &[],
        DkgKind::Refresh { removed, .. } => removed,
    };
    members(wallet)
        .into_iter()
        .filter(|(seat, _)| !removed.contains(seat))
        .filter(|(seat, _)| holders.is_none_or(|h| h.contains(seat)))
        .collect()
}

/// The wallet's seats with their cluster seats.
fn members(wallet: &NodeWallet) -> Vec<(Seat, Seat)> {
    wallet
        .seats
        .iter()
        .enumerate()
        .filter_map(|(i, cluster)| {
            let seat = Seat::try_from(u16::try_from(i + 1).ok()?).ok()?;
            Some((seat, *cluster))
        })
        .collect()
}

fn protocol(phase: DkgPhase, wallet: &NodeWallet, seat: Seat, problem: &'static str) -> DkgError {
    DkgError::Protocol {
        phase,
        seat: wallet.cluster_seat(seat).unwrap_or(seat),
        problem,
    }
}

/// How often one member's request in one phase is sent again after a
/// retryable failure (its daemon timed out under load, the connection
/// dropped). Every DKG part is idempotent for the byte-identical request:
/// the engine answers a repeated part from the state the first one left.
const ATTEMPTS: usize = 3;

/// Runs `call` against every member at once, sending a member's request
/// again after a retryable failure; the answers by wallet seat, or the
/// first failure that is not retryable or outlasts [`ATTEMPTS`]. A failure
/// is returned once the other requests in flight ended (each within the
/// members' patience), so that a cancel sent after it reaches every member
/// after its request did.
pub(crate) async fn each<T, F, Fut>(
    peers: &Arc<Peers>,
    members: &[(Seat, Seat)],
    phase: &DkgPhase,
    progress: &dyn Progress,
    call: F,
) -> Result<BTreeMap<Seat, T>, DkgError>
where
    T: Send + 'static,
    F: Fn(thresig_daemon::SignerClient, Seat) -> Fut,
    Fut: std::future::Future<Output = Result<T, DaemonError>> + Send + 'static,
{
    run_each(peers, (members, phase, progress), false, call)
        .await
        .map_err(|mut failures| failures.swap_remove(0))
}

/// As [`each`], but a failure does not end the phase: every member's
/// request runs to its end (retried as [`each`] retries it), and every
/// failure is returned, in the order they came (never none).
async fn each_settled<T, F, Fut>(
    peers: &Arc<Peers>,
    members: &[(Seat, Seat)],
    phase: &DkgPhase,
    progress: &dyn Progress,
    call: F,
) -> Result<BTreeMap<Seat, T>, Vec<DkgError>>
where
    T: Send + 'static,
    F: Fn(thresig_daemon::SignerClient, Seat) -> Fut,
    Fut: std::future::Future<Output = Result<T, DaemonError>> + Send + 'static,
{
    run_each(peers, (members, phase, progress), true, call).await
}

/// [`each`] (`settle` false: the first failure ends the phase, once the
/// requests in flight ended) and [`each_settled`] (`settle` true).
async fn run_each<T, F, Fut>(
    peers: &Arc<Peers>,
    (members, phase, progress): (&[(Seat, Seat)], &DkgPhase, &dyn Progress),
    settle: bool,
    call: F,
) -> Result<BTreeMap<Seat, T>, Vec<DkgError>>
where
    T: Send + 'static,
    F: Fn(thresig_daemon::SignerClient, Seat) -> Fut,
    Fut: std::future::Future<Output = Result<T, DaemonError>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let spawn = |tasks: &mut JoinSet<_>, client, seat: Seat, cluster: Seat, attempt: usize| {
        let call = call(client, seat);
        let peers = peers.clone();
        tasks.spawn(async move { (seat, cluster, attempt, peers.within(cluster, call).await) });
    };
    let member = |cluster: Seat| {
        let phase = phase.clone();
        move |error| DkgError::Member {
            phase,
            seat: cluster,
            error,
        }
    };
    let mut failures = Vec::new();
    for (seat, cluster) in members {
        match peers.client(*cluster).await {
            Ok(client) => spawn(&mut tasks, client, *seat, *cluster, 1),
            Err(error) => {
                failures.push(member(*cluster)(error));
                if !settle {
                    break;
                }
            }
        }
    }
    let mut answers = BTreeMap::new();
    while settle || failures.is_empty() {
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let Ok((seat, cluster, attempt, answer)) = joined else {
            failures.push(phase.aborted("a request task panicked"));
            continue;
        };
        let failure = match answer {
            Ok(value) => {
                answers.insert(seat, value);
                progress.step(phase.name, answers.len(), members.len());
                continue;
            }
            // Retrying cannot help within this run, and the member did
            // nothing wrong: it is in another session, or lost this one.
            Err(error) if is_coordination_fault(&error) => DkgError::Coordination {
                phase: phase.clone(),
                reported_by: cluster,
                error,
            },
            Err(error) if attempt < ATTEMPTS && retryable(&error) => {
                info!(%cluster, %phase, attempt, %error, "asking the member again");
                if crate::peers::is_transport(&error) {
                    peers.forget(cluster);
                }
                match peers.client(cluster).await {
                    Ok(client) => {
                        spawn(&mut tasks, client, seat, cluster, attempt + 1);
                        continue;
                    }
                    Err(error) => member(cluster)(error),
                }
            }
            Err(error) => member(cluster)(error),
        };
        failures.push(failure);
    }
    if failures.is_empty() {
        return Ok(answers);
    }
    while tasks.join_next().await.is_some() {}
    Err(failures)
}

/// Whether a member's refusal says it is not in this run's session or
/// phase (`dkg_busy`, `dkg_not_in_phase`): another coordinator's session
/// holds the wallet, or the member lost this one (expiry, restart, abort).
/// A relay cannot tell which member, if any, caused it.
fn is_coordination_fault(error: &DaemonError) -> bool {
    let DaemonError::Refused(refusal) = error else {
        return false;
    };
    matches!(
        refusal.code.kind(),
        Code::Engine(ErrorCode::DkgBusy | ErrorCode::DkgNotInPhase)
    )
}

/// Whether asking the member again in this run can succeed: after a
/// refusal it calls retryable (its own server timed out under load, its
/// store failed for now) or a lost reply, as the signing driver's round 2
/// does ([`crate::peers::reply_lost`]: a dropped connection, or no answer
/// within the relay's patience). A member that stays silent is named after
/// [`ATTEMPTS`] tries.
pub(crate) fn retryable(error: &DaemonError) -> bool {
    match error {
        DaemonError::Refused(e) => e.is_retryable(),
        other => crate::peers::reply_lost(other),
    }
}

#[cfg(test)]
mod tests {
    use thresig_daemon::{Recovery, SignerError};

    use thresig_engine::test_util::cluster::seat;

    use super::*;

    const SESSION: DkgSessionId = DkgSessionId([1; 32]);

    /// A share refresh from wallet epoch 0 that removes no one.
    fn refresh() -> DkgKind {
        DkgKind::Refresh {
            from_epoch: thresig_engine::WalletEpoch(0),
            removed: Vec::new(),
        }
    }

    /// Member 2 out of reach in phase `name` of `session`, a run of `kind`.
    fn failed_in(kind: &DkgKind, session: DkgSessionId, name: &'static str) -> DkgError {
        DkgError::Member {
            phase: DkgPhase::of(kind, session, name),
            seat: seat(2),
            error: unreachable(),
        }
    }

    fn unreachable() -> DaemonError {
        DaemonError::Rpc {
            code: RpcCode::Unavailable,
            message: "127.0.0.1:1: Connection refused; is its `thresig serve` running?".to_owned(),
        }
    }

    #[test]
    fn a_member_lost_from_part_3_on_is_terminal_and_says_to_check_status() {
        for phase in ["finish", "confirm"] {
            let e = DkgError::Member {
                phase: DkgPhase::of(&DkgKind::Fresh, SESSION, phase),
                seat: seat(2),
                error: unreachable(),
            };
            assert_eq!(e.recovery(), Recovery::Terminal, "{phase}");
            let text = e.to_string();
            assert!(text.contains("check `thresig status`"), "{text}");
            assert!(!text.contains("run this command again"), "{text}");
        }
        for phase in ["start", "round 2"] {
            let e = DkgError::Member {
                phase: DkgPhase::of(&DkgKind::Fresh, SESSION, phase),
                seat: seat(2),
                error: unreachable(),
            };
            assert_eq!(e.recovery(), Recovery::Retryable, "{phase}");
            assert!(!e.to_string().contains("thresig status"), "{e}");
        }
    }

    #[test]
    fn a_refresh_failure_names_the_refresh_and_points_to_thresig_refresh() {
        let refresh = refresh();
        for name in ["start", "round 2", "finish", "confirm"] {
            let e = failed_in(&refresh, SESSION, name);
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("refresh {name}: member 2")),
                "{text}"
            );
            assert!(
                !text.contains("DKG") && !text.contains("thresig dkg"),
                "{text}"
            );
            if !matches!(name, "start" | "round 2") {
                assert!(text.contains("`thresig refresh --resume "), "{text}");
            }
            let dkg = failed_in(&DkgKind::Fresh, SESSION, name);
            let text = dkg.to_string();
            assert!(text.starts_with(&format!("DKG {name}: member 2")), "{text}");
            assert!(!text.contains("refresh"), "{text}");
            assert_eq!(e.recovery(), dkg.recovery(), "{name}");
        }
    }

    /// A refresh that fails from part 3 on names the command that
    /// finishes or abandons it, with its session: a plain new run is
    /// refused (`dkg_busy`) while members hold its new shares.
    #[test]
    fn a_refresh_failing_from_part_3_on_names_resume_and_abort_with_its_session() {
        let refresh = refresh();
        let session = DkgSessionId([0xab; 32]);
        let hex = "ab".repeat(32);
        for name in ["finish", "confirm"] {
            let e = failed_in(&refresh, session, name);
            let text = e.to_string();
            assert!(
                text.contains(&format!("thresig refresh --resume {hex}"))
                    && text.contains(&format!("--abort {hex}")),
                "{text}"
            );
        }
    }

    /// `names_refresh_recovery` says exactly when the message names the
    /// refresh's `--resume` and `--abort` (the command line then does not
    /// say them again), in every phase of either kind of run.
    #[test]
    fn names_refresh_recovery_is_true_exactly_when_the_message_names_it() {
        let refresh = refresh();
        let hex = hex::encode(SESSION.0);
        for kind in [&DkgKind::Fresh, &refresh] {
            for name in ["start", "round 2", "finish", "confirm"] {
                let e = failed_in(kind, SESSION, name);
                let text = e.to_string();
                let named = text.contains(&format!("--resume {hex}"))
                    && text.contains(&format!("--abort {hex}"));
                assert_eq!(e.names_refresh_recovery(), named, "{name}: {text}");
            }
        }
    }

    /// A run that cannot proceed at all names its kind: a refresh's never
    /// speaks of a DKG.
    #[test]
    fn an_aborted_refresh_does_not_speak_of_a_dkg() {
        let refresh = refresh();
        let e = DkgPhase::of(&refresh, SESSION, "finish").aborted("a request task panicked");
        let text = e.to_string();
        assert!(text.starts_with("refresh aborted: "), "{text}");
        assert!(!text.contains("DKG"), "{text}");
        let fresh = DkgPhase::of(&DkgKind::Fresh, SESSION, "start").aborted("no members");
        assert!(fresh.to_string().starts_with("DKG aborted: "), "{fresh}");
    }

    #[test]
    fn a_member_that_lost_the_session_makes_a_new_run_worth_trying() {
        for (code, recovery) in [
            (ErrorCode::DkgNotInPhase, Recovery::Terminal),
            (ErrorCode::DkgBusy, Recovery::Retryable),
        ] {
            let wire = thresig_daemon::ErrorCode::from(code);
            let refusal = SignerError::new(wire, recovery, "lost");
            let error = DaemonError::Refused(refusal);
            assert!(is_coordination_fault(&error));
            let e = DkgError::Coordination {
                phase: DkgPhase::of(&DkgKind::Fresh, SESSION, "finish"),
                reported_by: seat(3),
                error,
            };
            assert_eq!(e.recovery(), Recovery::Retryable, "{}", code.as_str());
        }
    }

    /// A 2-of-3 wallet's DKG in which seat 2's package to seat 1 does not
    /// open (it is the one sealed to seat 3): the wallet, the round-1
    /// messages, the inboxes, and seat 1's refusal with its accusation.
    fn accused_run() -> (
        NodeWallet,
        Vec<SignedDkgMessage>,
        BTreeMap<Seat, Vec<SignedDkgMessage>>,
        SignerError,
    ) {
        use thresig_engine::test_util::cluster::Cluster;
        use thresig_engine::test_util::dkg;
        let mut c = Cluster::unkeyed(77, 2, 3, &["w"]);
        let p = dkg::proposal(&c, "w", 1);
        let round1 = dkg::part1(&mut c, &p);
        let mut inbox = dkg::part2(&mut c, &p, &round1);
        dkg::tampered(&mut inbox, |payload, to_three| {
            let theirs = to_three.iter().find(|m| m.sender == seat(2)).unwrap();
            let (
                DkgPayload::Round2 { sealed, .. },
                DkgPayload::Round2 {
                    sealed: sealed_to_three,
                    ..
                },
            ) = (payload, &theirs.payload)
            else {
                panic!("not round 2")
            };
            *sealed = sealed_to_three.clone();
        });
        let err = dkg::finish_at(&c, &p, &inbox, 1).unwrap_err();
        let accusation = err.accusation().cloned().expect("an accusation");
        let wire = thresig_daemon::ErrorCode::from(ErrorCode::DkgFailed);
        let refusal =
            SignerError::new(wire, Recovery::Terminal, "accused").with_accusation(Some(accusation));
        let wallet = NodeWallet {
            config: c.member(3).config.wallets[0].clone(),
            seats: vec![seat(1), seat(2), seat(3)],
        };
        (wallet, round1, inbox, refusal)
    }

    fn refused(from: u16, refusal: SignerError) -> DkgError {
        DkgError::Member {
            phase: DkgPhase::of(&DkgKind::Fresh, SESSION, "finish"),
            seat: seat(from),
            error: DaemonError::Refused(refusal),
        }
    }

    /// The verifying accusation is reported whatever arrived before it: a
    /// refusal, a plain failure or an accusation that proves nothing.
    #[test]
    fn a_part_3_reports_the_accusation_that_proves_over_earlier_failures() {
        let (wallet, round1, inbox, accusation) = accused_run();
        let finish = DkgPhase::of(&DkgKind::Fresh, SESSION, "finish");
        let relayed = (&DkgKind::Fresh, round1.as_slice(), &inbox);
        let not_in_phase = || {
            let wire = thresig_daemon::ErrorCode::from(ErrorCode::DkgNotInPhase);
            SignerError::new(wire, Recovery::Terminal, "not in this phase")
        };
        let lie = SignedDkgMessage::sign(
            &thresig_engine::test_util::identity_secret(3),
            inbox[&seat(1)][0].session,
            wallet.id().clone(),
            seat(3),
            DkgPayload::Accuse {
                accused: seat(2),
                hpke_secret: thresig_engine::RevealedHpkeKey::new(vec![7; 32]),
            },
        );
        let wire = thresig_daemon::ErrorCode::from(ErrorCode::DkgFailed);
        let false_accusation =
            SignerError::new(wire, Recovery::Terminal, "a lie").with_accusation(Some(lie));
        for failures in [
            vec![refused(2, not_in_phase()), refused(1, accusation.clone())],
            vec![
                refused(3, false_accusation),
                DkgError::Member {
                    phase: finish.clone(),
                    seat: seat(2),
                    error: unreachable(),
                },
                refused(1, accusation.clone()),
            ],
        ] {
            let e = proven_first(&wallet, relayed, failures, &finish);
            assert!(
                matches!(&e, DkgError::Accused { accuser, accused, .. } if (*accuser, *accused) == (seat(1), seat(2))),
                "{e:?}"
            );
        }
    }
}
