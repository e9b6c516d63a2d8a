//! The rate ledger's current format (version 4): running counts per window,
//! a ring of charge records and an index of charge keys, so that a charge
//! reads and writes a few small records whatever the day's volume.
//!
//! - The summary (the ledger's record, `rate-ledger`): the sequence numbers
//!   of the oldest charge of the day window (`head`), of the oldest in the
//!   minute window (`minute_head`) and of the next charge (`next`), the
//!   charge times at both heads, the time of the last write (`seen`), and
//!   per requesting coordinator its charges in each window and its fees of
//!   the day (a [`Tally`]).
//! - One record per charge in a ring of [`RING`] slots (`rate-ledger/slot/`
//!   and the slot number): sequence `s` lives in slot `s mod RING`. A day
//!   holds fewer than `max_per_day` ≤ `RING` charges, so a slot is reused
//!   only once its charge left the day window.
//! - [`BUCKETS`] index records (`rate-ledger/keys/` and the bucket number),
//!   each listing the charge keys of its bucket with their sequence and
//!   time: whether a transaction was already charged is one small read.
//!   Entries whose sequence is below `head` are dead and dropped whenever
//!   their bucket is written.
//!
//! Charges are appended in time order; a window's count moves a charge out
//! when the window's start passes its time, reading that charge's record
//! once, and the summary so moved is stored by the charge or, if none, by
//! the request that read it ([`super::StoredLedger::prune_ops`]). So each
//! charge is written once and read at most twice per window over its life
//! (moved out, and as the next head), and a signature costs O(1) records
//! however many charges the day holds. A read a little before the last
//! write (the clock stepped back by under a minute; round 2 reads it under
//! the wallet's lock, so a request that waited for the lock no longer
//! reads before the charges made meanwhile) moves the minute window's head
//! back over the few charges it brings back ([`Summary::rewind`]). A read
//! more than a minute before it (the clock was set back) reads the whole
//! ring into the reference [`ChargeLog`] instead, and the next charge lays
//! the ring out again from it ([`rebuild`]), as the migration from the
//! earlier formats does.

use std::collections::BTreeMap;

use bitcoin::Amount;
use thresig_tx::{
    ChargeEntry, ChargeKey, ChargeLog, CoordinatorId as PolicyCoordinator, MAX_PER_DAY_CEILING,
    UnixTime, rate_windows,
};

use super::legacy::{decode_entry, encode_entry, stored_name};

/// Version byte of the summary record.
pub(super) const SUMMARY_VERSION: u8 = 4;
/// Slots in the ring: the most charges a day may hold (`max_per_day` is
/// at most [`MAX_PER_DAY_CEILING`]).
pub(super) const RING: u64 = 10_000;
const _: () = assert!(RING >= MAX_PER_DAY_CEILING as u64 && RING <= u16::MAX as u64);
/// Buckets of the charge-key index: about ten keys each at the largest
/// day, one at a hundred charges a day.
pub(super) const BUCKETS: u16 = 1024;
/// Prefix of a slot record's policy key (then the slot as u16 BE).
pub(super) const SLOT_PREFIX: &[u8] = b"rate-ledger/slot/";
/// Prefix of an index record's policy key (then the bucket as u16 BE).
pub(super) const KEYS_PREFIX: &[u8] = b"rate-ledger/keys/";
/// Bytes of one index entry: key, sequence, time.
const INDEX_ENTRY_LEN: usize = 48;

/// The policy key suffix of the slot holding sequence `seq`.
pub(super) fn slot_name(seq: u64) -> Vec<u8> {
    let slot = u16::try_from(seq % RING).unwrap_or(u16::MAX);
    [SLOT_PREFIX, &slot.to_be_bytes()].concat()
}

/// The policy key of the index bucket holding `key`.
pub(super) fn bucket_name(key: &ChargeKey) -> Vec<u8> {
    let bytes = key.to_byte_array();
    let bucket = u16::from_be_bytes([bytes[0], bytes[1]]) % BUCKETS;
    [KEYS_PREFIX, &bucket.to_be_bytes()].concat()
}

/// A window the summary keeps a running count for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Window {
    /// The last 60 s: charge counts only (no rule caps a minute's fees).
    Minute,
    /// The last 24 h: charge counts and fees.
    Day,
}

