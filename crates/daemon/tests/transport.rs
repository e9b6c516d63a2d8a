//! The daemon over real loopback sockets: authentication, round trips,
//! limits, errors, metrics and graceful shutdown.

mod common;

use std::sync::Arc;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use thresig_daemon::{ClientTls, Code, Error, Recovery, RpcCode, SignerClient};
use thresig_engine::{
    AbortRequest, Digest, DkgProposal, DkgSessionId, ErrorCode as EngineCode, HexBytes,
    Round1Request, SigningTarget, WalletEpoch, WalletId, WalletStateKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn wallet() -> WalletId {
    vault()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_reaches_the_handler_with_the_authenticated_seat() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let client = server.client(&cluster.client_tls()).await;
    assert!(client.is_ready().await.unwrap());

    let reply = client
        .round1(Round1Request::new(wallet(), 3))
        .await
        .unwrap();
    assert_eq!((reply.wallet, reply.seat), (wallet(), seat(1)));
    assert_eq!(reply.epoch, WalletEpoch(7));
    assert_eq!(reply.commitments, commitments(3));

    let abort = AbortRequest::new(wallet(), commitments(2));
    assert_eq!(client.abort(abort).await.unwrap(), 2);

    let session = DkgSessionId([9; 32]);
    let proposal = DkgProposal::new(session, wallet(), 2, Vec::new());
    assert_eq!(client.dkg_start(proposal).await.unwrap(), confirmation(1));
    // A relayed message keeps its author's seat (3) and its payload.
    let relayed = vec![confirmation(3)];
    let echoed = client
        .dkg_round2(wallet(), session, relayed.clone())
        .await
        .unwrap();
    assert_eq!(echoed, relayed);
    let finished = client.dkg_finish(wallet(), session, relayed).await.unwrap();
    assert_eq!(finished, confirmation(1));
    let confirmed = client.dkg_confirm(wallet(), confirmation(2)).await.unwrap();
    assert_eq!(
        (confirmed.confirmed, confirmed.needed, confirmed.active),
        (1, 3, false)
    );
    assert!(client.dkg_cancel(wallet(), session).await.unwrap());

    let status = client.status().await.unwrap();
    assert_eq!(status.len(), 1);
    let wallet_status = &status[0];
    assert_eq!(wallet_status.state, WalletStateKind::Active);
    assert_eq!((wallet_status.threshold, wallet_status.members), (2, 3));
    assert_eq!(wallet_status.seat, seat(1));
    assert_eq!(wallet_status.epoch, Some(WalletEpoch(4)));
    assert_eq!(wallet_status.output_key, Some(HexBytes(vec![0xab; 32])));
    assert_eq!(wallet_status.live_nonces, 5);

    // The test double answers bytes that are no key record: the client
    // refuses them as a malformed reply.
    let err = client.wallet_key(wallet()).await.unwrap_err();
    assert!(matches!(err, Error::Malformed(_)), "{err}");

    // The seat is always the client's certificate's (2), whatever the
    // messages name.
    assert_eq!(handler.peers(), vec![seat(2); 9]);
    server.stop().await;
}

/// Asserts that the server refuses `tls` (at the handshake or the first call).
async fn assert_refused(addr: std::net::SocketAddr, tls: &ClientTls) {
    let err = match SignerClient::connect(tls, addr, seat(1)).await {
        Err(err) => err,
        Ok(client) => client
            .round1(Round1Request::new(wallet(), 1))
            .await
            .expect_err("the server accepted the client"),
    };
    assert!(
        matches!(
            err,
            Error::Rpc {
                code: RpcCode::Unavailable,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_or_cluster_is_refused() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let ca_cert = cluster.path("ca.pem");

    // Another CA issues a certificate for seat 2 of a cluster of the same name.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = make_ca(other_dir.path(), CLUSTER);
    let foreign = member_client(&other_ca, other_dir.path(), seat(2), "seat2", &ca_cert);
    assert_refused(server.addr, &foreign).await;

    // The cluster's own CA, but a certificate naming seat 2 of another cluster.
    let same_ca = cluster.reload_ca("other");
    let renamed = member_client(&same_ca, cluster.dir.path(), seat(2), "other2", &ca_cert);
    assert_refused(server.addr, &renamed).await;

    // The genuine member still gets through, and so does a member issued
    // later by the reloaded cluster CA; nothing else reached the handler.
    let client = server.client(&cluster.client_tls()).await;
    client
        .round1(Round1Request::new(wallet(), 1))
        .await
        .unwrap();
    let reloaded = cluster.reload_ca(CLUSTER);
    let late = member_client(&reloaded, cluster.dir.path(), seat(3), "seat3", &ca_cert);
    let late = server.client(&late).await;
    late.round1(Round1Request::new(wallet(), 1)).await.unwrap();
    assert_eq!(handler.peers(), vec![seat(2), seat(3)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;

    // A TLS 1.3 client that trusts the cluster CA but presents no certificate.
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(cluster.path("ca.pem")).unwrap();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(format!("seat-1.{CLUSTER}")).unwrap();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    // TLS 1.3 lets the client finish first; the server's refusal arrives as
    // an alert on the first read (an accepted client would read the
    // server's HTTP/2 settings frame instead).
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let read = tls.read(&mut buf).await;
        assert!(
            matches!(read, Err(_) | Ok(0)),
            "the server answered: {read:?}"
        );
    }
    assert!(handler.peers().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_a_server_with_another_seats_certificate() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    // The server holds seat 1's certificate; a client expecting seat 3 must refuse.
    let err = match SignerClient::connect(&cluster.client_tls(), server.addr, seat(3)).await {
        Err(err) => err,
        Ok(client) => client.status().await.expect_err("wrong server accepted"),
    };
    assert!(
        matches!(err, Error::Transport(_) | Error::Rpc { .. }),
        "{err}"
    );
    assert!(handler.peers().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_completes_during_shutdown() {
    let cluster = Cluster::new();
    let (gate, control) = Gate::new();
    let mut server = start(cluster.config(""), gate).await;
    let client = server.client(&cluster.client_tls()).await;
    let call = tokio::spawn(async move { client.round1(Round1Request::new(wallet(), 2)).await });

    control.wait_entered().await;
    // Shutdown is signalled and serve has seen it...
    server.shutdown.take().unwrap().send(()).unwrap();
    server.shutdown_seen.take().unwrap().await.unwrap();
    assert!(
        !server.task.is_finished(),
        "serve returned with a request in flight"
    );
    // ...and the request still completes once the handler is released.
    control.release.send(()).unwrap();
    let reply = call.await.unwrap().unwrap();
    assert_eq!(reply.commitments, commitments(2));
    server.task.await.unwrap().unwrap();
    // The listener is closed once serve has returned.
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_wait_and_time_out() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    cluster.add_member(seat(4), "seat4");
    let (gate, control) = Gate::new();
    let limits =
        "max_concurrent_requests = 2\nmax_requests_per_seat = 1\nrequest_timeout_ms = 1000";
    let server = start(cluster.config(limits), gate).await;
    let first = server.client(&cluster.client_tls()).await;
    let held = tokio::spawn(async move { first.round1(Round1Request::new(wallet(), 1)).await });
    control.wait_entered().await;
    let fourth = server.client(&cluster.tls_of("seat4")).await;
    let held_too =
        tokio::spawn(async move { fourth.round1(Round1Request::new(wallet(), 1)).await });
    control.wait_entered().await;

    // Both slots are held until their handlers return, which the test
    // allows only later. The second request cannot reach the handler before
    // its timeout, although the first one's timeout (earlier) has passed:
    // a timed-out call keeps its slot until the blocking work is done. (The
    // second request is another member's: the first member's own share of
    // the requests is taken.)
    let second = server.client(&cluster.tls_of("seat3")).await;
    let err = second
        .round1(Round1Request::new(wallet(), 1))
        .await
        .unwrap_err();
    assert_eq!(refusal(&err).code.as_str(), "timeout");
    assert!(err.is_retryable());
    for held in [held, held_too] {
        let err = held.await.unwrap().unwrap_err();
        assert_eq!(refusal(&err).code.as_str(), "timeout");
    }

    // Once the first handlers return, the next request is served.
    for _ in 0..3 {
        control.release.send(()).unwrap();
    }
    second
        .round1(Round1Request::new(wallet(), 1))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_by_the_transport() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config("max_request_bytes = 1024"), handler.clone()).await;
    let client = server.client(&cluster.client_tls()).await;
    let psbt = |len| SigningTarget::psbt(vec![0x70; len]);
    let err = client.round2(round2(psbt(4096))).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rpc {
                code: RpcCode::MessageTooLarge,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("too large"), "{err}");
    assert!(handler.peers().is_empty());
    // Below the limit the same request goes through.
    let reply = client.round2(round2(psbt(512))).await.unwrap();
    assert_eq!(reply.shares, vec![HexBytes(vec![1; 100])]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_arrive_with_their_code_and_recovery() {
    let cluster = Cluster::new();
    for (code, recovery) in [
        (EngineCode::NonceUnknown, Recovery::Terminal),
        (EngineCode::StorageUnavailable, Recovery::Retryable),
    ] {
        let handler = Arc::new(Recorder::failing(code, recovery));
        let server = start(cluster.config(""), handler).await;
        let client = server.client(&cluster.client_tls()).await;
        let target = SigningTarget::digests(vec![Digest([7; 32])]);
        let err = client.round2(round2(target)).await.unwrap_err();
        assert_eq!(refusal(&err).code.kind(), &Code::Engine(code));
        assert_eq!(refusal(&err).recovery, recovery);
        assert_eq!(err.is_retryable(), recovery == Recovery::Retryable);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_invalid_request_without_reaching_the_handler() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let client = server.client(&cluster.client_tls()).await;
    for inputs in [0, 1_000_000] {
        let request = Round1Request::new(wallet(), inputs);
        let err = client.round1(request).await.unwrap_err();
        assert_eq!(refusal(&err).code.as_str(), "invalid_request");
        assert_eq!(refusal(&err).recovery, Recovery::Terminal);
    }
    assert!(handler.peers().is_empty());
    server.stop().await;
}

/// The value of the series `name{labels}` in an OpenMetrics text, or 0.
fn series(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_method_and_outcome() {
    let cluster = Cluster::new();
    let server = start(
        cluster.config(""),
        Arc::new(Recorder::failing(
            EngineCode::PolicyDenied,
            Recovery::Terminal,
        )),
    )
    .await;
    let ok = r#"thresig_requests_total{method="round1",outcome="ok"}"#;
    let denied = r#"thresig_requests_total{method="round2",outcome="policy_denied"}"#;
    let before = scrape(server.metrics_addr).await;
    assert_eq!(series(&before, ok), 0);

    let client = server.client(&cluster.client_tls()).await;
    for _ in 0..2 {
        client
            .round1(Round1Request::new(wallet(), 1))
            .await
            .unwrap();
    }
    let err = client.round2(round2(SigningTarget::psbt(vec![1]))).await;
    assert_eq!(refusal(&err.unwrap_err()).code.as_str(), "policy_denied");

    let after = scrape(server.metrics_addr).await;
    assert_eq!(series(&after, ok), 2, "{after}");
    assert_eq!(series(&after, denied), 1, "{after}");
    let latency = r#"thresig_request_duration_seconds_count{method="round1",outcome="ok"}"#;
    assert_eq!(series(&after, latency), 2, "{after}");
    server.stop().await;
}
