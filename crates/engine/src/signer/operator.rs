//! The local operator's commands to a running signer: one enum, so that a
//! process carrying them (the admin socket of `thresig serve`) dispatches
//! every present and future command through one call, [`Signer::operate`].
//! A coordinator's request never reaches here: these come from this
//! member's own operator only.

use serde::{Deserialize, Serialize};
use thresig_crypto::Seat;
use thresig_store::{Store, Timestamp, WalletId};

use super::Signer;
use super::rekey::Transition;
use crate::api::WalletStatus;
use crate::audit::{AuditEvent, append_op};
use crate::error::Error;

/// A command of this member's operator to the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum OperatorCommand {
    /// Put an active wallet in `rekeying` ([`Signer::begin_rekey`]).
    BeginRekey {
        /// The wallet.
        wallet: WalletId,
    },
    /// Retire a rekeying wallet and delete its key package
    /// ([`Signer::retire`]).
    Retire {
        /// The wallet.
        wallet: WalletId,
    },
    /// Approve helping to repair one seat of a wallet, in this signer's
    /// memory only ([`Signer::approve_repair`]).
    ApproveRepair {
        /// The wallet.
        wallet: WalletId,
        /// The wallet seat to be repaired.
        seat: Seat,
        /// How long the approval lasts, 1 to
        /// [`MAX_APPROVAL_SECS`](crate::MAX_APPROVAL_SECS).
        expires_in_secs: u64,
    },
}

impl OperatorCommand {
    /// The wallet the command acts on.
    #[must_use]
    pub fn wallet(&self) -> &WalletId {
        match self {
            Self::BeginRekey { wallet }
            | Self::Retire { wallet }
            | Self::ApproveRepair { wallet, .. } => wallet,
        }
    }
}

/// What an operator's command did: whether it changed the wallet, and the
/// wallet's status afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OperatorOutcome {
    /// Whether the wallet changed or was already in the state asked for
    /// (an approval is always [`Transition::Done`]).
    pub transition: Transition,
    /// When what the command granted expires (a repair approval).
    pub expires: Option<Timestamp>,
    /// The wallet after the command.
    pub status: WalletStatus,
}

impl<S: Store> Signer<S> {
    /// Runs one command of this member's operator at `now`.
    ///
    /// Every command is recorded in the audit log, changed or not: a step
    /// that changes the wallet commits its entry in the step's own unit
    /// (both or neither), an approval is granted only once its entry
    /// committed, and a step that found the wallet already so is recorded
    /// alone, with `changed: false`.
    ///
    /// # Errors
    /// The command's own errors ([`Signer::begin_rekey`],
    /// [`Signer::retire`], [`Signer::approve_repair`]); [`Error::Store`]
    /// when its audit entry cannot be written.
    pub fn operate(
        &self,
        now: Timestamp,
        command: &OperatorCommand,
    ) -> Result<OperatorOutcome, Error> {
        let wallet = command.wallet();
        let name = match command {
            OperatorCommand::BeginRekey { .. } => "begin_rekey",
            OperatorCommand::Retire { .. } => "retire",
            OperatorCommand::ApproveRepair { .. } => "approve_repair",
        };
        let entry = |changed| {
            append_op(
                now,
                &AuditEvent::Operator {
                    wallet: wallet.clone(),
                    command: name.to_owned(),
                    changed,
                },
            )
        };
        let (transition, expires) = match command {
            OperatorCommand::BeginRekey { wallet } => {
                (self.begin_rekey_logged(wallet, Some(entry(true)))?, None)
            }
            OperatorCommand::Retire { wallet } => {
                (self.retire_logged(wallet, Some(entry(true)))?, None)
            }
            OperatorCommand::ApproveRepair {
                wallet,
                seat,
                expires_in_secs,
            } => {
                let expires = self.approve_repair_logged(
                    now,
                    wallet,
                    *seat,
                    *expires_in_secs,
                    Some(entry(true)),
                )?;
                (Transition::Done, Some(expires))
            }
        };
        if transition == Transition::Already {
            self.store
                .write(vec![entry(false)])
                .map_err(|source| Error::Store {
                    wallet: wallet.clone(),
                    source,
                })?;
        }
        Ok(OperatorOutcome {
            transition,
            expires,
            status: self.status(command.wallet())?,
        })
    }
}
