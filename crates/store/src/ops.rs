//! The write operations the engine submits, and how the writer applies them.
//!
//! The engine submits a *unit*: a list of [`WriteOp`]s that commit together
//! or not at all. The writer applies many units in one transaction (group
//! commit). Inside a unit the operations apply in order, each seeing the
//! earlier ones; a conditional operation whose check fails (a marker already
//! present, a counter that moved) takes back the whole unit and reports
//! [`WriteOutcome::Skipped`], while the other units of the batch commit.

use crate::audit;
use crate::error::Error;
use crate::ids::{
    AuditSeq, CommitmentHash, DkgSessionId, KeyEpoch, MetaName, PackageHash, PolicyKey,
    RecordEpoch, Timestamp, WalletId,
};
use crate::marker_set::MarkerChange;
use crate::plaintext::Plaintext;
use crate::records::{ExpiryChange, WriteCtx};
use crate::schema::{self, MARKER_EXPIRY, RecordTable};

/// An attempt marker: the signature shares released for one commitment, and
/// the package they answered. Stored only if absent, so a commitment's
/// shares are released for exactly one package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Hash of the signing package the shares answer.
    pub package_hash: PackageHash,
    /// The serialized shares, as the engine encodes them.
    pub shares: Vec<u8>,
    /// When the marker may be purged: nonce TTL plus the replay window after
    /// it was written. Kept to the whole second, rounded down.
    pub expires_at: Timestamp,
}

impl Marker {
    fn encode(&self) -> Vec<u8> {
        [
            &self.package_hash.0[..],
            &self.expires_at.whole_secs().to_be_bytes(),
            &self.shares,
        ]
        .concat()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (hash, rest) = bytes.split_first_chunk::<32>()?;
        let (expires, shares) = rest.split_first_chunk::<8>()?;
        Some(Self {
            package_hash: PackageHash(*hash),
            shares: shares.to_vec(),
            expires_at: Timestamp::from_stored_secs(u64::from_be_bytes(*expires)),
        })
    }
}

