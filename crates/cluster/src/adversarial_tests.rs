//! Adversarial tests: an in-process cluster whose members are real
//! engines behind the real daemon, some wrapped in handlers that misbehave
//! the way a malicious member (or a member holding the cluster CA key) can.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_crypto::Seat;
use thresig_daemon::{
    ClientTls, ClusterCa, ClusterName, DaemonConfig, EngineHandler, Listeners, SignerClient,
    SignerError, SignerHandler, TlsPaths, Validity, serve,
};
use thresig_engine::test_util::cluster::seat;
use thresig_engine::{
    DkgKind, DkgPayload, DkgProposal, DkgSessionId, Request, Response, SignedDkgMessage, Signer,
    WalletEpoch, WalletId,
};
use thresig_store::EncryptedStore;
use thresig_store::provider::KeyProvider;
use thresig_tx::Network;
use tokio::sync::oneshot;

use crate::config::{Config, NodeConfig, NodeWallet};
use crate::local::free_loopback_ports;
use crate::peers::Peers;
use crate::provision::{self, ClusterSpec, member_dir};
use crate::{DkgError, identity, run_dkg};
use thresig_store::Recovery;

const WALLET: &str = "w";

/// How a member's handler behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Honest,
    /// DKG part 2: sends two (genuinely signed) round-2 messages to its
    /// first recipient and none to the second; passes the relay's count check.
    DkgMisroute,
    /// DKG part 1: never answers (until the test releases it).
    DkgSilent,
    /// DKG part 2: its round-2 package to its first recipient has one
    /// ciphertext byte changed, the message signed by the member itself
    /// (a member that cheats): the package does not open.
    DkgUnopenable,
    /// As [`Mode::DkgUnopenable`] in part 2; part 3 is refused at once
    /// with `dkg_not_in_phase` (the engine does not run), and the refusal
    /// built opens [`Cluster::finish_latch`], so that it reaches the relay
    /// before its victim's accusation.
    DkgUnopenableNotInPhase,
    /// DKG part 3: held until [`Cluster::finish_latch`] opens, then
    /// answered honestly.
    DkgFinishLatched,
    /// DKG part 3: the first reply is lost (the engine ran; the caller
    /// gets the daemon's `timeout`).
    DkgFinishLostOnce,
    /// DKG part 3: finishes honestly, then answers with a refusal carrying
    /// its own signed accusation of the member it got its first package
    /// from, revealing a key that is not its session's (a member that lies).
    DkgFalseAccusation,
    /// DKG part 1: answers with its message's signature altered.
    DkgBadSignature,
    /// DKG part 1: answers with its message's kind-bound signature
    /// altered (the ordinary one intact).
    DkgBadKindSignature,
    /// DKG part 1: answers without a kind-bound signature, as a member of
    /// an earlier version does.
    DkgEarlierVersion,
    /// DKG part 1: answers with its round-1 message signed (both
    /// signatures) for another session.
    DkgOtherSession,
    /// Signing round 2: answers with its shares but without fresh
    /// commitments, as a signer at its nonce capacity does.
    NoFreshCommitments,
    /// DKG part 2: the first reply is lost (the engine ran; the caller gets
    /// the daemon's `timeout`, as when a reply does not make it in time).
    DkgRound2LostOnce,
    /// Signing round 2: the first reply is lost, likewise.
    Round2LostOnce,
    /// DKG part 2: the first reply comes [`LATE`] after the engine ran,
    /// past a relay's patience (a reply lost on a live connection).
    DkgRound2LateOnce,
    /// DKG part 1: the first start is refused for good (the engine does
    /// not run), so the run fails while the other members hold its session.
    DkgStartRefusedOnce,
    /// Signing round 2: the member's signed answer with its shares changed
    /// afterwards, as a coordinator or anyone on the way could forge it:
    /// the signature no longer covers the shares.
    Round2Forged,
    /// Signing round 2: invalid shares the member signs itself, as a
    /// member that means to cheat would.
    Round2SignedInvalid,
    /// Signing round 2: valid shares with no identity signature, as a
    /// member older than its coordinator answers.
    Round2Unsigned,
    /// Signing round 2: refused by the member's own, stricter policy
    /// (`policy_denied`), as the canary of a staged policy rollout refuses.
    Round2PolicyDenied,
    /// Signing round 2: held [`SLOW`] (most of the test's request timeout),
    /// then refused (`policy_denied`), as a member that means to hold up
    /// every signature without ever timing out would.
    Round2SlowRefusal,
    /// Signing round 2: the first answer comes without an identity
    /// signature (it counts as missing, as a lost one does), every later
    /// one is refused by the member's policy (`policy_denied`).
    Round2UnsignedThenPolicyDenied,
    /// Signing round 1: the first request held [`ROUND1_FIRST_HOLD`], past
    /// the caller's patience (its call then fails in transport), every
    /// later one [`ROUND1_HOLD`]; each counted in [`Cluster::round1s`].
    Round1Slow,
    /// DKG confirmation: the first is refused as overloaded (the engine
    /// does not run), as a member at its per-seat request cap refuses.
    ConfirmOverloadedOnce,
    /// Refresh confirmations asked for: answers with the cluster's planted
    /// messages (other members' genuine, older confirmations) first.
    ReplaysConfirmations,
    /// Asked for a veto: first runs the part 3 the cluster holds back for
    /// it (a slow coordinator's, landing between `--abort`'s read and its
    /// veto request).
    Part3BeforeVeto,
    /// Signing rounds 1 and 2, once the cluster holds a [`Stale`] share:
    /// commitments drawn and shares computed from that share (one the
    /// member held before a refresh), the answer signed with its identity
    /// key as an honest member signs: a real member with an old share.
    StaleShare,
    /// Signing round 2: valid shares, with a fresh vector one commitment
    /// too long (its first commitment repeated), signed by the member.
    Round2LongVector,
    /// Signing round 2: refused with `nonce_unknown` unless a round 1 came
    /// since its last round-2 answer, that is for every vector a
    /// coordinator kept from an earlier run, though it holds the nonce (a
    /// member that claims to forget on purpose); else answered honestly.
    Round2RefusesKept,
}

/// The share a [`Mode::StaleShare`] member signs with, the key record it
/// belonged to, and the nonces of the commitments it answered with.
struct Stale {
    share: thresig_crypto::KeyShare,
    key: thresig_crypto::WalletKey,
    nonces: Vec<thresig_crypto::SecretNonce>,
    rng: ChaCha20Rng,
}

impl Stale {
    /// `count` fresh commitments of the stale share, their nonces kept.
    fn commit(&mut self, count: usize) -> Vec<thresig_engine::HexBytes> {
        (0..count)
            .map(|_| {
                let (nonce, commitment) = thresig_crypto::commit(&self.share, &mut self.rng);
                self.nonces.push(nonce);
                thresig_engine::HexBytes(commitment.to_bytes())
            })
            .collect()
    }

    /// One signature share of the stale share per package, each made with
    /// the nonce of the commitment the package names for `seat`.
    fn sign(
        &mut self,
        seat: Seat,
        packages: &[thresig_engine::HexBytes],
    ) -> Vec<thresig_engine::HexBytes> {
        packages
            .iter()
            .map(|bytes| {
                let package = thresig_crypto::SigningPackage::from_bytes(&bytes.0).unwrap();
                let mine = package.commitment(seat).unwrap();
                let at = self
                    .nonces
                    .iter()
                    .position(|n| n.commitment() == mine)
                    .unwrap();
                let nonce = self.nonces.swap_remove(at);
                let share = thresig_crypto::sign(nonce, &package, &self.share, &self.key).unwrap();
                thresig_engine::HexBytes(share.to_bytes())
            })
            .collect()
    }
}

/// How long a `...LateOnce` member holds its first reply.
const LATE: Duration = Duration::from_secs(3);

/// How long a [`Mode::Round2SlowRefusal`] member holds its refusal: 0.9 of
/// [`SLOW_TIMEOUT`].
const SLOW: Duration = Duration::from_millis(1800);
/// The request timeout of the runs a slow member is tested in.
const SLOW_TIMEOUT: Duration = Duration::from_secs(2);

/// The request timeout and the caller's patience of the run a
/// [`Mode::Round1Slow`] member is tested in, and how long it holds its
/// first and its later round-1 answers: the first call fails (patience)
/// while the re-ask sent at the first's timeout is still on its way, and
/// the member, which answers one peer's requests in turn, answers the
/// re-ask before its own timeout.
const ROUND1_TIMEOUT: Duration = Duration::from_secs(2);
const ROUND1_PATIENCE: Duration = Duration::from_secs(3);
const ROUND1_FIRST_HOLD: Duration = Duration::from_millis(3500);
const ROUND1_HOLD: Duration = Duration::from_millis(200);

/// The longest a [`Mode::DkgFinishLatched`] member waits for its latch:
/// only a guard against a deadlock should the latch never open (the test
/// then fails on its outcome, not by hanging).
const LATCH_GUARD: Duration = Duration::from_secs(30);

/// What a member whose reply was lost answers instead: the daemon's own
/// refusal when the handler's answer does not make it in time.
fn lost_reply() -> SignerError {
    SignerError::new(
        thresig_daemon::ErrorCode::TIMEOUT,
        thresig_daemon::Recovery::Retryable,
        "the reply was lost",
    )
}

struct Member {
    inner: EngineHandler<Arc<EncryptedStore>>,
    mode: Mode,
    release: Arc<Release>,
    /// Opened by a [`Mode::DkgUnopenableNotInPhase`] member's refusal;
    /// a [`Mode::DkgFinishLatched`] member's part 3 waits for it.
    finish_latch: Arc<Release>,
    /// What a [`Mode::ReplaysConfirmations`] member answers first.
    planted: Arc<std::sync::Mutex<Vec<SignedDkgMessage>>>,
    /// The part-3 requests held back for [`Mode::Part3BeforeVeto`]
    /// members, by member.
    late: Late,
    /// This member's seat.
    seat: Seat,
    /// Whether a `...LostOnce` mode already lost its reply.
    lost: std::sync::atomic::AtomicBool,
    /// Round-1 requests a [`Mode::Round1Slow`] member was sent.
    round1s: Arc<std::sync::atomic::AtomicUsize>,
    /// The signing requests every member was sent.
    tally: Arc<Tally>,
    /// The member's identity key, with which a member whose mode changes
    /// its round-2 answer signs the changed answer (except `Round2Forged`).
    identity: ed25519_dalek::SigningKey,
    /// What a [`Mode::StaleShare`] member signs with, once set.
    stale: Arc<std::sync::Mutex<Option<Stale>>>,
}

