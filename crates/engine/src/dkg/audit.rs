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
//!
//! Those three are also the endings any member can cause at will (start a
//! session, end it at once), so each coordinator's sessions of a wallet
//! write at most [`DKG_ENDINGS_LOGGED`] of them per [`DKG_ENDINGS_WINDOW`];
//! the rest are counted, and one `dkg_endings_unlogged` entry per window
//! records the count ([`EndingBudget`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use thresig_store::{Store, Timestamp, WalletId, WriteOp};

use super::{DkgSession, seat_in};
use crate::audit::{AuditEvent, DKG_ENDINGS_LOGGED, DKG_ENDINGS_WINDOW, append_op};
use crate::dkg_msg::{DkgKind, DkgSessionId};
use crate::error::Error;
use crate::ids::CoordinatorId;
use crate::signer::{Member, Signer};
use crate::wallet::{Confirming, ResultKind};

/// One coordinator's window of logged endings in one wallet.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Timestamp,
    logged: u32,
    unlogged: u64,
}

impl Window {
    fn over(&self, now: Timestamp) -> bool {
        now >= self.start.saturating_add(DKG_ENDINGS_WINDOW)
    }
}

/// The endings of a window past its budget: what its
/// `dkg_endings_unlogged` entry records.
#[derive(Clone, Debug)]
struct Unlogged {
    wallet: WalletId,
    coordinator: CoordinatorId,
    count: u64,
    since: Timestamp,
}

/// The budget of the endings written alone, per (wallet, coordinator): in
/// memory only, so a restart starts every budget afresh (a restart also
/// ends every session, so it cannot be looped faster than the signer
/// restarts). Bounded by the wallets times their rosters: only members
/// coordinate.
#[derive(Debug, Default)]
pub(crate) struct EndingBudget(Mutex<BTreeMap<(WalletId, CoordinatorId), Window>>);

impl EndingBudget {
    /// Charges one ending of `coordinator`'s session of `wallet` at `now`:
    /// whether it is logged, and the count of the window it closes if that
    /// window left endings unlogged.
    fn charge(
        &self,
        now: Timestamp,
        wallet: &WalletId,
        coordinator: CoordinatorId,
    ) -> (bool, Option<Unlogged>) {
        let mut windows = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = Window {
            start: now,
            logged: 0,
            unlogged: 0,
        };
        let window = windows
            .entry((wallet.clone(), coordinator))
            .or_insert(fresh);
        let mut closed = None;
        if window.over(now) {
            closed = (window.unlogged > 0).then(|| Unlogged {
                wallet: wallet.clone(),
                coordinator,
                count: window.unlogged,
                since: window.start,
            });
            *window = fresh;
        }
        let logged = window.logged < DKG_ENDINGS_LOGGED;
        if logged {
            window.logged = window.logged.saturating_add(1);
        } else {
            window.unlogged = window.unlogged.saturating_add(1);
        }
        (logged, closed)
    }

    /// Forgets every window over at `now`, returning the counts of those
    /// that left endings unlogged.
    fn close_over(&self, now: Timestamp) -> Vec<Unlogged> {
        let mut windows = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut closed = Vec::new();
        windows.retain(|(wallet, coordinator), window| {
            if !window.over(now) {
                return true;
            }
            if window.unlogged > 0 {
                closed.push(Unlogged {
                    wallet: wallet.clone(),
                    coordinator: *coordinator,
                    count: window.unlogged,
                    since: window.start,
                });
            }
            false
        });
        closed
    }
}

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
    /// Logs how a part 2 or 3 of `session`, asked by `member`'s
    /// coordinator, ended the session of `kind` it found running (`None`:
    /// none ran) with `error`: a failed check as `dkg_failed`, any other
    /// refusal that dropped the session (the wallet left the refresh's
    /// epoch, an internal error) as `dkg_abandoned` with the refusal's
    /// code. An error that left the session running is not logged.
    pub(crate) fn audit_dkg_failure(
        &self,
        now: Timestamp,
        (member, session): (&Member<'_>, DkgSessionId),
        kind: Option<&DkgKind>,
        error: &Error,
    ) {
        let Some(kind) = kind else {
            return;
        };
        let wallet = &member.slot().config.id;
        let event = match error {
            Error::DkgFailed { accused, fault, .. } => AuditEvent::DkgFailed {
                wallet: wallet.clone(),
                session: hex::encode(session.0),
                dkg_kind: kind_name(kind).to_owned(),
                accused: accused.map(thresig_crypto::Seat::get),
                fault: fault.name().to_owned(),
            },
            _ if self.running_kind(member, session).is_none() => {
                abandoned(wallet, session, kind_name(kind), error.code().as_str())
            }
            _ => return,
        };
        self.audit_ending(now, member.from(), &event, wallet);
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
        self.audit_ending(now, dropped.coordinator, &event, wallet);
    }

    /// Writes `event`, an ending of `coordinator`'s session of `wallet`,
    /// if its budget allows, after the count of the window it closes.
    fn audit_ending(
        &self,
        now: Timestamp,
        coordinator: CoordinatorId,
        event: &AuditEvent,
        wallet: &WalletId,
    ) {
        let (logged, closed) = self.dkg_endings.charge(now, wallet, coordinator);
        if let Some(closed) = closed {
            self.audit_unlogged(now, &closed);
        }
        if logged {
            let _ = self.audit_record(now, event);
        }
    }

    /// Writes the counts of the ending windows over at `now` (run by
    /// [`Signer::prune`], so a count is written even when its coordinator
    /// stopped).
    pub(crate) fn audit_unlogged_endings(&self, now: Timestamp) {
        for closed in self.dkg_endings.close_over(now) {
            self.audit_unlogged(now, &closed);
        }
    }

    fn audit_unlogged(&self, now: Timestamp, closed: &Unlogged) {
        let coordinator = self
            .slot(&closed.wallet)
            .ok()
            .and_then(|slot| seat_in(slot, closed.coordinator))
            .map(thresig_crypto::Seat::get);
        let event = AuditEvent::DkgEndingsUnlogged {
            wallet: closed.wallet.clone(),
            coordinator,
            count: closed.count,
            since_ms: closed.since.0,
        };
        let _ = self.audit_record(now, &event);
    }
}
