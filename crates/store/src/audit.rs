//! The audit log's hash chain: entries, the head record, and the walk that
//! names the first broken link.
//!
//! Each entry is sealed in the `audit` table under its sequence number and
//! holds `prev ‖ hash ‖ at ‖ body`, where
//! `hash = SHA-256(DOMAIN ‖ prev ‖ seq ‖ at ‖ len(body) ‖ body)` and `prev`
//! is the hash of the entry before (32 zero bytes before the first). The
//! store's metadata record `audit_head` holds the last entry's sequence and
//! hash, and the first entry still kept with the hash it chains from (its
//! anchor, moved forward by a prune). The writer reads and checks that
//! head in the transaction that appends (I1), so an entry is only ever
//! appended to an intact head; the witness carries the head too, so a log
//! put back from an older copy refuses the open (I5).
//!
//! The body is opaque here: the engine's canonical encoding of one event.
//! [`entry_hash`] is public so that an auditor's tool recomputes the chain
//! of an export with the very function the writer used.

use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::ids::{AuditSeq, Timestamp};
use crate::records::{Raw, Records, WriteCtx, decode_u64};
use crate::schema::{RecordTable, sys};
use crate::witness::AuditMark;

/// The domain tag of every entry hash.
const DOMAIN: &[u8] = b"thresig/audit/v1\0";

/// A link of the chain: the SHA-256 hash of one entry.
pub type AuditHash = [u8; 32];

/// The hash the first entry chains from.
pub const GENESIS: AuditHash = [0; 32];

/// The hash of the entry at `seq`, written at `at`, with `body`, that
/// follows the entry whose hash is `prev`.
#[must_use]
pub fn entry_hash(prev: &AuditHash, seq: AuditSeq, at: Timestamp, body: &[u8]) -> AuditHash {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(seq.0.to_be_bytes());
    h.update(at.0.to_be_bytes());
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// One entry of the audit log, as the writer chained it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Its position, gapless from 1.
    pub seq: AuditSeq,
    /// The hash of the entry before it.
    pub prev: AuditHash,
    /// Its own hash ([`entry_hash`]).
    pub hash: AuditHash,
    /// When the caller appended it (its clock).
    pub at: Timestamp,
    /// The engine's encoding of the event (public data and hashes only).
    pub body: Vec<u8>,
}

impl AuditEntry {
    fn encode(&self) -> Vec<u8> {
        [
            &self.prev[..],
            &self.hash[..],
            &self.at.0.to_be_bytes(),
            &self.body,
        ]
        .concat()
    }

    fn decode(seq: AuditSeq, bytes: &[u8]) -> Option<Self> {
        let (prev, rest) = bytes.split_first_chunk::<32>()?;
        let (hash, rest) = rest.split_first_chunk::<32>()?;
        let (at, body) = rest.split_first_chunk::<8>()?;
        Some(Self {
            seq,
            prev: *prev,
            hash: *hash,
            at: Timestamp(u64::from_be_bytes(*at)),
            body: body.to_vec(),
        })
    }
}

/// Where the log stands: its last entry and the first one still kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditHead {
    /// The last entry's sequence (0: the log is empty).
    pub seq: AuditSeq,
    /// The last entry's hash ([`GENESIS`] for an empty log).
    pub hash: AuditHash,
    /// The first entry kept (1 until a prune removes older ones).
    pub first: AuditSeq,
    /// The hash the first kept entry chains from.
    pub anchor: AuditHash,
}

impl Default for AuditHead {
    fn default() -> Self {
        Self {
            seq: AuditSeq(0),
            hash: GENESIS,
            first: AuditSeq(1),
            anchor: GENESIS,
        }
    }
}

impl AuditHead {
    fn encode(&self) -> Vec<u8> {
        [
            &self.seq.0.to_be_bytes()[..],
            &self.hash,
            &self.first.0.to_be_bytes(),
            &self.anchor,
        ]
        .concat()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (seq, rest) = bytes.split_first_chunk::<8>()?;
        let (hash, rest) = rest.split_first_chunk::<32>()?;
        let (first, anchor) = rest.split_first_chunk::<8>()?;
        Some(Self {
            seq: AuditSeq(u64::from_be_bytes(*seq)),
            hash: *hash,
            first: AuditSeq(u64::from_be_bytes(*first)),
            anchor: anchor.try_into().ok()?,
        })
    }
}