/// One coordinator's charges in the two windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Charges in the day window.
    pub(super) day: u32,
    /// Charges in the minute window.
    pub(super) minute: u32,
    /// The sum of the known fees of the day window's charges, in sat.
    pub(super) fee: u64,
    /// Charges of the day window whose fee is not known.
    pub(super) unknown: u32,
}

impl Tally {
    /// Charges in `window`.
    pub(super) const fn count(&self, window: Window) -> u32 {
        match window {
            Window::Minute => self.minute,
            Window::Day => self.day,
        }
    }

    const fn is_empty(&self) -> bool {
        self.day == 0 && self.minute == 0 && self.fee == 0 && self.unknown == 0
    }

    /// Adds a charge of fee `fee` to both windows.
    fn add(&mut self, fee: Option<Amount>) -> Option<()> {
        self.day = self.day.checked_add(1)?;
        self.minute = self.minute.checked_add(1)?;
        match fee {
            Some(fee) => self.fee = self.fee.checked_add(fee.to_sat())?,
            None => self.unknown = self.unknown.checked_add(1)?,
        }
        Some(())
    }

    /// Moves a charge of fee `fee` out of `window`; `None` if the tally
    /// did not hold it (a damaged ledger).
    fn remove(&mut self, window: Window, fee: Option<Amount>) -> Option<()> {
        match window {
            Window::Minute => self.minute = self.minute.checked_sub(1)?,
            Window::Day => {
                self.day = self.day.checked_sub(1)?;
                match fee {
                    Some(fee) => self.fee = self.fee.checked_sub(fee.to_sat())?,
                    None => self.unknown = self.unknown.checked_sub(1)?,
                }
            }
        }
        Some(())
    }
}

/// The ledger's summary record.
///
/// # Invariants
/// `head ≤ minute_head ≤ next` and `next − head ≤ RING`; the charges of
/// sequences `head..next` are in the ring in time order, all dated at most
/// `seen`; the tallies count those of `head..next` by day and those of
/// `minute_head..next` by minute; `head_at` and `minute_at` are the times
/// of the charges at `head` and `minute_head` where those are below `next`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Summary {
    pub(super) head: u64,
    minute_head: u64,
    pub(super) next: u64,
    pub(super) seen: UnixTime,
    head_at: UnixTime,
    minute_at: UnixTime,
    /// By requesting coordinator; `None` for charges whose requester is
    /// not known, which count against every coordinator.
    pub(super) tallies: BTreeMap<Option<PolicyCoordinator>, Tally>,
}

/// An empty ledger.
impl Default for Summary {
    fn default() -> Self {
        Self {
            head: 0,
            minute_head: 0,
            next: 0,
            seen: UnixTime(0),
            head_at: UnixTime(0),
            minute_at: UnixTime(0),
            tallies: BTreeMap::new(),
        }
    }
}

/// A charge record of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    /// The charge's sequence number (so a slot of another lap is caught).
    pub(super) seq: u64,
    /// The charge.
    pub(super) entry: ChargeEntry,
}

impl Slot {
    /// `[seq: u64 BE]` then the entry in the version-3 layout.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = self.seq.to_be_bytes().to_vec();
        encode_entry(&mut out, &self.entry);
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let (seq, rest) = bytes.split_first_chunk::<8>()?;
        let (entry, rest) = decode_entry(rest)?;
        rest.is_empty().then(|| Self {
            seq: u64::from_be_bytes(*seq),
            entry,
        })
    }
}

/// Where a pruning summary finds the ring's charges: the store (through
/// the engine) or the slots being laid out.
pub(super) trait Slots {
    /// The error of a read.
    type Error;
    /// The charge of sequence `seq`; the error for a record missing, not
    /// decoding or holding another sequence.
    fn slot(&mut self, seq: u64) -> Result<Slot, Self::Error>;
    /// The error for a summary that contradicts its ring.
    fn damaged(&self) -> Self::Error;
}

impl Summary {
    /// The tally of `coordinator`'s charges, and of charges of no known
    /// requester (which count against every coordinator), added up.
    pub(super) fn tally_of(&self, coordinator: Option<&PolicyCoordinator>) -> Tally {
        let anyone = self.tallies.get(&None).copied().unwrap_or_default();
        let own = coordinator
            .and_then(|c| self.tallies.get(&Some(c.clone())))
            .copied()
            .unwrap_or_default();
        Tally {
            day: anyone.day.saturating_add(own.day),
            minute: anyone.minute.saturating_add(own.minute),
            fee: anyone.fee.saturating_add(own.fee),
            unknown: anyone.unknown.saturating_add(own.unknown),
        }
    }

