//! [`EngineHandler`]: the signer engine behind the daemon's
//! [`SignerHandler`] seam.
//!
//! This is the engine's I/O edge: it reads the system clock and draws
//! randomness from the operating system, both of which the sans-IO engine
//! takes as arguments. It maps the caller's cluster seat (from its client
//! certificate) to that member's identity key, which the engine knows the
//! coordinator by, and every request goes through [`Signer::handle`], so
//! the engine's membership check ("only members coordinate for a wallet")
//! applies to all of them.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

use rand_core::OsRng;
use thresig_crypto::Seat;
use thresig_engine::{
    CoordinatorId, IdentityKey, Request, Response, Signer, Timestamp, WalletStateKind,
};
use thresig_store::Store;

use crate::api::{ErrorCode, Recovery, SignerError, SignerHandler};
use crate::conn::WarnLimiter;
use crate::metrics::LifecycleInFlight;

/// Serves one member's [`Signer`] to the cluster.
///
/// # Invariants
/// A request reaches the engine only from a seat in `roster`, and always as
/// the coordinator that seat's identity key names; error messages are the
/// engine's, built from ids and counts, never from secret material.
pub struct EngineHandler<S> {
    signer: Signer<S>,
    roster: BTreeMap<Seat, IdentityKey>,
    /// The system clock (`SystemTime::now`; a test's may read before
    /// 1970).
    clock: fn() -> SystemTime,
}

impl<S> std::fmt::Debug for EngineHandler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandler")
            .field("signer", &self.signer)
            .field("roster", &self.roster)
            .finish()
    }
}

impl<S: Store> EngineHandler<S> {
    /// Serves `signer`. `roster` is the cluster: each member's seat (as its
    /// certificate names it) and Ed25519 identity key (as the wallets'
    /// rosters list it).
    #[must_use]
    pub fn new(signer: Signer<S>, roster: BTreeMap<Seat, IdentityKey>) -> Self {
        Self::with_clock(signer, roster, SystemTime::now)
    }

    /// Serves `signer` ([`EngineHandler::new`]) with `clock` as the
    /// system clock.
    fn with_clock(
        signer: Signer<S>,
        roster: BTreeMap<Seat, IdentityKey>,
        clock: fn() -> SystemTime,
    ) -> Self {
        Self {
            signer,
            roster,
            clock,
        }
    }

    /// The clock handed to the engine for a request that arrived at
    /// `arrived`: the system clock, or `arrived` while it reads before
    /// 1970 (counted and logged, [`since_epoch`]), never 0. The engine
    /// reads it under the wallet's lock and on each settle of its marker
    /// unit; a clock set back before 1970 meanwhile would otherwise date
    /// every stored charge ahead and drop it from the rate ledger.
    fn engine_clock(&self, arrived: Timestamp) -> impl Fn() -> Timestamp + '_ {
        move || since_epoch((self.clock)()).unwrap_or(arrived)
    }

    /// The system clock on a request's arrival.
    ///
    /// # Errors
    /// `internal` (terminal) if it reads before 1970.
    fn arrival(&self) -> Result<Timestamp, SignerError> {
        since_epoch((self.clock)()).ok_or_else(clock_before_epoch)
    }

    /// The engine, for the process's own housekeeping (pruning, rekeys).
    #[must_use]
    pub fn signer(&self) -> &Signer<S> {
        &self.signer
    }

    /// Prunes the engine at the current time ([`Signer::prune`]): the signer
    /// process calls it on a timer, so that wallets nobody uses drop their
    /// expired nonces, tombstones and markers.
    ///
    /// # Errors
    /// The engine's refusal, or `internal` if the clock is before 1970.
    pub fn prune(&self) -> Result<(), SignerError> {
        let now = self.arrival()?;
        self.signer.prune(now).map_err(|err| refusal(&err))
    }
}

