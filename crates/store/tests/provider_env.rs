//! The `env` key provider: key formats, refusals, previous keys.

#[allow(dead_code, reason = "each test binary uses part of the helpers")]
mod provider_util;

use base64::Engine as _;
use provider_util::{default_id, id, key_bytes, key_hex, open, round_trip};
use thresig_store::Recovery;
use thresig_store::provider::{
    ConfigProblem, Environment as _, KeyOrigin, KeyProblem, KeyProvider as _, KeyProviderConfig,
    ProcessEnvironment, ProviderError, check_provider,
};

const CURRENT_ONLY: &str = r#"
[key_provider]
kind = "env"
variable = "KEK"
"#;

fn problem_of(value: Option<&str>) -> KeyProblem {
    let pairs: Vec<(&str, &str)> = value.map(|v| ("KEK", v)).into_iter().collect();
    match open(CURRENT_ONLY, &pairs) {
        Err(ProviderError::BadKey { origin, problem }) => {
            assert_eq!(origin, KeyOrigin::Variable { name: "KEK".into() });
            problem
        }
        other => panic!("expected a bad key, got {other:?}"),
    }
}

#[test]
fn hex_and_base64_keys_are_the_same_key() {
    let key = key_bytes(1);
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    let from_hex = open(CURRENT_ONLY, &[("KEK", &key_hex(1))]).unwrap();
    let from_b64 = open(CURRENT_ONLY, &[("KEK", &b64)]).unwrap();
    let kek = check_provider(&from_hex);
    assert_eq!(kek, default_id(&key));
    assert_eq!(from_b64.current_kek_id().unwrap(), kek);
    let wrapped = round_trip(&from_hex, &kek);
    assert_eq!(
        from_b64.unwrap(&kek, &wrapped).unwrap().as_slice(),
        &[0x5a; 32]
    );
}

#[test]
fn each_unusable_key_is_refused_with_its_own_error() {
    assert_eq!(problem_of(None), KeyProblem::Missing);
    assert_eq!(problem_of(Some("")), KeyProblem::Empty);
    assert_eq!(
        problem_of(Some(&key_hex(1)[..62])),
        KeyProblem::TooShort { len: 31 }
    );
    assert_eq!(
        problem_of(Some(&format!("{}00", key_hex(1)))),
        KeyProblem::TooLong { len: 33 }
    );
    assert_eq!(
        problem_of(Some("correct horse battery staple")),
        KeyProblem::Malformed
    );
    assert_eq!(problem_of(Some(&"00".repeat(32))), KeyProblem::AllZero);
}

#[test]
fn refusals_are_terminal_and_never_show_the_value() {
    let short = &key_hex(0x40)[..62];
    let err = open(CURRENT_ONLY, &[("KEK", short)]).err().unwrap();
    assert_eq!(err.recovery(), Recovery::Terminal);
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("KEK"), "{shown}");
    assert!(!shown.contains(&short[..16]), "{shown}");
}

#[test]
fn previous_keys_unwrap_what_they_wrapped() {
    let old_config = r#"
[key_provider]
kind = "env"
variable = "KEK_2025"
key_id = "kek-2025"
"#;
    let old = open(old_config, &[("KEK_2025", &key_hex(1))]).unwrap();
    let old_wrap = round_trip(&old, &id("kek-2025"));

    let new_config = r#"
[key_provider]
kind = "env"
variable = "KEK_2026"
key_id = "kek-2026"
previous = [{ variable = "KEK_2025", key_id = "kek-2025" }, { variable = "KEK_2024" }]
"#;
    let env = [
        ("KEK_2026", key_hex(2)),
        ("KEK_2025", key_hex(1)),
        ("KEK_2024", key_hex(0)),
    ];
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let new = open(new_config, &pairs).unwrap();
    assert_eq!(check_provider(&new), id("kek-2026"));
    assert_eq!(
        new.unwrap(&id("kek-2025"), &old_wrap).unwrap().as_slice(),
        &[0x5a; 32]
    );
    // The oldest key has no explicit id: it is named by its hash.
    round_trip(&new, &default_id(&key_bytes(0)));
    // A wrap under the old id does not open under the new key's id.
    assert!(matches!(
        new.unwrap(&id("kek-2026"), &old_wrap),
        Err(ProviderError::WrongKek { .. })
    ));
    assert!(matches!(
        new.unwrap(&id("kek-2023"), &old_wrap),
        Err(ProviderError::UnknownKek { .. })
    ));

    // A previous key that is not set is refused like the current one.
    let missing = open(new_config, &pairs[..2]).err().unwrap();
    assert!(matches!(
        missing,
        ProviderError::BadKey { origin: KeyOrigin::Variable { ref name }, problem: KeyProblem::Missing }
            if name == "KEK_2024"
    ));
}

#[test]
fn two_variables_with_one_id_are_refused() {
    let config = r#"
[key_provider]
kind = "env"
variable = "A"
previous = [{ variable = "B" }]
"#;
    let same = key_hex(9);
    let err = open(config, &[("A", &same), ("B", &same)]).err().unwrap();
    assert!(matches!(
        err,
        ProviderError::InvalidConfig {
            problem: ConfigProblem::DuplicateKeyId { .. }
        }
    ));
}

#[test]
fn debug_of_the_provider_hides_the_keys() {
    let key = key_hex(0xa0);
    let provider = open(CURRENT_ONLY, &[("KEK", &key)]).unwrap();
    let shown = format!("{provider:?}");
    assert!(!shown.contains(&key[..16]), "{shown}");
    // The bytes as Debug would print an array: [160, 161, ...
    assert!(!shown.contains("160, 161"), "{shown}");
}

#[test]
fn open_reads_the_process_environment() {
    // Cargo sets CARGO_PKG_NAME for the test process; reading it needs no
    // mutation of the environment, which other tests share.
    let seen = ProcessEnvironment.var("CARGO_PKG_NAME").unwrap();
    assert_eq!(seen.as_slice(), env!("CARGO_PKG_NAME").as_bytes());
    let config = KeyProviderConfig::from_toml(
        "[key_provider]\nkind = \"env\"\nvariable = \"CARGO_PKG_NAME\"\n",
    )
    .unwrap();
    assert!(matches!(
        config.open(),
        Err(ProviderError::BadKey {
            problem: KeyProblem::Malformed,
            ..
        })
    ));
}
