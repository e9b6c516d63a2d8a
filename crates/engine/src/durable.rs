//! The engine's records in the store, and the writes it submits.
//!
//! The engine reaches the disk only through [`thresig_store::Store`]. It
//! keeps three kinds of record there:
//! - a wallet record (its lifecycle state, where its key package is kept,
//!   which gives the wallet epoch, and the public [`WalletKey`] that alone
//!   decides the signing tweak);
//! - the key package (this signer's [`KeyShare`]) by (wallet, key epoch),
//!   inserted only if absent;
//! - attempt markers, keyed by this signer's first commitment of the attempt,
//!   holding the package hash and every share of the attempt, inserted only
//!   if absent inside the committing transaction.
//!
//! The wallet epoch comes from the wallet record alone, never from the
//! store's own epoch of the wallet: that one moves with this member's key
//! rotations and seals its records (anti-rollback), and differs between
//! members.

use thresig_crypto::{KeyShare, Seat, WalletKey};
use thresig_store::{Marker, Plaintext, Store, WriteOp};

use crate::api::HexBytes;
use crate::config::WalletConfig;
use crate::dkg_msg::DkgSessionId;
use crate::error::{Error, InternalFault};
use crate::ids::WalletEpoch;
use crate::wallet::{Confirming, Refreshing, ResultKind, Role, SigningKey, WalletState};
use thresig_store::WalletId;

/// Version byte of the wallet record encoding.
const RECORD_VERSION: u8 = 1;

/// A wallet's lifecycle state as stored (a wallet without a record is
/// waiting for its DKG; a record that fails to authenticate is corrupt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Active = 1,
    Rekeying = 2,
    Retired = 3,
}

impl Lifecycle {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Active),
            2 => Some(Self::Rekeying),
            3 => Some(Self::Retired),
            _ => None,
        }
    }
}

/// The engine's wallet record: `[version][lifecycle][key epoch: u64 BE]`
/// followed by the encoded `WalletKey`.
struct WalletRecord {
    lifecycle: Lifecycle,
    key_epoch: thresig_store::KeyEpoch,
    wallet_key: Vec<u8>,
}

impl WalletRecord {
    fn encode(&self) -> Vec<u8> {
        [
            &[RECORD_VERSION, self.lifecycle as u8][..],
            &self.key_epoch.0.to_be_bytes(),
            &self.wallet_key,
        ]
        .concat()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let ([version, lifecycle], rest) = bytes.split_first_chunk::<2>()?;
        let (epoch, key) = rest.split_first_chunk::<8>()?;
        if *version != RECORD_VERSION {
            return None;
        }
        Some(Self {
            lifecycle: Lifecycle::from_byte(*lifecycle)?,
            key_epoch: thresig_store::KeyEpoch(u64::from_be_bytes(*epoch)),
            wallet_key: key.to_vec(),
        })
    }
}

/// The number ([`thresig_store::KeyEpoch`]) the key package of wallet epoch `e` is kept at is
/// `e + FIRST_KEY_EPOCH`: the DKG's (wallet epoch 0) at 1, where it has
/// always been, so that stores written before the wallet epoch was defined
/// open unchanged (a refresh will keep wallet epoch 1's at 2).
const FIRST_KEY_EPOCH: thresig_store::KeyEpoch = thresig_store::KeyEpoch(1);

/// The wallet epoch whose key package is kept at number `key_epoch`
/// (none below [`FIRST_KEY_EPOCH`], where no key package is kept).
fn wallet_epoch_of(key_epoch: thresig_store::KeyEpoch) -> Option<WalletEpoch> {
    key_epoch.0.checked_sub(FIRST_KEY_EPOCH.0).map(WalletEpoch)
}

/// Version byte of the DKG result encoding.
const DKG_RESULT_VERSION: u8 = 1;

/// Version byte of a refresh result's encoding (a DKG result that also
/// names its wallet epoch and removal set).
const REFRESH_RESULT_VERSION: u8 = 2;

/// The record of a refresh session this member vetoed (or discarded on
/// vetoes): `[5][wallet epoch: u64 BE][requester: u16 BE]`, the epoch the
/// refresh started from and the wallet seat of the member that asked (0:
/// none in the roster). It keeps the session id from ever running again
/// here at that epoch (an old veto of it could otherwise discard a new
/// run's result at some members while others switch), and counts against
/// the requester's share of veto slots. A switch deletes it: a veto signs
/// its epoch and counts for no later refresh. (Version 3, a bare or
/// epoch-only record of unreleased builds, is not read as a veto.)
const VETO_VERSION: u8 = 5;

/// Version byte of a refresh result that also keeps the signatures of the
/// other members' confirmations this member counted: the fields of
/// [`REFRESH_RESULT_VERSION`], the wallet key length-prefixed (u32 BE),
/// then a u16 BE count of (seat u16 BE, signature length u16 BE,
/// signature).
const REFRESH_CONFIRMED_VERSION: u8 = 4;

