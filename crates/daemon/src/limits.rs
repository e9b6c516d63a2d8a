//! Admission of a request before its body is read and decoded: a tower
//! layer in front of the gRPC services.
//!
//! For each request, in this order, before a byte of its body is read:
//! its member's turn at its request rate (`max_requests_per_second_per_seat`;
//! beyond it the request waits, so a member flooding cheap requests cannot
//! take the signer's CPU), one of the member's own request permits (at most
//! `max_requests_per_seat` queued or running; beyond that the request is
//! refused at once, so one member cannot queue thousands), then, for the
//! signer's methods, one of the `max_concurrent_requests` slots. Only then
//! is the body received, within `body_timeout`, against the method's size
//! limit and the byte budget (`max_in_flight_bytes`, of which one member may
//! hold half), and its repeated fields are counted on the wire against what
//! any wallet can need; a request whose fields admission reads (its
//! wallet, its nonces) must read as protobuf to its end, or it is refused
//! (`invalid_request`); the nonces it draws (round 1's input count, round
//! 2's packages, each of which gets a fresh commitment) are charged against
//! its member's nonce rate (`max_round1_inputs_per_second`; beyond it the
//! request waits, without its slot, and is refused `overloaded` only if the
//! wait would outlast its `request_timeout`), and the request waits for its
//! member's turn at the wallet it names (a member's signing requests there,
//! round 1, round 2 and abort, run up to
//! `max_signing_requests_per_seat_per_wallet` at a time, its others one at
//! a time; refused `timeout` at its `request_timeout`). Every wait ends
//! when the signer stops, refused (`overloaded`, retryable). The service
//! decodes the message only after all of that, holding the slot until the
//! handler has returned; the member's permit and the bytes are kept until
//! the reply has also been sent (or dropped at its send deadline): decoded
//! requests in memory are bounded by the slots, received bytes by the
//! budget, and unsent replies by the members' permits.
//!
//! A refusal the signer decided (no slot in time, a full budget, a body too
//! slow, too many elements) is a reply carrying a [`SignerError`], as the
//! handler's own refusals are; a request above its method's size limit is
//! the transport's `OUT_OF_RANGE`, as one above `max_request_bytes` always
//! was.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::api::{ErrorCode, Recovery, SignerError};
use crate::config::Limits;
use crate::convert::MAX_ROUND1_INPUTS;
use crate::ids::Seat;
use crate::metrics::Metrics;
use crate::proto;
use crate::tls::PeerIdentity;

/// The path prefix of the signer service's methods.
const SIGNER_PATH: &str = "/thresig.v1.Signer/";

/// Size limit of a request that carries ids and small numbers only (status,
/// round 1, wallet key, health checks, unknown paths).
const SMALL_REQUEST_BYTES: usize = 4 * 1024;

/// Size limit of an abort: 2048 commitments of about 70 bytes each.
pub(crate) const ABORT_REQUEST_BYTES: usize = 256 * 1024;

/// Size limit of a DKG proposal (a roster of up to 1000 32-byte keys) and
/// of a DKG confirmation.
const DKG_SMALL_REQUEST_BYTES: usize = 64 * 1024;

/// Members a DKG roster may name (seats are 1 to 1000).
const MAX_MEMBERS: usize = thresig_crypto::MAX_SIGNERS as usize;

/// What one method of the signer service may receive.
struct MethodLimits {
    /// Largest message, in bytes (capped by `max_request_bytes`).
    max_bytes: usize,
    /// The field number of the request's wallet id, if it names one.
    wallet_field: Option<u32>,
    /// Which of its member's turns at that wallet the request takes.
    turn: TurnKind,
    /// Where the request says how many nonces it draws, charged against
    /// its member's nonce rate.
    nonces: Option<Nonces>,
    /// Repeated fields counted on the wire before decoding.
    counts: &'static [FieldCount],
}

/// How a request's drawn nonces are read from it.
#[derive(Clone, Copy)]
enum Nonces {
    /// A varint field: round 1's input count.
    Number(u32),
    /// The elements of a repeated length-delimited field: round 2's
    /// signing packages, one per input, for each of which the engine draws
    /// a fresh commitment.
    Elements(u32),
}

/// At most `max` elements of the repeated field at `path` (field numbers
/// from the request message down, summed over every occurrence of each
/// level, as a decoder merges them). A packed numeric field counts each
/// number in it.
struct FieldCount {
    path: &'static [u32],
    what: &'static str,
    max: usize,
    kind: ElementKind,
}

