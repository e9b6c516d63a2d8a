//! A blame proof file of any kind: a signing proof ([`BlameProof`],
//! which names no `kind`) or a DKG proof ([`DkgShareProof`], `kind`
//! `dkg_share`; [`DkgRound1Proof`], `kind` `dkg_round1`), told apart
//! before any is decoded.

use serde::Deserialize;

use crate::blame::BlameProof;
use crate::dkg_blame::DkgShareProof;
use crate::dkg_round1_blame::DkgRound1Proof;

/// A decoded proof file (each kind boxed: a proof is read once, and the
/// kinds differ much in size).
///
/// Exhaustive on purpose: whoever reads proof files must check every kind
/// it can decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlameFile {
    /// An invalid signature share (`thresig sign`).
    Signing(Box<BlameProof>),
    /// An invalid DKG round-2 share (`thresig dkg`, `thresig refresh`).
    DkgShare(Box<DkgShareProof>),
    /// A DKG round-1 package that fails part 2's checks (`thresig dkg`,
    /// `thresig refresh`).
    DkgRound1(Box<DkgRound1Proof>),
}

/// Why bytes are not a proof file. Terminal: the same bytes fail the same
/// way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofFileError {
    /// Not JSON, or JSON without a proof's fields (or with others).
    #[error("not a blame proof ({0})")]
    Malformed(#[from] serde_json::Error),
    /// A `kind` this build does not know (a signing proof names none, a
    /// DKG proof `dkg_share` or `dkg_round1`).
    #[error("a blame proof of a kind this build does not know; verify it with a matching thresig")]
    UnknownKind,
}

/// The one field read first: which kind of proof the rest is.
#[derive(Deserialize)]
struct Kind {
    #[serde(default)]
    kind: Option<String>,
}

impl BlameFile {
    /// Decodes a proof file's JSON.
    ///
    /// # Errors
    /// [`ProofFileError`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, ProofFileError> {
        let Kind { kind } = serde_json::from_slice(bytes)?;
        match kind.as_deref() {
            None => Ok(Self::Signing(Box::new(serde_json::from_slice(bytes)?))),
            Some("dkg_share") => {
                serde_json::from_slice::<strict::DkgShareProof>(bytes)?;
                Ok(Self::DkgShare(Box::new(serde_json::from_slice(bytes)?)))
            }
            Some("dkg_round1") => {
                serde_json::from_slice::<strict::DkgRound1Proof>(bytes)?;
                Ok(Self::DkgRound1(Box::new(serde_json::from_slice(bytes)?)))
            }
            Some(_) => Err(ProofFileError::UnknownKind),
        }
    }
}

/// The shape of a DKG proof file with unknown fields refused at every
/// level, read (values skipped) before the proof itself. The message,
/// payload and kind types the proof holds are the DKG's own, which a
/// member also decodes from other members and relays and which stay
/// lenient there; a proof file is evidence, so nothing in it may go
/// unchecked (`{"kind": "fresh", "removed": [2]}` is not a fresh DKG).
mod strict {
    use serde::Deserialize;
    use serde::de::IgnoredAny;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(super) struct DkgShareProof {
        version: IgnoredAny,
        kind: IgnoredAny,
        wallet: IgnoredAny,
        session: IgnoredAny,
        dkg: DkgKind,
        round1: Vec<Message>,
        round2: Message,
        accusation: Message,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(super) struct DkgRound1Proof {
        version: IgnoredAny,
        kind: IgnoredAny,
        wallet: IgnoredAny,
        session: IgnoredAny,
        dkg: DkgKind,
        round1: Message,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Message {
        session: IgnoredAny,
        wallet: IgnoredAny,
        sender: IgnoredAny,
        payload: Payload,
        signature: IgnoredAny,
        #[serde(default)]
        kind_signature: Option<IgnoredAny>,
    }

    /// Every `DkgPayload` variant, as struct variants: an internally
    /// tagged unit variant would take any other field.
    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    #[allow(dead_code)]
    enum Payload {
        Round1 {
            package: IgnoredAny,
            hpke_key: IgnoredAny,
        },
        Round2 {
            to: IgnoredAny,
            sealed: IgnoredAny,
            echo: IgnoredAny,
        },
        Confirm {
            output_key: IgnoredAny,
            transcript: IgnoredAny,
        },
        RefreshConfirm {
            wallet_key: IgnoredAny,
            transcript: IgnoredAny,
            removed: IgnoredAny,
            from_epoch: IgnoredAny,
        },
        RefreshAbandon {
            from_epoch: IgnoredAny,
        },
        Accuse {
            accused: IgnoredAny,
            hpke_secret: IgnoredAny,
        },
    }

    /// `DkgKind`, its unit variant as an empty struct variant.
    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    #[allow(dead_code)]
    enum DkgKind {
        Fresh {},
        Refresh {
            from_epoch: IgnoredAny,
            removed: IgnoredAny,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// JSON values built from a proof's own field names, nested a few
    /// levels: closer to a proof than arbitrary bytes get.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[0-9a-f]{0,70}".prop_map(serde_json::Value::from),
            prop::sample::select(vec![
                "dkg_share",
                "dkg_round1",
                "fresh",
                "refresh",
                "round1",
                "accuse"
            ])
            .prop_map(serde_json::Value::from),
        ];
        let keys = prop::sample::select(vec![
            "version",
            "kind",
            "wallet",
            "session",
            "dkg",
            "round1",
            "round2",
            "accusation",
            "sender",
            "payload",
            "signature",
            "kind_signature",
            "package",
            "hpke_key",
            "hpke_secret",
            "accused",
            "to",
            "sealed",
            "echo",
            "wallet_key",
            "request",
            "answer",
        ]);
        leaf.prop_recursive(4, 48, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(keys.clone(), inner, 0..9).prop_map(|m| {
                    serde_json::Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary bytes never panic the parser: a proof or a typed error.
        #[test]
        fn arbitrary_bytes_are_a_proof_or_a_typed_error(
            raw in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let _ = BlameFile::from_json(&raw);
        }

        /// Arbitrary JSON in a proof's vocabulary never panics the parser,
        /// and one of another `kind` is refused as such.
        #[test]
        fn arbitrary_json_is_a_proof_or_a_typed_error(value in json()) {
            let bytes = serde_json::to_vec(&value).unwrap();
            let parsed = BlameFile::from_json(&bytes);
            if let Some(kind) = value.get("kind").and_then(|k| k.as_str())
                && kind != "dkg_share"
                && kind != "dkg_round1"
            {
                prop_assert!(matches!(parsed, Err(ProofFileError::UnknownKind)));
            }
        }
    }
}