/// One write of a unit.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum WriteOp {
    /// Stores a wallet's state (creating its epoch record at the current
    /// global epoch if the wallet is new). Sealed with the wallet's epoch.
    PutWallet {
        /// The wallet.
        wallet: WalletId,
        /// The engine's encoding of the wallet state.
        value: Vec<u8>,
    },
    /// Stores a key package for (wallet, epoch) only if none is there: a
    /// confirmed key package is never overwritten.
    InsertKeyPackage {
        /// The wallet.
        wallet: WalletId,
        /// The key package's number.
        epoch: KeyEpoch,
        /// The serialized key package (secret: zeroized, not shown).
        value: Plaintext,
    },
    /// Deletes the key package of (wallet, epoch) (after a refresh switched).
    DeleteKeyPackage {
        /// The wallet.
        wallet: WalletId,
        /// The number of the key package to delete.
        epoch: KeyEpoch,
    },
    /// Stores a DKG result awaiting confirmation.
    PutDkgResult {
        /// The wallet.
        wallet: WalletId,
        /// The DKG session.
        session: DkgSessionId,
        /// The engine's encoding of the result (may hold secrets).
        value: Plaintext,
    },
    /// Deletes a DKG result (confirmed, or aborted by the operator).
    DeleteDkgResult {
        /// The wallet.
        wallet: WalletId,
        /// The DKG session.
        session: DkgSessionId,
    },
    /// Inserts an attempt marker only if none exists for the commitment.
    InsertMarker {
        /// The wallet.
        wallet: WalletId,
        /// The signer's commitment hash.
        commitment: CommitmentHash,
        /// The marker.
        marker: Marker,
    },
    /// Sets a policy counter to `new` only if it currently equals
    /// `expected` (`None`: only if absent).
    CasPolicy {
        /// The wallet.
        wallet: WalletId,
        /// The counter.
        key: PolicyKey,
        /// The value the caller read.
        expected: Option<Vec<u8>>,
        /// The value to store.
        new: Vec<u8>,
    },
    /// Appends an audit entry after checking the log's head in this
    /// transaction; the writer assigns the next sequence and chains it.
    AppendAudit {
        /// When the event happened (the caller's clock).
        at: Timestamp,
        /// The engine's encoding of the entry (public data only).
        entry: Vec<u8>,
    },
    /// Removes the audit entries from the first kept one through
    /// `through` (never the last), keeping the chain verifiable from the
    /// first kept entry. The caller chose `through` as the last entry
    /// written before `before` (and signed it, in the same unit): if the
    /// log does not stand so in this transaction, the unit is skipped
    /// ([`Conflict::AuditPruneMoved`]).
    PruneAudit {
        /// Every entry removed was written before this time.
        before: Timestamp,
        /// The last entry removed (the one before the first kept: nothing
        /// is removed).
        through: AuditSeq,
    },
    /// Stores an engine metadata record.
    PutMeta {
        /// The record's name.
        name: MetaName,
        /// Its value (it may be secret, such as the member's identity
        /// key: zeroized, not shown).
        value: Plaintext,
    },
    /// Sets an engine metadata record to `new` only if it currently holds
    /// `expected` (`None`: only if absent): a member-wide record that
    /// several steps may race to change (the policy rollout's).
    CasMeta {
        /// The record's name.
        name: MetaName,
        /// The bytes the caller read.
        expected: Option<Vec<u8>>,
        /// The value to store.
        new: Plaintext,
    },
    /// Commits the unit only if an engine metadata record holds `expected`
    /// (`None`: only if absent), writing nothing: a condition on a record
    /// another unit changes (a share release on the policy rollout's
    /// step, which decides the policy the release was checked under).
    ExpectMeta {
        /// The record's name.
        name: MetaName,
        /// The bytes the caller read.
        expected: Option<Vec<u8>>,
    },
    /// Bumps the global epoch and moves the wallet to it, re-sealing the
    /// wallet's state and policy records so older ciphertexts stop opening.
    BumpWalletEpoch {
        /// The wallet.
        wallet: WalletId,
    },
    /// Deletes every marker that expired at or before `now`.
    PurgeMarkers {
        /// The current time, passed in by the caller.
        now: Timestamp,
    },
}

/// What one operation of a committed unit did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpResult {
    /// The record was written.
    Written,
    /// The conditional insert inserted.
    Inserted,
    /// The compare-and-set stored the new value.
    Swapped,
    /// The record held the value a condition expected.
    Matched,
    /// Whether a delete found the record.
    Deleted(bool),
    /// The audit entry's sequence.
    Appended(AuditSeq),
    /// How many audit entries a prune removed.
    AuditPruned(u64),
    /// The wallet's new epoch.
    EpochBumped(RecordEpoch),
    /// How many markers were purged.
    Purged(u64),
}

/// Why a unit was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// A key package was already stored for (wallet, epoch); it is returned.
    KeyPackagePresent(Plaintext),
    /// A marker was already stored for the commitment; it is returned (a
    /// replay of the same package gets its shares from it).
    MarkerPresent(Marker),
    /// The counter did not hold the expected value; its current value.
    PolicyMismatch(Option<Vec<u8>>),
    /// The metadata record did not hold the expected value; its current
    /// value.
    MetaMismatch(Option<Vec<u8>>),
    /// A prune's `through` is not the last entry written before its
    /// cut-off while another follows it (the log moved since it was read).
    AuditPruneMoved,
}

/// The result of one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// Every operation applied and the commit is durable.
    Committed(Vec<OpResult>),
    /// Nothing of the unit was written: operation `op` found `conflict`.
    Skipped {
        /// Index of the failing operation in the unit.
        op: usize,
        /// What it found.
        conflict: Conflict,
    },
}

/// The outcome of applying one operation inside the transaction.
enum Applied {
    Done(OpResult),
    Conflict(Conflict),
}

