//! The command protocol's messages: one JSON object on stdin, one on stdout.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::provider::keytext::BASE64;
use crate::provider::{KekId, OutputProblem, RefusalCode};

/// A request, serialized as `{"op": ..., ...}`.
#[derive(Serialize)]
#[serde(tag = "op")]
pub(crate) enum Request<'a> {
    /// `{"op":"key-id"}`: the current key id; cheap, no secret.
    #[serde(rename = "key-id")]
    KeyId,
    /// `{"op":"get-key","key_id":...}`: the bytes of a named key version.
    #[serde(rename = "get-key")]
    GetKey { key_id: &'a str },
    /// `{"op":"wrap","key_id":...,"plaintext":<base64>}`.
    #[serde(rename = "wrap")]
    Wrap { key_id: &'a str, plaintext: &'a str },
    /// `{"op":"unwrap","key_id":...,"ciphertext":<base64>}`.
    #[serde(rename = "unwrap")]
    Unwrap {
        key_id: &'a str,
        ciphertext: &'a str,
    },
}

impl Request<'_> {
    /// The request as one line of JSON, in a buffer sized up front so that
    /// serializing never reallocates (a `wrap` request holds a data key).
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let fields = match self {
            Self::KeyId => 0,
            Self::GetKey { key_id } => key_id.len(),
            Self::Wrap { key_id, plaintext } => key_id.len() + plaintext.len(),
            Self::Unwrap { key_id, ciphertext } => key_id.len() + ciphertext.len(),
        };
        // Escaping at most doubles a field (ids are printable ASCII; base64
        // needs none); 96 bytes cover the keys and punctuation.
        let mut line = Zeroizing::new(Vec::with_capacity(96 + 2 * fields));
        // Serializing a struct of strings into a Vec cannot fail.
        if serde_json::to_writer(&mut *line, self).is_ok() {
            line.push(b'\n');
        }
        line
    }
}

/// A response. Every field is optional here; each operation checks the
/// ones it needs. Strings are borrowed from the (zeroized) stdout buffer, so
/// a key is never copied into an unzeroized `String`.
#[derive(Deserialize)]
pub(crate) struct Response<'a> {
    #[serde(borrow, default)]
    key_id: Option<&'a str>,
    #[serde(borrow, default)]
    key: Option<&'a str>,
    #[serde(borrow, default)]
    ciphertext: Option<&'a str>,
    #[serde(borrow, default)]
    plaintext: Option<&'a str>,
    #[serde(borrow, default)]
    error: Option<ErrorObject<'a>>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow)]
    code: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// An `{"error": ...}` answer.
pub(crate) struct Refusal<'a> {
    pub(crate) code: RefusalCode,
    pub(crate) message: &'a str,
}

impl<'a> Response<'a> {
    /// Parses exactly one JSON object (surrounding whitespace allowed).
    ///
    /// # Errors
    /// [`OutputProblem::Empty`], or [`OutputProblem::Unparseable`] with the
    /// position only: the parser's message could quote the output.
    pub(crate) fn parse(stdout: &'a [u8]) -> Result<Self, OutputProblem> {
        if stdout.trim_ascii().is_empty() {
            return Err(OutputProblem::Empty);
        }
        serde_json::from_slice(stdout).map_err(|e| OutputProblem::Unparseable {
            line: e.line(),
            column: e.column(),
        })
    }

