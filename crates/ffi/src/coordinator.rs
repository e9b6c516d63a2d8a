//! The coordinator handle: a DKG relay or a ROAST signing run as a sans-IO
//! state machine, for a host that carries the requests over its own
//! network.
//!
//! The host drains it in quinn's order: `poll_transmit` until `null` (each
//! a ready request envelope for one member's `thresig_call`, with a tag),
//! `poll_event` until `null`, then `poll_timeout`; it feeds each member's
//! response envelope back with `handle_reply` (with the transmit's tag) and
//! calls `handle_timeout` at the time `poll_timeout` named. Time is the
//! host's, in milliseconds, passed with every input; the handle reads no
//! clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash as _;
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use serde_json::{Value, json};
use thresig_cluster::config::{Config, NodeWallet};
use thresig_cluster::{
    CheckedAnswer, Handed, KeptAnswers, WireScheme, describe_failure, failure_recovery, refusal_of,
    round2_request, unsigned_answers,
};
use thresig_crypto::{Commitment, Seat, WalletKey};
use thresig_daemon::{ErrorCode as DaemonCode, SignerError};
use thresig_engine::{
    DkgKind, DkgPayload, DkgProposal, DkgSessionId, ErrorCode, HexBytes, Request, Response,
    Round1Request, Round2Request, SignedDkgMessage, WalletConfig, WalletEpoch, WalletId,
    check_round1_answer, unbound_round1_refusal, unbound_round1_senders,
};
use thresig_roast::{Coordinator, Event, Misbehavior, Refusal, Reply, Round};
use thresig_store::Recovery;

use crate::envelope::{ENVELOPE_VERSION, Envelope, FfiError};

/// The handle's operations.
const OPS: [&str; 5] = [
    "poll_transmit",
    "poll_event",
    "poll_timeout",
    "handle_reply",
    "handle_timeout",
];

/// What `thresig_coordinator_open` takes.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Setup {
    /// A DKG of `wallet` among its members.
    Dkg {
        /// The coordinating member's `signer.toml`.
        config_path: PathBuf,
        wallet: WalletId,
    },
    /// A signature of every input of `psbt` the wallet spends.
    Sign {
        config_path: PathBuf,
        wallet: WalletId,
        /// The wallet's key record, hex (the `wallet_key` op's answer).
        key: HexBytes,
        /// The wallet epoch (the `status` op's answer).
        epoch: WalletEpoch,
        /// The PSBT, base64.
        psbt: String,
        /// The host's time now, in milliseconds.
        now_ms: u64,
        #[serde(default)]
        request_timeout_ms: Option<u64>,
        #[serde(default)]
        deadline_ms: Option<u64>,
    },
}

/// One coordinating run.
pub(crate) struct CoordinatorHandle {
    wallet: NodeWallet,
    run: Run,
    next_tag: u64,
    /// Requests sent and not yet answered: tag → (wallet seat, what).
    pending: BTreeMap<u64, (Seat, Asked)>,
    transmits: VecDeque<Value>,
    events: VecDeque<Value>,
}

enum Run {
    Dkg(DkgRelay),
    Sign(Box<Signing>),
}

/// What a transmit asked, to read its answer.
#[derive(Clone, Copy)]
enum Asked {
    Dkg(DkgPhase),
    Roast(Round),
    /// A DKG cancel or a nonce abort sent as a run ends; its answer is moot.
    Release,
}

