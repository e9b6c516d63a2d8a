//! The ROAST coordinator of thresig: gets a threshold signature for every
//! input of a transaction from t of a wallet's n signers, however many of
//! the others are silent, slow or malicious.
//!
//! ROAST (Ruffing, Ristenpart, Komlo, Jarecki, 2022) wraps FROST signing so
//! that no signer can stall it: the coordinator keeps a set of responsive
//! signers, starts a session whenever t of them hold fresh nonce
//! commitments, verifies shares as they arrive, excludes the senders of
//! invalid shares, and needs at most n - t + 1 sessions when t signers answer
//! validly (plus a bounded number for signers that refuse transiently and
//! are asked again, see [`Coordinator`]). A signer rejoins the responsive
//! set only with a valid share vector carrying fresh commitments or by
//! answering a request the coordinator sent; unsolicited commitments are
//! refused. A valid share vector is never thrown away: without fresh
//! commitments (a signer at its nonce capacity) it still counts, and its
//! sender is asked for commitments again. (One deviation,
//! explained on [`Coordinator`]: a new session waits while an open one can
//! still finish within its request timeout, so a healthy run uses one.)
//!
//! The real scheme is the crypto crate's `WalletKey` (FROST over secp256k1
//! with the wallet's BIP341 tweak), for which this crate implements
//! [`Scheme`]: shares are checked against exactly the tweaked key the
//! signers sign with. This crate depends on `thresig-crypto` alone.
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
//! - [`quarantine`] keeps a member's score between runs (timeouts,
//!   refusals, invalid shares) and says when it is quarantined; a driver
//!   passes the quarantined seats as [`Config::deferred`], and the
//!   coordinator asks them last.
//! - [`Event::Done`] carries the signatures ([`Signed`]); [`Event::Failed`]
//!   a [`Failure`]: at once when culprits and refusals leave fewer than t
//!   signers able to sign, else when the deadline passes. Both carry
//!   [`Stats`].
//!
//! A driver in miniature, with every signer in-process and answering at once
//! (`thresig-cluster`'s signing driver does the same over the network, with
//! a real timer):
//!
//! ```
//! use std::time::Instant;
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//! use thresig_crypto::{GroupParams, ScriptTree, commit, import_key, sign, verify};
//! use thresig_roast::{Config, Coordinator, Event, Reply, Request};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = ChaCha20Rng::seed_from_u64(1);
//! let params = GroupParams::new(2, 3)?;
//! let (wallet, shares) = import_key(&[7; 32], params, ScriptTree::KeyPathOnly, &mut rng)?;
//! let messages = vec![[1u8; 32], [2u8; 32]]; // one sighash per input
//! let now = Instant::now(); // the driver's clock: the coordinator reads none
//! let mut coordinator =
//!     Coordinator::new(now, Config::for_wallet(&wallet), wallet.clone(), messages.clone())?;
//! let mut nonces: Vec<Vec<_>> = shares.iter().map(|_| Vec::new()).collect(); // live, per signer
//! let mut signatures = None;
//! while signatures.is_none() {
//!     let mut inbox = Vec::new();
//!     while let Some(transmit) = coordinator.poll_transmit() {
//!         let seat = transmit.to;
//!         let index = usize::from(seat.get() - 1);
//!         let (share, live) = (&shares[index], &mut nonces[index]);
//!         let mut fresh = |live: &mut Vec<_>| -> Vec<_> {
//!             (0..messages.len())
//!                 .map(|_| {
//!                     let (nonce, commitment) = commit(share, &mut rng);
//!                     live.push(nonce);
//!                     commitment
//!                 })
//!                 .collect()
//!         };
//!         let reply = match transmit.request {
//!             Request::Commit => Reply::Commitments { commitments: fresh(live) },
//!             Request::Sign { session, packages } => {
//!                 let mut out = Vec::new();
//!                 for prepared in packages.iter() {
//!                     let package = prepared.package(); // a signer decodes `prepared.bytes()`
//!                     let mine = package.commitment(seat).ok_or("no commitment")?;
//!                     let at = live.iter().position(|n| n.commitment() == mine).ok_or("no nonce")?;
//!                     out.push(sign(live.swap_remove(at), package, share, &wallet)?);
//!                 }
//!                 Reply::Shares { session, shares: out, commitments: fresh(live) }
//!             }
//!             _ => return Err("unknown request".into()),
//!         };
//!         inbox.push((seat, reply));
//!     }
//!     while let Some(event) = coordinator.poll_event() {
//!         match event {
//!             Event::Done(signed) => signatures = Some(signed.signatures),
//!             // The other terminal event: nothing more will come.
//!             Event::Failed { failure, .. } => return Err(format!("{failure:?}").into()),
//!             _ => {}
//!         }
//!     }
//!     for (seat, reply) in inbox {
//!         coordinator.handle_reply(now, seat, reply)?;
//!     }
//! }
//! for (message, signature) in messages.iter().zip(signatures.iter().flatten()) {
//!     verify(&wallet.output_key(), message, signature)?;
//! }
//! # Ok(())
//! # }
//! ```
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
pub mod quarantine;
mod scheme;
mod session;
mod standing;

pub use config::{Config, DEFAULT_DEADLINE, DEFAULT_REQUEST_TIMEOUT};
pub use coordinator::Coordinator;
pub use error::Error;
pub use event::{Event, Failure, Misbehavior, Signed, Stats, Unresponsiveness};
pub use ids::SessionId;
pub use messages::{Refusal, Reply, Request, Round, Transmit};
pub use scheme::{Scheme, Verdict};
pub use thresig_crypto::Seat;
