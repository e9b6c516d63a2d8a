//! `thresig demo`: a local cluster of signers on loopback with mutual TLS
//! runs a DKG and signs a Taproot transaction through ROAST while some
//! members are stopped and some send invalid shares. Honest members are
//! `thresig serve` processes; the ones sending invalid shares are served in
//! this process ([`crate::fault`]), so `thresig serve` has no way to
//! misbehave.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, OutPoint, Txid};
use rand_core::{CryptoRng, RngCore};
use serde_json::json;
use thresig_cluster::config::NodeConfig;
use thresig_cluster::config::NodeWallet;
use thresig_cluster::local::{LocalCluster, LocalError, free_loopback_ports, wait_ready_unless};
use thresig_cluster::provision::ClusterSpec;
use thresig_cluster::{OwnWallet, Peers, SignError, SignOptions, SignOutcome, run_dkg, sign};
use thresig_crypto::{Seat, WalletKey};
use thresig_daemon::ClusterName;
use thresig_engine::{WalletEpoch, WalletId};
use thresig_tx::{
    Destination, Network, Payment, PolicyConfig, SpendInput, TaprootWallet, build_psbt,
};
use tracing::{info, warn};

use crate::bar::Bar;
use crate::blame::{print_proof_paths, write_dkg_proof, write_proofs};
use crate::fault::{Faulty, Misbehavior};
use crate::member::{confirmed, finish};

/// Flags of `thresig demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// Number of members (n), up to 100.
    #[arg(long, default_value_t = 5)]
    signers: u16,
    /// Members needed to sign (t), 2 <= t <= n.
    #[arg(long, default_value_t = 3)]
    threshold: u16,
    /// Members stopped before signing (the highest seats).
    #[arg(long, default_value_t = 0)]
    offline: u16,
    /// Members that send invalid shares (seats 2, 3, ...; they answer first,
    /// so the first session includes them).
    #[arg(long, default_value_t = 0)]
    malicious: u16,
    /// The --malicious members cheat in the DKG instead, and the DKG fails
    /// with a proof against one (written into --keep): `round2` (the
    /// default) seals each one's round-2 package to its first recipient
    /// so that it does not open; `round1` sends a round-1 package whose
    /// proof of knowledge does not verify.
    #[arg(
        long,
        requires = "malicious",
        value_enum,
        num_args = 0..=1,
        default_missing_value = "round2",
        value_name = "ROUND"
    )]
    malicious_dkg: Option<DkgCheat>,
    /// Inputs of the demo transaction.
    #[arg(long, default_value_t = 2)]
    inputs: u16,
    /// Keep the cluster directory (configurations, stores, logs) here
    /// instead of a temporary directory removed at the end.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Print exactly one JSON object instead of the readable summary.
    #[arg(long)]
    json: bool,
}

/// Which DKG round the `--malicious` members cheat in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DkgCheat {
    /// A round-2 package that does not open.
    Round2,
    /// A round-1 package whose proof of knowledge does not verify.
    Round1,
}

/// The member whose configuration and TLS identity coordinate.
pub(crate) const COORDINATOR: Seat = Seat::FIRST;
/// The demo wallet's id.
const WALLET: &str = "demo";
/// Value of each synthetic prevout.
const PREVOUT_SAT: u64 = 100_000;
/// Fee of the demo transaction (about 10 sat/vB at two inputs).
const FEE_SAT: u64 = 2_000;
/// How long a member may take to start serving: opening its store and
/// binding its ports take milliseconds; a hundred members (debug builds)
/// starting at once on two busy cores have taken over two minutes.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How many times the cluster is created, each on fresh ports, while a
/// member finds its port taken: the ports are only probed free
/// ([`free_loopback_ports`]), and with many clusters starting at once
/// another process can take one before its member binds it.
const START_ATTEMPTS: u32 = 3;

/// Loopback addresses (gRPC, metrics) of `count` members.
type Endpoints = Vec<(SocketAddr, SocketAddr)>;

/// Which members do what.
struct Roles {
    offline: Vec<Seat>,
    malicious: Vec<Seat>,
}

