//! A raw HTTP/2 client for attack tests: it speaks gRPC framing by hand
//! over a member's mutually authenticated TLS connection, so a test can
//! send what no well-behaved client sends (unfinished bodies, oversized or
//! padded messages). Shared by the daemon's and the CLI's tests.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// A member's TLS files.
pub struct MemberFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An HTTP/2 connection to the signer at `addr` (whose certificate names
/// `server_name`), authenticated with `files`, ready for a request.
pub async fn connect(
    files: &MemberFiles,
    addr: SocketAddr,
    server_name: &str,
) -> h2::client::SendRequest<Bytes> {
    connect_with(files, addr, server_name, &h2::client::Builder::new()).await
}

/// [`connect`] with the HTTP/2 settings of `builder` (for example a receive
/// window of 0, so that no reply is ever read).
pub async fn connect_with(
    files: &MemberFiles,
    addr: SocketAddr,
    server_name: &str,
    builder: &h2::client::Builder,
) -> h2::client::SendRequest<Bytes> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.ca_cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
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
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (send, connection) = builder.handshake(tls).await.unwrap();
    tokio::spawn(connection);
    send.ready().await.unwrap()
}

/// The header of a unary gRPC frame (uncompressed) of `len` bytes.
fn frame_header(len: usize) -> BytesMut {
    let mut frame = BytesMut::with_capacity(5);
    frame.put_u8(0);
    frame.put_u32(u32::try_from(len).unwrap());
    frame
}

/// A POST of `method` of the signer service, body to follow.
pub fn grpc_request(method: &str) -> http::Request<()> {
    http::Request::post(format!("https://signer/thresig.v1.Signer/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// What the server answered: the gRPC status and the reply message bytes.
pub struct Answer {
    pub status: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// Whether the reply carries the signer error `code`: its `Error`
    /// (field 2 of every reply) has exactly this `code` (field 1).
    pub fn has_error_code(&self, code: &str) -> bool {
        self.error_code().is_some_and(|found| found == code)
    }

    /// The code of the signer error the reply carries, if it carries one.
    pub fn error_code(&self) -> Option<String> {
        self.body
            .get(5..)
            .and_then(|reply| <ReplyError as prost::Message>::decode(reply).ok())
            .and_then(|reply| reply.error)
            .map(|error| error.code)
    }
}

/// What this client reads of any reply: its `Error` (field 2 of every
/// reply; the result, field 1, differs by method and is skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct ReplyError {
    #[prost(message, optional, tag = "2")]
    error: Option<WireError>,
}

/// The `code` of the wire `Error` message.
#[derive(Clone, PartialEq, prost::Message)]
struct WireError {
    #[prost(string, tag = "1")]
    code: String,
}

/// Waits for the whole answer to a request.
pub async fn answer(response: h2::client::ResponseFuture) -> Answer {
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
pub async fn call(
    send: &mut h2::client::SendRequest<Bytes>,
    method: &str,
    message: &[u8],
) -> Answer {
    let (response, mut body) = send.send_request(grpc_request(method), false).unwrap();
    let mut frame = frame_header(message.len());
    frame.put_slice(message);
    // A signer that refuses the call before reading it may have closed the
    // stream already; its answer says so.
    let _ = body.send_data(frame.freeze(), true);
    answer(response).await
}

/// Starts a `method` call announcing a message of `declared` bytes and
/// sends only `sent` of them, leaving the body open.
pub async fn unfinished(
    send: h2::client::SendRequest<Bytes>,
    method: &str,
    declared: usize,
    sent: usize,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::client::ResponseFuture,
    h2::SendStream<Bytes>,
) {
    let mut send = send.ready().await.unwrap();
    let (response, mut body) = send.send_request(grpc_request(method), false).unwrap();
    let mut head = frame_header(declared);
    head.put_bytes(0, sent);
    // A signer that refuses the call at once has closed the stream by now;
    // its answer says so.
    let _ = body.send_data(head.freeze(), false);
    (send, response, body)
}

/// A length-delimited protobuf field.
pub fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
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
