//! Signing a PSBT through ROAST over the network: the I/O driver around the
//! sans-IO [`thresig_roast::Coordinator`].
//!
//! The driver sends each request the coordinator emits to its member on its
//! own task, feeds every answer back with the seat the TLS connection
//! authenticated (the connection to a wallet seat's cluster seat, whose
//! certificate must name that seat), and calls the coordinator's timeout
//! handler at the deadline it asks for. It trusts signers for nothing: every
//! share is verified against the wallet's public key record before use, and
//! an undecodable share convicts its sender exactly like an invalid one.
//! A round-2 answer counts only if its member's identity key signed it
//! over the request (an answer that is not signed counts as missing, and
//! blames nobody); the signed answer of every culprit is kept as a
//! [`BlameProof`] (docs/blame.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash as _;
use thresig_crypto::{Commitment, PreparedPackage, Seat, SignatureShare, WalletKey};
use thresig_daemon::{Code, Error as DaemonError, SignerError};
use thresig_engine::{
    AbortRequest, BlameProof, ErrorCode, HexBytes, Round1Request, Round2Request, Round2Response,
    SigningTarget, WalletEpoch, WalletId,
};
use thresig_roast::{
    Config as RoastConfig, Coordinator, Event, Failure, Misbehavior, Refusal, Reply, Request,
    Round, Scheme, Unresponsiveness, Verdict,
};

use crate::kept::{CheckedAnswer, KeptAnswers};
use thresig_tx::WalletPsbt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::NodeWallet;
use crate::peers::{Peers, is_transport, reply_lost};
use crate::pool::{CommitmentPool, Kept, Shape};
use crate::progress::Progress;
use crate::scores::Observed;
use thresig_roast::quarantine::Fault as ScoreFault;
use thresig_store::Recovery;

/// Called with each round-2 request before it is sent, and the cluster seat
/// it goes to: an audit trail of what the coordinator asked for.
pub type Round2Journal = Arc<dyn Fn(Seat, &Round2Request) + Send + Sync>;

/// How a signing run is driven.
#[derive(Clone)]
#[non_exhaustive]
pub struct SignOptions {
    /// How long one member may take to answer one request.
    pub request_timeout: Duration,
    /// How long the whole run may take.
    pub deadline: Duration,
    /// Cluster seats whose first round-1 answers are handled before anyone
    /// else's, so that they are in the first session. Only the demo sets
    /// it, to show that signers sending invalid shares in the first session
    /// are caught; a production coordinator takes answers as they come.
    pub answer_first: BTreeSet<Seat>,
    /// Sees every round-2 request (see [`Round2Journal`]).
    pub journal: Option<Round2Journal>,
    /// Told of each session and of each valid share vector of the latest
    /// one (`t` make a signature).
    pub progress: Option<Arc<dyn Progress>>,
    /// Cluster seats quarantined by the caller's scores
    /// ([`crate::scores`]): asked last, and left out while t others answer
    /// ([`thresig_roast::Config::deferred`]).
    pub deferred: BTreeSet<Seat>,
    /// The commitment vectors this coordinator keeps between its runs
    /// ([`CommitmentPool`]): the run starts with the members' kept vectors
    /// instead of asking them in round 1, and keeps what it did not use
    /// rather than asking the members to drop it. `None` (the default) for
    /// a coordinator that signs once.
    pub pool: Option<Arc<CommitmentPool>>,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            request_timeout: thresig_roast::DEFAULT_REQUEST_TIMEOUT,
            deadline: thresig_roast::DEFAULT_DEADLINE,
            answer_first: BTreeSet::new(),
            journal: None,
            progress: None,
            deferred: BTreeSet::new(),
            pool: None,
        }
    }
}

impl std::fmt::Debug for SignOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignOptions")
            .field("request_timeout", &self.request_timeout)
            .field("deadline", &self.deadline)
            .field("answer_first", &self.answer_first)
            .field("journal", &self.journal.is_some())
            .field("progress", &self.progress.is_some())
            .field("deferred", &self.deferred)
            .field("pool", &self.pool)
            .finish()
    }
}