    /// Every coordinator's tallies added up.
    pub(super) fn total(&self) -> Tally {
        self.tallies
            .values()
            .fold(Tally::default(), |acc, t| Tally {
                day: acc.day.saturating_add(t.day),
                minute: acc.minute.saturating_add(t.minute),
                fee: acc.fee.saturating_add(t.fee),
                unknown: acc.unknown.saturating_add(t.unknown),
            })
    }

    /// Whether `seq` is a charge of the day window.
    pub(super) const fn is_live(&self, seq: u64) -> bool {
        self.head <= seq && seq < self.next
    }

    /// Moves the charges that left the windows at `now` out of them (reading
    /// each from `slots`), for a `now` at or after the last write.
    pub(super) fn prune<S: Slots>(&mut self, slots: &mut S, now: UnixTime) -> Result<(), S::Error> {
        let (minute, day) = rate_windows(now);
        self.advance(slots, Window::Minute, minute)?;
        self.advance(slots, Window::Day, day)?;
        if self.head > self.minute_head {
            return Err(slots.damaged());
        }
        Ok(())
    }

    fn advance<S: Slots>(
        &mut self,
        slots: &mut S,
        window: Window,
        since: UnixTime,
    ) -> Result<(), S::Error> {
        loop {
            let (cursor, at) = match window {
                Window::Minute => (self.minute_head, self.minute_at),
                Window::Day => (self.head, self.head_at),
            };
            if cursor >= self.next || at >= since {
                return Ok(());
            }
            let out = slots.slot(cursor)?;
            if out.entry.at != at {
                return Err(slots.damaged());
            }
            let name = stored_name(out.entry.coordinator.clone());
            let tally = self.tallies.entry(name.clone()).or_default();
            tally
                .remove(window, out.entry.fee)
                .ok_or_else(|| slots.damaged())?;
            if tally.is_empty() {
                self.tallies.remove(&name);
            }
            let cursor = cursor.saturating_add(1);
            let at = if cursor < self.next {
                slots.slot(cursor)?.entry.at
            } else {
                UnixTime(0)
            };
            match window {
                Window::Minute => (self.minute_head, self.minute_at) = (cursor, at),
                Window::Day => (self.head, self.head_at) = (cursor, at),
            }
        }
    }

    /// For a `now` before the last write by at most
    /// `FUTURE_CHARGE_TOLERANCE_SECS` (the clock stepped back by that
    /// much at most: round 2 reads it under the wallet's lock, so every
    /// charge committed before is dated no later unless it went back):
    /// brings back into the minute window the charges the last write
    /// moved out of it that are in it at `now` (the day window at `now`
    /// holds every charge kept), and dates `now` the charges dated after
    /// it, as [`ChargeLog::prune`] does, which changes no count. Returns
    /// the charges so re-dated, to be rewritten with the next charge.
    pub(super) fn rewind<S: Slots>(
        &mut self,
        slots: &mut S,
        now: UnixTime,
    ) -> Result<Vec<Slot>, S::Error> {
        let (minute, _) = rate_windows(now);
        while self.minute_head > self.head {
            let back = slots.slot(self.minute_head - 1)?;
            if back.entry.at < minute {
                break;
            }
            let name = stored_name(back.entry.coordinator.clone());
            let tally = self.tallies.entry(name).or_default();
            tally.minute = tally.minute.checked_add(1).ok_or_else(|| slots.damaged())?;
            (self.minute_head, self.minute_at) = (self.minute_head - 1, back.entry.at);
        }
        let mut redated = Vec::new();
        let mut first = self.next;
        while first > self.head {
            let mut slot = slots.slot(first - 1)?;
            if slot.entry.at <= now {
                break;
            }
            slot.entry =
                ChargeEntry::new(slot.entry.key, now, slot.entry.fee, slot.entry.coordinator);
            redated.push(slot);
            first -= 1;
        }
        if self.head >= first && self.head < self.next {
            self.head_at = now;
        }
        if self.minute_head >= first && self.minute_head < self.next {
            self.minute_at = now;
        }
        self.seen = now;
        Ok(redated)
    }

