//! A cluster of `thresig serve` processes on loopback for the integration
//! tests, over the library's `LocalCluster`.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses part of the harness"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_cluster::config::{NodeConfig, NodeWallet};
pub use thresig_cluster::local::wait_ready as wait_ready_within;
use thresig_cluster::local::{LocalCluster, free_loopback_ports};
use thresig_cluster::provision::ClusterSpec;
use thresig_cluster::{OwnWallet, Peers};
use thresig_crypto::Seat;
use thresig_daemon::ClusterName;
use thresig_engine::WalletId;
use thresig_tx::Network;

pub const WALLET: &str = "w";

/// Generous: a member opens its store and binds in milliseconds, but CI
/// runs many test processes on two cores.
const READY: Duration = Duration::from_secs(60);

/// Runs the `thresig` binary with `args` (warnings and errors logged).
pub fn thresig(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs `args` with `--json`, expecting exit code `code`; its JSON output.
pub fn json(args: &[&str], code: i32) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    json_of(&thresig(&all), args, code)
}

/// The JSON output of a command run with `args`, which must have exited
/// with `code`.
pub fn json_of(out: &std::process::Output, args: &[&str], code: i32) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: stdout {stdout} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

/// The regtest P2TR address of the key whose secret is 32 bytes of `byte`.
pub fn address(byte: u8) -> String {
    let secret = bitcoin::secp256k1::SecretKey::from_slice(&[byte; 32]).unwrap();
    let (x, _) = secret
        .public_key(bitcoin::secp256k1::SECP256K1)
        .x_only_public_key();
    thresig_tx::TaprootWallet::new(thresig_tx::Network::Regtest, x, None)
        .address()
        .to_string()
}

pub fn seat(n: u16) -> Seat {
    Seat::try_from(n).unwrap()
}

pub struct ProcessCluster {
    /// Kept for its lifetime: the members' directories.
    _dir: tempfile::TempDir,
    pub local: LocalCluster,
}

impl ProcessCluster {
    /// Provisions `n` members of a `t`-of-`n` wallet whose policy allows
    /// paying `destinations`; starts none.
    pub fn provision(n: u16, t: u16, destinations: &[String], seed: u64) -> Self {
        Self::provision_with_policy(n, t, seed, |policy| {
            policy.destinations = destinations.to_vec();
        })
    }