/// Whether a stored DKG result value is a refresh result (of either
/// version).
fn is_refresh_result(value: &[u8]) -> bool {
    matches!(
        value.first(),
        Some(&REFRESH_RESULT_VERSION | &REFRESH_CONFIRMED_VERSION)
    )
}

/// The number the key package of wallet epoch `epoch` is kept at.
fn key_epoch_of(epoch: WalletEpoch) -> Result<thresig_store::KeyEpoch, Error> {
    epoch
        .0
        .checked_add(FIRST_KEY_EPOCH.0)
        .map(thresig_store::KeyEpoch)
        .ok_or(Error::Internal(InternalFault::Invariant))
}

fn encoding_failed<E>(_: E) -> Error {
    Error::Internal(InternalFault::Serialization)
}

/// The encoded key package, in the store's wiping [`Plaintext`]: the crypto
/// layer's zeroizing buffer moves in without a copy, so no plain `Vec` of
/// the secret share outlives this call unwiped. Every encoding of a key
/// package in the engine goes through here.
fn key_package_bytes(share: &KeyShare) -> Result<Plaintext, Error> {
    Ok(share.to_bytes().map_err(encoding_failed)?.into())
}

/// The insert-if-absent of this signer's key package.
fn key_package_op(
    id: &WalletId,
    epoch: thresig_store::KeyEpoch,
    share: &KeyShare,
) -> Result<WriteOp, Error> {
    Ok(WriteOp::InsertKeyPackage {
        wallet: id.clone(),
        epoch,
        value: key_package_bytes(share)?,
    })
}

/// The wallet record marking `key` active at `key_epoch`.
fn active_record_op(
    id: &WalletId,
    key_epoch: thresig_store::KeyEpoch,
    key: &WalletKey,
) -> Result<WriteOp, Error> {
    record_op(id, Lifecycle::Active, key_epoch, key)
}

/// The wallet record marking `key` in `lifecycle` at `key_epoch`.
fn record_op(
    id: &WalletId,
    lifecycle: Lifecycle,
    key_epoch: thresig_store::KeyEpoch,
    key: &WalletKey,
) -> Result<WriteOp, Error> {
    let record = WalletRecord {
        lifecycle,
        key_epoch,
        wallet_key: key.to_bytes().map_err(encoding_failed)?,
    };
    Ok(WriteOp::PutWallet {
        wallet: id.clone(),
        value: record.encode(),
    })
}

/// The store writes that make `wallet` active at wallet epoch
/// [`WalletEpoch::INITIAL`] with `key` and this signer's `share`: the key package
/// (insert if absent, so a stored key package is never overwritten) and the
/// wallet record, committed together as one unit.
///
/// For an imported key, or to set wallets up from a DKG run elsewhere (as
/// tests do); a DKG this signer takes part in commits through its
/// `DkgFinish` and `DkgConfirm` requests ([`crate::Signer::handle`])
/// instead.
///
/// Exported by the `test-util` feature only, until the signer imports keys
/// itself.
///
/// # Errors
/// [`Error::Internal`] if the key material cannot be encoded.
#[cfg(feature = "test-util")]
pub fn activation_ops(
    wallet: &WalletId,
    key: &WalletKey,
    share: &KeyShare,
) -> Result<Vec<WriteOp>, Error> {
    Ok(vec![
        key_package_op(wallet, FIRST_KEY_EPOCH, share)?,
        active_record_op(wallet, FIRST_KEY_EPOCH, key)?,
    ])
}

/// The unit a repaired member commits once every check passed: its rebuilt
/// key package at the wallet epoch the helpers sign with (insert-if-absent)
/// and the wallet record marking `key` active at that epoch.
///
/// # Errors
/// [`Error::Internal`] if the key material cannot be encoded or the epoch
/// has no key epoch.
pub(crate) fn repaired_ops(
    wallet: &WalletId,
    epoch: WalletEpoch,
    key: &WalletKey,
    share: &KeyShare,
) -> Result<Vec<WriteOp>, Error> {
    let key_epoch = FIRST_KEY_EPOCH
        .0
        .checked_add(epoch.0)
        .map(thresig_store::KeyEpoch)
        .ok_or(Error::Internal(InternalFault::Invariant))?;
    Ok(vec![
        key_package_op(wallet, key_epoch, share)?,
        active_record_op(wallet, key_epoch, key)?,
    ])
}

