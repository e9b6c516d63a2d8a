//! The session identifier the coordinator hands out.

use std::fmt;

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

    /// The id after this one, or `None` after `u32::MAX`: the coordinator
    /// then fails the run ([`crate::Failure::SessionsExhausted`]) rather than
    /// hand out an id twice.
    pub(crate) fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_end_instead_of_repeating() {
        assert_eq!(SessionId::FIRST.next(), Some(SessionId(2)));
        assert_eq!(SessionId(u32::MAX - 1).next(), Some(SessionId(u32::MAX)));
        assert_eq!(SessionId(u32::MAX).next(), None);
    }
}
