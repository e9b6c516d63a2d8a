//! Why a key provider could not answer, with the recovery class of each cause.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::{KekId, ProviderKind};
use crate::Recovery;

/// Why a key provider could not answer.
///
/// No variant ever holds key material: messages name variables, files,
/// programs and key ids, never key bytes (DESIGN.md §3, invariant I6).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider could not be reached or did not answer in time. Signing
    /// is unaffected; the key manager tries again.
    #[error("key provider unavailable: {reason}")]
    Unavailable {
        /// What went wrong, for the operator. Never contains key material.
        reason: String,
    },
    /// The provider does not have (or no longer has) the named KEK version.
    #[error("key provider has no key {kek}; recover with the offline recovery key")]
    UnknownKek {
        /// The version asked for.
        kek: KekId,
    },
    /// A wrapped key did not authenticate under the named KEK: the key is
    /// wrong, or the wrapped bytes were altered.
    #[error("wrapped key does not authenticate under key {kek}")]
    WrongKek {
        /// The version it was unwrapped with.
        kek: KekId,
    },
    /// The provider's configuration is unusable (a missing or short key, a
    /// key file readable by others, a bad command).
    #[error("key provider misconfigured: {reason}")]
    Misconfigured {
        /// What to fix. Never contains key material.
        reason: String,
    },
    /// The `[key_provider]` configuration section is invalid.
    #[error("invalid [key_provider] configuration: {problem}")]
    InvalidConfig {
        /// What is wrong with it.
        problem: ConfigProblem,
    },
    /// A key value (from a variable, a file or a program) is unusable.
    #[error("key from {origin} is unusable: {problem}")]
    BadKey {
        /// Where the key came from.
        origin: KeyOrigin,
        /// What is wrong with it.
        problem: KeyProblem,
    },
    /// A key file, the key directory or its `current` file is unusable.
    #[error("key file {}: {problem}", path.display())]
    KeyFile {
        /// The file or directory concerned.
        path: PathBuf,
        /// What is wrong with it.
        problem: KeyFileProblem,
    },
    /// An unwrap under `kek` answered with a key of the wrong length. The
    /// provider (a KMS program's `unwrap`, say) is at fault, not the
    /// keyring: a genuine entry unwraps to a 32-byte data key.
    #[error(
        "key provider's unwrap under key {kek} returned {len} bytes, not a 32-byte data key; \
         fix the provider"
    )]
    UnwrappedLength {
        /// The version it was unwrapped with.
        kek: KekId,
        /// The length it returned.
        len: usize,
    },
    /// A `command` provider's program failed.
    #[error("key provider program {}: {failure}", program.display())]
    Command {
        /// The program (first argv element).
        program: PathBuf,
        /// How it failed.
        failure: CommandFailure,
    },
}

impl ProviderError {
    /// Whether a retry can succeed.
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Unavailable { .. } => Recovery::Retryable,
            Self::UnknownKek { .. }
            | Self::WrongKek { .. }
            | Self::Misconfigured { .. }
            | Self::InvalidConfig { .. }
            | Self::BadKey { .. }
            | Self::UnwrappedLength { .. } => Recovery::Terminal,
            Self::KeyFile { problem, .. } => problem.recovery(),
            Self::Command { failure, .. } => failure.recovery(),
        }
    }

    /// The stable code of this error, listed in `docs/errors.md`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "provider_unavailable",
            Self::UnknownKek { .. } => "provider_unknown_kek",
            Self::WrongKek { .. } => "provider_wrong_kek",
            Self::Misconfigured { .. } => "provider_misconfigured",
            Self::InvalidConfig { .. } => "provider_invalid_config",
            Self::BadKey { .. } => "provider_bad_key",
            Self::UnwrappedLength { .. } => "provider_bad_unwrap",
            Self::KeyFile { .. } => "provider_key_file",
            Self::Command { .. } => "provider_command",
        }
    }
}

/// Where a key value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyOrigin {
    /// An environment variable.
    #[error("environment variable {name}")]
    Variable {
        /// The variable's name.
        name: String,
    },
    /// A key file.
    #[error("file {}", path.display())]
    File {
        /// The file's path.
        path: PathBuf,
    },
    /// A `command` provider's program.
    #[error("program {}", program.display())]
    Command {
        /// The program (first argv element).
        program: PathBuf,
    },
}

