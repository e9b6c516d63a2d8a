//! A cluster of signer processes on this machine: what `thresig demo`, the
//! load generator and the process tests run.
//!
//! Each member is a separate `thresig serve` process with its own store and
//! TLS identity, on loopback ports chosen free at creation. Every process
//! still running is killed when the [`LocalCluster`] is dropped, so an
//! error anywhere leaves no daemon behind.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::Seat;
use thresig_store::Recovery;

use crate::config::{Config, ConfigError, NodeConfig};
use crate::peers::Peers;
use crate::provision::{self, ClusterSpec, MemberInit, ProvisionError};

/// Why a local cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// Provisioning failed.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// A member's configuration does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A process could not be started, signalled or reaped.
    #[error("member {seat}: {source}")]
    Process {
        /// The member.
        seat: Seat,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A member is not in the cluster, or not running.
    #[error("member {0} is not running")]
    NotRunning(Seat),
    /// A member did not become ready in time.
    #[error("member {seat} did not become ready within {timeout:?} (see its signer.log)")]
    NotReady {
        /// The member.
        seat: Seat,
        /// How long it was given.
        timeout: Duration,
    },
    /// A member stopped before it became ready: waiting on would only run
    /// out the timeout.
    #[error(
        "member {seat} stopped before it became ready: {how} (see {}); {}",
        log.display(),
        if *address_in_use {
            "another process took its port: start the cluster again on fresh ports"
        } else {
            "fix the cause its log gives and start it again"
        }
    )]
    Stopped {
        /// The member.
        seat: Seat,
        /// How it ended: its exit status, or the error it stopped with.
        how: String,
        /// Its log.
        log: PathBuf,
        /// Whether it stopped because its address was in use, a race with
        /// another process that fresh ports avoid.
        address_in_use: bool,
    },
}

impl LocalError {
    /// [`LocalError::Stopped`] for member `seat`, which ended as `how`
    /// says and logged to `log`; whether its address was in use is read
    /// from both, since a process only says so in its log.
    #[must_use]
    pub fn stopped(seat: Seat, how: String, log: PathBuf) -> Self {
        let in_use =
            std::io::Error::from_raw_os_error(nix::errno::Errno::EADDRINUSE as i32).to_string();
        let address_in_use = how.contains(&in_use)
            || std::fs::read_to_string(&log).is_ok_and(|logged| logged.contains(&in_use));
        Self::Stopped {
            seat,
            how,
            log,
            address_in_use,
        }
    }

    /// Whether running the command again can succeed: only when a member
    /// found its address in use, since a new run picks fresh ports.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        if self.address_in_use() {
            Recovery::Retryable
        } else {
            Recovery::Terminal
        }
    }

    /// Whether a member stopped because its address was in use: starting
    /// the cluster again on fresh ports can succeed.
    #[must_use]
    pub fn address_in_use(&self) -> bool {
        matches!(
            self,
            Self::Stopped {
                address_in_use: true,
                ..
            }
        )
    }
}

/// Member processes of one cluster.
#[derive(Debug)]
pub struct LocalCluster {
    binary: PathBuf,
    members: Vec<MemberInit>,
    children: BTreeMap<Seat, Child>,
}

