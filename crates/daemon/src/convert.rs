//! Conversions between the generated protobuf types and the signer engine's
//! types, each written once and used by both the server and the client.
//!
//! Decoding never panics: a malformed wire message (a bad id, a seat out of
//! range, a payload that is not canonical) becomes an [`Error`].

use thresig_crypto::{Seat, WalletKey};
use thresig_engine::{
    AbortRequest, ConfirmationStatus, Digest, DkgPayload, DkgProposal, DkgSessionId, HexBytes,
    IdentityKey, Phase, Request, Response, Round1Request, Round1Response, Round2Request,
    Round2Response, SignedDkgMessage, SigningTarget, WalletEpoch, WalletId, WalletRollout,
    WalletStateKind, WalletStatus,
};

use crate::api::{ErrorCode, Recovery, SignerError};
use crate::error::{Error, InvalidId};
use crate::ids::seat_from_wire;
use crate::proto;

/// The most inputs one round-1 request may ask for, checked before the
/// engine sees the request. A standard transaction (at most 100,000 vbytes)
/// holds under 1,750 Taproot key-path inputs of 57.5 vbytes each; the bound
/// keeps one request from asking for an unbounded number of nonces (the
/// engine's own `max_inputs` may be lower).
pub(crate) const MAX_ROUND1_INPUTS: u32 = 2048;

pub(crate) fn wallet_id(wire: String) -> Result<WalletId, Error> {
    WalletId::new(wire).map_err(|_| Error::InvalidId(InvalidId::Wallet))
}

fn session_id(wire: &[u8]) -> Result<DkgSessionId, Error> {
    <[u8; 32]>::try_from(wire)
        .map(DkgSessionId)
        .map_err(|_| Error::InvalidId(InvalidId::DkgSession))
}

fn seat_to_wire(seat: Seat) -> u32 {
    u32::from(seat.get())
}

fn hex_list(wire: Vec<Vec<u8>>) -> Vec<HexBytes> {
    wire.into_iter().map(HexBytes).collect()
}

fn bytes_list(list: Vec<HexBytes>) -> Vec<Vec<u8>> {
    list.into_iter().map(|b| b.0).collect()
}

/// A count the engine keeps as `usize`, as the wire carries it.
fn count_to_wire(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}

fn count_from_wire(count: u64) -> Result<usize, Error> {
    usize::try_from(count).map_err(|_| Error::Malformed("count beyond this platform's range"))
}

impl TryFrom<proto::Round1Request> for Request {
    type Error = Error;
    fn try_from(wire: proto::Round1Request) -> Result<Self, Error> {
        if !(1..=MAX_ROUND1_INPUTS).contains(&wire.inputs) {
            return Err(Error::Malformed("round 1 inputs must be 1 to 2048"));
        }
        let inputs = usize::try_from(wire.inputs)
            .map_err(|_| Error::Malformed("round 1 inputs must be 1 to 2048"))?;
        Ok(Self::Round1(Round1Request::new(
            wallet_id(wire.wallet_id)?,
            inputs,
        )))
    }
}

impl From<Round1Request> for proto::Round1Request {
    fn from(request: Round1Request) -> Self {
        Self {
            wallet_id: request.wallet.into(),
            // Above u32 is refused by the server like any count above 2048.
            inputs: u32::try_from(request.inputs).unwrap_or(u32::MAX),
        }
    }
}

impl From<Round1Response> for proto::Round1Result {
    fn from(reply: Round1Response) -> Self {
        Self {
            wallet_id: reply.wallet.into(),
            seat: seat_to_wire(reply.seat),
            epoch: reply.epoch.0,
            commitments: bytes_list(reply.commitments),
        }
    }
}

impl TryFrom<proto::Round1Result> for Round1Response {
    type Error = Error;
    fn try_from(wire: proto::Round1Result) -> Result<Self, Error> {
        Ok(Self::new(
            wallet_id(wire.wallet_id)?,
            seat_from_wire(wire.seat)?,
            WalletEpoch(wire.epoch),
            hex_list(wire.commitments),
        ))
    }
}