/// Applies a unit inside `ctx`: all of it, or (on a conflict or a record
/// error) none of it.
///
/// # Errors
/// Record errors (a wallet's record failing to authenticate) are returned
/// after the unit was taken back; storage errors abort the transaction.
pub(crate) fn apply_unit(ctx: &mut WriteCtx<'_>, ops: &[WriteOp]) -> Result<WriteOutcome, Error> {
    let savepoint = ctx.savepoint();
    let mut results = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        match apply_op(ctx, op) {
            Ok(Applied::Done(r)) => results.push(r),
            Ok(Applied::Conflict(conflict)) => {
                ctx.rollback_to(savepoint)?;
                return Ok(WriteOutcome::Skipped { op: i, conflict });
            }
            Err(e) => {
                ctx.rollback_to(savepoint)?;
                return Err(e);
            }
        }
    }
    ctx.release();
    Ok(WriteOutcome::Committed(results))
}

/// The wallet an operation writes to, if any.
pub(crate) fn op_wallet(op: &WriteOp) -> Option<&WalletId> {
    match op {
        WriteOp::PutWallet { wallet, .. }
        | WriteOp::InsertKeyPackage { wallet, .. }
        | WriteOp::DeleteKeyPackage { wallet, .. }
        | WriteOp::PutDkgResult { wallet, .. }
        | WriteOp::DeleteDkgResult { wallet, .. }
        | WriteOp::InsertMarker { wallet, .. }
        | WriteOp::CasPolicy { wallet, .. }
        | WriteOp::BumpWalletEpoch { wallet } => Some(wallet),
        WriteOp::AppendAudit { .. }
        | WriteOp::PruneAudit { .. }
        | WriteOp::PutMeta { .. }
        | WriteOp::CasMeta { .. }
        | WriteOp::ExpectMeta { .. }
        | WriteOp::PurgeMarkers { .. } => None,
    }
}

