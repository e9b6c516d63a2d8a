//! The signer's side of the audit log: the open entry, checkpoints signed
//! by its identity key, export and prune. Share releases and lifecycle
//! steps put their entry in their own store unit
//! ([`crate::audit::append_op`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use thresig_store::{
    AuditHash, AuditSeq, OpResult, Store, Timestamp, WalletId, WriteOp, WriteOutcome,
};

use super::Signer;
use crate::audit::{
    AuditError, AuditEvent, CHECKPOINT_EVERY, Checkpoint, EXPORT_PAGE, EXPORT_PAGE_BYTES,
    ExportLine, ExportPage, MIN_RETENTION_MS, append_op as audit_op,
};

/// How often an export's closing checkpoint is tried again when another
/// entry landed between reading the head and appending it: only a burst
/// of share releases does that, and each retry sees a newer head.
const CHECKPOINT_RETRIES: usize = 8;

/// How many entries an export page reads from the store at a time.
const EXPORT_READ: usize = 64;

/// The sequence an append got, from a committed unit.
fn appended(outcome: &WriteOutcome) -> Option<AuditSeq> {
    match outcome {
        WriteOutcome::Committed(results) => results.iter().rev().find_map(|r| match r {
            OpResult::Appended(seq) => Some(*seq),
            _ => None,
        }),
        _ => None,
    }
}

impl<S: Store> Signer<S> {
    /// Appends `event` at `now` in a unit of its own (events that change
    /// nothing else: the open, the operator's key commands).
    ///
    /// # Errors
    /// [`AuditError::Store`], such as the store's `AuditBroken`.
    pub fn audit_record(&self, now: Timestamp, event: &AuditEvent) -> Result<AuditSeq, AuditError> {
        let outcome = self.store.write(vec![audit_op(now, event)])?;
        let seq = appended(&outcome).ok_or(AuditError::Busy)?;
        self.checkpoint_due(now, seq);
        Ok(seq)
    }

    /// Records that this signer opened its store and serves.
    ///
    /// # Errors
    /// As [`Signer::audit_record`].
    pub fn audit_open(&self, now: Timestamp) -> Result<AuditSeq, AuditError> {
        // Wallets new to this store get their file's policy stored first, so
        // the entry names what they apply from now on. A record that cannot
        // be used is left as it is: round 2 refuses with its error.
        if let Err(crate::rollout::RolloutError::Store(e)) = self.settle_policies(now) {
            return Err(AuditError::Store(e));
        }
        let event = AuditEvent::Open {
            identity: self.identity.verifying_key().into(),
            wallets: self.wallets.len() as u64,
            policy_versions: self.applied_versions()?,
            rollout: self.rollout_found()?,
        };
        self.audit_record(now, &event)
    }

    /// Appends the periodic checkpoint when `seq` is at least
    /// [`CHECKPOINT_EVERY`] entries past the last checkpoint, in one
    /// attempt: it runs before the caller's answer (shares, for a release),
    /// and a checkpoint that lands after other entries still signs a real
    /// one. Counting from the last checkpoint, not on multiples of
    /// [`CHECKPOINT_EVERY`], keeps the period when that multiple is an
    /// entry written without this call (a DKG, operator or prune unit). A
    /// failure here is not the caller's: its own entry is durable, the
    /// chain stays whole, and every export ends with a checkpoint of its
    /// own.
    pub(crate) fn checkpoint_due(&self, now: Timestamp, seq: AuditSeq) {
        let last = self.audit_checkpointed.load(Ordering::Relaxed);
        // Claiming the period first lets only one of several concurrent
        // callers write its checkpoint.
        if seq.0.saturating_sub(last) >= CHECKPOINT_EVERY
            && self
                .audit_checkpointed
                .compare_exchange(last, seq.0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let _ = self.append_checkpoint(now);
        }
    }

    /// Appends a checkpoint signing the log's head, retried until it lands
    /// right after the entry it covers (as an export's closing one must);
    /// returns its sequence.
    ///
    /// # Errors
    /// [`AuditError::Store`]; [`AuditError::Busy`] if entries keep
    /// landing in between.
    pub fn audit_checkpoint(&self, now: Timestamp) -> Result<AuditSeq, AuditError> {
        for _ in 0..CHECKPOINT_RETRIES {
            let (covered, seq) = self.append_checkpoint(now)?;
            if seq.0 == covered.0.saturating_add(1) {
                return Ok(seq);
            }
        }
        Err(AuditError::Busy)
    }

    /// Appends one checkpoint of the head as read now; returns the entry
    /// it covers and where it landed.
    fn append_checkpoint(&self, now: Timestamp) -> Result<(AuditSeq, AuditSeq), AuditError> {
        let head = self.store.audit_head()?;
        let event =
            AuditEvent::Checkpoint(Checkpoint::sign(&self.identity, head.seq, &head.hash, now));
        let outcome = self.store.write(vec![audit_op(now, &event)])?;
        let seq = appended(&outcome).ok_or(AuditError::Busy)?;
        self.audit_checkpointed.fetch_max(seq.0, Ordering::Relaxed);
        Ok((head.seq, seq))
    }

    /// The entries from `since` on (from the first kept one if pruned),
    /// closed by a fresh checkpoint, as export lines, all in memory: for a
    /// caller that holds the whole export anyway. A long log is exported
    /// page by page instead: [`Signer::audit_checkpoint`], then
    /// [`Signer::audit_export_page`] through it.
    ///
    /// # Errors
    /// [`AuditError::Store`], such as the store's `AuditBroken` for an
    /// entry that fails to read; [`AuditError::Busy`].
    pub fn audit_export(
        &self,
        now: Timestamp,
        since: AuditSeq,
    ) -> Result<Vec<ExportLine>, AuditError> {
        let end = self.audit_checkpoint(now)?;
        let mut lines = Vec::new();
        let mut from = Some(since);
        while let Some(at) = from {
            let page = self.audit_export_page(at, end)?;
            lines.extend(page.decode()?);
            from = page.next;
        }
        Ok(lines)
    }