impl Member {
    /// Whether this reply is the one to lose (the first, in a lossy mode).
    fn loses(&self, mode: Mode) -> bool {
        self.mode == mode && !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Another valid share encoding: the last byte plus one (still below the
/// group order, but for a share within 256 of it).
fn wrong_share(share: &mut thresig_engine::HexBytes) {
    let last = share.0.last_mut().unwrap();
    *last = last.wrapping_add(1);
}

/// Holds a silent member's answer until the cluster is dropped.
#[derive(Default)]
struct Release {
    released: std::sync::Mutex<bool>,
    signal: std::sync::Condvar,
}

impl Release {
    fn wait(&self) {
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.signal.wait(released).unwrap();
        }
    }

    /// As [`Release::wait`], for at most `limit` (a deadlock guard).
    fn wait_at_most(&self, limit: Duration) {
        let released = self.released.lock().unwrap();
        let _ = self
            .signal
            .wait_timeout_while(released, limit, |released| !*released)
            .unwrap();
    }

    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.signal.notify_all();
    }
}

impl SignerHandler for Member {
    fn handle(&self, peer: Seat, request: Request) -> Result<Response, SignerError> {
        self.tally.note(&request);
        match request {
            Request::Round1(_) if self.mode == Mode::StaleShare => self.stale_round1(peer, request),
            Request::Round1(_) if self.mode == Mode::Round1Slow => {
                let earlier = self
                    .round1s
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // The member's own behaviour under test, not synchronization.
                std::thread::sleep(if earlier == 0 {
                    ROUND1_FIRST_HOLD
                } else {
                    ROUND1_HOLD
                });
                self.inner.handle(peer, request)
            }
            Request::Round1(_) if self.mode == Mode::Round2RefusesKept => {
                self.lost.store(false, std::sync::atomic::Ordering::SeqCst);
                self.inner.handle(peer, request)
            }
            Request::Round2(asked) => self.round2(peer, asked),
            Request::DkgStart(_) => self.dkg_start(peer, request),
            Request::DkgRound2 { .. } => self.dkg_round2(peer, request),
            Request::DkgFinish { ref round2, .. } if self.mode == Mode::DkgFalseAccusation => {
                let first = round2.first().cloned();
                self.inner.handle(peer, request)?;
                let first = first.expect("a part 3 with messages");
                let accusation = SignedDkgMessage::sign(
                    &self.identity,
                    first.session,
                    first.wallet.clone(),
                    self.seat,
                    thresig_engine::DkgPayload::Accuse {
                        accused: first.sender,
                        hpke_secret: thresig_engine::RevealedHpkeKey::new(vec![7; 32]),
                    },
                );
                let code = thresig_daemon::ErrorCode::from(thresig_engine::ErrorCode::DkgFailed);
                Err(SignerError::new(code, Recovery::Terminal, "a lie")
                    .with_accusation(Some(accusation)))
            }
            Request::DkgFinish { .. } if self.mode == Mode::DkgUnopenableNotInPhase => {
                let code =
                    thresig_daemon::ErrorCode::from(thresig_engine::ErrorCode::DkgNotInPhase);
                let refusal = SignerError::new(code, Recovery::Terminal, "not in this phase");
                self.finish_latch.release();
                Err(refusal)
            }
            Request::DkgFinish { .. } if self.mode == Mode::DkgFinishLatched => {
                self.finish_latch.wait_at_most(LATCH_GUARD);
                self.inner.handle(peer, request)
            }
            Request::DkgFinish { .. } if self.mode == Mode::DkgFinishLostOnce => {
                let answer = self.inner.handle(peer, request);
                if self.loses(Mode::DkgFinishLostOnce) {
                    return Err(lost_reply());
                }
                answer
            }
            Request::DkgConfirm { .. } if self.loses(Mode::ConfirmOverloadedOnce) => {
                Err(SignerError::new(
                    thresig_daemon::ErrorCode::OVERLOADED,
                    thresig_daemon::Recovery::Retryable,
                    "too many requests from this seat",
                ))
            }
            Request::RefreshConfirmations { .. } if self.mode == Mode::ReplaysConfirmations => {
                let mut response = self.inner.handle(peer, request)?;
                if let Response::DkgMessages { messages } = &mut response {
                    let planted = self.planted.lock().unwrap().clone();
                    messages.splice(0..0, planted);
                }
                Ok(response)
            }
            Request::DkgCancel { abandon: true, .. } if self.mode == Mode::Part3BeforeVeto => {
                let held = self.late.lock().unwrap().remove(&self.seat);
                if let Some(part3) = held {
                    self.inner.handle(peer, part3)?;
                }
                self.inner.handle(peer, request)
            }
            _ => self.inner.handle(peer, request),
        }
    }
}

/// Part-3 requests held back, by the member they are for.
type Late = Arc<std::sync::Mutex<std::collections::BTreeMap<Seat, Request>>>;

impl Member {
    fn round2(
        &self,
        peer: Seat,
        asked: thresig_engine::Round2Request,
    ) -> Result<Response, SignerError> {
        let hash = thresig_engine::package_hash(&asked);
        // The key record the engine signs its answer over.
        let key = Request::WalletKey {
            wallet: asked.wallet.clone(),
        };
        let Response::WalletKey { key } = self.inner.handle(peer, key)? else {
            panic!("the engine answers a key request with the key");
        };
        if self.mode == Mode::StaleShare
            && let Some(stale) = self.stale.lock().unwrap().as_mut()
        {
            let shares = stale.sign(self.seat, &asked.packages);
            let fresh = stale.commit(shares.len());
            let mut reply =
                thresig_engine::Round2Response::new(asked.wallet.clone(), self.seat, shares, fresh);
            reply.sign(&self.identity, &hash, &key.0);
            return Ok(Response::Round2(reply));
        }
        if self.mode == Mode::Round2SlowRefusal {
            // The member's own behaviour under test, not synchronization.
            std::thread::sleep(SLOW);
        }
        if self.mode == Mode::Round2RefusesKept
            && self.lost.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(SignerError::new(
                thresig_engine::ErrorCode::NonceUnknown.into(),
                thresig_daemon::Recovery::Terminal,
                "no live nonce for this commitment",
            ));
        }
        let denies = match self.mode {
            Mode::Round2PolicyDenied | Mode::Round2SlowRefusal => true,
            Mode::Round2UnsignedThenPolicyDenied => {
                self.lost.swap(true, std::sync::atomic::Ordering::SeqCst)
            }
            _ => false,
        };
        if denies {
            return Err(SignerError::new(
                thresig_engine::ErrorCode::PolicyDenied.into(),
                thresig_daemon::Recovery::Terminal,
                "this member's policy does not allow the payment",
            ));
        }
        let mut response = self.inner.handle(peer, Request::Round2(asked))?;
        if let Response::Round2(reply) = &mut response {
            match self.mode {
                // Signed as the engine signs an answer it sends without
                // commitments (at its nonce capacity).
                Mode::NoFreshCommitments => {
                    reply.commitments.clear();
                    reply.sign(&self.identity, &hash, &key.0);
                }
                Mode::Round2Forged => reply.shares.iter_mut().for_each(wrong_share),
                Mode::Round2LongVector => {
                    let first = reply.commitments[0].clone();
                    reply.commitments.push(first);
                    reply.sign(&self.identity, &hash, &key.0);
                }
                Mode::Round2SignedInvalid => {
                    reply.shares.iter_mut().for_each(wrong_share);
                    reply.sign(&self.identity, &hash, &key.0);
                }
                Mode::Round2Unsigned | Mode::Round2UnsignedThenPolicyDenied => {
                    reply.signature = thresig_engine::HexBytes::default();
                }
                _ => {}
            }
        }
        if self.loses(Mode::Round2LostOnce) {
            return Err(lost_reply());
        }
        Ok(response)
    }

    /// The engine's round-1 answer, its commitments replaced by the stale
    /// share's once the cluster holds one.
    fn stale_round1(&self, peer: Seat, request: Request) -> Result<Response, SignerError> {
        let mut response = self.inner.handle(peer, request)?;
        if let Response::Round1(reply) = &mut response
            && let Some(stale) = self.stale.lock().unwrap().as_mut()
        {
            reply.commitments = stale.commit(reply.commitments.len());
        }
        Ok(response)
    }

    fn dkg_start(&self, peer: Seat, request: Request) -> Result<Response, SignerError> {
        if self.loses(Mode::DkgStartRefusedOnce) {
            return Err(SignerError::new(
                thresig_daemon::ErrorCode::INTERNAL,
                thresig_daemon::Recovery::Terminal,
                "refused once",
            ));
        }
        if self.mode == Mode::DkgSilent {
            // A malicious member controls its whole server; here the
            // daemon's own request timeout (set to its maximum) stands in
            // for "never".
            self.release.wait();
        }
        let mut response = self.inner.handle(peer, request)?;
        if let Response::DkgMessages { messages } = &mut response
            && self.mode == Mode::DkgBadSignature
            && let Some(message) = messages.first_mut()
        {
            message.signature.0[0] ^= 1;
        }
        if let Response::DkgMessages { messages } = &mut response
            && let Some(message) = messages.first_mut()
        {
            match self.mode {
                Mode::DkgBadKindSignature => {
                    if let Some(signature) = &mut message.kind_signature {
                        signature.0[0] ^= 1;
                    }
                }
                Mode::DkgEarlierVersion => message.kind_signature = None,
                Mode::DkgOtherSession => {
                    let mut session = message.session;
                    session.0[0] ^= 1;
                    *message = SignedDkgMessage::sign_round1(
                        &self.identity,
                        session,
                        message.wallet.clone(),
                        message.sender,
                        message.payload.clone(),
                        (&DkgKind::Fresh, 2),
                    );
                }
                _ => {}
            }
        }
        Ok(response)
    }

    fn dkg_round2(&self, peer: Seat, request: Request) -> Result<Response, SignerError> {
        let mut response = self.inner.handle(peer, request)?;
        if let Response::DkgMessages { messages: out } = &mut response
            && self.mode == Mode::DkgMisroute
            && out.len() >= 2
        {
            let first = out[0].clone();
            out[1] = first;
        }
        if let Response::DkgMessages { messages: out } = &mut response
            && matches!(
                self.mode,
                Mode::DkgUnopenable | Mode::DkgUnopenableNotInPhase
            )
        {
            let first = &mut out[0];
            let mut payload = first.payload.clone();
            let thresig_engine::DkgPayload::Round2 { sealed, .. } = &mut payload else {
                panic!("part 2 answers with round-2 messages");
            };
            *sealed.0.last_mut().unwrap() ^= 1;
            *first = SignedDkgMessage::sign(
                &self.identity,
                first.session,
                first.wallet.clone(),
                first.sender,
                payload,
            );
        }
        if self.loses(Mode::DkgRound2LostOnce) {
            return Err(lost_reply());
        }
        if self.loses(Mode::DkgRound2LateOnce) {
            std::thread::sleep(LATE);
        }
        Ok(response)
    }
}

/// A provisioned cluster with every member served in this process.
struct Cluster {
    dir: tempfile::TempDir,
    stops: Vec<oneshot::Sender<()>>,
    stores: Vec<Arc<EncryptedStore>>,
    release: Arc<Release>,
    /// See [`Member::finish_latch`].
    finish_latch: Arc<Release>,
    planted: Arc<std::sync::Mutex<Vec<SignedDkgMessage>>>,
    late: Late,
    stale: Arc<std::sync::Mutex<Option<Stale>>>,
    /// Round-1 requests [`Mode::Round1Slow`] members were sent.
    round1s: Arc<std::sync::atomic::AtomicUsize>,
    /// The signing requests every member was sent.
    tally: Arc<Tally>,
}

/// Round-1 and abort requests the members were sent, all together.
#[derive(Default)]
struct Tally {
    round1: std::sync::atomic::AtomicUsize,
    abort: std::sync::atomic::AtomicUsize,
}

