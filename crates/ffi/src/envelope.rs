//! The JSON envelopes: `{"version": 1, "op": ..., "request": {...}}` in,
//! `{"ok": ...}` or `{"error": {"code", "retryable", "message"}}` out.
//!
//! A request is checked in a fixed order, each step before any work of the
//! next: its size ([`MAX_REQUEST_BYTES`], before a byte is parsed), UTF-8,
//! the envelope's JSON shape, its version, its op, and only then the op's
//! own request. Each step has its own code, so a host can tell its own bug
//! (`invalid_envelope`, `unknown_op`) from a peer's bad request
//! (`invalid_request`).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thresig_store::Recovery;

/// The envelope version this build reads and writes; also what
/// `thresig_abi_version` returns.
pub const ENVELOPE_VERSION: u32 = 1;

/// The largest request accepted, checked before parsing. A round 2 of a
/// transaction with 1,000 inputs at (51,100) carries about 3 MiB of
/// packages; 16 MiB leaves room for any request a wallet can need while
/// keeping a host's bug from making the parser hold gigabytes.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The codes of failures that happen before a request reaches the engine
/// (`docs/errors.md`, "FFI codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeCode {
    /// The bytes are not a JSON envelope (not UTF-8, not JSON, a field of
    /// the wrong type, a field missing or unknown).
    InvalidEnvelope,
    /// The envelope's `version` is not one this build reads.
    UnsupportedVersion,
    /// The envelope's `op` is not an operation of the handle.
    UnknownOp,
    /// The request is larger than [`MAX_REQUEST_BYTES`].
    RequestTooLarge,
    /// A pointer argument that must not be null was null.
    NullArgument,
}

impl EnvelopeCode {
    /// The stable code.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidEnvelope => "invalid_envelope",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnknownOp => "unknown_op",
            Self::RequestTooLarge => "request_too_large",
            Self::NullArgument => "null_argument",
        }
    }
}

/// A failure as the response envelope carries it: a stable code, whether
/// the same request can succeed again, and a message that names the cause
/// once and says what to do. Messages are built from ids, counts and the
/// lower crates' messages, which never hold secret material.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FfiError {
    /// The stable code (`docs/errors.md`).
    pub code: Cow<'static, str>,
    /// Whether a retry of the same request can succeed.
    pub recovery: Recovery,
    /// What failed and what to do.
    pub message: String,
}

impl FfiError {
    /// A failure of the envelope itself (always terminal: the same bytes
    /// fail the same way).
    pub(crate) fn envelope(code: EnvelopeCode, message: impl Into<String>) -> Self {
        Self {
            code: Cow::Borrowed(code.as_str()),
            recovery: Recovery::Terminal,
            message: message.into(),
        }
    }

    /// A failure with one of the lower crates' codes.
    pub(crate) fn coded(
        code: impl Into<Cow<'static, str>>,
        recovery: Recovery,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code: code.into(),
            recovery,
            message: message.into(),
        }
    }

    /// An op's request that does not fit the op (the engine's
    /// `invalid_request`, terminal).
    pub(crate) fn invalid_request(message: impl std::fmt::Display) -> Self {
        Self::coded(
            thresig_engine::ErrorCode::InvalidRequest.as_str(),
            Recovery::Terminal,
            format!("{message}; fix the request as docs/ffi.md describes the operation"),
        )
    }

    /// A bug: a panic caught at the boundary, or an answer that did not
    /// encode.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::coded(
            thresig_engine::ErrorCode::Internal.as_str(),
            Recovery::Terminal,
            message,
        )
    }

    /// An engine error with its stable code and recovery class.
    pub(crate) fn engine(err: &thresig_engine::Error) -> Self {
        Self::coded(err.code().as_str(), err.recovery(), err.to_string())
    }

    /// A store error with its stable code and recovery class.
    pub(crate) fn store(err: &thresig_store::Error) -> Self {
        Self::coded(err.code(), err.recovery(), err.to_string())
    }

    /// The error envelope.
    #[must_use]
    pub fn to_json(&self) -> Value {
        serde_json::json!({"error": {
            "code": self.code,
            "retryable": self.recovery == Recovery::Retryable,
            "message": self.message,
        }})
    }
}

