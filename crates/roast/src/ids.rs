//! Identifiers the coordinator hands out or receives.

use std::fmt;

/// A member's 1-based index in a wallet's roster.
///
/// Placeholder with the same shape as the crypto crate's `Seat`, which
/// replaces it once that crate's signing API is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seat(u16);

impl Seat {
    /// The seat number (never zero).
    #[must_use]
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for Seat {
    type Error = crate::Error;

    /// # Errors
    /// [`crate::Error::ZeroSeat`] for 0.
    fn try_from(value: u16) -> Result<Self, Self::Error> {
        if value == 0 {
            return Err(crate::Error::ZeroSeat);
        }
        Ok(Self(value))
    }
}

impl fmt::Display for Seat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One ROAST signing session of a coordinator run: a set of exactly t signers
/// and the signing packages built from their commitments.
///
/// Numbered from 1 in the order the coordinator starts them, so the number
/// of a session is also how many sessions the run has started so far. The id
/// is local to one [`crate::Coordinator`]: signers key their nonces by their
/// own commitments, never by this id, so a reused id cannot confuse them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u32);

impl SessionId {
    /// The first session of a run.
    pub(crate) const FIRST: Self = Self(1);

    /// The session number, starting at 1.
    #[must_use]
    pub fn get(self) -> u32 {
        self.0
    }

    /// The id after this one (saturating: a run never starts 2^32 sessions,
    /// since it starts at most one per fresh commitment vector it receives).
    pub(crate) fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