/// A finished run.
#[derive(Debug)]
#[non_exhaustive]
pub struct SignOutcome {
    /// One BIP340 signature per input the wallet signs, in input order,
    /// each verified under the wallet's output key.
    pub signatures: Vec<[u8; 64]>,
    /// ROAST sessions started.
    pub sessions: u32,
    /// Cluster seats that sent invalid shares, ascending.
    pub culprits: Vec<Seat>,
    /// Cluster seats that timed out, refused, or signed without fresh
    /// commitments at least once, ascending.
    pub unresponsive: Vec<Seat>,
    /// The cluster seats whose shares made the signatures, ascending.
    pub signers: Vec<Seat>,
    /// The evidence against each culprit, by cluster seat: its signed
    /// answer with the request it answers (docs/blame.md).
    pub proofs: BTreeMap<Seat, BlameProof>,
    /// What the run saw of each member, for its score.
    pub observed: Observed,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The PSBT's sighashes could not be computed.
    #[error("the PSBT cannot be signed: {0}")]
    Psbt(#[from] thresig_tx::Error),
    /// The coordinator refused its setup (no inputs, bad threshold).
    #[error("coordinator setup: {0}")]
    Setup(#[from] thresig_roast::Error),
    /// The run ended without a signature.
    #[error(
        "signing failed after {sessions} ROAST session(s){}: {reason}",
        culprit_list(culprits)
    )]
    Failed {
        /// Why, as the coordinator reports it.
        reason: String,
        /// Whether a new run can succeed (retryable: the deadline passed
        /// while members were unreachable), as opposed to culprits or
        /// refusals for good.
        recovery: Recovery,
        /// Sessions started.
        sessions: u32,
        /// Cluster seats found sending invalid shares.
        culprits: Vec<Seat>,
        /// The evidence against each culprit, by cluster seat.
        proofs: BTreeMap<Seat, BlameProof>,
        /// What the run saw of each member, for its score.
        observed: Observed,
    },
    /// A signature did not encode (cannot happen for a verified signature).
    #[error("signature encoding: {0}")]
    Crypto(#[from] thresig_crypto::Error),
}

/// `, members that sent invalid shares: 2, 3`, or nothing without culprits.
fn culprit_list(culprits: &[Seat]) -> String {
    if culprits.is_empty() {
        return String::new();
    }
    let seats: Vec<String> = culprits.iter().map(ToString::to_string).collect();
    format!(" (members that sent invalid shares: {})", seats.join(", "))
}

/// Why a run failed, for the operator: which members refused what (by
/// cluster seat, grouped by refusal), and what to check.
#[must_use]
pub fn describe(failure: Failure<thresig_crypto::Error>, wallet: &NodeWallet) -> String {
    match failure {
        Failure::Deadline => "the deadline passed while members were silent or refused for now; \
             check that each member's `thresig serve` runs (`thresig status`), then run the command again"
            .to_owned(),
        Failure::TooManyMalicious {
            remaining,
            threshold,
        } => format!(
            "only {remaining} members are not proven to send invalid shares, fewer than the \
             threshold {threshold}; investigate those members before signing again"
        ),
        Failure::TooFewWilling {
            willing,
            threshold,
            refusals,
        } => {
            let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (seat, refusal) in &refusals {
                let member = wallet.cluster_seat(*seat).unwrap_or(*seat);
                by_kind
                    .entry(refusal_name(refusal))
                    .or_default()
                    .push(member.to_string());
            }
            let refused: Vec<String> = by_kind
                .iter()
                .map(|(kind, members)| format!("{kind} from members {}", members.join(", ")))
                .collect();
            format!(
                "only {willing} members would still sign, fewer than the threshold {threshold} \
                 ({}); check the transaction against the wallet's policy (`thresig psbt inspect`) \
                 and each code in docs/errors.md",
                refused.join("; ")
            )
        }
        other => format!("{other:?}"),
    }
}

/// What a failed run adds about `members` (cluster seats) whose round-2
/// answers were dropped because their identity signature did not verify:
/// without it such members read as merely silent. Empty when there are
/// none. Public for the other drivers of the coordinator.
#[must_use]
pub fn unsigned_answers(members: &BTreeSet<Seat>) -> String {
    if members.is_empty() {
        return String::new();
    }
    let names: Vec<String> = members.iter().map(Seat::to_string).collect();
    format!(
        "; members {} answered without a valid identity signature, so their answers counted as \
         missing (docs/blame.md): a member older than its coordinator signs none, so upgrade \
         those members (members before coordinators); if they are up to date, check their \
         `identity` in [[members]] against their keys, or run again if the wallet's key \
         changed during the run (a refresh signs with a new key record)",
        names.join(", ")
    )
}

/// A refusal as the code the member answered (or what it means, where
/// the code is not kept).
fn refusal_name(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::NonceUnknown => "nonce_unknown",
        Refusal::PolicyDenied => "policy_denied",
        Refusal::SessionConflict => "session_conflict",
        Refusal::RekeyInProgress => "rekey_in_progress",
        Refusal::Retryable => "a refusal that may pass",
        _ => "a rejected request",
    }
}

impl SignError {
    /// Whether running again can succeed: a missed deadline can (members
    /// may come back); a bad PSBT or too many culprits cannot.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Failed { recovery, .. } => *recovery,
            Self::Psbt(_) | Self::Setup(_) | Self::Crypto(_) => Recovery::Terminal,
        }
    }
}

/// The wallet's key record as the coordinator's scheme, with shares as they
/// arrive off the wire: `None` is a share that did not decode, which is as
/// much proof of malice as a share that does not verify. Public for the
/// other drivers of the coordinator (`thresig-ffi`'s coordinator handle).
pub struct WireScheme(pub WalletKey);

impl Scheme for WireScheme {
    type Message = [u8; 32];
    type Commitment = Commitment;
    type Package = PreparedPackage;
    type Share = Option<SignatureShare>;
    type Signature = thresig_crypto::Signature;
    type Error = thresig_crypto::Error;

    fn package(
        &self,
        message: &[u8; 32],
        commitments: &BTreeMap<Seat, Commitment>,
    ) -> Result<PreparedPackage, Self::Error> {
        self.0.package(message, commitments)
    }