/// What is wrong with a key value. Each case is its own variant so callers
/// and tests can tell them apart without reading messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The variable is not set.
    #[error("not set")]
    Missing,
    /// The value is empty (or only whitespace).
    #[error("empty")]
    Empty,
    /// The value decodes to fewer than 32 bytes.
    #[error("{len} bytes, a key is 32")]
    TooShort {
        /// The decoded length.
        len: usize,
    },
    /// The value decodes to more than 32 bytes.
    #[error("{len} bytes, a key is 32")]
    TooLong {
        /// The decoded length.
        len: usize,
    },
    /// The value is neither hex nor standard base64.
    #[error("neither hex nor base64")]
    Malformed,
    /// The key is 32 zero bytes, which is what an unset secret looks like.
    #[error("all zero bytes")]
    AllZero,
}

/// What is wrong with a key file or key directory.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileProblem {
    /// A key file grants any permission to group or others (mode shown in
    /// octal); key files must be mode 0600 or stricter.
    #[error("mode {mode:o} grants access to group or others; use 0600 or stricter")]
    Insecure {
        /// The file's permission bits.
        mode: u32,
    },
    /// The key directory or its `current` file is writable by group or
    /// others, so someone else could choose the key.
    #[error("mode {mode:o} is writable by group or others")]
    WritableByOthers {
        /// The permission bits.
        mode: u32,
    },
    /// The file belongs to another user than the one this process runs as.
    #[error("owned by uid {owner}, not by this process's uid {expected}")]
    NotOwned {
        /// The file's owner.
        owner: u32,
        /// This process's effective uid.
        expected: u32,
    },
    /// Not a regular file (a directory, a FIFO, a device).
    #[error("not a regular file")]
    NotRegular,
    /// Larger than any key file can be.
    #[error("larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Reading failed.
    #[error("cannot read: {kind}; check its path in [key_provider] and that this user may read it")]
    Io {
        /// The I/O error kind.
        kind: io::ErrorKind,
    },
    /// The key directory holds no `<id>.key` file.
    #[error("no key files (<id>.key)")]
    NoKeys,
    /// Without a `current` file, the newest key cannot be told: some id has
    /// no trailing version number, or two share the highest one.
    #[error("cannot tell the current key; write its id to a file named `current`")]
    AmbiguousCurrent,
    /// The `current` file does not hold a valid key id.
    #[error("`current` does not name a valid key id")]
    BadCurrent,
    /// The `current` file names a key whose file does not exist.
    #[error("`current` names key {kek}, which has no key file")]
    CurrentMissing {
        /// The id named.
        kek: KekId,
    },
}

impl KeyFileProblem {
    /// Whether a retry can succeed: only an I/O error that is not about a
    /// missing file or a permission.
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Io { kind } => io_recovery(*kind),
            Self::Insecure { .. }
            | Self::WritableByOthers { .. }
            | Self::NotOwned { .. }
            | Self::NotRegular
            | Self::TooLarge { .. }
            | Self::NoKeys
            | Self::AmbiguousCurrent
            | Self::BadCurrent
            | Self::CurrentMissing { .. } => Recovery::Terminal,
        }
    }
}

/// A missing file or a refused permission needs the operator; other I/O
/// errors (interrupted, out of descriptors or processes) may pass.
fn io_recovery(kind: io::ErrorKind) -> Recovery {
    match kind {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => Recovery::Terminal,
        _ => Recovery::Retryable,
    }
}

/// How a `command` provider's program failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandFailure {
    /// The program could not be started.
    #[error("cannot start: {kind}")]
    Spawn {
        /// The I/O error kind (not found, permission denied, ...).
        kind: io::ErrorKind,
    },
    /// Talking to the program over its pipes failed.
    #[error("pipe error: {kind}")]
    Io {
        /// The I/O error kind.
        kind: io::ErrorKind,
    },
    /// The program did not finish in time; its whole process group was
    /// killed.
    #[error("no answer within {after:?}; its process group was killed")]
    TimedOut {
        /// The configured timeout.
        after: Duration,
    },
    /// The program exited unsuccessfully without an error object (its stderr
    /// is in the log).
    #[error("failed ({status}); see its stderr in the log")]
    Exited {
        /// How it exited.
        status: ExitStatus,
    },
    /// The program wrote more to stdout than any answer can be.
    #[error("wrote more than {limit} bytes to stdout")]
    OutputTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The program's answer does not follow the protocol.
    #[error("bad answer: {problem}")]
    BadOutput {
        /// What is wrong with it.
        problem: OutputProblem,
    },
    /// The program answered with an error object.
    #[error("refused ({code}): {message}")]
    Refused {
        /// The error code it gave.
        code: RefusalCode,
        /// Its message, cleaned of control characters and shortened.
        message: String,
    },
}

