//! Signers that misbehave on purpose, for the demo and the tests that show
//! the coordinator catching them.
//!
//! A faulty signer runs the real engine, so it keeps every signer-side
//! check and its markers; only what leaves it is altered. Nothing selects a
//! fault but the hidden `thresig serve --fault` flag.

use std::sync::Arc;

use thresig_crypto::{Seat, SignatureShare};
use thresig_daemon::{SignerError, SignerHandler};
use thresig_engine::{HexBytes, Request, Response};

/// How a signer misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Every round-2 share it sends is a valid encoding of a wrong share.
    InvalidShares,
}

/// A handler that answers as `inner` does, then applies its fault.
///
/// `inner` is shared, so the process can keep pruning the engine behind it.
#[derive(Debug)]
pub struct Faulty<H> {
    inner: Arc<H>,
    fault: Fault,
}

impl<H> Faulty<H> {
    /// `inner` with `fault`.
    pub fn new(inner: Arc<H>, fault: Fault) -> Self {
        Self { inner, fault }
    }
}

/// A different share with the same encoding length: the share plus one,
/// as a scalar (still canonical unless the share was the largest scalar,
/// in which case the bytes are sent as they are).
fn corrupt(share: &HexBytes) -> HexBytes {
    let mut bytes = share.0.clone();
    for byte in bytes.iter_mut().rev() {
        let (next, carry) = byte.overflowing_add(1);
        *byte = next;
        if !carry {
            break;
        }
    }
    if SignatureShare::from_bytes(&bytes).is_ok() {
        HexBytes(bytes)
    } else {
        share.clone()
    }
}

impl<H: SignerHandler> SignerHandler for Faulty<H> {
    fn handle(&self, peer: Seat, request: Request) -> Result<Response, SignerError> {
        let mut response = self.inner.handle(peer, request)?;
        if let (Fault::InvalidShares, Response::Round2(reply)) = (self.fault, &mut response) {
            reply.shares = reply.shares.iter().map(corrupt).collect();
        }
        Ok(response)
    }
}
