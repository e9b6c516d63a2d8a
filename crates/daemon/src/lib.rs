//! The signer daemon's transport: gRPC (tonic/prost) over TLS 1.3 with
//! mutual authentication (rustls), its configuration, certificate tooling,
//! health, metrics and graceful shutdown.
//!
//! This is the only library crate that knows tonic, prost and rustls
//! (`thresig-cluster` and the command line drive it on tokio). It
//! converts wire messages to the signer engine's own
//! [`thresig_engine::Request`] at the edge and calls a [`SignerHandler`]
//! with the peer's [`Seat`], which comes from the peer's verified client
//! certificate, never from a message.
//!
//! - [`SignerHandler`]: the seam, one `handle(peer, Request) -> Response`
//!   for every RPC (signing rounds 1 and 2, abort, the DKG parts, status,
//!   wallet key). [`EngineHandler`] implements it over a
//!   [`thresig_engine::Signer`]: it maps the peer's
//!   cluster seat to the member's identity key (the engine's coordinator
//!   id), reads the clock and the OS RNG (the engine is sans-IO), and maps
//!   engine errors to a [`SignerError`] with the engine's stable code.
//!
//! - [`DaemonConfig`]: the `[daemon]` section, parsed with unknown fields
//!   refused and validated into typed values.
//! - [`serve`]: runs the server on [`Listeners`] the caller bound, until the
//!   caller's shutdown future completes, then drains in-flight requests;
//!   [`run_until_signal`] wraps it for a process (runtime, binding,
//!   SIGINT/SIGTERM).
//! - [`SignerClient`] with [`ClientTls`]: a coordinator's connection to one
//!   signer, with one async method per RPC; cheap to clone, calls take
//!   `&self`. A refusal arrives as [`Error::Refused`] with the signer's
//!   [`SignerError`], a transport failure as [`Error::Rpc`].
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
mod conn;
mod convert;
mod engine;
mod error;
mod ids;
mod limits;
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

pub use api::{Code, ErrorCode, Recovery, SignerError, SignerHandler};
pub use certs::{ClusterCa, MemberTls, Validity};
pub use client::{ClientTls, SignerClient};
pub use config::{
    DaemonConfig, DaemonSection, Limits, LimitsSection, MAX_REQUEST_BYTES, TlsPaths, TlsSection,
};
pub use engine::{EngineHandler, wall_clock};
pub use error::{ConfigProblem, Error, InvalidId, RpcCode};
pub use ids::{ClusterName, Seat};
pub use metrics::{
    CulpritReason, LifecycleInFlight, record_culprits, record_signature, record_signing_failure,
};
pub use server::{Listeners, READINESS_SERVICE, run_until_signal, serve};
pub use tls::{TlsPins, certificate_key_fingerprint, key_fingerprint};
