//! Seats (member indices) and validated group parameters.

use std::fmt;

use frost_secp256k1_tr::Identifier;

use crate::{Error, Result};

/// Largest group this crate accepts. tBTC-style wallets use 100 seats; the
/// bound keeps DKG work (quadratic in the group size) and message sizes finite.
pub const MAX_SIGNERS: u16 = 1000;

/// A member's 1-based index in a wallet's roster.
///
/// The FROST identifier of a seat is the scalar equal to its number, fixed for
/// the life of the wallet (never derived from a rotatable key). Serialized as
/// its number; deserializing validates it like [`Seat::try_from`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u16", into = "u16")]
pub struct Seat(u16);

impl Seat {
    /// Seat 1, which every roster has.
    pub const FIRST: Self = Self(1);

    /// The seat number, `1..=MAX_SIGNERS`.
    #[must_use]
    pub fn get(self) -> u16 {
        self.0
    }

    /// The FROST identifier of this seat.
    pub(crate) fn identifier(self) -> Identifier {
        #[allow(
            clippy::expect_used,
            reason = "a Seat is never zero, and every nonzero u16 is a valid identifier"
        )]
        Identifier::try_from(self.0).expect("seat is nonzero")
    }

    /// The seat whose identifier this is, if it is one (identifiers derived
    /// from seats are small integers; anything else is refused).
    pub(crate) fn from_identifier(id: &Identifier) -> Option<Self> {
        let bytes = id.serialize();
        let (high, low) = bytes.split_at(bytes.len().checked_sub(2)?);
        if high.iter().any(|b| *b != 0) {
            return None;
        }
        let value = u16::from_be_bytes(low.try_into().ok()?);
        Seat::try_from(value).ok()
    }
}

impl TryFrom<u16> for Seat {
    type Error = Error;

    /// # Errors
    /// [`Error::UnknownSeat`] for 0 or a number above [`MAX_SIGNERS`].
    fn try_from(value: u16) -> Result<Self> {
        if value == 0 || value > MAX_SIGNERS {
            return Err(Error::UnknownSeat { seat: value });
        }
        Ok(Self(value))
    }
}

impl From<Seat> for u16 {
    fn from(seat: Seat) -> Self {
        seat.0
    }
}

impl fmt::Display for Seat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Words of the roster bit set: one bit per seat number `0..=MAX_SIGNERS`.
const ROSTER_WORDS: usize = (MAX_SIGNERS as usize + 1).div_ceil(64);

/// A validated threshold and roster: `2 <= threshold <= signers <= MAX_SIGNERS`,
/// where `signers` is the number of seats in the roster.
///
/// [`GroupParams::new`] makes the roster `1..=n` (a fresh group). A wallet
/// whose refresh removed seats has a roster with gaps
/// ([`crate::WalletKey::params`]); [`Self::seats`] and [`Self::check_seat`]
/// always describe the roster, never a range of numbers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GroupParams {
    threshold: u16,
    signers: u16,
    /// Bit `s` set iff seat `s` is in the roster.
    roster: [u64; ROSTER_WORDS],
}

impl GroupParams {
    /// Validates a threshold `t` and group size `n`; the roster is seats `1..=n`.
    ///
    /// # Errors
    /// [`Error::InvalidParams`] unless `2 <= t <= n <= MAX_SIGNERS`.
    pub fn new(threshold: u16, signers: u16) -> Result<Self> {
        if signers > MAX_SIGNERS {
            return Err(Error::InvalidParams { threshold, signers });
        }
        Self::with_roster(threshold, (1..=signers).map(Seat))
    }

    /// Validates a threshold `t` and an explicit roster (duplicates count once).
    ///
    /// # Errors
    /// [`Error::InvalidParams`] unless `2 <= t <= roster size`.
    pub(crate) fn with_roster(
        threshold: u16,
        roster: impl IntoIterator<Item = Seat>,
    ) -> Result<Self> {
        let mut bits = [0u64; ROSTER_WORDS];
        for seat in roster {
            let (word, bit) = Self::position(seat);
            if let Some(w) = bits.get_mut(word) {
                *w |= bit;
            }
        }
        let count: u32 = bits.iter().map(|w| w.count_ones()).sum();
        let signers = u16::try_from(count).unwrap_or(u16::MAX);
        if threshold < 2 || threshold > signers || signers > MAX_SIGNERS {
            return Err(Error::InvalidParams { threshold, signers });
        }
        Ok(Self {
            threshold,
            signers,
            roster: bits,
        })
    }

    fn position(seat: Seat) -> (usize, u64) {
        (usize::from(seat.0 / 64), 1u64 << (seat.0 % 64))
    }

    /// Minimum number of signers for a signature (`t`).
    #[must_use]
    pub fn threshold(self) -> u16 {
        self.threshold
    }

    /// Number of seats in the roster (`n`).
    #[must_use]
    pub fn signers(self) -> u16 {
        self.signers
    }

    /// The seats of the roster, ascending (`1..=n` for [`Self::new`]).
    pub fn seats(self) -> impl Iterator<Item = Seat> {
        (1..=MAX_SIGNERS)
            .map(Seat)
            .filter(move |s| self.contains(*s))
    }

    fn contains(self, seat: Seat) -> bool {
        let (word, bit) = Self::position(seat);
        self.roster.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Checks that `seat` is in the roster.
    ///
    /// # Errors
    /// [`Error::UnknownSeat`] otherwise.
    pub fn check_seat(self, seat: Seat) -> Result<()> {
        if !self.contains(seat) {
            return Err(Error::UnknownSeat { seat: seat.0 });
        }
        Ok(())
    }
}

impl fmt::Debug for GroupParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seats: Vec<u16> = self.seats().map(Seat::get).collect();
        f.debug_struct("GroupParams")
            .field("threshold", &self.threshold)
            .field("signers", &self.signers)
            .field("seats", &seats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_round_trips_for_every_seat() {
        for n in [1u16, 2, 3, 255, 256, 999, MAX_SIGNERS] {
            let seat = Seat::try_from(n).unwrap();
            assert_eq!(Seat::from_identifier(&seat.identifier()), Some(seat));
        }
    }

    #[test]
    fn derived_identifiers_are_refused_as_seats() {
        let id = Identifier::derive(b"not a seat").unwrap();
        assert_eq!(Seat::from_identifier(&id), None);
    }

    #[test]
    fn params_are_validated() {
        assert!(GroupParams::new(2, 3).is_ok());
        assert!(GroupParams::new(1, 3).is_err());
        assert!(GroupParams::new(4, 3).is_err());
        assert!(GroupParams::new(2, MAX_SIGNERS + 1).is_err());
        assert!(Seat::try_from(0).is_err());
    }

    #[test]
    fn a_roster_with_gaps_lists_and_checks_only_its_seats() {
        let roster = [1u16, 3, 4].map(|n| Seat::try_from(n).unwrap());
        let params = GroupParams::with_roster(2, roster).unwrap();
        assert_eq!(params.signers(), 3);
        assert_eq!(params.seats().collect::<Vec<_>>(), roster.to_vec());
        assert!(params.check_seat(roster[2]).is_ok());
        assert!(params.check_seat(Seat::try_from(2).unwrap()).is_err());
        assert!(GroupParams::with_roster(4, roster).is_err());
        let full = GroupParams::new(2, MAX_SIGNERS).unwrap();
        assert_eq!(full.seats().count(), usize::from(MAX_SIGNERS));
    }
}
