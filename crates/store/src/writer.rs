//! The single writer: one std thread that owns every write transaction.
//!
//! Callers send jobs over a bounded channel (back-pressure instead of an
//! unbounded queue). The thread takes the first job, then drains whatever
//! else is already waiting (up to `max_batch` units) into the same write
//! transaction and one durable commit (group commit), and answers each
//! caller only after that commit returned. Keyring changes are jobs too, so
//! they are ordered with the writes; each runs in a transaction of its own.

use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

use redb::{Database, ReadableTable};

use crate::entry::{DekState, StoredEntry};
use crate::error::Error;
use crate::ids::{DekTerm, WalletId};
use crate::keyring::Keyring;
use crate::marker_set::CheckedMarkerSets;
use crate::ops::{WriteOp, WriteOutcome, apply_unit, op_wallet};
use crate::provider::KekId;
use crate::records::{Raw, WriteCtx};
use crate::schema::{self, DEK_INDEX, KEYRING, RecordTable};
use crate::sync::{Mutex, lock};
use crate::witness::{Position, Witness};

/// State shared by the writer thread and every reader.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) db: Database,
    /// The database's path (a placeholder for one in memory), named by
    /// every error about its contents.
    pub(crate) database: std::path::PathBuf,
    pub(crate) keyring: Keyring,
    pub(crate) witness: Witness,
    pub(crate) corrupt: Mutex<BTreeSet<WalletId>>,
    pub(crate) stats: Mutex<WriterStats>,
    /// The newest commit the witness may not cover yet (I5): set before a
    /// commit that must be witnessed, kept when that witness write fails,
    /// cleared only by a witness write at or past it. While it is set,
    /// nothing the store holds that could release a share (a marker, found
    /// by a read or by a retry's insert) is handed back.
    pub(crate) witness_behind: Mutex<Option<Position>>,
    /// Wallets whose marker rows were checked against their digest (I4).
    pub(crate) marker_sets: CheckedMarkerSets,
    /// Wall time this store's callers spent blocked on their commits.
    pub(crate) write_wait: crate::wait::WaitClock,
}

/// Counters the writer keeps (for `keys status`, metrics and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Durable commits made.
    pub commits: u64,
    /// Units committed or skipped through those commits.
    pub units: u64,
    /// Witness writes that failed (the witness lags until the next one).
    pub witness_failures: u64,
}

impl Shared {
    /// `e`, naming the database if it concerns it.
    pub(crate) fn named(&self, e: Error) -> Error {
        e.in_file(&self.database)
    }

    /// Records that `e` showed a wallet's record failing to authenticate.
    pub(crate) fn note_corruption(&self, e: &Error) {
        if let Some(w) = e.corrupt_wallet() {
            lock(&self.corrupt).insert(w.clone());
        }
    }

    /// Marks the wallets a global bump found corrupt.
    fn note_corrupt_wallets(&self, wallets: &[WalletId]) {
        lock(&self.corrupt).extend(wallets.iter().cloned());
    }

    fn is_corrupt(&self, w: &WalletId) -> bool {
        lock(&self.corrupt).contains(w)
    }

    /// Rewrites the witness at `p`, noting whether it now lags (see
    /// [`Shared::witness_behind`]).
    ///
    /// # Errors
    /// [`Error::WitnessIo`] when it cannot be written.
    pub(crate) fn write_witness(&self, p: Position) -> Result<(), Error> {
        // The file is written without holding the lag (the witness
        // serializes its own writers), so a slow disk stalls no commit.
        let written = self.witness.write(p);
        let mut behind = lock(&self.witness_behind);
        match written {
            Ok(()) => {
                // A write at an older position (a refresh that read the
                // position before a newer commit) leaves the lag in place.
                if behind.is_some_and(|lagging| p.covers(&lagging)) {
                    *behind = None;
                }
            }
            Err(_) => {
                lock(&self.stats).witness_failures += 1;
                *behind = Some(behind.map_or(p, |lagging| newest(lagging, p)));
            }
        }
        written
    }

    /// Notes that a commit at `p` is about to become visible before the
    /// witness records it; returns what was noted before.
    fn expect_witness(&self, p: Position) -> Option<Position> {
        let mut behind = lock(&self.witness_behind);
        let before = *behind;
        *behind = Some(before.map_or(p, |lagging| newest(lagging, p)));
        before
    }

