//! Commitment vectors a long-lived coordinator keeps between its signing
//! runs.
//!
//! A run asks every member for a commitment vector, and a session uses t of
//! them; the others, and the fresh vectors the signers send back with their
//! shares, are still live at their members when the run ends. A run on its
//! own (`thresig sign`, one per process) asks the members to drop them. A
//! coordinator that signs one transaction after another (`thresig load`,
//! an embedding service) can instead keep them here and start its next run
//! of the same wallet with them ([`crate::SignOptions::pool`]): in a steady
//! stream a run then sends no round-1 request, every member computes one
//! commitment per share it makes rather than about two, and nothing is left
//! to drop.
//!
//! The members' safety does not depend on the pool: a signer trusts no
//! coordinator, and each nonce signs at most one package whoever asks. What
//! the pool must not cost is liveness or a member's good name:
//! - a vector is taken out under the lock and given to one run only, so no
//!   two runs put one nonce into two packages (`session_conflict`);
//! - it is kept for [`CommitmentPool::max_age`] from its arrival (a minute
//!   by default, well inside the signers' default nonce TTL of five
//!   minutes), and at most [`CommitmentPool::per_member`] nonces per member,
//!   wallet and shape: the rest are released as before;
//! - a vector its signer no longer holds (it restarted, or a signer set a
//!   shorter TTL) costs its run the session it was put into (the round 2
//!   of the others in it, and a round trip) and one round-1 request; the
//!   run does not count that refusal against the member, and the member's
//!   other kept vectors of the wallet are forgotten. For a minute after,
//!   none of the member's vectors is kept and no such refusal of it is
//!   excused, so its runs ask it in round 1 as a run on its own does and
//!   its refusals count: a member that claims to forget on purpose escapes
//!   one refusal's score per wallet a minute, not every one;
//! - vectors are kept per wallet, wallet epoch and number of inputs, so a
//!   vector is only ever offered for a transaction of its own shape and
//!   epoch; taking the vectors of a new epoch hands the old epoch's back
//!   for release.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use thresig_crypto::{Commitment, Seat};
use thresig_engine::{WalletEpoch, WalletId};

/// The commitment vectors a coordinator holds at the members of its
/// wallets, unused, for its next runs. Shared by the runs of one
/// coordinator (behind an `Arc`); see the module documentation.
#[derive(Debug)]
pub struct CommitmentPool {
    max_age: Duration,
    per_member: usize,
    held: Mutex<Held>,
}

/// The pool's contents.
#[derive(Debug, Default)]
struct Held {
    /// The vectors, by shape and member, each member's in arrival order.
    vectors: BTreeMap<Shape, BTreeMap<Seat, Vec<Kept>>>,
    /// When each member last did not hold a kept vector, by wallet.
    forgot: BTreeMap<(WalletId, Seat), Instant>,
}

/// What a kept vector fits: runs of this wallet, at this epoch, signing
/// this many inputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Shape {
    pub(crate) wallet: WalletId,
    pub(crate) epoch: WalletEpoch,
    pub(crate) inputs: usize,
}

/// One vector, with when it reached the coordinator.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub(crate) seat: Seat,
    pub(crate) arrived: Instant,
    pub(crate) commitments: Vec<Commitment>,
}

/// What [`CommitmentPool::take`] hands a run.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// At most one vector per member, within the age limit, the oldest
    /// first.
    pub(crate) ready: Vec<Kept>,
    /// Vectors past the age limit or of an earlier epoch: for release.
    pub(crate) stale: Vec<Kept>,
}

impl Default for CommitmentPool {
    /// A minute, and 64 nonces per member, wallet and shape: a stream of
    /// runs returns about one vector per member and run, so 64 cover as
    /// many one-input runs in flight (16 of four inputs), a sixteenth of a
    /// signer's default quota of nonces per coordinator.
    fn default() -> Self {
        Self::new(Duration::from_secs(60), 64)
    }
}

impl CommitmentPool {
    /// A pool keeping each vector for at most `max_age` from its arrival,
    /// and vectors of at most `per_member` nonces (commitments) in all per
    /// member, wallet and shape: the signers' quotas count nonces, not
    /// vectors.
    #[must_use]
    pub fn new(max_age: Duration, per_member: usize) -> Self {
        Self {
            max_age,
            per_member,
            held: Mutex::new(Held::default()),
        }
    }

    /// How long a vector is offered after it arrived.
    #[must_use]
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Most nonces (commitments) kept per member, wallet and shape.
    #[must_use]
    pub fn per_member(&self) -> usize {
        self.per_member
    }