    /// Appends `entry` (dated at or after every charge held: the time of
    /// this write) as the next charge; returns its slot.
    /// `None` if the ring is full, which a policy capping a day at
    /// `max_per_day` ≤ [`RING`] charges never lets happen.
    pub(super) fn append(&mut self, entry: ChargeEntry) -> Option<Slot> {
        if self.next.checked_sub(self.head)? >= RING {
            return None;
        }
        let entry = ChargeEntry::new(
            entry.key,
            entry.at,
            entry.fee,
            stored_name(entry.coordinator),
        );
        self.tallies
            .entry(entry.coordinator.clone())
            .or_default()
            .add(entry.fee)?;
        let seq = self.next;
        if self.head == seq {
            self.head_at = entry.at;
        }
        if self.minute_head == seq {
            self.minute_at = entry.at;
        }
        self.next = seq.checked_add(1)?;
        self.seen = entry.at;
        Some(Slot { seq, entry })
    }

    /// `[4][head][minute_head][next][seen][head_at][minute_at]` (u64 BE
    /// each), `[tallies: u16 BE]`, then per tally `[name length: u8][name]
    /// [day: u32][minute: u32][fee: u64][unknown fees: u32]` (BE; length 0:
    /// charges of no known requester).
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = vec![SUMMARY_VERSION];
        for word in [
            self.head,
            self.minute_head,
            self.next,
            self.seen.0,
            self.head_at.0,
            self.minute_at.0,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        // At most one tally per roster member and one for unknown
        // requesters: far below u16::MAX.
        let tallies = u16::try_from(self.tallies.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&tallies.to_be_bytes());
        for (name, t) in self.tallies.iter().take(usize::from(tallies)) {
            let name = name.as_ref().map_or("", |c| c.0.as_str());
            out.push(u8::try_from(name.len()).unwrap_or(0));
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&t.day.to_be_bytes());
            out.extend_from_slice(&t.minute.to_be_bytes());
            out.extend_from_slice(&t.fee.to_be_bytes());
            out.extend_from_slice(&t.unknown.to_be_bytes());
        }
        out
    }

    /// Decodes a summary record; `None` for another version or a record
    /// that breaks the invariants.
    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let ([version], mut rest) = bytes.split_first_chunk::<1>()?;
        if *version != SUMMARY_VERSION {
            return None;
        }
        let mut word = || -> Option<u64> {
            let (w, tail) = rest.split_first_chunk::<8>()?;
            rest = tail;
            Some(u64::from_be_bytes(*w))
        };
        let (head, minute_head, next) = (word()?, word()?, word()?);
        let (seen, head_at, minute_at) = (word()?, word()?, word()?);
        let (count, mut rest) = rest.split_first_chunk::<2>()?;
        let mut tallies = BTreeMap::new();
        for _ in 0..u16::from_be_bytes(*count) {
            let ([len], tail) = rest.split_first_chunk::<1>()?;
            let (name, tail) = tail.split_at_checked(usize::from(*len))?;
            let name = std::str::from_utf8(name).ok()?;
            let (day, tail) = tail.split_first_chunk::<4>()?;
            let (minute, tail) = tail.split_first_chunk::<4>()?;
            let (fee, tail) = tail.split_first_chunk::<8>()?;
            let (unknown, tail) = tail.split_first_chunk::<4>()?;
            let name = (!name.is_empty()).then(|| PolicyCoordinator(name.to_owned()));
            let tally = Tally {
                day: u32::from_be_bytes(*day),
                minute: u32::from_be_bytes(*minute),
                fee: u64::from_be_bytes(*fee),
                unknown: u32::from_be_bytes(*unknown),
            };
            if tallies.insert(name, tally).is_some() {
                return None;
            }
            rest = tail;
        }
        let ordered = head <= minute_head && minute_head <= next && next - head <= RING;
        (ordered && rest.is_empty()).then_some(Self {
            head,
            minute_head,
            next,
            seen: UnixTime(seen),
            head_at: UnixTime(head_at),
            minute_at: UnixTime(minute_at),
            tallies,
        })
    }
}

/// One bucket of the charge-key index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Index(Vec<(ChargeKey, u64, UnixTime)>);

impl Index {
    /// When `key` was charged, if it is a charge of `summary`'s day window.
    pub(super) fn charged_at(&self, key: &ChargeKey, summary: &Summary) -> Option<UnixTime> {
        self.0
            .iter()
            .filter(|(k, seq, _)| k == key && summary.is_live(*seq))
            .map(|(_, _, at)| *at)
            .max()
    }

