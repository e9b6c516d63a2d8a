//! The witness file's bytes.
//!
//! Version 3, the slotted witness, is a fixed-size file: a header block and
//! two slot blocks. Each write overwrites the slot that does not hold the
//! newest valid copy, so a write torn by a crash damages only that slot and
//! the other one still holds the position before it. Versions 1 and 2 were
//! one JSON object replaced whole; they are still read, so that a store
//! written by an older build upgrades at its first open.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{AuditMark, Position};
use crate::ids::{AuditSeq, RecordEpoch};

/// The first bytes of a slotted witness.
pub(super) const MAGIC: [u8; 16] = *b"thresig-witness\0";
/// The format version after the magic (versions 1 and 2 were JSON).
const VERSION: u32 = 3;
/// The MAC's domain tag for a slot (the JSON formats used `LEGACY_DOMAIN`).
const DOMAIN: &[u8] = b"thresig/witness/v3";
const LEGACY_DOMAIN: &[u8] = b"thresig/witness/v1";
/// The header and each slot sit in a block of their own, 64 KiB long: a
/// write torn inside one slot never touches the header or the other slot,
/// nor does a device that rewrites a whole unit around a small write (a
/// file system block or page, 4 KiB; a flash page or a controller's or
/// RAID layer's write unit, often 16 to 64 KiB), as long as that unit is
/// at most 64 KiB. A 4 KiB spacing would rely on the first alone.
const BLOCK: usize = 64 * 1024;
/// The number of slots: the newest valid copy and the one being written.
const SLOTS: usize = 2;
/// The file's size, fixed at creation.
pub(super) const FILE_LEN: usize = BLOCK * (1 + SLOTS);
/// counter (8) ‖ global epoch (8) ‖ generation (8) ‖ audit mark (40).
const BODY_LEN: usize = 64;
/// The body and its HMAC-SHA256.
pub(super) const RECORD_LEN: usize = BODY_LEN + 32;

/// A witness file's id: random, made anew with every file (at every open),
/// and bound into every slot's MAC, so that a slot copied in from another
/// copy of the file (whose counters started at 1 too) does not
/// authenticate in this one.
pub(super) type FileId = [u8; 16];
/// The header's fields: magic, version (u32 BE) and file id; the rest of
/// the header block is zeros.
pub(super) const HEADER_LEN: usize = MAGIC.len() + 4 + 16;

/// The header fields of the file `id`.
pub(super) fn header(id: &FileId) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    let fields = [&MAGIC[..], &VERSION.to_be_bytes(), id].concat();
    out.copy_from_slice(&fields);
    out
}

/// The witness is damaged: it does not parse, no slot authenticates, or it
/// belongs to another database. Never read as absent.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Damaged;

/// One slot of a slotted witness and the write counter it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    /// 0 or 1.
    index: usize,
    /// Grows by one with every write; the valid slot with the higher
    /// counter holds the witness.
    counter: u64,
}

impl Slot {
    /// The first slot of a new file.
    pub(super) const FIRST: Self = Self {
        index: 0,
        counter: 1,
    };

    /// A slot whose counter is spent.
    #[cfg(test)]
    pub(super) fn last() -> Self {
        Self {
            index: 1,
            counter: u64::MAX,
        }
    }

    /// Where the next write goes: the other slot, one count higher. `None`
    /// once the counter is spent (the file is then made anew).
    pub(super) fn next(self) -> Option<Self> {
        Some(Self {
            index: (self.index + 1) % SLOTS,
            counter: self.counter.checked_add(1)?,
        })
    }

    /// The slot's offset in the file.
    pub(super) fn offset(self) -> u64 {
        (BLOCK * (1 + self.index)) as u64
    }
}

/// What a witness file holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// A JSON witness (versions 1 and 2), upgraded by the next write.
    Legacy(Position),
    /// A slotted witness: the newest valid slot and its position.
    Slotted(Slot, Position),
}

/// The key and the store id every MAC of a witness is bound to.
pub(super) struct MacKey {
    key: Zeroizing<[u8; 32]>,
    store_id: [u8; 16],
}

impl MacKey {
    pub(super) fn new(key: Zeroizing<[u8; 32]>, store_id: [u8; 16]) -> Self {
        Self { key, store_id }
    }

