//! The signer's encrypted state: small sealed records in one database, an
//! envelope-encryption keyring, and the key providers that hold its KEK.
//!
//! # Main types
//! - [`EncryptedStore`] opens (or creates) one signer's redb database and
//!   implements [`Store`], the typed, synchronous API the engine uses.
//! - Writes are units of [`WriteOp`]s, group-committed by a single writer
//!   thread; each unit reports a [`WriteOutcome`].
//! - Every value is sealed with XChaCha20-Poly1305 under a DEK from the
//!   keyring; DEKs are wrapped by a KEK from a [`provider::KeyProvider`] and
//!   optionally to an offline [`RecoveryPublicKey`].
//! - Errors are [`Error`], and [`provider::ProviderError`] for the key
//!   providers; each says whether a retry can succeed ([`Error::recovery`])
//!   and has a stable code ([`Error::code`]) that `thresig keys` prints.
//!
//! # Invariants (DESIGN.md section 3)
//! - I1: a record is sealed inside its write transaction under the DEK that
//!   transaction reads as current.
//! - I2: every record names a DEK in the keyring that is not retired.
//! - I3: the key provider is never called on the write path.
//! - I4: records failing authentication are errors, never absent values;
//!   so is a deleted marker row (each wallet's marker set has a digest).
//! - I5: a witness beside the database refuses a rolled-back database.
//! - I6: every error says whether a retry can succeed.
//!
//! # Features
//! - `test-util`: exports test doubles for other crates' tests: the
//!   in-memory key provider `provider::MemoryProvider`, the simulated disk
//!   and fault-injecting redb backend (`SimDisk`, `FaultBackend`), and the
//!   `conformance` suite for [`Store`] implementations.
//!
//! # Testing
//! - `cargo test -p thresig-store`: unit tests, the conformance suite, the
//!   corruption and rollback tests, fault injection at every storage and
//!   provider step, golden fixtures, and 1,000 seeded runs of the
//!   write-order race.
//! - `cargo test -p thresig-store --release --test race -- --ignored`: the
//!   long race run.
//! - `RUSTFLAGS="--cfg loom" cargo test -p thresig-store --release loom`: the
//!   loom model of the keyring and writer order.
//!
//! # Using the store from the engine
//! Create a store once with [`EncryptedStore::create`] (provisioning does
//! this; nothing else does), then open it with [`EncryptedStore::open`]
//! ([`StoreLocation::in_memory`] in unit tests). The engine is generic over
//! `S: Store`; the signer process gives it an `Arc<EncryptedStore>` (an
//! `Arc` of a store is a store), shared with the key manager and the
//! operator's `thresig keys` commands. Call [`Store::write`] with one unit
//! per decision that must commit atomically (for a signing round: the
//! marker and the compare-and-set of the wallet's rate ledger together). A
//! [`WriteOutcome::Skipped`] carries what the failed condition found (for a
//! replay, the stored marker). Run a [`KeyManager`] beside it.
//! [`WriteOp::AppendAudit`] appends to the hash-chained audit log
//! (`audit.rs`): put it in the same unit as the marker of the share it
//! records, and the share is durable only with its entry.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod audit;
#[cfg(any(test, feature = "test-util"))]
mod backend;
mod config;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
mod entry;
mod error;
pub mod file;
mod ids;
mod keyring;
#[cfg(all(test, loom))]
mod loom_model;
mod manager;
mod marker_set;
pub mod metrics;
mod ops;
mod plaintext;
pub mod provider;
mod records;
mod rollback;
mod rotation;
mod schema;
mod seal;
mod store;
mod sync;
mod verify;
mod wait;
mod witness;
mod writer;

pub use audit::{AuditBreak, AuditEntry, AuditHash, AuditHead, AuditReport, GENESIS, entry_hash};
#[cfg(any(test, feature = "test-util"))]
pub use backend::{CrashMode, FaultBackend, FaultPoint, SimDisk};
pub use config::StoreConfig;
pub use entry::{InvalidRecoveryKey, RecoveryPublicKey, RecoverySecretKey};
pub use error::{Error, Recovery, StorageFault};
pub use ids::{
    AuditSeq, CommitmentHash, DekTerm, DkgSessionId, InvalidId, InvalidWalletId, KeyEpoch,
    MetaName, PackageHash, PolicyKey, RecordEpoch, Timestamp, WalletId,
};
#[cfg(any(test, feature = "test-util"))]
pub use manager::DebugKeyAudit;
pub use manager::{KeyChange, KeyChangeAudit, KeyManager, KeyManagerOptions, ProviderHealth};
pub use ops::{Conflict, Marker, OpResult, WriteOp, WriteOutcome};
pub use plaintext::Plaintext;
pub use rollback::{AcceptedRollback, InvalidAcceptedRollback, RollbackPolicy, rollbacks_accepted};
pub use rotation::{DekStatus, KeyringStatus};
pub use schema::RecordTable;
#[cfg(any(test, feature = "test-util"))]
pub use store::SubmitHook;
pub use store::{EncryptedStore, PendingWrite, Store, StoreLocation, StoreOptions};
pub use verify::VerifyReport;
pub use wait::write_wait;
pub use witness::{MemoryWitness, WitnessLocation};
pub use writer::WriterStats;