fn apply_op(ctx: &mut WriteCtx<'_>, op: &WriteOp) -> Result<Applied, Error> {
    let written = Ok(Applied::Done(OpResult::Written));
    match op {
        WriteOp::PutWallet { wallet, value } => {
            let key = schema::wallet_key(wallet);
            // Opening the old value first means a wallet whose record fails
            // to authenticate is never silently overwritten (I4).
            ctx.records().get(RecordTable::Wallets, &key)?;
            ensure_epoch(ctx, wallet)?;
            ctx.put(RecordTable::Wallets, &key, value)?;
            written
        }
        WriteOp::InsertKeyPackage {
            wallet,
            epoch,
            value,
        } => {
            let key = schema::key_package_key(wallet, *epoch);
            if let Some(existing) = ctx.records().get(RecordTable::KeyPackages, &key)? {
                return Ok(Applied::Conflict(Conflict::KeyPackagePresent(existing)));
            }
            ctx.put(RecordTable::KeyPackages, &key, value)?;
            Ok(Applied::Done(OpResult::Inserted))
        }
        WriteOp::DeleteKeyPackage { wallet, epoch } => delete_checked(
            ctx,
            RecordTable::KeyPackages,
            &schema::key_package_key(wallet, *epoch),
        ),
        WriteOp::PutDkgResult {
            wallet,
            session,
            value,
        } => put_checked(
            ctx,
            RecordTable::DkgResults,
            &schema::dkg_key(wallet, session),
            value,
        ),
        WriteOp::DeleteDkgResult { wallet, session } => delete_checked(
            ctx,
            RecordTable::DkgResults,
            &schema::dkg_key(wallet, session),
        ),
        WriteOp::InsertMarker {
            wallet,
            commitment,
            marker,
        } => {
            let key = schema::marker_key(wallet, commitment);
            // I4: a marker row deleted behind the store's back must not
            // read as absent here, or this commitment would answer a
            // second package.
            ctx.check_marker_set(wallet)?;
            if let Some(existing) = ctx.records().get(RecordTable::Markers, &key)? {
                let existing = Marker::decode(&existing).ok_or(Error::record_tampered(
                    RecordTable::Markers,
                    Some(wallet.clone()),
                ))?;
                return Ok(Applied::Conflict(Conflict::MarkerPresent(existing)));
            }
            ctx.put(RecordTable::Markers, &key, &marker.encode())?;
            ctx.set_expiry(
                &schema::expiry_key(marker.expires_at, &key),
                ExpiryChange::Add,
            )?;
            ctx.marker_changed(&key, MarkerChange::Inserted)?;
            Ok(Applied::Done(OpResult::Inserted))
        }
        WriteOp::CasPolicy {
            wallet,
            key,
            expected,
            new,
        } => {
            // The policy record is bound to the wallet's epoch: the epoch
            // record exists before the first counter is sealed, so a later
            // PutWallet does not change the epoch it must open at.
            ensure_epoch(ctx, wallet)?;
            let key = schema::policy_key(wallet, key);
            let current = ctx.records().get(RecordTable::Policy, &key)?;
            if current.as_deref() != expected.as_deref() {
                return Ok(Applied::Conflict(Conflict::PolicyMismatch(
                    current.map(|c| c.to_vec()),
                )));
            }
            ctx.put(RecordTable::Policy, &key, new)?;
            Ok(Applied::Done(OpResult::Swapped))
        }
        WriteOp::AppendAudit { at, entry } => Ok(Applied::Done(OpResult::Appended(audit::append(
            ctx, *at, entry,
        )?))),
        WriteOp::PruneAudit { before, through } => {
            Ok(match audit::prune(ctx, *before, *through)? {
                Some(removed) => Applied::Done(OpResult::AuditPruned(removed)),
                None => Applied::Conflict(Conflict::AuditPruneMoved),
            })
        }
        WriteOp::PutMeta { name, value } => {
            put_checked(ctx, RecordTable::Meta, name.as_bytes(), value)
        }
        WriteOp::CasMeta {
            name,
            expected,
            new,
        } => {
            if let Some(conflict) = meta_conflict(ctx, name, expected.as_deref())? {
                return Ok(Applied::Conflict(conflict));
            }
            ctx.put(RecordTable::Meta, name.as_bytes(), new)?;
            Ok(Applied::Done(OpResult::Swapped))
        }
        WriteOp::ExpectMeta { name, expected } => {
            Ok(match meta_conflict(ctx, name, expected.as_deref())? {
                Some(conflict) => Applied::Conflict(conflict),
                None => Applied::Done(OpResult::Matched),
            })
        }
        WriteOp::BumpWalletEpoch { wallet } => bump_wallet_epoch(ctx, wallet),
        WriteOp::PurgeMarkers { now } => purge_markers(ctx, *now),
    }
}

/// Moves `wallet` to a new global epoch, re-sealing its state and policy.
/// Creates `wallet`'s epoch record at the global epoch if it has none.
fn ensure_epoch(ctx: &mut WriteCtx<'_>, wallet: &WalletId) -> Result<(), Error> {
    if ctx.records().wallet_epoch(wallet)?.is_none() {
        let global = ctx.records().global_epoch()?;
        ctx.put(
            RecordTable::Epochs,
            &schema::wallet_key(wallet),
            &global.0.to_be_bytes(),
        )?;
    }
    Ok(())
}

/// Overwrites `key` after opening its old value: a record that fails to
/// authenticate is never silently replaced (I4).
fn put_checked(
    ctx: &mut WriteCtx<'_>,
    table: RecordTable,
    key: &[u8],
    value: &[u8],
) -> Result<Applied, Error> {
    ctx.records().get(table, key)?;
    ctx.put(table, key, value)?;
    Ok(Applied::Done(OpResult::Written))
}

/// The conflict of a meta record `name` that is not `expected` (`None`:
/// absent), if any. Opening the current value authenticates it, so a
/// damaged record is an error, never a mismatch a caller would overwrite.
fn meta_conflict(
    ctx: &mut WriteCtx<'_>,
    name: &MetaName,
    expected: Option<&[u8]>,
) -> Result<Option<Conflict>, Error> {
    let current = ctx.records().get(RecordTable::Meta, name.as_bytes())?;
    Ok((current.as_deref() != expected)
        .then(|| Conflict::MetaMismatch(current.map(|c| c.to_vec()))))
}