impl CoordinatorHandle {
    /// Starts a run from its setup JSON.
    pub(crate) fn open(setup: &[u8]) -> Result<Self, FfiError> {
        let setup: Setup = serde_json::from_slice(setup)
            .map_err(|e| FfiError::invalid_request(format!("the coordinator's setup: {e}")))?;
        let (Setup::Dkg {
            config_path,
            wallet,
        }
        | Setup::Sign {
            config_path,
            wallet,
            ..
        }) = &setup;
        let node = Config::load(config_path)
            .and_then(|c| c.into_node(config_path))
            .map_err(|e| FfiError::coded("config_invalid", e.recovery(), e.to_string()))?;
        let configured = node.wallet(wallet).cloned().ok_or_else(|| {
            FfiError::engine(&thresig_engine::Error::UnknownWallet {
                wallet: wallet.clone(),
            })
        })?;
        let mut handle = Self {
            wallet: configured,
            run: Run::Dkg(DkgRelay::default()),
            next_tag: 0,
            pending: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        match setup {
            Setup::Dkg { .. } => handle.start_dkg(),
            Setup::Sign {
                key,
                epoch,
                psbt,
                now_ms,
                request_timeout_ms,
                deadline_ms,
                ..
            } => {
                let signing = Signing::new(
                    node.network,
                    &key,
                    epoch,
                    &psbt,
                    now_ms,
                    (request_timeout_ms, deadline_ms),
                )?;
                handle.run = Run::Sign(Box::new(signing));
            }
        }
        Ok(handle)
    }

    /// Answers one envelope.
    pub(crate) fn call(&mut self, envelope: &Envelope) -> Result<Value, FfiError> {
        match envelope.op.as_str() {
            "poll_transmit" => {
                self.drain_roast();
                Ok(self.transmits.pop_front().unwrap_or(Value::Null))
            }
            "poll_event" => {
                self.drain_roast();
                Ok(self.events.pop_front().unwrap_or(Value::Null))
            }
            "poll_timeout" => Ok(match &self.run {
                Run::Sign(s) => json!({"at_ms": s.poll_timeout_ms()}),
                Run::Dkg(_) => json!({"at_ms": null}),
            }),
            "handle_reply" => {
                let reply: ReplyIn = envelope.request()?;
                self.handle_reply(reply)
            }
            "handle_timeout" => {
                let Timeout { now_ms } = envelope.request()?;
                if let Run::Sign(s) = &mut self.run {
                    let now = s.instant(now_ms);
                    s.roast.handle_timeout(now);
                }
                Ok(json!({}))
            }
            _ => Err(envelope.unknown_op(&OPS)),
        }
    }

    /// Queues `request` for the member at wallet seat `seat`.
    fn send(&mut self, seat: Seat, asked: Asked, request: &Request) {
        let Some(member) = self.wallet.cluster_seat(seat) else {
            return;
        };
        let Ok(Value::Object(mut fields)) = serde_json::to_value(request) else {
            return;
        };
        // No `from`: the receiving host sets it from its own authentication
        // of the peer, so that a peer cannot name another member's seat
        // (and spend that member's share of the signer's limits).
        let op = fields.remove("type").unwrap_or(Value::Null);
        let tag = self.next_tag;
        self.next_tag += 1;
        self.pending.insert(tag, (seat, asked));
        self.transmits.push_back(json!({
            "to": member.get(),
            "tag": tag,
            "envelope": {"version": ENVELOPE_VERSION, "op": op, "request": fields},
        }));
    }

    fn handle_reply(&mut self, reply: ReplyIn) -> Result<Value, FfiError> {
        let Some((seat, asked)) = self.pending.remove(&reply.tag) else {
            return Err(FfiError::invalid_request(format!(
                "handle_reply: tag {} is not a request awaiting its answer; pass each answer once, \
                 with its transmit's tag",
                reply.tag
            )));
        };
        if self.wallet.cluster_seat(seat) != Some(reply.from) {
            self.pending.insert(reply.tag, (seat, asked));
            return Err(FfiError::invalid_request(format!(
                "handle_reply: tag {} was sent to another member than {}",
                reply.tag,
                reply.from.get()
            )));
        }
        // A member's bytes that are no response envelope are that member's
        // fault, not the host's: they answer the request (a rejection, or
        // the DKG's failure naming it) instead of leaving it pending.
        let answer = read_response(reply.response);
        let accepted = match (&mut self.run, asked, answer) {
            (Run::Sign(s), Asked::Roast(round), Ok(answer)) => {
                s.answer(&self.wallet, reply.now_ms, seat, round, answer)
            }
            (Run::Sign(s), Asked::Roast(round), Err(_)) => {
                let now = s.instant(reply.now_ms);
                let rejected = Reply::Refused {
                    round,
                    refusal: Refusal::Rejected,
                };
                s.roast.handle_reply(now, seat, rejected).is_ok()
            }
            (Run::Dkg(_), Asked::Dkg(phase), Ok(answer)) => {
                self.dkg_answer(seat, phase, answer);
                true
            }
            (Run::Dkg(relay), Asked::Dkg(phase), Err(problem)) if phase == relay.phase => {
                let member = self.wallet.cluster_seat(seat).unwrap_or(seat);
                self.fail_dkg(&format!(
                    "member {}: answered the DKG's {} with {problem}",
                    member.get(),
                    phase.name()
                ));
                true
            }
            _ => false,
        };
        Ok(json!({ "accepted": accepted }))
    }

    /// Moves the ROAST coordinator's outputs into the handle's queues.
    fn drain_roast(&mut self) {
        let Run::Sign(signing) = &mut self.run else {
            return;
        };
        let mut out = Vec::new();
        while let Some(transmit) = signing.roast.poll_transmit() {
            signing.handed.sent(transmit.to, &transmit.request);
            let round = match &transmit.request {
                thresig_roast::Request::Sign { session, .. } => Round::Sign(*session),
                _ => Round::Commit,
            };
            let request = signing.request(&self.wallet, transmit.request);
            if let (Some(Request::Round2(r)), Round::Sign(session)) = (&request, round) {
                signing
                    .asked
                    .insert(transmit.to, (session.get(), r.clone()));
            }
            out.push((transmit.to, round, request));
        }
        let mut events = Vec::new();
        let mut ended = false;
        while let Some(event) = signing.roast.poll_event() {
            ended |= matches!(event, Event::Done(_) | Event::Failed { .. });
            events.push(signing.event(&self.wallet, event));
        }
        // The members drop the vectors the run did not use now, instead of
        // holding them against this coordinator's quota until they expire.
        let aborts = if ended {
            std::mem::take(&mut signing.handed).aborts(self.wallet.id())
        } else {
            Vec::new()
        };
        for (seat, round, request) in out {
            match request {
                Some(request) => self.send(seat, Asked::Roast(round), &request),
                None => {
                    // The coordinator asks nothing but rounds 1 and 2;
                    // anything else is a bug, answered for the member.
                    if let Run::Sign(s) = &mut self.run {
                        let now = s.origin.0;
                        let refused = Reply::Refused {
                            round,
                            refusal: Refusal::Rejected,
                        };
                        let _ = s.roast.handle_reply(now, seat, refused);
                    }
                }
            }
        }
        for (seat, abort) in aborts {
            self.send(seat, Asked::Release, &Request::Abort(abort));
        }
        self.events.extend(events);
    }
}

/// `handle_reply`'s request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyIn {
    /// The member's cluster seat.
    from: Seat,
    /// The transmit's tag.
    tag: u64,
    /// The host's time now, in milliseconds.
    now_ms: u64,
    /// The member's response envelope, as its `thresig_call` returned it.
    response: Value,
}

