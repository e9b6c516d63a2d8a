//! What the signer writes to the store's audit log, the checkpoints its
//! identity key signs, and the offline check of an export (docs/audit.md).
//!
//! The store chains entries (`thresig_store::entry_hash`); this module
//! decides what an entry says. A body is the canonical JSON of one
//! [`AuditEvent`]: an object with a `kind` and the event's fields, keys
//! sorted, no whitespace, integers and strings only, so an auditor's tool
//! re-encodes a parsed export entry to the very bytes that were hashed.
//! Entries hold public data and hashes only: never a share, a nonce or key
//! material.
//!
//! A [`Checkpoint`] is an entry whose identity-key signature covers the
//! hash of an earlier entry (the head when it was made). Every export ends
//! with a fresh one, and a prune writes one of the pruned head, so
//! [`verify_export`] needs only the audited member's identity key.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use thresig_store::{
    AuditEntry, AuditHash, AuditSeq, KeyChange, KeyChangeAudit, Timestamp, WalletId, WriteOp,
    entry_hash,
};

use crate::config::IdentityKey;
use crate::dkg_msg::{identity_sign, signed_by};

/// A checkpoint is appended once this many entries were written since
/// the signer's last one. An export always ends with a fresh one, so this
/// only bounds how much of a log that is never exported rests on the
/// chain alone; 1,000 entries is a busy signer's minutes and costs one
/// signature and one entry.
pub const CHECKPOINT_EVERY: u64 = 1_000;

/// How many entries one page of an export holds at most.
pub const EXPORT_PAGE: usize = 1_024;

/// How many bytes of JSON lines (each with its newline) one page of an
/// export holds at most, unless its only entry is larger: an open entry
/// grows with the wallets configured, and 1,024 of them could outgrow the
/// admin socket's 64 MiB reply; 8 MiB leaves room for the reply's own
/// escaping. No entry is larger: an open lists the wallets of a
/// configuration file read only up to 1 MiB, a share release one hash per
/// input.
pub const EXPORT_PAGE_BYTES: usize = 8 << 20;

/// A prune keeps at least this much of the log (a day, in milliseconds):
/// a cut-off later than now less this is refused, so a mistyped date in
/// the future cannot empty the log down to its last entry.
pub const MIN_RETENTION_MS: u64 = 24 * 3600 * 1000;

/// How many `dkg_failed` and `dkg_abandoned` entries (the endings written
/// alone, outside any unit: failed, cancelled, expired) one coordinator's
/// sessions of one wallet may write per [`DKG_ENDINGS_WINDOW`]. Any member
/// may start a DKG or refresh and end it at once; without a budget it could
/// fill the disk with fsynced entries the prune keeps for a day.
pub const DKG_ENDINGS_LOGGED: u32 = 4;

/// The window of [`DKG_ENDINGS_LOGGED`]: the endings past the budget are
/// counted, and one `dkg_endings_unlogged` entry per window records how
/// many there were.
pub const DKG_ENDINGS_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// The domain tag of a checkpoint signature.
const CHECKPOINT_DOMAIN: &[u8] = b"thresig/audit-checkpoint/v1\0";

