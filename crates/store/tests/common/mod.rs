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

    pub fn open_with(&self, options: StoreOptions) -> Result<EncryptedStore, Error> {
        let db = Database::builder().create_with_backend(self.disk.backend())?;
        let provider: Arc<dyn KeyProvider> = self.provider.clone();
        EncryptedStore::open(
            StoreLocation::Database {
                db,
                witness: self.witness.clone(),
            },
            provider,
            options,
        )
    }

    pub fn open(&self) -> Result<EncryptedStore, Error> {
        self.open_with(StoreOptions::default())
    }
}

pub fn wallet(n: u8) -> WalletId {
    WalletId::new(vec![b'w', n]).unwrap()
}
