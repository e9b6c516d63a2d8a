//! [`SignerClient`]: a coordinator's connection to one signer, speaking
//! domain types over mutually authenticated TLS 1.3.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::api::{
    DkgMessage, Round1Reply, Round1Request, Round2Reply, Round2Request, SignerError, StatusReply,
};
use crate::config::{DaemonConfig, TlsPaths};
use crate::convert::WireReply;
use crate::error::{Error, RpcCode};
use crate::ids::{ClusterName, Seat};
use crate::proto;
use crate::proto::signer_client::SignerClient as Generated;

/// A member's client-side TLS identity: its certificate and key, and the
/// cluster CA and name that signers' certificates must match.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    cluster: ClusterName,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads the member's TLS files.
    ///
    /// # Errors
    /// [`Error::KeyFilePermissions`], [`Error::ReadFile`], [`Error::Pem`] and
    /// [`Error::Tls`].
    pub fn load(paths: &TlsPaths, cluster: ClusterName) -> Result<Self, Error> {
        Ok(Self {
            config: crate::tls::client_config(paths)?,
            cluster,
        })
    }

    /// Loads the TLS files a daemon configuration names.
    ///
    /// # Errors
    /// As [`ClientTls::load`].
    pub fn from_config(config: &DaemonConfig) -> Result<Self, Error> {
        Self::load(&config.tls, config.cluster.clone())
    }
}

/// A connection to one signer, which must prove it holds `seat`.
#[derive(Debug, Clone)]
pub struct SignerClient {
    inner: Generated<Channel>,
    health: HealthClient<Channel>,
}

impl SignerClient {
    /// Connects to the signer of `seat` at `addr`. The signer's certificate
    /// must chain to the cluster CA and name `seat-<n>.<cluster>`.
    ///
    /// A signer that refuses this member's certificate may do so only after
    /// the handshake (TLS 1.3 checks the client last): the first call then
    /// fails with [`RpcCode::Unavailable`].
    ///
    /// # Errors
    /// [`Error::Transport`] if the connection or handshake fails.
    pub async fn connect(tls: &ClientTls, addr: SocketAddr, seat: Seat) -> Result<Self, Error> {
        let server_name = ServerName::try_from(tls.cluster.seat_name(seat))
            .map_err(|_| Error::InvalidId(crate::error::InvalidId::Cluster))?;
        let connector = TlsConnector::from(tls.config.clone());
        let endpoint = Endpoint::try_from(format!("http://{addr}"))?;
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                let server_name = server_name.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let tls = connector.connect(server_name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await?;
        Ok(Self {
            inner: Generated::new(channel.clone()),
            health: HealthClient::new(channel),
        })
    }

    /// Whether the signer accepts requests: its readiness as the standard
    /// gRPC health service reports it for [`crate::READINESS_SERVICE`]
    /// (false once its shutdown has begun).
    ///
    /// # Errors
    /// [`Error::Rpc`] when the signer cannot be asked.
    pub async fn is_ready(&mut self) -> Result<bool, Error> {
        let request = HealthCheckRequest {
            service: crate::READINESS_SERVICE.to_owned(),
        };
        let reply = self.health.check(request).await.map_err(rpc_error)?;
        Ok(reply.into_inner().status() == ServingStatus::Serving)
    }

    /// Signing round 1.
    ///
    /// # Errors
    /// [`Error::Refused`] with the signer's error, [`Error::Rpc`] for
    /// transport failures, [`Error::Malformed`] for a malformed reply.
    pub async fn round1(&mut self, request: Round1Request) -> Result<Round1Reply, Error> {
        settle(self.inner.round1(proto::Round1Request::from(request)).await)
    }

    /// Signing round 2.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn round2(&mut self, request: Round2Request) -> Result<Round2Reply, Error> {
        settle(self.inner.round2(proto::Round2Request::from(request)).await)
    }

    /// Relays one DKG message; returns the messages the signer emits.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn dkg(&mut self, message: DkgMessage) -> Result<Vec<DkgMessage>, Error> {
        settle(self.inner.dkg(proto::DkgMessage::from(message)).await)
    }

    /// The signer's wallets.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn status(&mut self) -> Result<StatusReply, Error> {
        settle(self.inner.status(proto::StatusRequest {}).await)
    }
}

/// Turns a call's outcome into the domain result.
fn settle<W, T>(reply: Result<tonic::Response<W>, tonic::Status>) -> Result<T, Error>
where
    W: WireReply,
    T: TryFrom<W::Result, Error = Error>,
{
    let reply = reply.map_err(rpc_error)?.into_inner();
    match reply.into_outcome() {
        Some(Ok(result)) => T::try_from(result),
        Some(Err(error)) => Err(Error::Refused(SignerError::try_from(error)?)),
        None => Err(Error::Malformed("reply without an outcome")),
    }
}

/// Maps a gRPC status to [`Error::Rpc`].
fn rpc_error(status: tonic::Status) -> Error {
    let code = match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
            RpcCode::Unavailable
        }
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => RpcCode::Unauthenticated,
        tonic::Code::OutOfRange => RpcCode::MessageTooLarge,
        tonic::Code::DeadlineExceeded => RpcCode::DeadlineExceeded,
        tonic::Code::ResourceExhausted => RpcCode::ResourceExhausted,
        _ => RpcCode::Other,
    };
    Error::Rpc {
        code,
        message: status.message().to_owned(),
    }
}
