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
//! - Errors are one [`Error`] enum; [`Error::recovery`] says whether a retry
//!   can succeed.
//!
//! # Invariants (DESIGN.md section 3)
//! - I1: a record is sealed inside its write transaction under the DEK that
//!   transaction reads as current.
//! - I2: every record names a DEK in the keyring that is not retired.
//! - I3: the key provider is never called on the write path.
//! - I4: records failing authentication are errors, never absent values.
//! - I5: a witness beside the database refuses a rolled-back database.
//! - I6: every error says whether a retry can succeed.
//!
//! # Features
//! - `test-util`: exports test doubles ([`provider::MemoryProvider`], the
//!   fault-injecting backend) for other crates' tests.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(any(test, feature = "test-util"))]
mod backend;
mod entry;
mod error;
mod ids;
mod keyring;
mod manager;
mod ops;
pub mod provider;
mod records;
mod rotation;
mod schema;
mod seal;
mod store;
mod sync;
mod verify;
mod witness;
mod writer;

#[cfg(any(test, feature = "test-util"))]
pub use backend::{CrashMode, FaultBackend, FaultPoint, SimDisk};
pub use entry::{InvalidRecoveryKey, RecoveryPublicKey, RecoverySecretKey};
pub use error::{Error, Recovery, StorageFault};
pub use ids::{
    AuditSeq, CommitmentHash, DekTerm, DkgSessionId, Epoch, InvalidId, MetaName, PackageHash,
    PolicyKey, Timestamp, WalletId,
};
pub use manager::{KeyManager, KeyManagerOptions, ProviderHealth};
pub use ops::{Conflict, Marker, OpResult, WriteOp, WriteOutcome};
pub use rotation::{DekStatus, KeyringStatus};
pub use schema::RecordTable;
#[cfg(any(test, feature = "test-util"))]
pub use store::SubmitHook;
pub use store::{EncryptedStore, Plaintext, RollbackPolicy, Store, StoreLocation, StoreOptions};
pub use verify::VerifyReport;
pub use witness::{MemoryWitness, WitnessLocation};
pub use writer::WriterStats;
