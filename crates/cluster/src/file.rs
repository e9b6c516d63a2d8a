//! Reading a file named on the command line (`--config`, `--psbt`,
//! `--inputs-file`, `--recovery-key`): the store's bounded reader, which
//! the daemon's TLS files also go through, and the limits of this crate's
//! files.

pub use thresig_store::file::{FileError, open_regular, read_bounded};

/// The largest PSBT file, or list of a transaction's inputs, read. A
/// standard transaction weighs at most 400,000 units (100 kB); its PSBT,
/// even carrying a whole previous transaction for every input, stays a few
/// MiB, so anything larger is the wrong file.
pub const MAX_TRANSACTION_FILE_BYTES: u64 = 16 << 20;