    /// Undoes [`Shared::expect_witness`] for a commit that failed.
    fn forget_witness(&self, before: Option<Position>) {
        *lock(&self.witness_behind) = before;
    }

    /// Whether the witness may lag a commit.
    pub(crate) fn witness_is_behind(&self) -> bool {
        lock(&self.witness_behind).is_some()
    }
}

/// A keyring change, run by the writer in a transaction of its own. Any
/// provider call it needs was made before it was sent.
#[derive(Debug)]
pub(crate) enum AdminOp {
    /// Stores a new DEK's entry (already in the in-memory keyring).
    AddDek { entry: StoredEntry },
    /// Makes `term` current.
    Promote { term: DekTerm },
    /// Re-seals up to `limit` records still under a non-current DEK.
    Reseal { limit: usize },
    /// Retires `term` if no record names it.
    RetireDek { term: DekTerm },
    /// Adds wraps made under a new KEK.
    AddWraps {
        wraps: Vec<(DekTerm, KekId, Vec<u8>)>,
    },
    /// Drops every wrap not under `keep`, if every active DEK has one.
    RetireKek { keep: KekId },
}

/// The audit entry of a keyring change the key manager makes on its own,
/// appended in the change's transaction when it changes the keys.
pub(crate) struct AuditNote {
    pub(crate) at: crate::ids::Timestamp,
    pub(crate) body: Vec<u8>,
}

/// A unit of work for the writer.
pub(crate) enum Job {
    Write {
        ops: Vec<WriteOp>,
        reply: SyncSender<Result<WriteOutcome, Error>>,
    },
    Admin {
        op: AdminOp,
        note: Option<AuditNote>,
        reply: SyncSender<Result<usize, Error>>,
    },
}