/// One event of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum AuditEvent {
    /// The signer opened its store and started serving.
    Open {
        /// This member's identity key.
        identity: IdentityKey,
        /// How many wallets its configuration names.
        wallets: u64,
        /// Each wallet's policy version: a policy changes only with the
        /// configuration, so consecutive opens show when each changed.
        policy_versions: BTreeMap<WalletId, u32>,
        /// The policy rollout record found (absent in entries of signers
        /// before staged rollouts): the next open's record must be it.
        #[serde(default)]
        rollout: Option<crate::rollout::RecordRef>,
    },
    /// Signature shares left this signer, their marker durable in the same
    /// store unit as this entry.
    ShareReleased {
        /// The wallet.
        wallet: WalletId,
        /// The wallet epoch the shares were made at.
        epoch: u64,
        /// The coordinator's identity key (hex).
        coordinator: String,
        /// The hash of this signer's first commitment (hex).
        commitment: String,
        /// The hash of the signing packages answered (hex).
        package: String,
        /// The transaction id for a PSBT, none for raw digests.
        txid: Option<String>,
        /// SHA-256 of every message signed, in input order (hex).
        messages: Vec<String>,
        /// The wallet's policy version.
        policy_version: u32,
        /// What the policy decided: `approved` (a transaction, charged in
        /// this unit) or `raw_digests_allowed`.
        verdict: String,
    },
    /// A DKG finished and every member's confirmation verified: the wallet
    /// became active.
    DkgActivated {
        /// The wallet.
        wallet: WalletId,
        /// The DKG session (hex).
        session: String,
        /// The wallet's output key (hex, x-only).
        output_key: String,
    },
    /// A DKG's or a refresh's part 3 stored this member's new key package
    /// with its result, before any confirmation: the share exists from
    /// here on, whether or not the wallet ever activates it.
    DkgKeyStored {
        /// The wallet.
        wallet: WalletId,
        /// The DKG session (hex).
        session: String,
        /// `dkg` (a fresh key) or `refresh` (new shares of the same key).
        dkg_kind: String,
        /// The wallet epoch of the stored key package.
        epoch: u64,
        /// The wallet's output key the result computes (hex, x-only).
        output_key: String,
    },
    /// A DKG or refresh session this member ran failed one of its checks
    /// and stopped: nothing of it is stored.
    DkgFailed {
        /// The wallet.
        wallet: WalletId,
        /// The DKG session (hex).
        session: String,
        /// `dkg` or `refresh`.
        dkg_kind: String,
        /// The seat the failure accuses, none for a relay fault.
        accused: Option<u16>,
        /// Which check failed (`echo_mismatch`, `invalid_package`, ...).
        fault: String,
    },
    /// A DKG or refresh session this member ran was given up before it
    /// stored a result.
    DkgAbandoned {
        /// The wallet.
        wallet: WalletId,
        /// The DKG session (hex).
        session: String,
        /// `dkg` or `refresh`.
        dkg_kind: String,
        /// `cancelled` (its coordinator cancelled it), `expired` (its
        /// lifetime passed before its part 3) or `vetoed` (this member
        /// signed its veto of a refresh it holds no result of).
        how: String,
    },
    /// This member's share of a wallet was repaired.
    Repaired {
        /// The wallet.
        wallet: WalletId,
        /// The wallet epoch of the repaired share.
        epoch: u64,
    },
    /// A share refresh's confirmations all verified: the wallet switched
    /// to the refreshed shares.
    RefreshSwitched {
        /// The wallet.
        wallet: WalletId,
        /// The refresh session (hex).
        session: String,
        /// The wallet epoch it switched from.
        from_epoch: u64,
        /// The wallet epoch it switched to.
        to_epoch: u64,
        /// SHA-256 of the new wallet key record (hex): the digest every
        /// member's confirmation signed.
        key_record: String,
    },
    /// A pending share refresh was discarded on the vetoes of a threshold
    /// of participants: the wallet keeps signing at its current epoch.
    RefreshDiscarded {
        /// The wallet.
        wallet: WalletId,
        /// The refresh session (hex).
        session: String,
        /// The wallet epoch kept.
        epoch: u64,
    },
    /// The operator ran a lifecycle command on a wallet (rekey, retire,
    /// approve a repair).
    Operator {
        /// The wallet.
        wallet: WalletId,
        /// The command, as the admin socket names it.
        command: String,
        /// Whether the wallet changed (false: it already was so).
        changed: bool,
    },
    /// The operator rotated or recovered the store's keys.
    Keys {
        /// `rotate_dek`, `rotate_kek` or `recover`.
        command: String,
        /// The current DEK term afterwards.
        dek_term: u64,
    },
    /// The store's key manager changed the store's keys on its own tick
    /// (no operator command): in the store unit of the change.
    KeyManager {
        /// `rotate_kek` (every DEK rewrapped under the provider's new KEK,
        /// the older wraps dropped), `promote_dek` or `retire_dek` (a DEK
        /// rotation a crash interrupted, finished).
        action: String,
        /// The DEK term promoted or retired; the current one for
        /// `rotate_kek`.
        dek_term: u64,
        /// The KEK id every DEK is now wrapped under (`rotate_kek` only).
        kek: Option<String>,
    },
    /// One coordinator's DKG or refresh sessions of a wallet ended more
    /// often than [`DKG_ENDINGS_LOGGED`] in a [`DKG_ENDINGS_WINDOW`]: the
    /// endings past the budget were counted, not logged one by one.
    DkgEndingsUnlogged {
        /// The wallet.
        wallet: WalletId,
        /// The seat of the member that coordinated the sessions.
        coordinator: Option<u16>,
        /// How many endings went without their own entry.
        count: u64,
        /// When the window began (milliseconds since the epoch).
        since_ms: u64,
    },
    /// One key change of a rotation an operator's command or the signer
    /// itself ran (not the key manager's tick), in the store unit of the
    /// change: a rotation commits no step without its entry.
    KeyStep {
        /// `rotate_dek`, `rotate_kek` (`thresig keys` or the FFI's
        /// `keys_rotate_*`), `retire` (the DEK rotation after a wallet's
        /// retire) or `retire_deleted` (the signer's own rotation after a
        /// refresh deleted the old share).
        command: String,
        /// `add_kek` (every DEK wrapped under the provider's new KEK too),
        /// `rotate_kek` (the older wraps dropped), `promote_dek` or
        /// `retire_dek`.
        action: String,
        /// The DEK term promoted or retired; the current one for the KEK
        /// steps.
        dek_term: u64,
        /// The KEK id of a KEK step.
        kek: Option<String>,
    },
    /// Entries written before `before_ms` were pruned; the checkpoint that
    /// follows signs the pruned head.
    Prune {
        /// The cut-off, in milliseconds since the Unix epoch.
        before_ms: u64,
        /// The policy rollout record at the prune (absent in entries of
        /// signers before this field): the prune may remove every step and
        /// open that named it, so this entry binds it from then on.
        #[serde(default)]
        rollout: Option<crate::rollout::RecordRef>,
    },
    /// A signed checkpoint.
    Checkpoint(Checkpoint),
    /// The signer stored the policy of wallets that had none stored (at
    /// open, from its configuration file): from then on the file changes
    /// their applied policy only through a staged rollout.
    PolicySettled {
        /// The rollout record's sequence after this step.
        seq: u64,
        /// The hex SHA-256 of the record this step committed.
        record: String,
        /// The wallets whose policy was stored.
        wallets: Vec<WalletId>,
    },
    /// The operator staged a policy version (docs/policy.md, "Staged
    /// rollout").
    PolicyStaged {
        /// The rollout record's sequence after this step.
        seq: u64,
        /// The hex SHA-256 of the record this step committed: the record
        /// a later load must find ([`crate::rollout::RecordRef`]).
        record: String,
        /// The version staged.
        version: u32,
        /// The step (`canary`).
        stage: String,
        /// The wallets on the new version now.
        wallets: Vec<WalletId>,
        /// How many wallets the rollout covers.
        rollout_wallets: u64,
        /// The hex SHA-256 of each rollout wallet's staged policy: with
        /// `version`, what a `share_released` entry's version names.
        #[serde(default)]
        policies: BTreeMap<WalletId, String>,
    },
    /// The operator promoted the rollout to its next step.
    PolicyPromoted {
        /// The rollout record's sequence after this step.
        seq: u64,
        /// The hex SHA-256 of the record this step committed: the record
        /// a later load must find ([`crate::rollout::RecordRef`]).
        record: String,
        /// The version.
        version: u32,
        /// The step reached (`10%`, `50%`, `100%`).
        stage: String,
        /// Whether the operator forced it before the gate passed.
        #[serde(default)]
        forced: bool,
        /// The wallets on the new version now.
        wallets: Vec<WalletId>,
    },
    /// The rollout went back to each wallet's previous version: by the
    /// operator, or by itself on a failed health gate.
    PolicyRolledBack {
        /// The rollout record's sequence after this step.
        seq: u64,
        /// The hex SHA-256 of the record this step committed: the record
        /// a later load must find ([`crate::rollout::RecordRef`]).
        record: String,
        /// The version rolled back.
        version: u32,
        /// Who or which gate rolled it back.
        reason: String,
        /// The wallets back on their previous version.
        wallets: Vec<WalletId>,
    },
}

