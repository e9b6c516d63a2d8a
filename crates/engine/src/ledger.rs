//! The wallet's rate ledger in the store, charged in the marker's unit.
//!
//! The ledger is one policy record per wallet (key [`LEDGER_KEY`]): the
//! transactions charged against the rate limits in the last day (each by
//! its charge key: the txid with every stated prevout), each with the time
//! of its charge, its fee (for the daily fee budgets) and the requesting
//! coordinator (for the per-coordinator sub-limits). Every read drops the
//! charges a day old (and those dated far after the clock), and a charge is added only below `max_per_day`, so the
//! record holds at most `max_per_day` entries (itself at most
//! `MAX_PER_DAY_CEILING`), one more per release at most. A release of shares for a transaction commits,
//! in the same store unit as the shares' marker, a compare-and-set of that
//! record from the bytes the policy was checked against to those bytes
//! plus the charge. If another commit changed the ledger in between, the
//! unit is skipped as a whole (no marker, no charge) and the signer reads
//! the ledger again and re-checks: two requests can never both pass a limit
//! that admits one of them, and a transaction is charged once however many
//! ROAST sessions sign it.

use bitcoin::Amount;
use thresig_store::{PolicyKey, Store, WriteOp};
use thresig_tx::{
    Approval, ChargeEntry, ChargeKey, ChargeLog, CoordinatorId as PolicyCoordinator, Policy,
    RateCharge, Rule, UnixTime, WalletMode, WalletPsbt,
};

use crate::error::{Error, InternalFault};
use crate::ids::CoordinatorId;
use crate::target::tx_error;
use thresig_store::Timestamp;
use thresig_store::WalletId;

/// The policy record holding a wallet's rate ledger.
const LEDGER_KEY: &[u8] = b"rate-ledger";
/// Version byte of the ledger encoding: `[version]` then entries
/// `[charge key: 32][time of charge: u64 BE seconds][fee: u64 BE sat]
/// [coordinator length: u8][coordinator: UTF-8]` (length 0: none known).
const LEDGER_VERSION: u8 = 3;
/// The second encoding: as the current one with a txid in place of the
/// charge key. Still read: its charges keep counting, under keys no new
/// charge has, so a transaction charged under it is charged once more if
/// signed again within the day (stricter, never looser).
const LEDGER_VERSION_2: u8 = 2;
/// The first encoding: 40-byte entries `[txid: 32][time: u64 BE]`, with
/// no fee and no coordinator. Still read, so a ledger written before the
/// fee budget keeps counting its charges (keyed as version 2's).
const LEDGER_VERSION_1: u8 = 1;
/// Bytes of one version-1 entry.
const V1_ENTRY_LEN: usize = 40;

/// A wallet's rate ledger as read from the store, with the exact bytes the
/// compare-and-set expects.
#[derive(Debug)]
pub(crate) struct StoredLedger {
    bytes: Option<Vec<u8>>,
    log: ChargeLog,
}

fn ledger_key() -> Result<PolicyKey, Error> {
    PolicyKey::new(LEDGER_KEY.to_vec()).map_err(|_| Error::Internal(InternalFault::Serialization))
}

/// The policy's view of the time `now`.
pub(crate) fn unix_time(now: Timestamp) -> UnixTime {
    UnixTime(now.0 / 1000)
}