impl LocalCluster {
    /// Provisions the cluster of `spec` in `dir` (see
    /// [`provision::init_cluster`]); starts nothing. `binary` is the
    /// `thresig` executable the members run.
    ///
    /// # Errors
    /// [`LocalError::Provision`].
    pub fn create(
        dir: &Path,
        spec: &ClusterSpec,
        binary: PathBuf,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, LocalError> {
        let members = provision::init_cluster(dir, spec, SystemTime::now(), rng)?;
        Ok(Self {
            binary,
            members,
            children: BTreeMap::new(),
        })
    }

    /// The members, seat 1 first.
    #[must_use]
    pub fn members(&self) -> &[MemberInit] {
        &self.members
    }

    /// Member `seat`'s configuration file.
    ///
    /// # Errors
    /// [`LocalError::NotRunning`] for a seat outside the cluster.
    pub fn config_path(&self, seat: Seat) -> Result<PathBuf, LocalError> {
        Ok(self.member(seat)?.dir.join(provision::CONFIG_FILE))
    }

    /// Member `seat`'s configuration.
    ///
    /// # Errors
    /// [`LocalError::Config`] if it does not load.
    pub fn node(&self, seat: Seat) -> Result<NodeConfig, LocalError> {
        let path = self.config_path(seat)?;
        Ok(Config::load(&path)?.into_node(&path)?)
    }

    /// Member `seat`'s log file (its standard error, appended over
    /// restarts).
    ///
    /// # Errors
    /// [`LocalError::NotRunning`] for a seat outside the cluster.
    pub fn log_path(&self, seat: Seat) -> Result<PathBuf, LocalError> {
        Ok(self.member(seat)?.dir.join("signer.log"))
    }

    /// Starts member `seat`'s daemon (`thresig serve`).
    ///
    /// # Errors
    /// [`LocalError::Process`] if it cannot be spawned.
    pub fn start(&mut self, seat: Seat) -> Result<(), LocalError> {
        let process = |source| LocalError::Process { seat, source };
        if let Some(mut old) = self.children.remove(&seat) {
            // Starting a running member replaces it: the old process goes
            // first, so that it no longer holds the store lock or the port.
            let _ = old.kill();
            old.wait().map_err(process)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(seat)?)
            .map_err(process)?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg("--config")
            .arg(self.config_path(seat)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(process)?;
        self.children.insert(seat, child);
        Ok(())
    }

    /// Stops member `seat` with SIGTERM (it drains and closes its store)
    /// and waits; returns whether it exited successfully.
    ///
    /// # Errors
    /// [`LocalError::NotRunning`], [`LocalError::Process`].
    pub fn stop(&mut self, seat: Seat) -> Result<bool, LocalError> {
        let mut child = self
            .children
            .remove(&seat)
            .ok_or(LocalError::NotRunning(seat))?;
        let process = |source| LocalError::Process { seat, source };
        let pid = i32::try_from(child.id())
            .map_err(|_| process(std::io::Error::other("pid out of range")))?;
        // An already exited child makes `kill` fail with ESRCH; `wait`
        // still reaps it and reports how it ended.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        Ok(child.wait().map_err(process)?.success())
    }

    /// Kills member `seat` with SIGKILL (no draining, no store shutdown)
    /// and reaps it.
    ///
    /// # Errors
    /// [`LocalError::NotRunning`], [`LocalError::Process`].
    pub fn kill(&mut self, seat: Seat) -> Result<(), LocalError> {
        let mut child = self
            .children
            .remove(&seat)
            .ok_or(LocalError::NotRunning(seat))?;
        let process = |source| LocalError::Process { seat, source };
        child.kill().map_err(process)?;
        child.wait().map_err(process)?;
        Ok(())
    }

    /// [`LocalError::Stopped`] if member `seat`'s process has exited; `None`
    /// while it runs, if it was never started, or if it cannot be checked
    /// (the readiness wait's timeout still bounds that case).
    pub fn exited(&mut self, seat: Seat) -> Option<LocalError> {
        let status = self.children.get_mut(&seat)?.try_wait().ok()??;
        let log = self.log_path(seat).ok()?;
        Some(LocalError::stopped(seat, status.to_string(), log))
    }

    /// Waits until member `seat` reports ready (see [`wait_ready`]), or
    /// fails at once if its process exits first.
    ///
    /// # Errors
    /// [`LocalError::Stopped`], [`LocalError::NotReady`].
    pub async fn wait_ready(
        &mut self,
        peers: &Peers,
        seat: Seat,
        timeout: Duration,
    ) -> Result<(), LocalError> {
        wait_ready_unless(peers, seat, timeout, || self.exited(seat)).await
    }

    /// The process id of member `seat`, while it runs.
    #[must_use]
    pub fn pid(&self, seat: Seat) -> Option<u32> {
        self.children.get(&seat).map(Child::id)
    }

    /// Stops every running member with SIGTERM; returns the members that
    /// did not exit successfully.
    ///
    /// # Errors
    /// [`LocalError::Process`].
    pub fn stop_all(&mut self) -> Result<Vec<Seat>, LocalError> {
        let seats: Vec<Seat> = self.children.keys().copied().collect();
        let mut failed = Vec::new();
        for seat in seats {
            if !self.stop(seat)? {
                failed.push(seat);
            }
        }
        Ok(failed)
    }

    fn member(&self, seat: Seat) -> Result<&MemberInit, LocalError> {
        self.members
            .iter()
            .find(|m| m.seat == seat)
            .ok_or(LocalError::NotRunning(seat))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until member `seat` reports ready, polling its health service
/// through `peers`.
///
/// # Errors
/// [`LocalError::NotReady`] after `timeout`.
pub async fn wait_ready(peers: &Peers, seat: Seat, timeout: Duration) -> Result<(), LocalError> {
    wait_ready_unless(peers, seat, timeout, || None).await
}

/// [`wait_ready`], failing at once with the error `stopped` returns when
/// it returns one: a member that stopped never becomes ready.
///
/// # Errors
/// The error of `stopped`, [`LocalError::NotReady`] after `timeout`.
pub async fn wait_ready_unless(
    peers: &Peers,
    seat: Seat,
    timeout: Duration,
    mut stopped: impl FnMut() -> Option<LocalError>,
) -> Result<(), LocalError> {
    let started = Instant::now();
    loop {
        let ready = match peers.client(seat).await {
            Ok(client) => client.is_ready().await.unwrap_or(false),
            Err(_) => false,
        };
        if ready {
            return Ok(());
        }
        peers.forget(seat);
        if let Some(error) = stopped() {
            return Err(error);
        }
        if started.elapsed() > timeout {
            return Err(LocalError::NotReady { seat, timeout });
        }
        // A fresh process needs milliseconds to bind; polling faster only
        // burns the CPU the starting members need.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `count` pairs of loopback addresses (gRPC, metrics) whose ports were
/// free when checked. Another process could take one before its member
/// binds it; that member then fails to start and says so in its log.
///
/// # Errors
/// The I/O error of binding a probe socket.
pub fn free_loopback_ports(count: usize) -> std::io::Result<Vec<(SocketAddr, SocketAddr)>> {
    let probes: Vec<TcpListener> = (0..count * 2)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = probes
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<_, _>>()?;
    Ok(addrs
        .chunks(2)
        .filter_map(|pair| Some((*pair.first()?, *pair.get(1)?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_use() -> String {
        std::io::Error::from_raw_os_error(nix::errno::Errno::EADDRINUSE as i32).to_string()
    }

    #[test]
    fn a_member_that_logged_its_address_in_use_may_succeed_on_fresh_ports() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("signer.log");
        // A process says why it stopped only in its log.
        std::fs::write(&log, format!("error: daemon: setup: {}\n", in_use())).unwrap();
        let error = LocalError::stopped(Seat::FIRST, "exit status: 1".to_owned(), log);
        assert!(error.address_in_use(), "{error}");
        assert_eq!(error.recovery(), Recovery::Retryable);
    }

    #[test]
    fn a_member_that_stopped_for_another_cause_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("signer.log");
        std::fs::write(&log, "error: store: locked by another process\n").unwrap();
        let error = LocalError::stopped(Seat::FIRST, "exit status: 1".to_owned(), log);
        assert!(!error.address_in_use(), "{error}");
        assert_eq!(error.recovery(), Recovery::Terminal);
    }
}