/// Whether every write of a repair's unit ([`repaired_ops`]) is in the
/// store as written: a commit reported failed may still have been durable.
///
/// # Errors
/// [`Error::Store`] if the store cannot be read.
pub(crate) fn ops_are_stored<S: Store>(store: &S, ops: &[WriteOp]) -> Result<bool, Error> {
    for op in ops {
        let (wallet, stored, value) = match op {
            WriteOp::InsertKeyPackage {
                wallet,
                epoch,
                value,
            } => (wallet, store.key_package(wallet, *epoch), value.as_slice()),
            WriteOp::PutWallet { wallet, value } => {
                (wallet, store.wallet(wallet), value.as_slice())
            }
            _ => return Ok(false),
        };
        let stored = stored.map_err(|source| Error::Store {
            wallet: wallet.clone(),
            source,
        })?;
        if stored.as_deref() != Some(value) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The unit that puts an active wallet in `rekeying`: its stored record
/// with the lifecycle changed (key epoch and wallet key unchanged), under a
/// bumped store epoch.
///
/// # Errors
/// [`Error::Store`] if the record cannot be read;
/// [`Error::StoredRecordInvalid`] if it is missing or does not decode.
pub(crate) fn rekeying_ops<S: Store>(store: &S, wallet: &WalletId) -> Result<Vec<WriteOp>, Error> {
    let record = relabelled(store, wallet, Lifecycle::Rekeying)?;
    Ok(vec![
        WriteOp::PutWallet {
            wallet: wallet.clone(),
            value: record.encode(),
        },
        // A security epoch (DESIGN.md I5): a store rolled back to before
        // the rekey no longer opens, so it cannot bring back an `active`
        // wallet.
        WriteOp::BumpWalletEpoch {
            wallet: wallet.clone(),
        },
    ])
}

/// The unit that retires a wallet: its record marked `retired` and its key
/// package deleted, together, so no restart finds a retired wallet with a
/// share (nor a share without its wallet retired), under a bumped store
/// epoch (so a rolled-back store holding the share does not open). The
/// record keeps the public wallet key, which says which key the wallet had.
///
/// # Errors
/// As for [`rekeying_ops`].
pub(crate) fn retiring_ops<S: Store>(store: &S, wallet: &WalletId) -> Result<Vec<WriteOp>, Error> {
    let record = relabelled(store, wallet, Lifecycle::Retired)?;
    Ok(vec![
        WriteOp::DeleteKeyPackage {
            wallet: wallet.clone(),
            epoch: record.key_epoch,
        },
        WriteOp::PutWallet {
            wallet: wallet.clone(),
            value: record.encode(),
        },
        WriteOp::BumpWalletEpoch {
            wallet: wallet.clone(),
        },
    ])
}

/// The wallet's stored record with its lifecycle set to `lifecycle`.
fn relabelled<S: Store>(
    store: &S,
    wallet: &WalletId,
    lifecycle: Lifecycle,
) -> Result<WalletRecord, Error> {
    let invalid = || Error::StoredRecordInvalid {
        wallet: wallet.clone(),
    };
    let bytes = store
        .wallet(wallet)
        .map_err(|source| Error::Store {
            wallet: wallet.clone(),
            source,
        })?
        .ok_or_else(invalid)?;
    let mut record = WalletRecord::decode(&bytes).ok_or_else(invalid)?;
    record.lifecycle = lifecycle;
    Ok(record)
}

/// The stored form of a DKG result awaiting confirmation:
/// `[version 1][transcript][wallet key]`, or for a refresh
/// `[version 2][transcript][wallet epoch: u64 BE][removed: u16 BE count,
/// then each seat u16 BE][wallet key]`.
fn dkg_result_value(result: &Confirming) -> Result<Vec<u8>, Error> {
    let key = result.key().to_bytes().map_err(encoding_failed)?;
    Ok(match result.kind() {
        ResultKind::Fresh => [&[DKG_RESULT_VERSION][..], &result.transcript(), &key].concat(),
        ResultKind::Refresh { epoch, removed } => {
            let count = u16::try_from(removed.len()).map_err(encoding_failed)?;
            let key_len = u32::try_from(key.len()).map_err(encoding_failed)?;
            let received = result.received();
            let mut value = [
                &[REFRESH_CONFIRMED_VERSION][..],
                &result.transcript(),
                &epoch.0.to_be_bytes(),
                &count.to_be_bytes(),
                &crate::dkg_msg::seat_list(removed),
                &key_len.to_be_bytes(),
                &key,
                &u16::try_from(received.len())
                    .map_err(encoding_failed)?
                    .to_be_bytes(),
            ]
            .concat();
            for (seat, signature) in received {
                let len = u16::try_from(signature.0.len()).map_err(encoding_failed)?;
                value.extend_from_slice(&seat.get().to_be_bytes());
                value.extend_from_slice(&len.to_be_bytes());
                value.extend_from_slice(&signature.0);
            }
            value
        }
    })
}

/// A stored refresh result, decoded.
struct StoredRefresh<'a> {
    transcript: [u8; 32],
    epoch: WalletEpoch,
    removed: Vec<Seat>,
    key: &'a [u8],
    /// The other members' confirmation signatures it kept.
    received: Vec<(Seat, HexBytes)>,
}

impl StoredRefresh<'_> {
    /// The result awaiting confirmations it stores, with `key` and `share`
    /// (checked by the caller against the stored key) and every kept
    /// confirmation counted, this member's own (`me`) too.
    fn confirming(
        self,
        session: DkgSessionId,
        (key, share): (WalletKey, std::sync::Arc<KeyShare>),
        me: Seat,
    ) -> Confirming {
        let mut confirming =
            Confirming::new(session, key, share, self.transcript).with_kind(ResultKind::Refresh {
                epoch: self.epoch,
                removed: self.removed,
            });
        confirming.accept(me);
        for (seat, signature) in self.received {
            confirming.receive(seat, signature);
        }
        confirming
    }
}

