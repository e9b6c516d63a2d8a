//! The wallet's rate ledger in the store, charged in the marker's unit.
//!
//! The ledger is one policy record per wallet (key [`LEDGER_KEY`]): the
//! transactions charged against the rate limits in the last day, each with
//! the time of its charge. A release of shares for a transaction commits,
//! in the same store unit as the shares' marker, a compare-and-set of that
//! record from the bytes the policy was checked against to those bytes
//! plus the charge. If another commit changed the ledger in between, the
//! unit is skipped as a whole (no marker, no charge) and the signer reads
//! the ledger again and re-checks: two requests can never both pass a limit
//! that admits one of them, and a transaction is charged once however many
//! ROAST sessions sign it.

use bitcoin::Txid;
use bitcoin::hashes::Hash;
use thresig_store::{PolicyKey, Store, WriteOp};
use thresig_tx::{
    Approval, ChargeEntry, ChargeLog, Policy, RateCharge, Rule, UnixTime, WalletMode, WalletPsbt,
};

use crate::error::{Error, InternalFault};
use crate::ids::{Timestamp, WalletId};
use crate::target::tx_error;

/// The policy record holding a wallet's rate ledger.
const LEDGER_KEY: &[u8] = b"rate-ledger";
/// Version byte of the ledger encoding: `[version]` then 40-byte entries
/// `[txid: 32][time of charge: u64 BE seconds]`.
const LEDGER_VERSION: u8 = 1;
/// Bytes of one ledger entry.
const ENTRY_LEN: usize = 40;

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
    /// Reads the ledger of `wallet`.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails, [`Error::StoredRecordInvalid`]
    /// if the record does not decode.
    pub(crate) fn read<S: Store>(store: &S, wallet: &WalletId) -> Result<Self, Error> {
        let bytes = store
            .policy(&wallet.store_id()?, &ledger_key()?)
            .map_err(|source| Error::Store {
                wallet: wallet.clone(),
                source,
            })?
            .map(|p| p.to_vec());
        let log = match &bytes {
            None => ChargeLog::new(),
            Some(b) => decode(b).ok_or_else(|| Error::StoredRecordInvalid {
                wallet: wallet.clone(),
            })?,
        };
        Ok(Self { bytes, log })
    }

    /// Checks `psbt` against `policy` with this ledger.
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
        psbt: &WalletPsbt,
        now: Timestamp,
    ) -> Result<Approval, Error> {
        policy
            .check(psbt, mode, unix_time(now), &self.log)
            .map_err(|e| match tx_error(wallet, e) {
                Error::PolicyDenied { wallet, denial } if denial.rule == Rule::RekeySweep => {
                    Error::RekeyInProgress { wallet }
                }
                other => other,
            })
    }

    /// The compare-and-set recording `charge`: from the bytes read to the
    /// ledger with the charge applied and entries older than a day dropped.
    /// For [`RateCharge::AlreadyCharged`] it still asserts the ledger is
    /// unchanged, so the approval it rests on holds at commit.
    pub(crate) fn charge_op(
        &self,
        wallet: &WalletId,
        charge: &RateCharge,
        now: Timestamp,
    ) -> Result<WriteOp, Error> {
        let mut log = self.log.clone();
        log.apply(charge);
        log.prune(unix_time(now));
        Ok(WriteOp::CasPolicy {
            wallet: wallet.store_id()?,
            key: ledger_key()?,
            expected: self.bytes.clone(),
            new: encode(&log),
        })
    }
}

fn encode(log: &ChargeLog) -> Vec<u8> {
    let mut out = vec![LEDGER_VERSION];
    for entry in log.iter() {
        out.extend_from_slice(&entry.txid.to_byte_array());
        out.extend_from_slice(&entry.at.0.to_be_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Option<ChargeLog> {
    let ([version], entries) = bytes.split_first_chunk::<1>()?;
    if *version != LEDGER_VERSION || entries.len() % ENTRY_LEN != 0 {
        return None;
    }
    entries
        .chunks_exact(ENTRY_LEN)
        .map(|entry| {
            let (txid, at) = entry.split_first_chunk::<32>()?;
            let at: [u8; 8] = at.try_into().ok()?;
            Some(ChargeEntry::new(
                Txid::from_byte_array(*txid),
                UnixTime(u64::from_be_bytes(at)),
                None,
                None,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_round_trips_and_refuses_garbage() {
        let mut log = ChargeLog::new();
        for (byte, at) in [(1u8, 100u64), (2, 50)] {
            log.apply(&RateCharge::Charge {
                txid: Txid::from_byte_array([byte; 32]),
                at: UnixTime(at),
            });
        }
        let bytes = encode(&log);
        assert_eq!(bytes.len(), 1 + 2 * ENTRY_LEN);
        assert_eq!(decode(&bytes).unwrap(), log);
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(&[2]).is_none());
        assert_eq!(decode(&[1]).unwrap(), ChargeLog::new());
    }
}