/// A statement signed by a member's identity key: entry `seq` of its audit
/// log has hash `head`, stated at `at_ms` (the checkpoint entry's own time,
/// signed so that an old checkpoint cannot be dated afresh).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The signing member's identity key.
    pub identity: IdentityKey,
    /// The entry covered.
    pub seq: u64,
    /// Its hash (hex).
    pub head: String,
    /// When the checkpoint was made (ms since the Unix epoch): the time of
    /// the entry that holds it.
    pub at_ms: u64,
    /// The Ed25519 signature (hex) over the domain tag, `seq`, `head` and
    /// `at_ms`.
    pub signature: String,
}

fn checkpoint_message(seq: u64, head: &AuditHash, at_ms: u64) -> Vec<u8> {
    [
        CHECKPOINT_DOMAIN,
        &seq.to_be_bytes(),
        head,
        &at_ms.to_be_bytes(),
    ]
    .concat()
}

impl Checkpoint {
    /// Signs (`seq`, `head`) at `at` with `key`; `at` must be the time of
    /// the entry that will hold the checkpoint.
    pub fn sign(key: &SigningKey, seq: AuditSeq, head: &AuditHash, at: Timestamp) -> Self {
        let message = checkpoint_message(seq.0, head, at.0);
        Self {
            identity: key.verifying_key().into(),
            seq: seq.0,
            head: hex::encode(head),
            at_ms: at.0,
            signature: hex::encode(identity_sign(key, &message).0),
        }
    }