    /// [`Self::provision`] with the wallet's policy as `edit` leaves the
    /// default one.
    pub fn provision_with_policy(
        n: u16,
        t: u16,
        seed: u64,
        edit: impl FnOnce(&mut thresig_tx::PolicyConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ClusterSpec::new(
            ClusterName::new("test".to_owned()).unwrap(),
            Network::Regtest,
            free_loopback_ports(usize::from(n)).unwrap(),
            WalletId::new(WALLET.to_owned()).unwrap(),
            t,
        );
        edit(&mut spec.policy);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let local = LocalCluster::create(
            &dir.path().join("c"),
            &spec,
            PathBuf::from(env!("CARGO_BIN_EXE_thresig")),
            &mut rng,
        )
        .unwrap();
        Self { _dir: dir, local }
    }

    pub fn config_path(&self, seat: Seat) -> PathBuf {
        self.local.config_path(seat).unwrap()
    }

    /// [`Self::config_path`] as the `--config` argument of a command.
    pub fn config_arg(&self, seat: Seat) -> String {
        self.config_path(seat).to_str().unwrap().to_owned()
    }

    pub fn node(&self, seat: Seat) -> NodeConfig {
        self.local.node(seat).unwrap()
    }

    pub fn peers(&self, seat: Seat) -> Arc<Peers> {
        Arc::new(Peers::new(&self.node(seat)).unwrap())
    }

    pub fn seats(&self) -> Vec<Seat> {
        self.local.members().iter().map(|m| m.seat).collect()
    }

    /// Runs the wallet's DKG from this process with member 1 coordinating,
    /// and returns what member 1 signs with: its peers, its configuration
    /// of the wallet and the wallet's key.
    pub fn dkg_from_first(
        &self,
        runtime: &tokio::runtime::Runtime,
        rng: &mut ChaCha20Rng,
    ) -> (Arc<Peers>, NodeWallet, OwnWallet) {
        let node = self.node(Seat::FIRST);
        let peers = self.peers(Seat::FIRST);
        let wallet = node
            .wallet(&WalletId::new(WALLET.to_owned()).unwrap())
            .unwrap()
            .clone();
        runtime
            .block_on(thresig_cluster::run_dkg(
                &peers,
                &wallet,
                rng,
                &thresig_cluster::Silent,
            ))
            .unwrap();
        let own = runtime
            .block_on(thresig_cluster::own_wallet(&peers, &node, wallet.id()))
            .unwrap();
        (peers, wallet, own)
    }

    /// Starts every member and waits until each serves.
    pub fn start_all(&mut self, runtime: &tokio::runtime::Runtime) {
        for s in self.seats() {
            self.local.start(s).unwrap();
        }
        let peers = self.peers(Seat::FIRST);
        runtime.block_on(async {
            for s in self.seats() {
                // A member that exited (its probed port taken meanwhile)
                // fails the test at once, naming its exit and log.
                self.local.wait_ready(&peers, s, READY).await.unwrap();
            }
        });
    }
}

pub async fn wait_ready(peers: &Peers, seat: Seat) {
    wait_ready_within(peers, seat, READY).await.unwrap();
}

/// A wallet as `thresig dkg --json` reports it.
pub struct Made {
    pub internal_key: String,
    pub output_key: String,
    pub address: String,
}

/// Names `successor` (a 2-of-3 wallet of members 1 to 3, added to the
/// file) as [`WALLET`]'s successor in the member configuration at `path`;
/// a running signer reads it at its next start.
pub fn name_successor(path: &Path, successor: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let wallet = format!("id = \"{WALLET}\"\n");
    assert!(text.contains(&wallet), "{text}");
    let text = text.replacen(
        &wallet,
        &format!("{wallet}successor = \"{successor}\"\n"),
        1,
    );
    let text =
        format!("{text}\n[[wallets]]\nid = \"{successor}\"\nthreshold = 2\nmembers = [1, 2, 3]\n");
    std::fs::write(path, text).unwrap();
}

/// Runs the DKG of `wallet` from `config`.
pub fn dkg(config: &Path, wallet: &str) -> Made {
    let config = config.to_str().unwrap();
    let made = json(&["dkg", "--config", config, "--wallet", wallet], 0);
    let field = |name: &str| made[name].as_str().unwrap().to_owned();
    Made {
        internal_key: field("internal_key"),
        output_key: field("output_key"),
        address: field("address"),
    }
}

/// `thresig sign` of `psbt` with the test wallet, coordinated by `config`,
/// which must succeed: its JSON report.
pub fn sign_report(config: &Path, psbt: &Path) -> serde_json::Value {
    let config = config.to_str().unwrap();
    json_of(&sign(config, WALLET, psbt), &["sign", config], 0)
}

/// A PSBT file in `dir` spending one synthetic output of `wallet` (its
/// prevout made of `byte`) back to the wallet itself, which the default
/// policy allows.
pub fn self_payment(dir: &Path, wallet: &Made, byte: u8) -> PathBuf {
    payment(dir, wallet, byte, &wallet.address)
}

/// A PSBT file in `dir` spending one synthetic output of `wallet` (its
/// prevout made of `byte`) to `address`.
pub fn payment(dir: &Path, wallet: &Made, byte: u8, address: &str) -> PathBuf {
    let input = format!(
        "{}:0:60000:5120{}",
        hex::encode([byte; 32]),
        wallet.output_key
    );
    let built = json(
        &[
            "psbt",
            "build",
            "--internal-key",
            &wallet.internal_key,
            "--network",
            "regtest",
            "--input",
            &input,
            "--output",
            &format!("{address}:59000"),
        ],
        0,
    );
    let file = dir.join(format!("{byte:02x}.psbt"));
    std::fs::write(&file, built["psbt"].as_str().unwrap()).unwrap();
    file
}

/// `thresig sign --json` of the PSBT file `psbt` with `wallet`, from the
/// member configuration `config`: the process's output.
pub fn sign(config: &str, wallet: &str, psbt: &Path) -> std::process::Output {
    thresig(&[
        "sign",
        "--config",
        config,
        "--wallet",
        wallet,
        "--psbt",
        psbt.to_str().unwrap(),
        "--json",
    ])
}

/// One scrape of the metrics endpoint at `addr`: the whole HTTP response.
/// A scrape is answered in milliseconds; the read bound only ends a hung
/// test.
pub fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response
}