/// What is wrong at the first broken link of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditBreak {
    /// The entry fails to authenticate: a byte of it was changed, or it was
    /// moved from another position (reordered).
    #[error("the entry fails to authenticate (changed, or moved from another position)")]
    Unreadable,
    /// The entry is missing: the log has a gap, or ends before its head.
    #[error("the entry is missing (deleted, or the log was cut short)")]
    Missing,
    /// The entry does not chain from the entry before it.
    #[error("its previous-hash does not match the entry before it")]
    PrevMismatch,
    /// The entry's stored hash is not the hash of its contents.
    #[error("its hash does not match its contents")]
    HashMismatch,
    /// An entry lies beyond the head the store recorded.
    #[error("it lies beyond the recorded head of the log")]
    BeyondHead,
    /// An entry a prune removed is back in the log.
    #[error("it was pruned, yet is back in the log")]
    Pruned,
    /// The log's end is not the head the store (or its witness) recorded.
    #[error("the log ends here, not at the head the store recorded")]
    HeadMismatch,
    /// The head record itself is missing or fails to authenticate.
    #[error("the log's head record is missing or fails to authenticate")]
    HeadUnreadable,
    /// The log's head is not the one the last commit recorded beside the
    /// commit generation: the log (and its head) was put back from an
    /// older copy.
    #[error(
        "the log ends here, but the last commit recorded a later head: the log was put back from an older copy"
    )]
    RolledBack,
}

/// The head as committed in this transaction.
///
/// # Errors
/// [`Error::AuditBroken`] (at sequence 0) when the head record fails to
/// authenticate, or is missing while entries exist.
pub(crate) fn read_head<R: Raw>(r: &Records<'_, R>) -> Result<AuditHead, Error> {
    let broken = || Error::AuditBroken {
        seq: AuditSeq(0),
        problem: AuditBreak::HeadUnreadable,
    };
    match r.get(RecordTable::Sys, sys::AUDIT_HEAD) {
        Ok(Some(v)) => AuditHead::decode(&v).ok_or_else(broken),
        Ok(None) if r.raw.raw_last(RecordTable::Audit)?.is_none() => Ok(AuditHead::default()),
        Ok(None) => Err(broken()),
        Err(e) if e.is_record_corruption() => Err(broken()),
        Err(e) => Err(e),
    }
}

/// The entry at `seq`, which the chain says exists.
///
/// # Errors
/// As [`read_entry`], and [`Error::AuditBroken`] with
/// [`AuditBreak::Missing`] when it is absent.
pub(crate) fn require_entry<R: Raw>(
    r: &Records<'_, R>,
    seq: AuditSeq,
) -> Result<AuditEntry, Error> {
    read_entry(r, seq)?.ok_or(Error::AuditBroken {
        seq,
        problem: AuditBreak::Missing,
    })
}

/// The entry at `seq`: `Ok(None)` when absent.
///
/// # Errors
/// [`Error::AuditBroken`] with [`AuditBreak::Unreadable`] when it fails to
/// authenticate or decode; storage errors.
pub(crate) fn read_entry<R: Raw>(
    r: &Records<'_, R>,
    seq: AuditSeq,
) -> Result<Option<AuditEntry>, Error> {
    let unreadable = || Error::AuditBroken {
        seq,
        problem: AuditBreak::Unreadable,
    };
    match r.get(RecordTable::Audit, &seq.0.to_be_bytes()) {
        Ok(Some(v)) => AuditEntry::decode(seq, &v).map(Some).ok_or_else(unreadable),
        Ok(None) => Ok(None),
        Err(e) if e.is_record_corruption() => Err(unreadable()),
        Err(e) => Err(e),
    }
}

/// Checks, in the writer's transaction, that the head stands where the
/// log ends: its entry is there with its hash and nothing follows it. This
/// is the audit-head check of I1, made before anything is appended.
fn check_head(ctx: &WriteCtx<'_>) -> Result<AuditHead, Error> {
    let r = ctx.records();
    let head = read_head(&r)?;
    let stored_last = match ctx.txn.raw_last(RecordTable::Audit)? {
        Some(k) => decode_u64(&k),
        None => Some(0),
    };
    if stored_last != Some(head.seq.0) {
        return Err(Error::AuditBroken {
            seq: head.seq,
            problem: AuditBreak::HeadMismatch,
        });
    }
    if head.seq.0 >= head.first.0 {
        let last = require_entry(&r, head.seq)?;
        if last.hash != head.hash {
            return Err(Error::AuditBroken {
                seq: head.seq,
                problem: AuditBreak::HeadMismatch,
            });
        }
    }
    Ok(head)
}

/// Appends `body` written at `at` after the checked head; returns its
/// sequence.
pub(crate) fn append(
    ctx: &mut WriteCtx<'_>,
    at: Timestamp,
    body: &[u8],
) -> Result<AuditSeq, Error> {
    let mut head = check_head(ctx)?;
    let seq = AuditSeq(head.seq.0.saturating_add(1));
    let hash = entry_hash(&head.hash, seq, at, body);
    let entry = AuditEntry {
        seq,
        prev: head.hash,
        hash,
        at,
        body: body.to_vec(),
    };
    ctx.put(RecordTable::Audit, &seq.0.to_be_bytes(), &entry.encode())?;
    head.seq = seq;
    head.hash = hash;
    ctx.put(RecordTable::Sys, sys::AUDIT_HEAD, &head.encode())?;
    Ok(seq)
}