impl StoredLedger {
    /// Reads the ledger of `wallet` as of `now`: charges a day old are
    /// dropped and charges dated after `now` dated `now`
    /// ([`ChargeLog::prune`]), so a ledger written while the clock ran
    /// ahead cannot fill a limit until the clock reaches its dates; the
    /// compare-and-set still expects the bytes as stored.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails, [`Error::StoredRecordInvalid`]
    /// if the record does not decode.
    pub(crate) fn read<S: Store>(
        store: &S,
        wallet: &WalletId,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<Self, Error> {
        let bytes = store
            .policy(wallet, &ledger_key()?)
            .map_err(|source| Error::Store {
                wallet: wallet.clone(),
                source,
            })?
            .map(|p| p.to_vec());
        let mut log = match &bytes {
            None => ChargeLog::new(),
            Some(b) => decode(b, policy.max_fee()).ok_or_else(|| Error::StoredRecordInvalid {
                wallet: wallet.clone(),
            })?,
        };
        log.prune(unix_time(now));
        Ok(Self { bytes, log })
    }

    /// Checks `psbt` against `policy` with this ledger, for a request from
    /// `coordinator` (its per-coordinator sub-limits apply).
    ///
    /// # Errors
    /// [`Error::PolicyDenied`] naming the rule and the value; for a
    /// rekeying wallet a spend that is not the sweep to its successor is
    /// [`Error::RekeyInProgress`].
    pub(crate) fn approve(
        &self,
        wallet: &WalletId,
        policy: &Policy,
        mode: &WalletMode,
        coordinator: &CoordinatorId,
        psbt: &WalletPsbt,
        now: Timestamp,
    ) -> Result<Approval, Error> {
        policy
            .check_for(
                psbt,
                mode,
                unix_time(now),
                &self.log,
                &policy_coordinator(coordinator),
            )
            .map_err(|e| match tx_error(wallet, e) {
                Error::PolicyDenied { wallet, denial } if denial.rule == Rule::RekeySweep => {
                    Error::RekeyInProgress { wallet }
                }
                other => other,
            })
    }

    /// The compare-and-set recording `approval`'s charge with its fee and
    /// coordinator: from the bytes read to the ledger as read (entries a
    /// day old dropped, future ones dated now) with the charge applied.
    /// None for an approval that charges nothing (already charged in the
    /// last day): a limit a new charge could tighten does not apply to it,
    /// so the ledger is neither re-encoded nor rewritten for every ROAST
    /// session of a transaction.
    pub(crate) fn charge_op(
        &self,
        wallet: &WalletId,
        approval: &Approval,
    ) -> Result<Option<WriteOp>, Error> {
        if let RateCharge::AlreadyCharged { .. } = approval.charge() {
            return Ok(None);
        }
        let mut log = self.log.clone();
        log.record(approval);
        Ok(Some(WriteOp::CasPolicy {
            wallet: wallet.clone(),
            key: ledger_key()?,
            expected: self.bytes.clone(),
            new: encode(&log),
        }))
    }
}

/// The policy's opaque name for `coordinator`: the hex of its Ed25519
/// identity key.
fn policy_coordinator(coordinator: &CoordinatorId) -> PolicyCoordinator {
    PolicyCoordinator(hex::encode(coordinator.0))
}

fn encode(log: &ChargeLog) -> Vec<u8> {
    let mut out = vec![LEDGER_VERSION];
    for entry in log.iter() {
        out.extend_from_slice(&entry.key.to_byte_array());
        out.extend_from_slice(&entry.at.0.to_be_bytes());
        // Every charge the engine records carries its fee; an unknown one
        // (from a version-1 record) was filled in at decoding.
        let fee = entry.fee.map_or(u64::MAX, Amount::to_sat);
        out.extend_from_slice(&fee.to_be_bytes());
        let name = entry.coordinator.as_ref().map_or("", |c| c.0.as_str());
        // Names are hex of a 32-byte key (64 bytes); a longer one is not
        // the engine's and is dropped, which counts the charge against
        // every coordinator: stricter, never looser.
        let name = u8::try_from(name.len()).map_or("", |_| name);
        out.push(u8::try_from(name.len()).unwrap_or(0));
        out.extend_from_slice(name.as_bytes());
    }
    out
}

/// Decodes a stored ledger; `max_fee` is the fee assumed for a charge of a
/// version-1 record, which stored none: the largest any transaction may
/// pay, so the daily fee budget is never looser than configured.
fn decode(bytes: &[u8], max_fee: Amount) -> Option<ChargeLog> {
    let ([version], entries) = bytes.split_first_chunk::<1>()?;
    match *version {
        LEDGER_VERSION_1 => decode_v1(entries, max_fee),
        LEDGER_VERSION | LEDGER_VERSION_2 => decode_entries(entries),
        _ => None,
    }
}

fn decode_v1(entries: &[u8], max_fee: Amount) -> Option<ChargeLog> {
    if !entries.len().is_multiple_of(V1_ENTRY_LEN) {
        return None;
    }
    entries
        .chunks_exact(V1_ENTRY_LEN)
        .map(|entry| {
            let (key, rest) = entry.split_first_chunk::<32>()?;
            let (at, _) = rest.split_first_chunk::<8>()?;
            // No coordinator was stored: the charge counts against every
            // coordinator's sub-limits, which is stricter, never looser.
            Some(ChargeEntry::new(
                ChargeKey::from_byte_array(*key),
                UnixTime(u64::from_be_bytes(*at)),
                Some(max_fee),
                None,
            ))
        })
        .collect()
}

fn decode_entries(mut rest: &[u8]) -> Option<ChargeLog> {
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (key, tail) = rest.split_first_chunk::<32>()?;
        let (at, tail) = tail.split_first_chunk::<8>()?;
        let (fee, tail) = tail.split_first_chunk::<8>()?;
        let ([len], tail) = tail.split_first_chunk::<1>()?;
        let (name, tail) = tail.split_at_checked(usize::from(*len))?;
        let name = std::str::from_utf8(name).ok()?;
        let fee = u64::from_be_bytes(*fee);
        entries.push(ChargeEntry::new(
            ChargeKey::from_byte_array(*key),
            UnixTime(u64::from_be_bytes(*at)),
            (fee != u64::MAX).then_some(Amount::from_sat(fee)),
            (!name.is_empty()).then(|| PolicyCoordinator(name.to_owned())),
        ));
        rest = tail;
    }
    Some(entries.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(byte: u8, at: u64, fee: Option<u64>, by: Option<&str>) -> ChargeEntry {
        ChargeEntry::new(
            ChargeKey::from_byte_array([byte; 32]),
            UnixTime(at),
            fee.map(Amount::from_sat),
            by.map(|c| PolicyCoordinator(c.to_owned())),
        )
    }

    #[test]
    fn ledger_round_trips_with_fees_and_coordinators_and_refuses_garbage() {
        let max = Amount::from_sat(7);
        let log: ChargeLog = [
            entry(1, 100, Some(1_000), Some("ab")),
            entry(2, 50, Some(0), None),
        ]
        .into_iter()
        .collect();
        let bytes = encode(&log);
        assert_eq!(bytes.len(), 1 + (49 + 2) + 49);
        assert_eq!(decode(&bytes, max).unwrap(), log);
        assert!(decode(&bytes[..bytes.len() - 1], max).is_none());
        assert!(decode(&[4], max).is_none());
        assert_eq!(decode(&[3], max).unwrap(), ChargeLog::new());
        // A version-2 record (txids in place of charge keys) reads the same.
        let mut v2 = bytes.clone();
        v2[0] = LEDGER_VERSION_2;
        assert_eq!(decode(&v2, max).unwrap(), log);
    }

    #[test]
    fn a_version_1_ledger_decodes_with_the_largest_fee_and_no_coordinator() {
        let max = Amount::from_sat(7);
        let mut v1 = vec![LEDGER_VERSION_1];
        for (byte, at) in [(1u8, 100u64), (2, 50)] {
            v1.extend_from_slice(&[byte; 32]);
            v1.extend_from_slice(&at.to_be_bytes());
        }
        let expected: ChargeLog = [entry(1, 100, Some(7), None), entry(2, 50, Some(7), None)]
            .into_iter()
            .collect();
        assert_eq!(decode(&v1, max).unwrap(), expected);
        assert!(decode(&v1[..v1.len() - 1], max).is_none());
    }
}