impl Tally {
    fn note(&self, request: &Request) {
        let counter = match request {
            Request::Round1(_) => &self.round1,
            Request::Abort(_) => &self.abort,
            _ => return,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// (round-1 requests, abort requests) since the last call.
    fn take(&self) -> (usize, usize) {
        (
            self.round1.swap(0, std::sync::atomic::Ordering::SeqCst),
            self.abort.swap(0, std::sync::atomic::Ordering::SeqCst),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.release.release();
        self.finish_latch.release();
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for store in &self.stores {
            store.shutdown();
        }
    }
}

/// The test's wallet as member configuration `node` defines it.
fn the_wallet(node: &NodeConfig) -> &NodeWallet {
    node.wallet(&WalletId::new(WALLET.to_owned()).unwrap())
        .unwrap()
}

impl Cluster {
    fn config_path(&self, seat: Seat) -> std::path::PathBuf {
        member_dir(&self.dir.path().join("c"), seat).join(provision::CONFIG_FILE)
    }

    fn node(&self, seat: Seat) -> NodeConfig {
        let path = self.config_path(seat);
        Config::load(&path).unwrap().into_node(&path).unwrap()
    }

    fn peers(&self, seat: Seat) -> Arc<Peers> {
        Arc::new(Peers::new(&self.node(seat)).unwrap())
    }
}

async fn start(n: u16, t: u16, modes: &[(u16, Mode)], tweak: fn(&mut DaemonConfig)) -> Cluster {
    start_with(n, t, modes, tweak, |_| {}).await
}

/// [`start`], each member's signer configured by `signer`.
async fn start_with(
    n: u16,
    t: u16,
    modes: &[(u16, Mode)],
    tweak: fn(&mut DaemonConfig),
    signer: fn(&mut thresig_engine::SignerConfig),
) -> Cluster {
    // The ports are only probed free: another test process can take one
    // before its member binds it, and a cluster in a fresh directory on
    // fresh ports then starts.
    for _ in 1..3 {
        if let Some(cluster) = try_start_with(n, t, modes, tweak, signer).await {
            return cluster;
        }
    }
    try_start_with(n, t, modes, tweak, signer)
        .await
        .expect("a member's port was taken on each of 3 attempts")
}

/// [`start_with`] once; `None` if a member's port was taken (the members
/// started so far stop again).
async fn try_start_with(
    n: u16,
    t: u16,
    modes: &[(u16, Mode)],
    tweak: fn(&mut DaemonConfig),
    signer: fn(&mut thresig_engine::SignerConfig),
) -> Option<Cluster> {
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec::new(
        ClusterName::new("test".to_owned()).unwrap(),
        Network::Regtest,
        free_loopback_ports(usize::from(n)).unwrap(),
        WalletId::new(WALLET.to_owned()).unwrap(),
        t,
    );
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    provision::init_cluster(&dir.path().join("c"), &spec, SystemTime::now(), &mut rng).unwrap();
    let release = Arc::new(Release::default());
    let mut cluster = Cluster {
        dir,
        stops: Vec::new(),
        stores: Vec::new(),
        release: release.clone(),
        finish_latch: Arc::default(),
        planted: Arc::default(),
        late: Arc::default(),
        stale: Arc::default(),
        round1s: Arc::default(),
        tally: Arc::default(),
    };
    for number in 1..=n {
        let path = cluster.config_path(seat(number));
        let config = Config::load(&path).unwrap();
        let provider: Arc<dyn KeyProvider> = Arc::new(config.key_provider.open().unwrap());
        let store = Arc::new(
            EncryptedStore::open(config.location(), provider, config.options.clone()).unwrap(),
        );
        let node = config.node(&path).unwrap();
        let key = identity::load(store.as_ref()).unwrap();
        let mut signer_config = node.signer_config();
        signer(&mut signer_config);
        let signer = Signer::open(signer_config, key.clone(), store.clone()).unwrap();
        let mode = modes
            .iter()
            .find(|(s, _)| *s == number)
            .map_or(Mode::Honest, |(_, m)| *m);
        let handler = Arc::new(Member {
            inner: EngineHandler::new(signer, node.identities()),
            mode,
            release: release.clone(),
            finish_latch: cluster.finish_latch.clone(),
            planted: cluster.planted.clone(),
            late: cluster.late.clone(),
            seat: seat(number),
            lost: std::sync::atomic::AtomicBool::new(false),
            round1s: cluster.round1s.clone(),
            tally: cluster.tally.clone(),
            identity: key,
            stale: cluster.stale.clone(),
        });
        let mut daemon = node.daemon.clone().unwrap();
        tweak(&mut daemon);
        let listeners = match Listeners::bind(&daemon).await {
            Ok(listeners) => listeners,
            Err(thresig_daemon::Error::Setup(e)) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return None;
            }
            Err(e) => panic!("member {number}: {e}"),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = serve(&daemon, listeners, handler, async move {
                let _ = stopped.await;
            })
            .await;
        });
        cluster.stops.push(stop);
        cluster.stores.push(store);
    }
    Some(cluster)
}

fn keep(_: &mut DaemonConfig) {}

/// A PSBT spending one 10,000 sat output of `spend` and paying 9,000 sat
/// to `destination`.
fn spend_paying(
    spend: &thresig_tx::TaprootWallet,
    destination: bitcoin::ScriptBuf,
) -> thresig_tx::WalletPsbt {
    spend_of(spend, 1, destination)
}

/// Runs the wallet's DKG with member 1 coordinating; it must fail.
async fn failed_dkg(cluster: &Cluster, seed: u64) -> DkgError {
    dkg_from(cluster, 1, seed).await.unwrap_err()
}

/// Runs the wallet's DKG with `member` coordinating, seeded with `seed`.
async fn dkg_from(
    cluster: &Cluster,
    member: u16,
    seed: u64,
) -> Result<crate::DkgOutcome, DkgError> {
    dkg_relayed_by(&cluster.node(seat(member)), seed).await
}

/// Runs the wallet's DKG relayed by the member configured as `node`,
/// seeded with `seed`.
async fn dkg_relayed_by(node: &NodeConfig, seed: u64) -> Result<crate::DkgOutcome, DkgError> {
    run_dkg(
        &Arc::new(Peers::new(node).unwrap()),
        the_wallet(node),
        &mut ChaCha20Rng::seed_from_u64(seed),
        &crate::Silent,
    )
    .await
}

/// A member that misroutes its own round-2 messages (all genuinely signed by
/// it, the right count) makes the DKG fail at an honest member; the relay,
/// which sees every `to` field, must name the member that misrouted, not
/// its victim (DESIGN.md §4: a failed DKG names the accused member).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_relay_blames_the_member_that_misrouted_round2_messages() {
    let cluster = start(3, 2, &[(3, Mode::DkgMisroute)], keep).await;
    let err = failed_dkg(&cluster, 1).await;
    match &err {
        DkgError::Member { seat: s, .. } | DkgError::Protocol { seat: s, .. } => {
            assert_eq!(*s, seat(3), "blamed the wrong member: {err}");
        }
        other => panic!("unexpected {other}"),
    }
}

/// A member whose round-2 package to another does not open is accused by
/// that member with its session key revealed: the run fails naming it,
/// with a proof that verifies against the roster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_relay_proves_a_member_whose_round2_package_does_not_open() {
    let cluster = start(3, 2, &[(2, Mode::DkgUnopenable)], keep).await;
    let err = failed_dkg(&cluster, 11).await;
    let DkgError::Accused {
        accuser, accused, ..
    } = &err
    else {
        panic!("not an accusation with proof: {err}")
    };
    assert_eq!((*accuser, *accused), (seat(1), seat(2)), "{err}");
    assert_eq!(err.recovery(), Recovery::Terminal);
    let node = cluster.node(seat(3));
    let (member, proof) = err.proof().unwrap();
    assert_eq!(member, seat(2));
    let proven = proof.verify(&the_wallet(&node).config).unwrap();
    assert_eq!(proven.accused, seat(2));
}

/// Two members that each seal a package that does not open to the other
/// are both accused, and the run's error carries both proofs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_relay_proves_every_member_accused_in_part_3() {
    let modes = [(1, Mode::DkgUnopenable), (2, Mode::DkgUnopenable)];
    let cluster = start(3, 2, &modes, keep).await;
    let err = failed_dkg(&cluster, 15).await;
    let node = cluster.node(seat(3));
    let proofs = err.proofs();
    let mut accused: Vec<Seat> = proofs.iter().map(|(s, _)| *s).collect();
    accused.sort_unstable();
    assert_eq!(accused, [seat(1), seat(2)], "{err}");
    for (member, proof) in proofs {
        let proven = proof.verify(&the_wallet(&node).config).unwrap();
        assert_eq!(proven.accused, member);
    }
}

/// A member that seals a package that does not open to member 1 and
/// refuses its own part 3 at once, as not in the phase, cannot suppress
/// the proof: the relay waits for every member's part-3 answer, and
/// member 1's accusation, arriving later, wins over the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_relay_proves_a_member_that_refuses_its_own_part_3_first() {
    let modes = [
        (1, Mode::DkgFinishLatched),
        (2, Mode::DkgUnopenableNotInPhase),
    ];
    let cluster = start(3, 2, &modes, keep).await;
    let err = failed_dkg(&cluster, 13).await;
    let Some((member, proof)) = err.proof() else {
        panic!("no proof: {err:?}")
    };
    assert_eq!(member, seat(2), "{err}");
    let node = cluster.node(seat(3));
    assert_eq!(
        proof.verify(&the_wallet(&node).config).unwrap().accused,
        seat(2)
    );
    assert!(
        matches!(&err, DkgError::Accused { accuser, .. } if *accuser == seat(1)),
        "{err}"
    );
}

/// The accuser's part-3 reply lost once: the relay asks again with the
/// same bytes, and the member answers with the same accusation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_relay_proves_a_member_when_the_accusers_reply_is_lost_once() {
    let modes = [(1, Mode::DkgFinishLostOnce), (2, Mode::DkgUnopenable)];
    let cluster = start(3, 2, &modes, keep).await;
    let err = failed_dkg(&cluster, 14).await;
    assert!(
        matches!(&err, DkgError::Accused { accuser, accused, .. } if (*accuser, *accused) == (seat(1), seat(2))),
        "{err:?}"
    );
}

/// A member whose accusation does not make a verifying proof (the key it
/// reveals is not its session's) is reported as the refusal it is: no
/// proof, and the liar, not the member it names, is the one named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_relay_writes_no_proof_from_a_false_accusation() {
    let cluster = start(3, 2, &[(3, Mode::DkgFalseAccusation)], keep).await;
    let err = failed_dkg(&cluster, 12).await;
    assert!(err.proof().is_none(), "{err}");
    assert!(
        matches!(&err, DkgError::Member { phase, seat: s, .. } if phase.name == "finish" && *s == seat(3)),
        "{err}"
    );
}

/// A member that answers with a message its identity key did not sign is
/// named by the relay (every member would refuse the message too, but could
/// not say whether the member or the relay altered it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_relay_names_a_member_whose_message_is_not_signed_by_it() {
    let cluster = start(3, 2, &[(3, Mode::DkgBadSignature)], keep).await;
    let err = failed_dkg(&cluster, 6).await;
    assert!(
        matches!(&err, DkgError::Protocol { seat: s, .. } if *s == seat(3)),
        "{err}"
    );
}

/// A member whose kind-bound signature does not verify, or that answers
/// its start with a message it signed for another session, is named by
/// the relay before part 2 (where every member would refuse the message
/// without knowing who sent it), without a proof (it proves nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_relay_names_a_member_whose_round1_is_not_for_this_run() {
    for (mode, seed) in [(Mode::DkgBadKindSignature, 7), (Mode::DkgOtherSession, 31)] {
        let cluster = start(3, 2, &[(3, mode)], keep).await;
        let err = failed_dkg(&cluster, seed).await;
        assert!(
            matches!(&err, DkgError::Protocol { seat: s, phase, .. } if *s == seat(3) && phase.name == "start"),
            "seed {seed}: {err}"
        );
        assert!(err.round1_proof().is_none() && err.proofs().is_empty());
    }
}

