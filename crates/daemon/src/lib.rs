//! The signer daemon's transport: gRPC (tonic/prost) over TLS 1.3 with
//! mutual authentication (rustls), its configuration, certificate tooling,
//! health, metrics and graceful shutdown.
//!
//! This is the only crate that knows tonic, prost, rustls and tokio. It
//! converts wire messages to the domain types of its API at the edge and
//! calls a [`SignerHandler`] (the seam where the signer engine plugs in)
//! with the peer's [`Seat`], which comes from the peer's verified client
//! certificate, never from a message.
//!
//! - [`DaemonConfig`]: the `[daemon]` section, parsed with unknown fields
//!   refused and validated into typed values.
//! - [`serve`]: runs the server on [`Listeners`] the caller bound, until the
//!   caller's shutdown future completes, then drains in-flight requests;
//!   [`run_until_signal`] wraps it for a process (runtime, binding,
//!   SIGINT/SIGTERM).
//! - [`SignerClient`] with [`ClientTls`]: a coordinator's connection to one
//!   signer.
//! - [`ClusterCa`] and [`MemberTls`]: the cluster CA and member
//!   certificates that `thresig cluster init` and `thresig init` write.
//!
//! The wire API is `proto/thresig/v1/signer.proto` (package `thresig.v1`);
//! its generated types stay private to this crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod api;
mod certs;
mod client;
mod config;
mod convert;
mod error;
mod ids;
mod metrics;
mod server;
mod service;
mod tls;

/// Code generated from `proto/thresig/v1/signer.proto`; never exported.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod proto {
    tonic::include_proto!("thresig.v1");
}

pub use api::{
    DkgMessage, ErrorCode, Recovery, Round1Reply, Round1Request, Round2Reply, Round2Request,
    SignerError, SignerHandler, SigningTarget, StatusReply, WalletState, WalletStatus,
};
pub use certs::{ClusterCa, MemberTls, Validity};
pub use client::{ClientTls, SignerClient};
pub use config::{DaemonConfig, DaemonSection, Limits, LimitsSection, TlsPaths, TlsSection};
pub use error::{ConfigProblem, Error, InvalidId, RpcCode};
pub use ids::{ClusterName, DkgSessionId, Epoch, Seat, WalletId};
pub use server::{Listeners, READINESS_SERVICE, run_until_signal, serve};
