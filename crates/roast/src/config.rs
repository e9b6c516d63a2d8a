//! Coordinator configuration.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::Seat;

/// How long one signer may take to answer one request.
///
/// A round-2 answer includes the signer's durable marker commit (an fsync)
/// and its own sighash computation for every input; ten seconds leaves room
/// for a loaded signer across a WAN while still cycling a silent seat out
/// well within the overall deadline.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole run may take before it fails.
///
/// Each session costs at most one request timeout once its members are
/// responsive, and a run needs at most n - t + 1 sessions (plus a bounded
/// few for signers that refuse transiently and are asked again, see
/// [`crate::Coordinator`]); five minutes covers a few dozen silent-seat
/// timeouts, beyond which an operator should look at the cluster rather than
/// wait. It also bounds the re-asks: with the default request timeout, at
/// most five per seat.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);

/// Parameters of one coordinator run.
///
/// The threshold and roster must be the wallet's own (the signers check
/// them; a coordinator that lies only fails its own run).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Signers per session (the wallet's threshold t).
    pub threshold: u16,
    /// The wallet's seats (n of them, distinct).
    pub roster: Vec<Seat>,
    /// See [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// The overall deadline, counted from the coordinator's creation; see
    /// [`DEFAULT_DEADLINE`].
    pub deadline: Duration,
    /// Seats to ask last (quarantined by the driver, see
    /// [`crate::quarantine`]): they get no round-1 request while at least t
    /// other seats are responsive or still awaited, and join a session only
    /// when no t other seats hold fresh commitments. Every seat must be in
    /// the roster. A deferred seat is asked as soon as the others alone
    /// could no longer make a session, so deferring never makes a run fail
    /// that would have finished without it.
    pub deferred: BTreeSet<Seat>,
}

impl Config {
    /// A configuration with the default timeouts. Validated by
    /// [`crate::Coordinator::new`].
    #[must_use]
    pub fn new(threshold: u16, roster: Vec<Seat>) -> Self {
        Self {
            threshold,
            roster,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            deferred: BTreeSet::new(),
        }
    }
}

impl Config {
    /// A configuration with the threshold and seats of `wallet`'s key record
    /// and the default timeouts.
    #[must_use]
    pub fn for_wallet(wallet: &thresig_crypto::WalletKey) -> Self {
        Self::new(wallet.threshold(), wallet.members())
    }
}