/// A member of an earlier version, sending no kind-bound signature, takes
/// part in a DKG with members that do: the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dkg_with_a_member_of_an_earlier_version_completes() {
    let cluster = start(3, 2, &[(2, Mode::DkgEarlierVersion)], keep).await;
    let outcome = dkg_from(&cluster, 1, 8).await;
    assert!(outcome.is_ok(), "{:?}", outcome.err());
}

/// The failure of a DKG that member 1 relays with its
/// `require_round1_kind_signature` set to `required`, drawn from `seed`.
async fn failed_dkg_requiring(cluster: &Cluster, required: bool, seed: u64) -> DkgError {
    let mut node = cluster.node(seat(1));
    node.limits.require_round1_kind_signature = required;
    dkg_relayed_by(&node, seed).await.unwrap_err()
}

/// With `require_round1_kind_signature` on at the relay (every member
/// upgraded), a member that answers without a kind-bound signature is
/// named before part 2: it answered the relay directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dkg_relay_requiring_the_kind_signature_names_a_member_without_it() {
    let cluster = start(3, 2, &[(2, Mode::DkgEarlierVersion)], keep).await;
    let err = failed_dkg_requiring(&cluster, true, 9).await;
    assert!(
        matches!(&err, DkgError::Protocol { seat: s, phase, .. } if *s == seat(2) && phase.name == "start"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("kind-bound signature this relay requires"),
        "{err}"
    );
}

/// Members requiring the kind-bound signature while the relay does not
/// (mid-rollout): a member answering without one makes the others refuse
/// part 2, and the relay names that member, whose answer it received
/// directly, not a refusing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dkg_relay_not_requiring_the_kind_signature_names_the_unbound_sender_on_refusal() {
    let cluster = start_with(3, 2, &[(3, Mode::DkgEarlierVersion)], keep, |s| {
        s.limits.require_round1_kind_signature = true;
    })
    .await;
    let err = failed_dkg_requiring(&cluster, false, 10).await;
    assert!(
        matches!(&err, DkgError::Protocol { seat: s, phase, .. } if *s == seat(3) && phase.name == "round 2"),
        "{err}"
    );
    assert!(err.to_string().contains("the members require"), "{err}");
}

/// A member that never answers stalls `run_dkg` for as long as its own
/// server allows (up to ten minutes here, forever for a malicious server):
/// the relay has no deadline of its own. It must fail, naming the silent
/// member, in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_relay_does_not_wait_forever_for_a_silent_member() {
    let cluster = start(3, 2, &[(3, Mode::DkgSilent)], |d| {
        d.limits.request_timeout = Duration::from_secs(600);
    })
    .await;
    // The relay waits no longer than it is told to, whatever the member's
    // server allows.
    let peers = Arc::new(
        Peers::new(&cluster.node(seat(1)))
            .unwrap()
            .with_patience(Duration::from_secs(2)),
    );
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let outcome = tokio::time::timeout(
        Duration::from_secs(45),
        run_dkg(
            &peers,
            wallet,
            &mut ChaCha20Rng::seed_from_u64(2),
            &crate::Silent,
        ),
    )
    .await;
    let err = outcome
        .expect("run_dkg still waiting on a silent member after 45 s")
        .unwrap_err();
    assert!(
        matches!(&err, DkgError::Member { seat: s, .. } if *s == seat(3)),
        "{err}"
    );
}

/// `thresig init` needs the cluster CA key, so every member provisioned
/// with it can mint a certificate naming any other seat. The daemon maps a
/// peer to a roster identity by the certificate's seat name alone (the
/// roster pins no TLS identity), so member 3 is served as member 2: it can
/// spend member 2's per-coordinator nonce quota, read what member 2 may
/// read and coordinate as member 2. The roster must pin each seat's TLS key
/// (DESIGN.md §4: roster of seat, identity key, TLS identity).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_holding_the_ca_key_cannot_act_as_another_seat() {
    let cluster = start(3, 2, &[], keep).await;
    let root = cluster.dir.path().join("c");
    let ca = ClusterCa::load(
        ClusterName::new("test".to_owned()).unwrap(),
        &root.join("ca/ca.pem"),
        &root.join("ca/ca.key"),
    )
    .unwrap();
    // Member 3's operator mints "seat 2" for itself.
    let forged = ca
        .issue_member(
            seat(2),
            Validity::starting(SystemTime::now(), Duration::from_secs(3600)),
        )
        .unwrap();
    let tls_dir = cluster.dir.path().join("forged");
    std::fs::create_dir(&tls_dir).unwrap();
    forged
        .write(&tls_dir.join("cert.pem"), &tls_dir.join("key.pem"))
        .unwrap();
    std::fs::copy(root.join("ca/ca.pem"), tls_dir.join("ca.pem")).unwrap();
    let paths = TlsPaths::new(
        tls_dir.join("ca.pem"),
        tls_dir.join("cert.pem"),
        tls_dir.join("key.pem"),
    );
    let tls = ClientTls::load(&paths, ClusterName::new("test".to_owned()).unwrap()).unwrap();
    let endpoint = cluster.node(seat(1)).members[&seat(1)].endpoint;
    let client = SignerClient::connect(&tls, endpoint, seat(1))
        .await
        .unwrap();
    // Any request shows it; `status` needs no active wallet.
    let as_seat_2 = client.status().await;
    assert!(
        as_seat_2.is_err(),
        "member 1 served a forged seat-2 certificate as member 2: {as_seat_2:?}"
    );
}

/// `init_member` checks only `signer.toml`, `store` and `kek` for prior
/// existence and then writes into whatever `tls` already is: a `tls`
/// symlink planted in the member directory receives the member's TLS
/// private key.
#[test]
fn init_member_does_not_write_the_tls_key_through_a_planted_symlink() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("member-1");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("tls")).unwrap();
    let ca = ClusterCa::generate(
        ClusterName::new("test".to_owned()).unwrap(),
        Validity::starting(SystemTime::now(), Duration::from_secs(3600)),
    )
    .unwrap();
    let result = provision::init_member(
        &dir,
        seat(1),
        &ca,
        SystemTime::now(),
        &mut ChaCha20Rng::seed_from_u64(3),
    );
    assert!(
        !elsewhere.join("signer.key").exists(),
        "the TLS key was written through the symlink (init returned {:?})",
        result.map(|m| m.seat)
    );
}

/// An existing member directory keeps its (possibly loose) mode: `init`
/// into a directory made world-readable beforehand leaves the store and
/// TLS directory listing readable by others.
#[test]
fn init_member_tightens_a_preexisting_member_directory() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("member-1");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ca = ClusterCa::generate(
        ClusterName::new("test".to_owned()).unwrap(),
        Validity::starting(SystemTime::now(), Duration::from_secs(3600)),
    )
    .unwrap();
    provision::init_member(
        &dir,
        seat(1),
        &ca,
        SystemTime::now(),
        &mut ChaCha20Rng::seed_from_u64(4),
    )
    .unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "member directory left at {mode:o}");
}

/// A PSBT the wallet's policy forbids is refused (`policy_denied`,
/// terminal) by every signer, which excludes them all; the run then idles
/// until its deadline and reports "the deadline passed", which
/// [`crate::SignError::recovery`] calls retryable: a caller that
/// retries retryable errors re-runs a spend that can never be signed,
/// forever. A run in which fewer than t members can still answer must end
/// at once with a terminal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spend_every_signer_refuses_by_policy_is_not_reported_retryable() {
    let cluster = start(3, 2, &[], keep).await;
    // An external destination: the provisioned policy allows none.
    let outside = bitcoin::ScriptBuf::new_p2wpkh(
        &<bitcoin::WPubkeyHash as bitcoin::hashes::Hash>::from_byte_array([9; 20]),
    );
    let err = dkg_and_sign(&cluster, 5, |_| outside).await.unwrap_err();
    assert_eq!(
        err.recovery(),
        Recovery::Terminal,
        "reported retryable: {err}"
    );
}

/// Runs the wallet's DKG (seeded with `seed`), then signs, with member 1
/// coordinating, a PSBT paying the script `destination` gives for the
/// wallet's spend identity; request timeout 2 s, deadline 6 s.
async fn dkg_and_sign(
    cluster: &Cluster,
    seed: u64,
    destination: impl FnOnce(&thresig_tx::TaprootWallet) -> bitcoin::ScriptBuf,
) -> Result<crate::SignOutcome, crate::SignError> {
    dkg_and_sign_first(cluster, seed, destination, &[])
        .await
        .map(|(outcome, _)| outcome)
}

/// [`dkg_and_sign`] with the answers of the members `first` handled first
/// (so they are in the first session), also giving the wallet's key
/// record and epoch.
async fn dkg_and_sign_first(
    cluster: &Cluster,
    seed: u64,
    destination: impl FnOnce(&thresig_tx::TaprootWallet) -> bitcoin::ScriptBuf,
    first: &[u16],
) -> Result<(crate::SignOutcome, crate::OwnWallet), crate::SignError> {
    let options = crate::SignOptions {
        answer_first: first.iter().copied().map(seat).collect(),
        ..crate::SignOptions::default()
    };
    dkg_and_sign_with(cluster, seed, destination, options).await
}

/// Runs the DKG from member 1, then signs as [`dkg_and_sign_first`] does
/// with `options` (its timeouts replaced by the tests' short ones).
async fn dkg_and_sign_with(
    cluster: &Cluster,
    seed: u64,
    destination: impl FnOnce(&thresig_tx::TaprootWallet) -> bitcoin::ScriptBuf,
    options: crate::SignOptions,
) -> Result<(crate::SignOutcome, crate::OwnWallet), crate::SignError> {
    let peers = cluster.peers(seat(1));
    let node = cluster.node(seat(1));
    let wallet_id = WalletId::new(WALLET.to_owned()).unwrap();
    let wallet = node.wallet(&wallet_id).unwrap();
    run_dkg(
        &peers,
        wallet,
        &mut ChaCha20Rng::seed_from_u64(seed),
        &crate::Silent,
    )
    .await
    .unwrap();
    let crate::OwnWallet {
        key, epoch, spend, ..
    } = crate::own_wallet(&peers, &node, &wallet_id).await.unwrap();
    let psbt = spend_paying(&spend, destination(&spend));
    let options = crate::SignOptions {
        request_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(6),
        ..options
    };
    let outcome = crate::sign(&peers, wallet, &key, epoch, &psbt, &options).await?;
    Ok((outcome, crate::OwnWallet { key, epoch, spend }))
}

/// An answer whose shares were changed after the member signed it (what a
/// coordinator that wants to frame an honest member would do) is not the
/// member's: the driver treats it as missing, never blames the member and
/// keeps no proof, and signs without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_whose_identity_signature_does_not_verify_blames_no_member() {
    let cluster = start(3, 2, &[(2, Mode::Round2Forged)], keep).await;
    let (outcome, _) = dkg_and_sign_first(&cluster, 31, |s| s.script_pubkey().clone(), &[2])
        .await
        .unwrap();
    assert!(outcome.culprits.is_empty(), "{:?}", outcome.culprits);
    assert!(outcome.proofs.is_empty());
    assert_eq!(outcome.unresponsive, vec![seat(2)]);
    assert_eq!(outcome.signers, vec![seat(1), seat(3)]);
}

