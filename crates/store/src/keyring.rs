//! The in-memory keyring: the unwrapped DEKs every reader and the writer use.
//!
//! # Invariants
//! - A DEK is inserted here before any transaction that can make it current
//!   commits (so a writer that reads "current = n" in its transaction always
//!   finds DEK n here, I1).
//! - A retired DEK is removed only once every reader that registered before
//!   its retirement committed has finished (a read snapshot older than the
//!   retirement may still hold records sealed under it, I2).
//!
//! Readers register through [`Keyring::enter_reader`] *before* they begin
//! their read transaction; the writer calls [`Keyring::retired`] *after* the
//! retirement commit. A reader registered at generation `g` therefore began
//! its snapshot after every retirement recorded at a generation below `g`.

use std::collections::BTreeMap;

use crate::ids::DekTerm;
use crate::seal::Dek;
use crate::sync::{Arc, Mutex, RwLock, lock};

/// An immutable snapshot of the unwrapped DEKs.
#[derive(Debug, Default)]
pub(crate) struct KeyringView {
    deks: BTreeMap<DekTerm, Arc<Dek>>,
}

impl KeyringView {
    /// The DEK named `term`, if held.
    pub(crate) fn get(&self, term: DekTerm) -> Option<Arc<Dek>> {
        self.deks.get(&term).cloned()
    }
}

#[derive(Debug, Default)]
struct Readers {
    /// The generation new readers register at; bumped by each retirement.
    generation: u64,
    /// Live readers per registration generation.
    active: BTreeMap<u64, usize>,
    /// Retired DEKs still held, with the generation of their retirement.
    pending: Vec<(u64, DekTerm)>,
}

/// The shared in-memory keyring.
#[derive(Debug, Default)]
pub(crate) struct Keyring {
    view: RwLock<Arc<KeyringView>>,
    readers: Mutex<Readers>,
}

/// A registered reader; deregisters on drop.
#[derive(Debug)]
pub(crate) struct ReaderToken<'a> {
    keyring: &'a Keyring,
    generation: u64,
}

impl Drop for ReaderToken<'_> {
    fn drop(&mut self) {
        let mut readers = lock(&self.keyring.readers);
        if let Some(count) = readers.active.get_mut(&self.generation) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                readers.active.remove(&self.generation);
            }
        }
        self.keyring.collect(&mut readers);
    }
}

impl Keyring {
    /// The current snapshot of unwrapped DEKs.
    pub(crate) fn view(&self) -> Arc<KeyringView> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adds (or replaces) a DEK.
    pub(crate) fn insert(&self, dek: Dek) {
        self.update(|deks| {
            deks.insert(dek.term(), Arc::new(dek));
        });
    }

    fn update(&self, f: impl FnOnce(&mut BTreeMap<DekTerm, Arc<Dek>>)) {
        let mut guard = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut deks = guard.deks.clone();
        f(&mut deks);
        *guard = Arc::new(KeyringView { deks });
    }

    /// Registers a reader. Call before beginning the read transaction.
    pub(crate) fn enter_reader(&self) -> ReaderToken<'_> {
        let mut readers = lock(&self.readers);
        let generation = readers.generation;
        *readers.active.entry(generation).or_insert(0) += 1;
        ReaderToken {
            keyring: self,
            generation,
        }
    }

    /// Records that `term`'s retirement has committed. The DEK is dropped
    /// once no reader registered before this call remains.
    pub(crate) fn retired(&self, term: DekTerm) {
        let mut readers = lock(&self.readers);
        let generation = readers.generation;
        readers.pending.push((generation, term));
        readers.generation = generation.saturating_add(1);
        self.collect(&mut readers);
    }

    fn collect(&self, readers: &mut Readers) {
        let oldest = readers.active.keys().next().copied();
        let (drop, keep): (Vec<_>, Vec<_>) = readers
            .pending
            .iter()
            .partition(|(retired_at, _)| oldest.is_none_or(|oldest| oldest > *retired_at));
        if drop.is_empty() {
            return;
        }
        readers.pending = keep;
        self.update(|deks| {
            for (_, term) in drop {
                deks.remove(&term);
            }
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn retired_dek_outlives_older_readers_only() {
        let k = Keyring::default();
        k.insert(Dek::generate(DekTerm(1), &mut OsRng));
        k.insert(Dek::generate(DekTerm(2), &mut OsRng));
        let old_reader = k.enter_reader();
        k.retired(DekTerm(1));
        assert!(
            k.view().get(DekTerm(1)).is_some(),
            "an older reader holds it"
        );
        let new_reader = k.enter_reader();
        drop(old_reader);
        assert!(k.view().get(DekTerm(1)).is_none());
        assert!(k.view().get(DekTerm(2)).is_some());
        drop(new_reader);
        k.retired(DekTerm(2));
        assert!(
            k.view().get(DekTerm(2)).is_none(),
            "no reader: dropped at once"
        );
    }
}