    fn verify_share(
        &self,
        package: &PreparedPackage,
        seat: Seat,
        share: &Option<SignatureShare>,
    ) -> Result<Verdict, Self::Error> {
        match share {
            Some(share) => self.0.verify_share(package, seat, share),
            None => Ok(Verdict::Invalid),
        }
    }

    fn aggregate(
        &self,
        package: &PreparedPackage,
        shares: &BTreeMap<Seat, Option<SignatureShare>>,
    ) -> Result<Self::Signature, Self::Error> {
        // Only verified shares reach aggregation, and `None` never verifies.
        let shares = shares
            .iter()
            .filter_map(|(seat, share)| Some((*seat, (*share)?)))
            .collect();
        self.0.aggregate(package, &shares)
    }
}

/// Signs every input `psbt` spends from `wallet`, through ROAST among the
/// wallet's members.
///
/// `key` is the wallet's public key record (from this member's own signer),
/// `epoch` its current epoch; the PSBT is sent to every signer, which
/// derives and checks every sighash itself.
///
/// # Errors
/// [`SignError`].
pub async fn sign(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    key: &WalletKey,
    epoch: WalletEpoch,
    psbt: &WalletPsbt,
    options: &SignOptions,
) -> Result<SignOutcome, SignError> {
    let messages: Vec<[u8; 32]> = psbt
        .wallet_sighashes()?
        .iter()
        .map(|s| s.sighash.to_byte_array())
        .collect();
    let mut roast = RoastConfig::for_wallet(key);
    roast.request_timeout = options.request_timeout;
    roast.deadline = options.deadline;
    roast.deferred = roast
        .roster
        .iter()
        .copied()
        .filter(|seat| {
            wallet
                .cluster_seat(*seat)
                .is_some_and(|member| options.deferred.contains(&member))
        })
        .collect();
    let scheme = WireScheme(key.clone());
    let shape = Shape {
        wallet: wallet.id().clone(),
        epoch,
        inputs: messages.len(),
    };
    let mut handed = Handed::default();
    // Wallet seats that start with a kept vector and have not yet answered
    // the round-2 request that uses it.
    let mut on_kept = BTreeSet::new();
    let mut ready = Vec::new();
    if let Some(pool) = &options.pool {
        let taken = pool.take(
            &shape,
            |seat| !roast.deferred.contains(&seat),
            std::time::Instant::now(),
        );
        for vector in taken.ready {
            on_kept.insert(vector.seat);
            ready.push((vector.seat, vector.commitments.clone()));
            handed.kept(vector);
        }
        taken.stale.into_iter().for_each(|v| handed.retire(v));
    }
    let mut coordinator = Coordinator::with_commitments(
        std::time::Instant::now(),
        roast,
        scheme,
        messages.clone(),
        ready,
    )?;
    let job = Arc::new(Job {
        wallet: wallet.clone(),
        key_record: key.to_bytes()?,
        epoch,
        psbt: psbt.serialize(),
        inputs: messages.len(),
        journal: options.journal.clone(),
        passing: std::sync::Mutex::new(BTreeSet::new()),
        answers: std::sync::Mutex::new(KeptAnswers::default()),
        unsigned: std::sync::Mutex::new(BTreeSet::new()),
        deadline: Instant::now() + options.deadline,
        slow_after: options.request_timeout / 2,
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut unresponsive = BTreeSet::new();
    let mut culprits = BTreeSet::new();
    let mut proofs = BTreeMap::new();
    let mut gate = FirstAnswers::new(wallet, &options.answer_first);
    // Members whose kept vector their signer no longer held: the refusal
    // is the pool's doing, not theirs.
    let mut forgot_kept = BTreeSet::new();
    // Requests in flight end with the run: dropping the set cancels them.
    let mut deliveries = tokio::task::JoinSet::new();
    let mut shares = SharesSeen::new(options.progress.clone());
    let mut observed = Observed::default();
    // Refusals told to the coordinator for answers that never came, by
    // wallet seat, not yet reported back as unresponsiveness.
    let mut unanswered: BTreeMap<Seat, usize> = BTreeMap::new();
    // Round-1 requests sent to each wallet seat so far: a round-1 refusal
    // names no request, so a missing answer is told only for the latest.
    let mut commit_asks: BTreeMap<Seat, u32> = BTreeMap::new();
    loop {
        while let Some(transmit) = coordinator.poll_transmit() {
            let Some(member) = wallet.cluster_seat(transmit.to) else {
                continue;
            };
            observed.asked.insert(member);
            handed.sent(transmit.to, &transmit.request);
            let asks = commit_asks.entry(transmit.to).or_default();
            if matches!(transmit.request, Request::Commit) {
                *asks += 1;
            }
            deliveries.spawn(deliver(
                peers.clone(),
                (member, transmit.to, *asks),
                transmit.request,
                job.clone(),
                tx.clone(),
            ));
        }
        while let Some(event) = coordinator.poll_event() {
            match event {
                Event::SessionStarted { session, signers } => {
                    let members: Vec<u16> = signers
                        .iter()
                        .filter_map(|s| wallet.cluster_seat(*s))
                        .map(Seat::get)
                        .collect();
                    // A signature may take several sessions; the one INFO
                    // line is the signature's (docs/daemon.md, "Log levels").
                    debug!(?session, ?members, "ROAST session started");
                    shares.start(session, signers.len());
                }
                Event::Unresponsive { seat, cause } => {
                    let member = wallet.cluster_seat(seat);
                    debug!(?member, ?cause, "member unresponsive");
                    unresponsive.extend(member);
                    let forgot = matches!(
                        cause,
                        Unresponsiveness::Refused {
                            refusal: Refusal::NonceUnknown,
                            ..
                        }
                    );
                    if forgot && forgot_kept.remove(&seat) {
                        continue;
                    }
                    let told = matches!(
                        cause,
                        Unresponsiveness::Refused {
                            refusal: Refusal::Retryable,
                            ..
                        }
                    ) && take_one(&mut unanswered, seat);
                    // A refusal the loop told for a missing answer was
                    // scored as the timeout it is.
                    if let (Some(member), Some(fault), false) = (member, score_fault(cause), told) {
                        observed.fault(member, fault);
                    }
                }
                Event::Culprit { seat, fault } => {
                    let member = wallet.cluster_seat(seat);
                    warn!(?member, ?fault, "member sent an invalid share");
                    culprits.extend(member);
                    if let Some(member) = member {
                        observed.fault(member, ScoreFault::InvalidShare);
                    }
                    if let (Some(member), Some(proof)) = (member, job.proof(seat, &fault)) {
                        proofs.insert(member, proof);
                    }
                }
                Event::Done(signed) => {
                    info!(
                        sessions = signed.stats.sessions,
                        inputs = signed.signatures.len(),
                        "signed"
                    );
                    let signatures = signed
                        .signatures
                        .iter()
                        .map(thresig_crypto::Signature::to_bytes)
                        .collect::<Result<_, _>>()?;
                    let now = std::time::Instant::now();
                    let culprit_seats: BTreeSet<Seat> = coordinator.culprits().collect();
                    release(peers, wallet, handed, |vector| match &options.pool {
                        Some(pool) if !culprit_seats.contains(&vector.seat) => {
                            pool.keep(&shape, vector, now)
                        }
                        _ => Some(vector),
                    })
                    .await;
                    let signers: Vec<Seat> = signed
                        .signers
                        .iter()
                        .filter_map(|s| wallet.cluster_seat(*s))
                        .collect();
                    observed.signed.extend(signers.iter().copied());
                    return Ok(SignOutcome {
                        signatures,
                        sessions: signed.stats.sessions,
                        culprits: culprits.into_iter().collect(),
                        unresponsive: unresponsive.into_iter().collect(),
                        signers,
                        proofs,
                        observed,
                    });
                }
                Event::Failed { failure, stats } => {
                    let recovery = {
                        let passing = job.lock_passing();
                        failure_recovery(&failure, |seat| {
                            wallet
                                .cluster_seat(seat)
                                .is_some_and(|m| passing.contains(&m))
                        })
                    };
                    let reason =
                        describe(failure, wallet) + &unsigned_answers(&job.lock_unsigned());
                    // Nothing is kept from a failed run: its members may
                    // be the reason.
                    release(peers, wallet, handed, Some).await;
                    return Err(SignError::Failed {
                        reason,
                        recovery,
                        sessions: stats.sessions,
                        culprits: culprits.into_iter().collect(),
                        proofs,
                        observed,
                    });
                }
                _ => {}
            }
        }
        let wake = coordinator
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + options.deadline);
        tokio::select! {
            answer = rx.recv() => {
                // The sender half lives in `tx`, so the channel never closes.
                let Some(Answer { seat, round, reply, slow, nth }) = answer else { continue };
                // A round-1 call that failed after the coordinator timed
                // it out (and scored it) and asked again: told now, it
                // would be taken for the re-ask's refusal.
                if reply.is_none() && round == Round::Commit && commit_asks.get(&seat) != Some(&nth) {
                    continue;
                }
                // A round-2 answer or refusal that kept the run waiting
                // most of a timeout scores like one (docs/quarantine.md);
                // one that never came is scored below.
                if let (true, true, Some(member)) =
                    (slow, reply.is_some(), wallet.cluster_seat(seat))
                {
                    observed.fault(member, ScoreFault::Slow);
                }
                let reply = reply.or_else(|| {
                    // Unreachable (a refused connection fails at once), or
                    // an answer that counts as missing: it scores as a
                    // timeout (once per member and run). The coordinator
                    // hears of it now as a refusal that may pass, rather
                    // than at the request's timeout: it re-asks the member
                    // a bounded number of times and calls quarantined
                    // members in at once if it needs them.
                    // The member is not marked passing: the made-up
                    // refusal never excludes its seat, and a refusal of
                    // its own later in the run keeps its own verdict.
                    if let Some(member) = wallet.cluster_seat(seat) {
                        observed.fault(member, ScoreFault::Timeout);
                    }
                    *unanswered.entry(seat).or_default() += 1;
                    Some(refused(round, Refusal::Retryable))
                });
                let on_kept_vector = matches!(round, Round::Sign(_)) && on_kept.remove(&seat);
                if on_kept_vector
                    && kept_vector_forgotten(&reply)
                    && options
                        .pool
                        .as_ref()
                        .is_some_and(|pool| pool.forget(&shape, seat, std::time::Instant::now()))
                {
                    forgot_kept.insert(seat);
                }
                let admitted = gate.admit(seat, reply);
                shares.note(&admitted);
                feed(&mut coordinator, &mut handed, &mut unanswered, admitted);
            }
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
            () = tokio::time::sleep_until(wake) => {
                coordinator.handle_timeout(std::time::Instant::now());
                let held = gate.release_all();
                shares.note(&held);
                feed(&mut coordinator, &mut handed, &mut unanswered, held);
            }
        }
    }
}

/// Whether `reply` to the round-2 request that used a kept vector says
/// its signer no longer holds the nonce.
fn kept_vector_forgotten(reply: &Option<Reply<WireScheme>>) -> bool {
    matches!(
        reply,
        Some(Reply::Refused {
            refusal: Refusal::NonceUnknown,
            ..
        })
    )
}

/// Takes one off `seat`'s count; whether there was one.
fn take_one(counts: &mut BTreeMap<Seat, usize>, seat: Seat) -> bool {
    match counts.get_mut(&seat) {
        Some(count) if *count > 1 => {
            *count -= 1;
            true
        }
        Some(_) => counts.remove(&seat).is_some(),
        None => false,
    }
}

/// The fault an unresponsive member scores: a timeout or a refusal; valid
/// shares without fresh commitments are no fault (a signer at its nonce
/// capacity answers so).
fn score_fault(cause: Unresponsiveness) -> Option<ScoreFault> {
    match cause {
        Unresponsiveness::Timeout { .. } => Some(ScoreFault::Timeout),
        Unresponsiveness::Refused { .. } => Some(ScoreFault::Refusal),
        _ => None,
    }
}

/// Whether a failed run may pass when run again. A missed deadline may
/// (members can come back), and so may a run that only refusals which the
/// signers called passing (a rate limit) made hopeless; culprits and
/// refusals for good stay. `passing` says whether a wallet seat's refusal
/// was of the passing kind. Public for the other drivers of the
/// coordinator.
pub fn failure_recovery<E>(failure: &Failure<E>, passing: impl Fn(Seat) -> bool) -> Recovery {
    let may_pass = match failure {
        Failure::Deadline => true,
        Failure::TooFewWilling { refusals, .. } => refusals.iter().all(|(seat, _)| passing(*seat)),
        _ => false,
    };
    if may_pass {
        Recovery::Retryable
    } else {
        Recovery::Terminal
    }
}

/// Counts the share vectors that arrive for the latest session, for
/// [`SignOptions::progress`].
struct SharesSeen {
    progress: Option<Arc<dyn Progress>>,
    session: Option<thresig_roast::SessionId>,
    phase: String,
    seen: usize,
    needed: usize,
}

impl SharesSeen {
    fn new(progress: Option<Arc<dyn Progress>>) -> Self {
        Self {
            progress,
            session: None,
            phase: String::new(),
            seen: 0,
            needed: 0,
        }
    }

    fn start(&mut self, session: thresig_roast::SessionId, signers: usize) {
        self.session = Some(session);
        self.phase = format!("ROAST {session:?}: answers");
        self.seen = 0;
        self.needed = signers;
        self.report();
    }

    fn note(&mut self, answers: &[(Seat, Reply<WireScheme>)]) {
        for (_, reply) in answers {
            if let Reply::Shares { session, .. } = reply
                && Some(*session) == self.session
            {
                self.seen += 1;
                self.report();
            }
        }
    }

    fn report(&self) {
        if let Some(progress) = &self.progress {
            progress.step(&self.phase, self.seen, self.needed);
        }
    }
}

/// Hands answers to the coordinator, noting the commitment vectors they
/// carry. A refusal that may pass which the coordinator does not take will
/// not come back as unresponsiveness: it leaves `unanswered` (the refusals
/// told for missing answers), or the next real one would be taken for it.
fn feed(
    coordinator: &mut Coordinator<WireScheme>,
    handed: &mut Handed,
    unanswered: &mut BTreeMap<Seat, usize>,
    answers: Vec<(Seat, Reply<WireScheme>)>,
) {
    for (seat, reply) in answers {
        handed.received(seat, &reply);
        let may_pass = matches!(
            reply,
            Reply::Refused {
                refusal: Refusal::Retryable,
                ..
            }
        );
        if let Err(e) = coordinator.handle_reply(std::time::Instant::now(), seat, reply) {
            debug!(wallet_seat = %seat, error = %e, "answer refused by the coordinator");
            if may_pass {
                take_one(unanswered, seat);
            }
        }
    }
}

/// The commitment vectors members handed out in one run and the ones a
/// session used, so that the rest can be released when the run ends
/// instead of holding the members' nonces until they expire (or kept for
/// the coordinator's next run, [`SignOptions::pool`]). Public for the other
/// drivers of the coordinator.
#[derive(Default)]
pub struct Handed {
    /// Each vector the run was handed or started with, with its wallet
    /// seat and when it arrived.
    vectors: Vec<Kept>,
    /// The first commitment of every vector sent in a session.
    used: Vec<Commitment>,
    /// Vectors taken from the pool only to be released (too old, or of
    /// an earlier epoch): never kept again.
    retired: Vec<Kept>,
}

impl Handed {
    /// Notes the commitment vector `reply` from wallet seat `seat` carries.
    pub fn received(&mut self, seat: Seat, reply: &Reply<WireScheme>) {
        let vector = match reply {
            Reply::Commitments { commitments } | Reply::Shares { commitments, .. } => commitments,
            _ => return,
        };
        if !vector.is_empty() {
            self.vectors.push(Kept {
                seat,
                arrived: std::time::Instant::now(),
                commitments: vector.clone(),
            });
        }
    }

    /// Notes the vector of `seat` a round-2 request to it uses.
    pub fn sent(&mut self, seat: Seat, request: &Request<WireScheme>) {
        if let Request::Sign { packages, .. } = request {
            self.used
                .extend(packages.first().and_then(|p| p.package().commitment(seat)));
        }
    }

    /// The abort requests that release the unused vectors, by wallet seat.
    #[must_use]
    pub fn aborts(self, wallet: &WalletId) -> Vec<(Seat, AbortRequest)> {
        let (unused, retired) = self.unused();
        aborts(wallet, unused.into_iter().chain(retired).collect())
    }

    /// Notes a vector the run started with from the pool.
    fn kept(&mut self, vector: Kept) {
        self.vectors.push(vector);
    }

    /// Notes a vector taken from the pool only to be released.
    fn retire(&mut self, vector: Kept) {
        self.retired.push(vector);
    }

    /// The vectors of this run that no session used, and the retired ones.
    fn unused(self) -> (Vec<Kept>, Vec<Kept>) {
        let used = self.used;
        let unused = self
            .vectors
            .into_iter()
            .filter(|v| v.commitments.first().is_some_and(|c| !used.contains(c)))
            .collect();
        (unused, self.retired)
    }
}

/// One abort request per wallet seat, releasing `vectors` (each named by
/// its first commitment).
fn aborts(wallet: &WalletId, vectors: Vec<Kept>) -> Vec<(Seat, AbortRequest)> {
    let mut by_seat: BTreeMap<Seat, Vec<HexBytes>> = BTreeMap::new();
    for vector in vectors {
        if let Some(first) = vector.commitments.first() {
            by_seat
                .entry(vector.seat)
                .or_default()
                .push(HexBytes(first.to_bytes()));
        }
    }
    by_seat
        .into_iter()
        .map(|(seat, encoded)| (seat, AbortRequest::new(wallet.clone(), encoded)))
        .collect()
}

/// How long the end of a run waits for members to drop the nonces it did
/// not use: the signature is already made, so a slow member is not waited
/// for (its nonces expire on their own).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Ends a run's hold on the vectors no session used: those `keep` takes
/// stay with the coordinator's pool, and every member is asked to drop the
/// rest and the retired ones.
async fn release(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    handed: Handed,
    keep: impl Fn(Kept) -> Option<Kept>,
) {
    let (unused, retired) = handed.unused();
    let released = unused.into_iter().filter_map(keep).chain(retired).collect();
    send_aborts(peers, wallet, aborts(wallet.id(), released)).await;
}

/// Asks every member to drop the commitment vectors `pool` holds for
/// `wallet`, and empties it: for a coordinator that stops signing for the
/// wallet, so that its members need not wait for the nonces to expire.
pub async fn release_kept(peers: &Arc<Peers>, wallet: &NodeWallet, pool: &CommitmentPool) {
    let kept = pool.drain(wallet.id());
    send_aborts(peers, wallet, aborts(wallet.id(), kept)).await;
}

async fn send_aborts(peers: &Arc<Peers>, wallet: &NodeWallet, requests: Vec<(Seat, AbortRequest)>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (seat, request) in requests {
        let Some(member) = wallet.cluster_seat(seat) else {
            continue;
        };
        let peers = peers.clone();
        tasks.spawn(async move {
            if let Ok(client) = peers.client(member).await {
                // A member that cannot be reached keeps the nonces until
                // they expire; nothing else depends on the answer.
                let _ = client.abort(request).await;
            }
        });
    }
    let _ = tokio::time::timeout(RELEASE_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// What every request of one run carries besides the coordinator's part.
struct Job {
    wallet: NodeWallet,
    /// The wallet's public key record (`WalletKey::to_bytes`): each answer
    /// must be signed over it, so its proof carries it authenticated.
    key_record: Vec<u8>,
    epoch: WalletEpoch,
    psbt: Vec<u8>,
    inputs: usize,
    journal: Option<Round2Journal>,
    /// Members (cluster seats) whose refusal said a later request may pass.
    passing: std::sync::Mutex<BTreeSet<Seat>>,
    /// The signed round-2 answers: the evidence if a share turns out
    /// invalid.
    answers: std::sync::Mutex<KeptAnswers>,
    /// Members (cluster seats) whose round-2 answer was dropped for its
    /// identity signature, named when the run fails.
    unsigned: std::sync::Mutex<BTreeSet<Seat>>,
    /// When the run ends: a lost round-2 reply is asked for again only
    /// before then.
    deadline: Instant,
    /// How long a round-2 request may take before its answer, refusal
    /// included, scores as slow: half the request timeout, well beyond an
    /// honest member's share computation, yet early enough that a member
    /// cannot hold every session it is in for most of a timeout for free.
    slow_after: Duration,
}

impl Job {
    fn lock_passing(&self) -> std::sync::MutexGuard<'_, BTreeSet<Seat>> {
        unpoisoned(&self.passing)
    }

    fn lock_unsigned(&self) -> std::sync::MutexGuard<'_, BTreeSet<Seat>> {
        unpoisoned(&self.unsigned)
    }

    fn lock_answers(&self) -> std::sync::MutexGuard<'_, KeptAnswers> {
        unpoisoned(&self.answers)
    }

    /// The proof against wallet seat `seat` for the answer ROAST found
    /// invalid.
    fn proof(&self, seat: Seat, fault: &Misbehavior) -> Option<BlameProof> {
        let Misbehavior::InvalidShare { session, .. } = fault else {
            return None;
        };
        self.lock_answers()
            .proof(seat, session.get(), &self.key_record)
    }
}

