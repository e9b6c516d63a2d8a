//! The transport's own identifiers: seats as the wire and certificates
//! carry them, and the cluster's name. Wallet ids, epochs and DKG sessions
//! are the signer engine's types, validated when the wire is decoded.

use std::fmt;

use crate::error::{Error, InvalidId};

pub use thresig_crypto::Seat;

/// A seat number as the wire carries it (protobuf `uint32`).
///
/// # Errors
/// [`Error::InvalidId`] for 0 or a number that is not a seat.
pub(crate) fn seat_from_wire(value: u32) -> Result<Seat, Error> {
    u16::try_from(value)
        .ok()
        .and_then(|seat| Seat::try_from(seat).ok())
        .ok_or(Error::InvalidId(InvalidId::Seat))
}

/// Whether `text` is 1 to `max` bytes, each accepted by `alphabet`.
fn is_token(text: &str, max: usize, alphabet: fn(u8) -> bool) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(alphabet)
}

/// The name of a cluster: the DNS suffix of its members' certificate names
/// (`seat-<n>.<cluster>`), so a certificate of another cluster signed by the
/// same CA still names no seat here.
///
/// # Invariants
/// 1 to 63 bytes of `[a-z0-9-]` (one DNS label), not starting or ending with
/// `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName(String);

impl ClusterName {
    /// Validates a cluster name.
    ///
    /// # Errors
    /// [`Error::InvalidId`] when it is not one lowercase DNS label.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        let alphabet = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if is_token(&name, 63, alphabet) && !name.starts_with('-') && !name.ends_with('-') {
            Ok(Self(name))
        } else {
            Err(Error::InvalidId(InvalidId::Cluster))
        }
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The DNS name a member's certificate carries for `seat`:
    /// `seat-<n>.<cluster>`. Clients verify a signer's server certificate
    /// against this name, and the server reads a client's seat from it.
    #[must_use]
    pub fn seat_name(&self, seat: Seat) -> String {
        format!("seat-{}.{}", seat.get(), self.0)
    }

    /// The seat a certificate DNS name stands for in this cluster, if it is
    /// exactly `seat-<n>.<cluster>` with a canonical decimal `n`.
    pub(crate) fn seat_of(&self, dns_name: &str) -> Option<Seat> {
        let number = dns_name
            .strip_prefix("seat-")?
            .strip_suffix(self.0.as_str())?
            .strip_suffix('.')?;
        let canonical = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
            && !number.starts_with('0');
        if !canonical {
            return None;
        }
        number
            .parse::<u32>()
            .ok()
            .and_then(|n| seat_from_wire(n).ok())
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_names_round_trip_and_foreign_names_are_refused() {
        let cluster = ClusterName::new("demo").unwrap();
        let other = ClusterName::new("other").unwrap();
        for n in [1u16, 7, 1000] {
            let seat = Seat::try_from(n).unwrap();
            assert_eq!(cluster.seat_of(&cluster.seat_name(seat)), Some(seat));
            assert_eq!(other.seat_of(&cluster.seat_name(seat)), None);
        }
        for bad in [
            "seat-0.demo",
            "seat-01.demo",
            "seat-1001.demo",
            "seat-.demo",
            "seat-1demo",
            "seat-1.demo.evil",
            "xseat-1.demo",
            "seat-+1.demo",
            "seat-1.xdemo",
        ] {
            assert_eq!(cluster.seat_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_validated() {
        assert!(seat_from_wire(0).is_err());
        assert!(seat_from_wire(1001).is_err());
        assert!(seat_from_wire(65_537).is_err());
        assert_eq!(seat_from_wire(7).map(Seat::get).ok(), Some(7));
        assert!(ClusterName::new("Demo").is_err());
        assert!(ClusterName::new("-demo").is_err());
        assert!(ClusterName::new("demo.x").is_err());
    }
}
