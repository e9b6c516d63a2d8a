//! The `[key_provider]` section: what validates, and the error for each
//! mistake. Property tests feed it arbitrary TOML.

use proptest::prelude::*;
use thresig_store::Recovery;
use thresig_store::provider::{
    ConfigProblem, KeyProviderConfig, KeyProviderSection, ProviderError, ProviderKind,
};

fn parse(body: &str) -> Result<KeyProviderConfig, ProviderError> {
    KeyProviderConfig::from_toml(&format!("[key_provider]\n{body}"))
}

fn problem(body: &str) -> ConfigProblem {
    match parse(body) {
        Err(err @ ProviderError::InvalidConfig { .. }) => {
            assert_eq!(err.recovery(), Recovery::Terminal);
            match err {
                ProviderError::InvalidConfig { problem } => problem,
                _ => unreachable!(),
            }
        }
        other => panic!("expected a configuration error for {body:?}, got {other:?}"),
    }
}

const RECOVERY_KEY: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

#[test]
fn each_kind_validates() {
    let env = parse(&format!(
        "kind = \"env\"\nvariable = \"KEK\"\nkey_id = \"k2\"\nrecovery_public_key = \"{RECOVERY_KEY}\"\n\
         [[key_provider.previous]]\nvariable = \"KEK_OLD\"\nkey_id = \"k1\"\n"
    ))
    .unwrap();
    assert_eq!(env.kind(), ProviderKind::Env);
    assert_eq!(
        hex::encode(env.recovery_public_key().unwrap().as_bytes()),
        RECOVERY_KEY
    );
    let file = parse("kind = \"file\"\ndirectory = \"/etc/thresig/keys\"").unwrap();
    assert_eq!(file.kind(), ProviderKind::File);
    assert!(file.recovery_public_key().is_none());
    let command = parse(
        "kind = \"command\"\nmode = \"get-key\"\ncommand = [\"/usr/bin/kms\", \"--key\", \"signer\"]\n\
         pass_env = [\"AWS_REGION\"]",
    )
    .unwrap();
    assert_eq!(command.kind(), ProviderKind::Command);
    // The default timeout is 30 s.
    assert!(
        format!("{command:?}").contains("timeout: 30s"),
        "{command:?}"
    );
    parse("kind = \"command\"\nmode = \"raw\"\ncommand = [\"/k\"]\ntimeout_secs = 300").unwrap();
}

#[test]
fn the_section_is_found_among_others_and_required() {
    let doc = "[store]\ndata_dir = \"/var/lib/thresig\"\n[key_provider]\nkind = \"file\"\npath = \"/k\"\n";
    assert_eq!(
        KeyProviderConfig::from_toml(doc).unwrap().kind(),
        ProviderKind::File
    );
    assert!(matches!(
        KeyProviderConfig::from_toml("[store]\n"),
        Err(ProviderError::InvalidConfig {
            problem: ConfigProblem::MissingSection
        })
    ));
}

