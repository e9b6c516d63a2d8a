//! The metrics endpoint of running `thresig serve` processes, scraped over
//! a real socket around a DKG, a signature, a payment the policy refuses, a
//! refused request and a DEK rotation: each counter moves by exactly what
//! the operation did.

mod common;

use common::{
    ProcessCluster, WALLET, address, dkg, json, json_of, payment, scrape, seat, self_payment, sign,
};
use thresig_crypto::Seat;
use thresig_engine::WalletId;

/// One scrape of the metrics of member `seat`.
struct Scrape(String);

impl Scrape {
    fn of(cluster: &ProcessCluster, seat: Seat) -> Self {
        let addr = cluster
            .node(seat)
            .daemon
            .expect("a member's configuration has a [daemon] section")
            .metrics_listen;
        let response = scrape(addr);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        Self(response)
    }

    /// The value of the series `series` (name and labels exactly as
    /// encoded), 0 when the scrape does not show it yet.
    fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }
}

/// What a series grew by between two scrapes of one member.
fn grew(before: &Scrape, after: &Scrape, series: &str) -> f64 {
    after.value(series) - before.value(series)
}

const COORDINATED: &str = "thresig_signatures_coordinated_total";
const AUDIT_HEAD: &str = "thresig_audit_head_sequence";
const SESSIONS_COUNT: &str = "thresig_roast_sessions_per_signature_count";
const SESSIONS_SUM: &str = "thresig_roast_sessions_per_signature_sum";
const SHARES: &str = "thresig_shares_released_total";
const ROUND2_OK: &str = r#"thresig_requests_total{method="round2",outcome="ok"}"#;
const COMMITS: &str = "thresig_store_commit_duration_seconds_count";
const BATCHES: &str = "thresig_store_commit_batch_units_count";
const DKG_IN_FLIGHT: &str = r#"thresig_lifecycle_operations_in_flight{operation="dkg"}"#;
const WRAPS: &str = r#"thresig_key_provider_calls_total{operation="wrap",outcome="ok"}"#;
const WRAP_LATENCY: &str =
    r#"thresig_key_provider_call_duration_seconds_count{operation="wrap",outcome="ok"}"#;
const WITNESS_OK: &str = r#"thresig_store_witness_writes_total{outcome="ok"}"#;