/// Decodes a stored refresh result; `None` for any other value.
fn decode_refresh_result(value: &[u8]) -> Option<StoredRefresh<'_>> {
    let ([version], rest) = value.split_first_chunk::<1>()?;
    if !is_refresh_result(value) {
        return None;
    }
    let (transcript, rest) = rest.split_first_chunk::<32>()?;
    let (epoch, rest) = rest.split_first_chunk::<8>()?;
    let (count, mut rest) = rest.split_first_chunk::<2>()?;
    let mut removed = Vec::new();
    for _ in 0..u16::from_be_bytes(*count) {
        let (seat, tail) = rest.split_first_chunk::<2>()?;
        removed.push(Seat::try_from(u16::from_be_bytes(*seat)).ok()?);
        rest = tail;
    }
    let mut received = Vec::new();
    let key = if *version == REFRESH_RESULT_VERSION {
        rest
    } else {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let (key, tail) = tail.split_at_checked(usize::try_from(u32::from_be_bytes(*len)).ok()?)?;
        let (count, mut tail) = tail.split_first_chunk::<2>()?;
        for _ in 0..u16::from_be_bytes(*count) {
            let (seat, more) = tail.split_first_chunk::<2>()?;
            let (len, more) = more.split_first_chunk::<2>()?;
            let (signature, more) = more.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
            let seat = Seat::try_from(u16::from_be_bytes(*seat)).ok()?;
            received.push((seat, HexBytes(signature.to_vec())));
            tail = more;
        }
        if !tail.is_empty() {
            return None;
        }
        key
    };
    Some(StoredRefresh {
        transcript: *transcript,
        epoch: WalletEpoch(u64::from_be_bytes(*epoch)),
        removed,
        key,
        received,
    })
}

/// The write that stores `result` again with the confirmations it now
/// counts (replacing its record), so that they survive a restart.
///
/// # Errors
/// [`Error::Internal`] if the result does not encode (not expected).
pub(crate) fn received_op(wallet: &WalletId, result: &Confirming) -> Result<WriteOp, Error> {
    Ok(WriteOp::PutDkgResult {
        wallet: wallet.clone(),
        session: dkg_session_id(result.session())?,
        value: dkg_result_value(result)?.into(),
    })
}

/// The unit a DKG's part 3 commits: the key package (insert-if-absent, at
/// the result's wallet epoch: a refresh's beside the current one) and the
/// result awaiting confirmation.
pub(crate) fn pending_ops(wallet: &WalletId, result: &Confirming) -> Result<Vec<WriteOp>, Error> {
    let mut ops = vec![
        key_package_op(wallet, key_epoch_of(result.epoch())?, result.share())?,
        received_op(wallet, result)?,
    ];
    // A refresh's result joins an existing wallet: a new security epoch,
    // so a store restored from before it cannot undo it undetected.
    if matches!(result.kind(), crate::wallet::ResultKind::Refresh { .. }) {
        ops.push(WriteOp::BumpWalletEpoch {
            wallet: wallet.clone(),
        });
    }
    Ok(ops)
}

/// Whether the store already holds exactly this part-3 result (its key
/// package and its DKG result record): an earlier commit of it was durable
/// although its outcome was not seen.
///
/// # Errors
/// [`Error::Store`] if the store cannot be read.
pub(crate) fn result_is_stored<S: Store>(
    store: &S,
    wallet: &WalletId,
    result: &Confirming,
) -> Result<bool, Error> {
    let read = |source| Error::Store {
        wallet: wallet.clone(),
        source,
    };
    let share = key_package_bytes(result.share())?;
    let stored_share = store
        .key_package(wallet, key_epoch_of(result.epoch())?)
        .map_err(read)?;
    if stored_share.as_ref() != Some(&share) {
        return Ok(false);
    }
    let session = dkg_session_id(result.session())?;
    let value = dkg_result_value(result)?;
    Ok(store
        .dkg_results(wallet)
        .map_err(read)?
        .iter()
        .any(|(s, v)| *s == session && v[..] == value[..]))
}

/// Whether the store holds a DKG result of `session` for `wallet`.
///
/// # Errors
/// [`Error::Store`] if the store cannot be read.
pub(crate) fn result_stored_for<S: Store>(
    store: &S,
    wallet: &WalletId,
    session: DkgSessionId,
) -> Result<bool, Error> {
    DkgRecords::read(store, wallet)?.result_for(session)
}

/// Every DKG result record of `wallet` (results and vetoes), by session.
///
/// # Errors
/// [`Error::Store`] if the store cannot be read.
fn results_of<S: Store>(
    store: &S,
    wallet: &WalletId,
) -> Result<Vec<(thresig_store::DkgSessionId, Plaintext)>, Error> {
    store.dkg_results(wallet).map_err(|source| Error::Store {
        wallet: wallet.clone(),
        source,
    })
}