/// The system clock as the engine counts it (milliseconds since the Unix
/// epoch; 0 for a clock before 1970, counted and logged, see
/// `since_epoch`): the reading of the system time that reaches the
/// engine and the policy from the callers outside this handler (the
/// signer process, the C library, the CLI).
///
/// A clock before 1970 is treated in two ways (docs/daemon.md):
/// - refused: a request to this handler, or its timed prune, arriving
///   while the clock reads before 1970 (`internal`, terminal), before the
///   engine sees it; a request already running reads its arrival instead
///   (the handler passes the engine its own clock, not this function), so
///   the engine never reads 0 from the handler;
/// - run at 0: every other caller of this function. The signer process's
///   `audit_open` (`thresig_cluster::node`) and the operator's commands
///   (`operate` in the C library and `thresig wallet`, policy rollouts,
///   audit checkpoints and prunes, key rotations) date their audit entries
///   and records 0, and a repair approval given then expires at once (its
///   window ends long before the real time); the C library's PSBT
///   inspection evaluates the policy at 0 (a report, nothing charged).
///   The store's key manager reads the clock itself the same way: at 0 it
///   purges no markers (none has expired by then) and dates its audit
///   entries 0. These fail safe: nothing that matters expires early and
///   no charge is dropped; entries are misdated, and an approval is given
///   again once the clock is right.
#[must_use]
pub fn wall_clock() -> Timestamp {
    since_epoch(SystemTime::now()).unwrap_or(Timestamp(0))
}

/// How often at most a clock before 1970 is logged: it stays wrong until
/// an operator sets it right, and each request would log it again.
const CLAMP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The log lines of a clock before 1970 (process-wide, as the clock).
static CLAMP_LOGGED: Mutex<WarnLimiter> = Mutex::new(WarnLimiter::every(CLAMP_WARNING_INTERVAL));

/// `now` as the engine counts it, or `None` before 1970. At time 0 every
/// charge in a wallet's rate ledger would be dated ahead, dropped from
/// the ledger and rewritten without, so the handler refuses requests
/// until the clock is right and a request already running reads its
/// arrival instead (docs/daemon.md); so that it is seen, each
/// such reading counts in `thresig_clock_before_epoch_total` and one a
/// minute at most is logged.
fn since_epoch(now: SystemTime) -> Option<Timestamp> {
    if let Ok(since) = now.duration_since(UNIX_EPOCH) {
        return Some(Timestamp(
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        ));
    }
    crate::metrics::clock_before_epoch();
    let allowed = CLAMP_LOGGED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .allow(tokio::time::Instant::now());
    if let Some(suppressed) = allowed {
        warn!(
            suppressed,
            "the system clock reads before 1970: the signer refuses requests until it is set right"
        );
    }
    None
}

/// The refusal of a request that arrives while the system clock reads
/// before 1970.
fn clock_before_epoch() -> SignerError {
    SignerError::new(
        ErrorCode::INTERNAL,
        Recovery::Terminal,
        "the signer's system clock reads before 1970; its operator must set it right",
    )
}

/// The refusal sent for an engine error: its stable code, recovery class
/// and message (the engine builds messages from ids and counts only).
fn refusal(err: &thresig_engine::Error) -> SignerError {
    SignerError::new(err.code().into(), err.recovery(), err.to_string())
        .with_accusation(err.accusation().cloned())
}

