//! Per-member scores and quarantine, kept by a coordinator's driver between
//! runs: members that time out or send invalid shares are asked last
//! ([`crate::Config::deferred`]) for a cool-down that grows with repeated
//! faults. Refusals are counted, but never quarantine.
//!
//! Pure bookkeeping, like the coordinator: every function takes the wall
//! clock's `now` as an argument, and the record encodes to bytes for the
//! driver's own store. Quarantine never makes a signature impossible: a
//! quarantined seat is only deferred, and the coordinator asks it as soon as
//! the others alone cannot make a session.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How scores turn into quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Points at which a member is quarantined: a timeout or a slow answer
    /// counts one point, an invalid share this many (at once), a refusal
    /// none.
    pub threshold: u32,
    /// The first cool-down; each later one doubles, up to `max_cooldown`.
    pub base_cooldown: Duration,
    /// The longest cool-down. No quarantine lasts longer, even one set by a
    /// clock that ran ahead ([`Score::is_quarantined`]).
    pub max_cooldown: Duration,
    /// Good runs in a row that take one point off: fewer faults than good
    /// runs still add up, so a member failing every other run is
    /// quarantined.
    pub good_runs_per_point: u32,
    /// Good runs in a row, with no points left, that take one quarantine off
    /// the member's count (so its next cool-down is shorter again).
    pub forgive_after: u32,
}

impl Default for Policy {
    /// Three faults, with three good runs in a row taking one off: a member
    /// that fails one run in three or more often is quarantined (after
    /// three faults), a single lost connection never. Five minutes,
    /// doubling to a day at most: a member whose cool-down ended is on
    /// probation, quarantined again by its next fault, so one that keeps
    /// failing costs at most one fault (one request timeout, 10 s by
    /// default) per cool-down; a day bounds how long an operator's fixed
    /// member waits without `thresig quarantine release`. Twenty good runs
    /// with no points left forgive one quarantine.
    fn default() -> Self {
        Self {
            threshold: 3,
            base_cooldown: Duration::from_secs(5 * 60),
            max_cooldown: Duration::from_secs(24 * 60 * 60),
            good_runs_per_point: 3,
            forgive_after: 20,
        }
    }
}

/// A fault the driver saw in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// No answer within the request timeout, or the member was unreachable.
    Timeout,
    /// The member refused a request. Counted, but it scores no point: a
    /// refusal is an answer (its policy, its nonce state, a session the
    /// coordinator's own runs raced for), so a member enforcing a stricter
    /// policy, or a requester sending forbidden payments, never
    /// quarantines it.
    Refusal,
    /// The member sent an invalid share (the driver keeps its proof).
    InvalidShare,
    /// The member answered a round-2 request, or refused it, only after
    /// the driver's slow mark (half the request timeout): the run waited
    /// for it as for a timeout, so it scores a point like one (and counts
    /// among the timeouts). Without it a member could hold every session
    /// it is in until just before the timeout and then refuse, for free.
    Slow,
}

/// One member's score and quarantine state.
///
/// # Invariants
/// `points < policy.threshold` after every update: reaching it quarantines
/// the member, whose points then stand one short of the threshold
/// (probation: its next fault after the cool-down quarantines it again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Score {
    /// Timeouts and slow answers ([`Fault::Slow`]) seen, ever.
    pub timeouts: u64,
    /// Refusals seen, ever.
    pub refusals: u64,
    /// Invalid shares seen, ever.
    pub invalid_shares: u64,
    /// Current points towards quarantine; good runs in a row take them off
    /// ([`Policy::good_runs_per_point`]).
    pub points: u32,
    /// Quarantines that count towards the next cool-down's length.
    pub strikes: u32,
    /// Good runs in a row since the last fault or the last point or
    /// strike they took off; with neither left to take off it stops at
    /// [`Policy::forgive_after`] ([`Score::record_good`]).
    pub good_streak: u32,
    /// End of the current or last cool-down, in seconds since the Unix
    /// epoch.
    pub until: Option<u64>,
}

/// The encoding's version byte; a record of another version is refused, not
/// guessed at.
const VERSION: u8 = 1;
/// Version byte plus four u64 and three u32 fields and the `until` flag and
/// value.
const ENCODED_LEN: usize = 1 + 3 * 8 + 3 * 4 + 1 + 8;