    /// The error object, if the answer is one.
    ///
    /// # Errors
    /// [`OutputProblem::UnknownErrorCode`] for a code outside the protocol.
    pub(crate) fn refusal(&self) -> Result<Option<Refusal<'_>>, OutputProblem> {
        let Some(error) = &self.error else {
            return Ok(None);
        };
        let code = match error.code.as_ref() {
            "unknown_key" => RefusalCode::UnknownKey,
            "unavailable" => RefusalCode::Unavailable,
            "denied" => RefusalCode::Denied,
            "invalid_ciphertext" => RefusalCode::InvalidCiphertext,
            _ => return Err(OutputProblem::UnknownErrorCode),
        };
        Ok(Some(Refusal {
            code,
            message: error.message.as_deref().unwrap_or(""),
        }))
    }

    /// `key_id`, which must be a valid key id.
    pub(crate) fn key_id(&self) -> Result<KekId, OutputProblem> {
        let id = self
            .key_id
            .ok_or(OutputProblem::MissingField { field: "key_id" })?;
        KekId::new(id).map_err(|_| OutputProblem::BadKeyId)
    }

    /// `key_id`, which must be `asked`.
    pub(crate) fn key_id_is(&self, asked: &KekId) -> Result<(), OutputProblem> {
        let got = self.key_id()?;
        if &got == asked {
            Ok(())
        } else {
            Err(OutputProblem::KeyIdMismatch {
                asked: asked.clone(),
                got,
            })
        }
    }

    /// `key`, the text of a key (hex, or base64).
    pub(crate) fn key(&self) -> Result<&'a [u8], OutputProblem> {
        self.key
            .map(str::as_bytes)
            .ok_or(OutputProblem::MissingField { field: "key" })
    }

    /// `ciphertext`, decoded.
    pub(crate) fn ciphertext(&self) -> Result<Vec<u8>, OutputProblem> {
        decode(self.ciphertext, "ciphertext").map(|mut bytes| std::mem::take(&mut *bytes))
    }

    /// `plaintext`, decoded (a data key: zeroized on drop).
    pub(crate) fn plaintext(&self) -> Result<Zeroizing<Vec<u8>>, OutputProblem> {
        decode(self.plaintext, "plaintext")
    }
}

fn decode(value: Option<&str>, field: &'static str) -> Result<Zeroizing<Vec<u8>>, OutputProblem> {
    let value = value.ok_or(OutputProblem::MissingField { field })?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(value.len().div_ceil(4) * 3));
    base64::Engine::decode_vec(&BASE64, value, &mut bytes)
        .map_err(|_| OutputProblem::BadBase64 { field })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_shape() {
        let line = Request::Wrap {
            key_id: "k1",
            plaintext: "AAEC",
        }
        .encode();
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"op": "wrap", "key_id": "k1", "plaintext": "AAEC"})
        );
        assert_eq!(line.last(), Some(&b'\n'));
        let line = Request::KeyId.encode();
        assert_eq!(line.as_slice(), b"{\"op\":\"key-id\"}\n");
    }

    #[test]
    fn responses_are_checked_field_by_field() {
        let ok = br#"{"key_id":"k1","ciphertext":"AAEC","extra":1}"#;
        let response = Response::parse(ok).unwrap();
        assert_eq!(response.key_id().unwrap().as_str(), "k1");
        assert_eq!(response.ciphertext().unwrap(), vec![0, 1, 2]);
        assert_eq!(
            response.plaintext().unwrap_err(),
            OutputProblem::MissingField { field: "plaintext" }
        );
        let refused = br#"{"error":{"code":"denied","message":"no"}}"#;
        let response = Response::parse(refused).unwrap();
        let refusal = response.refusal().unwrap().unwrap();
        assert_eq!((refusal.code, refusal.message), (RefusalCode::Denied, "no"));
        let odd = br#"{"error":{"code":"nope"}}"#;
        assert_eq!(
            Response::parse(odd).unwrap().refusal().err(),
            Some(OutputProblem::UnknownErrorCode)
        );
        assert!(matches!(
            Response::parse(b"{} {}"),
            Err(OutputProblem::Unparseable { .. })
        ));
    }

    /// Arbitrary bytes, and JSON-like objects built from the protocol's
    /// field names (which random bytes would almost never reach).
    fn program_output() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let field = r#"("(key_id|key|ciphertext|plaintext|error|code|message)":("[ -~]{0,12}"|[0-9]{1,3}|null|\{\}|\{"code":"[a-z_]{0,12}"\}),?)"#;
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::string::string_regex(&format!(r"\{{{field}{{0,4}}\}}"))
                .unwrap()
                .prop_map(String::into_bytes),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever a program prints, reading it yields values or typed
        /// problems, never a panic.
        #[test]
        fn arbitrary_output_never_panics(bytes in program_output()) {
            if let Ok(response) = Response::parse(&bytes) {
                let _ = response.refusal();
                let _ = response.key_id();
                let _ = response.key();
                let _ = response.ciphertext();
                let _ = response.plaintext();
            }
        }
    }
}
