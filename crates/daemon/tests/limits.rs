//! Request memory limits over real loopback sockets, driven by a raw HTTP/2
//! client authenticated as a member: streams per connection, per-method
//! sizes, counts refused before decoding, request slots per seat and the
//! deadline for receiving a body.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thresig_engine::{Round1Request, WalletId};
use tokio::net::TcpStream;

/// The gRPC status of an OUT_OF_RANGE refusal (request too large).
const OUT_OF_RANGE: &str = "11";

/// An HTTP/2 connection to the server at `addr`, authenticated with the
/// member files `<name>.{pem,key}`.
async fn raw_connection(
    cluster: &Cluster,
    addr: SocketAddr,
    name: &str,
) -> h2::client::SendRequest<Bytes> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(cluster.path("ca.pem")).unwrap();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_file_iter(cluster.path(&format!("{name}.pem")))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(cluster.path(&format!("{name}.key"))).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(format!("seat-1.{CLUSTER}")).unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    send.ready().await.unwrap()
}

/// A unary gRPC frame (uncompressed) around `message`.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap());
    frame.put_slice(message);
    frame.freeze()
}

/// A POST of `method` of the signer service, body to follow.
fn grpc_request(method: &str) -> http::Request<()> {
    http::Request::post(format!(
        "https://seat-1.{CLUSTER}/thresig.v1.Signer/{method}"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap()
}

/// What the server answered: the gRPC status and the reply message bytes.
struct Answer {
    status: String,
    body: Vec<u8>,
}

impl Answer {
    /// Whether the reply carries the signer error `code`.
    fn has_error_code(&self, code: &str) -> bool {
        self.body.windows(code.len()).any(|w| w == code.as_bytes())
    }
}

async fn answer(response: h2::client::ResponseFuture) -> Answer {
    let response = response.await.unwrap();
    let header = |headers: &http::HeaderMap| {
        headers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    if let Some(status) = header(response.headers()) {
        return Answer {
            status,
            body: Vec::new(),
        };
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().unwrap();
    Answer {
        status: header(&trailers).unwrap(),
        body: bytes,
    }
}

/// Sends `message` as the whole body of one `method` call.
async fn call(send: &mut h2::client::SendRequest<Bytes>, method: &str, message: &[u8]) -> Answer {
    let (response, mut body) = send.send_request(grpc_request(method), false).unwrap();
    body.send_data(grpc_frame(message), true).unwrap();
    answer(response).await
}

/// A length-delimited protobuf field.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    let mut len = bytes.len();
    while len >= 0x80 {
        out.push(u8::try_from(len & 0x7f).unwrap() | 0x80);
        len >>= 7;
    }
    out.push(u8::try_from(len).unwrap());
    out.extend_from_slice(bytes);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_caps_the_streams_of_a_connection() {
    let cluster = Cluster::new();
    let server = start(cluster.config(""), Arc::new(Recorder::default())).await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    // One round trip, so the server's settings have arrived.
    let answer = call(&mut send, "Status", &[]).await;
    assert_eq!(answer.status, "0");
    assert_eq!(send.current_max_send_streams(), 32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_request_of_one_megabyte_is_refused_by_its_method_limit() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    // An unknown field, which a decoder would skip: only the size refuses it.
    let padding = field(15, &vec![0; 1024 * 1024]);
    let answer = call(&mut send, "Status", &padding).await;
    assert_eq!(answer.status, OUT_OF_RANGE);
    assert!(handler.peers().is_empty());
    // The same method within its limit is served.
    assert_eq!(call(&mut send, "Status", &[]).await.status, "0");
    assert_eq!(handler.peers(), vec![seat(2)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_with_two_million_empty_commitments_is_refused_undecoded() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    let mut message = field(1, b"vault-1");
    for _ in 0..2_000_000 {
        message.extend_from_slice(&field(2, &[]));
    }
    let answer = call(&mut send, "Abort", &message).await;
    assert_eq!(answer.status, OUT_OF_RANGE);
    assert!(handler.peers().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round2_with_more_packages_than_any_wallet_signs_is_refused_undecoded() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    // 1 MiB, within round 2's size limit, but 500,000 packages: a wallet
    // signs at most 2048 inputs.
    let mut message = field(1, b"vault-1");
    message.extend_from_slice(&field(5, &field(1, &[7; 32])));
    for _ in 0..500_000 {
        message.extend_from_slice(&field(6, &[]));
    }
    let answer = call(&mut send, "Round2", &message).await;
    assert_eq!(answer.status, "0");
    assert!(answer.has_error_code("invalid_request"));
    assert!(handler.peers().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seat_cannot_take_every_request_slot() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    let (gate, control) = Gate::new();
    let limits = "max_concurrent_requests = 4\nrequest_timeout_ms = 5000";
    let server = start(cluster.config(limits), gate).await;
    let attacker = server.client(&cluster.client_tls()).await;
    let wallet = WalletId::new("vault-1").unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let attacker = attacker.clone();
        let wallet = wallet.clone();
        held.push(tokio::spawn(async move {
            attacker.round1(Round1Request::new(wallet, 1)).await
        }));
        control.wait_entered().await;
    }
    // Half the slots are the most one seat holds: its next request is
    // refused at once, retryably, instead of queueing for a slot.
    let err = attacker
        .round1(Round1Request::new(wallet.clone(), 1))
        .await
        .unwrap_err();
    assert_eq!(refusal(&err).code.as_str(), "overloaded");
    assert!(err.is_retryable());
    // Another member still gets a slot.
    let member = server.client(&cluster.tls_of("seat3")).await;
    let honest = tokio::spawn(async move { member.round1(Round1Request::new(wallet, 1)).await });
    control.wait_entered().await;
    for _ in 0..3 {
        control.release.send(()).unwrap();
    }
    honest.await.unwrap().unwrap();
    for call in held {
        call.await.unwrap().unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bodies_are_cut_off_and_another_member_is_served() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    // Streams announcing a 4 MB round 2 whose body never ends.
    let mut pending = Vec::new();
    for _ in 0..20 {
        send = send.ready().await.unwrap();
        let (response, mut body) = send.send_request(grpc_request("Round2"), false).unwrap();
        let mut head = BytesMut::new();
        head.put_u8(0);
        head.put_u32(4_000_000);
        head.put_slice(&[0; 60_000]);
        body.send_data(head.freeze(), false).unwrap();
        pending.push((response, body));
    }
    let member = server.client(&cluster.tls_of("seat3")).await;
    member
        .round1(Round1Request::new(WalletId::new("vault-1").unwrap(), 1))
        .await
        .unwrap();
    // Every unfinished call is answered with a retryable refusal once the
    // body deadline passes; the guard only keeps a broken server from
    // hanging the test.
    for (response, _body) in pending {
        let answer = tokio::time::timeout(Duration::from_secs(60), answer(response))
            .await
            .expect("an unfinished body was never cut off");
        assert_eq!(answer.status, "0");
        assert!(answer.has_error_code("timeout"));
    }
    assert_eq!(handler.peers(), vec![seat(3)]);
    server.stop().await;
}
