//! The tonic service: it converts each admitted request (see
//! [`crate::limits`]) into the signer's request, runs the
//! [`SignerHandler`] on a blocking thread within the request's time,
//! records metrics and encodes the answer. No protocol logic here.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::api::{ErrorCode, Recovery, SignerError, SignerHandler};
use thresig_engine::{Request as SignerRequest, Response as SignerResponse};

use crate::conn::PerKind;
use crate::convert::{Answer, WireReply};
use crate::error::Error;
use crate::ids::Seat;
use crate::limits::{Admitted, Ticket};
use crate::metrics::{Metrics, RequestLabels};
use crate::proto;
use crate::tls::PeerIdentity;

/// The service state shared by all connections.
pub(crate) struct SignerService<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) timeout: Duration,
    pub(crate) metrics: Metrics,
    /// Limits the lines a peer's requests write at `info` and above.
    pub(crate) lines: RequestLines,
}

/// A kind of request line: the member, the method and the outcome's label
/// (or `panicked`), all from bounded sets.
type RequestKind = (Seat, &'static str, Cow<'static, str>);

/// At most one line per [`RequestKind`] and interval at `info` and above;
/// every request is logged at `debug`. A member sending thousands of
/// requests a second thus writes a few lines every ten seconds, each with
/// the count of those left out; the metrics count them all.
pub(crate) type RequestLines = PerKind<RequestKind>;

/// The authenticated peer of a request, set by the accept loop.
fn peer<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    request
        .extensions()
        .get::<PeerIdentity>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("no authenticated seat on this connection"))
}

impl<H: SignerHandler> SignerService<H> {
    /// Runs one admitted request: call the handler on a blocking thread,
    /// within the time left of the request timeout, and convert its answer
    /// to the method's result.
    ///
    /// When the timeout passes while the handler runs, the handler still
    /// finishes (a blocking call cannot be cancelled) and keeps its slot and
    /// its bytes of the budget until then; the caller gets `timeout` and a retry of the same request
    /// is answered from the signer's markers.
    async fn call<W>(
        &self,
        method: &'static str,
        peer: PeerIdentity,
        admitted: Admitted,
        decoded: Result<SignerRequest, Error>,
    ) -> W
    where
        W: WireReply,
        W::Result: Answer,
    {
        let started = Instant::now();
        let outcome = match decoded {
            Ok(request) => self
                .run_blocking(method, peer.seat, admitted, request)
                .await
                .and_then(|response| {
                    // Past the deadline the answer was thrown away: a
                    // share counts once it goes out to the member.
                    if let SignerResponse::Round2(answer) = &response {
                        crate::metrics::shares_released(answer.shares.len());
                    }
                    W::Result::from_response(response).ok_or_else(|| {
                        SignerError::new(
                            ErrorCode::INTERNAL,
                            Recovery::Terminal,
                            format!("the signer answered {method} with another kind of response"),
                        )
                    })
                }),
            Err(err) => Err(SignerError::new(
                ErrorCode::INVALID_REQUEST,
                Recovery::Terminal,
                err.to_string(),
            )),
        };
        let labels = RequestLabels {
            method,
            outcome: match &outcome {
                Ok(_) => Cow::Borrowed("ok"),
                Err(err) => err.code.metric_label(),
            },
        };
        let elapsed = started.elapsed();
        self.metrics.observe(&labels, elapsed);
        let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let (seat, addr, label) = (peer.seat.get(), peer.addr, &labels.outcome);
        debug!(method, seat, %addr, outcome = %label, elapsed_us, "request");
        let kind = (peer.seat, method, label.clone());
        if let Some(suppressed) = self.lines.allow(kind, Instant::now()) {
            info!(method, seat, %addr, outcome = %label, elapsed_us, suppressed, "request");
        }
        W::from_outcome(outcome.map_err(proto::Error::from))
    }