/// How a repeated field's elements are encoded on the wire.
#[derive(Clone, Copy)]
enum ElementKind {
    /// Length-delimited values (bytes, strings, messages): one per occurrence.
    Delimited,
    /// Varint numbers, packed (a run in one length-delimited occurrence) or
    /// not (one per occurrence).
    Varint,
}

const INPUTS: usize = MAX_ROUND1_INPUTS as usize;

/// The limits of the signer method `name`; `None` for paths that are not a
/// signer method (health checks, unknown methods), which get the small
/// limit and no slot.
fn method_limits(name: &str) -> Option<MethodLimits> {
    let (max_bytes, counts): (usize, &'static [FieldCount]) = match name {
        "Round1" | "Status" | "WalletKey" | "RefreshConfirmations" => (SMALL_REQUEST_BYTES, &[]),
        "Abort" => (
            ABORT_REQUEST_BYTES,
            &[FieldCount {
                path: &[2],
                what: "commitments",
                max: INPUTS,
                kind: ElementKind::Delimited,
            }],
        ),
        "Round2" => (
            usize::MAX,
            &[
                FieldCount {
                    path: &[3],
                    what: "signer seats",
                    max: MAX_MEMBERS,
                    kind: ElementKind::Varint,
                },
                FieldCount {
                    path: &[5, 1],
                    what: "digests",
                    max: INPUTS,
                    kind: ElementKind::Delimited,
                },
                FieldCount {
                    path: &[6],
                    what: "signing packages",
                    max: INPUTS,
                    kind: ElementKind::Delimited,
                },
            ],
        ),
        "DkgStart" => (
            DKG_SMALL_REQUEST_BYTES,
            &[FieldCount {
                path: &[4],
                what: "roster keys",
                max: MAX_MEMBERS,
                kind: ElementKind::Delimited,
            }],
        ),
        "DkgRound2" | "DkgFinish" => (
            usize::MAX,
            &[FieldCount {
                path: &[3],
                what: "DKG messages",
                max: MAX_MEMBERS,
                kind: ElementKind::Delimited,
            }],
        ),
        "DkgConfirm" => (DKG_SMALL_REQUEST_BYTES, &[]),
        // A repair step carries at most three lists of one message per
        // helper (a helper's dealt message holds one sealed delta per
        // helper), like a DKG part.
        "Repair" => (
            usize::MAX,
            &[
                FieldCount {
                    path: &[4],
                    what: "repair helpers",
                    max: MAX_MEMBERS,
                    kind: ElementKind::Varint,
                },
                FieldCount {
                    path: &[8, 1],
                    what: "repair messages",
                    max: MAX_MEMBERS,
                    kind: ElementKind::Delimited,
                },
                FieldCount {
                    path: &[9, 2],
                    what: "repair messages",
                    max: MAX_MEMBERS,
                    kind: ElementKind::Delimited,
                },
                FieldCount {
                    path: &[10, 1],
                    what: "repair messages",
                    max: MAX_MEMBERS,
                    kind: ElementKind::Delimited,
                },
                FieldCount {
                    path: &[10, 2],
                    what: "repair messages",
                    max: MAX_MEMBERS,
                    kind: ElementKind::Delimited,
                },
                FieldCount {
                    path: &[10, 3],
                    what: "repair messages",
                    max: MAX_MEMBERS,
                    kind: ElementKind::Delimited,
                },
            ],
        ),
        _ => return None,
    };
    let wallet_field = match name {
        "Status" => None,
        "DkgStart" => Some(2),
        _ => Some(1),
    };
    Some(MethodLimits {
        max_bytes,
        wallet_field,
        turn: match name {
            "Round1" | "Round2" | "Abort" => TurnKind::Signing,
            _ => TurnKind::Other,
        },
        nonces: match name {
            "Round1" => Some(Nonces::Number(2)),
            "Round2" => Some(Nonces::Elements(6)),
            _ => None,
        },
        counts,
    })
}

/// The admission state shared by every connection.
#[derive(Clone)]
pub(crate) struct AdmissionLayer {
    shared: Arc<Shared>,
}

struct Shared {
    limits: Limits,
    /// One permit per request being handled across all members.
    slots: Arc<Semaphore>,
    /// One permit per request byte received and not yet answered.
    bytes: Arc<Semaphore>,
    /// Each member's share of the request permits and of the byte budget;
    /// one entry per seat that ever sent a request (at most 1000).
    seats: Mutex<HashMap<Seat, SeatShare>>,
    /// Each member's turn at each wallet it has requests for.
    turns: Turns,
    /// Where refusals and waits are counted, by member.
    metrics: Metrics,
    /// True once the signer is stopping: every admission wait then ends,
    /// refused (`overloaded`, retryable).
    stopping: watch::Receiver<bool>,
}

