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
/// the life of the wallet (never derived from a rotatable key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seat(u16);

impl Seat {
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

impl fmt::Display for Seat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A validated `(threshold, signers)` pair: `2 <= threshold <= signers <= MAX_SIGNERS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupParams {
    threshold: u16,
    signers: u16,
}

impl GroupParams {
    /// Validates a threshold `t` and group size `n`.
    ///
    /// # Errors
    /// [`Error::InvalidParams`] unless `2 <= t <= n <= MAX_SIGNERS`.
    pub fn new(threshold: u16, signers: u16) -> Result<Self> {
        if threshold < 2 || threshold > signers || signers > MAX_SIGNERS {
            return Err(Error::InvalidParams { threshold, signers });
        }
        Ok(Self { threshold, signers })
    }

    /// Minimum number of signers for a signature (`t`).
    #[must_use]
    pub fn threshold(self) -> u16 {
        self.threshold
    }

    /// Number of seats (`n`).
    #[must_use]
    pub fn signers(self) -> u16 {
        self.signers
    }

    /// All seats `1..=n`, ascending.
    pub fn seats(self) -> impl Iterator<Item = Seat> {
        (1..=self.signers).map(Seat)
    }

    /// Checks that `seat` is one of `1..=n`.
    ///
    /// # Errors
    /// [`Error::UnknownSeat`] otherwise.
    pub fn check_seat(self, seat: Seat) -> Result<()> {
        if seat.0 > self.signers {
            return Err(Error::UnknownSeat { seat: seat.0 });
        }
        Ok(())
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
}