    /// One page of an export through `through` (its closing checkpoint):
    /// the lines from `from` (from the first kept entry if pruned), up to
    /// [`EXPORT_PAGE`] of them and [`EXPORT_PAGE_BYTES`] of JSON lines (a
    /// single larger entry goes alone), encoded once, as the page is
    /// measured and as it is printed, and where the next page starts,
    /// none after the last.
    ///
    /// # Errors
    /// [`AuditError::Store`], such as the store's `AuditBroken` for an
    /// entry that fails to read; [`AuditError::Unencodable`] for an entry
    /// whose line does not encode (no page then: never a line missing
    /// from it).
    pub fn audit_export_page(
        &self,
        from: AuditSeq,
        through: AuditSeq,
    ) -> Result<ExportPage, AuditError> {
        let mut text = String::new();
        let mut lines = 0usize;
        let mut last: Option<AuditSeq> = None;
        let mut at = from;
        // Read a few entries at a time, so that a page of large entries
        // holds no more than its budget in memory.
        'page: loop {
            let chunk = self.store.audit(at, EXPORT_READ)?;
            for entry in chunk.iter().filter(|e| e.seq <= through) {
                let json = serde_json::to_string(&ExportLine::of(entry))
                    .map_err(|_| AuditError::Unencodable { seq: entry.seq })?;
                let size = json.len().saturating_add(1);
                if lines == EXPORT_PAGE
                    || (lines > 0 && text.len().saturating_add(size) > EXPORT_PAGE_BYTES)
                {
                    break 'page;
                }
                text.push_str(&json);
                text.push('\n');
                lines = lines.saturating_add(1);
                last = Some(entry.seq);
            }
            match chunk.last() {
                Some(last) if last.seq < through && chunk.len() == EXPORT_READ => {
                    at = AuditSeq(last.seq.0.saturating_add(1));
                }
                _ => break,
            }
        }
        let next = last
            .map(|seq| AuditSeq(seq.0.saturating_add(1)))
            .filter(|next| *next <= through);
        Ok(ExportPage {
            from,
            text,
            lines,
            next,
        })
    }

    /// Removes the entries written before `before` (never the last), in
    /// one unit with the entry that records the prune and a checkpoint of
    /// the pruned head (the hash the first kept entry chains from), so an
    /// older export still joins the kept log. The prune entry names the
    /// rollout record, as the steps and opens it may remove did. Returns
    /// how many entries went.
    ///
    /// # Errors
    /// [`AuditError::PruneTooRecent`] for a cut-off within
    /// [`MIN_RETENTION_MS`] of `now` (nothing is written);
    /// [`AuditError::Store`]; [`AuditError::Busy`] if the log moved
    /// between reading it and the prune.
    pub fn audit_prune(&self, now: Timestamp, before: Timestamp) -> Result<u64, AuditError> {
        let latest = Timestamp(now.0.saturating_sub(MIN_RETENTION_MS));
        if before > latest {
            return Err(AuditError::PruneTooRecent { before, latest });
        }
        // The steps lock keeps the record as named until the unit commits.
        let (_steps, rollout) = self.rollout_held()?;
        let (through, pruned_head) = self.prune_point(before)?;
        let checkpoint = Checkpoint::sign(&self.identity, through, &pruned_head, now);
        let outcome = self.store.write(vec![
            WriteOp::PruneAudit { before, through },
            audit_op(
                now,
                &AuditEvent::Prune {
                    before_ms: before.0,
                    rollout,
                },
            ),
            audit_op(now, &AuditEvent::Checkpoint(checkpoint)),
        ])?;
        match &outcome {
            WriteOutcome::Committed(results) => results.iter().find_map(|r| match r {
                OpResult::AuditPruned(n) => Some(*n),
                _ => None,
            }),
            _ => None,
        }
        .ok_or(AuditError::Busy)
    }

    /// Where a prune before `before` stops, as the log stands now: the last
    /// entry to remove (the one before the first kept if none) and its
    /// hash, what the prune's checkpoint signs.
    fn prune_point(&self, before: Timestamp) -> Result<(AuditSeq, AuditHash), AuditError> {
        let head = self.store.audit_head()?;
        let mut point = (AuditSeq(head.first.0.saturating_sub(1)), head.anchor);
        let mut from = head.first;
        while from < head.seq {
            let page = self.store.audit(from, EXPORT_PAGE)?;
            for entry in &page {
                if entry.seq >= head.seq || entry.at >= before {
                    return Ok(point);
                }
                point = (entry.seq, entry.hash);
            }
            let Some(last) = page.last() else {
                break;
            };
            from = AuditSeq(last.seq.0.saturating_add(1));
        }
        Ok(point)
    }
}

impl<S: Store> Signer<S> {
    /// Each wallet's applied policy version (a rollout's, else the
    /// configuration's). With a rollout record that cannot be used none is
    /// named: no wallet signs until it is restored, and the configured
    /// versions are not what applies; the open is still recorded.
    fn applied_versions(&self) -> Result<BTreeMap<WalletId, u32>, AuditError> {
        match self.rollout_status() {
            Ok(status) => Ok(status
                .wallets
                .into_iter()
                .map(|w| (w.wallet, w.policy_version))
                .collect()),
            Err(crate::rollout::RolloutError::Store(e)) => Err(AuditError::Store(e)),
            Err(_) => Ok(BTreeMap::new()),
        }
    }
}
