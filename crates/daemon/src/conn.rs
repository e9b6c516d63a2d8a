//! Connection budgets shared by the gRPC and metrics listeners: a bounded
//! set that drops its oldest entry to make room, rate-limited warnings, an
//! accept that pauses on errors, and the process's open-file limit.
//!
//! Every budget here drops the oldest holder rather than refusing the
//! newcomer: a listener that refuses at its bound lets whoever fills it
//! first keep everyone else out, while dropping the oldest costs a peer
//! that is still there only one reconnect.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::Limits;
use crate::error::Error;

/// Why an entry of an [`OldestFirst`] set was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// Its key held as many entries as one key may.
    KeyFull,
    /// The set held as many entries as it may.
    SetFull,
}

/// At most `max_total` entries, at most `max_per_key` of them under one key,
/// each found by its id; inserting beyond a bound drops the oldest entry of
/// the full key, or else the oldest entry of the key holding the most.
///
/// The per-key bound comes first, so that a key flooding the set (one
/// source, one seat) only ever drops its own entries. A full set takes its
/// room from the key holding the most, counting the new entry: a key can
/// push out another key's entry only if that key holds more than it then
/// would. Strangers spread over many sources therefore push out each
/// other's handshakes, never a member's single one, and a member cycling
/// its connections pushes out only its own.
pub(crate) struct OldestFirst<K, I, V> {
    next: u64,
    entries: BTreeMap<u64, (K, I, V)>,
    order_of: HashMap<I, u64>,
    by_key: HashMap<K, BTreeSet<u64>>,
    /// Every key holding entries as (entries held, its oldest entry's
    /// order reversed, key): the last is the key holding the most, the
    /// one with the oldest entry among equals.
    ranked: BTreeSet<(usize, Reverse<u64>, K)>,
    max_total: usize,
    max_per_key: usize,
}

impl<K: Copy + Ord + Hash, I: Copy + Eq + Hash, V> OldestFirst<K, I, V> {
    /// An empty set; both bounds are at least 1 (the configuration says so).
    pub(crate) fn new(max_total: usize, max_per_key: usize) -> Self {
        Self {
            next: 0,
            entries: BTreeMap::new(),
            order_of: HashMap::new(),
            by_key: HashMap::new(),
            ranked: BTreeSet::new(),
            max_total: max_total.max(1),
            max_per_key: max_per_key.max(1),
        }
    }

    /// Adds `value` under `key` as the newest entry; returns the entry
    /// dropped to make room, and why.
    pub(crate) fn insert(&mut self, key: K, id: I, value: V) -> Option<(Eviction, V)> {
        let own = self.by_key.get(&key).map_or(0, BTreeSet::len);
        let own_oldest = self
            .by_key
            .get(&key)
            .and_then(|orders| orders.first())
            .copied();
        let evicted = if own >= self.max_per_key {
            own_oldest
                .and_then(|order| self.remove_order(order))
                .map(|v| (Eviction::KeyFull, v))
        } else if self.entries.len() >= self.max_total {
            // The key holding the most, unless this key, with its new
            // entry, would hold as many.
            let victim = match self.ranked.last() {
                Some(&(most, Reverse(oldest), _)) if most > own + 1 || own == 0 => Some(oldest),
                _ => own_oldest,
            };
            victim
                .and_then(|order| self.remove_order(order))
                .map(|v| (Eviction::SetFull, v))
        } else {
            None
        };
        let order = self.next;
        self.next += 1;
        self.entries.insert(order, (key, id, value));
        self.order_of.insert(id, order);
        self.unrank(key);
        self.by_key.entry(key).or_default().insert(order);
        self.rank(key);
        evicted
    }

    /// Removes the entry `id`, if it is still held.
    pub(crate) fn remove(&mut self, id: &I) -> Option<V> {
        let order = *self.order_of.get(id)?;
        self.remove_order(order)
    }

    fn remove_order(&mut self, order: u64) -> Option<V> {
        let (key, id, value) = self.entries.remove(&order)?;
        self.order_of.remove(&id);
        self.unrank(key);
        if let Some(orders) = self.by_key.get_mut(&key) {
            orders.remove(&order);
            if orders.is_empty() {
                self.by_key.remove(&key);
            }
        }
        self.rank(key);
        Some(value)
    }

    /// Takes `key` out of [`Self::ranked`] before its entries change.
    fn unrank(&mut self, key: K) {
        if let Some(orders) = self.by_key.get(&key)
            && let Some(&oldest) = orders.first()
        {
            self.ranked.remove(&(orders.len(), Reverse(oldest), key));
        }
    }

