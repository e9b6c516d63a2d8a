//! The local operator's commands to a running signer: one enum, so that a
//! process carrying them (the admin socket of `thresig serve`) dispatches
//! every present and future command through one call, [`Signer::operate`].
//! A coordinator's request never reaches here: these come from this
//! member's own operator only.

use serde::{Deserialize, Serialize};
use thresig_store::{Store, WalletId};

use super::Signer;
use super::rekey::Transition;
use crate::api::WalletStatus;
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
}

impl OperatorCommand {
    /// The wallet the command acts on.
    #[must_use]
    pub fn wallet(&self) -> &WalletId {
        match self {
            Self::BeginRekey { wallet } | Self::Retire { wallet } => wallet,
        }
    }
}

/// What an operator's command did: whether it changed the wallet, and the
/// wallet's status afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OperatorOutcome {
    /// Whether the wallet changed or was already in the state asked for.
    pub transition: Transition,
    /// The wallet after the command.
    pub status: WalletStatus,
}

impl<S: Store> Signer<S> {
    /// Runs one command of this member's operator.
    ///
    /// # Errors
    /// The command's own errors ([`Signer::begin_rekey`],
    /// [`Signer::retire`]).
    pub fn operate(&self, command: &OperatorCommand) -> Result<OperatorOutcome, Error> {
        let transition = match command {
            OperatorCommand::BeginRekey { wallet } => self.begin_rekey(wallet)?,
            OperatorCommand::Retire { wallet } => self.retire(wallet)?,
        };
        Ok(OperatorOutcome {
            transition,
            status: self.status(command.wallet())?,
        })
    }
}