/// `mutex` locked even if a panic poisoned it: each of `Job`'s mutexes
/// guards a set or map whose entries are inserted and removed whole, so a
/// panic leaves none half-made.
fn unpoisoned<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A member's answer (`None`: none came, see [`deliver`]) to a request of
/// `Round`, by wallet seat.
/// An answer as [`deliver`] hands it on.
struct Answer {
    /// The wallet seat that answered.
    seat: Seat,
    round: Round,
    /// `None` if the answer counts as missing.
    reply: Option<Reply<WireScheme>>,
    /// Whether it came only after [`Job::slow_after`] (round 2 only).
    slow: bool,
    /// How many round-1 requests the seat had been sent when this request
    /// went out.
    nth: u32,
}

/// Holds back first answers until the `answer_first` seats gave theirs (see
/// [`SignOptions::answer_first`]).
struct FirstAnswers {
    waiting: BTreeSet<Seat>,
    held: Vec<(Seat, Reply<WireScheme>)>,
}

impl FirstAnswers {
    fn new(wallet: &NodeWallet, first: &BTreeSet<Seat>) -> Self {
        let waiting = (1..=u16::try_from(wallet.seats.len()).unwrap_or(0))
            .filter_map(|n| Seat::try_from(n).ok())
            .filter(|s| wallet.cluster_seat(*s).is_some_and(|c| first.contains(&c)))
            .collect();
        Self {
            waiting,
            held: Vec::new(),
        }
    }