/// The turns of each (member, wallet, kind) with requests admitted: the
/// engine serializes a wallet's requests, so a member's queue must not
/// stand ahead of every other member's there. A member's signing requests
/// on a wallet run up to `max_signing_requests_per_seat_per_wallet` at a
/// time (the engine's lock covers only a round's CPU work, so they overlap
/// in the store's group commits, and another member waits behind the
/// short lock holds of that many requests, not their commits; no strict
/// count of holds, as each takes the lock two or more times and the lock
/// is not first come, first served); its other requests there run one at
/// a time. An entry lives while a request holds or waits for it.
type Turns = Arc<Mutex<HashMap<TurnKey, Arc<Semaphore>>>>;

/// Whose turns, at which wallet (its id as the request carries it), of
/// which kind.
type TurnKey = (Seat, Vec<u8>, TurnKind);

/// Which of a member's turns at a wallet a request takes: signing and
/// lifecycle requests do not share a count.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum TurnKind {
    /// Round 1, round 2 and abort.
    Signing,
    /// Every other method naming a wallet (DKG, repair, wallet key,
    /// refresh confirmations).
    Other,
}

impl TurnKind {
    /// How many of a member's requests of this kind run at once on one
    /// wallet.
    fn at_once(self, limits: &Limits) -> usize {
        match self {
            Self::Signing => limits.max_signing_requests_per_seat_per_wallet,
            Self::Other => 1,
        }
    }
}

/// A request's turn at its wallet among its member's requests (held, or
/// waited for), released when dropped.
struct WalletTurn {
    turns: Turns,
    key: TurnKey,
    turn: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl WalletTurn {
    /// A turn among those of `key`, of which `at_once` run at a time;
    /// `waits` is called if none is free at once, before waiting for one.
    async fn take(turns: &Turns, key: TurnKey, at_once: usize, waits: impl FnOnce()) -> Self {
        let turn = turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(at_once)))
            .clone();
        let mut taken = Self {
            turns: turns.clone(),
            key,
            turn: Some(turn.clone()),
            permit: turn.clone().try_acquire_owned().ok(),
        };
        if taken.permit.is_none() {
            waits();
            // The semaphore is never closed.
            taken.permit = turn.acquire_owned().await.ok();
        }
        taken
    }
}

impl Drop for WalletTurn {
    fn drop(&mut self) {
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        self.permit = None;
        self.turn = None;
        if turns
            .get(&self.key)
            .is_some_and(|turn| Arc::strong_count(turn) == 1)
        {
            turns.remove(&self.key);
        }
    }
}

#[derive(Clone)]
struct SeatShare {
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// Its requests a second (`max_requests_per_second_per_seat`): every
    /// request costs CPU (TLS, HTTP/2, admission) before it can be
    /// refused, so one member sending as fast as it is answered would take
    /// a core; beyond its rate a request waits, holding only its stream,
    /// which the stream and connection caps bound.
    requests_per_second: Arc<Mutex<Rate>>,
    /// Its nonces a second (`max_round1_inputs_per_second`), drawn by
    /// round 1 and by round 2's fresh commitments: drawing one costs the
    /// CPU every member's requests share, so beyond the rate a request
    /// waits (without a slot; refused `overloaded` if the wait would
    /// outlast its time), so an honest burst is slowed, not refused. The
    /// burst is a second's worth, or one round 1 at the input limit if
    /// more, so that any valid round 1 can be admitted.
    nonces_per_second: Arc<Mutex<Rate>>,
}

/// A rate of units (requests, nonces) a second with a burst: each unit
/// moves `due` on by `per_unit`, and a charge may put it at most `burst`
/// ahead of now, beyond that only by waiting (a generic cell rate).
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// When the units charged so far are paid for; `None` before any.
    due: Option<Instant>,
    per_unit: Duration,
    burst: Duration,
}

impl Rate {
    /// `per_second` units a second, with a burst of `burst` units.
    fn new(per_second: u32, burst: u32) -> Self {
        let per_unit = Duration::from_secs(1) / per_second.max(1);
        Self {
            due: None,
            per_unit,
            burst: per_unit * burst,
        }
    }