    /// Takes, for a run of `shape` starting at `now`, the oldest fresh
    /// vector of every member `eligible` accepts, and every vector too old
    /// to offer or of an earlier epoch of the wallet.
    pub(crate) fn take(
        &self,
        shape: &Shape,
        eligible: impl Fn(Seat) -> bool,
        now: Instant,
    ) -> Taken {
        let mut held = self.lock();
        let kept = &mut held.vectors;
        let mut taken = Taken {
            stale: remove_shapes(kept, |s| s.wallet == shape.wallet && s.epoch < shape.epoch),
            ..Taken::default()
        };
        if let Some(members) = kept.get_mut(shape) {
            for (seat, vectors) in members.iter_mut() {
                // Oldest first: a vector that waits grows no fresher, and
                // the members whose vectors waited longest sign first.
                let fresh_from = vectors
                    .iter()
                    .position(|v| now.saturating_duration_since(v.arrived) < self.max_age)
                    .unwrap_or(vectors.len());
                taken.stale.extend(vectors.drain(..fresh_from));
                if eligible(*seat) && !vectors.is_empty() {
                    taken.ready.push(vectors.remove(0));
                }
            }
            members.retain(|_, vectors| !vectors.is_empty());
        }
        taken.ready.sort_by_key(|v| v.arrived);
        taken
    }

    /// Keeps `vector` for later runs of `shape`, unless it does not hold
    /// one commitment per input, is too old at `now`, is kept already,
    /// would take its member beyond [`CommitmentPool::per_member`], or its
    /// member forgot a kept vector within the age limit; then it is handed
    /// back, for release. (A member may send any vector with its shares:
    /// one of another length would fail the next run's setup, and one kept
    /// twice would meet `session_conflict` in one of two runs.)
    pub(crate) fn keep(&self, shape: &Shape, vector: Kept, now: Instant) -> Option<Kept> {
        let max_age = self.max_age;
        let fresh = |at: Instant| now.saturating_duration_since(at) < max_age;
        if vector.commitments.len() != shape.inputs || !fresh(vector.arrived) {
            return Some(vector);
        }
        let mut held = self.lock();
        held.forgot.retain(|_, at| fresh(*at));
        if held
            .forgot
            .contains_key(&(shape.wallet.clone(), vector.seat))
        {
            return Some(vector);
        }
        let vectors = held
            .vectors
            .entry(shape.clone())
            .or_default()
            .entry(vector.seat)
            .or_default();
        let first = vector.commitments.first();
        let nonces: usize = vectors.iter().map(|v| v.commitments.len()).sum();
        if nonces + vector.commitments.len() > self.per_member
            || vectors.iter().any(|v| v.commitments.first() == first)
        {
            return Some(vector);
        }
        // Kept in arrival order, so `take` finds the oldest first.
        let at = vectors.partition_point(|v| v.arrived <= vector.arrived);
        vectors.insert(at, vector);
        None
    }

    /// Drops every vector kept at `seat` for `shape`'s wallet, and keeps
    /// none of the member's for the age limit from `now`: its signer no
    /// longer held one of them, and it evicts and expires the oldest first
    /// (or it restarted and holds none). Whether the member had not
    /// forgotten one within the age limit before: only then is its refusal
    /// excused, so runs in flight with its other kept vectors do not excuse
    /// it again.
    pub(crate) fn forget(&self, shape: &Shape, seat: Seat, now: Instant) -> bool {
        let max_age = self.max_age;
        let mut held = self.lock();
        for (_, members) in held
            .vectors
            .iter_mut()
            .filter(|(s, _)| s.wallet == shape.wallet)
        {
            members.remove(&seat);
        }
        let earlier = held.forgot.insert((shape.wallet.clone(), seat), now);
        earlier.is_none_or(|at| now.saturating_duration_since(at) >= max_age)
    }

    /// Empties the pool for `wallet`: the vectors to release when the
    /// coordinator stops signing for it.
    pub(crate) fn drain(&self, wallet: &WalletId) -> Vec<Kept> {
        remove_shapes(&mut self.lock().vectors, |s| &s.wallet == wallet)
    }