/// Members that answer without the identity signature (older than the
/// coordinator, in a rolling upgrade done coordinator first) fail the run
/// with that cause named, not as silent members that merely timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_that_unsigned_answers_stop_names_the_members_to_upgrade() {
    let modes = [(2, Mode::Round2Unsigned), (3, Mode::Round2Unsigned)];
    let cluster = start(3, 2, &modes, keep).await;
    let err = dkg_and_sign_first(&cluster, 33, |s| s.script_pubkey().clone(), &[])
        .await
        .unwrap_err();
    let crate::SignError::Failed {
        reason, culprits, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert!(culprits.is_empty(), "{culprits:?}");
    assert!(
        reason.contains("members 2, 3 answered without a valid identity signature"),
        "{reason}"
    );
    assert!(reason.contains("upgrade"), "{reason}");
}

/// A member that signs invalid shares is a culprit, and the driver keeps a
/// proof against it that verifies with the roster alone, and carries the
/// wallet key record the coordinator checked the shares against.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_signs_invalid_shares_leaves_a_verifying_proof() {
    let cluster = start(3, 2, &[(2, Mode::Round2SignedInvalid)], keep).await;
    let (outcome, own) = dkg_and_sign_first(&cluster, 32, |s| s.script_pubkey().clone(), &[2])
        .await
        .unwrap();
    assert_eq!(outcome.culprits, vec![seat(2)]);
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let proof = &outcome.proofs[&seat(2)];
    let fault = proof.verify(&wallet.config).unwrap();
    assert_eq!(proof.wallet_key.0, own.key.to_bytes().unwrap());
    assert_eq!((fault.seat, fault.input), (seat(2), 0));
    // The run's scores: the culprit's invalid share, nothing against the
    // members that signed.
    let observed = &outcome.observed;
    assert_eq!(
        observed.faults.get(&seat(2)),
        Some(&std::collections::BTreeSet::from([
            crate::scores::Fault::InvalidShare
        ]))
    );
    for member in &outcome.signers {
        assert!(!observed.faults.contains_key(member), "{observed:?}");
        assert!(observed.signed.contains(member), "{observed:?}");
    }
}

/// A quarantined member is left out while the others make the signature:
/// it gets no request at all, so its score cannot move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quarantined_member_is_not_asked_while_the_others_sign() {
    let cluster = start(3, 2, &[], keep).await;
    let options = crate::SignOptions {
        deferred: [seat(3)].into(),
        ..crate::SignOptions::default()
    };
    let (outcome, _) = dkg_and_sign_with(&cluster, 34, |s| s.script_pubkey().clone(), options)
        .await
        .unwrap();
    assert_eq!(outcome.signers, vec![seat(1), seat(2)]);
    assert_eq!(outcome.observed.asked, [seat(1), seat(2)].into());
    assert!(outcome.observed.faults.is_empty(), "{:?}", outcome.observed);
}

/// Member 2's score after `runs` signings of a 2-of-3 wallet in which it
/// is `mode` and answers round 1 first (so it is put into the first
/// session), each run's scores applied; member 2 signs none of them.
async fn score_of_member_2_after(
    mode: Mode,
    seed: u64,
    request_timeout: Duration,
    runs: usize,
) -> crate::scores::Score {
    use crate::scores::{Policy, Scores};
    let cluster = start(3, 2, &[(2, mode)], keep).await;
    let policy = Policy::default();
    let mut scores = Scores::new();
    let options = || crate::SignOptions {
        answer_first: [seat(2)].into(),
        request_timeout,
        deadline: 3 * request_timeout,
        ..crate::SignOptions::default()
    };
    let (first, own) = dkg_and_sign_with(&cluster, seed, |s| s.script_pubkey().clone(), options())
        .await
        .unwrap();
    let mut outcomes = vec![first];
    let peers = cluster.peers(seat(1));
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let psbt = spend_paying(&own.spend, own.spend.script_pubkey().clone());
    for _ in 1..runs {
        let outcome = crate::sign(&peers, wallet, &own.key, own.epoch, &psbt, &options())
            .await
            .unwrap();
        outcomes.push(outcome);
    }
    for outcome in &outcomes {
        assert!(!outcome.signers.contains(&seat(2)), "{outcome:?}");
        outcome
            .observed
            .apply(&mut scores, SystemTime::UNIX_EPOCH, &policy);
    }
    scores.get(&seat(2)).cloned().unwrap_or_default()
}

/// A member whose own policy refuses a payment does its job: refusals,
/// however many, never quarantine it (else a stricter member, or a
/// requester sending three forbidden payments, would take it out of
/// every wallet's signing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_refusing_by_policy_is_never_quarantined() {
    let policy = crate::scores::Policy::default();
    let runs = usize::try_from(policy.threshold).unwrap() + 1;
    let score =
        score_of_member_2_after(Mode::Round2PolicyDenied, 40, Duration::from_secs(2), runs).await;
    assert!(
        !score.is_quarantined(SystemTime::UNIX_EPOCH, &policy),
        "quarantined for its policy: {score:?}"
    );
    assert_eq!(score.points, 0, "{score:?}");
}

/// A member that holds every round 2 it is asked for most of the request
/// timeout and then refuses makes each run wait that long without ever
/// timing out: it scores a point for each such slow answer and is
/// quarantined, where a fast refusal scores none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_refusing_slowly_is_quarantined() {
    let score = score_of_member_2_after(Mode::Round2SlowRefusal, 41, SLOW_TIMEOUT, 10).await;
    let policy = crate::scores::Policy::default();
    assert!(
        score.is_quarantined(SystemTime::UNIX_EPOCH, &policy),
        "not quarantined for holding every run up: {score:?}"
    );
}

/// A member that is down refuses the connection at once: the coordinator
/// hears of it then, not at the request's timeout, so a quarantined member
/// is called in at once. The request timeout here is the whole deadline:
/// a run that waited for it would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_is_down_calls_a_quarantined_one_in_at_once() {
    let cluster = start(3, 2, &[], keep).await;
    let peers = cluster.peers(seat(1));
    let node = cluster.node(seat(1));
    let wallet_id = WalletId::new(WALLET.to_owned()).unwrap();
    dkg_from(&cluster, 1, 50).await.unwrap();
    let own = crate::own_wallet(&peers, &node, &wallet_id).await.unwrap();
    // Member 2's endpoint now leads nowhere: every connection is refused.
    let mut down = cluster.node(seat(1));
    down.members.get_mut(&seat(2)).unwrap().endpoint = free_loopback_ports(1).unwrap()[0].0;
    let peers = Arc::new(Peers::new(&down).unwrap());
    let psbt = spend_paying(&own.spend, own.spend.script_pubkey().clone());
    let options = crate::SignOptions {
        deferred: [seat(3)].into(),
        request_timeout: Duration::from_secs(20),
        deadline: Duration::from_secs(20),
        ..crate::SignOptions::default()
    };
    let wallet = down.wallet(&wallet_id).unwrap();
    let outcome = crate::sign(&peers, wallet, &own.key, own.epoch, &psbt, &options)
        .await
        .unwrap();
    assert_eq!(outcome.signers, vec![seat(1), seat(3)]);
    assert_eq!(
        outcome.observed.faults.get(&seat(2)),
        Some(&std::collections::BTreeSet::from([
            crate::scores::Fault::Timeout
        ])),
        "{:?}",
        outcome.observed
    );
}

/// A member that answers round 1 but is not needed in the session earns
/// no good run: a member that stalls in round 2 answers round 1 as promptly,
/// so that answer must not wear its points down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answering_round_1_alone_earns_no_good_run() {
    use crate::scores::{Fault, Policy, Score, Scores};
    let cluster = start(3, 2, &[], keep).await;
    let options = crate::SignOptions {
        answer_first: [seat(1), seat(2)].into(),
        ..crate::SignOptions::default()
    };
    let (outcome, _) = dkg_and_sign_with(&cluster, 36, |s| s.script_pubkey().clone(), options)
        .await
        .unwrap();
    assert_eq!(outcome.signers, vec![seat(1), seat(2)]);
    let observed = &outcome.observed;
    assert!(observed.asked.contains(&seat(3)), "{observed:?}");
    let policy = Policy::default();
    let mut faulty = Score::default();
    faulty.record_fault(SystemTime::UNIX_EPOCH, Fault::Timeout, &policy);
    let mut scores: Scores = [(seat(1), faulty.clone()), (seat(3), faulty.clone())].into();
    observed.apply(&mut scores, SystemTime::UNIX_EPOCH, &policy);
    assert_eq!(scores[&seat(3)], faulty, "member 3 only answered round 1");
    assert_eq!(scores[&seat(1)].good_streak, 1, "member 1 signed");
}

/// When a member the session counted on turns out a culprit, the
/// quarantined member is asked and the wallet signs: quarantine never makes
/// a signature impossible.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quarantined_member_is_asked_when_the_others_are_too_few() {
    let cluster = start(3, 2, &[(2, Mode::Round2SignedInvalid)], keep).await;
    let options = crate::SignOptions {
        answer_first: [seat(2)].into(),
        deferred: [seat(3)].into(),
        ..crate::SignOptions::default()
    };
    let (outcome, _) = dkg_and_sign_with(&cluster, 35, |s| s.script_pubkey().clone(), options)
        .await
        .unwrap();
    assert_eq!(outcome.culprits, vec![seat(2)]);
    assert_eq!(outcome.signers, vec![seat(1), seat(3)]);
    assert_eq!(outcome.observed.asked, [seat(1), seat(2), seat(3)].into());
}

/// A signer at its nonce capacity answers round 2 with valid shares and no
/// fresh commitments. The driver must hand those shares to the coordinator
/// and the coordinator keep them: with t = n = 2 there is no one to replace
/// that signer, so dropping its shares would leave the run to its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shares_without_fresh_commitments_still_make_the_signature() {
    let cluster = start(2, 2, &[(2, Mode::NoFreshCommitments)], keep).await;
    // Back to the wallet itself: no external destination.
    let outcome = dkg_and_sign(&cluster, 6, |spend| spend.script_pubkey().clone())
        .await
        .unwrap();
    assert_eq!(outcome.sessions, 1);
    assert_eq!(outcome.signers, vec![seat(1), seat(2)]);
    assert!(outcome.culprits.is_empty());
}

/// A spend of one synthetic output of `spend` paying the wallet itself
/// (allowed without any destination), its outpoint made of `byte`.
fn self_payment(spend: &thresig_tx::TaprootWallet, byte: u8) -> thresig_tx::WalletPsbt {
    spend_of(spend, byte, spend.script_pubkey().clone())
}

/// A PSBT spending one 10,000 sat output of `spend` (its outpoint made of
/// `byte`) and paying 9,000 sat to `destination`.
fn spend_of(
    spend: &thresig_tx::TaprootWallet,
    byte: u8,
    destination: bitcoin::ScriptBuf,
) -> thresig_tx::WalletPsbt {
    let input = thresig_tx::SpendInput {
        outpoint: bitcoin::OutPoint::new(bitcoin::hashes::Hash::from_byte_array([byte; 32]), 0),
        value: bitcoin::Amount::from_sat(10_000),
        script_pubkey: spend.script_pubkey().clone(),
    };
    let payment = thresig_tx::Payment {
        destination: thresig_tx::Destination::Script(destination),
        value: bitcoin::Amount::from_sat(9_000),
    };
    thresig_tx::build_psbt(
        spend,
        &[input],
        &[payment],
        bitcoin::absolute::LockTime::ZERO,
    )
    .unwrap()
}

