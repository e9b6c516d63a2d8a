//! The `[key_provider]` configuration section: parsed with serde (unknown
//! fields refused), validated into typed settings, then opened into a
//! [`KeyProvider`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::command::CommandProvider;
use super::env::EnvProvider;
use super::file::FileProvider;
use super::{ConfigProblem, KekId, KeyProvider, ProviderError};
use crate::metrics::provider_call;

/// The kinds of key provider (`kind = "..."`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProviderKind {
    /// The key is in an environment variable.
    Env,
    /// The key is in a file, or in a directory of versioned key files.
    File,
    /// An external program (a KMS or HSM client) holds or gives the key.
    Command,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Env => "env",
            Self::File => "file",
            Self::Command => "command",
        })
    }
}

/// How a `command` provider uses its program (`mode = "..."`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[non_exhaustive]
pub enum CommandMode {
    /// `wrap`: the program wraps and unwraps data keys itself; the KEK never
    /// leaves the KMS.
    #[serde(rename = "wrap")]
    Wrap,
    /// `get-key`: the program gives the KEK bytes (`get-key`), and the store
    /// wraps locally.
    #[serde(rename = "get-key")]
    GetKey,
    /// `raw`: a legacy program that prints only the key in hex; its id is
    /// derived from the key, so learning the id runs the program.
    #[serde(rename = "raw")]
    Raw,
}

/// The longest a `command` provider may be given per call, in seconds: a KMS
/// call slower than five minutes is an outage, not latency.
const MAX_TIMEOUT_SECS: u64 = 300;
/// The default per-call timeout, in seconds (DESIGN.md §3).
const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// The `[key_provider]` table as written in the configuration file.
///
/// Deserialize it as part of the signer's configuration, then call
/// [`KeyProviderSection::validate`]. Every field is optional here; which ones
/// are required or allowed depends on `kind` and is checked by `validate`,
/// so a mistake gets a message naming the field. Holds no secrets (only
/// variable names, paths and argv).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyProviderSection {
    kind: ProviderKind,
    recovery_public_key: Option<String>,
    // env
    variable: Option<String>,
    previous: Option<Vec<PreviousKeySection>>,
    // env and file (single key file)
    key_id: Option<String>,
    // file
    path: Option<PathBuf>,
    directory: Option<PathBuf>,
    // command
    command: Option<Vec<String>>,
    mode: Option<CommandMode>,
    timeout_secs: Option<u64>,
    pass_env: Option<Vec<String>>,
}

/// One entry of an `env` provider's `previous` list.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviousKeySection {
    variable: String,
    key_id: Option<String>,
}

/// The validated `[key_provider]` section: which provider to open, and the
/// offline recovery public key if one is configured.
///
/// Holds no secrets: variables are read, and files and programs used, only
/// by [`KeyProviderConfig::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyProviderConfig {
    settings: Settings,
    recovery_public_key: Option<RecoveryPublicKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Settings {
    Env(EnvSettings),
    File(FileSettings),
    Command(CommandSettings),
}

/// A variable holding a key, and the key's id if given explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EnvKey {
    pub(crate) variable: String,
    pub(crate) key_id: Option<KekId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EnvSettings {
    pub(crate) current: EnvKey,
    pub(crate) previous: Vec<EnvKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FileSettings {
    Single {
        path: PathBuf,
        key_id: Option<KekId>,
    },
    Directory {
        path: PathBuf,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommandSettings {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) mode: CommandMode,
    pub(crate) timeout: Duration,
    pub(crate) pass_env: Vec<String>,
}

/// The X25519 public key that every DEK is also wrapped to (HPKE), so a lost
/// KMS key is not a lost signer. Public: shown freely.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecoveryPublicKey([u8; 32]);

impl RecoveryPublicKey {
    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// [`ConfigProblem::BadRecoveryKey`] for anything else, or the all-zero
    /// point (a placeholder, never a real key).
    pub fn from_hex(text: &str) -> Result<Self, ConfigProblem> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| ConfigProblem::BadRecoveryKey)?;
        if key == [0u8; 32] {
            return Err(ConfigProblem::BadRecoveryKey);
        }
        Ok(Self(key))
    }

    /// The key's 32 bytes (an X25519 `u` coordinate).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for RecoveryPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryPublicKey({})", hex::encode(self.0))
    }
}