    /// One RPC: authenticates the peer, converts the wire request to the
    /// signer's [`SignerRequest`] (once) and answers with
    /// [`SignerService::call`].
    async fn rpc<Q, W>(&self, method: &'static str, request: Request<Q>) -> Rpc<W>
    where
        Q: TryInto<SignerRequest, Error = Error>,
        W: WireReply,
        W::Result: Answer,
    {
        let peer = peer(&request)?;
        let admitted = request
            .extensions()
            .get::<Ticket>()
            .and_then(Ticket::take)
            .ok_or_else(|| Status::internal("a request reached the signer without admission"))?;
        let decoded = request.into_inner().try_into();
        Ok(Response::new(
            self.call(method, peer, admitted, decoded).await,
        ))
    }

    async fn run_blocking(
        &self,
        method: &'static str,
        seat: Seat,
        admitted: Admitted,
        request: SignerRequest,
    ) -> Result<SignerResponse, SignerError> {
        let handler = self.handler.clone();
        let lines = &self.lines;
        let deadline = admitted.deadline;
        let work = async move {
            let joined = tokio::task::spawn_blocking(move || {
                let _admitted = admitted;
                handler.handle(seat, request)
            })
            .await;
            joined.unwrap_or_else(|_| {
                let kind = (seat, method, Cow::Borrowed("panicked"));
                if let Some(suppressed) = lines.allow(kind, Instant::now()) {
                    warn!(
                        seat = seat.get(),
                        method, suppressed, "a request handler panicked"
                    );
                }
                Err(SignerError::new(
                    ErrorCode::INTERNAL,
                    Recovery::Terminal,
                    "the request handler failed",
                ))
            })
        };
        // Counted down on drop, so a call abandoned by its client (tonic
        // drops the future) is not counted forever.
        let _in_flight = InFlight::enter(&self.metrics);
        tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or_else(|_| {
                Err(SignerError::new(
                    ErrorCode::TIMEOUT,
                    Recovery::Retryable,
                    format!("no answer within {} ms", self.timeout.as_millis()),
                ))
            })
    }
}

/// One request in the in-flight gauge, for as long as the value lives.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn enter(metrics: &Metrics) -> Self {
        let gauge = metrics.in_flight().clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One RPC: the generated method's request in, its reply out.
type Rpc<W> = Result<Response<W>, Status>;

/// Each RPC is its wire request converted to a [`SignerRequest`], the one
/// handler call, and the [`SignerResponse`] converted to its result; the
/// method name labels its metrics and logs.
#[tonic::async_trait]
impl<H: SignerHandler> proto::signer_server::Signer for SignerService<H> {
    async fn round1(&self, request: Request<proto::Round1Request>) -> Rpc<proto::Round1Reply> {
        self.rpc("round1", request).await
    }

    async fn round2(&self, request: Request<proto::Round2Request>) -> Rpc<proto::Round2Reply> {
        self.rpc("round2", request).await
    }

    async fn abort(&self, request: Request<proto::AbortRequest>) -> Rpc<proto::AbortReply> {
        self.rpc("abort", request).await
    }

    async fn dkg_start(&self, request: Request<proto::DkgProposal>) -> Rpc<proto::DkgStartReply> {
        self.rpc("dkg_start", request).await
    }

    async fn dkg_round2(
        &self,
        request: Request<proto::DkgRound2Request>,
    ) -> Rpc<proto::DkgRound2Reply> {
        self.rpc("dkg_round2", request).await
    }

    async fn dkg_finish(
        &self,
        request: Request<proto::DkgFinishRequest>,
    ) -> Rpc<proto::DkgFinishReply> {
        self.rpc("dkg_finish", request).await
    }

    async fn dkg_confirm(
        &self,
        request: Request<proto::DkgConfirmRequest>,
    ) -> Rpc<proto::DkgConfirmReply> {
        self.rpc("dkg_confirm", request).await
    }

    async fn dkg_cancel(
        &self,
        request: Request<proto::DkgCancelRequest>,
    ) -> Rpc<proto::DkgCancelReply> {
        self.rpc("dkg_cancel", request).await
    }

    async fn status(&self, request: Request<proto::StatusRequest>) -> Rpc<proto::StatusReply> {
        self.rpc("status", request).await
    }

    async fn wallet_key(
        &self,
        request: Request<proto::WalletKeyRequest>,
    ) -> Rpc<proto::WalletKeyReply> {
        self.rpc("wallet_key", request).await
    }

    async fn refresh_confirmations(
        &self,
        request: Request<proto::RefreshConfirmationsRequest>,
    ) -> Rpc<proto::RefreshConfirmationsReply> {
        self.rpc("refresh_confirmations", request).await
    }

    async fn repair(&self, request: Request<proto::RepairRequest>) -> Rpc<proto::RepairReply> {
        self.rpc("repair", request).await
    }
}