/// Round 2 carries the wallet epoch, the same at every member, never a
/// member's store epoch (moved by its own key rotations): with member 1's
/// DEK rotated before the DKG and member 3's after it, each member
/// coordinates a spend that every other member answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_whose_stores_rotated_at_different_times_sign_for_every_coordinator() {
    let cluster = start(3, 2, &[], keep).await;
    let wallet_id = WalletId::new(WALLET.to_owned()).unwrap();
    cluster.stores[0].rotate_dek().unwrap();
    dkg_from(&cluster, 1, 11).await.unwrap();
    cluster.stores[2].rotate_dek().unwrap();
    for coordinator in 1..=3 {
        let peers = cluster.peers(seat(coordinator));
        let node = cluster.node(seat(coordinator));
        let crate::OwnWallet {
            key, epoch, spend, ..
        } = crate::own_wallet(&peers, &node, &wallet_id).await.unwrap();
        let psbt = self_payment(&spend, u8::try_from(coordinator).unwrap());
        let wallet = node.wallet(&wallet_id).unwrap();
        let outcome = crate::sign(
            &peers,
            wallet,
            &key,
            epoch,
            &psbt,
            &crate::SignOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("member {coordinator} coordinating: {e}"));
        assert_eq!(outcome.signatures.len(), 1);
        assert!(
            outcome.unresponsive.is_empty(),
            "member {coordinator} coordinating: {:?} refused",
            outcome.unresponsive
        );
        assert_eq!(
            epoch,
            thresig_engine::WalletEpoch(0),
            "member {coordinator}"
        );
    }
}

/// A part-2 reply lost once in transport is asked for again with the same
/// bytes, and the member answers it with the same sealed messages: the DKG
/// completes instead of failing and blaming an honest member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dkg_whose_part2_reply_to_one_member_is_lost_once_completes() {
    let cluster = start(3, 2, &[(2, Mode::DkgRound2LostOnce)], keep).await;
    let outcome = dkg_from(&cluster, 1, 21).await;
    assert!(outcome.is_ok(), "{:?}", outcome.err());
}

/// A part-2 reply that never reaches the relay in time (the member ran
/// it, but the answer is lost on a live connection, so the relay's own
/// patience runs out) is asked for again with the same bytes, as a signing
/// round 2 is: the DKG completes instead of blaming the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dkg_whose_part2_reply_outlasts_the_relays_patience_once_completes() {
    let cluster = start(3, 2, &[(2, Mode::DkgRound2LateOnce)], keep).await;
    let peers = Arc::new(
        Peers::new(&cluster.node(seat(1)))
            .unwrap()
            .with_patience(LATE - Duration::from_secs(1)),
    );
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let outcome = run_dkg(
        &peers,
        wallet,
        &mut ChaCha20Rng::seed_from_u64(26),
        &crate::Silent,
    )
    .await;
    assert!(outcome.is_ok(), "{:?}", outcome.err());
}

/// A second member's DKG while another runs is refused by every member
/// (`dkg_busy`), and the relay reports a coordination fault: no member is
/// blamed, and the running DKG is not reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_members_dkg_start_during_a_dkg_is_refused_and_blames_no_member() {
    let cluster = start(3, 2, &[], keep).await;
    let wallet_id = WalletId::new(WALLET.to_owned()).unwrap();
    let node = cluster.node(seat(1));
    let wallet = node.wallet(&wallet_id).unwrap();
    // Member 1's DKG, in part 1 at every member.
    let peers = cluster.peers(seat(1));
    let running = DkgProposal::new(
        DkgSessionId([7; 32]),
        wallet_id.clone(),
        wallet.config.threshold,
        wallet.config.roster.clone(),
    );
    let mut first = Vec::new();
    for member in 1..=3 {
        let client = peers.client(seat(member)).await.unwrap();
        first.push(client.dkg_start(running.clone()).await.unwrap());
    }
    let err = dkg_from(&cluster, 2, 22).await.unwrap_err();
    assert!(
        matches!(err, DkgError::Coordination { .. }),
        "a member was blamed: {err}"
    );
    assert!(
        err.to_string().contains(&hex::encode([7; 32])),
        "the refusal does not name the running session: {err}"
    );
    // Nor can member 2 end member 1's session at any member.
    let intruder = cluster.peers(seat(2));
    for member in 1..=3 {
        let client = intruder.client(seat(member)).await.unwrap();
        let refused = client
            .dkg_cancel(wallet_id.clone(), running.session)
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("dkg_busy"),
            "member {member}: {refused}"
        );
    }
    // Member 1's session is untouched: its start is answered as before.
    for member in 1..=3 {
        let client = peers.client(seat(member)).await.unwrap();
        let again = client.dkg_start(running.clone()).await.unwrap();
        assert_eq!(again, first[usize::from(member) - 1], "member {member}");
    }
}

/// A round-2 reply lost once in transport is asked for again with the same
/// bytes within the run, and the signer answers it from its pending shares
/// or marker: with t = n = 2 the seat cannot be replaced, so losing it for
/// the run would leave no signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round2_reply_lost_once_still_signs_with_the_same_signers() {
    let cluster = start(2, 2, &[(2, Mode::Round2LostOnce)], keep).await;
    let outcome = dkg_and_sign(&cluster, 23, |spend| spend.script_pubkey().clone())
        .await
        .unwrap();
    assert_eq!(outcome.sessions, 1);
    assert_eq!(outcome.signers, vec![seat(1), seat(2)]);
    assert!(
        outcome.unresponsive.is_empty(),
        "{:?}",
        outcome.unresponsive
    );
}

/// A member whose first round-2 answer counts as missing (here unsigned)
/// and whose policy then refuses the payment leaves a run that cannot pass:
/// the missing answer must not mark the member's refusal as one that may,
/// or the caller would be told to retry a payment the member will never
/// sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_denial_after_a_missing_answer_is_terminal() {
    let cluster = start(2, 2, &[(2, Mode::Round2UnsignedThenPolicyDenied)], keep).await;
    let err = dkg_and_sign(&cluster, 25, |spend| spend.script_pubkey().clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("policy_denied"), "{err}");
    assert_eq!(err.recovery(), Recovery::Terminal, "{err}");
}

/// A round-1 call that fails after its request timed out and was sent
/// again answers for the first request, not the second: the coordinator
/// must not take it as the re-ask's refusal (it would drop the re-ask's
/// commitments when they come and ask a third time, a timeout later).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_round1_call_is_not_taken_for_its_re_ask() {
    let cluster = start(2, 2, &[(2, Mode::Round1Slow)], keep).await;
    let node = cluster.node(seat(1));
    let wallet_id = WalletId::new(WALLET.to_owned()).unwrap();
    let peers = cluster.peers(seat(1));
    dkg_from(&cluster, 1, 51).await.unwrap();
    let own = crate::own_wallet(&peers, &node, &wallet_id).await.unwrap();
    let peers = Arc::new(Peers::new(&node).unwrap().with_patience(ROUND1_PATIENCE));
    let psbt = spend_paying(&own.spend, own.spend.script_pubkey().clone());
    let options = crate::SignOptions {
        request_timeout: ROUND1_TIMEOUT,
        deadline: 5 * ROUND1_TIMEOUT,
        ..crate::SignOptions::default()
    };
    let wallet = node.wallet(&wallet_id).unwrap();
    let outcome = crate::sign(&peers, wallet, &own.key, own.epoch, &psbt, &options)
        .await
        .unwrap();
    assert_eq!(outcome.signers, vec![seat(1), seat(2)]);
    assert_eq!(
        cluster.round1s.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "member 2 was asked for commitments a third time"
    );
}

/// A relay whose run fails tells every member to drop the run's session:
/// otherwise the members that took part hold the wallet (`dkg_busy`) until
/// the session expires, and the next DKG is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_dkg_leaves_no_member_holding_its_session() {
    let cluster = start(3, 2, &[(3, Mode::DkgStartRefusedOnce)], keep).await;
    let err = failed_dkg(&cluster, 24).await;
    assert!(
        matches!(&err, DkgError::Member { seat: s, .. } if *s == seat(3)),
        "{err}"
    );
    let again = dkg_from(&cluster, 1, 25).await;
    assert!(again.is_ok(), "{:?}", again.err());
}

/// The confirmation phase delivers all n confirmations to each member; a
/// member admits only `max_requests_per_seat` requests of one coordinator
/// at a time and refuses the rest as overloaded. Sent all at once, 9
/// confirmations to members that admit 4 were refused on every attempt and
/// the DKG failed (as `thresig load` did at (11, 15) with the default 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dkg_of_more_members_than_a_member_admits_at_once_completes() {
    let cluster = start(9, 5, &[], |d| d.limits.max_requests_per_seat = 4).await;
    dkg_from(&cluster, 1, 17).await.unwrap();
}

/// A confirmation a member refuses as overloaded (its per-seat request
/// cap) is sent again: the refresh completes instead of failing after
/// other members switched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_whose_confirmation_is_refused_as_overloaded_once_completes() {
    let cluster = start(3, 2, &[(2, Mode::ConfirmOverloadedOnce)], keep).await;
    // The DKG's own confirmations meet the refusal first: a DKG retries
    // it as well.
    dkg_from(&cluster, 1, 31).await.unwrap();
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let peers = cluster.peers(seat(1));
    let own = crate::own_wallet(&peers, &node, wallet.id()).await.unwrap();
    let outcome = crate::run_refresh(
        &peers,
        wallet,
        (own.epoch, &own.key.members()),
        DkgSessionId([0x31; 32]),
        &crate::Silent,
    )
    .await;
    assert!(outcome.is_ok(), "{:?}", outcome.err());
}

/// Runs the refresh `session` of the wallet's epoch `from` from member 1
/// through part 3 at every member, as a coordinator that dies right after.
async fn refresh_to_part3(cluster: &Cluster, session: DkgSessionId, from: u64) {
    let seats: Vec<Seat> = (1..=3).map(seat).collect();
    let mut inbox = refresh_to_part2(cluster, session, from, &seats).await;
    for s in &seats {
        part3_at(cluster, session, *s, &mut inbox).await.unwrap();
    }
}

/// Runs the refresh `session` of the wallet's epoch `from` from member 1
/// through part 2 at `seats` (every member): each member's part-3 inbox.
async fn refresh_to_part2(
    cluster: &Cluster,
    session: DkgSessionId,
    from: u64,
    seats: &[Seat],
) -> std::collections::BTreeMap<Seat, Vec<SignedDkgMessage>> {
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let peers = cluster.peers(seat(1));
    let proposal = DkgProposal::new(
        session,
        wallet.id().clone(),
        wallet.config.threshold,
        wallet.config.roster.clone(),
    )
    .with_kind(DkgKind::Refresh {
        from_epoch: WalletEpoch(from),
        removed: Vec::new(),
    });
    let mut round1 = Vec::new();
    for s in seats {
        let client = peers.client(*s).await.unwrap();
        round1.push(client.dkg_start(proposal.clone()).await.unwrap());
    }
    let mut inbox: std::collections::BTreeMap<Seat, Vec<SignedDkgMessage>> = Default::default();
    for s in seats {
        let others = round1.iter().filter(|m| m.sender != *s).cloned().collect();
        let client = peers.client(*s).await.unwrap();
        for m in client
            .dkg_round2(wallet.id().clone(), session, others)
            .await
            .unwrap()
        {
            if let DkgPayload::Round2 { to, .. } = &m.payload {
                inbox.entry(*to).or_default().push(m);
            }
        }
    }
    inbox
}

/// Member 1 sends part 3 of the refresh `session` to `to`, taken from
/// `inbox`.
async fn part3_at(
    cluster: &Cluster,
    session: DkgSessionId,
    to: Seat,
    inbox: &mut std::collections::BTreeMap<Seat, Vec<SignedDkgMessage>>,
) -> Result<SignedDkgMessage, thresig_daemon::Error> {
    let client = cluster.peers(seat(1)).client(to).await.unwrap();
    let mine = inbox.remove(&to).unwrap();
    client
        .dkg_finish(WalletId::new(WALLET.to_owned()).unwrap(), session, mine)
        .await
}

