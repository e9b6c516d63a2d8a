//! The conformance checks every [`KeyProvider`] must pass, for the tests of
//! each implementation (STYLE.md §8: one suite per trait).

use super::{KekId, KeyProvider, ProviderError};

/// A DEK-sized plaintext with a recognisable pattern.
const DEK: [u8; 32] = [0xd5; 32];

/// Checks the [`KeyProvider`] contract on `provider`, which must be
/// reachable and must not rotate while the checks run:
///
/// - `current_kek_id` answers, and answers the same twice;
/// - a DEK wrapped under the current KEK unwraps to itself, and two wraps of
///   one DEK both unwrap;
/// - a wrap with one byte flipped (or cut short) is [`ProviderError::WrongKek`];
/// - an id the provider does not have is [`ProviderError::UnknownKek`] for
///   both wrap and unwrap.
///
/// Returns the current id, for further checks by the caller.
///
/// # Panics
/// On the first broken rule, naming it: this is a test helper.
pub fn check_provider(provider: &dyn KeyProvider) -> KekId {
    let kek = provider.current_kek_id().expect("current_kek_id answers");
    assert_eq!(
        provider
            .current_kek_id()
            .expect("current_kek_id answers again"),
        kek,
        "current_kek_id is stable without a rotation"
    );
    let first = provider
        .wrap(&kek, &DEK)
        .expect("wrap under the current key");
    let second = provider.wrap(&kek, &DEK).expect("wrap again");
    assert_ne!(first.as_slice(), DEK.as_slice(), "a wrap hides the DEK");
    for wrapped in [&first, &second] {
        let unwrapped = provider.unwrap(&kek, wrapped).expect("unwrap a fresh wrap");
        assert_eq!(unwrapped.as_slice(), DEK.as_slice(), "unwrap inverts wrap");
    }

    let mut flipped = first.clone();
    if let Some(last) = flipped.last_mut() {
        *last ^= 0x01;
    }
    let cut = first.get(..first.len() / 2).unwrap_or_default();
    for tampered in [flipped.as_slice(), cut] {
        assert!(
            matches!(
                provider.unwrap(&kek, tampered),
                Err(ProviderError::WrongKek { .. })
            ),
            "a tampered wrap is WrongKek"
        );
    }

    let unknown = KekId::new("conformance-no-such-key-9").expect("a valid id");
    assert!(
        matches!(
            provider.wrap(&unknown, &DEK),
            Err(ProviderError::UnknownKek { .. })
        ),
        "wrap under an unknown id is UnknownKek"
    );
    assert!(
        matches!(
            provider.unwrap(&unknown, &first),
            Err(ProviderError::UnknownKek { .. })
        ),
        "unwrap under an unknown id is UnknownKek"
    );
    kek
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::MemoryProvider;

    #[test]
    fn the_memory_provider_conforms() {
        let provider = MemoryProvider::with_key("m1", 3);
        assert_eq!(check_provider(&provider).as_str(), "m1");
    }
}
