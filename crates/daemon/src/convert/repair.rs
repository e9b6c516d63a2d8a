//! Conversions of the repair RPC: the session travels once per request and
//! is bound into every message it carries.

use thresig_engine::{
    HexBytes, RepairPayload, RepairRequest, RepairResponse, RepairSession, Request, Response,
    SignedRepairMessage, WalletEpoch,
};

use super::{Answer, wallet_id};
use crate::error::{Error, InvalidId};
use crate::ids::seat_from_wire;
use crate::proto;
use proto::repair_request::Step;
use proto::repair_result::Outcome;

fn message(
    session: &RepairSession,
    wire: proto::RepairMessage,
) -> Result<SignedRepairMessage, Error> {
    let payload = RepairPayload::from_bytes(&wire.payload)
        .map_err(|_| Error::Malformed("repair payload is not canonical"))?;
    Ok(SignedRepairMessage::new(
        session.clone(),
        seat_from_wire(wire.sender)?,
        payload,
        HexBytes(wire.signature),
    ))
}

fn messages(
    session: &RepairSession,
    wire: Vec<proto::RepairMessage>,
) -> Result<Vec<SignedRepairMessage>, Error> {
    wire.into_iter().map(|m| message(session, m)).collect()
}

impl From<SignedRepairMessage> for proto::RepairMessage {
    fn from(message: SignedRepairMessage) -> Self {
        Self {
            sender: u32::from(message.sender.get()),
            payload: message.payload.to_bytes(),
            signature: message.signature.0,
        }
    }
}

/// Encodes a list of repair messages (their session travels in the
/// request).
pub(crate) fn repair_messages_to_wire(
    messages: Vec<SignedRepairMessage>,
) -> Vec<proto::RepairMessage> {
    messages.into_iter().map(Into::into).collect()
}

/// The wire request of one repair step.
///
/// # Errors
/// [`Error::Malformed`] for a step this version of the wire cannot carry.
pub(crate) fn repair_request_to_wire(
    request: RepairRequest,
) -> Result<proto::RepairRequest, Error> {
    let session = request.session().clone();
    let step = match request {
        RepairRequest::Join { .. } => Step::Join(proto::RepairJoin {}),
        RepairRequest::Open { .. } => Step::Open(proto::RepairOpen {}),
        RepairRequest::Deal { opened, .. } => Step::Deal(proto::RepairDeal {
            opened: repair_messages_to_wire(opened),
        }),
        RepairRequest::Sum { joined, dealt, .. } => Step::Sum(proto::RepairSum {
            joined: Some(joined.into()),
            dealt: repair_messages_to_wire(dealt),
        }),
        RepairRequest::Finish {
            opened,
            dealt,
            summed,
            ..
        } => Step::Finish(proto::RepairFinish {
            opened: repair_messages_to_wire(opened),
            dealt: repair_messages_to_wire(dealt),
            summed: repair_messages_to_wire(summed),
        }),
        _ => return Err(Error::Malformed("a repair step wire v1 cannot carry")),
    };
    Ok(proto::RepairRequest {
        wallet_id: session.wallet.into(),
        epoch: session.epoch.0,
        lost: u32::from(session.lost.get()),
        helpers: session.helpers.iter().map(|h| u32::from(h.get())).collect(),
        nonce: session.nonce.to_vec(),
        step: Some(step),
    })
}

impl TryFrom<proto::RepairRequest> for Request {
    type Error = Error;
    fn try_from(wire: proto::RepairRequest) -> Result<Self, Error> {
        let session = RepairSession::new(
            wallet_id(wire.wallet_id)?,
            WalletEpoch(wire.epoch),
            seat_from_wire(wire.lost)?,
            wire.helpers
                .into_iter()
                .map(seat_from_wire)
                .collect::<Result<_, _>>()?,
            <[u8; 32]>::try_from(wire.nonce.as_slice())
                .map_err(|_| Error::InvalidId(InvalidId::RepairSession))?,
        );
        let step = wire
            .step
            .ok_or(Error::Malformed("repair request without a step"))?;
        let request = match step {
            Step::Join(_) => RepairRequest::Join { session },
            Step::Open(_) => RepairRequest::Open { session },
            Step::Deal(deal) => RepairRequest::Deal {
                opened: messages(&session, deal.opened)?,
                session,
            },
            Step::Sum(sum) => {
                let joined = sum
                    .joined
                    .ok_or(Error::Malformed("repair sum without the joined message"))?;
                RepairRequest::Sum {
                    joined: message(&session, joined)?,
                    dealt: messages(&session, sum.dealt)?,
                    session,
                }
            }
            Step::Finish(finish) => RepairRequest::Finish {
                opened: messages(&session, finish.opened)?,
                dealt: messages(&session, finish.dealt)?,
                summed: messages(&session, finish.summed)?,
                session,
            },
        };
        Ok(Self::Repair(request))
    }
}