/// Every DKG result record of a wallet (results and vetoes), read and
/// decrypted once for all the questions one call asks of them.
pub(crate) struct DkgRecords(Vec<(thresig_store::DkgSessionId, Plaintext)>);

impl DkgRecords {
    /// The records of `wallet`.
    ///
    /// # Errors
    /// [`Error::Store`] if the store cannot be read.
    pub(crate) fn read<S: Store>(store: &S, wallet: &WalletId) -> Result<Self, Error> {
        results_of(store, wallet).map(Self)
    }

    /// Whether a record of `session` is held whose value `fits`.
    fn holds(&self, session: DkgSessionId, fits: impl Fn(&[u8]) -> bool) -> Result<bool, Error> {
        let session = dkg_session_id(session)?;
        Ok(self.0.iter().any(|(s, v)| *s == session && fits(v)))
    }

    /// Whether a DKG result (or veto) of `session` is held.
    pub(crate) fn result_for(&self, session: DkgSessionId) -> Result<bool, Error> {
        self.holds(session, |_| true)
    }

    /// Whether a refresh result of `session` is held (pending, or the
    /// one a switch keeps).
    pub(crate) fn refresh_result_for(&self, session: DkgSessionId) -> Result<bool, Error> {
        self.holds(session, is_refresh_result)
    }

    /// Whether this member abandoned the refresh `session` (its record
    /// says so; false for a result of it, or none).
    pub(crate) fn abandoned(&self, session: DkgSessionId) -> Result<bool, Error> {
        self.holds(session, |v| veto_requester(v).is_some())
    }

    /// How many vetoes are held that `requester` asked for (all of the
    /// current epoch: a switch deletes them).
    pub(crate) fn vetoes_by(&self, requester: Option<Seat>) -> usize {
        let requester = requester.map_or(0, Seat::get);
        self.0
            .iter()
            .filter(|(_, v)| veto_requester(v) == Some(requester))
            .count()
    }
}

/// The unit that makes a confirmed DKG's wallet active.
pub(crate) fn confirmation_ops(
    wallet: &WalletId,
    session: DkgSessionId,
    key: &WalletKey,
) -> Result<Vec<WriteOp>, Error> {
    Ok(vec![
        active_record_op(wallet, FIRST_KEY_EPOCH, key)?,
        WriteOp::DeleteDkgResult {
            wallet: wallet.clone(),
            session: dkg_session_id(session)?,
        },
    ])
}

/// The unit that switches a refreshed wallet to its new epoch: the record
/// names the new key package and key, the old key package is deleted and
/// the wallet moves to a new security epoch, all in one commit. The result record stays (it holds no secret), so
/// this member can sign its confirmation again for a member that missed
/// it ([`retained_refresh`]); every other stored result of the wallet (an
/// earlier refresh's) goes.
///
/// # Errors
/// [`Error::Store`] if the stored results cannot be listed.
pub(crate) fn switch_ops<S: Store>(
    store: &S,
    wallet: &WalletId,
    current: &SigningKey,
    (pending, role): (&Confirming, Role),
) -> Result<Vec<WriteOp>, Error> {
    let keep = dkg_session_id(pending.session())?;
    let lifecycle = match role {
        Role::Active => Lifecycle::Active,
        Role::Rekeying => Lifecycle::Rekeying,
    };
    let mut ops = vec![
        record_op(
            wallet,
            lifecycle,
            key_epoch_of(pending.epoch())?,
            pending.key(),
        )?,
        WriteOp::DeleteKeyPackage {
            wallet: wallet.clone(),
            epoch: key_epoch_of(current.epoch)?,
        },
        // The full set it switched on, for `--resume` at the others.
        received_op(wallet, pending)?,
    ];
    let stored = results_of(store, wallet)?;
    // An earlier refresh's result and every veto go: a veto signs the
    // epoch it was made at and counts for no later refresh.
    for (session, _) in stored {
        if session != keep {
            ops.push(WriteOp::DeleteDkgResult {
                wallet: wallet.clone(),
                session,
            });
        }
    }
    // A new security epoch in the same commit: a database restored from
    // before the switch (holding the old share) is then a rollback the
    // store's witness catches at open, whether or not the data key
    // retirement after it ever runs.
    ops.push(WriteOp::BumpWalletEpoch {
        wallet: wallet.clone(),
    });
    // The old share's data key is retired after the switch, by a prune
    // (it waits on the key provider); due in the same commit, so a
    // restart in between still retires it.
    ops.extend(crate::signer::mark_due(true));
    Ok(ops)
}