    /// Charges `units` at `now` if they fit after waiting at most
    /// `max_wait`: `Ok` with the wait, or `Err` with the wait they would
    /// need (nothing charged).
    fn charge(
        &mut self,
        now: Instant,
        units: u32,
        max_wait: Duration,
    ) -> Result<Duration, Duration> {
        let from = self.due.map_or(now, |due| due.max(now));
        let due = from + self.per_unit * units;
        let wait = (due - now).saturating_sub(self.burst);
        if wait > max_wait {
            return Err(wait);
        }
        self.due = Some(due);
        Ok(wait)
    }

    /// [`Rate::charge`] on a member's shared rate, with a wait allowed up
    /// to `deadline`.
    fn charge_shared(
        rate: &Mutex<Self>,
        now: Instant,
        units: u32,
        deadline: Instant,
    ) -> Result<Duration, Duration> {
        rate.lock().unwrap_or_else(PoisonError::into_inner).charge(
            now,
            units,
            deadline.saturating_duration_since(now),
        )
    }
}

impl AdmissionLayer {
    /// The layer for `limits`; `slots` is closed on shutdown by whoever
    /// holds it, and `stopping` turns true then.
    pub(crate) fn new(
        limits: Limits,
        slots: Arc<Semaphore>,
        metrics: Metrics,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                slots,
                bytes: Arc::new(Semaphore::new(limits.max_in_flight_bytes)),
                seats: Mutex::new(HashMap::new()),
                turns: Arc::default(),
                metrics,
                stopping,
            }),
        }
    }
}

impl Shared {
    /// `wait`'s output, or `None` once the signer is stopping (at once if
    /// it already is).
    async fn unless_stopping<F: Future>(&self, wait: F) -> Option<F::Output> {
        let mut stopping = self.stopping.clone();
        tokio::select! {
            biased;
            // A dropped sender means the server has stopped too.
            _ = stopping.wait_for(|stopping| *stopping) => None,
            out = wait => Some(out),
        }
    }

    /// Waits until `until`, the end of the pace a member's `rate` (the
    /// metric's reason) set, unless the signer stops first.
    async fn pace(&self, seat: Seat, rate: &'static str, until: Instant) -> Result<(), Refusal> {
        self.metrics.waited(seat.get(), rate);
        match self.unless_stopping(tokio::time::sleep_until(until)).await {
            Some(()) => Ok(()),
            None => Err(shutting_down()),
        }
    }

    /// One of the signer's request slots, waited for until `deadline`.
    async fn slot(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, Refusal> {
        let taken = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned());
        match self.unless_stopping(taken).await {
            Some(Ok(Ok(slot))) => Ok(slot),
            // Closed: the signer is stopping.
            None | Some(Ok(Err(_))) => Err(shutting_down()),
            Some(Err(_)) => Err(timed_out(self.limits.request_timeout)),
        }
    }

    fn share(&self, seat: Seat) -> SeatShare {
        let mut seats = self.seats.lock().unwrap_or_else(PoisonError::into_inner);
        seats
            .entry(seat)
            .or_insert_with(|| SeatShare {
                requests: Arc::new(Semaphore::new(self.limits.max_requests_per_seat)),
                bytes: Arc::new(Semaphore::new(self.limits.max_in_flight_bytes / 2)),
                requests_per_second: Arc::new(Mutex::new(Rate::new(
                    self.limits.max_requests_per_second_per_seat,
                    self.limits.max_requests_per_second_per_seat,
                ))),
                nonces_per_second: Arc::new(Mutex::new(Rate::new(
                    self.limits.max_round1_inputs_per_second,
                    self.limits
                        .max_round1_inputs_per_second
                        .max(MAX_ROUND1_INPUTS),
                ))),
            })
            .clone()
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            shared: self.shared.clone(),
            inner,
        }
    }
}

/// The service [`AdmissionLayer`] wraps around the gRPC router.
#[derive(Clone)]
pub(crate) struct Admission<S> {
    shared: Arc<Shared>,
    inner: S,
}

/// What an admitted request holds until its handler returns: its slot, and
/// a share of [`Held`].
pub(crate) struct Admitted {
    _slot: Option<OwnedSemaphorePermit>,
    _turn: Option<WalletTurn>,
    _held: Arc<Held>,
    /// When the request's time (`request_timeout`, from its arrival) ends.
    pub(crate) deadline: Instant,
}