/// 3-of-5, all honest: part 3 reached member 1 only when `--abort` read
/// who released; it reaches members 3 and 4 (a slow coordinator) before
/// they are asked for their vetoes. Vetoes from 2 and 5 alone would make
/// the refresh unfinishable, so `--abort` stores none (those members still
/// run the session), and once part 3 reaches 2 and 5 as well, `--resume`
/// finishes the refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_racing_a_late_part_3_leaves_the_refresh_finishable() {
    let modes = [(3, Mode::Part3BeforeVeto), (4, Mode::Part3BeforeVeto)];
    let cluster = start(5, 3, &modes, keep).await;
    dkg_from(&cluster, 1, 51).await.unwrap();
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let peers = cluster.peers(seat(1));
    let session = DkgSessionId([0x51; 32]);
    let seats: Vec<Seat> = (1..=5).map(seat).collect();
    let mut inbox = refresh_to_part2(&cluster, session, 0, &seats).await;
    part3_at(&cluster, session, seat(1), &mut inbox)
        .await
        .unwrap();
    let wallet_id = wallet.id().clone();
    for s in [3, 4] {
        let round2 = inbox.remove(&seat(s)).unwrap();
        let part3 = Request::DkgFinish {
            wallet: wallet_id.clone(),
            session,
            round2,
        };
        cluster.late.lock().unwrap().insert(seat(s), part3);
    }
    let own = crate::own_wallet(&peers, &node, wallet.id()).await.unwrap();
    let aborted = crate::abort_refresh(
        &peers,
        wallet,
        (own.epoch, &own.key.members()),
        session,
        &crate::Silent,
    )
    .await;
    assert!(aborted.is_err(), "{:?}", aborted.ok());
    let held: Vec<(Seat, Request)> = std::mem::take(&mut *cluster.late.lock().unwrap())
        .into_iter()
        .collect();
    for (s, part3) in held {
        let Request::DkgFinish { round2, .. } = part3 else {
            unreachable!("only part 3 is held back")
        };
        inbox.insert(s, round2);
        part3_at(&cluster, session, s, &mut inbox).await.unwrap();
    }
    for s in [2, 5] {
        let finished = part3_at(&cluster, session, seat(s), &mut inbox).await;
        assert!(finished.is_ok(), "member {s}: {:?}", finished.err());
    }
    resumed_from_1(&cluster, session, 1).await;
}

/// A session id run again after two switches: its coordinator dies after
/// part 3. Member 1 (the lowest seat, asked first) answers `--resume` with
/// member 2's genuine confirmation of the session's first run, at epoch 0,
/// before its own: it is not this refresh's, so it accuses nobody and
/// `--resume` finishes the refresh with member 2's real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_ignores_an_older_runs_confirmation_replayed_by_a_member() {
    let cluster = start(3, 2, &[(1, Mode::ReplaysConfirmations)], keep).await;
    dkg_from(&cluster, 1, 41).await.unwrap();
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let peers = cluster.peers(seat(1));
    let reused = DkgSessionId([0x41; 32]);
    for session in [reused, DkgSessionId([0x42; 32])] {
        refreshed_from_1(&cluster, session).await;
        if session == reused {
            let second = peers.client(seat(2)).await.unwrap();
            let held = second
                .refresh_confirmations(wallet.id().clone(), reused)
                .await
                .unwrap();
            let old = held.into_iter().find(|m| m.sender == seat(2)).unwrap();
            cluster.planted.lock().unwrap().push(old);
        }
    }
    refresh_to_part3(&cluster, reused, 2).await;
    let own = crate::own_wallet(&peers, &node, wallet.id()).await.unwrap();
    assert_eq!(own.epoch, WalletEpoch(2));
    resumed_from_1(&cluster, reused, 3).await;
}

/// A vetoed session id runs again after one switch: the session's first
/// run (from epoch 0) reached part 3 at member 2 only (it released) and
/// was aborted on the vetoes of members 1 and 3 (member 2 discarded);
/// another refresh switched every member to epoch 1; then the session
/// runs again from epoch 1 and its coordinator dies after part 3. Member
/// 1, pending at epoch 1, runs `--resume` and answers it with member 2's
/// confirmation of the first run before its own: it starts from epoch 0,
/// not this refresh's, so it accuses nobody and `--resume` finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_ignores_a_vetoed_runs_confirmation_replayed_after_one_switch() {
    let cluster = start(3, 2, &[(1, Mode::ReplaysConfirmations)], keep).await;
    dkg_from(&cluster, 1, 61).await.unwrap();
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let peers = cluster.peers(seat(1));
    let reused = DkgSessionId([0x61; 32]);
    let seats: Vec<Seat> = (1..=3).map(seat).collect();
    let mut inbox = refresh_to_part2(&cluster, reused, 0, &seats).await;
    let old = part3_at(&cluster, reused, seat(2), &mut inbox)
        .await
        .unwrap();
    cluster.planted.lock().unwrap().push(old);
    let mut vetoes = Vec::new();
    for s in [1, 3] {
        let client = peers.client(seat(s)).await.unwrap();
        vetoes.push(
            client
                .refresh_abandon(wallet.id().clone(), reused)
                .await
                .unwrap(),
        );
    }
    let second = peers.client(seat(2)).await.unwrap();
    let discarded = second
        .refresh_discard(wallet.id().clone(), reused, vetoes)
        .await
        .unwrap();
    assert!(discarded, "member 2 discards on the vetoes of 1 and 3");
    refreshed_from_1(&cluster, DkgSessionId([0x62; 32])).await;
    refresh_to_part3(&cluster, reused, 1).await;
    let own = crate::own_wallet(&peers, &node, wallet.id()).await.unwrap();
    assert_eq!(own.epoch, WalletEpoch(1));
    resumed_from_1(&cluster, reused, 2).await;
}

/// `--resume` of `session` run from member 1 succeeds, and member 1 is
/// then at wallet epoch `epoch`.
async fn resumed_from_1(cluster: &Cluster, session: DkgSessionId, epoch: u64) {
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let peers = cluster.peers(seat(1));
    let own = crate::own_wallet(&peers, &node, wallet.id()).await.unwrap();
    let resumed = crate::resume_refresh(
        &peers,
        wallet,
        (seat(1), own.epoch, &own.key.members()),
        session,
        &crate::Silent,
    )
    .await;
    assert!(resumed.is_ok(), "{:?}", resumed.err());
    let own = crate::own_wallet(&peers, &node, wallet.id()).await.unwrap();
    assert_eq!(own.epoch, WalletEpoch(epoch));
}

/// A refresh `session` run from member 1 completes.
async fn refreshed_from_1(cluster: &Cluster, session: DkgSessionId) {
    let node = cluster.node(seat(1));
    let wallet = the_wallet(&node);
    let peers = cluster.peers(seat(1));
    let own = crate::own_wallet(&peers, &node, wallet.id()).await.unwrap();
    crate::run_refresh(
        &peers,
        wallet,
        (own.epoch, &own.key.members()),
        session,
        &crate::Silent,
    )
    .await
    .unwrap();
}

/// Issue 14 over the network: after a refresh the wallet signs under the
/// same output key, and a member answering with shares of its old share
/// (signed with its identity key, so a real member, not a forgery) is named
/// a culprit for invalid shares; members 1 and 2 make the signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_signing_with_its_pre_refresh_share_is_a_culprit() {
    use thresig_store::Store;
    let cluster = start(3, 2, &[(3, Mode::StaleShare)], keep).await;
    dkg_from(&cluster, 1, 71).await.unwrap();
    let node = cluster.node(seat(1));
    let wallet_id = WalletId::new(WALLET.to_owned()).unwrap();
    let wallet = node.wallet(&wallet_id).unwrap();
    let peers = cluster.peers(seat(1));
    let before = crate::own_wallet(&peers, &node, &wallet_id).await.unwrap();
    // Key epoch 1 holds wallet epoch 0's share.
    let old = cluster.stores[2]
        .key_package(&wallet_id, thresig_store::KeyEpoch(1))
        .unwrap()
        .unwrap();
    let share = thresig_crypto::KeyShare::from_bytes(&old).unwrap();
    refreshed_from_1(&cluster, DkgSessionId([0x71; 32])).await;
    let after = crate::own_wallet(&peers, &node, &wallet_id).await.unwrap();
    assert_eq!(after.epoch, WalletEpoch(1));
    let output_key = before.key.output_key();
    assert_eq!(after.key.output_key(), output_key);
    *cluster.stale.lock().unwrap() = Some(Stale {
        share,
        key: before.key,
        nonces: Vec::new(),
        rng: ChaCha20Rng::seed_from_u64(71),
    });
    let psbt = self_payment(&after.spend, 7);
    let options = crate::SignOptions {
        request_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(6),
        answer_first: [seat(3)].into(),
        ..crate::SignOptions::default()
    };
    let outcome = crate::sign(&peers, wallet, &after.key, after.epoch, &psbt, &options)
        .await
        .unwrap();
    assert_eq!(outcome.culprits, vec![seat(3)]);
    assert_eq!(outcome.signers, vec![seat(1), seat(2)]);
    let sighashes = psbt.wallet_sighashes().unwrap();
    assert_eq!(outcome.signatures.len(), sighashes.len());
    for (signature, sighash) in outcome.signatures.iter().zip(&sighashes) {
        let signature = thresig_crypto::Signature::from_bytes(signature).unwrap();
        let message = bitcoin::hashes::Hash::to_byte_array(sighash.sighash);
        thresig_crypto::verify(&output_key, &message, &signature).unwrap();
    }
    // The final transaction, as Bitcoin Core's interpreter runs it.
    let mut signed = psbt.clone();
    let inputs = signed.wallet_inputs().to_vec();
    for (input, signature) in inputs.into_iter().zip(&outcome.signatures) {
        signed.insert_signature(input, signature).unwrap();
    }
    let tx = signed.extract_transaction().unwrap();
    let prevout = bitcoin::TxOut {
        value: bitcoin::Amount::from_sat(10_000),
        script_pubkey: after.spend.script_pubkey().clone(),
    };
    thresig_consensus::verify_with_core(&tx, &[prevout]).unwrap();
}

/// Where the fifth member of [`abort_with_a_full_veto_cap_and_member_5`]
/// is when `--abort` runs.
#[derive(Clone, Copy)]
enum Fifth {
    /// Its server stopped: out of reach.
    Down,
    /// Still running the refresh session (its part 2 done, no part 3).
    Running,
}

