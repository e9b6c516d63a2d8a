//! The demo's malicious members and `thresig load`'s flaky ones: real
//! signers whose round-2 shares (or DKG round-1 or round-2 packages) are
//! altered on the way out, or whose round-2 answers are held back past the
//! coordinator's request timeout, hosted in the demo's (or the load
//! generator's) own process.
//!
//! A faulty member runs the real engine and daemon on its configured
//! address, so it keeps every signer-side check and its markers; only the
//! shares that leave it are wrong. It signs the answers it alters with its
//! own identity key, as a member that means to cheat would, so that the
//! coordinator can keep them as proof (docs/blame.md). A stalling member
//! answers round 1 at once and every round 2 only after [`STALL`], as a
//! member whose disk hangs on its marker commit would: it keeps being put
//! into sessions that then wait a whole request timeout, which is what the
//! coordinator's quarantine (docs/quarantine.md) is measured against. This
//! module is reachable only from `thresig demo` and `thresig load`: no flag
//! or configuration of `thresig serve` makes a signer misbehave.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Result, anyhow};
use thresig_cluster::local::LocalError;
use thresig_cluster::node::Node;
use thresig_crypto::{Seat, SignatureShare};
use thresig_daemon::{SignerError, SignerHandler};
use thresig_engine::{DkgPayload, HexBytes, Request, Response, SignedDkgMessage, package_hash};
use tokio::sync::oneshot;

use crate::because;

/// How a hosted member misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misbehavior {
    /// Every round-2 share it sends is a valid encoding of a wrong share,
    /// signed by the member.
    InvalidShares,
    /// Every round-2 answer leaves only after [`STALL`].
    StallsSigning,
    /// Its DKG round-2 package to its first recipient does not open (one
    /// byte of the ciphertext changed), signed by the member.
    InvalidDkgPackages,
    /// Its DKG round-1 package's proof of knowledge does not verify (one
    /// bit of its last byte changed), signed by the member with both
    /// signatures, the kind-bound one included.
    BadRound1Proof,
}

/// How long a stalling member holds each round-2 request: past the
/// coordinator's default request timeout (10 s), so each session it joins
/// waits that timeout out, and within the daemon's own request timeout
/// (30 s), so the member never answers with the daemon's `timeout` refusal
/// instead.
pub(crate) const STALL: Duration = Duration::from_secs(15);

