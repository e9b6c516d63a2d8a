//! Retiring the data key that sealed a refreshed wallet's deleted share.
//!
//! The retirement calls the key provider and re-seals every record: it
//! may take as long as the provider hangs. So it never runs under a
//! wallet's lock or on a request: the switch commit records it as due (a
//! metadata record, so a restart still finishes it) and [`Signer::prune`]
//! runs it after releasing every wallet, retrying a retryable failure
//! after a growing number of prunes and giving up on a terminal one until
//! the next restart (an operator's `thresig keys rotate-dek` then does
//! it).

use std::sync::Mutex;

use thresig_store::{MetaName, Plaintext, Recovery, Store, Timestamp, WriteOp};

use crate::audit::KeyStepAudit;
use crate::signer::Signer;

/// The metadata record naming a due retirement.
const DUE: &[u8] = b"dek_retire_due";
/// Its value while a retirement is due, and once done.
const YES: u8 = 1;
const NO: u8 = 0;
/// At most this many prunes between two attempts.
const MAX_BACKOFF: u32 = 64;

/// The retirement's progress in this process.
#[derive(Debug, Default)]
pub(crate) struct Retirement {
    /// Prunes left before the next attempt.
    skip: u32,
    /// Prunes between the last two attempts.
    backoff: u32,
    /// A terminal failure stopped it until restart.
    stopped: bool,
}

/// The due record's name.
fn due_name() -> Option<MetaName> {
    MetaName::new(DUE.to_vec()).ok()
}

/// The write that marks a retirement as due (`true`) or done.
pub(crate) fn mark_due(due: bool) -> Option<WriteOp> {
    Some(WriteOp::PutMeta {
        name: due_name()?,
        value: Plaintext::from(vec![if due { YES } else { NO }]),
    })
}

impl<S: Store> Signer<S> {
    /// Retires the data key of deleted shares if a switch left that due,
    /// each key change committing with its `key_step` entry at `now`;
    /// called with no wallet locked.
    pub(crate) fn retire_if_due(&self, retirement: &Mutex<Retirement>, now: Timestamp) {
        let Ok(mut r) = retirement.lock() else {
            return;
        };
        if r.stopped {
            return;
        }
        if r.skip > 0 {
            r.skip -= 1;
            return;
        }
        let due = due_name()
            .and_then(|name| self.store.meta(&name).ok().flatten())
            .is_some_and(|v| v.as_slice() == [YES]);
        if !due {
            return;
        }
        match self
            .store
            .retire_deleted(&KeyStepAudit::new("retire_deleted"), now)
        {
            Ok(()) => {
                *r = Retirement::default();
                // Not written: the next prune retires once more, harmlessly.
                if let Some(done) = mark_due(false) {
                    let _ = self.store.write(vec![done]);
                }
            }
            Err(e) if e.recovery() == Recovery::Retryable => {
                r.backoff = r.backoff.saturating_mul(2).clamp(1, MAX_BACKOFF);
                r.skip = r.backoff;
            }
            Err(_) => r.stopped = true,
        }
    }

    /// Whether a terminal failure stopped the retirement of a deleted
    /// share's data key in this process (an operator must rotate the data
    /// key: `thresig keys rotate-dek`).
    #[must_use]
    pub fn retirement_stopped(&self) -> bool {
        self.retirement.lock().is_ok_and(|r| r.stopped)
    }
}