/// What a request holds until both its handler has returned and its reply
/// has been sent (or dropped at the send deadline): its member's request
/// permit and its bytes of the budget. A reply waiting for the client's
/// flow-control window thus counts as one of the member's requests.
struct Held {
    _seat_request: OwnedSemaphorePermit,
    _bytes: Vec<OwnedSemaphorePermit>,
}

/// The request extension through which the service takes its
/// [`Admitted`] (extensions must be `Clone`; only one taker gets it).
#[derive(Clone)]
pub(crate) struct Ticket(Arc<Mutex<Option<Admitted>>>);

impl Ticket {
    /// The admission of this request, once.
    pub(crate) fn take(&self) -> Option<Admitted> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Admission<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone is the one that was polled ready (tower's convention).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move { Ok(admit(&shared, inner, request).await) })
    }
}

/// Why a request was not admitted.
enum Refusal {
    /// A refusal the signer decided, sent as a reply with this error.
    Signer(SignerError),
    /// A transport status (for paths that are not signer methods, and for
    /// requests above their size limit).
    Status(tonic::Status),
}

impl Refusal {
    fn signer(code: ErrorCode, recovery: Recovery, message: String) -> Self {
        Self::Signer(SignerError::new(code, recovery, message))
    }

    /// The label it is counted under: the error code, or the transport
    /// status.
    fn reason(&self) -> Cow<'static, str> {
        match self {
            Self::Signer(err) => err.code.metric_label(),
            Self::Status(status) => Cow::Borrowed(match status.code() {
                tonic::Code::OutOfRange => "out_of_range",
                tonic::Code::Cancelled => "cancelled",
                _ => "transport",
            }),
        }
    }
}

