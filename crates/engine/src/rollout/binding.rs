//! The rollout record bound to the audit log (DESIGN.md I5: the policy
//! version is a security epoch). The record is one metadata record, sealed
//! like any other: an older copy put back authenticates, and a deleted one
//! reads as absent. The audit log is what the store's witness binds (its
//! sequence and head), so every step's entry names the hash of the record
//! it committed, and every open entry the hash of the record it found; at
//! load the record must be the one the last such entry names.
//!
//! Finding that entry reads the log backwards from its head to the last
//! policy step, open or prune, so at most what one run of the signer
//! appended. A prune names the record too: it may remove every step and
//! open, and keep only the entries after them.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thresig_store::{AuditSeq, Store, WalletId};

use super::RolloutError;
use crate::audit::AuditEvent;

/// Entries read per page, walking back.
const PAGE: u64 = 256;

/// The rollout record an open entry found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordRef {
    /// The hex SHA-256 of the stored record (`None`: there was none).
    pub record: Option<String>,
}

impl RecordRef {
    /// The reference of the stored bytes `raw`.
    #[must_use]
    pub fn of(raw: Option<&[u8]>) -> Self {
        Self {
            record: raw.map(record_hash),
        }
    }
}

/// The hex SHA-256 of a stored record, as the audit entries name it.
#[must_use]
pub fn record_hash(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// The record the audit log's last policy step, open or prune names;
/// `None` when no kept entry names one (a store that never recorded one).
///
/// # Errors
/// The store's.
pub(crate) fn last_bound<S: Store>(store: &S) -> Result<Option<RecordRef>, thresig_store::Error> {
    let mut bound = None;
    walk_back(store, |event| {
        bound = match event {
            AuditEvent::PolicySettled { record, .. }
            | AuditEvent::PolicyStaged { record, .. }
            | AuditEvent::PolicyPromoted { record, .. }
            | AuditEvent::PolicyRolledBack { record, .. } => Some(RecordRef {
                record: Some(record),
            }),
            AuditEvent::Open {
                rollout: Some(found),
                ..
            }
            | AuditEvent::Prune {
                rollout: Some(found),
                ..
            } => Some(found),
            _ => return ControlFlow::Continue(()),
        };
        ControlFlow::Break(())
    })?;
    Ok(bound)
}

/// The policy version each of `wallets` applied at the newest kept open
/// entry naming it: what a signer before staged rollouts applied from its
/// file. A wallet no kept open names is left out.
///
/// # Errors
/// The store's.
pub(crate) fn last_opened<S: Store>(
    store: &S,
    wallets: &BTreeSet<WalletId>,
) -> Result<BTreeMap<WalletId, u32>, thresig_store::Error> {
    let mut found = BTreeMap::new();
    if wallets.is_empty() {
        return Ok(found);
    }
    walk_back(store, |event| {
        if let AuditEvent::Open {
            policy_versions, ..
        } = event
        {
            for (wallet, version) in policy_versions {
                if wallets.contains(&wallet) {
                    found.entry(wallet).or_insert(version);
                }
            }
            if found.len() == wallets.len() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// Reads the audit log from its head backwards, each entry's event to
/// `visit` until it breaks.
fn walk_back<S: Store>(
    store: &S,
    mut visit: impl FnMut(AuditEvent) -> ControlFlow<()>,
) -> Result<(), thresig_store::Error> {
    let head = store.audit_head()?;
    let first = head.first.0.max(1);
    let mut end = head.seq.0;
    while end >= first {
        let from = end.saturating_sub(PAGE - 1).max(first);
        let count = usize::try_from(end - from + 1).unwrap_or(usize::MAX);
        let page = store.audit(AuditSeq(from), count)?;
        for entry in page.iter().rev().filter(|e| e.seq.0 <= end) {
            // An entry of a kind this version does not know names nothing.
            let Ok(event) = serde_json::from_slice::<AuditEvent>(&entry.body) else {
                continue;
            };
            if visit(event).is_break() {
                return Ok(());
            }
        }
        end = from - 1;
    }
    Ok(())
}

/// Refuses a record other than the one the audit log last named.
///
/// # Errors
/// [`RolloutError::Replaced`]; [`RolloutError::Store`].
pub(crate) fn check_bound<S: Store>(store: &S, raw: Option<&[u8]>) -> Result<(), RolloutError> {
    match last_bound(store).map_err(RolloutError::Store)? {
        Some(named) if named != RecordRef::of(raw) => Err(RolloutError::Replaced),
        _ => Ok(()),
    }
}
