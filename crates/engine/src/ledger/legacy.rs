//! The rate ledger's earlier formats (versions 1 to 3): one record holding
//! every charge of the last day, read on every signature and rewritten
//! whole at every charge. Still read, so a store written by an earlier
//! signer keeps its charges; the first charge after the upgrade moves them
//! into the current format ([`super::ring`]). The entry encoding of
//! version 3 is also the body of the current format's charge records.

use bitcoin::Amount;
use thresig_tx::{ChargeEntry, ChargeKey, ChargeLog, CoordinatorId as PolicyCoordinator, UnixTime};

/// The third encoding: `[version]` then entries `[charge key: 32][time of
/// charge: u64 BE seconds][fee: u64 BE sat][coordinator length: u8]
/// [coordinator: UTF-8]` (length 0: none known).
const VERSION_3: u8 = 3;
/// The second encoding: as the third with a txid in place of the charge
/// key. Its charges keep counting, under keys no new charge has, so a
/// transaction charged under it is charged once more if signed again
/// within the day (stricter, never looser).
const VERSION_2: u8 = 2;
/// The first encoding: 40-byte entries `[txid: 32][time: u64 BE]`, with no
/// fee and no coordinator, so a ledger written before the fee budget keeps
/// counting its charges (keyed as version 2's).
const VERSION_1: u8 = 1;
/// Bytes of one version-1 entry.
const V1_ENTRY_LEN: usize = 40;

/// Decodes a record of versions 1 to 3; `None` for any other version or a
/// record that does not decode. `max_fee` is the fee assumed for a charge
/// of a version-1 record, which stored none: the largest any transaction
/// may pay, so the daily fee budget is never looser than configured.
pub(super) fn decode(bytes: &[u8], max_fee: Amount) -> Option<ChargeLog> {
    let ([version], entries) = bytes.split_first_chunk::<1>()?;
    match *version {
        VERSION_1 => decode_v1(entries, max_fee),
        VERSION_3 | VERSION_2 => decode_entries(entries),
        _ => None,
    }
}

/// The coordinator name as an entry stores it: hex of a 32-byte key (64
/// bytes) in the engine's charges; a name too long for its length byte,
/// or empty, is stored as none, which counts the charge against every
/// coordinator: stricter, never looser.
pub(super) fn stored_name(coordinator: Option<PolicyCoordinator>) -> Option<PolicyCoordinator> {
    coordinator.filter(|c| !c.0.is_empty() && u8::try_from(c.0.len()).is_ok())
}

/// Appends one entry in the version-3 layout.
pub(super) fn encode_entry(out: &mut Vec<u8>, entry: &ChargeEntry) {
    out.extend_from_slice(&entry.key.to_byte_array());
    out.extend_from_slice(&entry.at.0.to_be_bytes());
    // Every charge the engine records carries its fee; an unknown one
    // (from a version-1 record) was filled in at decoding.
    let fee = entry.fee.map_or(u64::MAX, Amount::to_sat);
    out.extend_from_slice(&fee.to_be_bytes());
    let name = stored_name(entry.coordinator.clone()).map_or_else(String::new, |c| c.0);
    out.push(u8::try_from(name.len()).unwrap_or(0));
    out.extend_from_slice(name.as_bytes());
}

/// Decodes one entry in the version-3 layout and returns the bytes after it.
pub(super) fn decode_entry(rest: &[u8]) -> Option<(ChargeEntry, &[u8])> {
    let (key, tail) = rest.split_first_chunk::<32>()?;
    let (at, tail) = tail.split_first_chunk::<8>()?;
    let (fee, tail) = tail.split_first_chunk::<8>()?;
    let ([len], tail) = tail.split_first_chunk::<1>()?;
    let (name, tail) = tail.split_at_checked(usize::from(*len))?;
    let name = std::str::from_utf8(name).ok()?;
    let fee = u64::from_be_bytes(*fee);
    let entry = ChargeEntry::new(
        ChargeKey::from_byte_array(*key),
        UnixTime(u64::from_be_bytes(*at)),
        (fee != u64::MAX).then_some(Amount::from_sat(fee)),
        (!name.is_empty()).then(|| PolicyCoordinator(name.to_owned())),
    );
    Some((entry, tail))
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
        let (entry, tail) = decode_entry(rest)?;
        entries.push(entry);
        rest = tail;
    }
    Some(entries.into_iter().collect())
}

/// The version-3 encoder, as the signers before the current format wrote
/// their ledgers: tests build old stores with it.
#[cfg(test)]
pub(super) fn encode_v3(log: &ChargeLog) -> Vec<u8> {
    let mut out = vec![VERSION_3];
    for entry in log.iter() {
        encode_entry(&mut out, &entry);
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A charge of key `[byte; 32]` (shared with the ring's tests).
    pub(crate) fn entry(byte: u8, at: u64, fee: Option<u64>, by: Option<&str>) -> ChargeEntry {
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
        let bytes = encode_v3(&log);
        assert_eq!(bytes.len(), 1 + (49 + 2) + 49);
        assert_eq!(decode(&bytes, max).unwrap(), log);
        assert!(decode(&bytes[..bytes.len() - 1], max).is_none());
        assert!(decode(&[5], max).is_none());
        assert_eq!(decode(&[3], max).unwrap(), ChargeLog::new());
        // A version-2 record (txids in place of charge keys) reads the same.
        let mut v2 = bytes.clone();
        v2[0] = VERSION_2;
        assert_eq!(decode(&v2, max).unwrap(), log);
    }

    #[test]
    fn a_version_1_ledger_decodes_with_the_largest_fee_and_no_coordinator() {
        let max = Amount::from_sat(7);
        let mut v1 = vec![VERSION_1];
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