/// Deletes `key` after opening its old value: a record that fails to
/// authenticate is never silently removed (I4).
fn delete_checked(
    ctx: &mut WriteCtx<'_>,
    table: RecordTable,
    key: &[u8],
) -> Result<Applied, Error> {
    ctx.records().get(table, key)?;
    Ok(Applied::Done(OpResult::Deleted(ctx.delete(table, key)?)))
}

fn bump_wallet_epoch(ctx: &mut WriteCtx<'_>, wallet: &WalletId) -> Result<Applied, Error> {
    let key = schema::wallet_key(wallet);
    let prefix = schema::wallet_prefix(wallet);
    // Open everything first under the old epoch: a record that fails to
    // authenticate stops the bump before anything changed.
    let state = ctx.records().get(RecordTable::Wallets, &key)?;
    let policy = ctx.records().get_prefix(RecordTable::Policy, &prefix)?;
    let new = ctx.bump_global()?;
    ctx.put(RecordTable::Epochs, &key, &new.0.to_be_bytes())?;
    if let Some(state) = state {
        ctx.put_at(RecordTable::Wallets, &key, new, &state)?;
    }
    for (k, v) in policy {
        ctx.put_at(RecordTable::Policy, &k, new, &v)?;
    }
    Ok(Applied::Done(OpResult::EpochBumped(new)))
}

fn purge_markers(ctx: &mut WriteCtx<'_>, now: Timestamp) -> Result<Applied, Error> {
    let end = schema::expiry_index_end(now);
    let expired: Vec<Vec<u8>> = {
        let t = ctx.txn.open_table(MARKER_EXPIRY)?;
        let mut out = Vec::new();
        for item in redb::ReadableTable::range::<&[u8]>(&t, ..end.as_slice())? {
            out.push(item?.0.value().to_vec());
        }
        out
    };
    let mut purged = 0u64;
    for expiry in expired {
        match purge_marker(ctx, now, &expiry) {
            Ok(removed) => {
                purged = purged.saturating_add(u64::from(removed));
                ctx.set_expiry(&expiry, ExpiryChange::Remove)?;
            }
            // A marker that fails to authenticate, or whose own expiry is
            // not the one indexed, stays with its index entry and its
            // wallet is marked corrupt (never reset, I4); the other
            // wallets' markers are purged.
            Err(e) if e.is_record_corruption() => {
                ctx.corrupt_found
                    .extend(expiry.get(8..).and_then(schema::wallet_of));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Applied::Done(OpResult::Purged(purged)))
}

/// Deletes the marker an expiry index entry names, if it is still there;
/// returns whether it was.
///
/// The index is plain, so it only says where to look: the marker is
/// deleted only when its sealed expiry is the indexed one and not after
/// `now`. Otherwise the index entry was forged or moved, and deleting the
/// marker would let its commitment answer a second package.
///
/// # Errors
/// [`Error::RecordTampered`] (table `Markers`) for such an entry; record
/// errors for a marker or marker-set digest that fails to authenticate.
fn purge_marker(ctx: &mut WriteCtx<'_>, now: Timestamp, expiry: &[u8]) -> Result<bool, Error> {
    let Some((indexed, marker_key)) = expiry.split_first_chunk::<8>() else {
        return Ok(false);
    };
    let Some(sealed) = ctx.records().get(RecordTable::Markers, marker_key)? else {
        return Ok(false);
    };
    let tampered = || Error::record_tampered(RecordTable::Markers, schema::wallet_of(marker_key));
    let expires_at = Marker::decode(&sealed).ok_or_else(tampered)?.expires_at;
    if expires_at.whole_secs() != u64::from_be_bytes(*indexed) || expires_at > now {
        return Err(tampered());
    }
    ctx.marker_changed(marker_key, MarkerChange::Removed)?;
    ctx.delete(RecordTable::Markers, marker_key)?;
    Ok(true)
}
