//! The `[daemon]` section and the TLS files: what is refused, and why.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use thresig_daemon::{
    ClientTls, ClusterCa, ClusterName, ConfigProblem, DaemonConfig, Error, Listeners, TlsPaths,
    serve,
};

const VALID: &str = r#"
listen = "0.0.0.0:7401"
metrics_listen = "127.0.0.1:9401"
cluster = "demo"

[tls]
ca_cert = "tls/ca.pem"
cert = "tls/signer.pem"
key = "/etc/thresig/signer.key"

[limits]
max_request_bytes = 1048576
max_concurrent_requests = 8
request_timeout_ms = 5000
"#;

fn parse(text: &str) -> Result<DaemonConfig, Error> {
    DaemonConfig::from_toml(text, std::path::Path::new("/srv/signer"))
}

/// `text` is refused with a value error naming `field` for `problem`, and
/// the message names the field.
fn assert_refused(text: &str, field: &str, problem: ConfigProblem) {
    let err = parse(text).unwrap_err();
    match &err {
        Error::ConfigValue {
            field: f,
            problem: p,
        } => {
            assert_eq!((*f, p), (field, &problem), "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
        other => panic!("{text}: expected a value error, got {other}"),
    }
}

#[test]
fn a_valid_section_is_typed_and_paths_resolved() {
    let config = parse(VALID).unwrap();
    assert_eq!(config.listen, "0.0.0.0:7401".parse().unwrap());
    assert_eq!(config.cluster.as_str(), "demo");
    assert_eq!(
        config.tls,
        TlsPaths::new(
            "/srv/signer/tls/ca.pem".into(),
            "/srv/signer/tls/signer.pem".into(),
            "/etc/thresig/signer.key".into()
        )
    );
    assert_eq!(config.limits.max_request_bytes, 1_048_576);
    assert_eq!(config.limits.max_concurrent_requests, 8);
    assert_eq!(config.limits.request_timeout, Duration::from_millis(5000));
}

#[test]
fn limits_have_defaults() {
    let text = VALID.split("[limits]").next().unwrap();
    let config = parse(text).unwrap();
    assert_eq!(config.limits.max_request_bytes, 4 * 1024 * 1024);
    assert_eq!(config.limits.max_concurrent_requests, 64);
    assert_eq!(config.limits.request_timeout, Duration::from_secs(30));
}

#[test]
fn connection_limits_have_defaults_and_caps_stay_within_their_totals() {
    let limits = parse(VALID).unwrap().limits;
    assert_eq!(
        (
            limits.max_pending_handshakes,
            limits.max_handshakes_per_source,
            limits.handshake_timeout,
            limits.max_member_connections,
            limits.max_connections_per_seat,
            limits.max_metrics_connections,
        ),
        (256, 32, Duration::from_secs(5), 256, 8, 16)
    );
    let with = |extra: &str| parse(&format!("{VALID}{extra}"));
    let config = with("max_pending_handshakes = 64\nmax_handshakes_per_source = 64\n").unwrap();
    assert_eq!(config.limits.max_handshakes_per_source, 64);
    let cases = [
        (
            "max_pending_handshakes = 64\nmax_handshakes_per_source = 65\n",
            "limits.max_handshakes_per_source",
            ConfigProblem::TooLarge { max: 64 },
        ),
        (
            "max_member_connections = 4\n",
            "limits.max_connections_per_seat",
            ConfigProblem::TooLarge { max: 4 },
        ),
        (
            "handshake_timeout_ms = 0\n",
            "limits.handshake_timeout_ms",
            ConfigProblem::Zero,
        ),
        (
            "max_metrics_connections = 100000\n",
            "limits.max_metrics_connections",
            ConfigProblem::TooLarge { max: 65_536 },
        ),
    ];
    for (extra, field, problem) in cases {
        assert_refused(&format!("{VALID}{extra}"), field, problem);
    }
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    for (from, to) in [
        (
            "cluster = \"demo\"",
            "cluster = \"demo\"\nlisten_addr = \"x\"",
        ),
        ("key = \"/etc", "passphrase = \"x\"\nkey = \"/etc"),
        (
            "request_timeout_ms = 5000",
            "request_timeout_ms = 5000\nmax_conns = 3",
        ),
    ] {
        let text = VALID.replace(from, to);
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, Error::ConfigSyntax(_)), "{err}");
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let cases = [
        (
            "max_concurrent_requests = 8",
            "max_concurrent_requests = 0",
            "limits.max_concurrent_requests",
            ConfigProblem::Zero,
        ),
        (
            "max_request_bytes = 1048576",
            "max_request_bytes = 1073741824",
            "limits.max_request_bytes",
            ConfigProblem::TooLarge {
                max: 64 * 1024 * 1024,
            },
        ),
        (
            "request_timeout_ms = 5000",
            "request_timeout_ms = 0",
            "limits.request_timeout_ms",
            ConfigProblem::Zero,
        ),
        (
            "metrics_listen = \"127.0.0.1:9401\"",
            "metrics_listen = \"0.0.0.0:9401\"",
            "metrics_listen",
            ConfigProblem::NotLoopback,
        ),
        (
            "cluster = \"demo\"",
            "cluster = \"Demo Cluster\"",
            "cluster",
            ConfigProblem::BadClusterName,
        ),
        (
            "cert = \"tls/signer.pem\"",
            "cert = \"\"",
            "tls.cert",
            ConfigProblem::EmptyPath,
        ),
    ];
    for (from, to, field, problem) in cases {
        assert_refused(&VALID.replace(from, to), field, problem);
    }
    // Values of the wrong type are syntax errors with the field's name.
    let err =
        parse(&VALID.replace("listen = \"0.0.0.0:7401\"", "listen = \"localhost\"")).unwrap_err();
    assert!(matches!(err, Error::ConfigSyntax(_)), "{err}");
    assert!(err.to_string().contains("listen"), "{err}");
    let err =
        parse(&VALID.replace("request_timeout_ms = 5000", "request_timeout_ms = -1")).unwrap_err();
    assert!(matches!(err, Error::ConfigSyntax(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_readable_tls_key_is_refused() {
    let cluster = Cluster::new();
    let key = cluster.path("seat1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let config = cluster.config("");
    let listeners = Listeners::bind(&config).await.unwrap();
    let never = std::future::pending::<()>();
    let err = serve(&config, listeners, Arc::new(Recorder::default()), never)
        .await
        .unwrap_err();
    match err {
        Error::KeyFilePermissions { path, mode } => {
            assert_eq!(path, key);
            assert_eq!(mode, 0o644);
        }
        other => panic!("expected a permission error, got {other}"),
    }
    let paths = TlsPaths::new(
        cluster.path("ca.pem"),
        cluster.path("seat1.pem"),
        key.clone(),
    );
    let err = ClientTls::load(&paths, ClusterName::new(CLUSTER).unwrap()).unwrap_err();
    assert!(matches!(err, Error::KeyFilePermissions { .. }), "{err}");

    // The same file at 0600 is accepted.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    ClientTls::load(&paths, ClusterName::new(CLUSTER).unwrap()).unwrap();
}

#[test]
fn key_files_are_created_0600_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path(), "demo");
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    let paths = member(&ca, dir.path(), seat(4), "m4", &dir.path().join("ca.pem"));
    assert_eq!(mode("m4.key"), 0o600);
    assert_eq!(mode("m4.pem"), 0o644);

    let again = ca.issue_member(seat(4), validity()).unwrap();
    let err = again.write(&paths.cert, &paths.key).unwrap_err();
    assert!(matches!(err, Error::WriteFile { .. }), "{err}");
    let err = ca
        .write(&dir.path().join("ca.pem"), &dir.path().join("ca.key"))
        .unwrap_err();
    assert!(matches!(err, Error::WriteFile { .. }), "{err}");

    // A reloaded CA issues certificates the original's members trust.
    let reloaded = ClusterCa::load(
        ClusterName::new("demo").unwrap(),
        &dir.path().join("ca.pem"),
        &dir.path().join("ca.key"),
    )
    .unwrap();
    assert_eq!(reloaded.cert_pem(), ca.cert_pem());
}

#[test]
fn request_memory_limits_have_defaults_derived_from_the_others() {
    let config = parse(VALID).unwrap();
    // Half the slots per member (below the default of 8); the rest are
    // defaults.
    assert_eq!(config.limits.max_requests_per_seat, 4);
    assert_eq!(config.limits.max_streams_per_connection, 32);
    assert_eq!(config.limits.body_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.max_in_flight_bytes, 64 * 1024 * 1024);
    assert_eq!(config.limits.max_round1_inputs_per_second, 1024);
    assert_eq!(config.limits.max_requests_per_second_per_seat, 1000);
    let two_slots = VALID.replace("max_concurrent_requests = 8", "max_concurrent_requests = 2");
    assert_eq!(parse(&two_slots).unwrap().limits.max_requests_per_seat, 1);
    // One slot cannot be shared so that no member holds more than half.
    let one_slot = VALID.replace("max_concurrent_requests = 8", "max_concurrent_requests = 1");
    match parse(&one_slot).unwrap_err() {
        Error::ConfigValue { field, problem } => assert_eq!(
            (field, problem),
            (
                "limits.max_concurrent_requests",
                ConfigProblem::BelowTwice {
                    other: "limits.max_requests_per_seat",
                    min: 2
                }
            )
        ),
        other => panic!("expected a value error, got {other}"),
    }
    let text = VALID.replace(
        "request_timeout_ms = 5000",
        "request_timeout_ms = 5000\nmax_requests_per_seat = 4\nmax_streams_per_connection = 4\nbody_timeout_ms = 700\nmax_in_flight_bytes = 2097152\nmax_round1_inputs_per_second = 1\nmax_requests_per_second_per_seat = 2",
    );
    let limits = parse(&text).unwrap().limits;
    assert_eq!(limits.max_requests_per_seat, 4);
    assert_eq!(limits.max_streams_per_connection, 4);
    assert_eq!(limits.body_timeout, Duration::from_millis(700));
    assert_eq!(limits.max_in_flight_bytes, 2 * 1024 * 1024);
    assert_eq!(limits.max_round1_inputs_per_second, 1);
    assert_eq!(limits.max_requests_per_second_per_seat, 2);
}

#[test]
fn request_memory_limits_out_of_bounds_are_refused_naming_the_field() {
    let cases = [
        // At most half of the 8 slots: one member never holds them all.
        (
            "max_requests_per_seat = 8",
            "limits.max_requests_per_seat",
            ConfigProblem::TooLarge { max: 4 },
        ),
        (
            "max_requests_per_seat = 5",
            "limits.max_requests_per_seat",
            ConfigProblem::TooLarge { max: 4 },
        ),
        (
            "max_streams_per_connection = 0",
            "limits.max_streams_per_connection",
            ConfigProblem::Zero,
        ),
        (
            "max_streams_per_connection = 5000",
            "limits.max_streams_per_connection",
            ConfigProblem::TooLarge { max: 1024 },
        ),
        (
            "body_timeout_ms = 0",
            "limits.body_timeout_ms",
            ConfigProblem::Zero,
        ),
        (
            "max_round1_inputs_per_second = 0",
            "limits.max_round1_inputs_per_second",
            ConfigProblem::Zero,
        ),
        (
            "max_requests_per_second_per_seat = 1000001",
            "limits.max_requests_per_second_per_seat",
            ConfigProblem::TooLarge { max: 1_000_000 },
        ),
        (
            "max_in_flight_bytes = 2097151",
            "limits.max_in_flight_bytes",
            ConfigProblem::BelowTwice {
                other: "limits.max_request_bytes",
                min: 2 * 1_048_576,
            },
        ),
    ];
    for (line, field, problem) in cases {
        let text = VALID.replace(
            "request_timeout_ms = 5000",
            &format!("request_timeout_ms = 5000\n{line}"),
        );
        assert_refused(&text, field, problem);
    }
}

#[test]
fn signing_turns_per_wallet_default_to_four_within_the_members_requests() {
    let per_wallet = |text: &str| {
        parse(text)
            .unwrap()
            .limits
            .max_signing_requests_per_seat_per_wallet
    };
    // Four requests per member (half of 8 slots) allow the default of 4.
    assert_eq!(per_wallet(VALID), 4);
    // Eight (the per-member default, below half of 64 slots) still get 4.
    let many_slots = VALID.replace(
        "max_concurrent_requests = 8",
        "max_concurrent_requests = 64",
    );
    assert_eq!(per_wallet(&many_slots), 4);
    // Never more than the member's requests.
    let two_slots = VALID.replace("max_concurrent_requests = 8", "max_concurrent_requests = 2");
    assert_eq!(per_wallet(&two_slots), 1);
    let set = VALID.replace(
        "request_timeout_ms = 5000",
        "request_timeout_ms = 5000\nmax_signing_requests_per_seat_per_wallet = 2",
    );
    assert_eq!(per_wallet(&set), 2);
}

#[test]
fn signing_turns_per_wallet_out_of_bounds_are_refused_naming_the_key() {
    let field = "limits.max_signing_requests_per_seat_per_wallet";
    let cases = [
        (
            "max_signing_requests_per_seat_per_wallet = 0",
            ConfigProblem::Zero,
        ),
        // Above the member's requests (half of the 8 slots).
        (
            "max_signing_requests_per_seat_per_wallet = 5",
            ConfigProblem::TooLarge { max: 4 },
        ),
        (
            "max_requests_per_seat = 2\nmax_signing_requests_per_seat_per_wallet = 3",
            ConfigProblem::TooLarge { max: 2 },
        ),
    ];
    for (lines, problem) in cases {
        let text = VALID.replace(
            "request_timeout_ms = 5000",
            &format!("request_timeout_ms = 5000\n{lines}"),
        );
        assert_refused(&text, field, problem);
    }
}