/// The unit that records this member's veto of the refresh `session` of
/// wallet epoch `from` (or its discard of it on vetoes): the veto record
/// (replacing a result record of it), the session's pending key package
/// at `pending` deleted if there is one, and a new security epoch, so a
/// store restored from before the veto is caught at open.
///
/// # Errors
/// [`Error::Internal`] if an id or epoch does not encode (not expected).
pub(crate) fn veto_ops(
    wallet: &WalletId,
    session: DkgSessionId,
    (from, requester): (WalletEpoch, Option<Seat>),
    pending: Option<WalletEpoch>,
) -> Result<Vec<WriteOp>, Error> {
    let mut ops = Vec::new();
    if let Some(epoch) = pending {
        ops.push(WriteOp::DeleteKeyPackage {
            wallet: wallet.clone(),
            epoch: key_epoch_of(epoch)?,
        });
    }
    let requester = requester.map_or(0, Seat::get);
    ops.push(WriteOp::PutDkgResult {
        wallet: wallet.clone(),
        session: dkg_session_id(session)?,
        value: [
            &[VETO_VERSION][..],
            &from.0.to_be_bytes(),
            &requester.to_be_bytes(),
        ]
        .concat()
        .into(),
    });
    ops.push(WriteOp::BumpWalletEpoch {
        wallet: wallet.clone(),
    });
    Ok(ops)
}

/// The seat number of the member that asked for the veto a stored value
/// records (0: none in the roster); `None` for any other value.
fn veto_requester(value: &[u8]) -> Option<u16> {
    let ([version], rest) = value.split_first_chunk::<1>()?;
    let (_from, requester) = rest.split_first_chunk::<8>()?;
    let requester: [u8; 2] = requester.try_into().ok()?;
    (*version == VETO_VERSION).then_some(u16::from_be_bytes(requester))
}

/// Whether this member abandoned the refresh `session` (its record says
/// so; false for a result of it, or none).
///
/// # Errors
/// [`Error::Store`] if the results cannot be read.
pub(crate) fn is_abandoned<S: Store>(
    store: &S,
    wallet: &WalletId,
    session: DkgSessionId,
) -> Result<bool, Error> {
    DkgRecords::read(store, wallet)?.abandoned(session)
}

/// The retained result of the refresh `session` that made `current` (the
/// key this member switched to), as a confirmation to sign again; `None`
/// if the store holds no such result.
///
/// # Errors
/// [`Error::Store`] if the results cannot be read.
pub(crate) fn retained_refresh<S: Store>(
    store: &S,
    (wallet, me): (&WalletId, Seat),
    current: &SigningKey,
    session: DkgSessionId,
) -> Result<Option<Confirming>, Error> {
    let wanted = dkg_session_id(session)?;
    let stored = results_of(store, wallet)?;
    let current_key = current.key().to_bytes().map_err(encoding_failed)?;
    for (id, value) in stored {
        if id != wanted {
            continue;
        }
        let Some(result) = decode_refresh_result(&value) else {
            return Ok(None);
        };
        if result.epoch != current.epoch || result.key != current_key.as_slice() {
            return Ok(None);
        }
        let parts = (current.key().clone(), current.share.clone());
        return Ok(Some(result.confirming(session, parts, me)));
    }
    Ok(None)
}

/// The unit an operator's abort of an unconfirmed DKG commits: its result
/// and its key package (of wallet epoch `epoch`) are deleted (never done
/// automatically).
pub(crate) fn abort_ops(
    wallet: &WalletId,
    session: DkgSessionId,
    epoch: WalletEpoch,
) -> Result<Vec<WriteOp>, Error> {
    Ok(vec![
        WriteOp::DeleteDkgResult {
            wallet: wallet.clone(),
            session: dkg_session_id(session)?,
        },
        WriteOp::DeleteKeyPackage {
            wallet: wallet.clone(),
            epoch: key_epoch_of(epoch)?,
        },
    ])
}

fn dkg_session_id(session: DkgSessionId) -> Result<thresig_store::DkgSessionId, Error> {
    thresig_store::DkgSessionId::new(session.0.to_vec()).map_err(encoding_failed)
}

/// A DKG result awaiting confirmation, restored after a restart (its
/// confirmations must be delivered again; this member's own counts).
fn load_confirming<S: Store>(
    store: &S,
    id: &WalletId,
    config: &WalletConfig,
    seat: Seat,
) -> Result<WalletState, thresig_store::Error> {
    let results = store.dkg_results(id)?;
    let Some((session, value)) = results.first() else {
        return Ok(WalletState::DkgPending);
    };
    let Some(share) = store.key_package(id, FIRST_KEY_EPOCH)? else {
        return Ok(WalletState::Corrupt);
    };
    let decoded = (|| {
        let session = DkgSessionId(session.as_bytes().try_into().ok()?);
        let ([version], rest) = value.split_first_chunk::<1>()?;
        let (transcript, key) = rest.split_first_chunk::<32>()?;
        let key = (*version == DKG_RESULT_VERSION).then_some(key)?;
        let checked = signing_key(config, seat, WalletEpoch::INITIAL, key, &share)?;
        Some((session, *transcript, checked))
    })();
    let Some((session, transcript, checked)) = decoded else {
        return Ok(WalletState::Corrupt);
    };
    if let Some(mismatch) = tree_mismatch(config, &checked, true) {
        return Ok(mismatch);
    }
    let (key, share) = checked.into_key_and_share();
    let mut confirming = Confirming::new(session, key, share, transcript);
    confirming.accept(seat);
    Ok(WalletState::AwaitingConfirmations(confirming))
}