/// `handle_timeout`'s request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Timeout {
    now_ms: u64,
}

/// A member's response envelope: its answer, or its refusal; what is wrong
/// with it if it is neither.
fn read_response(envelope: Value) -> Result<Result<Response, SignerError>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Refused {
        code: String,
        retryable: bool,
        message: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "snake_case")]
    enum Outcome {
        Ok(Response),
        Error(Refused),
    }
    let outcome: Outcome = serde_json::from_value(envelope)
        .map_err(|e| format!("something that is not a response envelope ({e})"))?;
    Ok(match outcome {
        Outcome::Ok(response) => Ok(response),
        Outcome::Error(refused) => {
            let recovery = if refused.retryable {
                Recovery::Retryable
            } else {
                Recovery::Terminal
            };
            // A code this build does not know counts by its class alone.
            let code =
                ErrorCode::parse(&refused.code).map_or(DaemonCode::INTERNAL, DaemonCode::from);
            Err(SignerError::new(code, recovery, refused.message))
        }
    })
}

/// The DKG's phases, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum DkgPhase {
    #[default]
    Start,
    Round2,
    Finish,
    Confirm,
    Over,
}

impl DkgPhase {
    fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Round2 => "round 2",
            Self::Finish => "finish",
            Self::Confirm => "confirm",
            Self::Over => "over",
        }
    }
}