impl<S: Store + 'static> SignerHandler for EngineHandler<S> {
    /// Runs `request` as the member at `peer`, through the engine's one
    /// entry point ([`Signer::handle`], which checks that member's
    /// membership of the wallet).
    fn handle(&self, peer: Seat, request: Request) -> Result<Response, SignerError> {
        let identity = self.roster.get(&peer).ok_or_else(|| {
            SignerError::new(
                thresig_engine::ErrorCode::CoordinatorNotMember.into(),
                Recovery::Terminal,
                format!("seat {} is not a member of this cluster", peer.get()),
            )
        })?;
        let from = CoordinatorId(identity.to_bytes());
        let arrived = self.arrival()?;
        self.signer
            .handle(self.engine_clock(arrived), from, request, &mut OsRng)
            .map_err(|err| refusal(&err))
    }

    /// Counts the engine's wallets awaiting their DKG, being refreshed or
    /// being rekeyed, and the repairs running here; `None` when the wallets cannot be
    /// read (a store failure, which the requests report), so the gauge
    /// does not read as nothing in flight.
    fn lifecycle(&self) -> Option<LifecycleInFlight> {
        let mut now = LifecycleInFlight::default();
        for wallet in self.signer.wallets().ok()? {
            match wallet.state {
                WalletStateKind::DkgPending => now.dkg += 1,
                WalletStateKind::Rekeying => now.rekey += 1,
                _ => {}
            }
            now.repair += usize::from(wallet.repairing.is_some());
            // A refresh running here or held pending, whether the wallet
            // shows as `refreshing` or as `rekeying` (a rekey begun while
            // the refresh was pending).
            now.refresh += usize::from(wallet.refresh.is_some());
        }
        Some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use thresig_crypto::ScriptTree;
    use thresig_engine::Limits;
    use thresig_engine::test_util::cluster::{Cluster, Keys, Spec, wid};
    use thresig_engine::test_util::identity;

    /// The roster of a 3-member test cluster.
    fn roster() -> BTreeMap<Seat, IdentityKey> {
        (1..=3)
            .map(|s| (Seat::try_from(s).unwrap(), identity(s)))
            .collect()
    }

    /// Held by every test here that reads a clock before 1970, so that
    /// the process-wide count of such readings moves for one test at a
    /// time and a test can check it exactly.
    static EARLY_READINGS: Mutex<()> = Mutex::new(());

    /// Takes [`EARLY_READINGS`], whether or not a test holding it failed.
    fn early_readings() -> std::sync::MutexGuard<'static, ()> {
        EARLY_READINGS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A system clock before 1970 reads as no time, and each reading is
    /// counted, so it does not go unseen.
    #[test]
    fn a_clock_before_1970_reads_as_no_time_and_is_counted() {
        let _alone = early_readings();
        let before = crate::metrics::clock_before_epoch_total();
        let early = UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(since_epoch(early), None);
        assert_eq!(since_epoch(early), None);
        assert_eq!(crate::metrics::clock_before_epoch_total(), before + 2);
        let later = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(since_epoch(later), Some(Timestamp(1_500)));
    }

    /// How often [`stepped_back_clock`] was read.
    static STEPPED_BACK_READS: AtomicUsize = AtomicUsize::new(0);

    /// A system clock that reads right the first time and before 1970
    /// after: set back while a request runs.
    fn stepped_back_clock() -> SystemTime {
        if STEPPED_BACK_READS.fetch_add(1, Ordering::SeqCst) == 0 {
            SystemTime::now()
        } else {
            UNIX_EPOCH - Duration::from_secs(5)
        }
    }

    /// A system clock set back before 1970 after a request arrived (while
    /// it waits for the wallet's lock, or between the settles of its
    /// marker unit) reaches the engine as the request's arrival, never as
    /// 0, at which every charge in the wallet's rate ledger would be dated
    /// ahead and dropped. This tests the clock the handler passes the
    /// engine (`handle` passes `engine_clock(arrival)`).
    #[test]
    fn a_clock_set_back_before_1970_after_arrival_reaches_the_engine_as_the_arrival() {
        let _alone = early_readings();
        let cluster = Cluster::with_wallets(63, 2, 3, &[], Limits::default());
        let signer = cluster.into_signers().remove(0);
        let handler = EngineHandler::with_clock(signer, BTreeMap::new(), stepped_back_clock);
        let arrived = handler.arrival().unwrap();
        assert!(arrived > Timestamp(0));
        let clock = handler.engine_clock(arrived);
        for _ in 0..3 {
            assert_eq!(clock(), arrived);
        }
        assert_eq!(STEPPED_BACK_READS.load(Ordering::SeqCst), 4);
    }

    /// Whether [`early_clock`] reads before 1970.
    static EARLY: AtomicBool = AtomicBool::new(true);

    /// How often [`early_clock`] was read (by its one test only).
    static EARLY_READS: AtomicUsize = AtomicUsize::new(0);

    /// A system clock before 1970 while [`EARLY`], right after.
    fn early_clock() -> SystemTime {
        EARLY_READS.fetch_add(1, Ordering::SeqCst);
        if EARLY.load(Ordering::SeqCst) {
            UNIX_EPOCH - Duration::from_secs(5)
        } else {
            SystemTime::now()
        }
    }

    /// A request arriving while the system clock reads before 1970 is
    /// refused (`internal`, terminal) before the engine sees it: neither
    /// as the engine would answer it (round 1 served, an unknown wallet
    /// refused as `coordinator_not_member`) nor reading the clock again (the
    /// engine reads it once per request); once the clock is right it is
    /// served.
    #[test]
    fn a_request_arriving_with_a_clock_before_1970_is_refused_before_the_engine() {
        use thresig_engine::{Round1Request, WalletId};

        let _alone = early_readings();
        let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly))];
        let cluster = Cluster::with_wallets(62, 2, 3, &specs, Limits::default());
        let signer = cluster.into_signers().remove(0);
        let handler = EngineHandler::with_clock(signer, roster(), early_clock);
        let seat = Seat::try_from(3).unwrap();
        let round1 =
            |wallet: &str| Request::Round1(Round1Request::new(WalletId::new(wallet).unwrap(), 1));
        let reads = || EARLY_READS.load(Ordering::SeqCst);
        let before = reads();
        for request in [round1("w"), round1("nowhere")] {
            let err = handler.handle(seat, request).unwrap_err();
            assert_eq!(err.code, ErrorCode::INTERNAL, "{err:?}");
            assert_eq!(err.recovery, Recovery::Terminal);
            assert_eq!(
                err.message,
                "the signer's system clock reads before 1970; its operator must set it right"
            );
        }
        // One reading each, on arrival: the engine read none.
        assert_eq!(reads(), before + 2);
        let err = handler.prune().unwrap_err();
        assert_eq!(err.code, ErrorCode::INTERNAL, "{err:?}");
        assert_eq!(reads(), before + 3);
        EARLY.store(false, Ordering::SeqCst);
        handler.handle(seat, round1("w")).unwrap();
        // On arrival and in the engine.
        assert_eq!(reads(), before + 5);
        let err = handler.handle(seat, round1("nowhere")).unwrap_err();
        assert_eq!(err.code.as_str(), "coordinator_not_member", "{err:?}");
        handler.prune().unwrap();
    }

    /// The gauge counts a wallet awaiting its DKG, a repair this signer
    /// helps with, a wallet holding a refresh pending and a wallet being
    /// rekeyed, and nothing for active wallets.
    #[test]
    fn lifecycle_counts_wallets_awaiting_their_dkg_repairing_refreshing_and_rekeying() {
        use thresig_engine::RepairRequest;
        use thresig_engine::test_util::{dkg, repair};

        let specs = [
            Spec::new("old", Keys::Dkg(ScriptTree::KeyPathOnly)).successor("new"),
            Spec::new("new", Keys::Dkg(ScriptTree::KeyPathOnly)),
            Spec::new("pending", Keys::None),
            Spec::new("refreshed", Keys::Dkg(ScriptTree::KeyPathOnly)),
        ];
        let mut cluster = Cluster::with_wallets(61, 2, 3, &specs, Limits::default());
        // Seat 1 helps repair seat 3's share of `new`.
        repair::approve(&cluster, "new", 3, &[1, 2]);
        let session = repair::session(&cluster, "new", 3, &[1, 2], 9);
        repair::step(&mut cluster, 1, RepairRequest::Open { session }).unwrap();
        // Seat 1 holds a refresh of `refreshed` pending.
        let (proposal, inbox) = dkg::refresh_to_part3(&mut cluster, "refreshed", 1, 0);
        dkg::finish_at(&cluster, &proposal, &inbox, 1).unwrap();
        let signer = cluster.into_signers().remove(0);
        let handler = EngineHandler::new(signer, roster());
        let before = LifecycleInFlight {
            dkg: 1,
            repair: 1,
            refresh: 1,
            ..LifecycleInFlight::default()
        };
        assert_eq!(handler.lifecycle(), Some(before));
        handler.signer().begin_rekey(&wid("old")).unwrap();
        let rekeying = LifecycleInFlight { rekey: 1, ..before };
        assert_eq!(handler.lifecycle(), Some(rekeying));
    }

    #[test]
    fn every_engine_code_is_a_static_daemon_code_with_its_recovery() {
        for engine_code in thresig_engine::ErrorCode::ALL {
            let daemon_code = ErrorCode::from(engine_code);
            assert_eq!(daemon_code.as_str(), engine_code.as_str());
            assert_eq!(daemon_code.metric_label(), engine_code.as_str());
        }
        let wallet = thresig_engine::WalletId::new("vault-1").unwrap();
        let busy = thresig_engine::Error::WalletNotActive {
            wallet: wallet.clone(),
        };
        let refused = refusal(&busy);
        assert_eq!(refused.code.as_str(), "wallet_not_active");
        assert!(refused.is_retryable());
        let unknown = thresig_engine::Error::UnknownWallet { wallet };
        let refused = refusal(&unknown);
        assert_eq!(refused.code.as_str(), "unknown_wallet");
        assert_eq!(refused.recovery, Recovery::Terminal);
        assert!(refused.message.contains("vault-1"), "{}", refused.message);
    }
}
