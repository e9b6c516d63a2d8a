//! An in-memory key provider for tests, with scriptable KEK versions.

use std::collections::BTreeMap;
use std::sync::Mutex;

use zeroize::Zeroizing;

use super::{KEK_LEN, KekId, KeyProvider, LocalKek, ProviderError};

/// A provider whose KEK versions live in memory. Tests add versions, make one
/// current, and drop old ones to model a KMS that destroyed a version.
#[derive(Debug, Default)]
pub struct MemoryProvider {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    keks: BTreeMap<KekId, LocalKek>,
    current: Option<KekId>,
}

impl MemoryProvider {
    /// A provider with one KEK, `id`, made from `seed`, as current.
    pub fn with_key(id: &str, seed: u8) -> Self {
        let provider = Self::default();
        provider.add_key(id, seed);
        provider.set_current(id);
        provider
    }

    /// Adds a KEK version `id` whose bytes are all `seed` (nonzero).
    ///
    /// # Panics
    /// On an invalid id or a zero seed: test setup bugs.
    pub fn add_key(&self, id: &str, seed: u8) {
        let id = KekId::new(id).expect("test KEK id must be valid");
        let kek = LocalKek::new(id.clone(), Zeroizing::new([seed; KEK_LEN]))
            .expect("test KEK seed must be nonzero");
        self.lock().keks.insert(id, kek);
    }

    /// Makes `id` the current version.
    ///
    /// # Panics
    /// On an invalid id: a test setup bug.
    pub fn set_current(&self, id: &str) {
        self.lock().current = Some(KekId::new(id).expect("test KEK id must be valid"));
    }

    /// Forgets version `id`, as a KMS that destroyed it would.
    ///
    /// # Panics
    /// On an invalid id: a test setup bug.
    pub fn destroy_key(&self, id: &str) {
        self.lock()
            .keks
            .remove(&KekId::new(id).expect("test KEK id must be valid"));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic in another test thread must not hide this provider's state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with_kek<T>(
        &self,
        kek: &KekId,
        f: impl FnOnce(&LocalKek) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let state = self.lock();
        let local = state
            .keks
            .get(kek)
            .ok_or_else(|| ProviderError::UnknownKek { kek: kek.clone() })?;
        f(local)
    }
}

impl KeyProvider for MemoryProvider {
    fn current_kek_id(&self) -> Result<KekId, ProviderError> {
        self.lock()
            .current
            .clone()
            .ok_or_else(|| ProviderError::Misconfigured {
                reason: "no current key".to_owned(),
            })
    }

    fn wrap(&self, kek: &KekId, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError> {
        self.with_kek(kek, |local| local.wrap(plaintext))
    }

    fn unwrap(&self, kek: &KekId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.with_kek(kek, |local| local.unwrap(wrapped))
    }
}
