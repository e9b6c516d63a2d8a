//! Reading a file named on the command line (`--config`, `--psbt`,
//! `--inputs-file`, `--recovery-key`): only a regular file, and only up to
//! a limit, so a device such as `/dev/zero`, a FIFO or a wrong, huge file is refused
//! instead of filling memory or blocking the command.

use std::fs::{File, Metadata};
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use thresig_store::Recovery;

/// The largest PSBT file, or list of a transaction's inputs, read. A
/// standard transaction weighs at most 400,000 units (100 kB); its PSBT,
/// even carrying a whole previous transaction for every input, stays a few
/// MiB, so anything larger is the wrong file.
pub const MAX_TRANSACTION_FILE_BYTES: u64 = 16 << 20;

/// Why a file named on the command line was not read. Every variant names
/// the path; none quotes the file's contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be opened or read (retryable: a permission or a
    /// disk fixed, the same command can succeed).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path names something other than a regular file (a directory, a
    /// device, a FIFO, a socket): refused before anything is read from it.
    #[error("{}: not a regular file; pass the path of the file itself", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The file is larger than the limit for its kind.
    #[error("{}: larger than {limit} bytes, more than any such file holds", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
}

impl FileError {
    /// Whether reading again can succeed without another file: only when
    /// the file could not be read.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Read { .. } => Recovery::Retryable,
            _ => Recovery::Terminal,
        }
    }
}

/// Opens the regular file at `path` for reading, with its metadata taken
/// from the opened file (for a caller that checks more, such as its mode,
/// before reading; [`read_bounded`] reads it whole).
///
/// The type is checked before opening, since opening a device can act (a
/// watchdog arms, a tape rewinds) and a socket cannot be opened at all; it
/// is checked again on the opened file, so nothing swapped in at the path in
/// between is read. The file is opened without blocking and without
/// becoming a controlling terminal, so a FIFO or a terminal swapped in is
/// refused instead of waited on.
///
/// # Errors
/// [`FileError::Read`] or [`FileError::NotAFile`], naming `path`.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), FileError> {
    let read = |source| FileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let not_a_file = || FileError::NotAFile {
        path: path.to_path_buf(),
    };
    if !std::fs::metadata(path).map_err(read)?.is_file() {
        return Err(not_a_file());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(not_a_file());
    }
    Ok((file, meta))
}

/// Reads the regular file at `path` ([`open_regular`]), at most `limit`
/// bytes.
///
/// # Errors
/// [`FileError`], naming `path`.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let (file, _) = open_regular(path)?;
    // One byte past the limit tells a file that is too large (or grew
    // since it was opened) from one that fits.
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > limit) {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_a_directory_and_a_fifo_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for path in [Path::new("/dev/zero"), dir.path(), &fifo] {
            let e = read_bounded(path, 1).unwrap_err();
            assert!(matches!(e, FileError::NotAFile { .. }), "{e}");
            assert_eq!(e.recovery(), Recovery::Terminal);
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn a_file_one_byte_over_the_limit_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_bounded(&path, 5).unwrap(), b"12345");
        let e = read_bounded(&path, 4).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { limit: 4, .. }), "{e}");
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let path = Path::new("/nonexistent/thresig-file");
        let e = read_bounded(path, 1).unwrap_err();
        assert!(matches!(e, FileError::Read { .. }), "{e}");
        assert_eq!(e.recovery(), Recovery::Retryable);
        assert!(e.to_string().contains("/nonexistent/thresig-file"), "{e}");
    }
}