/// The member configuration a child of [`killed_child`] works on.
pub const CHILD_CONFIG: &str = "THRESIG_TEST_CHILD_CONFIG";
/// Where a child of [`killed_child`] running [`rotate_dek_up_to`] kills
/// itself: `promoted`, `resealed_one` or `resealed`.
pub const CHILD_STEP: &str = "THRESIG_TEST_CHILD_STEP";

/// Runs the ignored test `name` of the calling test file in a child process
/// with `vars` set, and checks that it ended killed by SIGKILL: it kills
/// itself at the boundary it is written to reach, so a panic before it
/// fails here.
pub fn killed_child(name: &str, vars: &[(&str, &str)]) {
    use std::os::unix::process::ExitStatusExt as _;
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture"])
        .envs(vars.iter().copied())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9), "{name} did not reach its kill");
}

/// Where a child of [`killed_child`] stops: SIGKILL to itself, so nothing
/// after the boundary runs (no destructor, no clean close of a store).
pub fn kill_9_self() -> ! {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::this(), Signal::SIGKILL).unwrap();
    unreachable!("SIGKILL cannot be caught")
}

/// Checks that a child of [`killed_child`] died with the store of the
/// member configuration at `config` open, as a kill -9 leaves it: redb,
/// opening the file, has to repair it (a store closed cleanly needs no
/// repair, so a child whose store was dropped before its kill fails here).
/// Opened and closed cleanly here, the store is as the kill left it.
pub fn assert_store_left_open(config: &Path) {
    let data_dir = thresig_cluster::config::Config::load(config)
        .unwrap()
        .data_dir;
    let repaired = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = repaired.clone();
    let db = redb::Builder::new()
        .set_repair_callback(move |_| seen.set(true))
        .open(data_dir.join("state.redb"))
        .unwrap();
    drop(db);
    assert!(repaired.get(), "the store was closed before the kill");
}

/// The store of the member configuration at `config`, opened here (the
/// member must be stopped: its process holds the store).
pub fn open_store(config: &Path) -> thresig_store::EncryptedStore {
    let config = thresig_cluster::config::Config::load(config).unwrap();
    let provider: Arc<dyn thresig_store::provider::KeyProvider> =
        Arc::new(config.key_provider.open().unwrap());
    thresig_store::EncryptedStore::open(config.location(), provider, config.options.clone())
        .unwrap()
}

/// Runs a DEK rotation of `store` step by step, as
/// `EncryptedStore::rotate_dek` does, up to the boundary `step` names:
/// `promoted` (the new DEK current, no record re-sealed), `resealed_one`
/// (one batch re-sealed; with `reseal_batch = 1` others remain) or
/// `resealed` (every record re-sealed, the old DEK not retired).
pub fn rotate_dek_up_to(store: &thresig_store::EncryptedStore, step: &str) {
    store.start_dek_rotation().unwrap();
    match step {
        "promoted" => {}
        "resealed_one" => assert_eq!(store.reseal_step().unwrap(), 1),
        "resealed" => while store.reseal_step().unwrap() > 0 {},
        other => panic!("no such step: {other}"),
    }
}

/// Has member configuration `config`'s store re-seal one record per batch
/// (`[store] reseal_batch = 1`), so a kill can fall between two batches of
/// a DEK rotation; read at the member's next start.
pub fn reseal_one_per_batch(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let edited = text.replacen("[store]\n", "[store]\nreseal_batch = 1\n", 1);
    assert_ne!(edited, text, "no [store] table in {}", config.display());
    std::fs::write(config, edited).unwrap();
}

/// Member `s` as `thresig status --json`, run from `config`, shows it.
pub fn member_status(config: &str, s: u16) -> serde_json::Value {
    let status = json(&["status", "--config", config], 0);
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["member"] == s)
        .unwrap()
        .clone()
}
