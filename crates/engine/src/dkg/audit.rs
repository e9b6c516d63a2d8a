//! The audit entries of a DKG or refresh session that never reaches its
//! activation, switch or discard (those are logged in their own units):
//! the key package stored by part 3, a failed check, a relay's cancel, an
//! expiry and a member's own veto (docs/audit.md).
//!
//! A stored key package and a veto change the store, so their entries go
//! in the unit that writes them. A failure, a cancel and an expiry drop a
//! session held in memory only: there is no unit to join, so their entry
//! is written alone, after the fact and on a best-effort basis. The
//! session is over whatever the log says, and a failed append must not
//! turn the member's answer (the fault it found, or another request's
//! result) into a storage error.

use thresig_store::{Store, Timestamp, WalletId, WriteOp};

use super::DkgSession;
use crate::audit::{AuditEvent, append_op};
use crate::dkg_msg::{DkgKind, DkgSessionId};
use crate::error::Error;
use crate::signer::Signer;
use crate::wallet::{Confirming, ResultKind};

/// How an entry names what a session makes.
fn kind_name(kind: &DkgKind) -> &'static str {
    match kind {
        DkgKind::Fresh => "dkg",
        DkgKind::Refresh { .. } => "refresh",
    }
}

/// The entry of a part-3 result's key package, for the unit that stores
/// it: the share exists from that commit on, activated or not.
pub(super) fn key_stored_op(now: Timestamp, wallet: &WalletId, result: &Confirming) -> WriteOp {
    let dkg_kind = match result.kind() {
        ResultKind::Fresh => "dkg",
        ResultKind::Refresh { .. } => "refresh",
    };
    append_op(
        now,
        &AuditEvent::DkgKeyStored {
            wallet: wallet.clone(),
            session: hex::encode(result.session().0),
            dkg_kind: dkg_kind.to_owned(),
            epoch: result.epoch().0,
            output_key: hex::encode(result.key().output_key().to_bytes()),
        },
    )
}

/// The entry of this member's veto of the refresh `session`, for the unit
/// that records the veto.
pub(super) fn vetoed_op(now: Timestamp, wallet: &WalletId, session: DkgSessionId) -> WriteOp {
    append_op(now, &abandoned(wallet, session, "refresh", "vetoed"))
}

fn abandoned(wallet: &WalletId, session: DkgSessionId, dkg_kind: &str, how: &str) -> AuditEvent {
    AuditEvent::DkgAbandoned {
        wallet: wallet.clone(),
        session: hex::encode(session.0),
        dkg_kind: dkg_kind.to_owned(),
        how: how.to_owned(),
    }
}

impl<S: Store> Signer<S> {
    /// Logs that a session of `kind` failed with `error`, when `error` is
    /// the failure of one of its checks in part 2 or 3 (the session is
    /// over); `kind` is `None` when no session ran. Any other error
    /// changed nothing and is not logged.
    pub(crate) fn audit_dkg_failure(&self, now: Timestamp, kind: Option<&DkgKind>, error: &Error) {
        if let (
            Some(kind),
            Error::DkgFailed {
                wallet,
                session,
                accused,
                fault,
                ..
            },
        ) = (kind, error)
        {
            let event = AuditEvent::DkgFailed {
                wallet: wallet.clone(),
                session: hex::encode(session.0),
                dkg_kind: kind_name(kind).to_owned(),
                accused: accused.map(thresig_crypto::Seat::get),
                fault: fault.name().to_owned(),
            };
            let _ = self.audit_record(now, &event);
        }
    }

    /// Logs that `dropped`, a session of `wallet` that stored nothing, was
    /// given up `how` (`cancelled`, `expired`).
    pub(crate) fn audit_dkg_dropped(
        &self,
        now: Timestamp,
        wallet: &WalletId,
        dropped: &DkgSession,
        how: &str,
    ) {
        let event = abandoned(wallet, dropped.id, kind_name(&dropped.kind), how);
        let _ = self.audit_record(now, &event);
    }
}