impl Roles {
    fn of(args: &DemoArgs) -> Result<Self> {
        let n = args.signers;
        if !(2..=thresig_crypto::MAX_SIGNERS).contains(&n) {
            bail!("--signers must be in 2..={}", thresig_crypto::MAX_SIGNERS);
        }
        if args.threshold < 2 || args.threshold > n {
            bail!("--threshold must be in 2..={n} (got {})", args.threshold);
        }
        // Member 1 coordinates, so it stays online and honest.
        let honest_online = i32::from(n) - i32::from(args.offline) - i32::from(args.malicious);
        if honest_online < i32::from(args.threshold) || args.offline + args.malicious >= n {
            bail!(
                "{n} signers with {} offline and {} malicious leave fewer than --threshold {} \
                 honest members online (member 1 coordinates and is always honest)",
                args.offline,
                args.malicious,
                args.threshold
            );
        }
        if args.inputs == 0 {
            bail!("--inputs must be at least 1");
        }
        let seats = |range: std::ops::RangeInclusive<u16>| {
            range.filter_map(|s| Seat::try_from(s).ok()).collect()
        };
        Ok(Self {
            malicious: seats(2..=args.malicious + 1),
            offline: seats(n - args.offline + 1..=n),
        })
    }
}

/// A local cluster after its DKG: what the demo and the load generator
/// share.
pub(crate) struct Launched {
    pub(crate) cluster: LocalCluster,
    /// The members sending invalid shares, served in this process.
    pub(crate) faulty: Vec<Faulty>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) wallet: NodeWallet,
    pub(crate) key: WalletKey,
    pub(crate) epoch: WalletEpoch,
    pub(crate) spend: TaprootWallet,
    /// The output key every member confirmed.
    pub(crate) output_key: [u8; 32],
    /// The cluster's temporary directory (if not kept), removed when
    /// dropped.
    pub(crate) temp: Option<tempfile::TempDir>,
}

/// Creates a `threshold`-of-`signers` cluster in `keep` (or a temporary
/// directory) whose wallet has `policy`, starts every member (a `thresig
/// serve` process each; those in `malicious`, sending invalid shares, in
/// this process), waits until all serve, and runs the DKG. `ports` picks
/// the members' addresses ([`free_loopback_ports`]), again for each attempt
/// after a member found its port taken.
pub(crate) fn launch(
    signers: u16,
    threshold: u16,
    policy: PolicyConfig,
    faults: &[(Seat, Misbehavior)],
    keep: Option<&PathBuf>,
    rng: &mut (impl RngCore + CryptoRng),
    mut ports: impl FnMut(usize) -> std::io::Result<Endpoints>,
) -> Result<Launched> {
    let (dir, temp) = match keep {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::Builder::new().prefix("thresig-demo-").tempdir()?;
            (temp.path().join("cluster"), Some(temp))
        }
    };
    let mut attempt = 1;
    let Started {
        cluster,
        faulty,
        peers,
        runtime,
        coordinator,
    } = loop {
        let mut spec = ClusterSpec::new(
            ClusterName::new("demo".to_owned())?,
            Network::Regtest,
            ports(usize::from(signers))?,
            WalletId::new(WALLET.to_owned())?,
            threshold,
        );
        spec.policy = policy.clone();
        let error = match start(&dir, &spec, faults, rng) {
            Ok(started) => break started,
            Err(error) => error,
        };
        let Some(LocalError::Stopped {
            seat,
            address_in_use: true,
            ..
        }) = error.downcast_ref::<LocalError>()
        else {
            return Err(error);
        };
        if attempt >= START_ATTEMPTS {
            return Err(error);
        }
        let (address, metrics) = usize::from(seat.get())
            .checked_sub(1)
            .and_then(|index| spec.endpoints.get(index))
            .copied()
            .context("the member that stopped is not in the cluster")?;
        warn!(
            member = %seat,
            %address,
            %metrics,
            attempt,
            "the member's port was taken; creating the cluster again on fresh ports"
        );
        // The failed attempt's members are stopped by now (`start` dropped
        // them), so its directory is cleared, not a fresh one made beside
        // it: `--keep DIR` keeps its layout, and provisioning refuses a
        // directory that is not empty. What goes is only what that attempt
        // made, since provisioning it succeeded only into an empty one.
        std::fs::remove_dir_all(&dir).map_err(|e| {
            crate::because(
                format_args!("cannot clear {} to start again", dir.display()),
                e,
            )
        })?;
        attempt += 1;
    };
    let wallet = coordinator
        .wallet(&WalletId::new(WALLET.to_owned())?)
        .context("the demo wallet is missing")?
        .clone();
    info!("running the DKG");
    let dkg = runtime
        .block_on(run_dkg(&peers, &wallet, rng, &Bar::new()))
        .inspect_err(|e| {
            if let Some(dir) = keep {
                write_dkg_proof(dir, e);
            }
        })?;
    let OwnWallet {
        key, epoch, spend, ..
    } = confirmed(&runtime, &peers, &coordinator, &wallet, &dkg)?;
    Ok(Launched {
        cluster,
        faulty,
        peers,
        runtime,
        wallet,
        key,
        epoch,
        spend,
        output_key: dkg.output_key,
        temp,
    })
}