    /// Whether the signature verifies under its identity key.
    fn verifies(&self) -> bool {
        let (Ok(head), Ok(sig)) = (hex_32(&self.head), hex::decode(&self.signature)) else {
            return false;
        };
        signed_by(
            &self.identity,
            &checkpoint_message(self.seq, &head, self.at_ms),
            &sig,
        )
    }
}

fn hex_32(s: &str) -> Result<[u8; 32], ()> {
    hex::decode(s).map_err(drop)?.try_into().map_err(drop)
}

impl AuditEvent {
    /// The canonical encoding the store hashes: JSON with sorted keys and
    /// no whitespace (see the module docs).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain types cannot fail (string keys, no
        // floats); an empty body would still be chained and verified.
        serde_json::to_value(self)
            .and_then(|v| serde_json::to_vec(&canonical(v)))
            .unwrap_or_default()
    }
}

/// `v` with every object's keys sorted, whatever serde_json's map keeps.
fn canonical(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut pairs: Vec<(String, Value)> = map.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// The store operation appending `event` at `at`: put it in the unit of
/// the change it records, so the two commit together or not at all.
#[must_use]
pub fn append_op(at: Timestamp, event: &AuditEvent) -> WriteOp {
    WriteOp::AppendAudit {
        at,
        entry: event.encode(),
    }
}

/// The entries of the store's key manager: the `key_manager` event of
/// each change it makes on its own tick, appended by the store in the
/// change's unit.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct KeyManagerAudit;

impl KeyChangeAudit for KeyManagerAudit {
    fn body(&self, change: &KeyChange) -> Vec<u8> {
        let (action, dek_term, kek) = change_fields(change);
        AuditEvent::KeyManager {
            action: action.to_owned(),
            dek_term,
            kek,
        }
        .encode()
    }
}

/// The action, DEK term and KEK id an entry names for `change`.
fn change_fields(change: &KeyChange) -> (&'static str, u64, Option<String>) {
    match change {
        KeyChange::KekAdded { kek, dek_term } => {
            ("add_kek", dek_term.0, Some(kek.as_str().to_owned()))
        }
        KeyChange::KekRotated { kek, dek_term } => {
            ("rotate_kek", dek_term.0, Some(kek.as_str().to_owned()))
        }
        KeyChange::DekPromoted { term } => ("promote_dek", term.0, None),
        KeyChange::DekRetired { term } => ("retire_dek", term.0, None),
    }
}

/// The entries of a rotation run by an operator's command or by the
/// signer itself: the `key_step` event of each key change, naming the
/// `command` that ran it, appended by the store in the change's unit.
#[derive(Clone, Copy, Debug)]
pub struct KeyStepAudit {
    command: &'static str,
}

impl KeyStepAudit {
    /// The entries of `command`'s rotation (`rotate_dek`, `rotate_kek`,
    /// `retire`, `retire_deleted`: see [`AuditEvent::KeyStep`]).
    #[must_use]
    pub fn new(command: &'static str) -> Self {
        Self { command }
    }
}

impl KeyChangeAudit for KeyStepAudit {
    fn body(&self, change: &KeyChange) -> Vec<u8> {
        let (action, dek_term, kek) = change_fields(change);
        AuditEvent::KeyStep {
            command: self.command.to_owned(),
            action: action.to_owned(),
            dek_term,
            kek,
        }
        .encode()
    }
}

/// SHA-256 of a signed message, as a share-release entry lists it.
pub(crate) fn message_digest(message: &[u8]) -> String {
    hex::encode(Sha256::digest(message))
}

/// Why an audit command of the signer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The store refused or failed (its code says which).
    #[error(transparent)]
    Store(#[from] thresig_store::Error),
    /// New entries kept landing between reading the head and appending
    /// the checkpoint that signs it (a burst of share releases).
    #[error("new audit entries kept landing before the checkpoint; run the command again")]
    Busy,
    /// An entry could not be encoded as its export line: nothing of its
    /// page is printed, never an empty line in its place.
    #[error(
        "audit entry {seq} could not be encoded as an export line (a bug: its event is not plain JSON); nothing of its page was printed; run `thresig audit verify` and report the entry"
    )]
    Unencodable {
        /// The entry's sequence.
        seq: AuditSeq,
    },
    /// A prune's cut-off is within the last day the log always keeps.
    #[error(
        "the prune's cut-off ({} ms since the epoch) is later than {} (now less a day): the last day of the log is always kept; give an earlier date",
        before.0,
        latest.0
    )]
    PruneTooRecent {
        /// The cut-off asked for.
        before: Timestamp,
        /// The latest cut-off allowed now.
        latest: Timestamp,
    },
}