    /// The answers to hand to the coordinator now.
    fn admit(
        &mut self,
        seat: Seat,
        reply: Option<Reply<WireScheme>>,
    ) -> Vec<(Seat, Reply<WireScheme>)> {
        if self.waiting.is_empty() {
            return reply.map(|r| (seat, r)).into_iter().collect();
        }
        if self.waiting.remove(&seat) {
            let mut out: Vec<_> = reply.map(|r| (seat, r)).into_iter().collect();
            if self.waiting.is_empty() {
                out.append(&mut self.held);
            }
            return out;
        }
        self.held.extend(reply.map(|r| (seat, r)));
        Vec::new()
    }

    /// Everything held, once a timeout makes waiting pointless.
    fn release_all(&mut self) -> Vec<(Seat, Reply<WireScheme>)> {
        self.waiting.clear();
        std::mem::take(&mut self.held)
    }
}

/// Sends one request to `member` (wallet seat `seat`) and queues its
/// answer: `None` when the member could not be reached or its answer
/// counts as missing (the run loop tells the coordinator at once).
async fn deliver(
    peers: Arc<Peers>,
    (member, seat, nth): (Seat, Seat, u32),
    request: Request<WireScheme>,
    job: Arc<Job>,
    answers: mpsc::UnboundedSender<Answer>,
) {
    let asked = Instant::now();
    let (round, reply) = match request {
        Request::Commit => (Round::Commit, commit(&peers, member, &job).await),
        Request::Sign { session, packages } => (
            Round::Sign(session),
            shares(&peers, member, seat, session, &packages, &job).await,
        ),
        _ => return,
    };
    let slow = matches!(round, Round::Sign(_)) && asked.elapsed() > job.slow_after;
    // The run may have ended and dropped the receiver; the answer is moot.
    let _ = answers.send(Answer {
        seat,
        round,
        reply,
        slow,
        nth,
    });
}

