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

use thresig_crypto::WalletKey;
use thresig_engine::{
    AbortRequest, ConfirmationStatus, DkgProposal, DkgSessionId, RepairRequest, RepairResponse,
    Round1Request, Round1Response, Round2Request, Round2Response, SignedDkgMessage, WalletId,
    WalletStatus,
};

use crate::api::SignerError;
use crate::config::{DaemonConfig, TlsPaths};
use crate::convert::{Abandonment, WireReply, dkg_messages_to_wire};
use crate::error::{Error, RpcCode};
use crate::ids::{ClusterName, Seat};
use crate::proto;
use crate::proto::signer_client::SignerClient as Generated;
use crate::tls::{TlsPins, pinned};

/// A member's client-side TLS identity: its certificate and key, and the
/// cluster CA and name that signers' certificates must match.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    cluster: ClusterName,
    pins: Option<TlsPins>,
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
            pins: None,
        })
    }

    /// Loads the TLS files a daemon configuration names, with its pins: a
    /// signer must then present the key pinned for the seat it is asked at.
    ///
    /// # Errors
    /// As [`ClientTls::load`].
    pub fn from_config(config: &DaemonConfig) -> Result<Self, Error> {
        let mut tls = Self::load(&config.tls, config.cluster.clone())?;
        tls.pins.clone_from(&config.pins);
        Ok(tls)
    }
}