impl AuditError {
    /// The stable code (docs/errors.md).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(e) => e.code(),
            Self::Busy => "audit_busy",
            Self::Unencodable { .. } => "internal",
            Self::PruneTooRecent { .. } => "audit_prune_too_recent",
        }
    }

    /// Whether a retry can succeed.
    #[must_use]
    pub fn recovery(&self) -> thresig_store::Recovery {
        match self {
            Self::Store(e) => e.recovery(),
            Self::Busy => thresig_store::Recovery::Retryable,
            Self::Unencodable { .. } | Self::PruneTooRecent { .. } => {
                thresig_store::Recovery::Terminal
            }
        }
    }
}

/// One line of `thresig audit export --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportLine {
    /// The entry's sequence.
    pub seq: u64,
    /// The previous entry's hash (hex).
    pub prev: String,
    /// This entry's hash (hex).
    pub hash: String,
    /// When it was written (ms since the Unix epoch).
    pub at_ms: u64,
    /// The event, as JSON (its canonical encoding is what was hashed).
    pub entry: Value,
}

impl ExportLine {
    /// The export line of a stored entry.
    #[must_use]
    pub fn of(entry: &AuditEntry) -> Self {
        Self {
            seq: entry.seq.0,
            prev: hex::encode(entry.prev),
            hash: hex::encode(entry.hash),
            at_ms: entry.at.0,
            entry: serde_json::from_slice(&entry.body).unwrap_or(Value::Null),
        }
    }
}