async fn admit<S>(
    shared: &Shared,
    mut inner: S,
    request: http::Request<Body>,
) -> http::Response<Body>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    let limits = &shared.limits;
    let arrived = Instant::now();
    let deadline = arrived + limits.request_timeout;
    let method_limits = request
        .uri()
        .path()
        .strip_prefix(SIGNER_PATH)
        .and_then(method_limits);
    let is_signer_method = method_limits.is_some();
    let Some(peer) = request.extensions().get::<PeerIdentity>().copied() else {
        return tonic::Status::unauthenticated("no authenticated seat on this connection")
            .into_http();
    };
    let refuse = |refusal: Refusal| {
        shared
            .metrics
            .not_admitted(peer.seat.get(), refusal.reason());
        match refusal {
            Refusal::Signer(err) if is_signer_method => error_reply(err),
            Refusal::Signer(err) => status_of(&err).into_http(),
            Refusal::Status(status) => status.into_http(),
        }
    };
    let share = shared.share(peer.seat);
    match Rate::charge_shared(&share.requests_per_second, arrived, 1, deadline) {
        Ok(wait) if wait.is_zero() => {}
        Ok(wait) => {
            if let Err(refusal) = shared.pace(peer.seat, "request_rate", arrived + wait).await {
                return refuse(refusal);
            }
        }
        Err(_) => return refuse(timed_out(limits.request_timeout)),
    }
    let Ok(seat_request) = share.requests.clone().try_acquire_owned() else {
        return refuse(Refusal::signer(
            ErrorCode::OVERLOADED,
            Recovery::Retryable,
            format!(
                "this member already has {} requests queued or running; retry once one is answered",
                limits.max_requests_per_seat
            ),
        ));
    };
    let mut slot = if is_signer_method {
        match shared.slot(deadline).await {
            Ok(slot) => Some(slot),
            Err(refusal) => return refuse(refusal),
        }
    } else {
        None
    };
    let max_bytes = method_limits
        .as_ref()
        .map_or(SMALL_REQUEST_BYTES, |m| m.max_bytes)
        .min(limits.max_request_bytes);
    let (parts, body) = request.into_parts();
    let body_deadline = deadline.min(Instant::now() + limits.body_timeout);
    let budgets = [&shared.bytes, &share.bytes];
    let received = tokio::time::timeout_at(body_deadline, receive(body, max_bytes, budgets)).await;
    let (message, bytes) = match received {
        Ok(Ok(received)) => received,
        Ok(Err(refusal)) => return refuse(refusal),
        Err(_) => {
            return refuse(Refusal::signer(
                ErrorCode::TIMEOUT,
                Recovery::Retryable,
                format!(
                    "the request body did not arrive within {} ms; send it at once",
                    limits.body_timeout.min(limits.request_timeout).as_millis()
                ),
            ));
        }
    };
    let counts = method_limits.as_ref().map_or(&[][..], |m| m.counts);
    if let Err(refusal) = check_counts(&message, counts) {
        return refuse(refusal);
    }
    let Some(message_fields) = message.get(5..) else {
        return refuse(Refusal::Status(tonic::Status::internal(
            "a checked body lost its frame",
        )));
    };
    let reads_fields = method_limits
        .as_ref()
        .is_some_and(|m| m.wallet_field.is_some() || m.nonces.is_some());
    // What admission reads of a request (its nonces, its wallet) must be
    // read from all of it: a field it cannot read past (a group, a
    // truncation) could hide what the decoder finds, so it is refused,
    // never taken as absent.
    if reads_fields && !reads_to_end(message_fields) {
        return refuse(Refusal::signer(
            ErrorCode::INVALID_REQUEST,
            Recovery::Terminal,
            "the request is not a protobuf message the signer reads (groups are not accepted)"
                .to_owned(),
        ));
    }
    let nonces = method_limits
        .as_ref()
        .and_then(|m| m.nonces)
        .and_then(|nonces| match nonces {
            Nonces::Number(field) => last_varint(message_fields, field),
            Nonces::Elements(field) => {
                count_field(message_fields, &[field], ElementKind::Delimited)
                    .and_then(|n| u64::try_from(n).ok())
            }
        })
        .filter(|nonces| *nonces > 0);
    if let Some(nonces) = nonces {
        // Above the input limit the engine refuses the request; it is
        // charged as the largest valid one.
        let nonces = u32::try_from(nonces)
            .unwrap_or(u32::MAX)
            .min(MAX_ROUND1_INPUTS);
        let now = Instant::now();
        match Rate::charge_shared(&share.nonces_per_second, now, nonces, deadline) {
            Ok(wait) if wait.is_zero() => {}
            Ok(wait) => {
                // The wait holds the member's permit and bytes, not a
                // slot, so other members' requests are not held up.
                drop(slot.take());
                if let Err(refusal) = shared.pace(peer.seat, "nonce_rate", now + wait).await {
                    return refuse(refusal);
                }
                match shared.slot(deadline).await {
                    Ok(taken) => slot = Some(taken),
                    Err(refusal) => return refuse(refusal),
                }
            }
            Err(wait) => {
                return refuse(Refusal::signer(
                    ErrorCode::OVERLOADED,
                    Recovery::Retryable,
                    format!(
                        "this member asked for more nonces than its {} a second allow within the request's time; retry in {} ms",
                        limits.max_round1_inputs_per_second,
                        wait.as_millis().max(1)
                    ),
                ));
            }
        }
    }
    let wallet = method_limits.as_ref().and_then(|m| {
        let wallet = last_field(message_fields, m.wallet_field?, WIRE_DELIMITED)?;
        Some((wallet, m.turn))
    });
    let turn = match wallet {
        Some((wallet, kind)) => {
            let key = (peer.seat, wallet.to_vec(), kind);
            let taken = WalletTurn::take(&shared.turns, key, kind.at_once(limits), || {
                shared.metrics.waited(peer.seat.get(), "wallet_turn");
            });
            match shared
                .unless_stopping(tokio::time::timeout_at(deadline, taken))
                .await
            {
                Some(Ok(turn)) => Some(turn),
                Some(Err(_)) => return refuse(timed_out(limits.request_timeout)),
                None => return refuse(shutting_down()),
            }
        }
        None => None,
    };
    let held = Arc::new(Held {
        _seat_request: seat_request,
        _bytes: bytes,
    });
    let mut parts = parts;
    parts
        .extensions
        .insert(Ticket(Arc::new(Mutex::new(Some(Admitted {
            _slot: slot,
            _turn: turn,
            _held: held.clone(),
            deadline,
        })))));
    let request = http::Request::from_parts(parts, Body::new(Full::new(message)));
    let response = match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let send_deadline = Instant::now() + limits.body_timeout;
    response.map(|body| ReplyBody::boxed(body, held, send_deadline))
}

/// Bytes of a reply handed to HTTP/2 at a time (one frame): a reply stuck
/// behind a closed flow-control window pins at most this much once its
/// send deadline has dropped the rest.
const REPLY_CHUNK: usize = 16 * 1024;

/// A reply body that keeps its request's [`Held`] until it has been sent,
/// and drops the rest of the reply with it at the send deadline (the
/// request's `body_timeout` after the answer), so a client that never opens
/// its window cannot keep either past that.
struct ReplyBody {
    sending: Arc<Mutex<Option<Sending>>>,
    finished: bool,
    watchdog: tokio::task::JoinHandle<()>,
}