/// A connection to one signer, which must prove it holds `seat`.
///
/// Cloning is cheap (the clones share one HTTP/2 connection) and every call
/// takes `&self`, so a coordinator can run calls to many signers, or many
/// calls to one, concurrently.
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
        let pins = tls.pins.clone();
        let endpoint = Endpoint::try_from(format!("http://{addr}"))?;
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                let server_name = server_name.clone();
                let pins = pins.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    // Small request/answer exchanges: no Nagle delay.
                    tcp.set_nodelay(true)?;
                    let tls = connector.connect(server_name, tcp).await?;
                    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                    if !leaf.is_some_and(|leaf| pinned(pins.as_ref(), seat, leaf)) {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            format!("seat {seat}'s certificate does not carry its pinned key"),
                        ));
                    }
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
    pub async fn is_ready(&self) -> Result<bool, Error> {
        let request = HealthCheckRequest {
            service: crate::READINESS_SERVICE.to_owned(),
        };
        let reply = self
            .health
            .clone()
            .check(request)
            .await
            .map_err(rpc_error)?;
        Ok(reply.into_inner().status() == ServingStatus::Serving)
    }

    /// Signing round 1: fresh nonce commitments, one per input.
    ///
    /// # Errors
    /// [`Error::Refused`] with the signer's error, [`Error::Rpc`] for
    /// transport failures, [`Error::Malformed`] for a malformed reply.
    pub async fn round1(&self, request: Round1Request) -> Result<Round1Response, Error> {
        let request = proto::Round1Request::from(request);
        settle(self.rpc().round1(request).await)
    }

    /// Signing round 2: one share per input, plus fresh commitments.
    ///
    /// # Errors
    /// As [`SignerClient::round1`], and [`Error::Malformed`] for a signing
    /// target this wire version cannot carry.
    pub async fn round2(&self, request: Round2Request) -> Result<Round2Response, Error> {
        let request = proto::Round2Request::try_from(request)?;
        settle(self.rpc().round2(request).await)
    }

    /// Destroys this coordinator's round-1 vectors holding the request's
    /// commitments; returns how many nonces the signer destroyed.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    ///
    /// Commitments beyond one request's limits (2048 of them, or 256 KiB)
    /// are sent in several requests, in order, and their counts summed: a
    /// signer destroys each vector named by any of its commitments, so the
    /// parts destroy what the whole would.
    pub async fn abort(&self, request: AbortRequest) -> Result<usize, Error> {
        let mut destroyed = 0;
        for part in abort_parts(request) {
            let part = proto::AbortRequest::from(part);
            let count: usize = settle(self.rpc().abort(part).await)?;
            destroyed += count;
        }
        Ok(destroyed)
    }

    /// DKG part 1: the signer's signed round-1 message for `proposal`.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn dkg_start(&self, proposal: DkgProposal) -> Result<SignedDkgMessage, Error> {
        let proposal = proto::DkgProposal::from(proposal);
        settle(self.rpc().dkg_start(proposal).await)
    }

    /// DKG part 2: relays the other members' round-1 messages; returns the
    /// signer's sealed round-2 messages, one per other member.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn dkg_round2(
        &self,
        wallet: WalletId,
        session: DkgSessionId,
        round1: Vec<SignedDkgMessage>,
    ) -> Result<Vec<SignedDkgMessage>, Error> {
        let request = proto::DkgRound2Request {
            wallet_id: wallet.into(),
            session_id: session.0.to_vec(),
            round1: dkg_messages_to_wire(round1),
        };
        settle(self.rpc().dkg_round2(request).await)
    }

    /// DKG part 3: relays the round-2 messages addressed to the signer;
    /// returns its signed confirmation.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn dkg_finish(
        &self,
        wallet: WalletId,
        session: DkgSessionId,
        round2: Vec<SignedDkgMessage>,
    ) -> Result<SignedDkgMessage, Error> {
        let request = proto::DkgFinishRequest {
            wallet_id: wallet.into(),
            session_id: session.0.to_vec(),
            round2: dkg_messages_to_wire(round2),
        };
        settle(self.rpc().dkg_finish(request).await)
    }

    /// Relays one member's confirmation; returns how far the wallet's
    /// confirmations are at this signer.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn dkg_confirm(
        &self,
        wallet: WalletId,
        confirmation: SignedDkgMessage,
    ) -> Result<ConfirmationStatus, Error> {
        let request = proto::DkgConfirmRequest {
            wallet_id: wallet.into(),
            confirmation: Some(confirmation.into()),
        };
        settle(self.rpc().dkg_confirm(request).await)
    }

    /// Tells the signer that this coordinator's DKG `session` failed: it
    /// drops the session if still in part 1 or 2; whether it did.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn dkg_cancel(&self, wallet: WalletId, session: DkgSessionId) -> Result<bool, Error> {
        let request = proto::DkgCancelRequest {
            wallet_id: wallet.into(),
            session_id: session.0.to_vec(),
            abandon: false,
            abandonments: Vec::new(),
        };
        settle(self.rpc().dkg_cancel(request).await)
    }

    /// Asks the signer to abandon the refresh `session`: its signed
    /// abandonment (it then can never finish the session).
    ///
    /// # Errors
    /// As [`SignerClient::round1`]; the signer refuses with
    /// `refresh_confirmed` when it released its confirmation of the
    /// session (it holds the result pending, or switched to it).
    pub async fn refresh_abandon(
        &self,
        wallet: WalletId,
        session: DkgSessionId,
    ) -> Result<SignedDkgMessage, Error> {
        let request = proto::DkgCancelRequest {
            wallet_id: wallet.into(),
            session_id: session.0.to_vec(),
            abandon: true,
            abandonments: Vec::new(),
        };
        let signed: Abandonment = settle(self.rpc().dkg_cancel(request).await)?;
        Ok(signed.0)
    }

    /// Gives the signer other members' abandonments of the refresh
    /// `session`; whether it discarded a pending result of it.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn refresh_discard(
        &self,
        wallet: WalletId,
        session: DkgSessionId,
        abandonments: Vec<SignedDkgMessage>,
    ) -> Result<bool, Error> {
        let request = proto::DkgCancelRequest {
            wallet_id: wallet.into(),
            session_id: session.0.to_vec(),
            abandon: false,
            abandonments: dkg_messages_to_wire(abandonments),
        };
        settle(self.rpc().dkg_cancel(request).await)
    }

    /// The signed confirmations of the refresh `session` the signer holds
    /// (its own and every other member's it counted).
    ///
    /// # Errors
    /// As [`SignerClient::round1`]; the signer refuses with
    /// `dkg_not_in_phase` when it holds no result of the session.
    pub async fn refresh_confirmations(
        &self,
        wallet: WalletId,
        session: DkgSessionId,
    ) -> Result<Vec<SignedDkgMessage>, Error> {
        let request = proto::RefreshConfirmationsRequest {
            wallet_id: wallet.into(),
            session_id: session.0.to_vec(),
        };
        settle(self.rpc().refresh_confirmations(request).await)
    }

    /// One step of a member repair; the signer's signed message of that
    /// step, or (for the finish) the outcome.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn repair(&self, request: RepairRequest) -> Result<RepairResponse, Error> {
        let session = request.session().clone();
        let wire = crate::convert::repair_request_to_wire(request)?;
        let result: crate::convert::RepairOutcome = settle(self.rpc().repair(wire).await)?;
        crate::convert::repair_response(&session, result)
    }

    /// The wallets this coordinator is a member of, as the signer sees
    /// them, in id order.
    ///
    /// # Errors
    /// As [`SignerClient::round1`].
    pub async fn status(&self) -> Result<Vec<WalletStatus>, Error> {
        settle(self.rpc().status(proto::StatusRequest {}).await)
    }

    /// A wallet's public key record (what shares are verified and
    /// aggregated with), decoded with its canonical decoder.
    ///
    /// # Errors
    /// As [`SignerClient::round1`]; [`Error::Malformed`] if the record does
    /// not decode.
    pub async fn wallet_key(&self, wallet: WalletId) -> Result<WalletKey, Error> {
        let request = proto::WalletKeyRequest {
            wallet_id: wallet.into(),
        };
        settle(self.rpc().wallet_key(request).await)
    }

    /// A handle for one call (the generated client wants `&mut`; its
    /// clones share the connection).
    fn rpc(&self) -> Generated<Channel> {
        self.inner.clone()
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

/// `request` split into requests within an abort's limits on the signer
/// (commitments counted and sized as it counts them; one commitment too
/// large alone is still sent, for the signer to refuse). An abort of no
/// commitments stays one request.
fn abort_parts(request: AbortRequest) -> Vec<AbortRequest> {
    // The wallet id and the field keys fit in the rest.
    const PART_BYTES: usize = crate::limits::ABORT_REQUEST_BYTES - 1024;
    const PART_COMMITMENTS: usize = crate::convert::MAX_ROUND1_INPUTS as usize;
    let AbortRequest {
        wallet,
        commitments,
        ..
    } = request;
    let mut parts = vec![Vec::new()];
    let mut bytes = 0;
    for commitment in commitments {
        // The field's key and length prefix.
        let size = commitment.0.len() + 1 + 5;
        let part = parts.last_mut().unwrap_or_else(|| unreachable!());
        if !part.is_empty() && (part.len() == PART_COMMITMENTS || bytes + size > PART_BYTES) {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        parts
            .last_mut()
            .unwrap_or_else(|| unreachable!())
            .push(commitment);
    }
    parts
        .into_iter()
        .map(|commitments| AbortRequest::new(wallet.clone(), commitments))
        .collect()
}