async fn commit(peers: &Peers, member: Seat, job: &Job) -> Option<Reply<WireScheme>> {
    let request = Round1Request::new(job.wallet.id().clone(), job.inputs);
    let result = match peers.client(member).await {
        Ok(client) => peers.within(member, client.round1(request)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(response) => Some(match decode_commitments(&response.commitments) {
            Some(commitments) => Reply::Commitments { commitments },
            None => refused(Round::Commit, Refusal::Rejected),
        }),
        Err(e) => failure(peers, job, member, Round::Commit, &e),
    }
}

/// The round-2 request of one ROAST session over `psbt`, whose `packages`
/// name the session's signers, for any driver of the coordinator.
#[must_use]
pub fn round2_request(
    wallet: &WalletId,
    epoch: WalletEpoch,
    psbt: &[u8],
    packages: &[PreparedPackage],
) -> Round2Request {
    let signers = packages
        .first()
        .map(|p| p.package().signers())
        .unwrap_or_default();
    // Each package was encoded once when its session started; every member
    // gets a copy of those bytes, because the request holds the engine's
    // owned `HexBytes` and the gRPC conversion copies into its message
    // anyway. Sharing one buffer would need `bytes::Bytes` in both; the copy
    // (about 70 bytes a signer, 3.5 KB at t = 51) costs far less than the
    // member's share check.
    let encoded = packages
        .iter()
        .map(|p| HexBytes(p.bytes().to_vec()))
        .collect();
    Round2Request::new(
        wallet.clone(),
        epoch,
        signers,
        SigningTarget::psbt(psbt.to_vec()),
        encoded,
    )
}

async fn shares(
    peers: &Peers,
    member: Seat,
    seat: Seat,
    session: thresig_roast::SessionId,
    packages: &[PreparedPackage],
    job: &Job,
) -> Option<Reply<WireScheme>> {
    let round = Round::Sign(session);
    let request = round2_request(job.wallet.id(), job.epoch, &job.psbt, packages);
    if let Some(journal) = &job.journal {
        journal(member, &request);
    }
    let mut attempt = 1;
    let result = loop {
        let result = match peers.client(member).await {
            Ok(client) => peers.within(member, client.round2(request.clone())).await,
            Err(e) => Err(e),
        };
        match result {
            // The member may have computed and committed the shares: the
            // byte-identical request is answered from its pending shares or
            // marker, so asking again keeps an honest seat in the session.
            Err(e)
                if reply_lost(&e) && attempt < ROUND2_ATTEMPTS && Instant::now() < job.deadline =>
            {
                debug!(%member, %e, attempt, "round-2 reply lost; asking again");
                if is_transport(&e) {
                    peers.forget(member);
                }
                attempt += 1;
            }
            other => break other,
        }
    };
    match result {
        Ok(response) => {
            // Verified before the shared answers are locked, so that the
            // members' answers are checked side by side.
            let checked =
                CheckedAnswer::check(&job.wallet.config, &job.key_record, seat, request, response);
            let Some(checked) = checked else {
                warn!(
                    %member,
                    "round-2 answer not signed by the member's identity key (a member older than \
                     this coordinator, or a stale roster key); treated as missing"
                );
                job.lock_unsigned().insert(member);
                return None;
            };
            Some(job.lock_answers().take(session, checked))
        }
        Err(e) => failure(peers, job, member, round, &e),
    }
}

/// The coordinator's view of a signed round-2 answer
/// ([`KeptAnswers::take`]).
#[must_use]
pub(crate) fn shares_reply(
    session: thresig_roast::SessionId,
    response: &Round2Response,
) -> Reply<WireScheme> {
    Reply::Shares {
        session,
        shares: response
            .shares
            .iter()
            .map(|s| SignatureShare::from_bytes(&s.0).ok())
            .collect(),
        // None sent (the signer is at its nonce capacity) or none that
        // decode: the coordinator keeps the shares all the same and
        // asks the member for commitments again in round 1.
        commitments: decode_commitments(&response.commitments).unwrap_or_default(),
    }
}

/// How often one round-2 request is sent in all when its reply is lost: a
/// dropped connection or a reply that missed the member's own timeout is
/// rare, and twice in a row means the member is in trouble; ROAST then
/// replaces it.
const ROUND2_ATTEMPTS: usize = 3;

fn decode_commitments(encoded: &[HexBytes]) -> Option<Vec<Commitment>> {
    encoded
        .iter()
        .map(|c| Commitment::from_bytes(&c.0).ok())
        .collect()
}

fn refused(round: Round, refusal: Refusal) -> Reply<WireScheme> {
    Reply::Refused { round, refusal }
}

/// A failed request as the coordinator sees it: a refusal with the
/// signer's reason, or nothing for a transport failure (after which the
/// connection is remade on the next request).
fn failure(
    peers: &Peers,
    job: &Job,
    member: Seat,
    round: Round,
    error: &DaemonError,
) -> Option<Reply<WireScheme>> {
    if is_transport(error) {
        debug!(%member, %error, "member unreachable");
        peers.forget(member);
        return None;
    }
    let refusal = match error {
        DaemonError::Refused(e) => {
            if e.is_retryable() {
                // Not again in this run (a rate limit still holds), but a
                // later run may pass: remembered for the run's verdict.
                job.lock_passing().insert(member);
            }
            refusal_of(e)
        }
        _ => Refusal::Rejected,
    };
    Some(refused(round, refusal))
}

/// The ROAST view of a signer's refusal: by its stable code, and else by
/// whether it may pass. Public for the other drivers of the coordinator.
#[must_use]
pub fn refusal_of(error: &SignerError) -> Refusal {
    match error.code.kind() {
        // An expired attempt is a nonce the signer no longer holds: a fresh
        // round 1 brings it back.
        Code::Engine(ErrorCode::NonceUnknown | ErrorCode::AttemptExpired) => Refusal::NonceUnknown,
        Code::Engine(ErrorCode::PolicyDenied) => Refusal::PolicyDenied,
        Code::Engine(ErrorCode::SessionConflict) => Refusal::SessionConflict,
        Code::Engine(ErrorCode::RekeyInProgress) => Refusal::RekeyInProgress,
        _ if error.is_retryable() => Refusal::Retryable,
        _ => Refusal::Rejected,
    }
}