fn unix_secs(time: SystemTime) -> u64 {
    // A clock before 1970 reads as the epoch: quarantine then ends early,
    // which fails open (the member is asked) rather than shut.
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl Score {
    /// Counts `fault` at `now`; quarantines the member when its points reach
    /// the policy's threshold. Returns whether this fault quarantined it.
    pub fn record_fault(&mut self, now: SystemTime, fault: Fault, policy: &Policy) -> bool {
        let points = match fault {
            Fault::Timeout | Fault::Slow => {
                self.timeouts = self.timeouts.saturating_add(1);
                1
            }
            Fault::Refusal => {
                self.refusals = self.refusals.saturating_add(1);
                return false;
            }
            Fault::InvalidShare => {
                self.invalid_shares = self.invalid_shares.saturating_add(1);
                policy.threshold
            }
        };
        self.good_streak = 0;
        // Runs that started before the member was quarantined still report
        // its faults; they are counted, but the member is out already, so
        // they neither add points nor start a longer cool-down.
        if self.is_quarantined(now, policy) {
            return false;
        }
        let threshold = policy.threshold.max(1);
        self.points = self.points.saturating_add(points);
        if self.points < threshold {
            return false;
        }
        // Probation: the member comes back one fault short of the next
        // quarantine, which good runs wear off as usual.
        self.points = threshold - 1;
        let cooldown = self.cooldown(policy);
        self.strikes = self.strikes.saturating_add(1);
        self.until = Some(unix_secs(now).saturating_add(cooldown.as_secs()));
        true
    }

    /// Counts a run in which the member answered every request it was sent.
    ///
    /// With no points and no strikes there is nothing for good runs to
    /// take off, and the streak stops at [`Policy::forgive_after`]: a
    /// member that keeps answering then has a score that no longer
    /// changes, so its coordinator stops rewriting it after every run.
    pub fn record_good(&mut self, policy: &Policy) {
        let forgive_after = policy.forgive_after.max(1);
        if self.points == 0 && self.strikes == 0 {
            self.good_streak = self.good_streak.saturating_add(1).min(forgive_after);
            return;
        }
        self.good_streak = self.good_streak.saturating_add(1);
        if self.points > 0 {
            if self.good_streak >= policy.good_runs_per_point.max(1) {
                self.good_streak = 0;
                self.points -= 1;
            }
            return;
        }
        if self.good_streak >= forgive_after {
            self.good_streak = 0;
            self.strikes = self.strikes.saturating_sub(1);
        }
    }

    /// The cool-down the next quarantine gets: the base doubled once per
    /// strike, capped.
    #[must_use]
    pub fn cooldown(&self, policy: &Policy) -> Duration {
        let factor = 1u32.checked_shl(self.strikes).unwrap_or(u32::MAX);
        policy
            .base_cooldown
            .checked_mul(factor)
            .map_or(policy.max_cooldown, |d| d.min(policy.max_cooldown))
    }

    /// Whether the member is quarantined at `now`: its cool-down has not
    /// ended. It ends by itself; nothing needs to be written.
    ///
    /// A cool-down ending further ahead than the longest one was set by a
    /// clock that ran ahead: it is ignored, failing open (the member is
    /// asked) as for a clock before 1970, and the member's next fault
    /// sets a cool-down from the right time.
    #[must_use]
    pub fn is_quarantined(&self, now: SystemTime, policy: &Policy) -> bool {
        let now = unix_secs(now);
        self.until
            .is_some_and(|until| now < until && until - now <= policy.max_cooldown.as_secs())
    }

    /// Ends a quarantine early (the operator's `thresig quarantine
    /// release`): the cool-down ends and the points start afresh (the
    /// operator vouches for the member: no probation); the strikes stay, so
    /// a member that fails again gets the longer cool-down.
    pub fn release(&mut self, now: SystemTime, policy: &Policy) {
        if self.is_quarantined(now, policy) {
            self.until = Some(unix_secs(now));
        }
        self.points = 0;
    }

    /// The record's bytes, for the driver's store.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(VERSION);
        for value in [self.timeouts, self.refusals, self.invalid_shares] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        for value in [self.points, self.strikes, self.good_streak] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        out.push(u8::from(self.until.is_some()));
        out.extend_from_slice(&self.until.unwrap_or(0).to_be_bytes());
        out
    }

    /// Decodes [`Score::to_bytes`]; `None` for anything else (another
    /// version, another length, a flag other than 0 or 1).
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION || bytes.len() != ENCODED_LEN {
            return None;
        }
        let (timeouts, rest) = take_u64(rest)?;
        let (refusals, rest) = take_u64(rest)?;
        let (invalid_shares, rest) = take_u64(rest)?;
        let (points, rest) = take_u32(rest)?;
        let (strikes, rest) = take_u32(rest)?;
        let (good_streak, rest) = take_u32(rest)?;
        let (&flag, rest) = rest.split_first()?;
        let (until, _) = take_u64(rest)?;
        let until = match flag {
            0 if until == 0 => None,
            1 => Some(until),
            _ => return None,
        };
        Some(Self {
            timeouts,
            refusals,
            invalid_shares,
            points,
            strikes,
            good_streak,
            until,
        })
    }
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const T0: u64 = 1_800_000_000;

    #[test]
    fn three_timeouts_quarantine_and_the_cooldown_ends_by_itself() {
        let policy = Policy::default();
        let mut score = Score::default();
        assert!(!score.record_fault(at(T0), Fault::Timeout, &policy));
        assert!(!score.record_fault(at(T0), Fault::Timeout, &policy));
        assert!(!score.is_quarantined(at(T0), &policy));
        assert!(score.record_fault(at(T0), Fault::Timeout, &policy));
        let cooldown = policy.base_cooldown.as_secs();
        assert!(score.is_quarantined(at(T0), &policy));
        assert!(score.is_quarantined(at(T0 + cooldown - 1), &policy));
        assert!(!score.is_quarantined(at(T0 + cooldown), &policy));
        assert_eq!(score.timeouts, 3);
        assert_eq!(score.points, policy.threshold - 1, "on probation");
    }

    #[test]
    fn each_quarantine_doubles_the_cooldown_up_to_the_cap() {
        let policy = Policy::default();
        let mut score = Score::default();
        let mut now = T0;
        let mut lengths = Vec::new();
        for _ in 0..12 {
            for _ in 0..policy.threshold {
                score.record_fault(at(now), Fault::Timeout, &policy);
            }
            let until = score.until.unwrap();
            lengths.push(until - now);
            now = until;
        }
        let base = policy.base_cooldown.as_secs();
        let cap = policy.max_cooldown.as_secs();
        for (i, length) in lengths.iter().enumerate() {
            let expected = (base << i).min(cap);
            assert_eq!(*length, expected, "quarantine {i}");
        }
        assert_eq!(*lengths.last().unwrap(), cap);
    }

    #[test]
    fn good_runs_take_points_off_and_forgive_strikes() {
        let policy = Policy::default();
        let mut score = Score::default();
        score.record_fault(at(T0), Fault::Timeout, &policy);
        score.record_fault(at(T0), Fault::Timeout, &policy);
        for _ in 0..2 * policy.good_runs_per_point - 1 {
            score.record_good(&policy);
        }
        assert_eq!(score.points, 1);
        score.record_good(&policy);
        assert_eq!(score.points, 0);
        // Two faults after the good runs took the points off do not
        // quarantine.
        score.record_fault(at(T0), Fault::Timeout, &policy);
        score.record_fault(at(T0), Fault::Timeout, &policy);
        assert!(!score.is_quarantined(at(T0), &policy));
        score.record_fault(at(T0), Fault::Timeout, &policy);
        assert_eq!(score.strikes, 1);
        let longer = score.cooldown(&policy);
        // The probation's points come off first, then the quarantine.
        let probation = (policy.threshold - 1) * policy.good_runs_per_point;
        for _ in 0..probation + policy.forgive_after - 1 {
            score.record_good(&policy);
        }
        assert_eq!(score.strikes, 1);
        score.record_good(&policy);
        assert_eq!(score.strikes, 0);
        assert!(score.cooldown(&policy) < longer);
    }

    /// With nothing to take off, the streak stops where it would forgive
    /// a quarantine and the score stops changing; a fault still counts
    /// from there as from a fresh score.
    #[test]
    fn a_clean_members_score_stops_changing_after_forgive_after_good_runs() {
        let policy = Policy::default();
        let mut score = Score::default();
        for _ in 0..policy.forgive_after {
            score.record_good(&policy);
        }
        assert_eq!(score.good_streak, policy.forgive_after);
        let settled = score.clone();
        score.record_good(&policy);
        assert_eq!(score, settled);
        score.record_fault(at(T0), Fault::Timeout, &policy);
        assert_eq!((score.points, score.good_streak), (1, 0));
        for _ in 0..policy.good_runs_per_point {
            score.record_good(&policy);
        }
        assert_eq!(score.points, 0);
    }

    #[test]
    fn faults_reported_during_a_cooldown_count_but_do_not_lengthen_it() {
        let policy = Policy::default();
        let mut score = Score::default();
        score.record_fault(at(T0), Fault::InvalidShare, &policy);
        let until = score.until;
        for _ in 0..policy.threshold * 2 {
            assert!(!score.record_fault(at(T0 + 1), Fault::Timeout, &policy));
        }
        assert_eq!(score.until, until);
        assert_eq!(score.strikes, 1);
        assert_eq!(score.points, policy.threshold - 1);
        assert_eq!(score.timeouts, u64::from(policy.threshold * 2));
    }

    #[test]
    fn one_invalid_share_quarantines_at_once() {
        let policy = Policy::default();
        let mut score = Score::default();
        assert!(score.record_fault(at(T0), Fault::InvalidShare, &policy));
        assert!(score.is_quarantined(at(T0 + 1), &policy));
        assert_eq!(score.invalid_shares, 1);
    }

    #[test]
    fn release_ends_the_cooldown_but_keeps_the_strikes() {
        let policy = Policy::default();
        let mut score = Score::default();
        score.record_fault(at(T0), Fault::InvalidShare, &policy);
        score.release(at(T0 + 10), &policy);
        assert!(!score.is_quarantined(at(T0 + 10), &policy));
        assert_eq!(score.strikes, 1);
        assert_eq!(score.cooldown(&policy), policy.base_cooldown * 2);
    }

    /// A member whose cool-down ended by itself is on probation: the next
    /// fault quarantines it again, for twice as long, so a member that
    /// keeps failing costs one fault per cool-down.
    #[test]
    fn one_fault_after_a_cooldown_quarantines_again() {
        let policy = Policy::default();
        let mut score = Score::default();
        for _ in 0..policy.threshold {
            score.record_fault(at(T0), Fault::Timeout, &policy);
        }
        let until = score.until.unwrap();
        assert!(!score.is_quarantined(at(until), &policy));
        assert!(score.record_fault(at(until), Fault::Timeout, &policy));
        assert!(score.is_quarantined(at(until), &policy));
        assert_eq!(
            score.until,
            Some(until + 2 * policy.base_cooldown.as_secs())
        );
    }

    /// A member failing every other run is quarantined: good runs must not
    /// wear its points down as fast as its faults add them.
    #[test]
    fn a_member_failing_every_other_run_is_quarantined() {
        let policy = Policy::default();
        let mut score = Score::default();
        let quarantined = (0..100).any(|_| {
            score.record_fault(at(T0), Fault::Timeout, &policy);
            score.record_good(&policy);
            score.is_quarantined(at(T0), &policy)
        });
        assert!(quarantined, "{score:?}");
    }

    /// A fault recorded while the clock ran ten years ahead does not keep
    /// the member out for ten years once the clock is right again: no
    /// quarantine outlasts the longest cool-down.
    #[test]
    fn a_clock_that_ran_ahead_quarantines_no_longer_than_the_longest_cooldown() {
        let policy = Policy::default();
        let ahead = T0 + 10 * 365 * 24 * 60 * 60;
        let mut score = Score::default();
        score.record_fault(at(ahead), Fault::InvalidShare, &policy);
        assert!(score.is_quarantined(at(ahead), &policy));
        let longest = policy.max_cooldown.as_secs();
        assert!(!score.is_quarantined(at(T0 + longest), &policy));
    }

    #[test]
    fn records_round_trip_and_damaged_ones_are_refused() {
        let policy = Policy::default();
        let mut score = Score::default();
        score.record_fault(at(T0), Fault::InvalidShare, &policy);
        score.record_fault(at(T0), Fault::Timeout, &policy);
        let bytes = score.to_bytes();
        assert_eq!(Score::from_bytes(&bytes), Some(score.clone()));
        assert_eq!(
            Score::from_bytes(&Score::default().to_bytes()),
            Some(Score::default())
        );
        assert_eq!(Score::from_bytes(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Score::from_bytes(&longer), None);
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(Score::from_bytes(&version), None);
        let mut flag = bytes;
        flag[ENCODED_LEN - 9] = 2;
        assert_eq!(Score::from_bytes(&flag), None);
    }
}