/// 3-of-5: the refresh's part 3 reached member 1 only and its coordinator
/// died; members 2 to 4 dropped the session. Member 1 had used up its
/// share of member 2's veto slots on made-up sessions, so member 2 refuses
/// its veto for good (`capacity_exhausted`, terminal); members 3 and 4
/// veto, fewer than the threshold. Member 5 (`fifth`) never released, and
/// its veto, once it can be asked, would make three: `--abort` from member
/// 1 fails retryable, naming `names` (what member 5 is waited for as), and
/// says to run it again, whatever member 2 answered.
async fn abort_with_a_full_veto_cap_and_member_5(fifth: Fifth, seed: u8, names: &str) {
    let mut cluster = start(5, 3, &[], keep).await;
    dkg_from(&cluster, 1, u64::from(seed)).await.unwrap();
    let node = cluster.node(seat(1));
    let wallet_id = WalletId::new(WALLET.to_owned()).unwrap();
    let wallet = node.wallet(&wallet_id).unwrap();
    let peers = cluster.peers(seat(1));
    let second = peers.client(seat(2)).await.unwrap();
    let mut made_up = 0u8;
    let full = loop {
        made_up += 1;
        let asked = second
            .refresh_abandon(wallet_id.clone(), DkgSessionId([made_up; 32]))
            .await;
        if let Err(error) = asked {
            break error;
        }
    };
    assert!(full.to_string().contains("capacity_exhausted"), "{full}");
    let session = DkgSessionId([seed; 32]);
    let seats: Vec<Seat> = (1..=5).map(seat).collect();
    let mut inbox = refresh_to_part2(&cluster, session, 0, &seats).await;
    part3_at(&cluster, session, seat(1), &mut inbox)
        .await
        .unwrap();
    for s in 2..=4 {
        let client = peers.client(seat(s)).await.unwrap();
        client.dkg_cancel(wallet_id.clone(), session).await.unwrap();
    }
    if let Fifth::Down = fifth {
        let _ = cluster.stops.remove(4).send(());
    }
    let own = crate::own_wallet(&peers, &node, &wallet_id).await.unwrap();
    let failed = crate::abort_refresh(
        &peers,
        wallet,
        (own.epoch, &own.key.members()),
        session,
        &crate::Silent,
    )
    .await
    .unwrap_err();
    assert_eq!(failed.recovery(), Recovery::Retryable, "{failed}");
    let said = failed.to_string();
    assert!(
        said.contains(names) && said.contains("run --abort again"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_refused_for_good_by_one_member_is_retryable_while_another_is_out_of_reach() {
    abort_with_a_full_veto_cap_and_member_5(Fifth::Down, 0x81, "member 5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_refused_for_good_by_one_member_is_retryable_while_another_runs_the_session() {
    abort_with_a_full_veto_cap_and_member_5(Fifth::Running, 0x82, "[Seat(5)]").await;
}

/// A cluster of `n` members (t = 2, `modes`) whose wallet went through
/// its DKG and one signing from member 1 with a commitment pool, the
/// round-1 answers of `first` handled first: the pool holds what that run
/// did not use.
async fn pooled(
    n: u16,
    modes: &[(u16, Mode)],
    seed: u64,
    first: &[u16],
) -> (
    Cluster,
    Arc<crate::CommitmentPool>,
    crate::SignOutcome,
    crate::OwnWallet,
) {
    let cluster = start(n, 2, modes, keep).await;
    let pool = Arc::new(crate::CommitmentPool::default());
    let options = crate::SignOptions {
        pool: Some(pool.clone()),
        answer_first: first.iter().copied().map(seat).collect(),
        ..crate::SignOptions::default()
    };
    let (outcome, own) = dkg_and_sign_with(&cluster, seed, |s| s.script_pubkey().clone(), options)
        .await
        .unwrap();
    (cluster, pool, outcome, own)
}

/// Puts `vectors` (drained from `pool`) back, as kept for one-input runs
/// of `wallet` at `epoch`.
fn keep_again(
    pool: &crate::CommitmentPool,
    wallet: &NodeWallet,
    epoch: WalletEpoch,
    vectors: Vec<crate::pool::Kept>,
) {
    let shape = crate::pool::Shape {
        wallet: wallet.id().clone(),
        epoch,
        inputs: 1,
    };
    for vector in vectors {
        assert!(
            pool.keep(&shape, vector, std::time::Instant::now())
                .is_none()
        );
    }
}

/// A coordinator that keeps its unused commitments starts its next run of
/// the wallet with them: no member is asked in round 1 or asked to drop
/// anything, and the pool's vectors are released when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kept_commitments_spare_the_next_run_its_round_one() {
    let (cluster, pool, first, own) = pooled(3, &[], 61, &[]).await;
    assert_eq!(first.signatures.len(), 1);
    assert_eq!(
        cluster.tally.take(),
        (3, 0),
        "every member asked once, none to drop"
    );
    let node = cluster.node(seat(1));
    let peers = cluster.peers(seat(1));
    let wallet = the_wallet(&node);
    let options = crate::SignOptions {
        pool: Some(pool.clone()),
        ..crate::SignOptions::default()
    };
    // Distinct transactions: a nonce kept after its session used it would
    // meet a package other than its own and be refused.
    for i in 0..3 {
        let psbt = self_payment(&own.spend, 0xa0 + i);
        let outcome = crate::sign(&peers, wallet, &own.key, own.epoch, &psbt, &options)
            .await
            .unwrap();
        assert_eq!(outcome.sessions, 1);
        assert!(outcome.unresponsive.is_empty(), "{outcome:?}");
        assert!(outcome.observed.faults.is_empty(), "{:?}", outcome.observed);
        assert_eq!(cluster.tally.take(), (0, 0), "{outcome:?}");
    }
    // A quarantined member's kept vector waits: it is asked last, not put
    // into R at the start.
    let deferred = crate::SignOptions {
        deferred: [seat(3)].into(),
        ..options.clone()
    };
    let psbt = self_payment(&own.spend, 0xa3);
    let outcome = crate::sign(&peers, wallet, &own.key, own.epoch, &psbt, &deferred)
        .await
        .unwrap();
    assert_eq!(outcome.signers, vec![seat(1), seat(2)]);
    assert_eq!(cluster.tally.take(), (0, 0), "{outcome:?}");
    crate::release_kept(&peers, wallet, &pool).await;
    assert_eq!(cluster.tally.take(), (0, 3), "one abort per member");
    assert!(pool.drain(wallet.id()).is_empty());
}

/// A kept vector whose nonces its member no longer holds (here dropped on
/// request; a restart or a shorter TTL does the same) costs the run a
/// round-1 request, not a signature, and scores nothing against the
/// member: the coordinator's pool, not the member, was out of date.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_vector_its_member_forgot_is_not_held_against_it() {
    let (cluster, pool, _, own) = pooled(3, &[], 62, &[]).await;
    let node = cluster.node(seat(1));
    let peers = cluster.peers(seat(1));
    let wallet = the_wallet(&node);
    // Members 1 and 2 drop what the pool holds at them, so the first
    // session (two of the three kept members) meets at least one of them.
    let kept = pool.drain(wallet.id());
    let mut forgotten = 0;
    for vector in kept.iter().filter(|v| v.seat != seat(3)) {
        let request = thresig_engine::AbortRequest::new(
            wallet.id().clone(),
            vec![thresig_engine::HexBytes(vector.commitments[0].to_bytes())],
        );
        let member = wallet.cluster_seat(vector.seat).unwrap();
        let client = peers.client(member).await.unwrap();
        client.abort(request).await.unwrap();
        forgotten += 1;
    }
    assert_eq!(forgotten, 2);
    keep_again(&pool, wallet, own.epoch, kept);
    let _ = cluster.tally.take();
    let options = crate::SignOptions {
        pool: Some(pool.clone()),
        request_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(6),
        ..crate::SignOptions::default()
    };
    let psbt = spend_paying(&own.spend, own.spend.script_pubkey().clone());
    let outcome = crate::sign(&peers, wallet, &own.key, own.epoch, &psbt, &options)
        .await
        .unwrap();
    assert_eq!(outcome.signatures.len(), 1);
    assert!(outcome.sessions >= 2, "{outcome:?}");
    assert!(!outcome.unresponsive.is_empty(), "{outcome:?}");
    assert!(outcome.observed.faults.is_empty(), "{:?}", outcome.observed);
    let (round1, _) = cluster.tally.take();
    assert!(round1 >= 1, "the forgetful member was asked again");
}

/// A member that sends a fresh vector of the wrong length with valid
/// shares cannot make the pool fail the next run: the vector is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vector_of_the_wrong_length_is_not_kept() {
    let (cluster, pool, first, own) = pooled(3, &[(3, Mode::Round2LongVector)], 63, &[3]).await;
    assert!(first.signers.contains(&seat(3)), "{first:?}");
    let node = cluster.node(seat(1));
    let peers = cluster.peers(seat(1));
    let wallet = the_wallet(&node);
    let kept = pool.drain(wallet.id());
    assert!(kept.iter().all(|v| v.commitments.len() == 1), "{kept:?}");
    keep_again(&pool, wallet, own.epoch, kept);
    let options = crate::SignOptions {
        pool: Some(pool.clone()),
        ..crate::SignOptions::default()
    };
    for i in 0..4 {
        let psbt = self_payment(&own.spend, 0xb0 + i);
        crate::sign(&peers, wallet, &own.key, own.epoch, &psbt, &options)
            .await
            .unwrap();
    }
}

/// A member that claims to have forgotten every kept vector (it holds
/// the nonces) is excused once, then is asked in round 1 like any member
/// for the pool's age limit: it costs one extra session, not one a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_claiming_to_forget_kept_vectors_is_excused_once() {
    let (cluster, pool, _, own) = pooled(3, &[(3, Mode::Round2RefusesKept)], 64, &[]).await;
    let node = cluster.node(seat(1));
    let peers = cluster.peers(seat(1));
    let wallet = the_wallet(&node);
    let options = crate::SignOptions {
        pool: Some(pool.clone()),
        request_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(6),
        ..crate::SignOptions::default()
    };
    let mut extra = 0;
    for i in 0..10 {
        let psbt = self_payment(&own.spend, 0xc0 + i);
        let outcome = crate::sign(&peers, wallet, &own.key, own.epoch, &psbt, &options)
            .await
            .unwrap();
        extra += outcome.sessions - 1;
        let scored = outcome.observed.faults.contains_key(&seat(3));
        assert!(
            !scored || extra > 1,
            "scored at its first refusal: {outcome:?}"
        );
    }
    assert!(extra <= 1, "{extra} extra sessions");
}

/// Concurrent runs sharing one pool, each signing its own transaction,
/// never put one nonce into two packages: no refusal, no fault, one
/// session each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_sharing_a_pool_never_reuse_a_nonce() {
    let (cluster, pool, _, own) = pooled(4, &[], 65, &[]).await;
    let own = Arc::new(own);
    let node = Arc::new(cluster.node(seat(1)));
    let peers = cluster.peers(seat(1));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4u8 {
        let (pool, own, node, peers) = (pool.clone(), own.clone(), node.clone(), peers.clone());
        tasks.spawn(async move {
            let wallet = the_wallet(&node);
            let options = crate::SignOptions {
                pool: Some(pool),
                ..crate::SignOptions::default()
            };
            let mut sessions = 0;
            for i in 0..6u8 {
                let psbt = self_payment(&own.spend, task * 16 + i + 1);
                let outcome = crate::sign(&peers, wallet, &own.key, own.epoch, &psbt, &options)
                    .await
                    .unwrap();
                assert!(outcome.observed.faults.is_empty(), "{:?}", outcome.observed);
                assert!(outcome.unresponsive.is_empty(), "{outcome:?}");
                sessions += outcome.sessions;
            }
            sessions
        });
    }
    let mut sessions = 0;
    while let Some(done) = tasks.join_next().await {
        sessions += done.unwrap();
    }
    assert_eq!(sessions, 24);
}

/// A culprit's vectors are never kept: the next run does not start with a
/// member proven to send invalid shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_culprits_vectors_are_not_kept() {
    let (cluster, pool, outcome, _) = pooled(3, &[(3, Mode::Round2SignedInvalid)], 66, &[3]).await;
    assert_eq!(outcome.culprits, vec![seat(3)]);
    let node = cluster.node(seat(1));
    let kept = pool.drain(the_wallet(&node).id());
    assert!(!kept.is_empty());
    assert!(kept.iter().all(|v| v.seat != seat(3)), "{kept:?}");
}
