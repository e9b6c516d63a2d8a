//! The signer's TOML configuration file.
//!
//! Sections that exist today: `[store]` (the store's [`StoreConfig`]) and
//! `[key_provider]` (the store's [`KeyProviderSection`]), each used as its
//! crate defines it. Later work adds `[daemon]`, the
//! network and `[[wallets]]` here. Unknown fields are refused everywhere, and
//! every error names the file and the field. Operators' documentation:
//! `docs/configuration.md`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thresig_store::provider::{KeyProviderConfig, KeyProviderSection, ProviderError};
use thresig_store::{RecoveryPublicKey, StoreConfig, StoreLocation, StoreOptions};

/// The largest configuration file read: a configuration is a few hundred
/// bytes, so anything near this is the wrong file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    store: StoreConfig,
    key_provider: KeyProviderSection,
}

/// A validated configuration.
#[derive(Debug)]
pub(crate) struct Config {
    /// The database directory (absolute; a relative `data_dir` is taken
    /// from the configuration file's directory).
    pub(crate) data_dir: PathBuf,
    /// Store settings, the recovery public key included.
    pub(crate) options: StoreOptions,
    /// The validated `[key_provider]` section.
    pub(crate) key_provider: KeyProviderConfig,
}

/// Why a configuration file was refused. Every variant names the file;
/// none quotes a value from it (a key pasted into the wrong setting must not
/// reach a terminal or a log).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("configuration {}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any configuration.
    #[error("configuration {}: larger than {MAX_CONFIG_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    /// TOML syntax, a missing or unknown field, or a value of the wrong type.
    #[error("configuration {}, line {line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A field has a value outside what it accepts.
    #[error("configuration {}: `{field}` {problem}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
    /// The `[key_provider]` section is invalid (its error names the field).
    #[error("configuration {}: {source}", path.display())]
    KeyProvider {
        path: PathBuf,
        #[source]
        source: ProviderError,
    },
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`], naming the file and the field.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        if std::fs::metadata(path).map_err(read)?.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(path, &text)
    }

    /// Validates `text`, read from `path`.
    fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.span().map_or(0, |span| {
                text.get(..span.start).unwrap_or(text).matches('\n').count() + 1
            }),
            message: without_quoted_values(e.message()),
        })?;
        let invalid = |field: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_owned(),
            problem,
        };
        let key_provider =
            file.key_provider
                .validate()
                .map_err(|source| ConfigError::KeyProvider {
                    path: path.to_path_buf(),
                    source,
                })?;
        let mut store = file.store;
        if store.data_dir.as_os_str().is_empty() {
            return Err(invalid("store.data_dir", "must not be empty".to_owned()));
        }
        if let Some(base) = path.parent().filter(|_| store.data_dir.is_relative()) {
            store.data_dir = base.join(&store.data_dir);
        }
        let mut options = store.options().map_err(|e| match e {
            thresig_store::Error::InvalidConfig { field } => invalid(
                &format!("store.{field}"),
                "is out of range (see docs/configuration.md)".to_owned(),
            ),
            other => invalid("store", other.to_string()),
        })?;
        // The provider section checked the hex; the store checks the point.
        options.recovery_key = key_provider
            .recovery_public_key()
            .map(|k| RecoveryPublicKey::from_bytes(*k.as_bytes()))
            .transpose()
            .map_err(|_| {
                invalid(
                    "key_provider.recovery_public_key",
                    "is not a usable X25519 public key".to_owned(),
                )
            })?;
        Ok(Self {
            data_dir: store.data_dir,
            options,
            key_provider,
        })
    }

    /// Where the store lives.
    pub(crate) fn location(&self) -> StoreLocation {
        StoreLocation::Directory(self.data_dir.clone())
    }
}

/// The parser's message with quoted values removed: serde quotes the
/// offending value (`invalid type: string "…"`, ``unknown variant `…` ``),
/// and that value could be a key pasted into the wrong setting. Field names
/// are kept only in the messages that are about fields.
fn without_quoted_values(message: &str) -> String {
    let about_fields = ["unknown field", "missing field", "duplicate key"]
        .iter()
        .any(|p| message.starts_with(p));
    if about_fields {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len());
    let mut quote = None;
    for c in message.chars() {
        match (quote, c) {
            (None, '"' | '`') => {
                quote = Some(c);
                out.push_str("(value not shown)");
            }
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, _) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/thresig/signer.toml"), text)
    }

    const PROVIDER: &str = "[key_provider]\nkind = \"env\"\nvariable = \"KEK\"\n";

    #[test]
    fn minimal_config_uses_store_defaults_and_resolves_relative_dir() {
        let c = parse(&format!("[store]\ndata_dir = \"state\"\n{PROVIDER}")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/thresig/state"));
        assert_eq!(c.options.max_batch, StoreOptions::default().max_batch);
        assert!(c.options.recovery_key.is_none());
    }

    #[test]
    fn batch_settings_are_applied_and_bounded() {
        let c = parse(&format!(
            "[store]\ndata_dir = \"/var/lib/thresig\"\nmax_batch = 8\nreseal_batch = 3\n{PROVIDER}"
        ))
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/thresig"));
        assert_eq!((c.options.max_batch, c.options.reseal_batch), (8, 3));
        let e = parse(&format!(
            "[store]\ndata_dir = \"d\"\nmax_batch = 0\n{PROVIDER}"
        ))
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "store.max_batch"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_file_and_line() {
        let e = parse(&format!("[store]\ndata_dir = \"d\"\ncache = 1\n{PROVIDER}")).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ConfigError::Parse { line: 3, .. }), "{text}");
        assert!(
            text.contains("signer.toml") && text.contains("`cache`"),
            "{text}"
        );
        let e =
            parse("[store]\ndata_dir = \"d\"\n[key_provider]\nkind = \"env\"\nvarible = \"K\"\n")
                .unwrap_err();
        assert!(e.to_string().contains("`varible`"), "{e}");
    }

    #[test]
    fn wrong_typed_values_are_not_echoed() {
        let e = parse(&format!(
            "[store]\ndata_dir = \"d\"\nmax_batch = \"c0ffeec0ffee\"\n{PROVIDER}"
        ))
        .unwrap_err();
        assert!(!e.to_string().contains("c0ffee"), "{e}");
        assert!(matches!(e, ConfigError::Parse { line: 3, .. }), "{e}");
    }

    #[test]
    fn provider_problems_name_the_file() {
        let e = parse("[store]\ndata_dir = \"d\"\n[key_provider]\nkind = \"env\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::KeyProvider { .. }), "{e}");
        assert!(e.to_string().contains("signer.toml"), "{e}");
    }

    #[test]
    fn recovery_key_reaches_store_options() {
        let (_, pk) = thresig_store::RecoverySecretKey::generate(&mut rand_core::OsRng);
        let c = parse(&format!(
            "[store]\ndata_dir = \"d\"\n{PROVIDER}recovery_public_key = \"{}\"\n",
            hex::encode(pk.to_bytes())
        ))
        .unwrap();
        assert_eq!(c.options.recovery_key, Some(pk));
    }
}
