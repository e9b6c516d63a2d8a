//! A member repair driven as a coordinator would, step by step, with the
//! messages of each step in hand so a test can alter them, and the lies a
//! malicious helper (which holds its own identity key) can tell.

use std::time::Duration;

use crate::OperatorCommand;
use crate::api::{HexBytes, Request, Response};
use crate::error::Error;
use crate::repair::{
    RepairPayload, RepairRequest, RepairResponse, RepairSession, SignedRepairMessage,
    seal_repair_value,
};

use super::cluster::{Cluster, seat, wid};
use super::{coordinator, identity_secret};

/// How long the harness's approvals last.
pub const APPROVAL: Duration = Duration::from_secs(3600);

/// The coordinator of the harness's repairs (the member at seat 1, a
/// helper in every test).
pub const COORD: u16 = 1;

/// A repair of seat `lost` of `wallet` by `helpers` at the epoch seat
/// [`COORD`] reports, with nonce byte `nonce`.
pub fn session(c: &Cluster, wallet: &str, lost: u16, helpers: &[u16], nonce: u8) -> RepairSession {
    RepairSession::new(
        wid(wallet),
        c.epoch_at(COORD, wallet),
        seat(lost),
        helpers.iter().map(|h| seat(*h)).collect(),
        [nonce; 32],
    )
}

/// The operator of each of `helpers` approves repairing `lost`, for
/// [`APPROVAL`] from now.
pub fn approve(c: &Cluster, wallet: &str, lost: u16, helpers: &[u16]) {
    for h in helpers {
        let command = OperatorCommand::ApproveRepair {
            wallet: wid(wallet),
            seat: seat(lost),
            expires_in_secs: APPROVAL.as_secs(),
        };
        c.member(*h).signer().operate(c.now, &command).unwrap();
    }
}

/// Sends one repair step to seat `to` from the coordinator [`COORD`].
///
/// # Errors
/// The signer's refusal.
#[allow(
    clippy::result_large_err,
    reason = "a test helper: the refusal is inspected at once"
)]
pub fn step(c: &mut Cluster, to: u16, request: RepairRequest) -> Result<RepairResponse, Error> {
    step_as(c, COORD, to, request)
}

/// Sends one repair step to seat `to` from the member at seat `from`.
///
/// # Errors
/// The signer's refusal.
#[allow(
    clippy::result_large_err,
    reason = "a test helper: the refusal is inspected at once"
)]
pub fn step_as(
    c: &mut Cluster,
    from: u16,
    to: u16,
    request: RepairRequest,
) -> Result<RepairResponse, Error> {
    let now = c.now;
    let Cluster { members, rng, .. } = c;
    let signer = members[usize::from(to) - 1].signer();
    match signer.handle(now, coordinator(from), Request::Repair(request), rng)? {
        Response::Repair(r) => Ok(r),
        other => panic!("an answer of another kind: {other:?}"),
    }
}

/// The signed message a step answers with.
///
/// # Errors
/// The signer's refusal.
#[allow(
    clippy::result_large_err,
    reason = "a test helper: the refusal is inspected at once"
)]
pub fn message(
    c: &mut Cluster,
    to: u16,
    request: RepairRequest,
) -> Result<SignedRepairMessage, Error> {
    match step(c, to, request)? {
        RepairResponse::Message(m) => Ok(m),
        other => panic!("no message: {other:?}"),
    }
}

/// Every helper's messages of one repair, up to the finish.
#[derive(Clone, Debug)]
pub struct Relayed {
    /// The member being repaired's `Joined`.
    pub joined: SignedRepairMessage,
    /// Each helper's `Opened`.
    pub opened: Vec<SignedRepairMessage>,
    /// Each helper's `Dealt`.
    pub dealt: Vec<SignedRepairMessage>,
    /// Each helper's `Summed`.
    pub summed: Vec<SignedRepairMessage>,
}

