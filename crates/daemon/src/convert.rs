//! Conversions between the generated protobuf types and the domain types of
//! [`crate::api`], each written once and used by both the server and the
//! client.

use crate::api::{
    DkgMessage, ErrorCode, Recovery, Round1Reply, Round1Request, Round2Reply, Round2Request,
    SignerError, SigningTarget, StatusReply, WalletState, WalletStatus,
};
use crate::error::{Error, InvalidId};
use crate::ids::{DkgSessionId, Epoch, Seat, WalletId, seat_from_wire};
use crate::proto;

impl TryFrom<proto::Round1Request> for Round1Request {
    type Error = Error;
    fn try_from(wire: proto::Round1Request) -> Result<Self, Error> {
        if !(1..=Round1Request::MAX_INPUTS).contains(&wire.inputs) {
            return Err(Error::Malformed("round 1 inputs must be 1 to 2048"));
        }
        Ok(Self::new(WalletId::new(wire.wallet_id)?, wire.inputs))
    }
}

impl From<Round1Request> for proto::Round1Request {
    fn from(request: Round1Request) -> Self {
        Self {
            wallet_id: request.wallet.as_str().to_owned(),
            inputs: request.inputs,
        }
    }
}

impl From<Round1Reply> for proto::Round1Result {
    fn from(reply: Round1Reply) -> Self {
        Self {
            epoch: reply.epoch.0,
            commitments: reply.commitments,
        }
    }
}

impl TryFrom<proto::Round1Result> for Round1Reply {
    type Error = Error;
    fn try_from(wire: proto::Round1Result) -> Result<Self, Error> {
        Ok(Self::new(Epoch(wire.epoch), wire.commitments))
    }
}

fn seats(numbers: Vec<u32>) -> Result<Vec<Seat>, Error> {
    numbers.into_iter().map(seat_from_wire).collect()
}

impl TryFrom<proto::Round2Request> for Round2Request {
    type Error = Error;
    fn try_from(wire: proto::Round2Request) -> Result<Self, Error> {
        use proto::round2_request::Target;
        let target = match wire.target {
            Some(Target::Psbt(psbt)) => SigningTarget::Psbt(psbt),
            Some(Target::Digests(d)) => SigningTarget::Digests(
                d.digests
                    .into_iter()
                    .map(<[u8; 32]>::try_from)
                    .collect::<Result<_, _>>()
                    .map_err(|_| Error::InvalidId(InvalidId::Digest))?,
            ),
            None => return Err(Error::Malformed("round 2 request without a target")),
        };
        Ok(Self::new(
            WalletId::new(wire.wallet_id)?,
            Epoch(wire.epoch),
            seats(wire.signers)?,
            target,
            wire.packages,
        ))
    }
}

impl From<Round2Request> for proto::Round2Request {
    fn from(request: Round2Request) -> Self {
        use proto::round2_request::Target;
        let target = match request.target {
            SigningTarget::Psbt(psbt) => Target::Psbt(psbt),
            SigningTarget::Digests(digests) => Target::Digests(proto::Digests {
                digests: digests.into_iter().map(Vec::from).collect(),
            }),
        };
        Self {
            wallet_id: request.wallet.as_str().to_owned(),
            epoch: request.epoch.0,
            signers: request.signers.iter().map(|s| u32::from(s.get())).collect(),
            target: Some(target),
            packages: request.packages,
        }
    }
}

impl From<Round2Reply> for proto::Round2Result {
    fn from(reply: Round2Reply) -> Self {
        Self {
            shares: reply.shares,
            commitments: reply.commitments,
        }
    }
}

impl TryFrom<proto::Round2Result> for Round2Reply {
    type Error = Error;
    fn try_from(wire: proto::Round2Result) -> Result<Self, Error> {
        Ok(Self::new(wire.shares, wire.commitments))
    }
}

impl TryFrom<proto::DkgMessage> for DkgMessage {
    type Error = Error;
    fn try_from(wire: proto::DkgMessage) -> Result<Self, Error> {
        Ok(Self::new(
            DkgSessionId::new(wire.session_id)?,
            WalletId::new(wire.wallet_id)?,
            seat_from_wire(wire.sender)?,
            wire.payload,
            wire.signature,
        ))
    }
}

impl From<DkgMessage> for proto::DkgMessage {
    fn from(message: DkgMessage) -> Self {
        Self {
            session_id: message.session.as_bytes().to_vec(),
            wallet_id: message.wallet.as_str().to_owned(),
            sender: u32::from(message.sender.get()),
            payload: message.payload,
            signature: message.signature,
        }
    }
}