/// A request envelope whose shape, version and size passed; `op` is not
/// yet checked against the handle's operations.
#[derive(Debug)]
pub(crate) struct Envelope {
    /// The operation's name.
    pub(crate) op: String,
    /// Its request, `{}` when the envelope has none.
    pub(crate) request: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope {
    version: u32,
    op: String,
    #[serde(default)]
    request: Option<Value>,
}

/// Refuses a request of `len` bytes past [`MAX_REQUEST_BYTES`]; checked on
/// the length alone, before the bytes are read or even sliced.
pub(crate) fn check_size(len: usize) -> Result<(), FfiError> {
    if len > MAX_REQUEST_BYTES {
        return Err(FfiError::envelope(
            EnvelopeCode::RequestTooLarge,
            format!(
                "the request is {len} bytes, more than the {MAX_REQUEST_BYTES} a request may be; \
                 split the work into smaller requests"
            ),
        ));
    }
    Ok(())
}

impl Envelope {
    /// Reads a request envelope: size first, then UTF-8, shape and version.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, FfiError> {
        check_size(bytes.len())?;
        let text = std::str::from_utf8(bytes).map_err(|e| {
            FfiError::envelope(
                EnvelopeCode::InvalidEnvelope,
                format!(
                    "the request is not UTF-8 (at byte {}); send JSON text",
                    e.valid_up_to()
                ),
            )
        })?;
        let raw: RawEnvelope = serde_json::from_str(text).map_err(|e| {
            FfiError::envelope(
                EnvelopeCode::InvalidEnvelope,
                format!(
                    "the request is not an envelope ({e}); send {{\"version\": {ENVELOPE_VERSION}, \
                     \"op\": ..., \"request\": {{...}}}}"
                ),
            )
        })?;
        if raw.version != ENVELOPE_VERSION {
            return Err(FfiError::envelope(
                EnvelopeCode::UnsupportedVersion,
                format!(
                    "envelope version {} is not supported; this library reads version \
                     {ENVELOPE_VERSION} (thresig_abi_version)",
                    raw.version
                ),
            ));
        }
        Ok(Self {
            op: raw.op,
            request: raw
                .request
                .unwrap_or_else(|| Value::Object(Default::default())),
        })
    }

    /// The request as the op's type.
    pub(crate) fn request<T: DeserializeOwned>(&self) -> Result<T, FfiError> {
        T::deserialize(&self.request)
            .map_err(|e| FfiError::invalid_request(format!("{}: {e}", self.op)))
    }

    /// The refusal of an op the handle does not have.
    pub(crate) fn unknown_op(&self, known: &[&str]) -> FfiError {
        FfiError::envelope(
            EnvelopeCode::UnknownOp,
            format!(
                "unknown op {:?}; this handle's ops are {}",
                truncated(&self.op),
                known.join(", ")
            ),
        )
    }
}

/// At most 64 characters of a name the caller sent, so that a message
/// stays short whatever the caller sent.
fn truncated(text: &str) -> &str {
    text.char_indices()
        .nth(64)
        .map_or(text, |(at, _)| &text[..at])
}

/// The response envelope of a call's outcome.
pub(crate) fn respond(outcome: Result<Value, FfiError>) -> Vec<u8> {
    let json = match outcome {
        Ok(value) => serde_json::json!({ "ok": value }),
        Err(err) => err.to_json(),
    };
    // A `Value` always serializes: its keys are strings.
    serde_json::to_vec(&json).unwrap_or_else(|_| b"{\"error\":{\"code\":\"internal\",\"retryable\":false,\"message\":\"the response did not encode; report the bug\"}}".to_vec())
}

/// A value as JSON, or `internal` if it does not serialize (a bug).
pub(crate) fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, FfiError> {
    serde_json::to_value(value)
        .map_err(|e| FfiError::internal(format!("an answer did not encode ({e}); report the bug")))
}
