//! Repairing a member's lost share over the network.
//!
//! The coordinator only relays: every message is signed by its author's
//! identity key over the whole repair session and checked by every
//! recipient against its own roster; deltas are sealed to each helper's
//! per-session key and sigmas to the repaired member's. Each helper acts
//! only with its own operator's unexpired approval (`thresig repair
//! approve`); the repaired member stores its share only after checking it
//! against the wallet's verifying share, and every helper signs the same
//! wallet key.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::Seat;
use thresig_daemon::{Code, Error as DaemonError};
use thresig_engine::{
    ErrorCode, RepairPayload, RepairRequest, RepairResponse, RepairSession, SignedRepairMessage,
    WalletEpoch,
};
use thresig_store::Recovery;
use tokio::task::JoinSet;
use tracing::info;

use crate::config::NodeWallet;
use crate::peers::Peers;

/// A finished repair.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RepairOutcome {
    /// The repaired wallet seat.
    pub seat: Seat,
    /// The helpers' wallet seats.
    pub helpers: Vec<Seat>,
    /// The wallet epoch of the rebuilt share.
    pub epoch: WalletEpoch,
}

/// Why a repair failed. Nothing is stored before the repaired member's
/// last step has checked everything, so after a failure every member is as
/// it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    /// A member refused or could not be reached in a step.
    #[error("repair {step}: member {seat}: {error}")]
    Member {
        /// The step (`join`, `open`, `deal`, `sum`, `finish`).
        step: &'static str,
        /// The member's cluster seat.
        seat: Seat,
        /// What it answered.
        #[source]
        error: DaemonError,
    },
    /// A member's answer does not fit the protocol.
    #[error("repair {step}: member {seat} answered out of protocol: {problem}")]
    Protocol {
        /// The step.
        step: &'static str,
        /// The member's cluster seat.
        seat: Seat,
        /// What is wrong.
        problem: &'static str,
    },
    /// The repair could not start.
    #[error("repair not started: {0}")]
    Invalid(&'static str),
}

impl RepairError {
    /// Whether a fresh run can succeed without operator action: a member
    /// was unreachable or refused transiently, or lost the session.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Member { error, .. } if lost_session(error) => Recovery::Retryable,
            Self::Member { error, .. } => error.recovery(),
            Self::Protocol { .. } | Self::Invalid(_) => Recovery::Terminal,
        }
    }
}

/// A member that lost the session (restart, expiry): a new run can pass.
fn lost_session(error: &DaemonError) -> bool {
    matches!(error, DaemonError::Refused(r) if matches!(r.code.kind(), Code::Engine(ErrorCode::RepairNotInPhase)))
}