/// Removes the entries from the first kept one through `through`, oldest
/// first, after checking each still chains; the first kept entry's `prev`
/// becomes the anchor. Returns how many went, or `None` (nothing written)
/// unless `through` is where a walk from the first kept entry stops: at the
/// first entry written at or after `before`, or at the last entry (which
/// carries the head and is never removed). The caller signed the pruned
/// head as it read it, so a log that moved since refuses the prune.
pub(crate) fn prune(
    ctx: &mut WriteCtx<'_>,
    before: Timestamp,
    through: AuditSeq,
) -> Result<Option<u64>, Error> {
    let mut head = check_head(ctx)?;
    if through >= head.seq || through.0 < head.first.0.saturating_sub(1) {
        return Ok(None);
    }
    let next = AuditSeq(through.0.saturating_add(1));
    let stops = require_entry(&ctx.records(), next)?;
    if stops.at < before && next < head.seq {
        return Ok(None);
    }
    let mut removed = 0u64;
    let mut seq = head.first;
    while seq <= through {
        let entry = require_entry(&ctx.records(), seq)?;
        if entry.at >= before {
            return Ok(None);
        }
        link(&entry, &head.anchor)?;
        ctx.delete(RecordTable::Audit, &seq.0.to_be_bytes())?;
        head.anchor = entry.hash;
        removed = removed.saturating_add(1);
        seq = AuditSeq(seq.0.saturating_add(1));
    }
    head.first = seq;
    if removed > 0 {
        ctx.put(RecordTable::Sys, sys::AUDIT_HEAD, &head.encode())?;
    }
    Ok(Some(removed))
}

/// Checks that `entry` chains from `prev` and hashes to its stored hash.
fn link(entry: &AuditEntry, prev: &AuditHash) -> Result<(), Error> {
    let problem = if entry.prev != *prev {
        AuditBreak::PrevMismatch
    } else if entry_hash(&entry.prev, entry.seq, entry.at, &entry.body) != entry.hash {
        AuditBreak::HashMismatch
    } else {
        return Ok(());
    };
    Err(Error::AuditBroken {
        seq: entry.seq,
        problem,
    })
}

/// What [`verify`] found: the head it checked and how many entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// The head the chain was checked against.
    pub head: AuditHead,
    /// How many entries were checked.
    pub entries: u64,
}

/// The sequence of the row `key` found where `expected` should be next.
///
/// # Errors
/// [`Error::AuditBroken`] for a key that is no sequence, a pruned row, a
/// gap before it, or a row beyond the head.
fn check_row(head: &AuditHead, expected: AuditSeq, key: &[u8]) -> Result<AuditSeq, Error> {
    let broken = |seq, problem| Error::AuditBroken { seq, problem };
    let Some(at) = decode_u64(key).map(AuditSeq) else {
        return Err(broken(expected, AuditBreak::Unreadable));
    };
    if at < expected {
        return Err(broken(at, AuditBreak::Pruned));
    }
    if at > expected {
        return Err(broken(expected, AuditBreak::Missing));
    }
    if at > head.seq {
        return Err(broken(at, AuditBreak::BeyondHead));
    }
    Ok(at)
}

/// How many row keys [`verify`] reads at a time: its memory stays this
/// chunk's, however long the log.
const VERIFY_CHUNK: usize = 4_096;

/// Checks every link of the kept log in one read snapshot, walking every
/// row of the `audit` table (not just the sequences the head names: a
/// stray or out-of-place row is a broken link too) in bounded chunks.
///
/// # Errors
/// [`Error::AuditBroken`] naming the first broken link; storage errors.
pub(crate) fn verify<R: Raw>(r: &Records<'_, R>) -> Result<AuditReport, Error> {
    let head = read_head(r)?;
    let mut expected = head.first;
    let mut prev = head.anchor;
    let mut entries = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let keys = r
            .raw
            .raw_keys_after(RecordTable::Audit, after.as_deref(), VERIFY_CHUNK)?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for key in keys {
            let at = check_row(&head, expected, &key)?;
            let entry = require_entry(r, at)?;
            link(&entry, &prev)?;
            prev = entry.hash;
            entries = entries.saturating_add(1);
            expected = AuditSeq(at.0.saturating_add(1));
        }
        after = Some(last);
    }
    if expected.0 <= head.seq.0 {
        return Err(Error::AuditBroken {
            seq: expected,
            problem: AuditBreak::Missing,
        });
    }
    if prev != head.hash {
        return Err(Error::AuditBroken {
            seq: head.seq,
            problem: AuditBreak::HeadMismatch,
        });
    }
    Ok(AuditReport { head, entries })
}

/// The log's last (sequence, hash) for the witness and the generation
/// record.
///
/// # Errors
/// As [`read_head`]: a head record that does not read is never taken for
/// an empty log, which an emptied log would then pass as.
pub(crate) fn mark<R: Raw>(r: &Records<'_, R>) -> Result<AuditMark, Error> {
    read_head(r).map(|head| AuditMark {
        seq: head.seq,
        head: head.hash,
    })
}