impl TryFrom<proto::Round2Request> for Request {
    type Error = Error;
    fn try_from(wire: proto::Round2Request) -> Result<Self, Error> {
        use proto::round2_request::Target;
        let target = match wire.target {
            Some(Target::Psbt(psbt)) => SigningTarget::psbt(psbt),
            Some(Target::Digests(d)) => SigningTarget::digests(
                d.digests
                    .into_iter()
                    .map(|digest| <[u8; 32]>::try_from(digest).map(Digest))
                    .collect::<Result<_, _>>()
                    .map_err(|_| Error::InvalidId(InvalidId::Digest))?,
            ),
            None => return Err(Error::Malformed("round 2 request without a target")),
        };
        Ok(Self::Round2(Round2Request::new(
            wallet_id(wire.wallet_id)?,
            WalletEpoch(wire.epoch),
            wire.signers
                .into_iter()
                .map(seat_from_wire)
                .collect::<Result<_, _>>()?,
            target,
            hex_list(wire.packages),
        )))
    }
}

impl TryFrom<Round2Request> for proto::Round2Request {
    type Error = Error;
    fn try_from(request: Round2Request) -> Result<Self, Error> {
        use proto::round2_request::Target;
        let target = match request.target {
            SigningTarget::Psbt { psbt } => Target::Psbt(psbt.0),
            SigningTarget::Digests { digests } => Target::Digests(proto::Digests {
                digests: digests.into_iter().map(|d| d.0.to_vec()).collect(),
            }),
            _ => return Err(Error::Malformed("a signing target v1 cannot carry")),
        };
        Ok(Self {
            wallet_id: request.wallet.into(),
            epoch: request.epoch.0,
            signers: request.signers.into_iter().map(seat_to_wire).collect(),
            target: Some(target),
            packages: bytes_list(request.packages),
        })
    }
}

impl From<Round2Response> for proto::Round2Result {
    fn from(reply: Round2Response) -> Self {
        Self {
            wallet_id: reply.wallet.into(),
            seat: seat_to_wire(reply.seat),
            shares: bytes_list(reply.shares),
            commitments: bytes_list(reply.commitments),
            signature: reply.signature.0,
        }
    }
}

impl TryFrom<proto::Round2Result> for Round2Response {
    type Error = Error;
    fn try_from(wire: proto::Round2Result) -> Result<Self, Error> {
        Ok(Self::new(
            wallet_id(wire.wallet_id)?,
            seat_from_wire(wire.seat)?,
            hex_list(wire.shares),
            hex_list(wire.commitments),
        )
        .with_signature(HexBytes(wire.signature)))
    }
}

impl TryFrom<proto::AbortRequest> for Request {
    type Error = Error;
    fn try_from(wire: proto::AbortRequest) -> Result<Self, Error> {
        Ok(Self::Abort(AbortRequest::new(
            wallet_id(wire.wallet_id)?,
            hex_list(wire.commitments),
        )))
    }
}

impl From<AbortRequest> for proto::AbortRequest {
    fn from(request: AbortRequest) -> Self {
        Self {
            wallet_id: request.wallet.into(),
            commitments: bytes_list(request.commitments),
        }
    }
}

impl TryFrom<proto::AbortResult> for usize {
    type Error = Error;
    fn try_from(wire: proto::AbortResult) -> Result<Self, Error> {
        count_from_wire(wire.destroyed)
    }
}

impl TryFrom<proto::DkgMessage> for SignedDkgMessage {
    type Error = Error;
    fn try_from(wire: proto::DkgMessage) -> Result<Self, Error> {
        let payload = DkgPayload::from_bytes(&wire.payload)
            .map_err(|_| Error::Malformed("DKG payload is not canonical"))?;
        Ok(Self::new(
            session_id(&wire.session_id)?,
            wallet_id(wire.wallet_id)?,
            seat_from_wire(wire.sender)?,
            payload,
            HexBytes(wire.signature),
        )
        .with_kind_signature(
            (!wire.kind_signature.is_empty()).then_some(HexBytes(wire.kind_signature)),
        ))
    }
}

impl From<SignedDkgMessage> for proto::DkgMessage {
    fn from(message: SignedDkgMessage) -> Self {
        Self {
            session_id: message.session.0.to_vec(),
            payload: message.payload.to_bytes(),
            wallet_id: message.wallet.into(),
            sender: u32::from(message.sender.get()),
            signature: message.signature.0,
            kind_signature: message.kind_signature.map(|s| s.0).unwrap_or_default(),
        }
    }
}