/// The relay of one DKG session: each part's answers from every member,
/// checked (sender, kind, signature, routing) before the next part.
#[derive(Default)]
struct DkgRelay {
    session: Option<DkgSessionId>,
    phase: DkgPhase,
    /// This part's messages, by wallet seat.
    answers: BTreeMap<Seat, Vec<SignedDkgMessage>>,
    /// The round-1 messages handed out, each received from its sender: a
    /// member's refusal of part 2 for a missing kind-bound signature names
    /// the senders of those without one ([`unbound_round1_senders`]).
    round1: Vec<SignedDkgMessage>,
    /// Per member: confirmations answered, and whether one made it active.
    confirmed: BTreeMap<Seat, (usize, bool)>,
    output_key: Option<[u8; 32]>,
}

impl CoordinatorHandle {
    fn seats(&self) -> Vec<Seat> {
        wallet_seats(self.wallet.seats.len()).collect()
    }

    fn start_dkg(&mut self) {
        let mut id = [0u8; 32];
        OsRng.fill_bytes(&mut id);
        let session = DkgSessionId(id);
        let proposal = DkgProposal::new(
            session,
            self.wallet.id().clone(),
            self.wallet.config.threshold,
            self.wallet.config.roster.clone(),
        );
        self.run = Run::Dkg(DkgRelay {
            session: Some(session),
            ..DkgRelay::default()
        });
        for seat in self.seats() {
            self.send(
                seat,
                Asked::Dkg(DkgPhase::Start),
                &Request::DkgStart(proposal.clone()),
            );
        }
    }

    fn dkg_answer(&mut self, seat: Seat, phase: DkgPhase, answer: Result<Response, SignerError>) {
        let Run::Dkg(relay) = &mut self.run else {
            return;
        };
        if phase != relay.phase {
            return;
        }
        let checked = match answer {
            Err(refusal) => {
                // This relay cannot require the kind-bound signature (it
                // reads no `[signer]` setting); members that do refuse part
                // 2 accusing no one, and the senders of round-1 messages
                // without one, which answered this relay directly, are named.
                let code = refusal.code.as_str();
                let unbound = unbound_round1_senders((code, &refusal.message), &relay.round1);
                if !unbound.is_empty() {
                    let members: Vec<String> = unbound
                        .iter()
                        .map(|s| self.wallet.cluster_seat(*s).unwrap_or(*s).get().to_string())
                        .collect();
                    self.fail_dkg(&unbound_refusal(&members));
                    return;
                }
                Err(format!(
                    "refused the DKG's {}: {code} ({})",
                    phase.name(),
                    refusal.message
                ))
            }
            Ok(response) => check_dkg_answer(relay, &self.wallet.config, seat, phase, response),
        };
        if let Err(problem) = checked {
            let member = self.wallet.cluster_seat(seat).unwrap_or(seat);
            self.fail_dkg(&format!("member {}: {problem}", member.get()));
            return;
        }
        self.advance_dkg();
    }

    /// Starts the next part once every member answered this one.
    fn advance_dkg(&mut self) {
        let n = self.wallet.seats.len();
        let Run::Dkg(relay) = &mut self.run else {
            return;
        };
        let (Some(session), wallet) = (relay.session, self.wallet.id().clone()) else {
            return;
        };
        let mut next: Vec<(Seat, Request)> = Vec::new();
        match relay.phase {
            DkgPhase::Start | DkgPhase::Round2 | DkgPhase::Finish if relay.answers.len() == n => {
                let answers = std::mem::take(&mut relay.answers);
                let all: Vec<SignedDkgMessage> = answers.into_values().flatten().collect();
                if relay.phase == DkgPhase::Start {
                    relay.round1.clone_from(&all);
                }
                for seat in wallet_seats(n) {
                    let request = match relay.phase {
                        DkgPhase::Start => Request::DkgRound2 {
                            wallet: wallet.clone(),
                            session,
                            round1: all.iter().filter(|m| m.sender != seat).cloned().collect(),
                        },
                        DkgPhase::Round2 => Request::DkgFinish {
                            wallet: wallet.clone(),
                            session,
                            round2: all
                                .iter()
                                .filter(|m| matches!(&m.payload, DkgPayload::Round2 { to, .. } if *to == seat))
                                .cloned()
                                .collect(),
                        },
                        _ => {
                            for confirmation in &all {
                                next.push((
                                    seat,
                                    Request::DkgConfirm {
                                        wallet: wallet.clone(),
                                        confirmation: confirmation.clone(),
                                    },
                                ));
                            }
                            continue;
                        }
                    };
                    next.push((seat, request));
                }
                relay.phase = match relay.phase {
                    DkgPhase::Start => DkgPhase::Round2,
                    DkgPhase::Round2 => DkgPhase::Finish,
                    _ => DkgPhase::Confirm,
                };
            }
            DkgPhase::Confirm
                if relay.confirmed.len() == n
                    && relay.confirmed.values().all(|(answered, _)| *answered == n) =>
            {
                relay.phase = DkgPhase::Over;
                if relay.confirmed.values().all(|(_, active)| *active) {
                    let key = relay.output_key.map(hex::encode);
                    self.events.push_back(json!({
                        "type": "dkg_done",
                        "session": hex::encode(session.0),
                        "output_key": key,
                    }));
                } else {
                    self.fail_dkg(
                        "a member's wallet did not become active after every confirmation",
                    );
                }
                return;
            }
            _ => return,
        }
        let phase = match &self.run {
            Run::Dkg(relay) => relay.phase,
            Run::Sign(_) => return,
        };
        for (seat, request) in next {
            self.send(seat, Asked::Dkg(phase), &request);
        }
    }

