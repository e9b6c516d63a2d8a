//! The ROAST coordinator of thresig: gets a threshold signature for every
//! input of a transaction from t of a wallet's n signers, however many of
//! the others are silent, slow or malicious.
//!
//! ROAST (Ruffing, Ristenpart, Komlo, Jarecki, 2022) wraps FROST signing so
//! that no signer can stall it: the coordinator keeps a set of responsive
//! signers, starts a session whenever t of them hold fresh nonce
//! commitments, verifies shares as they arrive, excludes the senders of
//! invalid shares, and needs at most n - t + 1 sessions.
//!
//! - [`Coordinator`] is the state machine, sans-IO like quinn-proto: inputs
//!   are [`Reply`]s and clock ticks, outputs are [`Transmit`]s (a [`Request`]
//!   for one [`Seat`]), [`Event`]s and the next deadline. Its docs list the
//!   methods by kind and the order to drain them.
//! - [`Scheme`] is the per-input cryptography (build a signing package,
//!   verify one share, aggregate). The coordinator applies it element-wise:
//!   commitments, packages and shares travel as per-input vectors that ROAST
//!   treats as one unit, and one bad element makes the whole vector bad.
//! - [`Event::Culprit`] (with a [`Misbehavior`]) and [`Event::Unresponsive`]
//!   (with an [`Unresponsiveness`]) keep malice and silence apart in the
//!   types: only an invalid share is malice; timeouts and refusals
//!   ([`Refusal`]) are not.
//! - [`Event::Done`] carries the signatures ([`Signed`]); [`Event::Failed`]
//!   a [`Failure`]. Both carry [`Stats`].
//!
//! The coordinator is trusted for liveness only: signers check every request
//! themselves, so a faulty coordinator can fail a run but not make a signer
//! release a share it should not.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod config;
mod coordinator;
mod error;
mod event;
mod frost;
mod ids;
mod messages;
mod scheme;
mod session;

pub use config::{Config, DEFAULT_DEADLINE, DEFAULT_REQUEST_TIMEOUT};
pub use coordinator::Coordinator;
pub use error::Error;
pub use event::{Event, Failure, Misbehavior, Signed, Stats, Unresponsiveness};
pub use ids::SessionId;
pub use messages::{Refusal, Reply, Request, Round, Transmit};
pub use scheme::{Scheme, Verdict};
pub use thresig_crypto::Seat;