/// Decodes a list of relayed DKG messages.
pub(crate) fn dkg_messages(wire: Vec<proto::DkgMessage>) -> Result<Vec<SignedDkgMessage>, Error> {
    wire.into_iter().map(SignedDkgMessage::try_from).collect()
}

/// Encodes a list of DKG messages.
pub(crate) fn dkg_messages_to_wire(messages: Vec<SignedDkgMessage>) -> Vec<proto::DkgMessage> {
    messages.into_iter().map(Into::into).collect()
}

impl TryFrom<proto::DkgMessages> for Vec<SignedDkgMessage> {
    type Error = Error;
    fn try_from(wire: proto::DkgMessages) -> Result<Self, Error> {
        dkg_messages(wire.messages)
    }
}

impl TryFrom<proto::DkgProposal> for Request {
    type Error = Error;
    fn try_from(wire: proto::DkgProposal) -> Result<Self, Error> {
        let threshold =
            u16::try_from(wire.threshold).map_err(|_| Error::Malformed("threshold above 65535"))?;
        let roster = wire
            .roster
            .into_iter()
            .map(|key| {
                <[u8; 32]>::try_from(key)
                    .ok()
                    .and_then(|key| IdentityKey::from_bytes(key).ok())
                    .ok_or(Error::InvalidId(InvalidId::IdentityKey))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::DkgStart(
            DkgProposal::new(
                session_id(&wire.session_id)?,
                wallet_id(wire.wallet_id)?,
                threshold,
                roster,
            )
            .with_kind(refresh::kind_from_wire(wire.refresh)?),
        ))
    }
}

impl From<DkgProposal> for proto::DkgProposal {
    fn from(proposal: DkgProposal) -> Self {
        Self {
            session_id: proposal.session.0.to_vec(),
            wallet_id: proposal.wallet.into(),
            threshold: u32::from(proposal.threshold),
            roster: proposal
                .roster
                .into_iter()
                .map(|key| key.to_bytes().to_vec())
                .collect(),
            refresh: refresh::kind_to_wire(proposal.kind),
        }
    }
}

impl TryFrom<proto::DkgRound2Request> for Request {
    type Error = Error;
    fn try_from(wire: proto::DkgRound2Request) -> Result<Self, Error> {
        Ok(Self::DkgRound2 {
            wallet: wallet_id(wire.wallet_id)?,
            session: session_id(&wire.session_id)?,
            round1: dkg_messages(wire.round1)?,
        })
    }
}

impl TryFrom<proto::DkgFinishRequest> for Request {
    type Error = Error;
    fn try_from(wire: proto::DkgFinishRequest) -> Result<Self, Error> {
        Ok(Self::DkgFinish {
            wallet: wallet_id(wire.wallet_id)?,
            session: session_id(&wire.session_id)?,
            round2: dkg_messages(wire.round2)?,
        })
    }
}

impl TryFrom<proto::DkgConfirmRequest> for Request {
    type Error = Error;
    fn try_from(wire: proto::DkgConfirmRequest) -> Result<Self, Error> {
        let confirmation = wire
            .confirmation
            .ok_or(Error::Malformed("DKG confirmation missing"))?;
        Ok(Self::DkgConfirm {
            wallet: wallet_id(wire.wallet_id)?,
            confirmation: SignedDkgMessage::try_from(confirmation)?,
        })
    }
}

impl TryFrom<proto::DkgCancelRequest> for Request {
    type Error = Error;
    fn try_from(wire: proto::DkgCancelRequest) -> Result<Self, Error> {
        Ok(Self::DkgCancel {
            wallet: wallet_id(wire.wallet_id)?,
            session: session_id(&wire.session_id)?,
            abandon: wire.abandon,
            abandonments: dkg_messages(wire.abandonments)?,
        })
    }
}

impl TryFrom<proto::RefreshConfirmationsRequest> for Request {
    type Error = Error;
    fn try_from(wire: proto::RefreshConfirmationsRequest) -> Result<Self, Error> {
        Ok(Self::RefreshConfirmations {
            wallet: wallet_id(wire.wallet_id)?,
            session: session_id(&wire.session_id)?,
        })
    }
}

impl TryFrom<proto::DkgCancelResult> for bool {
    type Error = Error;
    fn try_from(wire: proto::DkgCancelResult) -> Result<Self, Error> {
        Ok(wire.dropped)
    }
}

/// A member's status request: the wallets it is a member of.
impl TryFrom<proto::StatusRequest> for Request {
    type Error = Error;
    fn try_from(_: proto::StatusRequest) -> Result<Self, Error> {
        Ok(Self::ListWallets)
    }
}

impl TryFrom<proto::WalletKeyRequest> for Request {
    type Error = Error;
    fn try_from(wire: proto::WalletKeyRequest) -> Result<Self, Error> {
        Ok(Self::WalletKey {
            wallet: wallet_id(wire.wallet_id)?,
        })
    }
}

impl From<ConfirmationStatus> for proto::ConfirmationStatus {
    fn from(status: ConfirmationStatus) -> Self {
        Self {
            confirmed: count_to_wire(status.confirmed),
            needed: count_to_wire(status.needed),
            active: status.active,
        }
    }
}

impl TryFrom<proto::ConfirmationStatus> for ConfirmationStatus {
    type Error = Error;
    fn try_from(wire: proto::ConfirmationStatus) -> Result<Self, Error> {
        Ok(Self::new(
            count_from_wire(wire.confirmed)?,
            count_from_wire(wire.needed)?,
            wire.active,
        ))
    }
}

impl From<WalletStatus> for proto::WalletStatus {
    fn from(status: WalletStatus) -> Self {
        Self {
            wallet_id: status.wallet.into(),
            state: status.state.as_str().to_owned(),
            threshold: u32::from(status.threshold),
            members: u32::from(status.members),
            seat: seat_to_wire(status.seat),
            epoch: status.epoch.map(|e| e.0),
            output_key: status.output_key.map(|k| k.0),
            live_nonces: count_to_wire(status.live_nonces),
            repair_approvals: status
                .repair_approvals
                .into_iter()
                .map(|(seat, expires)| proto::RepairApproval {
                    seat: seat_to_wire(seat),
                    expires_unix_ms: expires.0,
                })
                .collect(),
            repairing: status.repairing.map(seat_to_wire),
            refresh: status.refresh.map(refresh::refresh_status_to_wire),
            policy_version: status.policy_version,
            policy_rollout: status.policy_rollout.map(|r| proto::PolicyRollout {
                version: r.version,
                phase: r.phase.as_str().to_owned(),
                on_new_version: r.on_new_version,
            }),
        }
    }
}

impl TryFrom<proto::WalletStatus> for WalletStatus {
    type Error = Error;
    fn try_from(wire: proto::WalletStatus) -> Result<Self, Error> {
        let count = |n: u32| {
            u16::try_from(n).map_err(|_| Error::Malformed("threshold or members above 65535"))
        };
        let state = WalletStateKind::ALL
            .into_iter()
            .find(|state| state.as_str() == wire.state)
            .ok_or(Error::Malformed("unknown wallet state"))?;
        let mut status = Self::new(
            wallet_id(wire.wallet_id)?,
            state,
            count(wire.threshold)?,
            count(wire.members)?,
            seat_from_wire(wire.seat)?,
        );
        status.epoch = wire.epoch.map(WalletEpoch);
        status.output_key = wire.output_key.map(HexBytes);
        status.live_nonces = count_from_wire(wire.live_nonces)?;
        status.repair_approvals = wire
            .repair_approvals
            .into_iter()
            .map(|a| {
                Ok((
                    seat_from_wire(a.seat)?,
                    thresig_store::Timestamp(a.expires_unix_ms),
                ))
            })
            .collect::<Result<_, Error>>()?;
        status.repairing = wire.repairing.map(seat_from_wire).transpose()?;
        status.refresh = wire
            .refresh
            .map(refresh::refresh_status_from_wire)
            .transpose()?;
        status.policy_version = wire.policy_version;
        // A step a newer member names is shown as no rollout: the status
        // of everything else still counts.
        status.policy_rollout = wire.policy_rollout.and_then(|r| {
            Phase::parse(&r.phase)
                .map(|phase| WalletRollout::new(r.version, phase, r.on_new_version))
        });
        Ok(status)
    }
}

impl TryFrom<proto::StatusResult> for Vec<WalletStatus> {
    type Error = Error;
    fn try_from(wire: proto::StatusResult) -> Result<Self, Error> {
        wire.wallets
            .into_iter()
            .map(WalletStatus::try_from)
            .collect()
    }
}

impl TryFrom<proto::WalletKeyResult> for WalletKey {
    type Error = Error;
    fn try_from(wire: proto::WalletKeyResult) -> Result<Self, Error> {
        WalletKey::from_bytes(&wire.wallet_key)
            .map_err(|_| Error::Malformed("wallet key record does not decode"))
    }
}

impl From<SignerError> for proto::Error {
    fn from(err: SignerError) -> Self {
        Self {
            retryable: err.is_retryable(),
            code: err.code.as_str().to_owned(),
            message: err.message,
            accusation: err.accusation.map(|a| (*a).into()),
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
        // An accusation that does not decode proves nothing: the refusal
        // is kept without it.
        let accusation = wire
            .accusation
            .and_then(|a| SignedDkgMessage::try_from(a).ok());
        Ok(
            Self::new(ErrorCode::from_wire(wire.code)?, recovery, wire.message)
                .with_accusation(accusation),
        )
    }
}

/// An RPC's result message, converted from the handler's [`Response`].
pub(crate) trait Answer: Sized {
    /// The result, if `response` is of this RPC's kind (another kind is a
    /// handler bug, answered with `internal`).
    fn from_response(response: Response) -> Option<Self>;
}

/// Implements [`Answer`] for one RPC's result message.
macro_rules! answer {
    ($result:ty, $kind:pat => $wire:expr) => {
        impl Answer for $result {
            fn from_response(response: Response) -> Option<Self> {
                match response {
                    $kind => Some($wire),
                    _ => None,
                }
            }
        }
    };
}

answer!(proto::Round1Result, Response::Round1(r) => r.into());
answer!(proto::Round2Result, Response::Round2(r) => r.into());
answer!(proto::AbortResult, Response::Aborted { destroyed } => Self {
    destroyed: count_to_wire(destroyed),
});
answer!(proto::DkgMessages, Response::DkgMessages { messages } => Self {
    messages: dkg_messages_to_wire(messages),
});
answer!(proto::ConfirmationStatus, Response::Confirmations(status) => status.into());
answer!(proto::DkgCancelResult, Response::DkgCancelled { dropped, abandonment } => Self {
    dropped,
    abandonment: abandonment.map(Into::into),
});
answer!(proto::StatusResult, Response::Wallets { wallets } => Self {
    wallets: wallets.into_iter().map(Into::into).collect(),
});
answer!(proto::WalletKeyResult, Response::WalletKey { key } => Self { wallet_key: key.0 });

/// DKG parts 1 and 3 answer with exactly one message.
impl Answer for proto::DkgMessage {
    fn from_response(response: Response) -> Option<Self> {
        let Response::DkgMessages { messages } = response else {
            return None;
        };
        let mut messages = messages.into_iter();
        match (messages.next(), messages.next()) {
            (Some(message), None) => Some(message.into()),
            _ => None,
        }
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
wire_reply!(AbortReply, abort_reply, AbortResult);
wire_reply!(DkgStartReply, dkg_start_reply, DkgMessage);
wire_reply!(DkgRound2Reply, dkg_round2_reply, DkgMessages);
wire_reply!(DkgFinishReply, dkg_finish_reply, DkgMessage);
wire_reply!(DkgConfirmReply, dkg_confirm_reply, ConfirmationStatus);
wire_reply!(DkgCancelReply, dkg_cancel_reply, DkgCancelResult);
wire_reply!(StatusReply, status_reply, StatusResult);
wire_reply!(WalletKeyReply, wallet_key_reply, WalletKeyResult);
wire_reply!(RepairReply, repair_reply, RepairResult);
wire_reply!(
    RefreshConfirmationsReply,
    refresh_confirmations_reply,
    DkgMessages
);

mod repair;
pub(crate) use repair::{RepairOutcome, repair_request_to_wire, repair_response};

#[cfg(test)]
mod tests;

mod refresh;

pub(crate) use refresh::Abandonment;