    /// Ends the DKG: a `failed` event, and a cancel to every member so the
    /// next DKG does not wait for this session to expire.
    fn fail_dkg(&mut self, problem: &str) {
        let Run::Dkg(relay) = &mut self.run else {
            return;
        };
        relay.phase = DkgPhase::Over;
        let Some(session) = relay.session else {
            return;
        };
        self.events.push_back(json!({
            "type": "failed",
            "code": "dkg_failed",
            "retryable": true,
            "message": format!(
                "the DKG of wallet {} failed: {problem}; check that member's log and open a new \
                 DKG coordinator (members may hold this session's key package: check `status` first)",
                self.wallet.id()
            ),
        }));
        let wallet = self.wallet.id().clone();
        for seat in self.seats() {
            let cancel = Request::DkgCancel {
                wallet: wallet.clone(),
                session,
                abandon: false,
                abandonments: Vec::new(),
            };
            self.send(seat, Asked::Release, &cancel);
        }
    }
}

/// Wallet seats 1 to `n`.
fn wallet_seats(n: usize) -> impl Iterator<Item = Seat> {
    (1..=n).filter_map(|i| Seat::try_from(u16::try_from(i).ok()?).ok())
}

/// Checks one member's answer to a DKG part and records it.
fn check_dkg_answer(
    relay: &mut DkgRelay,
    wallet: &WalletConfig,
    seat: Seat,
    phase: DkgPhase,
    response: Response,
) -> Result<(), String> {
    if phase == DkgPhase::Confirm {
        let Response::Confirmations(status) = response else {
            return Err("answered a confirmation with something else".to_owned());
        };
        let entry = relay.confirmed.entry(seat).or_insert((0, false));
        entry.0 += 1;
        entry.1 |= status.active;
        return Ok(());
    }
    let Response::DkgMessages { messages } = response else {
        return Err(format!(
            "answered the DKG's {} with something else",
            phase.name()
        ));
    };
    let others = wallet.roster.len().saturating_sub(1);
    let expected = if phase == DkgPhase::Round2 { others } else { 1 };
    if messages.len() != expected {
        return Err(format!("sent {} messages, not {expected}", messages.len()));
    }
    let mut recipients = Vec::new();
    for message in &messages {
        if message.sender != seat || !message.verify(wallet) {
            return Err("sent a message its identity key did not sign".to_owned());
        }
        match (&message.payload, phase) {
            (DkgPayload::Round1 { .. }, DkgPhase::Start) => {
                // The cluster's relay makes the same check: a fault names
                // the member, which answered this relay directly (no proof
                // is written here).
                let session = relay.session.ok_or("answered a start no run sent")?;
                let answer = check_round1_answer(wallet, (&DkgKind::Fresh, session), message);
                if let Some(problem) = answer.problem() {
                    return Err(format!("sent {problem}"));
                }
            }
            (DkgPayload::Round2 { to, .. }, DkgPhase::Round2) if *to != seat => {
                recipients.push(*to)
            }
            (DkgPayload::Confirm { output_key, .. }, DkgPhase::Finish) => {
                let key: [u8; 32] = output_key
                    .0
                    .as_slice()
                    .try_into()
                    .map_err(|_| "confirmed an output key that is not 32 bytes".to_owned())?;
                if relay.output_key.is_some_and(|k| k != key) {
                    return Err("confirmed another output key than the other members".to_owned());
                }
                relay.output_key = Some(key);
            }
            _ => {
                return Err(format!(
                    "sent a message of another part than {}",
                    phase.name()
                ));
            }
        }
    }
    // Exactly the other seats, each once: a message to a seat outside the
    // wallet would pass a count and leave its real recipient to refuse the
    // finish, blamed for the sender's fault.
    recipients.sort_unstable();
    let other_seats = wallet_seats(wallet.roster.len()).filter(|s| *s != seat);
    if phase == DkgPhase::Round2 && !recipients.iter().copied().eq(other_seats) {
        return Err("did not send one round-2 message to each other member".to_owned());
    }
    relay.answers.insert(seat, messages);
    Ok(())
}

