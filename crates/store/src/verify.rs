//! `keys verify`: open and authenticate every record.

use std::collections::BTreeSet;

use crate::error::Error;
use crate::records::Raw as _;
use crate::schema::{self, RecordTable};
use crate::store::EncryptedStore;

/// The result of [`EncryptedStore::verify`].
#[derive(Debug)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records opened successfully.
    pub ok: u64,
    /// Records that failed, each with its error (which names the table and
    /// the wallet; those wallets are now marked corrupt).
    pub failures: Vec<Error>,
}

impl EncryptedStore {
    /// Opens every sealed record in one read snapshot and reports those
    /// that fail to authenticate. Nothing is modified; failing wallets are
    /// marked corrupt (their writes are refused from now on).
    ///
    /// # Errors
    /// Storage errors only; record failures are in the report.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let mut report = self.read(|r| {
            let mut ok = 0u64;
            let mut failures = Vec::new();
            for table in RecordTable::STORED {
                for (key, sealed) in r.raw.raw_prefix(table, &[])? {
                    let opened = r
                        .epoch_for(table, &key)
                        .and_then(|epoch| r.open_bytes(table, &key, epoch, &sealed));
                    match opened {
                        Ok(_) => ok += 1,
                        Err(e @ Error::Storage { .. }) => return Err(e),
                        Err(e) => failures.push(e),
                    }
                }
            }
            // Every wallet with markers, or with a digest of them, has its
            // marker rows checked against the digest (a deleted row).
            let mut wallets = BTreeSet::new();
            for table in [RecordTable::Markers, RecordTable::MarkerSets] {
                for (key, _) in r.raw.raw_prefix(table, &[])? {
                    wallets.extend(schema::wallet_of(&key));
                }
            }
            for wallet in wallets {
                match r.check_marker_set(&wallet) {
                    Ok(()) => {}
                    Err(e @ Error::Storage { .. }) => return Err(e),
                    Err(e) => failures.push(e),
                }
            }
            Ok(VerifyReport { ok, failures })
        })?;
        report.failures = report
            .failures
            .into_iter()
            .map(|e| self.shared.named(e))
            .collect();
        for e in &report.failures {
            self.shared.note_corruption(e);
        }
        Ok(report)
    }
}