impl From<Vec<DkgMessage>> for proto::DkgResult {
    fn from(messages: Vec<DkgMessage>) -> Self {
        Self {
            messages: messages.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<proto::DkgResult> for Vec<DkgMessage> {
    type Error = Error;
    fn try_from(wire: proto::DkgResult) -> Result<Self, Error> {
        wire.messages
            .into_iter()
            .map(DkgMessage::try_from)
            .collect()
    }
}

impl From<WalletStatus> for proto::WalletStatus {
    fn from(status: WalletStatus) -> Self {
        Self {
            wallet_id: status.wallet.as_str().to_owned(),
            state: status.state.as_str().to_owned(),
            threshold: u32::from(status.threshold),
            members: u32::from(status.members),
            epoch: status.epoch.map(|e| e.0),
            output_key: status.output_key,
            live_nonces: status.live_nonces,
        }
    }
}

impl TryFrom<proto::WalletStatus> for WalletStatus {
    type Error = Error;
    fn try_from(wire: proto::WalletStatus) -> Result<Self, Error> {
        let count = |n: u32| {
            u16::try_from(n).map_err(|_| Error::Malformed("threshold or members above 65535"))
        };
        let state =
            WalletState::from_wire(&wire.state).ok_or(Error::Malformed("unknown wallet state"))?;
        let mut status = Self::new(
            WalletId::new(wire.wallet_id)?,
            state,
            count(wire.threshold)?,
            count(wire.members)?,
        );
        status.epoch = wire.epoch.map(Epoch);
        status.output_key = wire.output_key;
        status.live_nonces = wire.live_nonces;
        Ok(status)
    }
}

impl From<StatusReply> for proto::StatusResult {
    fn from(reply: StatusReply) -> Self {
        Self {
            seat: u32::from(reply.seat.get()),
            wallets: reply.wallets.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<proto::StatusResult> for StatusReply {
    type Error = Error;
    fn try_from(wire: proto::StatusResult) -> Result<Self, Error> {
        Ok(Self::new(
            seat_from_wire(wire.seat)?,
            wire.wallets
                .into_iter()
                .map(WalletStatus::try_from)
                .collect::<Result<_, _>>()?,
        ))
    }
}

impl From<SignerError> for proto::Error {
    fn from(err: SignerError) -> Self {
        Self {
            code: err.code.as_str().to_owned(),
            retryable: err.recovery == Recovery::Retryable,
            message: err.message,
        }
    }
}

impl TryFrom<proto::Error> for SignerError {
    type Error = Error;
    fn try_from(wire: proto::Error) -> Result<Self, Error> {
        let recovery = if wire.retryable {
            Recovery::Retryable
        } else {
            Recovery::Terminal
        };
        Ok(Self::new(
            ErrorCode::from_wire(wire.code)?,
            recovery,
            wire.message,
        ))
    }
}

/// A reply message whose `outcome` is a result or an [`proto::Error`]: the
/// one shape every RPC answers with.
pub(crate) trait WireReply: Sized {
    /// The result message.
    type Result;

    /// The reply carrying `outcome`.
    fn from_outcome(outcome: Result<Self::Result, proto::Error>) -> Self;

    /// The reply's outcome, if it has one.
    fn into_outcome(self) -> Option<Result<Self::Result, proto::Error>>;
}

/// Implements [`WireReply`] for a generated reply type.
macro_rules! wire_reply {
    ($reply:ident, $module:ident, $result:ident) => {
        impl WireReply for proto::$reply {
            type Result = proto::$result;

            fn from_outcome(outcome: Result<proto::$result, proto::Error>) -> Self {
                use proto::$module::Outcome;
                Self {
                    outcome: Some(match outcome {
                        Ok(result) => Outcome::Result(result),
                        Err(error) => Outcome::Error(error),
                    }),
                }
            }

            fn into_outcome(self) -> Option<Result<proto::$result, proto::Error>> {
                use proto::$module::Outcome;
                Some(match self.outcome? {
                    Outcome::Result(result) => Ok(result),
                    Outcome::Error(error) => Err(error),
                })
            }
        }
    };
}

wire_reply!(Round1Reply, round1_reply, Round1Result);
wire_reply!(Round2Reply, round2_reply, Round2Result);
wire_reply!(DkgReply, dkg_reply, DkgResult);
wire_reply!(StatusReply, status_reply, StatusResult);