/// A ROAST run over one PSBT.
struct Signing {
    roast: Coordinator<WireScheme>,
    /// The host's clock at open, as an `Instant` and in milliseconds: the
    /// coordinator counts in `Instant`s, the host in milliseconds.
    origin: (Instant, u64),
    epoch: WalletEpoch,
    psbt: Vec<u8>,
    inputs: usize,
    messages: Vec<[u8; 32]>,
    output_key: [u8; 32],
    /// The vectors handed out and used, to release the rest at the end.
    handed: Handed,
    /// Wallet seats whose refusal said a later request may pass.
    passing: BTreeSet<Seat>,
    /// The key record shares are checked against (`WalletKey::to_bytes`):
    /// each answer must be signed over it, and a culprit's proof carries it.
    key_record: Vec<u8>,
    /// The latest round-2 request sent to each wallet seat, with its
    /// session's number: the answer must be signed over it.
    asked: BTreeMap<Seat, (u32, Round2Request)>,
    /// The signed round-2 answers: a culprit's proof (as in
    /// `thresig_cluster::sign`).
    answers: KeptAnswers,
    /// Members (cluster seats) whose round-2 answer was dropped for its
    /// identity signature, named if the run fails.
    unsigned: BTreeSet<Seat>,
}

impl Signing {
    fn new(
        network: thresig_tx::Network,
        key: &HexBytes,
        epoch: WalletEpoch,
        psbt: &str,
        now_ms: u64,
        (request_timeout_ms, deadline_ms): (Option<u64>, Option<u64>),
    ) -> Result<Self, FfiError> {
        let key = WalletKey::from_bytes(&key.0)
            .map_err(|e| FfiError::invalid_request(format!("key: {e}")))?;
        let taproot =
            thresig_engine::taproot_wallet(network, &key).map_err(|e| FfiError::engine(&e))?;
        let psbt = thresig_tx::WalletPsbt::from_base64(psbt, &taproot)
            .map_err(|e| FfiError::invalid_request(format!("psbt: {e}")))?;
        let messages: Vec<[u8; 32]> = psbt
            .wallet_sighashes()
            .map_err(|e| FfiError::invalid_request(format!("psbt: {e}")))?
            .iter()
            .map(|s| s.sighash.to_byte_array())
            .collect();
        let mut config = thresig_roast::Config::for_wallet(&key);
        if let Some(ms) = request_timeout_ms {
            config.request_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = deadline_ms {
            config.deadline = Duration::from_millis(ms);
        }
        let origin = (Instant::now(), now_ms);
        let output_key = key.output_key().to_bytes();
        let key_record = key
            .to_bytes()
            .map_err(|e| FfiError::invalid_request(format!("key: {e}")))?;
        let roast = Coordinator::new(origin.0, config, WireScheme(key), messages.clone())
            .map_err(|e| FfiError::invalid_request(format!("the signing run: {e}")))?;
        Ok(Self {
            roast,
            origin,
            epoch,
            psbt: psbt.serialize(),
            inputs: messages.len(),
            messages,
            output_key,
            handed: Handed::default(),
            passing: BTreeSet::new(),
            key_record,
            asked: BTreeMap::new(),
            answers: KeptAnswers::default(),
            unsigned: BTreeSet::new(),
        })
    }

    /// The proof against wallet seat `seat` for the answer ROAST found
    /// invalid, as JSON (docs/blame.md); null if that answer was not kept.
    fn proof(&mut self, seat: Seat, fault: &Misbehavior) -> Value {
        let Misbehavior::InvalidShare { session, .. } = fault else {
            return Value::Null;
        };
        self.answers
            .proof(seat, session.get(), &self.key_record)
            .and_then(|proof| serde_json::to_value(proof).ok())
            .unwrap_or(Value::Null)
    }

    /// The host's `now_ms` as the coordinator's `Instant` (never before
    /// the open: the host's clock may step back, the coordinator's not).
    fn instant(&self, now_ms: u64) -> Instant {
        let since = Duration::from_millis(now_ms.saturating_sub(self.origin.1));
        self.origin.0.checked_add(since).unwrap_or(self.origin.0)
    }

    fn poll_timeout_ms(&self) -> Option<u64> {
        let at = self.roast.poll_timeout()?;
        let since = u64::try_from(at.saturating_duration_since(self.origin.0).as_millis()).ok()?;
        self.origin.1.checked_add(since)
    }

    /// The engine request for a ROAST request; `None` if the request is of
    /// a kind this build does not know (a bug, refused for the member
    /// rather than guessed at).
    fn request(
        &self,
        wallet: &NodeWallet,
        request: thresig_roast::Request<WireScheme>,
    ) -> Option<Request> {
        match request {
            thresig_roast::Request::Sign { packages, .. } => Some(Request::Round2(round2_request(
                wallet.id(),
                self.epoch,
                &self.psbt,
                &packages,
            ))),
            thresig_roast::Request::Commit => Some(Request::Round1(Round1Request::new(
                wallet.id().clone(),
                self.inputs,
            ))),
            _ => None,
        }
    }

    /// Feeds a member's answer; whether the coordinator took it.
    fn answer(
        &mut self,
        wallet: &NodeWallet,
        now_ms: u64,
        seat: Seat,
        round: Round,
        answer: Result<Response, SignerError>,
    ) -> bool {
        let refused = |refusal| Reply::Refused { round, refusal };
        let reply = match (answer, round) {
            (Ok(Response::Round1(r)), Round::Commit) => match decode_commitments(&r.commitments) {
                Some(commitments) => Reply::Commitments { commitments },
                None => refused(Refusal::Rejected),
            },
            (Ok(Response::Round2(r)), Round::Sign(session)) => {
                let Some((asked, request)) = self.asked.get(&seat) else {
                    return false;
                };
                if *asked != session.get() {
                    // A late answer to a session ROAST has given up on: it
                    // is not signed over the latest request, and would not
                    // be taken anyway.
                    return false;
                }
                let checked = CheckedAnswer::check(
                    &wallet.config,
                    &self.key_record,
                    seat,
                    request.clone(),
                    r,
                );
                let Some(checked) = checked else {
                    self.unsigned
                        .insert(wallet.cluster_seat(seat).unwrap_or(seat));
                    return false;
                };
                self.answers.take(session, checked)
            }
            (Err(e), _) => {
                if e.is_retryable() {
                    self.passing.insert(seat);
                }
                refused(refusal_of(&e))
            }
            _ => refused(Refusal::Rejected),
        };
        self.handed.received(seat, &reply);
        let now = self.instant(now_ms);
        self.roast.handle_reply(now, seat, reply).is_ok()
    }

    fn event(&mut self, wallet: &NodeWallet, event: Event<WireScheme>) -> Value {
        let member = |seat: Seat| wallet.cluster_seat(seat).unwrap_or(seat).get();
        match event {
            Event::SessionStarted { session, signers } => json!({
                "type": "session_started",
                "session": session.get(),
                "signers": signers.into_iter().map(member).collect::<Vec<_>>(),
            }),
            Event::Unresponsive { seat, cause } => json!({
                "type": "unresponsive",
                "member": member(seat),
                "cause": format!("{cause:?}"),
            }),
            Event::Culprit { seat, fault } => json!({
                "type": "culprit",
                "member": member(seat),
                "proof": self.proof(seat, &fault),
                "fault": format!("{fault:?}"),
            }),
            Event::Done(signed) => {
                let signatures: Vec<String> = signed
                    .signatures
                    .iter()
                    .filter_map(|s| s.to_bytes().ok())
                    .map(hex::encode)
                    .collect();
                json!({
                    "type": "done",
                    "signatures": signatures,
                    "messages": self.messages.iter().map(hex::encode).collect::<Vec<_>>(),
                    "output_key": hex::encode(self.output_key),
                    "signers": signed.signers.into_iter().map(member).collect::<Vec<_>>(),
                    "sessions": signed.stats.sessions,
                })
            }
            Event::Failed { failure, .. } => {
                let recovery = failure_recovery(&failure, |seat| self.passing.contains(&seat));
                let retryable = recovery == Recovery::Retryable;
                json!({
                    "type": "failed",
                    "code": "signing_failed",
                    "retryable": retryable,
                    "message": describe_failure(failure, wallet) + &unsigned_answers(&self.unsigned),
                })
            }
            other => json!({"type": "other", "event": format!("{other:?}")}),
        }
    }
}

fn decode_commitments(encoded: &[HexBytes]) -> Option<Vec<Commitment>> {
    encoded
        .iter()
        .map(|c| Commitment::from_bytes(&c.0).ok())
        .collect()
}

/// Why a DKG failed when the members refused part 2 for the round-1
/// messages of `members` (cluster seats), which carried no kind-bound
/// signature.
fn unbound_refusal(members: &[String]) -> String {
    let noun = if members.len() == 1 {
        "member"
    } else {
        "members"
    };
    format!(
        "{noun} {}: sent {}",
        members.join(", "),
        unbound_round1_refusal(members.len())
    )
}

#[cfg(test)]
mod tests {
    use thresig_engine::test_util::{identity, identity_secret};