    /// The contents, even after a panic elsewhere poisoned the lock: every
    /// change inserts or removes whole vectors and stamps.
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes the shapes `matches` picks, and returns every vector kept for
/// them.
fn remove_shapes(
    vectors: &mut BTreeMap<Shape, BTreeMap<Seat, Vec<Kept>>>,
    matches: impl Fn(&Shape) -> bool,
) -> Vec<Kept> {
    vectors
        .extract_if(.., |shape, _| matches(shape))
        .flat_map(|(_, members)| members.into_values())
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compressed encodings of G, 2G and 3G: any two make a commitment.
    const POINTS: [&str; 3] = [
        "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
        "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9",
    ];

    /// frost's serialization header of the ciphersuite (format 0, then
    /// the id's CRC-32 prefix), as every encoded commitment starts.
    const HEADER: &str = "00230f8ab3";

    /// The `n`-th of nine distinct commitments.
    fn commitment(n: usize) -> Commitment {
        let hex = format!("{HEADER}{}{}", POINTS[n / 3 % 3], POINTS[n % 3]);
        let bytes = hex::decode(hex).unwrap();
        Commitment::from_bytes(&bytes).unwrap()
    }

    fn seat(n: u16) -> Seat {
        Seat::try_from(n).unwrap()
    }

    fn shape(epoch: u64) -> Shape {
        Shape {
            wallet: WalletId::new("w").unwrap(),
            epoch: WalletEpoch(epoch),
            inputs: 1,
        }
    }

    /// `shape(0)` for two-input transactions.
    fn two_inputs() -> Shape {
        Shape {
            inputs: 2,
            ..shape(0)
        }
    }

    /// Seat `seat_number`'s vector of the commitments numbered `ns`.
    fn vector(seat_number: u16, ns: &[usize], arrived: Instant) -> Kept {
        Kept {
            seat: seat(seat_number),
            arrived,
            commitments: ns.iter().map(|n| commitment(*n)).collect(),
        }
    }

    fn kept(seat_number: u16, n: usize, arrived: Instant) -> Kept {
        vector(seat_number, &[n], arrived)
    }

    fn firsts(vectors: &[Kept]) -> Vec<(Seat, Commitment)> {
        vectors.iter().map(|v| (v.seat, v.commitments[0])).collect()
    }

    #[test]
    fn each_vector_is_taken_once_oldest_first() {
        let pool = CommitmentPool::default();
        let t0 = Instant::now();
        let second = t0 + Duration::from_secs(1);
        assert!(pool.keep(&shape(0), kept(1, 0, second), second).is_none());
        assert!(pool.keep(&shape(0), kept(1, 1, t0), second).is_none());
        assert!(pool.keep(&shape(0), kept(2, 2, t0), second).is_none());
        let first = pool.take(&shape(0), |_| true, second);
        assert!(first.stale.is_empty());
        assert_eq!(
            firsts(&first.ready),
            vec![(seat(1), commitment(1)), (seat(2), commitment(2))]
        );
        let next = pool.take(&shape(0), |_| true, second);
        assert_eq!(firsts(&next.ready), vec![(seat(1), commitment(0))]);
        assert!(pool.take(&shape(0), |_| true, second).ready.is_empty());
    }

    #[test]
    fn old_vectors_are_handed_back_for_release_not_offered() {
        let pool = CommitmentPool::new(Duration::from_secs(10), 4);
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(10);
        assert!(pool.keep(&shape(0), kept(1, 0, t0), late).is_some());
        assert!(pool.keep(&shape(0), kept(1, 1, t0), t0).is_none());
        assert!(pool.keep(&shape(0), kept(1, 2, late), late).is_none());
        let taken = pool.take(&shape(0), |_| true, late);
        assert_eq!(firsts(&taken.stale), vec![(seat(1), commitment(1))]);
        assert_eq!(firsts(&taken.ready), vec![(seat(1), commitment(2))]);
    }

    #[test]
    fn only_a_vector_of_the_runs_shape_is_kept_and_only_once() {
        let pool = CommitmentPool::default();
        let now = Instant::now();
        assert!(pool.keep(&shape(0), vector(1, &[0, 1], now), now).is_some());
        assert!(pool.keep(&shape(0), kept(1, 2, now), now).is_none());
        assert!(pool.keep(&shape(0), kept(1, 2, now), now).is_some());
        assert_eq!(pool.drain(&shape(0).wallet).len(), 1);
    }

    #[test]
    fn the_share_counts_nonces_not_vectors() {
        let pool = CommitmentPool::new(Duration::from_secs(60), 3);
        let now = Instant::now();
        assert!(
            pool.keep(&two_inputs(), vector(1, &[0, 1], now), now)
                .is_none()
        );
        assert!(
            pool.keep(&two_inputs(), vector(1, &[2, 3], now), now)
                .is_some()
        );
    }

    #[test]
    fn a_member_keeps_at_most_its_share() {
        let pool = CommitmentPool::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        for n in 0..2 {
            assert!(pool.keep(&shape(0), kept(1, n, now), now).is_none());
        }
        let over = pool.keep(&shape(0), kept(1, 2, now), now);
        assert_eq!(over.map(|v| v.commitments), Some(vec![commitment(2)]));
        assert!(pool.keep(&shape(0), kept(2, 3, now), now).is_none());
    }

    #[test]
    fn ineligible_members_and_other_shapes_are_not_offered() {
        let pool = CommitmentPool::default();
        let now = Instant::now();
        assert!(pool.keep(&shape(0), kept(1, 0, now), now).is_none());
        assert!(pool.keep(&shape(0), kept(2, 1, now), now).is_none());
        assert!(
            pool.keep(&two_inputs(), vector(3, &[2, 4], now), now)
                .is_none()
        );
        let taken = pool.take(&shape(0), |s| s != seat(2), now);
        assert_eq!(firsts(&taken.ready), vec![(seat(1), commitment(0))]);
        // Seat 2's vector waits for a run that may use it.
        let later = pool.take(&shape(0), |_| true, now);
        assert_eq!(firsts(&later.ready), vec![(seat(2), commitment(1))]);
        assert_eq!(
            firsts(&pool.drain(&shape(0).wallet)),
            vec![(seat(3), commitment(2))]
        );
    }

    #[test]
    fn a_new_epoch_hands_the_old_epochs_vectors_back() {
        let pool = CommitmentPool::default();
        let now = Instant::now();
        assert!(pool.keep(&shape(0), kept(1, 0, now), now).is_none());
        assert!(pool.keep(&shape(2), kept(1, 1, now), now).is_none());
        let taken = pool.take(&shape(1), |_| true, now);
        assert!(taken.ready.is_empty());
        assert_eq!(firsts(&taken.stale), vec![(seat(1), commitment(0))]);
        // A run still at an older epoch retires nothing newer.
        assert_eq!(
            firsts(&pool.drain(&shape(0).wallet)),
            vec![(seat(1), commitment(1))]
        );
    }

    #[test]
    fn a_forgotten_member_is_offered_nothing() {
        let pool = CommitmentPool::default();
        let now = Instant::now();
        for n in 0..3 {
            assert!(pool.keep(&shape(0), kept(1, n, now), now).is_none());
        }
        assert!(pool.keep(&shape(0), kept(2, 3, now), now).is_none());
        assert!(
            pool.keep(&two_inputs(), vector(1, &[4, 5], now), now)
                .is_none()
        );
        assert!(pool.forget(&shape(0), seat(1), now), "the first is excused");
        let taken = pool.take(&shape(0), |_| true, now);
        assert_eq!(firsts(&taken.ready), vec![(seat(2), commitment(3))]);
        assert!(pool.take(&two_inputs(), |_| true, now).ready.is_empty());
        // A run in flight with another of its vectors is not excused again.
        assert!(!pool.forget(&shape(0), seat(1), now));
    }

    #[test]
    fn a_member_that_forgot_is_asked_afresh_for_the_age_limit() {
        let pool = CommitmentPool::new(Duration::from_secs(10), 4);
        let t0 = Instant::now();
        assert!(pool.forget(&shape(0), seat(1), t0));
        let soon = t0 + Duration::from_secs(9);
        assert!(pool.keep(&shape(0), kept(1, 0, soon), soon).is_some());
        assert!(pool.keep(&shape(0), kept(2, 1, soon), soon).is_none());
        // Another wallet's member 1 is another member.
        let other = Shape {
            wallet: WalletId::new("v").unwrap(),
            ..shape(0)
        };
        assert!(pool.keep(&other, kept(1, 2, soon), soon).is_none());
        // Forgetting again within the limit is not excused, and starts it
        // over: a member that keeps forgetting gets nothing kept.
        assert!(!pool.forget(&shape(0), seat(1), soon));
        let later = t0 + Duration::from_secs(10);
        assert!(pool.keep(&shape(0), kept(1, 3, later), later).is_some());
        let after = soon + Duration::from_secs(10);
        assert!(pool.keep(&shape(0), kept(1, 4, after), after).is_none());
        assert!(pool.forget(&shape(0), seat(1), after));
    }
}
