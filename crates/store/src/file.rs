//! Reading a file an operator names (a configuration, a PSBT, a list of
//! inputs, a recovery key, the daemon's TLS certificates and key): only a
//! regular file, and only up to a limit, so a device such as `/dev/zero`, a
//! FIFO or a wrong, huge file is refused instead of filling memory or
//! blocking the process.

use std::fs::{File, Metadata};
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::error::Recovery;

/// Why a file an operator named was not read. Every variant names
/// the path; none quotes the file's contents.
///
/// Exhaustive on purpose: each caller (configuration, TLS files, the
/// command line) maps every case to its own error and advice, and a new
/// case must make each of them decide.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read. Terminal when the path is
    /// wrong or not readable by this user (not found, permission denied:
    /// the operator must fix the path or the file); retryable only for a
    /// transient failure (interrupted, would block, timed out).
    #[error(
        "{}: cannot read: {source}; {}",
        path.display(),
        if read_again_may_succeed(source) {
            "run the command again"
        } else {
            "check the path and that this user may read the file"
        }
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path names something other than a regular file (a directory, a
    /// device, a FIFO, a socket): refused before anything is read from it.
    #[error(
        "{}: not a regular file; check the path: pass the path of the file itself",
        path.display()
    )]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The file is larger than the limit for its kind.
    #[error(
        "{}: larger than {limit} bytes, more than any such file holds; check the path",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
}

impl FileError {
    /// Whether reading again can succeed without another path or file:
    /// only after a transient I/O failure. A path that does not exist or
    /// may not be read, something other than a regular file, and a file
    /// too large are the operator's to fix.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Read { source, .. } if read_again_may_succeed(source) => Recovery::Retryable,
            Self::Read { .. } | Self::NotAFile { .. } | Self::TooLarge { .. } => Recovery::Terminal,
        }
    }
}

/// Whether an I/O failure reading a file may pass by itself.
fn read_again_may_succeed(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
    )
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
    let mut bytes = Vec::new();
    read_opened(file, path, limit, &mut bytes)?;
    Ok(bytes)
}

/// Reads `file` (opened by [`open_regular`] from `path`) to its end into
/// `bytes`, at most `limit` bytes: for a caller that checks the file before
/// reading it, or reads it into a buffer of its own (one that zeroizes a
/// secret).
///
/// # Errors
/// [`FileError::Read`] or [`FileError::TooLarge`], naming `path`.
pub fn read_opened(
    file: File,
    path: &Path,
    limit: u64,
    bytes: &mut Vec<u8>,
) -> Result<(), FileError> {
    // The whole read in one allocation, the file's size (and the byte
    // past it that finds its end): growing the buffer as it fills would
    // free copies of a secret's bytes that the caller's zeroizing buffer
    // never sees. At most `limit`, whatever the size says.
    let expected = file.metadata().map_or(0, |meta| meta.len()).min(limit);
    let reserve = usize::try_from(expected.saturating_add(1)).unwrap_or(usize::MAX);
    bytes
        .try_reserve_exact(reserve)
        .map_err(|_| FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        })?;
    // One byte past the limit tells a file that is too large (or grew
    // since it was opened) from one that fits.
    file.take(limit.saturating_add(1))
        .read_to_end(bytes)
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
    Ok(())
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
    fn a_missing_file_is_a_terminal_read_error_naming_it() {
        let path = Path::new("/nonexistent/thresig-file");
        let e = read_bounded(path, 1).unwrap_err();
        assert!(matches!(e, FileError::Read { .. }), "{e}");
        assert_eq!(e.recovery(), Recovery::Terminal);
        assert!(e.to_string().contains("/nonexistent/thresig-file"), "{e}");
        assert!(
            e.to_string()
                .ends_with("check the path and that this user may read the file"),
            "{e}"
        );
    }

    #[test]
    fn only_a_transient_read_failure_is_retryable() {
        use std::io::{Error, ErrorKind};
        let read = |kind| FileError::Read {
            path: PathBuf::from("f"),
            source: Error::from(kind),
        };
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
            ErrorKind::InvalidData,
        ] {
            assert_eq!(read(kind).recovery(), Recovery::Terminal, "{kind:?}");
        }
        for kind in [
            ErrorKind::Interrupted,
            ErrorKind::WouldBlock,
            ErrorKind::TimedOut,
        ] {
            assert_eq!(read(kind).recovery(), Recovery::Retryable, "{kind:?}");
            assert!(
                read(kind).to_string().ends_with("run the command again"),
                "{kind:?}"
            );
        }
    }
}