impl Answer for proto::RepairResult {
    fn from_response(response: Response) -> Option<Self> {
        let Response::Repair(response) = response else {
            return None;
        };
        let outcome = match response {
            RepairResponse::Message(m) => Outcome::Message(m.into()),
            RepairResponse::Repaired { seat, epoch, .. } => Outcome::Repaired(proto::RepairDone {
                seat: u32::from(seat.get()),
                epoch: epoch.0,
            }),
            _ => return None,
        };
        Some(Self {
            outcome: Some(outcome),
        })
    }
}

/// A repair step's result as it arrived; decoded by [`repair_response`]
/// once the session it belongs to is at hand.
pub(crate) struct RepairOutcome(pub(crate) proto::RepairResult);

impl TryFrom<proto::RepairResult> for RepairOutcome {
    type Error = Error;
    fn try_from(wire: proto::RepairResult) -> Result<Self, Error> {
        Ok(Self(wire))
    }
}

/// A repair step's answer, as the client decodes it for `session`.
///
/// # Errors
/// [`Error::Malformed`] for a result without an outcome, a message that
/// does not decode, or a seat out of range.
pub(crate) fn repair_response(
    session: &RepairSession,
    RepairOutcome(wire): RepairOutcome,
) -> Result<RepairResponse, Error> {
    match wire
        .outcome
        .ok_or(Error::Malformed("repair result without an outcome"))?
    {
        Outcome::Message(m) => Ok(RepairResponse::Message(message(session, m)?)),
        Outcome::Repaired(done) => Ok(RepairResponse::Repaired {
            wallet: session.wallet.clone(),
            seat: seat_from_wire(done.seat)?,
            epoch: WalletEpoch(done.epoch),
        }),
    }
}

#[cfg(test)]
mod tests {
    use thresig_crypto::Seat;
    use thresig_engine::WalletId;

    use super::*;

    fn seat(n: u16) -> Seat {
        Seat::try_from(n).unwrap()
    }

    fn session() -> RepairSession {
        RepairSession::new(
            WalletId::new("w".to_owned()).unwrap(),
            WalletEpoch(2),
            seat(3),
            vec![seat(1), seat(2)],
            [7; 32],
        )
    }

    fn signed(sender: u16, payload: RepairPayload) -> SignedRepairMessage {
        SignedRepairMessage::new(
            session(),
            seat(sender),
            payload,
            HexBytes(vec![sender as u8; 64]),
        )
    }

    /// Every step crosses the wire and back unchanged, its session carried
    /// once and given back to every message.
    #[test]
    fn every_step_round_trips_with_its_session() {
        let opened = vec![signed(
            1,
            RepairPayload::Opened {
                hpke_key: HexBytes(vec![1; 32]),
                wallet_key: HexBytes(vec![2; 40]),
            },
        )];
        let dealt = vec![signed(
            2,
            RepairPayload::Dealt {
                commitments: HexBytes(vec![3; 70]),
                sealed: vec![
                    (seat(1), HexBytes(vec![4; 80])),
                    (seat(2), HexBytes(vec![5; 80])),
                ],
                opened: HexBytes(vec![9; 32]),
            },
        )];
        let summed = vec![signed(
            1,
            RepairPayload::Summed {
                sealed: HexBytes(vec![6; 80]),
                commitments: HexBytes(vec![7; 32]),
                joined: HexBytes(vec![10; 32]),
            },
        )];
        let joined = signed(
            3,
            RepairPayload::Joined {
                hpke_key: HexBytes(vec![8; 32]),
            },
        );
        let steps = [
            RepairRequest::Join { session: session() },
            RepairRequest::Open { session: session() },
            RepairRequest::Deal {
                session: session(),
                opened: opened.clone(),
            },
            RepairRequest::Sum {
                session: session(),
                joined,
                dealt: dealt.clone(),
            },
            RepairRequest::Finish {
                session: session(),
                opened,
                dealt,
                summed,
            },
        ];
        for step in steps {
            let wire = repair_request_to_wire(step.clone()).unwrap();
            assert_eq!(Request::try_from(wire).unwrap(), Request::Repair(step));
        }
    }

    #[test]
    fn answers_round_trip_and_a_short_nonce_is_refused() {
        let message = signed(
            1,
            RepairPayload::Joined {
                hpke_key: HexBytes(vec![9; 32]),
            },
        );
        for answer in [
            RepairResponse::Message(message),
            RepairResponse::Repaired {
                wallet: session().wallet,
                seat: seat(3),
                epoch: WalletEpoch(2),
            },
        ] {
            let wire =
                proto::RepairResult::from_response(Response::Repair(answer.clone())).unwrap();
            assert_eq!(
                repair_response(&session(), RepairOutcome(wire)).unwrap(),
                answer
            );
        }
        let mut wire = repair_request_to_wire(RepairRequest::Join { session: session() }).unwrap();
        wire.nonce.pop();
        assert!(Request::try_from(wire).is_err());
    }
}