    /// Puts `key` back into [`Self::ranked`] after its entries changed.
    fn rank(&mut self, key: K) {
        if let Some(orders) = self.by_key.get(&key)
            && let Some(&oldest) = orders.first()
        {
            self.ranked.insert((orders.len(), Reverse(oldest), key));
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// At most one log line per [`WARNING_INTERVAL`] for one kind of event, so
/// a flood of failing connections or of requests cannot fill the disk with
/// logs; the line that is written counts the ones left out.
pub(crate) struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
    interval: Duration,
}

/// See [`WarnLimiter`].
pub(crate) const WARNING_INTERVAL: Duration = Duration::from_secs(10);

impl Default for WarnLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl WarnLimiter {
    /// One line per [`WARNING_INTERVAL`].
    pub(crate) const fn new() -> Self {
        Self::every(WARNING_INTERVAL)
    }

    /// One line per `interval`, for an event that stays true longer (a
    /// clock set wrong until an operator acts).
    pub(crate) const fn every(interval: Duration) -> Self {
        Self {
            last: None,
            suppressed: 0,
            interval,
        }
    }

    /// Whether to write the line for an event at `now`: `Some(n)` with the
    /// `n` events left out since the last line written, or `None`.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A [`WarnLimiter`] per kind of event, shared by every task that logs
/// such events. Kinds must come from a bounded set (seats of the cluster,
/// method names, error codes as metric labels): an entry is kept for each
/// kind ever seen.
pub(crate) struct PerKind<K>(Mutex<HashMap<K, WarnLimiter>>);

impl<K> Default for PerKind<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash> PerKind<K> {
    /// [`WarnLimiter::allow`] for an event of `kind` at `now`.
    pub(crate) fn allow(&self, kind: K, now: Instant) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default()
            .allow(now)
    }
}

/// A listening socket: TCP, or the metrics endpoint's Unix socket.
pub(crate) trait Listen: Send + Sync + 'static {
    /// An accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The peer's address.
    type Addr: Send;

    /// Accepts one connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send;
}

impl Listen for TcpListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

impl Listen for UnixListener {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    fn accept(
        &self,
    ) -> impl Future<Output = io::Result<(UnixStream, tokio::net::unix::SocketAddr)>> + Send {
        UnixListener::accept(self)
    }
}

/// Pause after an accept failed for want of a resource: a persistent
/// failure such as `EMFILE` must not spin the loop (the pause mini-redis's
/// accept loop takes, without its doubling: the daemon must come back as
/// soon as descriptors free up).
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Whether a failed accept is the process or the system out of a resource
/// (descriptors, buffers, memory), which frees up only with time. Other
/// errors (a connection reset or aborted before it was accepted, a network
/// error Linux passes on) concern one connection, which a peer can cause.
fn is_resource_error(err: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    matches!(err.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// Accepts one connection on `listener`; a failed accept is logged through
/// `warnings` and answered with `None`, after [`ACCEPT_RETRY_PAUSE`] when
/// the process or system is out of a resource (out of file descriptors),
/// at once for an error of one connection (a reset before accept), so that
/// a peer causing such errors cannot stop the listener.
pub(crate) async fn accept_or_pause<L: Listen>(
    listener: &L,
    warnings: &mut WarnLimiter,
    what: &'static str,
) -> Option<(L::Io, L::Addr)> {
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(err) => {
            let pause = is_resource_error(&err);
            if let Some(suppressed) = warnings.allow(Instant::now()) {
                if pause {
                    warn!(error = %err, listener = what, suppressed, "accept failed; pausing before the next");
                } else {
                    warn!(error = %err, listener = what, suppressed, "accept failed");
                }
            }
            if pause {
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
            }
            None
        }
    }
}

/// Descriptors the daemon keeps for what its limits do not count: the
/// listeners, the store's files, the admin socket and its clients, key
/// provider programs, the runtime's own.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The kernel's usual ceiling on a process's descriptors (`fs.nr_open`): a
/// hard limit of "unlimited" cannot be the soft limit, so the soft limit is
/// raised to this instead.
const NR_OPEN: u64 = 1 << 20;

/// The open-file descriptors `limits` can hold at once (the metrics
/// budget twice: TCP and the optional Unix socket each have one), with
/// [`RESERVED_DESCRIPTORS`] for everything else.
pub(crate) fn descriptors_needed(limits: &Limits) -> u64 {
    [
        limits.max_pending_handshakes,
        limits.max_member_connections,
        limits.max_metrics_connections,
        limits.max_metrics_connections,
    ]
    .iter()
    .map(|&n| u64::try_from(n).unwrap_or(u64::MAX))
    .fold(RESERVED_DESCRIPTORS, u64::saturating_add)
}

/// The soft limit to set, given the current `soft` and `hard` limits and
/// the descriptors `needed`: the hard limit (or [`NR_OPEN`] for an unlimited
/// one), `None` when the soft limit is already there.
///
/// # Errors
/// [`Error::OpenFileLimit`] when the hard limit is below `needed`.
fn soft_limit_to_set(soft: u64, hard: u64, needed: u64) -> Result<Option<u64>, Error> {
    let ceiling = if hard == RLIM_INFINITY { NR_OPEN } else { hard };
    if ceiling < needed {
        return Err(Error::OpenFileLimit { needed, hard });
    }
    Ok((soft < ceiling).then_some(ceiling))
}

/// Raises the process's soft open-file limit to its hard limit, or refuses
/// when the hard limit is below what `limits` need; logs the limit in force.
///
/// # Errors
/// [`Error::OpenFileLimit`], and [`Error::Setup`] when the limit cannot be
/// read, or cannot be raised while the soft limit is below `needed`.
pub(crate) fn raise_open_file_limit(limits: &Limits) -> Result<u64, Error> {
    let needed = descriptors_needed(limits);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| Error::Setup(e.into()))?;
    let soft = match soft_limit_to_set(soft, hard, needed)? {
        None => soft,
        Some(raised) => match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
            Ok(()) => raised,
            Err(err) if soft >= needed => {
                warn!(error = %err, soft, "cannot raise the open-file limit; the current one suffices");
                soft
            }
            Err(err) => return Err(Error::Setup(err.into())),
        },
    };
    info!(
        open_files = soft,
        needed, "open-file limit set for the configured connection limits"
    );
    Ok(soft)
}

#[cfg(test)]
mod tests;