/// A cluster whose members all serve.
struct Started {
    cluster: LocalCluster,
    faulty: Vec<Faulty>,
    peers: Arc<Peers>,
    runtime: tokio::runtime::Runtime,
    coordinator: NodeConfig,
}

/// Provisions the cluster of `spec` in `dir`, starts every member and waits
/// until each serves; a member that stops first ends the wait at once
/// ([`LocalError::Stopped`]), and every member started is stopped again
/// when this fails.
fn start(
    dir: &Path,
    spec: &ClusterSpec,
    faults: &[(Seat, Misbehavior)],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Started> {
    info!(members = spec.endpoints.len(), dir = %dir.display(), "creating the cluster");
    let mut cluster = LocalCluster::create(dir, spec, std::env::current_exe()?, rng)?;
    let seats: Vec<Seat> = cluster.members().iter().map(|m| m.seat).collect();
    let mut faulty = Vec::new();
    for seat in &seats {
        if let Some((_, misbehavior)) = faults.iter().find(|(s, _)| s == seat) {
            let config = cluster.config_path(*seat)?;
            let log = cluster.log_path(*seat)?;
            faulty.push(Faulty::start(*seat, &config, &log, *misbehavior)?);
        } else {
            cluster.start(*seat)?;
        }
    }
    let coordinator = cluster.node(COORDINATOR)?;
    let peers = Arc::new(Peers::new(&coordinator)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for seat in &seats {
            match faulty.iter_mut().find(|f| f.seat() == *seat) {
                Some(member) => {
                    wait_ready_unless(&peers, *seat, START_TIMEOUT, || member.stopped()).await?;
                }
                None => cluster.wait_ready(&peers, *seat, START_TIMEOUT).await?,
            }
        }
        Ok::<_, LocalError>(())
    })?;
    Ok(Started {
        cluster,
        faulty,
        peers,
        runtime,
        coordinator,
    })
}

/// Runs the demo and prints its result on stdout.
pub(crate) fn main(args: &DemoArgs, rng: &mut (impl RngCore + CryptoRng)) -> Result<()> {
    let roles = Roles::of(args)?;
    let destination = fresh_address(rng)?;
    let mut policy = PolicyConfig::default();
    policy.destinations = vec![destination.to_string()];
    let Launched {
        mut cluster,
        faulty,
        peers,
        runtime,
        wallet,
        key,
        epoch,
        spend,
        output_key,
        temp: _temp,
    } = launch(
        args.signers,
        args.threshold,
        policy,
        &roles
            .malicious
            .iter()
            .map(|seat| {
                let misbehavior = match args.malicious_dkg {
                    Some(DkgCheat::Round2) => Misbehavior::InvalidDkgPackages,
                    Some(DkgCheat::Round1) => Misbehavior::BadRound1Proof,
                    None => Misbehavior::InvalidShares,
                };
                (*seat, misbehavior)
            })
            .collect::<Vec<_>>(),
        args.keep.as_ref(),
        rng,
        free_loopback_ports,
    )?;
    for seat in &roles.offline {
        info!(%seat, "stopping member");
        cluster.stop(*seat)?;
    }
    let inputs = synthetic_prevouts(&spend, args.inputs, rng);
    let total = PREVOUT_SAT * u64::from(args.inputs);
    let payment = Payment {
        destination: Destination::Address(destination),
        value: Amount::from_sat(total - FEE_SAT),
    };
    let psbt = build_psbt(
        &spend,
        &inputs,
        &[payment],
        bitcoin::absolute::LockTime::ZERO,
    )?;
    let sighashes: Vec<String> = psbt
        .wallet_sighashes()?
        .iter()
        .map(|s| hex::encode(s.sighash.to_byte_array()))
        .collect();
    let mut options = SignOptions::default();
    options.progress = Some(Arc::new(Bar::new()));
    options.answer_first = roles.malicious.iter().copied().collect::<BTreeSet<_>>();
    info!("signing through ROAST");
    let result = runtime.block_on(sign(&peers, &wallet, &key, epoch, &psbt, &options));
    // The evidence against each culprit stays with the kept cluster, where
    // `thresig blame verify --config <member>/signer.toml` checks it, also
    // when the run failed.
    let proofs = match (&args.keep, &result) {
        (Some(dir), Ok(SignOutcome { proofs, .. }) | Err(SignError::Failed { proofs, .. })) => {
            let files = write_proofs(dir, proofs);
            files.warn();
            files.paths
        }
        _ => Vec::new(),
    };
    let outcome = result.inspect_err(|_| print_proof_paths(&proofs))?;
    let finished = finish(psbt, &outcome.signatures)?;
    let mut failed = cluster.stop_all()?;
    let mut causes = Vec::new();
    for member in faulty {
        let seat = member.seat();
        if let Err(error) = member.stop() {
            failed.push(seat);
            causes.push(format!("; {error}"));
        }
    }
    if !failed.is_empty() {
        bail!(
            "members {failed:?} did not shut down cleanly (see their signer.log){}",
            causes.concat()
        );
    }
    let prevouts: Vec<serde_json::Value> = inputs
        .iter()
        .map(|i| {
            json!({
                "txid": i.outpoint.txid.to_string(),
                "vout": i.outpoint.vout,
                "value_sat": i.value.to_sat(),
                "script_pubkey": hex::encode(i.script_pubkey.as_bytes()),
            })
        })
        .collect();
    let numbers = |seats: &[Seat]| seats.iter().map(|s| s.get()).collect::<Vec<_>>();
    let report = json!({
        "group_key": hex::encode(spend.internal_key().serialize()),
        "output_key": hex::encode(output_key),
        "prevouts": prevouts,
        "tx_hex": finished.tx_hex,
        "txid": finished.txid,
        "sighashes": sighashes,
        "signatures": outcome.signatures.iter().map(hex::encode).collect::<Vec<_>>(),
        "sessions": outcome.sessions,
        "culprits": numbers(&outcome.culprits),
        "proofs": proofs,
        "malicious": numbers(&roles.malicious),
        "offline": numbers(&roles.offline),
    });
    if args.json {
        println!("{report}");
    } else {
        print!("{}", readable(args, &report, &spend));
    }
    Ok(())
}