/// One page of an export, as the signer measured it against
/// [`EXPORT_PAGE`] and [`EXPORT_PAGE_BYTES`]: its lines already encoded,
/// so what is printed is what was measured, encoded once.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportPage {
    /// Where the page starts: the sequence its first line was asked from.
    pub from: AuditSeq,
    /// The page's [`ExportLine`]s as JSON, each followed by a newline.
    pub text: String,
    /// How many lines `text` holds.
    pub lines: usize,
    /// Where the next page starts; none after the last.
    pub next: Option<AuditSeq>,
}

impl ExportPage {
    /// The page's lines, decoded again (for a caller that holds a whole
    /// export in memory).
    ///
    /// # Errors
    /// [`AuditError::Unencodable`] naming the first line that does not
    /// decode (the signer encoded every one, so none fails).
    pub fn decode(&self) -> Result<Vec<ExportLine>, AuditError> {
        // The entry after the last decoded one; the page's start for its
        // first line.
        let mut seq = self.from;
        self.text
            .lines()
            .map(|line| {
                let decoded: ExportLine =
                    serde_json::from_str(line).map_err(|_| AuditError::Unencodable { seq })?;
                seq = AuditSeq(decoded.seq.saturating_add(1));
                Ok(decoded)
            })
            .collect()
    }
}

/// What is wrong with an export, at the first line that does not check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportBreak {
    /// The line's sequence does not follow the one before.
    #[error("its sequence does not follow the line before")]
    OutOfSequence,
    /// Its previous-hash is not the hash of the line before.
    #[error("its previous-hash is not the hash of the line before")]
    PrevMismatch,
    /// Its hash is not the hash of its contents (the entry was changed).
    #[error("its hash does not match its contents (the entry was changed)")]
    HashMismatch,
    /// A checkpoint whose signature does not verify.
    #[error("a checkpoint whose signature does not verify")]
    BadSignature,
    /// A checkpoint signed by another key than the audited member's.
    #[error("a checkpoint signed by another key than the audited member's")]
    WrongSigner,
    /// A checkpoint naming a hash other than the exported entry's.
    #[error("a checkpoint that names another hash for the entry it covers")]
    CheckpointMismatch,
    /// A checkpoint whose signed time is not the time of its line (an old
    /// checkpoint dated afresh).
    #[error("a checkpoint whose signed time is not its line's time")]
    TimeMismatch,
    /// The export does not end with a checkpoint covering its last entry.
    #[error("the export does not end with a checkpoint covering the entry before it")]
    Unsigned,
    /// A line that is not an export entry.
    #[error("not an export line")]
    Malformed,
}

/// An export that failed [`verify_export`]: where and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("export entry {seq}: {problem}")]
pub struct ExportError {
    /// The sequence of the first line that does not check (0: before any).
    pub seq: u64,
    /// What is wrong there.
    pub problem: ExportBreak,
}

/// What a verified export covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportReport {
    /// The member whose key signed every checkpoint.
    pub member: IdentityKey,
    /// The first sequence exported.
    pub first: u64,
    /// The last sequence exported (the closing checkpoint).
    pub last: u64,
    /// The checkpoints that verified.
    pub checkpoints: u64,
    /// When the member signed the closing checkpoint: the export is as
    /// fresh as this, whatever else its lines say.
    pub signed_at_ms: u64,
}