/// A handler that answers as `inner` does, except as `misbehavior` says.
struct Misbehaving<H> {
    inner: Arc<H>,
    identity: ed25519_dalek::SigningKey,
    misbehavior: Misbehavior,
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

impl<H: SignerHandler> SignerHandler for Misbehaving<H> {
    fn handle(&self, peer: Seat, request: Request) -> Result<Response, SignerError> {
        if self.misbehavior == Misbehavior::StallsSigning {
            if matches!(request, Request::Round2(_)) {
                // The daemon runs each request on a blocking thread of its
                // own, so only this answer waits: round 1 stays prompt.
                std::thread::sleep(STALL);
            }
            return self.inner.handle(peer, request);
        }
        if self.misbehavior == Misbehavior::BadRound1Proof {
            let kind = match &request {
                Request::DkgStart(proposal) => Some((proposal.kind.clone(), proposal.threshold)),
                _ => None,
            };
            let mut response = self.inner.handle(peer, request)?;
            if let (Some((kind, threshold)), Response::DkgMessages { messages }) =
                (kind, &mut response)
                && let Some(first) = messages.first_mut()
                && let DkgPayload::Round1 { package, hpke_key } = &first.payload
            {
                // The package ends with its proof of knowledge's scalar.
                let mut package = package.clone();
                if let Some(last) = package.0.last_mut() {
                    *last ^= 1;
                }
                let payload = DkgPayload::Round1 {
                    package,
                    hpke_key: hpke_key.clone(),
                };
                *first = SignedDkgMessage::sign_round1(
                    &self.identity,
                    first.session,
                    first.wallet.clone(),
                    first.sender,
                    payload,
                    (&kind, threshold),
                );
            }
            return Ok(response);
        }
        if self.misbehavior == Misbehavior::InvalidDkgPackages {
            let mut response = self.inner.handle(peer, request)?;
            if let Response::DkgMessages { messages } = &mut response
                && let Some(first) = messages.first_mut()
                && let DkgPayload::Round2 { to, sealed, echo } = &first.payload
            {
                let mut sealed = sealed.clone();
                if let Some(last) = sealed.0.last_mut() {
                    *last ^= 1;
                }
                let payload = DkgPayload::Round2 {
                    to: *to,
                    sealed,
                    echo: echo.clone(),
                };
                *first = SignedDkgMessage::sign(
                    &self.identity,
                    first.session,
                    first.wallet.clone(),
                    first.sender,
                    payload,
                );
            }
            return Ok(response);
        }
        let answered = match &request {
            Request::Round2(r) => Some((package_hash(r), r.wallet.clone())),
            _ => None,
        };
        let mut response = self.inner.handle(peer, request)?;
        if let (Response::Round2(reply), Some((hash, wallet))) = (&mut response, answered) {
            // The key record it answered with, as the engine signs it.
            let Response::WalletKey { key } =
                self.inner.handle(peer, Request::WalletKey { wallet })?
            else {
                return Ok(response);
            };
            reply.shares = reply.shares.iter().map(corrupt).collect();
            reply.sign(&self.identity, &hash, &key.0);
        }
        Ok(response)
    }
}

/// A misbehaving member, served on its own thread of the demo's (or the
/// load generator's) process until [`Faulty::stop`] (or drop).
pub(crate) struct Faulty {
    seat: Seat,
    log: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Faulty {
    /// Opens the member of the configuration at `config` (as `thresig
    /// serve` does) and serves it misbehaving as `misbehavior` says.
    ///
    /// Only what the member logs on its own thread goes to `log`: its
    /// daemon (listening, connections, each request and its refusals, all
    /// polled by the runtime on that thread) and why it stopped. What it
    /// logs on any other thread goes to the demo's standard error, like
    /// the demo's own lines: opening its store and engine (on the caller's
    /// thread), the engine answering requests (on the runtime's blocking
    /// threads), the pruner, the key manager and the store's writer.
    pub(crate) fn start(
        seat: Seat,
        config: &Path,
        log: &Path,
        misbehavior: Misbehavior,
    ) -> Result<Self> {
        let log_path = log;
        let node = Node::open(config).map_err(|e| because(format_args!("member {seat}"), e))?;
        let identity = node
            .identity_key()
            .map_err(|e| because(format_args!("member {seat}"), e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| because(format_args!("member {seat}: {}", log.display()), e))?;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt()
            .with_writer(Mutex::new(log))
            .with_ansi(false)
            .with_env_filter(filter)
            .finish();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("thresig-demo-member-{seat}"))
            .spawn(move || {
                // The member's runtime polls its connections and requests
                // on this thread, so the daemon's lines go to the member's
                // own log; other threads keep the demo's (see `start`).
                tracing::subscriber::with_default(logs, || {
                    let served = node
                        .run_until(
                            |inner| {
                                Arc::new(Misbehaving {
                                    inner,
                                    identity,
                                    misbehavior,
                                })
                            },
                            async move {
                                let _ = stopped.await;
                            },
                        )
                        .map_err(|e| because(format_args!("member {seat}"), e));
                    if let Err(error) = &served {
                        // Its message alone, as `thresig serve` prints it:
                        // it names its cause (`because`), which the chain
                        // would name again.
                        let error = error.to_string();
                        tracing::error!(%error, "the member stopped");
                    }
                    served
                })
            })
            .map_err(|e| because(format_args!("member {seat}: cannot start its thread"), e))?;
        Ok(Self {
            seat,
            log: log_path.to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The member's seat.
    pub(crate) fn seat(&self) -> Seat {
        self.seat
    }

    /// Stops the member (it drains and closes its store, as on SIGTERM).
    ///
    /// # Errors
    /// Why the member stopped, if not cleanly (a message naming its cause,
    /// also in its log), or that its thread panicked.
    pub(crate) fn stop(mut self) -> Result<()> {
        self.finish()
    }

    /// [`LocalError::Stopped`] with why, if the member's server has ended
    /// (it could not bind its address, say); `None` while it serves, or
    /// once it was reported.
    pub(crate) fn stopped(&mut self) -> Option<LocalError> {
        if !self.thread.as_ref()?.is_finished() {
            return None;
        }
        let how = match self.finish() {
            Ok(()) => "it stopped".to_owned(),
            Err(error) => error.to_string(),
        };
        Some(LocalError::stopped(self.seat, how, self.log.clone()))
    }

    fn finish(&mut self) -> Result<()> {
        drop(self.stop.take());
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        thread
            .join()
            .map_err(|_| anyhow!("member {}: its thread panicked", self.seat))?
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::SystemTime;

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use thresig_cluster::local::free_loopback_ports;
    use thresig_cluster::provision::{self, CONFIG_FILE, ClusterSpec, member_dir};
    use thresig_daemon::ClusterName;
    use thresig_engine::WalletId;
    use thresig_tx::Network;

    use super::*;

    /// A two-member cluster in a temporary directory (the cluster in its
    /// `c`) whose member at `index` has a gRPC port held by the returned
    /// listener.
    fn cluster_with_taken_port(index: usize) -> (TcpListener, tempfile::TempDir, PathBuf) {
        let taken = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let mut endpoints = free_loopback_ports(2).unwrap();
        endpoints[index].0 = taken.local_addr().unwrap();
        let spec = ClusterSpec::new(
            ClusterName::new("test".to_owned()).unwrap(),
            Network::Regtest,
            endpoints,
            WalletId::new("w".to_owned()).unwrap(),
            2,
        );
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("c");
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        provision::init_cluster(&cluster, &spec, SystemTime::now(), &mut rng).unwrap();
        (taken, dir, cluster)
    }

    #[test]
    fn a_member_that_cannot_bind_its_port_logs_the_os_cause() {
        let (_taken, dir, cluster) = cluster_with_taken_port(0);
        let config = member_dir(&cluster, Seat::FIRST).join(CONFIG_FILE);
        let log = dir.path().join("signer.log");
        let member = Faulty::start(Seat::FIRST, &config, &log, Misbehavior::InvalidShares).unwrap();
        let error = member.stop().unwrap_err().to_string();
        assert_eq!(
            error.matches("Address already in use").count(),
            1,
            "{error}"
        );
        let logged = std::fs::read_to_string(&log).unwrap();
        let stopped = logged
            .lines()
            .find(|line| line.contains("the member stopped"))
            .unwrap_or_else(|| panic!("{logged}"));
        assert_eq!(
            stopped.matches("Address already in use").count(),
            1,
            "{stopped}"
        );
    }

    #[test]
    fn the_readiness_wait_ends_at_once_when_a_member_cannot_bind_its_port() {
        let (_taken, dir, cluster) = cluster_with_taken_port(1);
        let seat2 = Seat::try_from(2).unwrap();
        let coordinator = member_dir(&cluster, Seat::FIRST).join(CONFIG_FILE);
        let peers = thresig_cluster::Peers::new(
            &thresig_cluster::config::Config::load(&coordinator)
                .unwrap()
                .into_node(&coordinator)
                .unwrap(),
        )
        .unwrap();
        let log = dir.path().join("signer.log");
        let config = member_dir(&cluster, seat2).join(CONFIG_FILE);
        let mut member = Faulty::start(seat2, &config, &log, Misbehavior::InvalidShares).unwrap();
        // Far longer than the member takes to fail, so that a wait that
        // does not notice it ends with `NotReady` instead.
        let timeout = Duration::from_secs(30);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let error = runtime
            .block_on(thresig_cluster::local::wait_ready_unless(
                &peers,
                seat2,
                timeout,
                || member.stopped(),
            ))
            .unwrap_err();
        assert!(
            matches!(&error, LocalError::Stopped { seat, .. } if *seat == seat2),
            "{error}"
        );
        assert!(error.address_in_use(), "{error}");
        let message = error.to_string();
        assert!(message.contains("member 2"), "{message}");
        assert_eq!(
            message.matches("Address already in use").count(),
            1,
            "{message}"
        );
        assert!(message.contains(&log.display().to_string()), "{message}");
    }
}