/// Runs join, open, deal and sum of `session`, relaying every message as
/// sent, except that `lie` may alter the `Dealt` messages before they are
/// relayed.
///
/// # Errors
/// The first refusal, with the seat that refused.
#[allow(
    clippy::result_large_err,
    reason = "a test helper: the refusal is inspected at once"
)]
pub fn through_sum(
    c: &mut Cluster,
    session: &RepairSession,
    lie: impl FnOnce(&mut Vec<SignedRepairMessage>),
) -> Result<Relayed, (u16, Error)> {
    let helpers: Vec<u16> = session.helpers.iter().map(|s| s.get()).collect();
    let lost = session.lost.get();
    let joined = message(
        c,
        lost,
        RepairRequest::Join {
            session: session.clone(),
        },
    )
    .map_err(|e| (lost, e))?;
    let mut opened = Vec::new();
    for h in &helpers {
        let request = RepairRequest::Open {
            session: session.clone(),
        };
        opened.push(message(c, *h, request).map_err(|e| (*h, e))?);
    }
    let mut dealt = Vec::new();
    for h in &helpers {
        let request = RepairRequest::Deal {
            session: session.clone(),
            opened: opened.clone(),
        };
        dealt.push(message(c, *h, request).map_err(|e| (*h, e))?);
    }
    lie(&mut dealt);
    let mut summed = Vec::new();
    for h in &helpers {
        let request = RepairRequest::Sum {
            session: session.clone(),
            joined: joined.clone(),
            dealt: dealt.clone(),
        };
        summed.push(message(c, *h, request).map_err(|e| (*h, e))?);
    }
    Ok(Relayed {
        joined,
        opened,
        dealt,
        summed,
    })
}

/// The finish of `session` at its lost seat with `relayed`.
///
/// # Errors
/// The refusal of the member being repaired.
#[allow(
    clippy::result_large_err,
    reason = "a test helper: the refusal is inspected at once"
)]
pub fn finish(
    c: &mut Cluster,
    session: &RepairSession,
    relayed: &Relayed,
) -> Result<RepairResponse, Error> {
    step(
        c,
        session.lost.get(),
        RepairRequest::Finish {
            session: session.clone(),
            opened: relayed.opened.clone(),
            dealt: relayed.dealt.clone(),
            summed: relayed.summed.clone(),
        },
    )
}

/// A whole repair of `session` with every message relayed as sent.
///
/// # Errors
/// The first refusal, with the seat that refused.
#[allow(
    clippy::result_large_err,
    reason = "a test helper: the refusal is inspected at once"
)]
pub fn run(c: &mut Cluster, session: &RepairSession) -> Result<RepairResponse, (u16, Error)> {
    let relayed = through_sum(c, session, |_| {})?;
    finish(c, session, &relayed).map_err(|e| (session.lost.get(), e))
}

/// `message`'s payload replaced by `payload`, signed again by its sender's
/// identity key: what a lying member sends.
pub fn resigned(message: &SignedRepairMessage, payload: RepairPayload) -> SignedRepairMessage {
    SignedRepairMessage::sign(
        &identity_secret(message.sender.get()),
        message.session.clone(),
        message.sender,
        payload,
    )
}

/// A valid scalar that is no honest repair value: 32 bytes of `byte`
/// (below the group order for any byte below 0xff).
pub fn bogus_value(byte: u8) -> Vec<u8> {
    vec![byte; 32]
}

/// Seals `value` from `from` to `to` in `session` under the recipient's
/// per-session key `hpke_key`, as a lying helper would.
pub fn sealed(
    c: &mut Cluster,
    session: &RepairSession,
    from: u16,
    to: u16,
    hpke_key: &HexBytes,
    value: &[u8],
) -> HexBytes {
    seal_repair_value(
        session,
        seat(from),
        seat(to),
        &hpke_key.0,
        value,
        &mut c.rng,
    )
    .unwrap()
}