    fn hmac(&self, domain: &[u8]) -> Hmac<Sha256> {
        // HMAC pads a key shorter than its block with zeros (RFC 2104), so
        // the padded key is the same key, taken without a length check that
        // could fail.
        let mut block = Zeroizing::new([0u8; 64]);
        if let Some(k) = block.get_mut(..32) {
            k.copy_from_slice(self.key.as_ref());
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new(
            hmac::digest::generic_array::GenericArray::from_slice(block.as_slice()),
        );
        mac.update(domain);
        mac.update(&self.store_id);
        mac
    }

    /// The MAC of a slot's body, bound to the file's id so that a record
    /// copied in from another copy of the file does not authenticate, and
    /// to the slot's index so that a body copied (or written by a
    /// misdirected write) into the other slot does not authenticate there.
    fn slot_mac(&self, id: &FileId, index: usize, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.hmac(DOMAIN);
        mac.update(id);
        mac.update(&[index as u8]);
        mac.update(body);
        mac
    }

    /// The record of `slot` of the file `id` holding `p`.
    pub(super) fn seal(&self, id: &FileId, slot: Slot, p: Position) -> [u8; RECORD_LEN] {
        let mut body = [0u8; BODY_LEN];
        let fields = [
            &slot.counter.to_be_bytes()[..],
            &p.epoch.0.to_be_bytes(),
            &p.generation.to_be_bytes(),
            &p.audit.encode(),
        ]
        .concat();
        body.copy_from_slice(&fields);
        let tag = self.slot_mac(id, slot.index, &body).finalize().into_bytes();
        let mut record = [0u8; RECORD_LEN];
        let (b, t) = record.split_at_mut(BODY_LEN);
        b.copy_from_slice(&body);
        t.copy_from_slice(&tag);
        record
    }

    /// The counter and position of slot `index`'s record in the file
    /// `id`, if it authenticates.
    fn open(
        &self,
        id: &FileId,
        index: usize,
        record: &[u8; RECORD_LEN],
    ) -> Option<(u64, Position)> {
        let (body, tag) = record.split_first_chunk::<BODY_LEN>()?;
        self.slot_mac(id, index, body).verify_slice(tag).ok()?;
        let (counter, rest) = body.split_first_chunk::<8>()?;
        let (epoch, rest) = rest.split_first_chunk::<8>()?;
        let (generation, audit) = rest.split_first_chunk::<8>()?;
        let p = Position {
            epoch: RecordEpoch(u64::from_be_bytes(*epoch)),
            generation: u64::from_be_bytes(*generation),
            audit: AuditMark::decode(audit)?,
        };
        Some((u64::from_be_bytes(*counter), p))
    }

    /// A new slotted file with the id `id`: the header, `p` in the first
    /// slot, and the second slot zeroed (no valid MAC), which the next
    /// write fills.
    pub(super) fn new_file(&self, id: &FileId, p: Position) -> (Vec<u8>, Slot) {
        let mut file = vec![0u8; FILE_LEN];
        let slot = Slot::FIRST;
        let record = self.seal(id, slot, p);
        let at = BLOCK * (1 + slot.index);
        for (dst, src) in [(0, &header(id)[..]), (at, &record[..])] {
            if let Some(d) = file.get_mut(dst..dst + src.len()) {
                d.copy_from_slice(src);
            }
        }
        (file, slot)
    }

    /// Reads a witness file: slotted if it starts with the magic, else
    /// JSON.
    ///
    /// # Errors
    /// [`Damaged`] when it is neither, has the wrong size or version, has
    /// no slot that authenticates, or has two valid slots at one counter
    /// with different positions (which no write makes).
    pub(super) fn parse(&self, bytes: &[u8]) -> Result<Found, Damaged> {
        if !bytes.starts_with(&MAGIC) {
            return self.parse_legacy(bytes).map(Found::Legacy);
        }
        // The header block is written once, when the file is made, and no
        // slot write touches it: anything else there is damage, not a crash.
        let block = bytes.get(..BLOCK).filter(|_| bytes.len() == FILE_LEN);
        let (fields, zeros) = block.ok_or(Damaged)?.split_at(HEADER_LEN);
        let id: FileId = fields
            .get(HEADER_LEN - 16..)
            .and_then(|id| id.try_into().ok())
            .ok_or(Damaged)?;
        if fields != header(&id) || zeros.iter().any(|&b| b != 0) {
            return Err(Damaged);
        }
        let mut newest: Option<(Slot, Position)> = None;
        for index in 0..SLOTS {
            let record = bytes
                .get(BLOCK * (1 + index)..)
                .and_then(|b| b.first_chunk::<RECORD_LEN>())
                .ok_or(Damaged)?;
            // A slot that does not authenticate (a torn write, a damaged
            // block, the empty second slot of a new file) is ignored: the
            // other slot holds the position before the write.
            let Some((counter, p)) = self.open(&id, index, record) else {
                continue;
            };
            newest = match newest {
                Some((s, q)) if s.counter > counter => Some((s, q)),
                Some((s, q)) if s.counter == counter && q != p => return Err(Damaged),
                _ => Some((Slot { index, counter }, p)),
            };
        }
        newest.map(|(s, p)| Found::Slotted(s, p)).ok_or(Damaged)
    }

    /// Reads a JSON witness (versions 1 and 2).
    fn parse_legacy(&self, bytes: &[u8]) -> Result<Position, Damaged> {
        let file: LegacyFile = serde_json::from_slice(bytes).map_err(|_| Damaged)?;
        let audit = match (file.version, file.audit_seq, &file.audit_head) {
            (1, None, None) => AuditMark::default(),
            (2, Some(seq), Some(head)) => AuditMark {
                seq: AuditSeq(seq),
                head: hex::decode(head)
                    .ok()
                    .and_then(|h| h.try_into().ok())
                    .ok_or(Damaged)?,
            },
            _ => return Err(Damaged),
        };
        let p = Position {
            epoch: RecordEpoch(file.global_epoch),
            generation: file.generation,
            audit,
        };
        let tag = hex::decode(&file.mac).map_err(|_| Damaged)?;
        if file.store_id != hex::encode(self.store_id)
            || self.legacy_mac(file.version, p).verify_slice(&tag).is_err()
        {
            return Err(Damaged);
        }
        Ok(p)
    }

    /// The MAC of a JSON witness: version 1 had no audit fields.
    fn legacy_mac(&self, version: u32, p: Position) -> Hmac<Sha256> {
        let mut mac = self.hmac(LEGACY_DOMAIN);
        mac.update(&p.epoch.0.to_be_bytes());
        mac.update(&p.generation.to_be_bytes());
        if version >= 2 {
            mac.update(&p.audit.seq.0.to_be_bytes());
            mac.update(&p.audit.head);
        }
        mac
    }
}

/// The JSON witness of versions 1 and 2 (read only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyFile {
    version: u32,
    store_id: String,
    global_epoch: u64,
    generation: u64,
    #[serde(default)]
    audit_seq: Option<u64>,
    #[serde(default)]
    audit_head: Option<String>,
    mac: String,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The file id of the files these tests make.
    pub(crate) const ID: FileId = [5; 16];

