//! UTC time as the policy sees it: a Unix timestamp passed in by the caller,
//! and weekly time windows.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch (UTC). The policy never reads a clock: the
/// caller passes the current time, so evaluation is deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixTime(pub u64);

/// Seconds in a minute and a day, for the rate-limit windows.
pub(crate) const MINUTE_SECS: u64 = 60;
pub(crate) const DAY_SECS: u64 = 86_400;

impl UnixTime {
    /// The UTC day of the week.
    #[must_use]
    pub fn weekday(self) -> Weekday {
        // 1970-01-01 was a Thursday, index 3 when Monday is 0.
        Weekday::ALL
            .get(usize::try_from((self.0 / DAY_SECS + 3) % 7).unwrap_or(0))
            .copied()
            .unwrap_or(Weekday::Mon)
    }

    /// Minutes since UTC midnight (0..1440).
    #[must_use]
    pub const fn minute_of_day(self) -> u16 {
        // < 1440, so the narrowing is exact.
        ((self.0 % DAY_SECS) / MINUTE_SECS) as u16
    }

    /// This time minus `secs`, saturating at the epoch.
    #[must_use]
    pub const fn minus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_sub(secs))
    }
}

/// A day of the week, spelled `mon` … `sun` in configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Every day, Monday first.
    pub const ALL: [Self; 7] = [
        Self::Mon,
        Self::Tue,
        Self::Wed,
        Self::Thu,
        Self::Fri,
        Self::Sat,
        Self::Sun,
    ];
}

/// A weekly UTC window during which signing is allowed: on the given days,
/// from `start` (inclusive) to `end` (exclusive), in minutes since midnight.
///
/// # Invariants
/// `days` is not empty and `start < end <= 1440`; a window across midnight
/// is written as two windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeWindow {
    pub(crate) days: BTreeSet<Weekday>,
    pub(crate) start: u16,
    pub(crate) end: u16,
}

impl TimeWindow {
    /// Whether `now` falls inside this window.
    #[must_use]
    pub fn contains(&self, now: UnixTime) -> bool {
        let minute = now.minute_of_day();
        self.days.contains(&now.weekday()) && self.start <= minute && minute < self.end
    }
}

/// Parses `HH:MM` (00:00 to 24:00) into minutes since midnight.
pub(crate) fn parse_hh_mm(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    let minutes = h.checked_mul(60)?.checked_add(m)?;
    (m < 60 && minutes <= 1440).then_some(minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        // 2024-01-01T00:00:00Z was a Monday; 2024-03-02T13:45:10Z a Saturday.
        assert_eq!(UnixTime(1_704_067_200).weekday(), Weekday::Mon);
        assert_eq!(UnixTime(1_709_387_110).weekday(), Weekday::Sat);
        assert_eq!(UnixTime(1_709_387_110).minute_of_day(), 13 * 60 + 45);
        assert_eq!(UnixTime(0).weekday(), Weekday::Thu);
    }

    #[test]
    fn hh_mm() {
        assert_eq!(parse_hh_mm("00:00"), Some(0));
        assert_eq!(parse_hh_mm("08:30"), Some(510));
        assert_eq!(parse_hh_mm("24:00"), Some(1440));
        for bad in ["24:01", "8:30", "08:60", "0830", "aa:bb", "", "+1:00"] {
            assert_eq!(parse_hh_mm(bad), None, "{bad}");
        }
    }
}
