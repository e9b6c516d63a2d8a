//! `keys verify`: open and authenticate every record, and check the DEK
//! index names only records that can be re-sealed.

use std::collections::BTreeSet;

use redb::ReadableTable as _;

use crate::error::Error;
use crate::records::Raw as _;
use crate::schema::{self, DEK_INDEX, RecordTable};
use crate::store::EncryptedStore;

/// The result of [`EncryptedStore::verify`].
#[derive(Debug)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records opened successfully.
    pub ok: u64,
    /// Records that failed, and DEK index entries no re-seal can clear,
    /// each with its error (which names the table and the wallet, if any;
    /// those wallets are now marked corrupt).
    pub failures: Vec<Error>,
}

impl EncryptedStore {
    /// Opens every sealed record in one read snapshot and reports those
    /// that fail to authenticate, then walks the DEK index as a rotation
    /// does and reports each entry no re-seal can clear: one whose record
    /// key holds a wallet id no signer could write
    /// ([`Error::DekHeldByTamperedRecord`], unless its record was already
    /// reported), or one with no record behind it
    /// ([`Error::RecordTampered`]). Nothing is modified; failing wallets
    /// are marked corrupt (their writes are refused from now on).
    ///
    /// # Errors
    /// Storage errors only; record failures are in the report.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let mut report = self.read(|r| {
            let mut ok = 0u64;
            let mut failures = Vec::new();
            let mut failed = BTreeSet::new();
            for table in RecordTable::STORED {
                for (key, sealed) in r.raw.raw_prefix(table, &[])? {
                    let opened = r
                        .epoch_for(table, &key)
                        .and_then(|epoch| r.open_bytes(table, &key, epoch, &sealed));
                    match opened {
                        Ok(_) => ok += 1,
                        Err(e @ Error::Storage { .. }) => return Err(e),
                        Err(e) => {
                            failures.push(e);
                            failed.insert((table, key));
                        }
                    }
                }
            }
            // The DEK index, which a rotation reads alone: an entry whose
            // record is gone, or whose key names no wallet a signer could
            // write, holds its DEK for ever.
            for item in r.raw.open_table(DEK_INDEX)?.iter()? {
                let (k, _) = item?;
                let Some((term, table, key)) = schema::parse_index_key(k.value()) else {
                    continue;
                };
                let wallet = schema::wallet_of(&key).filter(|_| table.wallet_scoped());
                if table.wallet_scoped() && wallet.is_none() {
                    if !failed.contains(&(table, key)) {
                        failures.push(Error::DekHeldByTamperedRecord { term, table });
                    }
                } else if r.raw.raw_get(table, &key)?.is_none() {
                    failures.push(Error::RecordTampered {
                        table,
                        wallet,
                        file: None,
                    });
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