impl CommandFailure {
    /// Whether a retry can succeed: yes for timeouts, failed runs, pipe
    /// errors, transient start failures and `unavailable`; no for answers
    /// that break the protocol, `denied` and `unknown_key`.
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Spawn { kind } => io_recovery(*kind),
            Self::Io { .. } | Self::TimedOut { .. } | Self::Exited { .. } => Recovery::Retryable,
            Self::OutputTooLarge { .. } | Self::BadOutput { .. } => Recovery::Terminal,
            Self::Refused { code, .. } => match code {
                RefusalCode::Unavailable => Recovery::Retryable,
                RefusalCode::Denied | RefusalCode::UnknownKey | RefusalCode::InvalidCiphertext => {
                    Recovery::Terminal
                }
            },
        }
    }
}

/// The error codes of the command protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefusalCode {
    /// `unknown_key`: the named key version does not exist.
    #[error("unknown_key")]
    UnknownKey,
    /// `unavailable`: the KMS could not be reached; try again.
    #[error("unavailable")]
    Unavailable,
    /// `denied`: the KMS refused (permissions, policy).
    #[error("denied")]
    Denied,
    /// `invalid_ciphertext`: the wrapped key does not authenticate under
    /// the named key version (reported as [`ProviderError::WrongKek`]).
    #[error("invalid_ciphertext")]
    InvalidCiphertext,
}

/// How a `command` provider's answer breaks the protocol. Never includes the
/// output itself, which may hold key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutputProblem {
    /// Nothing on stdout.
    #[error("empty output")]
    Empty,
    /// Not one JSON object of the expected shape (position of the first
    /// problem).
    #[error("not a protocol JSON object (line {line}, column {column})")]
    Unparseable {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A required field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field that must be base64 is not.
    #[error("field `{field}` is not base64")]
    BadBase64 {
        /// The field.
        field: &'static str,
    },
    /// The `key_id` given is not a valid key id.
    #[error("invalid key_id")]
    BadKeyId,
    /// The answer names another key than the one asked for.
    #[error("asked for key {asked}, got key {got}")]
    KeyIdMismatch {
        /// The id asked for.
        asked: KekId,
        /// The id answered.
        got: KekId,
    },
    /// The error object's code is not one of the protocol's.
    #[error("unknown error code")]
    UnknownErrorCode,
}

/// What is wrong with the `[key_provider]` section.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// The document has no `[key_provider]` table.
    #[error("no [key_provider] section")]
    MissingSection,
    /// The TOML does not parse or does not fit the section's shape (unknown
    /// field, wrong type, unknown kind).
    #[error("{message} (line {line})")]
    Syntax {
        /// The parser's message (without the source excerpt).
        message: String,
        /// 1-based line of the problem, 0 when unknown.
        line: usize,
    },
    /// A setting that this kind requires is absent.
    #[error("kind = \"{kind}\" requires `{field}`")]
    Missing {
        /// The kind.
        kind: ProviderKind,
        /// The setting.
        field: &'static str,
    },
    /// A setting that belongs to another kind.
    #[error("`{field}` does not apply to kind = \"{kind}\"")]
    NotApplicable {
        /// The kind.
        kind: ProviderKind,
        /// The setting.
        field: &'static str,
    },
    /// Two settings that exclude each other are both given.
    #[error("`{first}` and `{second}` exclude each other")]
    Conflict {
        /// One setting.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// A key id setting is not a valid key id.
    #[error("`{field}` is not a valid key id (1 to 128 printable ASCII characters)")]
    BadKeyId {
        /// The setting.
        field: &'static str,
    },
    /// The same key id is configured twice.
    #[error("key id {kek} is configured twice")]
    DuplicateKeyId {
        /// The id.
        kek: KekId,
    },
    /// An environment variable name is empty or contains `=` or NUL.
    #[error("`{field}` holds an invalid variable name")]
    BadVariableName {
        /// The setting.
        field: &'static str,
    },
    /// `command` is empty.
    #[error("`command` must name a program")]
    EmptyCommand,
    /// The program is not an absolute path (there is no `PATH` search: the
    /// environment is cleared).
    #[error("the program {} must be an absolute path", program.display())]
    RelativeProgram {
        /// The program given.
        program: PathBuf,
    },
    /// An argument contains a NUL byte.
    #[error("command arguments cannot contain NUL")]
    NulInArgument,
    /// `timeout_secs` is outside 1..=300.
    #[error("timeout_secs = {secs} is outside 1..=300")]
    TimeoutOutOfRange {
        /// The value given.
        secs: u64,
    },
    /// `recovery_public_key` is not 64 hex digits of a nonzero X25519 key.
    #[error("recovery_public_key must be 64 hex digits (an X25519 public key)")]
    BadRecoveryKey,
}
