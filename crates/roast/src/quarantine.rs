//! Per-member scores and quarantine, kept by a coordinator's driver between
//! runs: members that time out, refuse or send invalid shares are asked last
//! ([`crate::Config::deferred`]) for a cool-down that grows with repeated
//! faults.
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
    /// Points at which a member is quarantined: a timeout counts one point,
    /// an invalid share this many (at once), a refusal none.
    pub threshold: u32,
    /// The first cool-down; each later one doubles, up to `max_cooldown`.
    pub base_cooldown: Duration,
    /// The longest cool-down.
    pub max_cooldown: Duration,
    /// Good runs in a row, with no points left, that take one quarantine off
    /// the member's count (so its next cool-down is shorter again).
    pub forgive_after: u32,
}

impl Default for Policy {
    /// Three faults, with a good run taking one off: a member that misses
    /// one run in three stays out; a single lost connection never
    /// quarantines. Five minutes, doubling to a day at most: a member that
    /// keeps failing after each release costs at most one fault (one request
    /// timeout, 10 s by default) per cool-down, and a day bounds how long an
    /// operator's fixed member waits without `thresig quarantine release`.
    /// Twenty good runs forgive one quarantine.
    fn default() -> Self {
        Self {
            threshold: 3,
            base_cooldown: Duration::from_secs(5 * 60),
            max_cooldown: Duration::from_secs(24 * 60 * 60),
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
}

/// One member's score and quarantine state.
///
/// # Invariants
/// `points < policy.threshold` after every update: reaching it quarantines
/// the member and starts its points afresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Score {
    /// Timeouts seen, ever.
    pub timeouts: u64,
    /// Refusals seen, ever.
    pub refusals: u64,
    /// Invalid shares seen, ever.
    pub invalid_shares: u64,
    /// Current points towards quarantine; a good run takes one off.
    pub points: u32,
    /// Quarantines that count towards the next cool-down's length.
    pub strikes: u32,
    /// Good runs in a row since the last fault.
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
            Fault::Timeout => {
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
        if self.is_quarantined(now) {
            return false;
        }
        self.points = self.points.saturating_add(points);
        if self.points < policy.threshold.max(1) {
            return false;
        }
        self.points = 0;
        let cooldown = self.cooldown(policy);
        self.strikes = self.strikes.saturating_add(1);
        self.until = Some(unix_secs(now).saturating_add(cooldown.as_secs()));
        true
    }

    /// Counts a run in which the member answered every request it was sent.
    pub fn record_good(&mut self, policy: &Policy) {
        if self.points > 0 {
            self.points -= 1;
            return;
        }
        self.good_streak = self.good_streak.saturating_add(1);
        if self.good_streak >= policy.forgive_after.max(1) {
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
    #[must_use]
    pub fn is_quarantined(&self, now: SystemTime) -> bool {
        self.until.is_some_and(|until| unix_secs(now) < until)
    }

    /// Ends a quarantine early (the operator's `thresig quarantine
    /// release`): the cool-down ends and the points start afresh; the
    /// strikes stay, so a member that fails again gets the longer cool-down.
    pub fn release(&mut self, now: SystemTime) {
        if self.is_quarantined(now) {
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
        assert!(!score.is_quarantined(at(T0)));
        assert!(score.record_fault(at(T0), Fault::Timeout, &policy));
        let cooldown = policy.base_cooldown.as_secs();
        assert!(score.is_quarantined(at(T0)));
        assert!(score.is_quarantined(at(T0 + cooldown - 1)));
        assert!(!score.is_quarantined(at(T0 + cooldown)));
        assert_eq!(score.timeouts, 3);
        assert_eq!(score.points, 0);
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
        score.record_good(&policy);
        score.record_good(&policy);
        assert_eq!(score.points, 0);
        // Two faults after two good runs do not quarantine.
        score.record_fault(at(T0), Fault::Timeout, &policy);
        score.record_fault(at(T0), Fault::Timeout, &policy);
        assert!(!score.is_quarantined(at(T0)));
        score.record_fault(at(T0), Fault::Timeout, &policy);
        assert_eq!(score.strikes, 1);
        let longer = score.cooldown(&policy);
        for _ in 0..policy.forgive_after {
            score.record_good(&policy);
        }
        assert_eq!(score.strikes, 0);
        assert!(score.cooldown(&policy) < longer);
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
        assert_eq!(score.points, 0);
        assert_eq!(score.timeouts, u64::from(policy.threshold * 2));
    }

    #[test]
    fn one_invalid_share_quarantines_at_once() {
        let policy = Policy::default();
        let mut score = Score::default();
        assert!(score.record_fault(at(T0), Fault::InvalidShare, &policy));
        assert!(score.is_quarantined(at(T0 + 1)));
        assert_eq!(score.invalid_shares, 1);
    }

    #[test]
    fn release_ends_the_cooldown_but_keeps_the_strikes() {
        let policy = Policy::default();
        let mut score = Score::default();
        score.record_fault(at(T0), Fault::InvalidShare, &policy);
        score.release(at(T0 + 10));
        assert!(!score.is_quarantined(at(T0 + 10)));
        assert_eq!(score.strikes, 1);
        assert_eq!(score.cooldown(&policy), policy.base_cooldown * 2);
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