/// Loads a wallet's state. Key material that fails to authenticate, does
/// not decode, is missing, or disagrees with the configuration makes the
/// wallet `corrupt` (it refuses to sign; the others keep serving).
///
/// # Errors
/// Store errors that say nothing about the records (the caller cannot tell
/// the state yet).
pub(crate) fn load_state<S: Store>(
    store: &S,
    config: &WalletConfig,
    seat: Seat,
) -> Result<WalletState, thresig_store::Error> {
    match try_load(store, config, seat) {
        Ok(state) => Ok(state),
        Err(e) if e.marks_wallet_corrupt() => Ok(WalletState::Corrupt),
        // A store that cannot read now (a full disk, a latched handle, a
        // stopped writer) leaves the wallet unloaded for a later request.
        Err(e) => Err(e),
    }
}

fn try_load<S: Store>(
    store: &S,
    config: &WalletConfig,
    seat: Seat,
) -> Result<WalletState, thresig_store::Error> {
    let id = &config.id;
    let Some(bytes) = store.wallet(id)? else {
        return load_confirming(store, id, config, seat);
    };
    let Some(record) = WalletRecord::decode(&bytes) else {
        return Ok(WalletState::Corrupt);
    };
    if record.lifecycle == Lifecycle::Retired {
        return Ok(WalletState::Retired);
    }
    let share = store.key_package(id, record.key_epoch)?;
    let (Some(share), Some(epoch)) = (share, wallet_epoch_of(record.key_epoch)) else {
        return Ok(WalletState::Corrupt);
    };
    let Some(key) = signing_key(config, seat, epoch, &record.wallet_key, &share) else {
        return Ok(WalletState::Corrupt);
    };
    if let Some(mismatch) = tree_mismatch(config, &key, false) {
        return Ok(mismatch);
    }
    let role = match record.lifecycle {
        Lifecycle::Rekeying => Role::Rekeying,
        Lifecycle::Active | Lifecycle::Retired => Role::Active,
    };
    load_refreshing(store, config, seat, (key, role))
}

/// An active wallet, with the refresh result awaiting confirmations if the
/// store holds one for the next epoch (its confirmations must be delivered
/// again; this member's own counts). A refresh result that does not decode
/// or fit makes the wallet `corrupt`; results of a DKG (a leftover of an
/// aborted run the record supersedes) are not this state's.
fn load_refreshing<S: Store>(
    store: &S,
    config: &WalletConfig,
    seat: Seat,
    (current, role): (SigningKey, Role),
) -> Result<WalletState, thresig_store::Error> {
    let id = &config.id;
    for (session, value) in store.dkg_results(id)? {
        if !is_refresh_result(&value) {
            continue;
        }
        let Some(stored) = decode_refresh_result(&value) else {
            return Ok(WalletState::Corrupt);
        };
        let (epoch, key) = (stored.epoch, stored.key);
        // The result that made the current epoch is kept after the switch
        // (see `switch_ops`); only the next epoch's is pending.
        if epoch == current.epoch {
            continue;
        }
        let fits = current.epoch.0.checked_add(1) == Some(epoch.0);
        let share = match key_epoch_of(epoch) {
            Ok(key_epoch) if fits => store.key_package(id, key_epoch)?,
            _ => None,
        };
        let pending = (|| {
            let session = DkgSessionId(session.as_bytes().try_into().ok()?);
            signing_key(config, seat, epoch, key, &share?).map(|checked| (session, checked))
        })();
        let Some((session, checked)) = pending else {
            return Ok(WalletState::Corrupt);
        };
        let pending = stored.confirming(session, checked.into_key_and_share(), seat);
        return Ok(WalletState::Refreshing(Box::new(Refreshing {
            current,
            pending,
            role,
        })));
    }
    Ok(role.holding(current))
}

/// Decodes key material and checks it against the configuration.
///
/// The wallet key's verifying shares are not checked for consistency again:
/// the record is this signer's own, sealed in its store from a `WalletKey`
/// that passed that check when it was made (see
/// [`WalletKey::from_stored_bytes`]). What ties this signer to the record
/// is checked: its own share fits the key, the threshold matches, and every
/// member of the key holds a roster seat (a refresh may have removed some).
fn signing_key(
    config: &WalletConfig,
    seat: Seat,
    epoch: WalletEpoch,
    wallet_key: &[u8],
    share: &[u8],
) -> Option<SigningKey> {
    let key = WalletKey::from_stored_bytes(wallet_key).ok()?;
    let share = KeyShare::from_bytes(share).ok()?;
    let fits = share.seat() == seat
        && share.check_wallet(&key).is_ok()
        && key.threshold() == config.threshold
        && key.members().iter().all(|m| config.member(*m).is_some());
    fits.then(|| SigningKey::new(epoch, key, share))
}

