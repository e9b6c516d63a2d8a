//! The `file` provider: the KEK in a key file, or versioned KEKs in a
//! directory, re-read from disk on every call.
//!
//! Rules (documented for operators in `docs/key-providers.md`):
//! - A key file holds one key in hex or base64, must be a regular file of
//!   mode 0600 or stricter owned by this process's user. The checks are made
//!   on the opened file (`fstat`), so swapping a path between check and read
//!   cannot bypass them. Symbolic links are followed; the checks apply to the
//!   file they lead to.
//! - In a directory, key `<id>` is the file `<id>.key`. The current key is the
//!   one named by the file `current`, or else the one whose id ends in the
//!   highest decimal number. The directory and `current` must not be
//!   writable by group or others, and belong to this user or root.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use nix::fcntl::OFlag;
use zeroize::Zeroizing;

use super::config::FileSettings;
use super::keytext::{CappedReadError, decode_key, local_kek, read_capped};
use super::{KekId, KeyFileProblem, KeyOrigin, KeyProvider, LocalKek, ProviderError};

/// The largest key file read: a key is 64 hex characters, so anything near
/// this is not a key file.
const MAX_KEY_FILE: usize = 4096;
/// The largest `current` file read: an id is at most 128 bytes.
const MAX_CURRENT_FILE: usize = 256;
/// Name of the file that selects the current key in a key directory.
const CURRENT_FILE: &str = "current";
const KEY_SUFFIX: &str = ".key";

/// Reads its key file or key directory on every call, so a rotation on disk
/// is seen at the next poll and a removed version is gone at once.
#[derive(Debug)]
pub(crate) struct FileProvider {
    settings: FileSettings,
    /// This process's effective uid, which must own key files.
    uid: u32,
}

/// How strictly an opened file is checked.
#[derive(Clone, Copy)]
enum FileRole {
    /// Holds key bytes: mode 0600 or stricter, owned by us.
    Secret,
    /// Chooses a key but holds none (`current`): not writable by others,
    /// owned by us or root.
    Selector,
}

impl FileProvider {
    /// Opens the provider and reads its current key once, so a bad file is
    /// reported at configuration load rather than at first use.
    ///
    /// # Errors
    /// As for [`KeyProvider::current_kek_id`].
    pub(crate) fn new(settings: FileSettings) -> Result<Self, ProviderError> {
        let provider = Self {
            settings,
            uid: nix::unistd::geteuid().as_raw(),
        };
        provider.current()?;
        Ok(provider)
    }

    fn current(&self) -> Result<LocalKek, ProviderError> {
        match &self.settings {
            FileSettings::Single { path, key_id } => self.read_kek(path, key_id.as_ref()),
            FileSettings::Directory { path } => {
                self.check_owner_and_writers(path, &path.metadata(), FileRole::Selector)?;
                let id = self.current_id(path)?;
                let file = path.join(format!("{id}{KEY_SUFFIX}"));
                self.read_kek(&file, Some(&id)).map_err(|e| {
                    if is_not_found(&e) {
                        ProviderError::KeyFile {
                            path: path.join(CURRENT_FILE),
                            problem: KeyFileProblem::CurrentMissing { kek: id },
                        }
                    } else {
                        e
                    }
                })
            }
        }
    }

    fn load(&self, kek: &KekId) -> Result<LocalKek, ProviderError> {
        let unknown = || ProviderError::UnknownKek { kek: kek.clone() };
        match &self.settings {
            FileSettings::Single { .. } => {
                let current = self.current()?;
                if current.id() == kek {
                    Ok(current)
                } else {
                    Err(unknown())
                }
            }
            FileSettings::Directory { path } => {
                if !is_file_id(kek.as_str()) {
                    return Err(unknown());
                }
                self.check_owner_and_writers(path, &path.metadata(), FileRole::Selector)?;
                let file = path.join(format!("{kek}{KEY_SUFFIX}"));
                self.read_kek(&file, Some(kek))
                    .map_err(|e| if is_not_found(&e) { unknown() } else { e })
            }
        }
    }

    fn read_kek(&self, path: &Path, id: Option<&KekId>) -> Result<LocalKek, ProviderError> {
        let text = self.read_checked(path, FileRole::Secret, MAX_KEY_FILE)?;
        let key = decode_key(&text, || KeyOrigin::File {
            path: path.to_owned(),
        })?;
        local_kek(id, key)
    }

    /// The id named by `current`, or the highest-numbered key file.
    fn current_id(&self, dir: &Path) -> Result<KekId, ProviderError> {
        let current = dir.join(CURRENT_FILE);
        match self.read_checked(&current, FileRole::Selector, MAX_CURRENT_FILE) {
            Ok(text) => std::str::from_utf8(text.trim_ascii())
                .ok()
                .filter(|id| is_file_id(id))
                .and_then(|id| KekId::new(id).ok())
                .ok_or(ProviderError::KeyFile {
                    path: current,
                    problem: KeyFileProblem::BadCurrent,
                }),
            Err(e) if is_not_found(&e) => highest_version(dir),
            Err(other) => Err(other),
        }
    }