/// Repairs wallet seat `lost` of `wallet` with `helpers` (wallet seats; at
/// least the threshold, not `lost`), through `peers`. The epoch is the one
/// every helper reports.
///
/// # Errors
/// [`RepairError`] naming the first member that failed a step.
pub async fn run_repair(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    lost: Seat,
    helpers: &[Seat],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<RepairOutcome, RepairError> {
    let mut helpers = helpers.to_vec();
    helpers.sort_unstable();
    helpers.dedup();
    if helpers.contains(&lost) || helpers.len() < usize::from(wallet.config.threshold) {
        return Err(RepairError::Invalid(
            "name at least the threshold of helpers other than the repaired member",
        ));
    }
    let epoch = agreed_epoch(peers, wallet, &helpers).await?;
    let mut nonce = [0u8; 32];
    rng.fill_bytes(&mut nonce);
    let session = RepairSession::new(wallet.id().clone(), epoch, lost, helpers.clone(), nonce);
    info!(wallet = %wallet.id(), %lost, helpers = helpers.len(), "repair: join and open");
    let joined = messages(peers, wallet, &[lost], "join", |_| RepairRequest::Join {
        session: session.clone(),
    })
    .await?;
    let opened = messages(peers, wallet, &helpers, "open", |_| RepairRequest::Open {
        session: session.clone(),
    })
    .await?;
    let joined = joined
        .into_values()
        .next()
        .ok_or(RepairError::Invalid("no joined message"))?;
    info!("repair: deal");
    let dealt = messages(peers, wallet, &helpers, "deal", |_| RepairRequest::Deal {
        session: session.clone(),
        opened: opened.values().cloned().collect(),
    })
    .await?;
    info!("repair: sum");
    let summed = messages(peers, wallet, &helpers, "sum", |_| RepairRequest::Sum {
        session: session.clone(),
        joined: joined.clone(),
        dealt: dealt.values().cloned().collect(),
    })
    .await?;
    info!("repair: finish");
    let finish = RepairRequest::Finish {
        session: session.clone(),
        opened: opened.into_values().collect(),
        dealt: dealt.into_values().collect(),
        summed: summed.into_values().collect(),
    };
    match ask(peers, wallet, lost, "finish", finish).await? {
        RepairResponse::Repaired { seat, epoch, .. } if seat == lost => Ok(RepairOutcome {
            seat,
            helpers,
            epoch,
        }),
        _ => Err(protocol(wallet, lost, "finish", "not the repaired outcome")),
    }
}

/// The wallet epoch every helper reports for the wallet.
async fn agreed_epoch(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    helpers: &[Seat],
) -> Result<WalletEpoch, RepairError> {
    let mut agreed = None;
    for helper in helpers {
        let cluster = cluster_seat(wallet, *helper)?;
        let failed = |error| RepairError::Member {
            step: "status",
            seat: cluster,
            error,
        };
        let client = peers.client(cluster).await.map_err(failed)?;
        let epoch = peers
            .within(cluster, client.status())
            .await
            .map_err(failed)?
            .into_iter()
            .find(|w| &w.wallet == wallet.id())
            .and_then(|w| w.epoch)
            .ok_or_else(|| protocol(wallet, *helper, "status", "holds no key for the wallet"))?;
        if agreed.is_some_and(|e| e != epoch) {
            return Err(protocol(
                wallet,
                *helper,
                "status",
                "reports another wallet epoch than the other helpers",
            ));
        }
        agreed = Some(epoch);
    }
    agreed.ok_or(RepairError::Invalid("no helpers"))
}

/// Sends `request(seat)` to every seat of `seats` at once; each member's
/// signed message of that step, by wallet seat, checked to be its own,
/// signed by its identity key, and of the step's kind.
async fn messages(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    seats: &[Seat],
    step: &'static str,
    request: impl Fn(Seat) -> RepairRequest,
) -> Result<BTreeMap<Seat, SignedRepairMessage>, RepairError> {
    let mut calls = JoinSet::new();
    for seat in seats {
        let (peers, wallet, request) = (peers.clone(), wallet.clone(), request(*seat));
        let seat = *seat;
        calls.spawn(async move { (seat, ask(&peers, &wallet, seat, step, request).await) });
    }
    let mut out = BTreeMap::new();
    let mut first_error = None;
    while let Some(joined) = calls.join_next().await {
        let Ok((seat, answer)) = joined else {
            first_error.get_or_insert(RepairError::Invalid("a request task panicked"));
            continue;
        };
        let checked = answer.and_then(|response| match response {
            RepairResponse::Message(m) if m.sender != seat => {
                Err(protocol(wallet, seat, step, "another member's message"))
            }
            RepairResponse::Message(m) if !m.verify(&wallet.config) => Err(protocol(
                wallet,
                seat,
                step,
                "a message its identity key did not sign",
            )),
            RepairResponse::Message(m) if of_step(&m.payload) == Some(step) => Ok(m),
            _ => Err(protocol(wallet, seat, step, "not a message of this step")),
        });
        match checked {
            Ok(message) => {
                out.insert(seat, message);
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(out),
    }
}

/// The step whose answer `payload` is.
fn of_step(payload: &RepairPayload) -> Option<&'static str> {
    match payload {
        RepairPayload::Joined { .. } => Some("join"),
        RepairPayload::Opened { .. } => Some("open"),
        RepairPayload::Dealt { .. } => Some("deal"),
        RepairPayload::Summed { .. } => Some("sum"),
        _ => None,
    }
}

/// One repair step at wallet seat `seat`.
async fn ask(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    seat: Seat,
    step: &'static str,
    request: RepairRequest,
) -> Result<RepairResponse, RepairError> {
    let cluster = cluster_seat(wallet, seat)?;
    let failed = |error| RepairError::Member {
        step,
        seat: cluster,
        error,
    };
    let client = peers.client(cluster).await.map_err(failed)?;
    peers
        .within(cluster, client.repair(request))
        .await
        .map_err(failed)
}

fn cluster_seat(wallet: &NodeWallet, seat: Seat) -> Result<Seat, RepairError> {
    wallet
        .cluster_seat(seat)
        .ok_or(RepairError::Invalid("a seat outside the wallet's roster"))
}

fn protocol(
    wallet: &NodeWallet,
    seat: Seat,
    step: &'static str,
    problem: &'static str,
) -> RepairError {
    RepairError::Protocol {
        step,
        seat: wallet.cluster_seat(seat).unwrap_or(seat),
        problem,
    }
}