/// Where providers read environment variables, once, when they are opened.
///
/// [`ProcessEnvironment`] reads the real environment; tests pass a closure
/// over a map so they never mutate the process environment.
pub trait Environment {
    /// The value of variable `name`, or `None` when it is not set. The value
    /// may be a key, hence the zeroized buffer.
    fn var(&self, name: &str) -> Option<Zeroizing<Vec<u8>>>;
}

impl<F> Environment for F
where
    F: Fn(&str) -> Option<Zeroizing<Vec<u8>>>,
{
    fn var(&self, name: &str) -> Option<Zeroizing<Vec<u8>>> {
        self(name)
    }
}

/// This process's environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<Zeroizing<Vec<u8>>> {
        use std::os::unix::ffi::OsStringExt as _;
        // `into_vec` moves the buffer: the only unzeroized copy left is the
        // environment block itself, which this process cannot clear safely.
        std::env::var_os(name).map(|value| Zeroizing::new(value.into_vec()))
    }
}

fn problem(problem: ConfigProblem) -> ProviderError {
    ProviderError::InvalidConfig { problem }
}

impl KeyProviderConfig {
    /// Parses the `[key_provider]` table of a TOML document and validates
    /// it. Other tables of the document are ignored (they belong to other
    /// sections of the signer's configuration).
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`]: a syntax error (message and line,
    /// without the source excerpt), no section, or any problem
    /// [`KeyProviderSection::validate`] finds.
    pub fn from_toml(document: &str) -> Result<Self, ProviderError> {
        #[derive(Deserialize)]
        struct Document {
            key_provider: Option<KeyProviderSection>,
        }
        let parsed: Document = toml::from_str(document).map_err(|e| {
            let line = e.span().map_or(0, |span| {
                let before = document.get(..span.start).unwrap_or(document);
                before.matches('\n').count() + 1
            });
            problem(ConfigProblem::Syntax {
                message: without_values(e.message()),
                line,
            })
        })?;
        parsed
            .key_provider
            .ok_or_else(|| problem(ConfigProblem::MissingSection))?
            .validate()
    }

    /// Which kind of provider this is.
    pub fn kind(&self) -> ProviderKind {
        match self.settings {
            Settings::Env(_) => ProviderKind::Env,
            Settings::File(_) => ProviderKind::File,
            Settings::Command(_) => ProviderKind::Command,
        }
    }

    /// The offline recovery public key, when configured.
    pub fn recovery_public_key(&self) -> Option<&RecoveryPublicKey> {
        self.recovery_public_key.as_ref()
    }

    /// Opens the provider, reading variables from this process's
    /// environment (the `env` key variables, the `command` allowlist). The
    /// environment is read here and never again.
    ///
    /// # Errors
    /// As for [`KeyProviderConfig::open_with`].
    pub fn open(&self) -> Result<ConfiguredProvider, ProviderError> {
        self.open_with(&ProcessEnvironment)
    }

    /// Opens the provider, reading variables from `env`.
    ///
    /// `env` providers read and check every key now; `file` providers check
    /// that the current key file can be read (its mode and owner included);
    /// `command` providers only capture their allowlisted variables, and run
    /// their program on the first call.
    ///
    /// # Errors
    /// [`ProviderError::BadKey`] for a missing, empty, short, long, malformed
    /// or all-zero `env` key; [`ProviderError::InvalidConfig`] for two keys
    /// with the same id; [`ProviderError::KeyFile`] for an unusable key file
    /// or directory.
    pub fn open_with(&self, env: &dyn Environment) -> Result<ConfiguredProvider, ProviderError> {
        Ok(ConfiguredProvider(match &self.settings {
            Settings::Env(settings) => Opened::Env(EnvProvider::new(settings, env)?),
            Settings::File(settings) => Opened::File(FileProvider::new(settings.clone())?),
            Settings::Command(settings) => {
                Opened::Command(CommandProvider::new(settings.clone(), env))
            }
        }))
    }
}

/// The provider a [`KeyProviderConfig`] opened. Use it through
/// [`KeyProvider`] (wrap it in an `Arc` to share it with the key manager).
/// Its `Debug` shows settings and key ids, never key bytes or the values of
/// passed-through variables.
#[derive(Debug)]
pub struct ConfiguredProvider(Opened);

#[derive(Debug)]
enum Opened {
    Env(EnvProvider),
    File(FileProvider),
    Command(CommandProvider),
}

impl ConfiguredProvider {
    fn inner(&self) -> &dyn KeyProvider {
        match &self.0 {
            Opened::Env(provider) => provider,
            Opened::File(provider) => provider,
            Opened::Command(provider) => provider,
        }
    }
}

/// Every call is counted and timed (`crate::metrics`): the configured
/// provider is the one a signer runs with, whatever its kind.
impl KeyProvider for ConfiguredProvider {
    fn current_kek_id(&self) -> Result<KekId, ProviderError> {
        provider_call("current_kek_id", || self.inner().current_kek_id())
    }

    fn wrap(&self, kek: &KekId, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError> {
        provider_call("wrap", || self.inner().wrap(kek, plaintext))
    }

    fn unwrap(&self, kek: &KekId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        provider_call("unwrap", || self.inner().unwrap(kek, wrapped))
    }
}

impl KeyProviderSection {
    /// Checks the section against its kind and builds typed settings.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] naming the field: a setting the kind
    /// requires is missing, a setting of another kind is present, `path` and
    /// `directory` are both given, an id or variable name is invalid, the
    /// program is not an absolute path, `timeout_secs` is outside 1..=300,
    /// or the recovery key is not 64 hex digits.
    pub fn validate(self) -> Result<KeyProviderConfig, ProviderError> {
        let recovery_public_key = self
            .recovery_public_key
            .as_deref()
            .map(RecoveryPublicKey::from_hex)
            .transpose()
            .map_err(problem)?;
        self.check_applicable()?;
        let settings = match self.kind {
            ProviderKind::Env => Settings::Env(self.env_settings()?),
            ProviderKind::File => Settings::File(self.file_settings()?),
            ProviderKind::Command => Settings::Command(self.command_settings()?),
        };
        Ok(KeyProviderConfig {
            settings,
            recovery_public_key,
        })
    }

    /// Refuses any setting that belongs to other kinds than `kind`.
    fn check_applicable(&self) -> Result<(), ProviderError> {
        use ProviderKind::{Command, Env, File};
        let settings: [(&'static str, bool, &[ProviderKind]); 9] = [
            ("variable", self.variable.is_some(), &[Env]),
            ("previous", self.previous.is_some(), &[Env]),
            ("key_id", self.key_id.is_some(), &[Env, File]),
            ("path", self.path.is_some(), &[File]),
            ("directory", self.directory.is_some(), &[File]),
            ("command", self.command.is_some(), &[Command]),
            ("mode", self.mode.is_some(), &[Command]),
            ("timeout_secs", self.timeout_secs.is_some(), &[Command]),
            ("pass_env", self.pass_env.is_some(), &[Command]),
        ];
        match settings
            .iter()
            .find(|(_, present, kinds)| *present && !kinds.contains(&self.kind))
        {
            Some((field, ..)) => Err(self.not_applicable(field)),
            None => Ok(()),
        }
    }

    fn not_applicable(&self, field: &'static str) -> ProviderError {
        problem(ConfigProblem::NotApplicable {
            kind: self.kind,
            field,
        })
    }

    fn require<T>(&self, value: Option<T>, field: &'static str) -> Result<T, ProviderError> {
        value.ok_or_else(|| {
            problem(ConfigProblem::Missing {
                kind: self.kind,
                field,
            })
        })
    }

    fn env_settings(&self) -> Result<EnvSettings, ProviderError> {
        let current = EnvKey {
            variable: variable_name(self.require(self.variable.clone(), "variable")?, "variable")?,
            key_id: key_id(self.key_id.as_deref(), "key_id")?,
        };
        let previous = self
            .previous
            .iter()
            .flatten()
            .map(|entry| {
                Ok(EnvKey {
                    variable: variable_name(entry.variable.clone(), "previous.variable")?,
                    key_id: key_id(entry.key_id.as_deref(), "previous.key_id")?,
                })
            })
            .collect::<Result<Vec<_>, ProviderError>>()?;
        Ok(EnvSettings { current, previous })
    }

    fn file_settings(&self) -> Result<FileSettings, ProviderError> {
        match (&self.path, &self.directory) {
            (Some(path), None) => Ok(FileSettings::Single {
                path: path.clone(),
                key_id: key_id(self.key_id.as_deref(), "key_id")?,
            }),
            (None, Some(path)) => {
                // A directory's ids are its file names.
                if self.key_id.is_some() {
                    return Err(self.not_applicable("key_id"));
                }
                Ok(FileSettings::Directory { path: path.clone() })
            }
            (Some(_), Some(_)) => Err(problem(ConfigProblem::Conflict {
                first: "path",
                second: "directory",
            })),
            (None, None) => self.require(None, "path"),
        }
    }

    fn command_settings(&self) -> Result<CommandSettings, ProviderError> {
        let argv = self.require(self.command.as_ref(), "command")?;
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| problem(ConfigProblem::EmptyCommand))?;
        if argv.iter().any(|arg| arg.contains('\0')) {
            return Err(problem(ConfigProblem::NulInArgument));
        }
        let program = PathBuf::from(program);
        if !program.is_absolute() {
            return Err(problem(ConfigProblem::RelativeProgram { program }));
        }
        let secs = self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
            return Err(problem(ConfigProblem::TimeoutOutOfRange { secs }));
        }
        let pass_env = self
            .pass_env
            .iter()
            .flatten()
            .map(|name| variable_name(name.clone(), "pass_env"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CommandSettings {
            program,
            args: args.to_vec(),
            mode: self.require(self.mode, "mode")?,
            timeout: Duration::from_secs(secs),
            pass_env,
        })
    }
}

/// The parser's message without the offending value: serde quotes it in
/// "invalid type: string \"...\", expected u64" and in "unknown variant",
/// and a key pasted into the wrong setting must not reach a log. Field
/// names (in "unknown field `...`") are kept: they are what to fix.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // "string \"x\", expected u64" -> "string, expected u64";
            // "`x`, expected one of ..." -> ", expected one of ...".
            let kind = rest
                .split([' ', ','])
                .next()
                .filter(|w| !w.starts_with('`'));
            // The last ", expected" is serde's own; the value comes before.
            let expected = rest
                .rfind(", expected")
                .map_or("", |at| rest.get(at..).unwrap_or(""));
            return format!(
                "{}{}{expected}",
                prefix.trim_end(),
                kind.map(|k| format!(" {k}")).unwrap_or_default()
            );
        }
    }
    message.to_owned()
}

fn variable_name(name: String, field: &'static str) -> Result<String, ProviderError> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(problem(ConfigProblem::BadVariableName { field }));
    }
    Ok(name)
}

fn key_id(id: Option<&str>, field: &'static str) -> Result<Option<KekId>, ProviderError> {
    id.map(|id| KekId::new(id).map_err(|_| problem(ConfigProblem::BadKeyId { field })))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_messages_lose_their_values() {
        let cases = [
            (
                r#"invalid type: string "c0ffee, expected", expected u64"#,
                "invalid type: string, expected u64",
            ),
            (
                "invalid value: integer `123`, expected a nonzero u64",
                "invalid value: integer, expected a nonzero u64",
            ),
            (
                "unknown variant `c0ffee`, expected one of `env`, `file`",
                "unknown variant, expected one of `env`, `file`",
            ),
            (
                "unknown field `key`, expected `kind`",
                "unknown field `key`, expected `kind`",
            ),
        ];
        for (message, cleaned) in cases {
            assert_eq!(without_values(message), cleaned);
        }
    }
}