#[test]
fn syntax_errors_name_the_line_but_do_not_quote_it() {
    let secret = "c0ffee".repeat(10);
    match problem(&format!(
        "kind = \"env\"\nvariable = \"KEK\"\nkey = \"{secret}\"\n"
    )) {
        ConfigProblem::Syntax { message, line } => {
            assert_eq!(line, 4);
            assert!(message.contains("unknown field `key`"), "{message}");
            assert!(!message.contains("c0ffee"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Values are not quoted either: a key pasted into the wrong setting
    // must not end up in a log.
    for body in [
        "kind = \"env\"\nvariable = \"KEK\"\nkey_id = 1234567890",
        "kind = \"c0ffeec0ffee\"",
        "kind = \"command\"\nmode = \"c0ffeec0ffee\"\ncommand = [\"/k\"]",
        "kind = \"command\"\nmode = \"wrap\"\ncommand = [\"/k\"]\ntimeout_secs = \"c0ffeec0ffee\"",
    ] {
        match problem(body) {
            ConfigProblem::Syntax { message, .. } => {
                assert!(message.contains("expected"), "{message}");
                assert!(
                    !message.contains("c0ffee") && !message.contains("1234567890"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        problem("kind = \"command\"\nmode = \"shell\"\ncommand = [\"/k\"]"),
        ConfigProblem::Syntax { .. }
    ));
    assert!(matches!(
        problem("kind = \"env\"\nvariable = \"A\"\nprevious = [{ variable = \"B\", id = \"x\" }]"),
        ConfigProblem::Syntax { .. }
    ));
}

#[test]
fn settings_are_checked_against_the_kind() {
    assert_eq!(
        problem("kind = \"env\""),
        ConfigProblem::Missing {
            kind: ProviderKind::Env,
            field: "variable"
        }
    );
    assert_eq!(
        problem("kind = \"env\"\nvariable = \"KEK\"\npath = \"/k\""),
        ConfigProblem::NotApplicable {
            kind: ProviderKind::Env,
            field: "path"
        }
    );
    assert_eq!(
        problem("kind = \"file\""),
        ConfigProblem::Missing {
            kind: ProviderKind::File,
            field: "path"
        }
    );
    assert_eq!(
        problem("kind = \"file\"\npath = \"/k\"\ndirectory = \"/d\""),
        ConfigProblem::Conflict {
            first: "path",
            second: "directory"
        }
    );
    assert_eq!(
        problem("kind = \"file\"\ndirectory = \"/d\"\nkey_id = \"k\""),
        ConfigProblem::NotApplicable {
            kind: ProviderKind::File,
            field: "key_id"
        }
    );
    assert_eq!(
        problem("kind = \"file\"\npath = \"/k\"\ntimeout_secs = 5"),
        ConfigProblem::NotApplicable {
            kind: ProviderKind::File,
            field: "timeout_secs"
        }
    );
    assert_eq!(
        problem("kind = \"command\"\ncommand = [\"/k\"]"),
        ConfigProblem::Missing {
            kind: ProviderKind::Command,
            field: "mode"
        }
    );
    assert_eq!(
        problem("kind = \"command\"\nmode = \"wrap\"\ncommand = [\"/k\"]\nvariable = \"V\""),
        ConfigProblem::NotApplicable {
            kind: ProviderKind::Command,
            field: "variable"
        }
    );
}

#[test]
fn values_are_validated() {
    let command = |extra: &str| format!("kind = \"command\"\nmode = \"wrap\"\n{extra}");
    assert_eq!(
        problem(&command("command = []")),
        ConfigProblem::EmptyCommand
    );
    assert_eq!(
        problem(&command("command = [\"kms-client\"]")),
        ConfigProblem::RelativeProgram {
            program: "kms-client".into()
        }
    );
    assert_eq!(
        problem(&command("command = [\"/k\", \"a\\u0000b\"]")),
        ConfigProblem::NulInArgument
    );
    for secs in [0, 301, 100_000] {
        assert_eq!(
            problem(&command(&format!(
                "command = [\"/k\"]\ntimeout_secs = {secs}"
            ))),
            ConfigProblem::TimeoutOutOfRange { secs }
        );
    }
    assert_eq!(
        problem(&command("command = [\"/k\"]\npass_env = [\"A=B\"]")),
        ConfigProblem::BadVariableName { field: "pass_env" }
    );
    assert_eq!(
        problem("kind = \"env\"\nvariable = \"\""),
        ConfigProblem::BadVariableName { field: "variable" }
    );
    assert_eq!(
        problem("kind = \"env\"\nvariable = \"KEK\"\nkey_id = \"two words\""),
        ConfigProblem::BadKeyId { field: "key_id" }
    );
    let bad_keys = [
        &RECOVERY_KEY[..62],
        "zz20f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        &"00".repeat(32),
    ];
    for key in bad_keys {
        assert_eq!(
            problem(&format!(
                "kind = \"file\"\npath = \"/k\"\nrecovery_public_key = \"{key}\""
            )),
            ConfigProblem::BadRecoveryKey
        );
    }
}

#[test]
fn the_section_deserializes_inside_a_larger_configuration() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SignerConfig {
        key_provider: KeyProviderSection,
    }
    let config: SignerConfig =
        toml::from_str("[key_provider]\nkind = \"env\"\nvariable = \"KEK\"\n").unwrap();
    assert_eq!(
        config.key_provider.validate().unwrap().kind(),
        ProviderKind::Env
    );
}

/// Lines a `[key_provider]` section might hold, valid and not.
const LINES: &[&str] = &[
    "variable = \"KEK\"",
    "variable = \"\"",
    "variable = 5",
    "key_id = \"k1\"",
    "key_id = \"\"",
    "previous = [{ variable = \"OLD\" }]",
    "previous = [{ variable = \"OLD\", key_id = \"k0\" }, { variable = \"OLDER\" }]",
    "previous = \"OLD\"",
    "path = \"/etc/kek\"",
    "directory = \"/etc/keys\"",
    "command = [\"/usr/bin/kms\"]",
    "command = []",
    "command = [\"kms\", \"--x\"]",
    "mode = \"wrap\"",
    "mode = \"get-key\"",
    "mode = \"raw\"",
    "mode = \"shell\"",
    "timeout_secs = 1",
    "timeout_secs = 0",
    "timeout_secs = -3",
    "timeout_secs = 99999999999999999999",
    "pass_env = [\"HOME\"]",
    "pass_env = [\"A=B\"]",
    "recovery_public_key = \"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\"",
    "recovery_public_key = \"xyz\"",
    "surprise = true",
];

fn section() -> impl Strategy<Value = (String, String)> {
    (
        prop::sample::select(vec!["env", "file", "command", "kms", ""]),
        prop::sample::subsequence(LINES.to_vec(), 0..=6),
    )
        .prop_map(|(kind, lines)| {
            let body = format!("kind = \"{kind}\"\n{}", lines.join("\n"));
            (kind.to_owned(), body)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_text_never_panics(
        text in "\\PC{0,200}",
        inside in any::<bool>(),
    ) {
        let doc = if inside { format!("[key_provider]\n{text}") } else { text };
        match KeyProviderConfig::from_toml(&doc) {
            Ok(_) | Err(ProviderError::InvalidConfig { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn arbitrary_sections_validate_or_say_why((kind, body) in section()) {
        match parse(&body) {
            Ok(config) => prop_assert_eq!(config.kind().to_string(), kind),
            Err(ProviderError::InvalidConfig { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}
