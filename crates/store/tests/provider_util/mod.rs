//! Helpers shared by the key provider tests.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use thresig_store::provider::{
    ConfiguredProvider, KekId, KeyProvider, KeyProviderConfig, ProviderError,
};
use zeroize::Zeroizing;

/// An environment made of `pairs`, so tests never touch the process's own.
pub(crate) fn env_of(
    pairs: &[(&str, &str)],
) -> impl Fn(&str) -> Option<Zeroizing<Vec<u8>>> + use<> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| map.get(name).map(|v| Zeroizing::new(v.as_bytes().to_vec()))
}

/// Parses `[key_provider]` from `toml` and opens it against `pairs`.
pub(crate) fn open(
    toml: &str,
    pairs: &[(&str, &str)],
) -> Result<ConfiguredProvider, ProviderError> {
    KeyProviderConfig::from_toml(toml)?.open_with(&env_of(pairs))
}

/// Writes `contents` to `path` created with `mode` (the umask cannot widen
/// or narrow it: the mode is set again after writing).
pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes an executable script and returns its path.
pub(crate) fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    write_file(&path, body, 0o700);
    path
}

/// A 32-byte key whose bytes are `seed, seed+1, ...`, in hex.
pub(crate) fn key_hex(seed: u8) -> String {
    hex::encode(key_bytes(seed))
}

/// A 32-byte key whose bytes are `seed, seed+1, ...`.
pub(crate) fn key_bytes(seed: u8) -> [u8; 32] {
    std::array::from_fn(|i| seed.wrapping_add(i as u8))
}

/// `sha256:` + hex(sha256(key)), the default id of a key.
pub(crate) fn default_id(key: &[u8; 32]) -> KekId {
    use sha2::Digest as _;
    KekId::new(format!("sha256:{}", hex::encode(sha2::Sha256::digest(key)))).unwrap()
}

/// Wraps a DEK under `kek` and checks it unwraps to the same bytes.
pub(crate) fn round_trip(provider: &dyn KeyProvider, kek: &KekId) -> Vec<u8> {
    let dek = [0x5au8; 32];
    let wrapped = provider.wrap(kek, &dek).unwrap();
    assert_ne!(wrapped.as_slice(), dek.as_slice());
    assert_eq!(provider.unwrap(kek, &wrapped).unwrap().as_slice(), &dek);
    wrapped
}

/// The id `text`, which tests know to be valid.
pub(crate) fn id(text: &str) -> KekId {
    KekId::new(text).unwrap()
}