/// The writer loop; returns when every sender is gone.
pub(crate) fn run(shared: &Shared, jobs: &Receiver<Job>, max_batch: usize) {
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match first {
            Job::Admin { op, note, reply } => {
                let _ = reply.send(run_admin(shared, op, note));
            }
            Job::Write { ops, reply } => {
                let mut batch = vec![(ops, reply)];
                while batch.len() < max_batch {
                    match jobs.try_recv() {
                        Ok(Job::Write { ops, reply }) => batch.push((ops, reply)),
                        Ok(admin) => {
                            pending = Some(admin);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                run_batch(shared, batch);
            }
        }
    }
}

type Reply = SyncSender<Result<WriteOutcome, Error>>;

fn run_batch(shared: &Shared, batch: Vec<(Vec<WriteOp>, Reply)>) {
    let units: Vec<&[WriteOp]> = batch.iter().map(|(ops, _)| ops.as_slice()).collect();
    let started = std::time::Instant::now();
    let committed = commit_batch(shared, &units);
    crate::metrics::commit(units.len(), started.elapsed());
    match committed {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            // The transaction did not commit: every caller learns it, none
            // is told its data is durable.
            for (_, reply) in batch {
                let _ = reply.send(Err(clone_batch_error(&e)));
            }
        }
    }
}

/// A batch failure is reported to every caller of the batch.
fn clone_batch_error(e: &Error) -> Error {
    match e {
        Error::Storage {
            fault,
            source,
            file,
        } => Error::Storage {
            fault: *fault,
            source: Box::new(redb::Error::Io(std::io::Error::other(source.to_string()))),
            file: file.clone(),
        },
        Error::DekMissing {
            table,
            wallet,
            term,
            file,
        } => Error::DekMissing {
            table: *table,
            wallet: wallet.clone(),
            term: *term,
            file: file.clone(),
        },
        Error::MetadataCorrupt { name, file } => Error::MetadataCorrupt {
            name,
            file: file.clone(),
        },
        _ => Error::WriterStopped,
    }
}

fn commit_batch(
    shared: &Shared,
    units: &[&[WriteOp]],
) -> Result<Vec<Result<WriteOutcome, Error>>, Error> {
    let txn = shared.db.begin_write()?;
    let mut outcomes = Vec::with_capacity(units.len());
    // Per unit: committed with a security-relevant op (its answer waits on
    // the witness).
    let mut guarded = Vec::with_capacity(units.len());
    // While the witness lags an earlier commit, a unit that finds stored
    // security state (a marker with its shares, say) waits on the witness
    // too: otherwise a retry after a `WitnessIo` would get the marker's
    // shares back while a rollback could still undo it unnoticed.
    let behind = shared.witness_is_behind();
    let (position, found, witnessed) = {
        // I1: the DEK is chosen here, inside the transaction that commits.
        let mut ctx = WriteCtx::begin(&txn, shared.keyring.view())?;
        ctx.checked_marker_sets = Some(&shared.marker_sets);
        for ops in units {
            if let Some(w) = ops
                .iter()
                .filter_map(op_wallet)
                .find(|w| shared.is_corrupt(w))
            {
                outcomes.push(Err(Error::WalletCorrupt { wallet: w.clone() }));
                guarded.push(false);
                continue;
            }
            match apply_unit(&mut ctx, ops) {
                Err(e @ (Error::Storage { .. } | Error::MetadataCorrupt { .. })) => return Err(e),
                Err(e) => {
                    shared.note_corruption(&e);
                    outcomes.push(Err(e));
                    guarded.push(false);
                }
                Ok(outcome) => {
                    guarded.push(match outcome {
                        WriteOutcome::Committed(_) => ops.iter().any(is_security_relevant),
                        WriteOutcome::Skipped { .. } => behind,
                    });
                    outcomes.push(Ok(outcome));
                }
            }
        }
        let (generation, audit) = ctx.bump_generation()?;
        let epoch = ctx.records().global_epoch()?;
        let found = std::mem::take(&mut ctx.corrupt_found);
        let witnessed = ctx.epoch_bumped || behind || guarded.contains(&true);
        let position = Position {
            epoch,
            generation,
            audit,
        };
        (position, found, witnessed)
    };
    // A reader may see this commit before its witness is written: it is
    // noted as lagging first, so such a reader brings the witness current
    // (or fails) before handing a marker back.
    let before = witnessed.then(|| shared.expect_witness(position));
    if let Err(e) = txn.commit() {
        if let Some(before) = before {
            shared.forget_witness(before);
        }
        return Err(e.into());
    }
    {
        let mut stats = lock(&shared.stats);
        stats.commits += 1;
        stats.units += units.len() as u64;
    }
    crate::metrics::audit_head(position.audit.seq);
    shared.note_corrupt_wallets(&found);
    // I5: the witness never lags an acknowledged security-relevant write:
    // it is written after the durable commit and before any caller hears.
    // If it cannot be written, those units are not acknowledged: their
    // callers get a retryable `WitnessIo` (the data did commit; a retry
    // finds it, e.g. as `MarkerPresent`), so no share is released on a
    // write a rollback could undo unnoticed.
    if witnessed && let Err(e) = shared.write_witness(position) {
        for (outcome, guarded) in outcomes.iter_mut().zip(guarded) {
            // Stored state found in this batch (a marker another unit of
            // it inserted, say) waits on the witness like a commit.
            let found_stored = matches!(outcome, Ok(WriteOutcome::Skipped { .. }));
            if guarded || found_stored {
                *outcome = Err(unwitnessed(&e, shared.witness.path()));
            }
        }
    }
    Ok(outcomes)
}

/// What a unit waiting on a witness write that failed with `e` is told: a
/// witness removed or replaced stays terminal for each of them.
fn unwitnessed(e: &Error, witness: std::path::PathBuf) -> Error {
    match e {
        Error::WitnessReplaced { reason, .. } => Error::WitnessReplaced { witness, reason },
        _ => Error::WitnessIo {
            witness,
            source: std::io::Error::other("witness not written after commit"),
        },
    }
}

/// The later of two positions (they only grow, together).
fn newest(a: Position, b: Position) -> Position {
    if a.covers(&b) { a } else { b }
}

/// Whether rolling back `op` could let a share be released twice or an old
/// key or policy state come back (I5): such commits rewrite the witness.
fn is_security_relevant(op: &WriteOp) -> bool {
    matches!(
        op,
        WriteOp::PutWallet { .. }
            | WriteOp::InsertKeyPackage { .. }
            | WriteOp::DeleteKeyPackage { .. }
            | WriteOp::InsertMarker { .. }
            | WriteOp::CasPolicy { .. }
            | WriteOp::BumpWalletEpoch { .. }
            | WriteOp::AppendAudit { .. }
            | WriteOp::PruneAudit { .. }
    )
}

fn run_admin(shared: &Shared, op: AdminOp, note: Option<AuditNote>) -> Result<usize, Error> {
    let txn = shared.db.begin_write()?;
    let retired;
    let found;
    let (count, bumped, position) = {
        let mut ctx = WriteCtx::begin(&txn, shared.keyring.view())?;
        let adds_wraps = matches!(op, AdminOp::AddWraps { .. });
        let (count, r) = apply_admin(&mut ctx, op)?;
        // A change that moves the global epoch (a promotion, a retired DEK
        // or KEK) or wraps a DEK under another KEK (which can unwrap it from
        // then on) is one the log must show; a step that changed nothing
        // (already done, a new DEK not yet current, a re-seal) is not. The
        // witness write below covers the appended head too.
        if (ctx.epoch_bumped || (adds_wraps && count > 0))
            && let Some(note) = note
        {
            crate::audit::append(&mut ctx, note.at, &note.body)?;
        }
        ctx.seal_keyring_state()?;
        retired = r;
        let (generation, audit) = ctx.bump_generation()?;
        let epoch = ctx.records().global_epoch()?;
        found = std::mem::take(&mut ctx.corrupt_found);
        let position = Position {
            epoch,
            generation,
            audit,
        };
        (count, ctx.epoch_bumped, position)
    };
    txn.commit()?;
    lock(&shared.stats).commits += 1;
    crate::metrics::audit_head(position.audit.seq);
    shared.note_corrupt_wallets(&found);
    if let Some(term) = retired {
        shared.keyring.retired(term);
    }
    // A keyring change is not share-releasing, so its caller is answered
    // even if this write fails: `write_witness` then keeps the lag, and no
    // stored marker is handed back until the witness is written (by a
    // marker read, the next witnessed commit or the key manager's tick).
    // Until then the witness does not guard this change (storage-format.md).
    if bumped {
        let _ = shared.write_witness(position);
    }
    Ok(count)
}

/// Reads one keyring entry inside a write transaction.
fn entry_in(txn: &redb::WriteTransaction, term: DekTerm) -> Result<Option<StoredEntry>, Error> {
    let t = txn.open_table(KEYRING)?;
    let raw = t.get(term.0)?.map(|g| g.value().to_vec());
    raw.map(|bytes| StoredEntry::decode(term, &bytes))
        .transpose()
}

fn put_entry(txn: &redb::WriteTransaction, entry: &StoredEntry) -> Result<(), Error> {
    txn.open_table(KEYRING)?
        .insert(entry.term, entry.encode().as_slice())?;
    Ok(())
}

/// Applies a keyring change; returns a count and the DEK retired, if any.
fn apply_admin(ctx: &mut WriteCtx<'_>, op: AdminOp) -> Result<(usize, Option<DekTerm>), Error> {
    match op {
        AdminOp::AddDek { entry } => {
            if entry_in(ctx.txn, entry.term())?.is_none() {
                put_entry(ctx.txn, &entry)?;
            }
            Ok((1, None))
        }
        AdminOp::Promote { term } => {
            let active = entry_in(ctx.txn, term)?.is_some_and(|e| e.state == DekState::Active);
            let dek = ctx
                .view
                .get(term)
                .filter(|_| active)
                .ok_or(Error::dek_missing(RecordTable::Sys, None, term))?;
            if ctx.current_term() != term {
                ctx.set_current(dek);
                // run_admin rewrites the current-DEK record (term and
                // keyring digest) under the new DEK before committing.
                ctx.bump_global()?;
            }
            Ok((1, None))
        }
        AdminOp::Reseal { limit } => reseal(ctx, limit).map(|n| (n, None)),
        AdminOp::RetireDek { term } => {
            if ctx.current_term() == term {
                return Err(Error::DekIsCurrent { term });
            }
            let in_use = {
                let index = ctx.txn.open_table(DEK_INDEX)?;
                let start = term.0.to_be_bytes();
                let mut range = index.range::<&[u8]>(start.as_slice()..)?;
                match range.next() {
                    Some(item) => item?.0.value().starts_with(&start),
                    None => false,
                }
            };
            if in_use {
                return Err(Error::DekInUse { term });
            }
            match entry_in(ctx.txn, term)? {
                Some(e) if e.state == DekState::Active => {
                    put_entry(ctx.txn, &StoredEntry::retired(term))?;
                    ctx.bump_global()?;
                    Ok((1, Some(term)))
                }
                _ => Ok((0, None)),
            }
        }
        AdminOp::AddWraps { wraps } => {
            let mut n = 0;
            for (term, kek, wrapped) in wraps {
                if let Some(mut e) =
                    entry_in(ctx.txn, term)?.filter(|e| e.state == DekState::Active)
                {
                    e.add_wrap(&kek, &wrapped);
                    put_entry(ctx.txn, &e)?;
                    n += 1;
                }
            }
            Ok((n, None))
        }
        AdminOp::RetireKek { keep } => {
            let entries = crate::store::entries_of(&ctx.txn.open_table(KEYRING)?)?;
            let active: Vec<_> = entries
                .into_iter()
                .filter(|e| e.state == DekState::Active)
                .collect();
            // Checked inside this transaction: no DEK loses its last usable wrap.
            if let Some(e) = active.iter().find(|e| !e.has_wrap(&keep)) {
                return Err(Error::KekStillNeeded {
                    term: e.term(),
                    kek: keep,
                });
            }
            let mut n = 0;
            for mut e in active {
                if e.wraps.len() > 1 {
                    e.keep_only(&keep);
                    put_entry(ctx.txn, &e)?;
                    n += 1;
                }
            }
            if n > 0 {
                ctx.bump_global()?;
            }
            Ok((n, None))
        }
    }
}

/// Re-seals up to `limit` records named in the index under a non-current
/// DEK, in this transaction. Records rewritten since (under the current DEK)
/// are no longer indexed under the old term, so they are never touched.
/// A record that fails to authenticate is skipped (left as it is, its
/// wallet noted in `corrupt_found`), so one damaged wallet does not stop the
/// rotation for the others (I4); it keeps its DEK in use until an operator
/// resolves it. An index entry whose record is missing is skipped the same
/// way: the entry stays, so the old DEK cannot be retired while the store
/// disagrees with its own index.
fn reseal(ctx: &mut WriteCtx<'_>, limit: usize) -> Result<usize, Error> {
    let mut failed: BTreeSet<(RecordTable, Vec<u8>)> = BTreeSet::new();
    let mut n = 0;
    while n < limit {
        let todo: Vec<_> = outside_current(ctx, limit - n + failed.len())?
            .into_iter()
            .filter(|item| !failed.contains(item))
            .collect();
        if todo.is_empty() {
            break;
        }
        for (table, key) in todo {
            let Some(sealed) = ctx.txn.raw_get(table, &key)? else {
                // Not counted: without this entry in `failed` the next pass
                // would find it again, and the loop would never end.
                failed.insert((table, key));
                continue;
            };
            let opened = ctx.records().epoch_for(table, &key).and_then(|epoch| {
                let plain = ctx.records().open_bytes(table, &key, epoch, &sealed)?;
                Ok((epoch, plain))
            });
            match opened {
                Ok((epoch, plain)) => {
                    ctx.put_at(table, &key, epoch, &plain)?;
                    n += 1;
                }
                Err(e) if e.is_record_corruption() => {
                    // Only a wallet-scoped record is skipped (its wallet
                    // marked corrupt; a key holding an id no signer could
                    // write is a tampered record of no wallet, skipped
                    // alone); store metadata or an audit entry that fails
                    // stops the batch as before.
                    if !table.wallet_scoped() {
                        return Err(e);
                    }
                    ctx.corrupt_found.extend(schema::wallet_of(&key));
                    failed.insert((table, key));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

/// Up to `limit` index entries of records under a DEK other than the
/// current one: two range reads.
fn outside_current(ctx: &WriteCtx<'_>, limit: usize) -> Result<Vec<(RecordTable, Vec<u8>)>, Error> {
    let current = ctx.current_term();
    let index = ctx.txn.open_table(DEK_INDEX)?;
    let start = current.0.to_be_bytes();
    let end = current.0.saturating_add(1).to_be_bytes();
    let mut out = Vec::new();
    let below = index.range::<&[u8]>(..start.as_slice())?;
    let above = index.range::<&[u8]>(end.as_slice()..)?;
    for item in below.chain(above) {
        if out.len() >= limit {
            break;
        }
        let (k, _) = item?;
        if let Some((_, table, key)) = schema::parse_index_key(k.value()) {
            out.push((table, key));
        }
    }
    Ok(out)
}