/// The state of a wallet whose key commits to another script tree than its
/// configuration names: the configuration cannot change a wallet's key, so
/// the wallet signs nothing until the operator restores its
/// `script_tree_root` (none otherwise).
fn tree_mismatch(
    config: &WalletConfig,
    key: &SigningKey,
    unconfirmed: bool,
) -> Option<WalletState> {
    let recorded = key.key().script_tree();
    (recorded != config.script_tree).then_some(WalletState::ScriptTreeMismatch {
        recorded,
        unconfirmed,
    })
}

/// Encodes an attempt's shares for its marker: a count, then each share
/// with its length (both `u16` big-endian).
pub(crate) fn encode_shares(shares: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let too_long = |_| Error::Internal(InternalFault::Serialization);
    let mut out = Vec::new();
    out.extend_from_slice(&u16::try_from(shares.len()).map_err(too_long)?.to_be_bytes());
    for share in shares {
        out.extend_from_slice(&u16::try_from(share.len()).map_err(too_long)?.to_be_bytes());
        out.extend_from_slice(share);
    }
    Ok(out)
}

/// The shares recorded in an attempt marker, in input order (`None` if the
/// marker's share field does not decode).
pub fn decode_shares(marker: &Marker) -> Option<Vec<Vec<u8>>> {
    let (count, mut rest) = marker.shares.split_first_chunk::<2>()?;
    let mut shares = Vec::with_capacity(usize::from(u16::from_be_bytes(*count)));
    for _ in 0..u16::from_be_bytes(*count) {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let (share, tail) = tail.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
        shares.push(share.to_vec());
        rest = tail;
    }
    rest.is_empty().then_some(shares)
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    use thresig_crypto::{GroupParams, ScriptTree};

    use super::*;

    #[test]
    fn a_key_package_is_encoded_only_into_a_wiping_buffer() {
        // The type is the guarantee: the encoding is a `Plaintext`
        // (zeroized on drop, redacted in `Debug`), never a plain `Vec`.
        let encode: fn(&KeyShare) -> Result<Plaintext, Error> = key_package_bytes;
        let params = GroupParams::new(2, 3).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let (_, shares) =
            thresig_crypto::import_key(&[7; 32], params, ScriptTree::KeyPathOnly, &mut rng)
                .unwrap();
        let share = &shares[0];
        let bytes = encode(share).unwrap();
        assert_eq!(
            format!("{bytes:?}"),
            format!("Plaintext({} bytes)", bytes.len())
        );
        let id = WalletId::new("w").unwrap();
        let WriteOp::InsertKeyPackage { value, epoch, .. } =
            key_package_op(&id, FIRST_KEY_EPOCH, share).unwrap()
        else {
            panic!("not a key package insert");
        };
        assert_eq!(epoch, FIRST_KEY_EPOCH);
        assert_eq!(value, bytes);
        let back = KeyShare::from_bytes(&value).unwrap();
        assert_eq!(back.seat(), share.seat());
        assert_eq!(key_package_bytes(&back).unwrap(), bytes);
    }

    #[test]
    fn the_dkg_key_package_is_kept_at_one_for_wallet_epoch_zero() {
        assert_eq!(wallet_epoch_of(FIRST_KEY_EPOCH), Some(WalletEpoch::INITIAL));
        assert_eq!(
            wallet_epoch_of(thresig_store::KeyEpoch(3)),
            Some(WalletEpoch(2))
        );
        assert_eq!(wallet_epoch_of(thresig_store::KeyEpoch(0)), None);
    }

    #[test]
    fn records_and_shares_round_trip_and_refuse_garbage() {
        let record = WalletRecord {
            lifecycle: Lifecycle::Rekeying,
            key_epoch: thresig_store::KeyEpoch(7),
            wallet_key: vec![1, 2, 3],
        };
        let back = WalletRecord::decode(&record.encode()).unwrap();
        assert_eq!(back.lifecycle, Lifecycle::Rekeying);
        assert_eq!(back.key_epoch, thresig_store::KeyEpoch(7));
        assert_eq!(back.wallet_key, vec![1, 2, 3]);
        assert!(WalletRecord::decode(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 7]).is_none());
        assert!(WalletRecord::decode(&[1, 9, 0, 0, 0, 0, 0, 0, 0, 7]).is_none());

        let shares = vec![vec![5; 32], vec![], vec![6; 3]];
        let marker = Marker {
            package_hash: thresig_store::PackageHash([0; 32]),
            shares: encode_shares(&shares).unwrap(),
            expires_at: thresig_store::Timestamp(0),
        };
        assert_eq!(decode_shares(&marker).unwrap(), shares);
        let mut bad = marker.clone();
        bad.shares.push(0);
        assert!(decode_shares(&bad).is_none());
        bad.shares.truncate(3);
        assert!(decode_shares(&bad).is_none());
    }
}