    /// The bucket after `slots` were charged under `summary`: its live
    /// entries, then the new ones.
    pub(super) fn with<'a>(
        &self,
        summary: &Summary,
        slots: impl Iterator<Item = &'a Slot>,
    ) -> Self {
        let kept = self.0.iter().filter(|(_, seq, _)| summary.is_live(*seq));
        let new = slots.map(|s| (s.entry.key, s.seq, s.entry.at));
        Self(kept.copied().chain(new).collect())
    }

    /// Entries of `[key: 32][seq: u64 BE][time: u64 BE]`.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * INDEX_ENTRY_LEN);
        for (key, seq, at) in &self.0 {
            out.extend_from_slice(&key.to_byte_array());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&at.0.to_be_bytes());
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(INDEX_ENTRY_LEN) {
            return None;
        }
        bytes
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|e| {
                let (key, rest) = e.split_first_chunk::<32>()?;
                let (seq, rest) = rest.split_first_chunk::<8>()?;
                let (at, _) = rest.split_first_chunk::<8>()?;
                Some((
                    ChargeKey::from_byte_array(*key),
                    u64::from_be_bytes(*seq),
                    UnixTime(u64::from_be_bytes(*at)),
                ))
            })
            .collect::<Option<_>>()
            .map(Self)
    }
}

/// The charges being laid out, as [`Slots`] for pruning them.
struct Laid<'a>(&'a [Slot]);

impl Slots for Laid<'_> {
    type Error = ();
    fn slot(&mut self, seq: u64) -> Result<Slot, ()> {
        let first = self.0.first().ok_or(())?.seq;
        let i = usize::try_from(seq.checked_sub(first).ok_or(())?).map_err(|_| ())?;
        self.0.get(i).cloned().ok_or(())
    }
    fn damaged(&self) {}
}

/// Lays the charges of `log` (pruned at `now`, so none is dated after it)
/// out as a ring from sequence `base` on: the summary and the charge
/// records to write. The migration from the earlier formats (`base` 0)
/// and the rewrite after the clock was set back (`base` the old `next`, so
/// every old index entry is dead) both go through here. `None` if the log
/// holds more than a ring of charges.
pub(super) fn rebuild(log: &ChargeLog, base: u64, now: UnixTime) -> Option<(Summary, Vec<Slot>)> {
    let mut entries: Vec<ChargeEntry> = log.iter().collect();
    entries.sort_by_key(|e| (e.at, e.key));
    let mut summary = Summary {
        head: base,
        minute_head: base,
        next: base,
        seen: now,
        ..Summary::default()
    };
    let slots = entries
        .into_iter()
        .map(|e| summary.append(e))
        .collect::<Option<Vec<_>>>()?;
    summary.prune(&mut Laid(&slots), now).ok()?;
    Some((summary, slots))
}

#[cfg(test)]
mod tests {
    use super::super::legacy::tests::entry;
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_damage() {
        let log: ChargeLog = [
            entry(1, 1_000, Some(5), Some("ab")),
            entry(2, 1_030, None, None),
            entry(3, 1_100, Some(7), Some("cd")),
        ]
        .into_iter()
        .collect();
        let (summary, slots) = rebuild(&log, 9_998, UnixTime(1_100)).unwrap();
        let bytes = summary.encode();
        assert_eq!(Summary::decode(&bytes).unwrap(), summary);
        for cut in 0..bytes.len() {
            assert!(Summary::decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        assert!(Summary::decode(&[bytes.clone(), vec![0]].concat()).is_none());
        // Sequences wrap around the ring.
        assert_eq!(slot_name(9_998), slot_name(19_998));
        assert_eq!(slot_name(10_000), slot_name(0));
        for slot in &slots {
            let b = slot.encode();
            assert_eq!(Slot::decode(&b).as_ref(), Some(slot));
            assert!(Slot::decode(&b[..b.len() - 1]).is_none());
        }
        let index = Index::default().with(&summary, slots.iter());
        let b = index.encode();
        assert_eq!(Index::decode(&b).unwrap(), index);
        assert!(Index::decode(&b[..b.len() - 1]).is_none());
        // Only the minute's charge is in the minute window; the day holds
        // all three, one of unknown fee and requester.
        assert_eq!(summary.total().minute, 1);
        assert_eq!(summary.total().day, 3);
        assert_eq!(
            summary.tally_of(Some(&PolicyCoordinator("ab".into()))).day,
            2
        );
        assert_eq!(summary.total().unknown, 1);
        assert_eq!(summary.total().fee, 12);
    }
}
