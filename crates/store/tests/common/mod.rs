//! Helpers shared by the store's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use redb::Database;
use thresig_store::provider::{KeyProvider, MemoryProvider};
use thresig_store::{
    EncryptedStore, Error, MemoryWitness, SimDisk, StoreLocation, StoreOptions, WalletId,
};

/// A simulated machine: disk, witness and provider survive "restarts".
pub struct Machine {
    pub disk: SimDisk,
    pub witness: MemoryWitness,
    pub provider: Arc<MemoryProvider>,
}

impl Machine {
    pub fn new() -> Self {
        Self {
            disk: SimDisk::new(),
            witness: MemoryWitness::new(),
            provider: Arc::new(MemoryProvider::with_key("kek-1", 1)),
        }
    }

    /// Opens the machine's store, creating it when the machine has none
    /// yet (as provisioning would).
    pub fn open_with(&self, options: StoreOptions) -> Result<EncryptedStore, Error> {
        let provider: Arc<dyn KeyProvider> = self.provider.clone();
        open_or_create(&self.disk, &self.witness, provider, options)
    }

    pub fn open(&self) -> Result<EncryptedStore, Error> {
        self.open_with(StoreOptions::default())
    }
}

pub fn wallet(n: u8) -> WalletId {
    WalletId::new(format!("w{n}")).unwrap()
}

/// A redb table of sealed records, for tests that edit the raw bytes.
pub fn raw_table(name: &str) -> redb::TableDefinition<'_, &'static [u8], &'static [u8]> {
    redb::TableDefinition::new(name)
}

/// Runs `f` in a raw write transaction on the machine's disk (the store
/// must be closed), as an attacker with disk access would.
pub fn edit_raw(machine: &Machine, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = Database::builder()
        .create_with_backend(machine.disk.backend())
        .unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

/// The raw bytes of `key` in table `name`.
pub fn raw_get(txn: &redb::WriteTransaction, name: &str, key: &[u8]) -> Option<Vec<u8>> {
    use redb::ReadableTable as _;
    let t = txn.open_table(raw_table(name)).unwrap();
    t.get(key).unwrap().map(|g| g.value().to_vec())
}

/// Replaces the raw bytes of `key` in table `name`.
pub fn raw_put(txn: &redb::WriteTransaction, name: &str, key: &[u8], value: &[u8]) {
    let mut t = txn.open_table(raw_table(name)).unwrap();
    t.insert(key, value).unwrap();
}

/// The record key of a wallet (length-prefixed id), as the store lays it out.
pub fn wallet_key(w: &WalletId) -> Vec<u8> {
    [&[w.as_bytes().len() as u8][..], w.as_bytes()].concat()
}

/// A provider that fails (or counts) calls, around a [`MemoryProvider`].
pub struct ScriptedProvider {
    pub inner: MemoryProvider,
    calls: std::sync::Mutex<u64>,
    fail_at: std::sync::Mutex<Option<u64>>,
    fail_all: std::sync::atomic::AtomicBool,
}

impl ScriptedProvider {
    pub fn new(inner: MemoryProvider) -> Self {
        Self {
            inner,
            calls: std::sync::Mutex::new(0),
            fail_at: std::sync::Mutex::new(None),
            fail_all: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn calls(&self) -> u64 {
        *self.calls.lock().unwrap()
    }

    /// Fails the `n`-th call from now (1-based).
    pub fn fail_nth(&self, n: u64) {
        *self.fail_at.lock().unwrap() = Some(self.calls() + n);
    }

    pub fn fail_all(&self, on: bool) {
        self.fail_all.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn enter(&self) -> Result<(), thresig_store::provider::ProviderError> {
        let mut calls = self.calls.lock().unwrap();
        *calls += 1;
        let failing = self.fail_all.load(std::sync::atomic::Ordering::SeqCst)
            || *self.fail_at.lock().unwrap() == Some(*calls);
        if failing {
            return Err(thresig_store::provider::ProviderError::Unavailable {
                reason: "scripted outage".to_owned(),
            });
        }
        Ok(())
    }
}

impl KeyProvider for ScriptedProvider {
    fn current_kek_id(
        &self,
    ) -> Result<thresig_store::provider::KekId, thresig_store::provider::ProviderError> {
        self.enter()?;
        self.inner.current_kek_id()
    }
    fn wrap(
        &self,
        kek: &thresig_store::provider::KekId,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, thresig_store::provider::ProviderError> {
        self.enter()?;
        self.inner.wrap(kek, plaintext)
    }
    fn unwrap(
        &self,
        kek: &thresig_store::provider::KekId,
        wrapped: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, thresig_store::provider::ProviderError> {
        self.enter()?;
        self.inner.unwrap(kek, wrapped)
    }
}

/// Opens a store on `disk` with any provider, creating it when `disk`
/// holds none yet.
pub fn open_on(
    disk: &SimDisk,
    witness: &MemoryWitness,
    provider: Arc<dyn KeyProvider>,
) -> Result<EncryptedStore, Error> {
    open_or_create(disk, witness, provider, StoreOptions::default())
}

/// Opens the store on `disk`; where none exists (and no witness says one
/// did), creates it, as provisioning does before a signer first opens.
pub fn open_or_create(
    disk: &SimDisk,
    witness: &MemoryWitness,
    provider: Arc<dyn KeyProvider>,
    options: StoreOptions,
) -> Result<EncryptedStore, Error> {
    let location = || -> Result<StoreLocation, Error> {
        Ok(StoreLocation::Database {
            db: Database::builder().create_with_backend(disk.backend())?,
            witness: witness.clone(),
        })
    };
    match EncryptedStore::open(location()?, provider.clone(), options.clone()) {
        Err(Error::NoStore { .. }) => EncryptedStore::create(location()?, provider, options),
        opened => opened,
    }
}

/// A new store in `dir`, with a real witness file beside its database.
pub fn create_in(dir: &std::path::Path) -> EncryptedStore {
    EncryptedStore::create(
        StoreLocation::Directory(dir.to_path_buf()),
        Arc::new(MemoryProvider::with_key("k", 9)),
        StoreOptions::default(),
    )
    .unwrap()
}

/// The plaintext of wallet `n`'s state; panics if absent or unreadable.
pub fn wallet_value(store: &dyn thresig_store::Store, n: u8) -> Vec<u8> {
    store.wallet(&wallet(n)).unwrap().unwrap().to_vec()
}

/// Writes wallet `n`'s state and checks the unit committed.
pub fn put_wallet(store: &dyn thresig_store::Store, n: u8, value: &[u8]) {
    let out = store
        .write(vec![thresig_store::WriteOp::PutWallet {
            wallet: wallet(n),
            value: value.to_vec(),
        }])
        .unwrap();
    assert!(matches!(out, thresig_store::WriteOutcome::Committed(_)));
}

/// Collects what the `tracing` formatter writes.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
