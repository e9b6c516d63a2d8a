//! The share refresh's part of a DKG proposal on the wire.

use thresig_crypto::Seat;
use thresig_engine::{DkgKind, WalletEpoch};

use crate::error::Error;
use crate::ids::seat_from_wire;
use crate::proto;

/// The proposal's kind: a refresh when the field is present.
///
/// # Errors
/// [`Error::InvalidId`] for a removed seat that is no seat number;
/// [`Error::Malformed`] for removed seats not strictly ascending (one
/// encoding per set, as the engine compares them).
pub(super) fn kind_from_wire(wire: Option<proto::DkgRefresh>) -> Result<DkgKind, Error> {
    let Some(wire) = wire else {
        return Ok(DkgKind::Fresh);
    };
    let removed = wire
        .removed
        .into_iter()
        .map(seat_from_wire)
        .collect::<Result<Vec<Seat>, _>>()?;
    if !removed.windows(2).all(|w| w.first() < w.get(1)) {
        return Err(Error::Malformed("removed seats not strictly ascending"));
    }
    Ok(DkgKind::Refresh {
        from_epoch: WalletEpoch(wire.from_epoch),
        removed,
    })
}

/// The wire field of a proposal's kind (absent for a fresh DKG).
pub(super) fn kind_to_wire(kind: DkgKind) -> Option<proto::DkgRefresh> {
    match kind {
        DkgKind::Refresh {
            from_epoch,
            removed,
        } => Some(proto::DkgRefresh {
            from_epoch: from_epoch.0,
            removed: removed.into_iter().map(|s| u32::from(s.get())).collect(),
        }),
        DkgKind::Fresh => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_kind_round_trips_and_a_fresh_one_is_absent() {
        let kind = DkgKind::Refresh {
            from_epoch: WalletEpoch(3),
            removed: vec![Seat::try_from(2).unwrap(), Seat::try_from(5).unwrap()],
        };
        let wire = kind_to_wire(kind.clone());
        assert_eq!(kind_from_wire(wire).unwrap(), kind);
        assert_eq!(kind_to_wire(DkgKind::Fresh), None);
        assert_eq!(kind_from_wire(None).unwrap(), DkgKind::Fresh);
    }

    #[test]
    fn removed_seats_out_of_order_or_not_seats_are_refused() {
        for removed in [vec![3, 2], vec![2, 2], vec![0], vec![70_000]] {
            let wire = proto::DkgRefresh {
                from_epoch: 0,
                removed: removed.clone(),
            };
            assert!(kind_from_wire(Some(wire)).is_err(), "{removed:?}");
        }
    }
}