#[test]
fn counters_move_by_exactly_what_a_dkg_signatures_errors_and_a_rotation_did() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[], 15);
    cluster.start_all(&runtime);
    let seats = cluster.seats();
    let config = cluster.config_path(seat(1));
    let config_str = config.to_str().unwrap();

    // A configured wallet waits for its DKG on every member, until the
    // DKG confirms its key.
    for &s in &seats {
        assert_eq!(Scrape::of(&cluster, s).value(DKG_IN_FLIGHT), 1.0);
    }
    let wallet = dkg(&config, WALLET);
    for &s in &seats {
        assert_eq!(Scrape::of(&cluster, s).value(DKG_IN_FLIGHT), 0.0);
    }

    // One signature coordinated by member 1.
    let before: Vec<Scrape> = seats.iter().map(|&s| Scrape::of(&cluster, s)).collect();
    let dir = tempfile::tempdir().unwrap();
    let psbt = self_payment(dir.path(), &wallet, 1);
    let signed = json_of(&sign(config_str, WALLET, &psbt), &["sign"], 0);
    let sessions = signed["sessions"].as_f64().unwrap();
    let after: Vec<Scrape> = seats.iter().map(|&s| Scrape::of(&cluster, s)).collect();
    assert_eq!(grew(&before[0], &after[0], COORDINATED), 1.0);
    assert_eq!(grew(&before[0], &after[0], SESSIONS_COUNT), 1.0);
    assert_eq!(grew(&before[0], &after[0], SESSIONS_SUM), sessions);
    for (b, a) in before.iter().zip(&after).skip(1) {
        assert_eq!(
            grew(b, a, COORDINATED),
            0.0,
            "only the coordinator counts it"
        );
    }
    // One input: each round-2 answer released one share, and at least
    // the threshold answered.
    let shares: f64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| grew(b, a, SHARES))
        .sum();
    let answers: f64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| grew(b, a, ROUND2_OK))
        .sum();
    assert_eq!(shares, answers);
    assert!(shares >= 2.0, "{shares} shares released");
    // Each answer's audit entry committed with its marker: the audit head
    // moved at least as far as the answers went out.
    for (b, a) in before.iter().zip(&after) {
        assert!(grew(b, a, AUDIT_HEAD) >= grew(b, a, ROUND2_OK));
    }
    // Both store histograms observe each group commit once, and a share
    // leaves only after its marker's commit.
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.value(COMMITS), a.value(BATCHES));
        assert!(grew(b, a, COMMITS) >= grew(b, a, SHARES));
    }

    // A payment the policy refuses ends the run without a signature.
    let before = Scrape::of(&cluster, seat(1));
    let refused_payment = payment(dir.path(), &wallet, 2, &address(9));
    let out = sign(config_str, WALLET, &refused_payment);
    let recovery = match out.status.code() {
        Some(1) => "terminal",
        Some(2) => "retryable",
        other => panic!(
            "sign exited {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    let after = Scrape::of(&cluster, seat(1));
    let failed = format!(r#"thresig_signatures_failed_total{{recovery="{recovery}"}}"#);
    assert_eq!(grew(&before, &after, &failed), 1.0);
    assert_eq!(grew(&before, &after, COORDINATED), 0.0);
    assert_eq!(grew(&before, &after, SESSIONS_COUNT), 0.0);

    // A refused request counts under its RPC and error code.
    let member2 = Scrape::of(&cluster, seat(2));
    let peers = cluster.peers(seat(1));
    let refused = runtime.block_on(async {
        let client = peers.client(seat(2)).await.unwrap();
        client
            .wallet_key(WalletId::new("no-such-wallet".to_owned()).unwrap())
            .await
            .unwrap_err()
    });
    let thresig_daemon::Error::Refused(refused) = refused else {
        panic!("{refused}");
    };
    // The engine does not tell a member whether a wallet it is not a
    // member of exists.
    assert_eq!(refused.code.as_str(), "coordinator_not_member");
    let series = format!(
        r#"thresig_requests_total{{method="wallet_key",outcome="{}"}}"#,
        refused.code.as_str()
    );
    let member2_after = Scrape::of(&cluster, seat(2));
    assert_eq!(grew(&member2, &member2_after, &series), 1.0);

    // A DEK rotation through the running signer wraps one new DEK under
    // the KEK and rewrites the witness.
    let before = Scrape::of(&cluster, seat(1));
    let rotated = json(&["keys", "rotate-dek", "--config", config_str], 0);
    assert_eq!(rotated["via"], "daemon", "{rotated}");
    let after = Scrape::of(&cluster, seat(1));
    assert_eq!(grew(&before, &after, WRAPS), 1.0);
    assert_eq!(grew(&before, &after, WRAP_LATENCY), 1.0);
    assert!(grew(&before, &after, WITNESS_OK) >= 1.0);
}

/// Far above a signature on loopback; only ends a hung `thresig sign`.
const SIGN_BOUND: std::time::Duration = std::time::Duration::from_secs(90);

/// `thresig sign` writes the signed PSBT and returns although its own
/// signer's admin socket accepts the run's report and never answers (a
/// hung signer): the report is for the metrics, the signature is the job.
#[test]
fn sign_writes_its_outputs_when_its_own_signer_never_answers_the_report() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[], 16);
    cluster.start_all(&runtime);
    let config = cluster.config_path(seat(1));
    let wallet = dkg(&config, WALLET);
    // A listener that accepts and stays silent takes the path of member
    // 1's admin socket (its signer goes on serving the members).
    let socket = thresig_cluster::node::admin_socket_path(
        &thresig_cluster::config::Config::load(&config).unwrap(),
    );
    std::fs::remove_file(&socket).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let psbt = self_payment(dir.path(), &wallet, 1);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args([
            "sign",
            "--config",
            config.to_str().unwrap(),
            "--wallet",
            WALLET,
        ])
        .args(["--psbt", psbt.to_str().unwrap(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().unwrap()));
    let Ok(out) = finished.recv_timeout(SIGN_BOUND) else {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        panic!("thresig sign hung on its own signer's silent admin socket");
    };
    let signed = json_of(&out, &["sign"], 0);
    let written = std::fs::read_to_string(signed["psbt"].as_str().unwrap()).unwrap();
    assert!(!written.is_empty());
    assert!(std::path::Path::new(signed["tx"].as_str().unwrap()).exists());
}
