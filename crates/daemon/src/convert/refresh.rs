//! The share refresh's part of a DKG proposal on the wire.

use thresig_crypto::Seat;
use thresig_engine::{DkgKind, RefreshStatus, SignedDkgMessage, WalletEpoch};

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

/// A member's signed abandonment of a refresh, from a cancel's answer.
pub(crate) struct Abandonment(pub(crate) SignedDkgMessage);

impl TryFrom<proto::DkgCancelResult> for Abandonment {
    type Error = Error;
    fn try_from(wire: proto::DkgCancelResult) -> Result<Self, Error> {
        let signed = wire
            .abandonment
            .ok_or(Error::Malformed("abandonment missing"))?;
        Ok(Self(SignedDkgMessage::try_from(signed)?))
    }
}

/// A pending refresh's status on the wire.
pub(super) fn refresh_status_to_wire(status: RefreshStatus) -> proto::RefreshStatus {
    proto::RefreshStatus {
        session_id: status.session.0.to_vec(),
        confirmed: status
            .confirmed
            .into_iter()
            .map(super::seat_to_wire)
            .collect(),
        released: status.released,
    }
}

/// Decodes [`refresh_status_to_wire`].
///
/// # Errors
/// [`Error::InvalidId`] for a session id that is not 32 bytes or a
/// confirmed seat that is no seat number.
pub(super) fn refresh_status_from_wire(wire: proto::RefreshStatus) -> Result<RefreshStatus, Error> {
    let session = super::session_id(&wire.session_id)?;
    let confirmed = wire
        .confirmed
        .into_iter()
        .map(seat_from_wire)
        .collect::<Result<Vec<Seat>, _>>()?;
    Ok(RefreshStatus::new(session, confirmed).released(wire.released))
}

#[cfg(test)]
mod tests {
    use super::*;
    use thresig_engine::DkgSessionId;

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

    #[test]
    fn a_refresh_status_round_trips_and_a_short_session_is_refused() {
        let status = RefreshStatus::new(
            DkgSessionId([7; 32]),
            vec![Seat::try_from(1).unwrap(), Seat::try_from(3).unwrap()],
        )
        .released(true);
        let wire = refresh_status_to_wire(status.clone());
        assert_eq!(refresh_status_from_wire(wire).unwrap(), status);
        let short = proto::RefreshStatus {
            session_id: vec![7; 31],
            confirmed: Vec::new(),
            released: false,
        };
        assert!(refresh_status_from_wire(short).is_err());
    }

    #[test]
    fn a_cancel_carries_the_abandonments_and_an_answer_without_one_is_refused() {
        use thresig_engine::{DkgPayload, HexBytes, Request};
        let signed = SignedDkgMessage::new(
            DkgSessionId([4; 32]),
            thresig_engine::WalletId::new("w").unwrap(),
            Seat::try_from(3).unwrap(),
            DkgPayload::RefreshAbandon {
                from_epoch: thresig_engine::WalletEpoch(0),
            },
            HexBytes(vec![1; 64]),
        );
        let wire = proto::DkgCancelRequest {
            wallet_id: "w".into(),
            session_id: vec![4; 32],
            abandon: true,
            abandonments: vec![signed.clone().into()],
        };
        let Request::DkgCancel {
            abandon,
            abandonments,
            ..
        } = Request::try_from(wire).unwrap()
        else {
            panic!("not a cancel")
        };
        assert!(abandon);
        assert_eq!(abandonments, vec![signed.clone()]);
        let answer = proto::DkgCancelResult {
            dropped: true,
            abandonment: Some(signed.clone().into()),
        };
        assert_eq!(Abandonment::try_from(answer).unwrap().0, signed);
        let without = proto::DkgCancelResult {
            dropped: true,
            abandonment: None,
        };
        assert!(matches!(
            Abandonment::try_from(without),
            Err(Error::Malformed(_))
        ));
    }
}