    use super::*;

    #[test]
    fn an_unbound_refusal_agrees_with_how_many_members_it_names() {
        let one = unbound_refusal(&["3".to_owned()]);
        assert!(
            one.starts_with("member 3: sent a round-1 message without")
                && one.ends_with("upgrade it"),
            "{one}"
        );
        let two = unbound_refusal(&["2".to_owned(), "3".to_owned()]);
        assert!(
            two.starts_with("members 2, 3: sent round-1 messages without")
                && two.ends_with("upgrade them"),
            "{two}"
        );
    }

    /// A round-2 answer of seat 1 with one message to each of `to`, each
    /// signed with its identity key.
    fn round2_from_first(wallet: &WalletConfig, session: DkgSessionId, to: &[u16]) -> Response {
        let sender = Seat::FIRST;
        let messages = to
            .iter()
            .map(|&to| {
                let payload = DkgPayload::Round2 {
                    to: Seat::try_from(to).unwrap(),
                    sealed: HexBytes(vec![1]),
                    echo: HexBytes(vec![2]),
                };
                SignedDkgMessage::sign(
                    &identity_secret(1),
                    session,
                    wallet.id.clone(),
                    sender,
                    payload,
                )
            })
            .collect();
        Response::DkgMessages { messages }
    }

    #[test]
    fn a_round2_message_to_a_non_member_is_its_senders_fault() {
        let id = WalletId::new("w".to_owned()).unwrap();
        let wallet = WalletConfig::new(id, 2, (1..=3).map(identity).collect());
        let session = DkgSessionId([7; 32]);
        for to in [&[2, 99][..], &[2, 1], &[3, 4]] {
            let mut relay = DkgRelay {
                session: Some(session),
                phase: DkgPhase::Round2,
                ..DkgRelay::default()
            };
            let answer = round2_from_first(&wallet, session, to);
            let checked =
                check_dkg_answer(&mut relay, &wallet, Seat::FIRST, DkgPhase::Round2, answer);
            assert!(checked.is_err(), "recipients {to:?} passed");
            assert!(relay.answers.is_empty(), "recipients {to:?} were recorded");
        }
        let mut relay = DkgRelay {
            session: Some(session),
            phase: DkgPhase::Round2,
            ..DkgRelay::default()
        };
        let answer = round2_from_first(&wallet, session, &[3, 2]);
        check_dkg_answer(&mut relay, &wallet, Seat::FIRST, DkgPhase::Round2, answer).unwrap();
    }
}