    pub(crate) fn key() -> MacKey {
        MacKey::new(Zeroizing::new([7; 32]), [3; 16])
    }

    pub(crate) fn at(epoch: u64, generation: u64, seq: u64) -> Position {
        Position {
            epoch: RecordEpoch(epoch),
            generation,
            audit: AuditMark {
                seq: AuditSeq(seq),
                head: [seq as u8; 32],
            },
        }
    }

    /// A version-2 JSON witness, as builds before the slotted one wrote it.
    pub(crate) fn legacy_file(k: &MacKey, p: Position) -> Vec<u8> {
        let mac = k.legacy_mac(2, p).finalize().into_bytes();
        serde_json::json!({
            "version": 2,
            "store_id": hex::encode(k.store_id),
            "global_epoch": p.epoch.0,
            "generation": p.generation,
            "audit_seq": p.audit.seq.0,
            "audit_head": hex::encode(p.audit.head),
            "mac": hex::encode(mac),
        })
        .to_string()
        .into_bytes()
    }

    /// `len` bytes from `seed`.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};
        let mut bytes = vec![0; len];
        rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
        bytes
    }

    /// `file` with `record` (sealed for `slot`) written into its slot.
    pub(crate) fn put(file: &mut [u8], slot: Slot, record: &[u8]) {
        let at = slot.offset() as usize;
        file[at..at + record.len()].copy_from_slice(record);
    }

    /// A file whose slots hold `a` and `b` (`None`: zeroed).
    fn two(k: &MacKey, a: Option<(u64, Position)>, b: Option<(u64, Position)>) -> Vec<u8> {
        let (mut file, _) = k.new_file(&ID, at(0, 0, 0));
        put(&mut file, Slot::FIRST, &[0; RECORD_LEN]);
        for (index, slot) in [a, b].into_iter().enumerate() {
            if let Some((counter, p)) = slot {
                let s = Slot { index, counter };
                put(&mut file, s, &k.seal(&ID, s, p));
            }
        }
        file
    }

    /// The zero-padded key gives the MACs the key itself gives (the JSON
    /// witnesses of older builds were made with the latter).
    #[test]
    fn the_padded_key_is_the_key() {
        let k = key();
        let mut direct = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
        direct.update(LEGACY_DOMAIN);
        direct.update(&k.store_id);
        assert_eq!(
            k.hmac(LEGACY_DOMAIN).finalize().into_bytes(),
            direct.finalize().into_bytes()
        );
    }

    /// The header and the two slots are each at least 64 KiB from the
    /// next, so that a write unit of the device below (a RAID stripe, a
    /// flash page) holds at most one of them, and the file is that long.
    #[test]
    fn the_slots_are_at_least_64_kib_apart() {
        let offsets = [
            0,
            Slot::FIRST.offset(),
            Slot::FIRST.next().unwrap().offset(),
        ];
        for pair in offsets.windows(2) {
            assert!(pair[1] - pair[0] >= 64 * 1024, "{offsets:?}");
        }
        assert!(FILE_LEN as u64 - offsets[2] >= 64 * 1024, "{FILE_LEN}");
    }

    #[test]
    fn a_new_file_reads_back_its_first_slot() {
        let k = key();
        let (file, slot) = k.new_file(&ID, at(1, 2, 3));
        assert_eq!(file.len(), FILE_LEN);
        assert_eq!(k.parse(&file), Ok(Found::Slotted(slot, at(1, 2, 3))));
    }

    #[test]
    fn the_valid_slot_with_the_higher_counter_wins() {
        let k = key();
        let (older, newer) = ((4, at(1, 5, 0)), (5, at(1, 6, 0)));
        for (a, b, index) in [(older, newer, 1), (newer, older, 0)] {
            let file = two(&k, Some(a), Some(b));
            assert_eq!(
                k.parse(&file),
                Ok(Found::Slotted(Slot { index, counter: 5 }, newer.1))
            );
        }
    }

    /// A write torn anywhere in the newer slot leaves the older one.
    #[test]
    fn a_torn_slot_is_ignored_and_the_other_one_read() {
        let k = key();
        let file = two(&k, Some((4, at(1, 5, 0))), Some((5, at(1, 6, 0))));
        let newer = Slot {
            index: 1,
            counter: 5,
        };
        for keep in 0..RECORD_LEN {
            // The next write goes to slot 0 (counter 6) and stops after
            // `keep` bytes.
            let next = newer.next().unwrap();
            let new = k.seal(&ID, next, at(1, 7, 1));
            let mut torn = file.clone();
            put(&mut torn, next, &new[..keep]);
            assert_eq!(
                k.parse(&torn),
                Ok(Found::Slotted(newer, at(1, 6, 0))),
                "torn after {keep} bytes"
            );
        }
    }

    #[test]
    fn no_valid_slot_is_damaged_never_absent() {
        let k = key();
        assert_eq!(k.parse(&two(&k, None, None)), Err(Damaged));
        let mut file = two(&k, Some((4, at(1, 5, 0))), Some((5, at(1, 6, 0))));
        for index in 0..SLOTS {
            file[BLOCK * (1 + index) + 10] ^= 1;
        }
        assert_eq!(k.parse(&file), Err(Damaged));
        // Another store's key, or another store's id, authenticates nothing.
        let other = MacKey::new(Zeroizing::new([8; 32]), [3; 16]);
        let file = two(&k, Some((4, at(1, 5, 0))), None);
        assert_eq!(other.parse(&file), Err(Damaged));
        let other = MacKey::new(Zeroizing::new([7; 32]), [4; 16]);
        assert_eq!(other.parse(&file), Err(Damaged));
    }

    #[test]
    fn a_record_copied_into_the_other_slot_does_not_authenticate() {
        let k = key();
        let s = Slot {
            index: 0,
            counter: 9,
        };
        let mut file = two(&k, None, None);
        put(&mut file, s.next().unwrap(), &k.seal(&ID, s, at(2, 2, 2)));
        assert_eq!(k.parse(&file), Err(Damaged));
    }

    /// A record sealed for another file (an older copy made by an earlier
    /// open) does not authenticate in this one, whatever its counter.
    #[test]
    fn a_record_of_another_file_does_not_authenticate() {
        let k = key();
        let (mut file, first) = k.new_file(&ID, at(1, 9, 0));
        let old = Slot {
            index: 1,
            counter: 40,
        };
        put(&mut file, old, &k.seal(&[6; 16], old, at(1, 4, 0)));
        assert_eq!(k.parse(&file), Ok(Found::Slotted(first, at(1, 9, 0))));
    }

    /// Counters only a holder of the key could write: the rule still picks
    /// one slot (the higher counter, whatever its position), and two valid
    /// slots that claim one counter for different positions are damage.
    #[test]
    fn garbage_counters_pick_the_higher_or_are_damage() {
        let k = key();
        let file = two(&k, Some((u64::MAX, at(1, 1, 0))), Some((0, at(9, 9, 9))));
        assert_eq!(
            k.parse(&file),
            Ok(Found::Slotted(
                Slot {
                    index: 0,
                    counter: u64::MAX
                },
                at(1, 1, 0)
            ))
        );
        let file = two(&k, Some((7, at(1, 1, 0))), Some((7, at(1, 2, 0))));
        assert_eq!(k.parse(&file), Err(Damaged));
        let file = two(&k, Some((7, at(1, 1, 0))), Some((7, at(1, 1, 0))));
        assert!(matches!(k.parse(&file), Ok(Found::Slotted(_, p)) if p == at(1, 1, 0)));
    }

    #[test]
    fn the_counter_runs_out_instead_of_wrapping() {
        let last = Slot {
            index: 1,
            counter: u64::MAX,
        };
        assert_eq!(last.next(), None);
        assert_eq!(
            Slot {
                index: 1,
                counter: 3
            }
            .next(),
            Some(Slot {
                index: 0,
                counter: 4
            })
        );
    }

    #[test]
    fn a_wrong_size_or_header_is_damaged() {
        let k = key();
        let (file, _) = k.new_file(&ID, at(1, 2, 3));
        for bad in [&file[..FILE_LEN - 1], &[&file[..], &[0]].concat()] {
            assert_eq!(k.parse(bad), Err(Damaged));
        }
        // The version, the file id (no slot authenticates under another),
        // the zeros after it.
        for at in [19, 25, 100, BLOCK - 1] {
            let mut other = file.clone();
            other[at] ^= 4;
            assert_eq!(k.parse(&other), Err(Damaged), "header byte {at}");
        }
    }

    #[test]
    fn json_witnesses_still_read() {
        let k = key();
        let p = at(4, 13, 2);
        assert_eq!(k.parse(&legacy_file(&k, p)), Ok(Found::Legacy(p)));
        let fixture = br#"{"version":1,"store_id":"03030303030303030303030303030303","global_epoch":1,"generation":2,"mac":"00"}"#;
        assert_eq!(k.parse(fixture), Err(Damaged));
    }

    /// What a build from before the slotted witness does with one: its
    /// JSON parser refuses it, so the old build reports a damaged witness
    /// (`witness_corrupt`) and never takes it for absent.
    #[test]
    fn the_json_parser_refuses_a_slotted_file() {
        let k = key();
        let (file, _) = k.new_file(&ID, at(1, 2, 3));
        assert_eq!(k.parse_legacy(&file), Err(Damaged));
        assert!(serde_json::from_slice::<serde_json::Value>(&file).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any bytes: a position or `Damaged`, never a panic. Short ones
        /// go to the JSON parser; ones of the file's length that start
        /// with the magic, the version and any file id (and the header's
        /// zeros, or not) reach the slotted parser, and with slots no key
        /// holder wrote they are damaged.
        #[test]
        fn parsing_arbitrary_bytes_never_panics(
            short in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            seed in proptest::prelude::any::<u64>(),
            id in proptest::prelude::any::<FileId>(),
            zeros in proptest::prelude::any::<bool>(),
        ) {
            let k = key();
            let _ = k.parse(&short);
            let mut long = noise(seed, FILE_LEN);
            long[..HEADER_LEN].copy_from_slice(&header(&id));
            if zeros {
                long[HEADER_LEN..BLOCK].fill(0);
            }
            proptest::prop_assert_eq!(k.parse(&long), Err(Damaged));
        }

        /// A valid file with two slots at arbitrary counters, then one
        /// mutation: a header byte set to any value, the file cut or
        /// extended to any length, or a byte of a slot's counter set to
        /// any value. Each reads as the rule says or is `Damaged`.
        #[test]
        fn mutated_files_read_as_the_rule_says(
            counters in proptest::prelude::any::<(u64, u64)>(),
            header_at in 0..BLOCK,
            len in 0..FILE_LEN + BLOCK,
            slot_byte in (0..SLOTS, 0..8usize),
            value in proptest::prelude::any::<u8>(),
        ) {
            let k = key();
            let (c0, c1) = counters;
            let positions = [at(1, 1, 0), at(1, 2, 0)];
            let file = two(&k, Some((c0, positions[0])), Some((c1, positions[1])));
            // The valid slot with the higher counter, of `valid` slots.
            let rule = |valid: [bool; 2]| {
                let slot = |i: usize| Slot { index: i, counter: [c0, c1][i] };
                match (valid, c0.cmp(&c1)) {
                    ([true, true], std::cmp::Ordering::Equal) | ([false, false], _) => {
                        Err(Damaged)
                    }
                    ([true, true], std::cmp::Ordering::Greater) | ([true, false], _) => {
                        Ok(Found::Slotted(slot(0), positions[0]))
                    }
                    _ => Ok(Found::Slotted(slot(1), positions[1])),
                }
            };
            proptest::prop_assert_eq!(k.parse(&file), rule([true, true]));

            let mut bad = file.clone();
            bad[header_at] = value;
            let expected = if bad == file { rule([true, true]) } else { Err(Damaged) };
            proptest::prop_assert_eq!(k.parse(&bad), expected);

            let mut resized = file.clone();
            resized.resize(len, 0);
            let expected = if len == FILE_LEN { rule([true, true]) } else { Err(Damaged) };
            proptest::prop_assert_eq!(k.parse(&resized), expected);

            let (index, byte) = slot_byte;
            let mut bad = file.clone();
            bad[BLOCK * (1 + index) + byte] = value;
            let mut valid = [true, true];
            valid[index] = bad == file;
            proptest::prop_assert_eq!(k.parse(&bad), rule(valid));
        }

        /// A file of the right shape with arbitrary slot bytes (and some
        /// valid records mixed in): a position from a valid slot or
        /// `Damaged`.
        #[test]
        fn arbitrary_slots_give_a_valid_slot_or_damage(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), RECORD_LEN),
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), RECORD_LEN),
            counter in proptest::prelude::any::<u64>(),
            seal_a in proptest::prelude::any::<bool>(),
        ) {
            let k = key();
            let mut file = two(&k, None, None);
            let (sa, sb) = (Slot { index: 0, counter }, Slot { index: 1, counter: 0 });
            let a = if seal_a { k.seal(&ID, sa, at(1, counter, 0)).to_vec() } else { a };
            put(&mut file, sa, &a);
            put(&mut file, sb, &b);
            match k.parse(&file) {
                Ok(Found::Slotted(s, p)) => {
                    proptest::prop_assert!(seal_a && s == sa && p == at(1, counter, 0));
                }
                Ok(Found::Legacy(_)) => proptest::prop_assert!(false, "slotted read as JSON"),
                Err(Damaged) => proptest::prop_assert!(!seal_a),
            }
        }
    }
}
