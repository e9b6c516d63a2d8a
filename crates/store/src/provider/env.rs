//! The `env` provider: the KEK and previous KEKs in environment variables,
//! read once when the provider is opened.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::config::{EnvKey, EnvSettings};
use super::keytext::{decode_key, local_kek};
use super::{
    ConfigProblem, Environment, KekId, KeyOrigin, KeyProblem, KeyProvider, LocalKek, ProviderError,
};

/// Holds the current key and the previous keys, by id.
///
/// # Invariants
/// `current` is a key of `keys`. The keys never change after opening: a
/// rotation of an `env` key is a restart with new variables.
#[derive(Debug)]
pub(crate) struct EnvProvider {
    current: KekId,
    keys: BTreeMap<KekId, LocalKek>,
}

impl EnvProvider {
    /// Reads and checks every configured variable.
    ///
    /// # Errors
    /// [`ProviderError::BadKey`] for the first missing, empty, short, long,
    /// malformed or all-zero value; [`ConfigProblem::DuplicateKeyId`] when two
    /// variables give the same id.
    pub(crate) fn new(
        settings: &EnvSettings,
        env: &dyn Environment,
    ) -> Result<Self, ProviderError> {
        let current = read_key(&settings.current, env)?;
        let current_id = current.id().clone();
        let mut keys = BTreeMap::new();
        for kek in std::iter::once(Ok(current))
            .chain(settings.previous.iter().map(|key| read_key(key, env)))
        {
            let kek = kek?;
            let id = kek.id().clone();
            if keys.insert(id.clone(), kek).is_some() {
                return Err(ProviderError::InvalidConfig {
                    problem: ConfigProblem::DuplicateKeyId { kek: id },
                });
            }
        }
        Ok(Self {
            current: current_id,
            keys,
        })
    }

    fn key(&self, kek: &KekId) -> Result<&LocalKek, ProviderError> {
        self.keys
            .get(kek)
            .ok_or_else(|| ProviderError::UnknownKek { kek: kek.clone() })
    }
}

fn read_key(key: &EnvKey, env: &dyn Environment) -> Result<LocalKek, ProviderError> {
    let origin = || KeyOrigin::Variable {
        name: key.variable.clone(),
    };
    let value: Zeroizing<Vec<u8>> =
        env.var(&key.variable)
            .ok_or_else(|| ProviderError::BadKey {
                origin: origin(),
                problem: KeyProblem::Missing,
            })?;
    local_kek(key.key_id.as_ref(), decode_key(&value, origin)?)
}

impl KeyProvider for EnvProvider {
    fn current_kek_id(&self) -> Result<KekId, ProviderError> {
        Ok(self.current.clone())
    }

    fn wrap(&self, kek: &KekId, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError> {
        self.key(kek)?.wrap(plaintext)
    }

    fn unwrap(&self, kek: &KekId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.key(kek)?.unwrap(wrapped)
    }
}