/// Checks an export of `member`'s log with only its identity key: every
/// line chains from the one before and hashes to its contents, every
/// checkpoint is signed by `member` at its line's time and names the hash
/// the export has for the entry it covers, and the last line is a
/// checkpoint covering the line before it (so every line is under the
/// member's signature, and the report's `signed_at_ms` is when).
///
/// # Errors
/// [`ExportError`] at the first line that does not check.
pub fn verify_export(
    lines: &[ExportLine],
    member: &IdentityKey,
) -> Result<ExportReport, ExportError> {
    let fail = |seq: u64, problem| ExportError { seq, problem };
    let mut hashes: Vec<(u64, AuditHash)> = Vec::with_capacity(lines.len());
    let mut checkpoints = 0u64;
    let mut last_checkpoint: Option<(u64, u64, u64)> = None;
    for line in lines {
        let seq = line.seq;
        let prev = hex_32(&line.prev).map_err(|()| fail(seq, ExportBreak::Malformed))?;
        let hash = hex_32(&line.hash).map_err(|()| fail(seq, ExportBreak::Malformed))?;
        if let Some((before, before_hash)) = hashes.last() {
            if seq != before.saturating_add(1) {
                return Err(fail(seq, ExportBreak::OutOfSequence));
            }
            if prev != *before_hash {
                return Err(fail(seq, ExportBreak::PrevMismatch));
            }
        }
        let body = serde_json::to_vec(&canonical(line.entry.clone()))
            .map_err(|_| fail(seq, ExportBreak::Malformed))?;
        if entry_hash(&prev, AuditSeq(seq), Timestamp(line.at_ms), &body) != hash {
            return Err(fail(seq, ExportBreak::HashMismatch));
        }
        if let Ok(AuditEvent::Checkpoint(c)) =
            serde_json::from_value::<AuditEvent>(line.entry.clone())
        {
            // Any other member's key would let that member sign a log it
            // wrote in this member's name.
            if c.identity != *member {
                return Err(fail(seq, ExportBreak::WrongSigner));
            }
            if !c.verifies() {
                return Err(fail(seq, ExportBreak::BadSignature));
            }
            if c.at_ms != line.at_ms {
                return Err(fail(seq, ExportBreak::TimeMismatch));
            }
            // A checkpoint of an entry before the export (a prune's, or an
            // earlier periodic one) is checked by its signature only.
            if let Some((_, covered)) = hashes.iter().find(|(s, _)| *s == c.seq)
                && hex::encode(covered) != c.head
            {
                return Err(fail(seq, ExportBreak::CheckpointMismatch));
            }
            checkpoints = checkpoints.saturating_add(1);
            last_checkpoint = Some((seq, c.seq, c.at_ms));
        }
        hashes.push((seq, hash));
    }
    let (Some((first, _)), Some((last, _))) = (hashes.first(), hashes.last()) else {
        return Err(fail(0, ExportBreak::Unsigned));
    };
    match last_checkpoint {
        Some((at, covers, signed_at_ms)) if at == *last && covers.saturating_add(1) == at => {
            Ok(ExportReport {
                member: *member,
                first: *first,
                last: *last,
                checkpoints,
                signed_at_ms,
            })
        }
        _ => Err(fail(*last, ExportBreak::Unsigned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page whose first line does not decode names the entry the page
    /// started at, not the one after the previous page's.
    #[test]
    fn a_page_names_its_first_line_that_does_not_decode() {
        let page = ExportPage {
            from: AuditSeq(7),
            text: "not json\n".to_owned(),
            lines: 1,
            next: None,
        };
        assert!(matches!(
            page.decode(),
            Err(AuditError::Unencodable { seq: AuditSeq(7) })
        ));
    }
}