/// The readable summary of the report's values.
fn readable(args: &DemoArgs, report: &serde_json::Value, spend: &TaprootWallet) -> String {
    let field = |name: &str| report[name].to_string().trim_matches('"').to_owned();
    let mut out = format!(
        "thresig demo: {}-of-{} FROST wallet on {} signers (loopback, mTLS)\n",
        args.threshold, args.signers, args.signers
    );
    for (label, name) in [
        ("group key (internal, P)", "group_key"),
        ("output key (Q)", "output_key"),
        ("transaction id", "txid"),
        ("ROAST sessions", "sessions"),
        ("stopped members", "offline"),
        ("malicious members", "malicious"),
        ("caught sending bad shares", "culprits"),
        ("proofs against them", "proofs"),
    ] {
        out.push_str(&format!("  {label:<26}: {}\n", field(name)));
    }
    out.push_str(&format!(
        "  {:<26}: {}\n",
        "wallet address",
        spend.address()
    ));
    out.push_str(
        "  Every input's BIP340 signature verifies under the output key;\n  \
         the final transaction (tx_hex in --json) is ready to broadcast on regtest.\n",
    );
    out
}

/// A P2TR address of a fresh random key: the transaction's destination.
pub(crate) fn fresh_address(rng: &mut (impl RngCore + CryptoRng)) -> Result<bitcoin::Address> {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let key = bitcoin::secp256k1::SecretKey::from_slice(&secret)?;
    let (xonly, _) = key
        .public_key(bitcoin::secp256k1::SECP256K1)
        .x_only_public_key();
    Ok(TaprootWallet::new(Network::Regtest, xonly, None).address())
}

/// Synthetic outputs of the wallet to spend: random txids, as if funded.
pub(crate) fn synthetic_prevouts(
    spend: &TaprootWallet,
    count: u16,
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<SpendInput> {
    (0..count)
        .map(|_| {
            let mut txid = [0u8; 32];
            rng.fill_bytes(&mut txid);
            SpendInput {
                outpoint: OutPoint::new(Txid::from_byte_array(txid), 0),
                value: Amount::from_sat(PREVOUT_SAT),
                script_pubkey: spend.script_pubkey().clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn a_cluster_whose_port_was_taken_is_created_again_on_fresh_ports() {
        let taken = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let seats = [Seat::FIRST, Seat::try_from(2).unwrap()];
        // Served in this process, so that no `thresig` binary is needed;
        // invalid shares only matter when signing, after the launch.
        let faults = seats.map(|seat| (seat, Misbehavior::InvalidShares));
        let mut asked = 0;
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let launched = launch(
            2,
            2,
            PolicyConfig::default(),
            &faults,
            None,
            &mut rng,
            |count| {
                asked += 1;
                let mut ports = free_loopback_ports(count)?;
                if asked == 1 {
                    ports[1].0 = taken.local_addr()?;
                }
                Ok(ports)
            },
        );
        let launched = launched.unwrap();
        assert_eq!(asked, 2);
        for member in launched.faulty {
            member.stop().unwrap();
        }
    }
}