    /// Opens `path` without blocking (a FIFO must not hang the caller),
    /// checks the opened file for `role`, and reads at most `cap` bytes.
    fn read_checked(
        &self,
        path: &Path,
        role: FileRole,
        cap: usize,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let fail = |problem| ProviderError::KeyFile {
            path: path.to_owned(),
            problem,
        };
        let file: File = OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|e| fail(KeyFileProblem::Io { kind: e.kind() }))?;
        let metadata = file.metadata();
        if let Ok(meta) = &metadata
            && !meta.is_file()
        {
            return Err(fail(KeyFileProblem::NotRegular));
        }
        self.check_owner_and_writers(path, &metadata, role)?;
        read_capped(file, cap).map_err(|e| {
            fail(match e {
                CappedReadError::TooLarge => KeyFileProblem::TooLarge { limit: cap },
                CappedReadError::Io(kind) => KeyFileProblem::Io { kind },
            })
        })
    }

    fn check_owner_and_writers(
        &self,
        path: &Path,
        metadata: &io::Result<std::fs::Metadata>,
        role: FileRole,
    ) -> Result<(), ProviderError> {
        let fail = |problem| ProviderError::KeyFile {
            path: path.to_owned(),
            problem,
        };
        let meta = metadata
            .as_ref()
            .map_err(|e| fail(KeyFileProblem::Io { kind: e.kind() }))?;
        let mode = meta.mode() & 0o7777;
        let owner = meta.uid();
        match role {
            FileRole::Secret => {
                if mode & 0o077 != 0 {
                    return Err(fail(KeyFileProblem::Insecure { mode }));
                }
                if owner != self.uid {
                    return Err(fail(KeyFileProblem::NotOwned {
                        owner,
                        expected: self.uid,
                    }));
                }
            }
            FileRole::Selector => {
                if mode & 0o022 != 0 {
                    return Err(fail(KeyFileProblem::WritableByOthers { mode }));
                }
                if owner != self.uid && owner != 0 {
                    return Err(fail(KeyFileProblem::NotOwned {
                        owner,
                        expected: self.uid,
                    }));
                }
            }
        }
        Ok(())
    }
}

/// Whether `e` says that a file does not exist.
fn is_not_found(e: &ProviderError) -> bool {
    matches!(
        e,
        ProviderError::KeyFile {
            problem: KeyFileProblem::Io {
                kind: io::ErrorKind::NotFound
            },
            ..
        }
    )
}

/// Whether `id` can name a file in the key directory: letters, digits, `.`,
/// `_` and `-`, not starting with `.` (so no `..`, no path separator, no
/// hidden file).
fn is_file_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The trailing decimal number of an id (`v12` → 12, `2026-03` → 3).
fn trailing_version(id: &str) -> Option<u128> {
    let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    id.get(id.len() - digits..)?.parse().ok()
}

/// The current key of a directory without `current`: the `<id>.key` whose
/// id ends in the highest number. Files that are not `<id>.key` with a
/// valid id (including hidden files) are ignored.
fn highest_version(dir: &Path) -> Result<KekId, ProviderError> {
    let fail = |problem| ProviderError::KeyFile {
        path: dir.to_owned(),
        problem,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| fail(KeyFileProblem::Io { kind: e.kind() }))?;
    let mut best: Option<(u128, KekId)> = None;
    let mut tied = false;
    for entry in entries {
        let entry = entry.map_err(|e| fail(KeyFileProblem::Io { kind: e.kind() }))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|name| name.strip_suffix(KEY_SUFFIX))
            .filter(|id| is_file_id(id))
            .and_then(|id| KekId::new(id).ok())
        else {
            continue;
        };
        let version =
            trailing_version(id.as_str()).ok_or_else(|| fail(KeyFileProblem::AmbiguousCurrent))?;
        match &best {
            Some((top, _)) if *top > version => {}
            Some((top, _)) if *top == version => tied = true,
            _ => {
                best = Some((version, id));
                tied = false;
            }
        }
    }
    match best {
        None => Err(fail(KeyFileProblem::NoKeys)),
        Some(_) if tied => Err(fail(KeyFileProblem::AmbiguousCurrent)),
        Some((_, id)) => Ok(id),
    }
}

impl KeyProvider for FileProvider {
    fn current_kek_id(&self) -> Result<KekId, ProviderError> {
        Ok(self.current()?.id().clone())
    }

    fn wrap(&self, kek: &KekId, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError> {
        self.load(kek)?.wrap(plaintext)
    }

    fn unwrap(&self, kek: &KekId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.load(kek)?.unwrap(wrapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_cannot_escape_the_directory() {
        assert!(is_file_id("v1"));
        assert!(is_file_id("kek-2026.03_b"));
        for bad in ["", ".", "..", "../v1", "a/b", ".hidden", "sha256:ab", "a b"] {
            assert!(!is_file_id(bad), "{bad}");
        }
    }

    #[test]
    fn versions_are_trailing_numbers() {
        assert_eq!(trailing_version("v12"), Some(12));
        assert_eq!(trailing_version("2026-03"), Some(3));
        assert_eq!(trailing_version("007"), Some(7));
        assert_eq!(trailing_version("latest"), None);
    }
}