struct Sending {
    body: Body,
    /// Data of `body` not yet handed out, in [`REPLY_CHUNK`]s.
    pending: Bytes,
    _held: Arc<Held>,
}

impl ReplyBody {
    fn boxed(body: Body, held: Arc<Held>, deadline: Instant) -> Body {
        let sending = Arc::new(Mutex::new(Some(Sending {
            body,
            pending: Bytes::new(),
            _held: held,
        })));
        let expired = Arc::downgrade(&sending);
        let watchdog = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if let Some(sending) = expired.upgrade() {
                let dropped = sending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                drop(dropped);
            }
        });
        Body::new(Self {
            sending,
            finished: false,
            watchdog,
        })
    }
}

impl Drop for ReplyBody {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let sending = self.sending.clone();
        let mut sending = sending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(reply) = sending.as_mut() else {
            self.finished = true;
            return Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(
                "the reply was not taken before the send deadline",
            ))));
        };
        loop {
            if !reply.pending.is_empty() {
                let n = reply.pending.len().min(REPLY_CHUNK);
                // A copy, so that what HTTP/2 holds does not keep the whole
                // reply's buffer alive.
                let chunk = Bytes::copy_from_slice(&reply.pending.split_to(n));
                if reply.pending.is_empty() {
                    reply.pending = Bytes::new();
                }
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            match std::task::ready!(Pin::new(&mut reply.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => reply.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => {
                    *sending = None;
                    self.finished = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// The refusal of a request whose admission the signer's stop ended.
fn shutting_down() -> Refusal {
    Refusal::signer(
        ErrorCode::OVERLOADED,
        Recovery::Retryable,
        "the signer is shutting down; retry with another member or once it is back".to_owned(),
    )
}

fn timed_out(timeout: Duration) -> Refusal {
    Refusal::signer(
        ErrorCode::TIMEOUT,
        Recovery::Retryable,
        format!("no answer within {} ms", timeout.as_millis()),
    )
}

/// Receives a body of at most `max_bytes`, taking a permit from each of
/// `budgets` for every byte as it arrives (never waiting: a full budget
/// refuses the request, so that bodies waiting on each other cannot stall).
async fn receive(
    mut body: Body,
    max_bytes: usize,
    budgets: [&Arc<Semaphore>; 2],
) -> Result<(Bytes, Vec<OwnedSemaphorePermit>), Refusal> {
    let mut message = BytesMut::new();
    let mut held: [Option<OwnedSemaphorePermit>; 2] = [None, None];
    let full = || {
        Refusal::signer(
            ErrorCode::OVERLOADED,
            Recovery::Retryable,
            "the signer's budget of request bytes in flight is taken; retry shortly".to_owned(),
        )
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            Refusal::Status(tonic::Status::cancelled(format!(
                "the request body failed: {err}"
            )))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // The gRPC frame header (5 bytes) is not part of the message limit.
        if message.len() + data.len() > max_bytes.saturating_add(5) {
            return Err(Refusal::Status(tonic::Status::out_of_range(format!(
                "request too large: this method accepts at most {max_bytes} bytes"
            ))));
        }
        let len = u32::try_from(data.len()).map_err(|_| full())?;
        for (budget, held) in budgets.iter().zip(held.iter_mut()) {
            let permit = Arc::clone(budget)
                .try_acquire_many_owned(len)
                .map_err(|_| full())?;
            match held {
                Some(held) => held.merge(permit),
                None => *held = Some(permit),
            }
        }
        message.put(data);
    }
    Ok((message.freeze(), held.into_iter().flatten().collect()))
}

/// Checks that `body` is exactly one uncompressed gRPC frame whose declared
/// length is the rest of the body (tonic would decode, then drop, any
/// further message, uncounted), then counts the repeated fields of `counts`
/// in it without decoding it, refusing a count above its bound.
fn check_counts(body: &[u8], counts: &[FieldCount]) -> Result<(), Refusal> {
    let invalid =
        |message: String| Refusal::signer(ErrorCode::INVALID_REQUEST, Recovery::Terminal, message);
    let one_frame = match body {
        [0, a, b, c, d, message @ ..] => {
            let declared = usize::try_from(u32::from_be_bytes([*a, *b, *c, *d])).ok();
            (declared == Some(message.len())).then_some(message)
        }
        _ => None,
    };
    let Some(message) = one_frame else {
        return Err(invalid(
            "the request body must be exactly one uncompressed gRPC message".to_owned(),
        ));
    };
    for count in counts {
        let found = count_field(message, count.path, count.kind)
            .ok_or_else(|| invalid("the request is not a protobuf message".to_owned()))?;
        if found > count.max {
            return Err(invalid(format!(
                "the request carries {found} {}; at most {} are accepted",
                count.what, count.max
            )));
        }
    }
    Ok(())
}

/// Elements of the repeated field at `path` in `message`: each occurrence
/// of a length-delimited value, or each number of a packed or unpacked
/// numeric field for [`ElementKind::Varint`] (the last level only). `None` if the bytes are not a
/// well-formed message at that level.
fn count_field(mut message: &[u8], path: &[u32], kind: ElementKind) -> Option<usize> {
    let (&number, rest) = path.split_first()?;
    let mut found = 0usize;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let field = u32::try_from(key >> 3).ok()?;
        let skip = match key & 7 {
            0 => {
                varint(&mut message)?;
                if field == number && rest.is_empty() {
                    found += 1;
                }
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut message)?).ok()?,
            5 => 4,
            _ => return None,
        };
        let value = message.get(..skip)?;
        if key & 7 == 2 && field == number {
            found += match (rest.is_empty(), kind) {
                // A packed run: one number per byte without a continuation
                // bit.
                (true, ElementKind::Varint) => value.iter().filter(|b| **b & 0x80 == 0).count(),
                (true, ElementKind::Delimited) => 1,
                (false, _) => count_field(value, rest, kind)?,
            };
        }
        message = message.get(skip..)?;
    }
    Some(found)
}

/// Whether `message` reads as protobuf fields of wire types 0, 1, 2 and 5
/// up to its end (at its top level).
fn reads_to_end(message: &[u8]) -> bool {
    // Field 0 is never a field: only the walk matters.
    count_field(message, &[0], ElementKind::Delimited).is_some()
}

/// Protobuf wire types of the fields read before decoding.
const WIRE_VARINT: u64 = 0;
const WIRE_DELIMITED: u64 = 2;

/// The value of the last field `number` of wire type `wire` in `message`
/// (the value a decoder keeps; a varint's bytes, or a length-delimited
/// field's contents), if the message reads as protobuf up to its end.
fn last_field(mut message: &[u8], number: u32, wire: u64) -> Option<&[u8]> {
    let mut found = None;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let (value, rest) = match key & 7 {
            WIRE_VARINT => {
                let mut rest = message;
                varint(&mut rest)?;
                message.split_at_checked(message.len() - rest.len())?
            }
            1 => message.split_at_checked(8)?,
            WIRE_DELIMITED => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                message.split_at_checked(len)?
            }
            5 => message.split_at_checked(4)?,
            _ => return None,
        };
        if key >> 3 == u64::from(number) && key & 7 == wire {
            found = Some(value);
        }
        message = rest;
    }
    found
}

/// The last varint field `number` of `message`; `None` if it has none or
/// does not read as protobuf.
fn last_varint(message: &[u8], number: u32) -> Option<u64> {
    let mut value = last_field(message, number, WIRE_VARINT)?;
    varint(&mut value)
}

/// Reads one protobuf varint from the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A gRPC reply carrying `err`. Every reply of the signer service is a
/// `oneof` whose `Error` is field 2, so one encoding serves every method
/// (checked by a test for each reply type).
fn error_reply(err: SignerError) -> http::Response<Body> {
    let reply = proto::StatusReply {
        outcome: Some(proto::status_reply::Outcome::Error(err.into())),
    }
    .encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + reply.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(reply.len()).unwrap_or(u32::MAX));
    frame.put_slice(&reply);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, Infallible>(Frame::data(frame.freeze())),
        Ok(Frame::trailers(trailers)),
    ];
    let mut response = http::Response::new(Body::new(StreamBody::new(tokio_stream::iter(frames))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The transport status for a refusal on a path that has no `Error` reply.
fn status_of(err: &SignerError) -> tonic::Status {
    let message = err.message.clone();
    if err.code == ErrorCode::TIMEOUT {
        tonic::Status::deadline_exceeded(message)
    } else if err.code == ErrorCode::INVALID_REQUEST {
        tonic::Status::invalid_argument(message)
    } else {
        tonic::Status::resource_exhausted(message)
    }
}

#[cfg(test)]
mod tests;
