//! The member and cluster commands: `init`, `cluster init`, `serve`,
//! `dkg`, `sign`, `status`.

use crate::MEMBER_CONFIG;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use thresig_cluster::config::NodeWallet;
use thresig_cluster::config::{Config, NodeConfig};
use thresig_cluster::file::{MAX_TRANSACTION_FILE_BYTES, read_bounded};
use thresig_cluster::node::Node;
use thresig_cluster::provision::{self, ClusterSpec};
use thresig_cluster::scores::Observed;
use thresig_cluster::{
    DkgOutcome, OwnWallet, Peers, SignError, SignOptions, cluster_status, own_wallet, run_dkg,
    sign, wallet_views,
};
use thresig_crypto::Seat;
use thresig_daemon::{ClusterCa, ClusterName};
use thresig_engine::{BlameProof, WalletId, WalletStatus};
use thresig_store::Recovery;
use thresig_tx::{InputIndex, Network, WalletPsbt};

use crate::admin::{self, AdminServer};
use crate::bar::Bar;
use crate::because;
use crate::blame::{print_proof_paths, write_dkg_proof, write_proofs};
use crate::lifecycle::pending;

/// `thresig init`.
#[derive(Args)]
pub(crate) struct InitArgs {
    /// The member directory to create.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The member's cluster seat (1-based).
    #[arg(long, value_name = "SEAT")]
    member: u16,
    /// The cluster CA directory (`ca.pem`, `ca.key`), as `cluster init`
    /// makes it.
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// The cluster's name (must match the CA's).
    #[arg(long, default_value = "local")]
    cluster: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `thresig cluster`.
#[derive(Args)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Make a local CA and N member directories sharing one roster and one
    /// wallet.
    Init(ClusterInitArgs),
}

#[derive(Args)]
struct ClusterInitArgs {
    /// Number of members.
    #[arg(long, default_value_t = 5)]
    members: u16,
    /// The directory to create.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The wallet every member joins.
    #[arg(long, default_value = "main")]
    wallet: String,
    /// Its threshold.
    #[arg(long, default_value_t = 3)]
    threshold: u16,
    /// The network.
    #[arg(long, default_value = "regtest")]
    network: String,
    /// Member `i` listens on 127.0.0.1:(base-port + i), its metrics on
    /// base-port + 1000 + i.
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// The cluster's name (in certificate names).
    #[arg(long, default_value = "local")]
    cluster: String,
    /// An address the wallet's policy lets it pay (repeatable).
    #[arg(long = "allow-destination", value_name = "ADDRESS")]
    destinations: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `thresig serve`.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The member's configuration file (never a default: a daemon names
    /// the file it serves).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// `thresig dkg`.
#[derive(Args)]
pub(crate) struct DkgArgs {
    /// The coordinating member's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// The wallet, as the members' configurations define it.
    #[arg(long)]
    wallet: String,
    /// Where to write the proof against a member whose round-2 package
    /// another member proved invalid, or whose round-1 package fails the
    /// checks under its kind-bound signature (`culprit-<seat>.proof.json`,
    /// checked by `thresig blame verify`).
    #[arg(long, value_name = "DIR", default_value = ".")]
    proof_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `thresig sign`.
#[derive(Args)]
pub(crate) struct SignArgs {
    /// The coordinating member's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// The wallet.
    #[arg(long)]
    wallet: String,
    /// The PSBT to sign (base64 or binary).
    #[arg(long, value_name = "FILE")]
    psbt: PathBuf,
    /// Where to write the signed PSBT (base64); default `<PSBT>.signed`.
    #[arg(long, value_name = "FILE")]
    out_psbt: Option<PathBuf>,
    /// Where to write the final transaction (hex); default `<PSBT>.tx`.
    #[arg(long, value_name = "FILE")]
    out_tx: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `thresig status`.
#[derive(Args)]
pub(crate) struct StatusArgs {
    /// A member's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn init(args: &InitArgs) -> Result<()> {
    let seat = Seat::try_from(args.member).map_err(|e| {
        because(
            format!("--member must be in 1..={}", thresig_crypto::MAX_SIGNERS),
            e,
        )
    })?;
    let cluster = ClusterName::new(args.cluster.clone()).map_err(|e| because("--cluster", e))?;
    let ca = ClusterCa::load(
        cluster,
        &args.ca_dir.join("ca.pem"),
        &args.ca_dir.join("ca.key"),
    )?;
    let member = provision::init_member(
        &args.dir,
        seat,
        &ca,
        SystemTime::now(),
        &mut rand_core::OsRng,
    )?;
    let identity = hex::encode(member.identity.to_bytes());
    let tls_key = hex::encode(member.tls_key_sha256);
    if args.json {
        println!(
            "{}",
            json!({
                "member": seat.get(),
                "identity": identity,
                "tls_key_sha256": tls_key,
                "dir": member.dir,
            })
        );
    } else {
        println!(
            "member {seat} initialized in {}\n  identity key:   {identity}\n  \
             TLS key sha256: {tls_key}\n\
             Add both to every member's [[members]] roster.",
            member.dir.display()
        );
    }
    Ok(())
}

pub(crate) fn cluster(args: &ClusterArgs) -> Result<()> {
    let ClusterCommand::Init(a) = &args.command;
    let network: Network = a.network.parse()?;
    let mut spec = ClusterSpec::loopback(
        ClusterName::new(a.cluster.clone()).map_err(|e| because("--cluster", e))?,
        network,
        a.members,
        a.base_port,
        WalletId::new(a.wallet.clone()).map_err(|e| because("--wallet", e))?,
        a.threshold,
    )?;
    spec.policy.destinations.clone_from(&a.destinations);
    let members = provision::init_cluster(&a.dir, &spec, SystemTime::now(), &mut rand_core::OsRng)?;
    let configs: Vec<PathBuf> = members
        .iter()
        .map(|m| m.dir.join(provision::CONFIG_FILE))
        .collect();
    if a.json {
        println!("{}", json!({"dir": a.dir, "configs": configs}));
    } else {
        println!(
            "cluster of {} members in {} (wallet {}, {}-of-{})",
            members.len(),
            a.dir.display(),
            a.wallet,
            a.threshold,
            members.len()
        );
        for c in configs {
            println!("  thresig serve --config {}", c.display());
        }
    }
    Ok(())
}

/// Opens the signer, starts its admin socket (so `thresig keys` acts on it
/// while it runs), serves until SIGINT or SIGTERM, then stops the socket
/// before the store closes.
pub(crate) fn serve(args: &ServeArgs) -> Result<()> {
    let node = Node::open(&args.config)?;
    let admin = AdminServer::start(
        node.admin_socket(),
        node.provider().clone(),
        node.store().clone(),
        node.engine().clone(),
    )?;
    Ok(node.run(|| admin.stop())?)
}

/// A loaded member configuration and its connections.
pub(crate) struct Coordinating {
    pub(crate) node: NodeConfig,
    pub(crate) peers: Arc<Peers>,
    /// This member's own signer's admin socket, where each signing run this
    /// member coordinates is reported for the signer's metrics.
    pub(crate) admin_socket: PathBuf,
    /// This member's coordinator's score file (docs/quarantine.md).
    pub(crate) scores: PathBuf,
}

impl Coordinating {
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let config = Config::load(path)?;
        let admin_socket = thresig_cluster::node::admin_socket_path(&config);
        let scores = thresig_cluster::scores::scores_path(&config);
        let node = config.into_node(path)?;
        if node.daemon.is_none() {
            bail!(
                "{}: no [daemon] section; `dkg`, `sign`, `status` and `psbt inspect` connect to \
                 the members with its TLS files: add it (docs/configuration.md)",
                path.display()
            );
        }
        let peers = Arc::new(Peers::new(&node)?);
        Ok(Self {
            node,
            peers,
            admin_socket,
            scores,
        })
    }

    pub(crate) fn wallet(&self, id: &str) -> Result<&NodeWallet> {
        let id = WalletId::new(id.to_owned()).map_err(|e| because("--wallet", e))?;
        self.node.wallet(&id).with_context(|| {
            let known: Vec<&str> = self.node.wallets.iter().map(|w| w.id().as_str()).collect();
            format!(
                "wallet {id} is not in this member's configuration (its wallets: {}); \
                 pass one of them to --wallet, or add it under [[wallets]] in every member's configuration",
                known.join(", ")
            )
        })
    }
}

/// `wallet` as `node`'s own signer holds it (the only source this member
/// trusts for its keys); an error names the member.
pub(crate) fn own(
    runtime: &tokio::runtime::Runtime,
    peers: &Peers,
    node: &NodeConfig,
    wallet: &WalletId,
) -> Result<OwnWallet> {
    runtime
        .block_on(own_wallet(peers, node, wallet))
        .map_err(|e| {
            because(
                format!("member {} (this member's own signer)", node.member),
                e,
            )
        })
}

/// The wallet as this member's own signer recorded it after a DKG, checked
/// against the output key every member confirmed.
pub(crate) fn confirmed(
    runtime: &tokio::runtime::Runtime,
    peers: &Peers,
    node: &NodeConfig,
    wallet: &NodeWallet,
    dkg: &DkgOutcome,
) -> Result<OwnWallet> {
    let own = own(runtime, peers, node, wallet.id())?;
    if own.spend.output_key().to_x_only_public_key().serialize() != dkg.output_key {
        bail!("this member's key record differs from the confirmed output key");
    }
    Ok(own)
}

/// A DKG that every member confirmed, whose key this member's own signer
/// did not then give back (`error`): terminal, since every member now holds
/// the wallet's key and another `thresig dkg` is refused
/// (`wallet_already_keyed`); says to check the wallet with `thresig status`.
pub(crate) fn dkg_completed(
    error: anyhow::Error,
    wallet: &str,
    output_key: &[u8; 32],
    config: &Path,
) -> anyhow::Error {
    anyhow::Error::new(crate::AfterChange(format!(
        "the DKG of wallet {wallet} completed (every member confirmed output key {}), but reading \
         the key back failed: {error}; do not run `thresig dkg` again: check the wallet with \
         `thresig status --config {}` once this member's signer answers",
        hex::encode(output_key),
        config.display()
    )))
}

/// `own` failing for a wallet its own signer holds no key for
/// (`wallet_not_active`) is terminal: no wait gives it one, its DKG must be
/// run (or finished) first; other failures keep their class.
pub(crate) fn keyed(result: Result<OwnWallet>) -> Result<OwnWallet> {
    result.map_err(|e| {
        let unkeyed = e.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<thresig_daemon::Error>(),
                Some(thresig_daemon::Error::Refused(r)) if r.code.as_str() == "wallet_not_active"
            )
        });
        if unkeyed {
            anyhow::Error::new(crate::AfterChange(e.to_string()))
        } else {
            e
        }
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn dkg(args: &DkgArgs) -> Result<()> {
    let c = Coordinating::load(&args.config)?;
    let wallet = c.wallet(&args.wallet)?;
    let runtime = runtime()?;
    let outcome = runtime
        .block_on(run_dkg(
            &c.peers,
            wallet,
            &mut rand_core::OsRng,
            &Bar::new(),
        ))
        .inspect_err(|e| write_dkg_proof(&args.proof_dir, e))?;
    let spend = confirmed(&runtime, &c.peers, &c.node, wallet, &outcome)
        .map_err(|e| dkg_completed(e, wallet.id().as_str(), &outcome.output_key, &args.config))?
        .spend;
    let internal_key = hex::encode(spend.internal_key().serialize());
    let output_key = hex::encode(outcome.output_key);
    let address = spend.address().to_string();
    // The root the key commits to (a script-tree wallet's), from the key
    // record every member confirmed.
    let merkle_root = spend
        .merkle_root()
        .map(|r| hex::encode(bitcoin::hashes::Hash::to_byte_array(r)));
    if args.json {
        println!(
            "{}",
            json!({
                "wallet": wallet.id().as_str(),
                "internal_key": internal_key,
                "merkle_root": merkle_root,
                "output_key": output_key,
                "address": address,
                "session": hex::encode(outcome.session.0),
            })
        );
    } else {
        println!(
            "wallet {} is active on all {} members\n  internal key: {internal_key}\n  \
             {}output key:   {output_key}\n  address:      {address}",
            wallet.id(),
            wallet.seats.len(),
            merkle_root.map_or_else(String::new, |r| format!(
                "script tree:  {r} (key-path spends: `psbt build --merkle-root {r}`)\n  "
            )),
        );
    }
    Ok(())
}

pub(crate) fn sign_psbt(args: &SignArgs) -> Result<()> {
    let c = Coordinating::load(&args.config)?;
    let wallet = c.wallet(&args.wallet)?;
    let bytes = read_bounded(&args.psbt, MAX_TRANSACTION_FILE_BYTES)?;
    let runtime = runtime()?;
    let own = keyed(own(&runtime, &c.peers, &c.node, wallet.id()))?;
    let psbt = match std::str::from_utf8(&bytes) {
        Ok(text) => WalletPsbt::from_base64(text.trim(), &own.spend),
        Err(_) => WalletPsbt::from_bytes(&bytes, &own.spend),
    }
    .map_err(|e| not_a_psbt(&args.psbt, e))?;
    let out = Outputs {
        psbt: args
            .out_psbt
            .clone()
            .unwrap_or_else(|| with_suffix(&args.psbt, "signed")),
        tx: args
            .out_tx
            .clone()
            .unwrap_or_else(|| with_suffix(&args.psbt, "tx")),
        json: args.json,
    };
    sign_and_write(&runtime, &c, wallet, &own, psbt, &out)
}

/// Where a signing command writes its results, and in which form it
/// reports them.
pub(crate) struct Outputs {
    /// The signed PSBT (base64).
    pub(crate) psbt: PathBuf,
    /// The final transaction (hex).
    pub(crate) tx: PathBuf,
    /// Report in JSON.
    pub(crate) json: bool,
}

/// Signs `psbt` with `wallet` (as this member's own signer holds it)
/// through ROAST, writes the signed PSBT and the final transaction, and
/// reports them: the one signing path of `thresig sign` and `thresig
/// sweep`.
pub(crate) fn sign_and_write(
    runtime: &tokio::runtime::Runtime,
    c: &Coordinating,
    wallet: &NodeWallet,
    own: &OwnWallet,
    psbt: WalletPsbt,
    out: &Outputs,
) -> Result<()> {
    let scores = crate::quarantine::RunScores::open(&c.scores);
    let mut options = SignOptions::default();
    options.progress = Some(Arc::new(Bar::new()));
    options.deferred = scores.deferred();
    let result = runtime.block_on(sign(&c.peers, wallet, &own.key, own.epoch, &psbt, &options));
    drop(options);
    // Evidence is kept whether or not the run signed: a run that too many
    // culprits stopped is when it matters most.
    let beside = out.psbt.parent().unwrap_or(Path::new("."));
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            if let SignError::Failed {
                proofs,
                culprits,
                observed,
                ..
            } = &e
            {
                // A PSBT or setup error asked nothing of the members: no
                // run to count.
                let retryable = e.recovery() == Recovery::Retryable;
                let run = admin::Request::sign_failed(retryable);
                let found = Found {
                    proofs,
                    culprits: culprits.len(),
                    observed,
                };
                // The proofs are named as soon as they are written: the
                // scores and the reports after them may each wait.
                keep_evidence(c, &scores, beside, &found, &run, print_proof_paths);
            }
            return Err(e.into());
        }
    };
    // The signatures are written before any proof, which cannot lose them.
    let signed = finish(psbt, &outcome.signatures)?;
    std::fs::write(&out.psbt, &signed.psbt_base64)
        .map_err(|e| because(format!("writing {}", out.psbt.display()), e))?;
    std::fs::write(&out.tx, &signed.tx_hex)
        .map_err(|e| because(format!("writing {}", out.tx.display()), e))?;
    // Counted once it is written.
    let found = Found {
        proofs: &outcome.proofs,
        culprits: outcome.culprits.len(),
        observed: &outcome.observed,
    };
    let run = admin::Request::signed(outcome.sessions);
    let proofs = keep_evidence(c, &scores, beside, &found, &run, |_| {});
    let culprits: Vec<u16> = outcome.culprits.iter().map(|s| s.get()).collect();
    if out.json {
        println!(
            "{}",
            json!({
                "wallet": wallet.id().as_str(),
                "txid": signed.txid,
                "psbt": out.psbt,
                "tx": out.tx,
                "sessions": outcome.sessions,
                "culprits": culprits,
                "proofs": proofs,
            })
        );
    } else {
        println!(
            "signed {} in {} ROAST session(s)\n  signed PSBT: {}\n  transaction: {}",
            signed.txid,
            outcome.sessions,
            out.psbt.display(),
            out.tx.display()
        );
        if !culprits.is_empty() {
            println!("  members that sent invalid shares: {culprits:?}");
            for proof in &proofs {
                println!("  proof: {} (`thresig blame verify`)", proof.display());
            }
        }
    }
    Ok(())
}

/// What a signing run found, signed or not: the proofs against the
/// culprits of invalid shares, how many culprits it named, and what it
/// saw of each member.
struct Found<'a> {
    proofs: &'a BTreeMap<Seat, BlameProof>,
    culprits: usize,
    observed: &'a Observed,
}

/// Keeps what a run `found`, whether or not it signed (a run that too many
/// culprits stopped is when it matters most): writes the proofs in
/// `beside` and hands their files to `written`, records the scores, then
/// reports `run` and its culprits to this member's signer; the proof files
/// written. Called after a signed run's outputs are written: neither the
/// score file's lock, held by another process, nor a signer that does not
/// answer may hold back a signature already made, nor the naming of the
/// proofs (`written` comes before either).
fn keep_evidence(
    c: &Coordinating,
    scores: &crate::quarantine::RunScores,
    beside: &Path,
    found: &Found<'_>,
    run: &admin::Request,
    written: impl FnOnce(&[PathBuf]),
) -> Vec<PathBuf> {
    let files = write_proofs(beside, found.proofs);
    files.warn();
    written(&files.paths);
    scores.record(found.observed);
    report_run(&c.admin_socket, run);
    report_culprits(&c.admin_socket, found.culprits, files.paths.len());
    files.paths
}

/// Tells this member's own signer, if it runs, how a signing run ended,
/// for its metrics. The run's result stands whatever happens here, so a
/// failure is only noted.
fn report_run(socket: &Path, report: &admin::Request) {
    if let Err(e) = admin::ask_within(socket, report, admin::REPORT_TIMEOUT) {
        eprintln!(
            "note: this signing run is not counted in this signer's metrics ({e}); nothing else is affected"
        );
    }
}

/// Tells this member's own signer of the `named` culprits of invalid
/// shares a run found and the `proofs` files written for them, like
/// [`report_run`]; nothing when the run named none.
fn report_culprits(socket: &Path, named: usize, proofs: usize) {
    let reason = thresig_daemon::CulpritReason::InvalidShare;
    if let Some(report) = crate::culprits::CulpritsRequest::new(reason, named, proofs) {
        report_run(socket, &admin::Request::Culprits(report));
    }
}

/// A PSBT file that does not decode or does not fit the wallet, with what
/// to pass instead.
pub(crate) fn not_a_psbt(path: &Path, error: thresig_tx::Error) -> anyhow::Error {
    let message = format!(
        "{}: {error}; pass a PSBT spending the wallet's outputs (base64 or binary), as `thresig psbt build` writes it",
        path.display()
    );
    anyhow::Error::new(error).context(message)
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// A PSBT with every signature inserted, and what came out of it.
pub(crate) struct Finished {
    pub(crate) psbt_base64: String,
    pub(crate) tx_hex: String,
    pub(crate) txid: String,
}

/// Inserts the signatures (one per wallet input, in order), finalizes and
/// extracts the transaction.
pub(crate) fn finish(mut psbt: WalletPsbt, signatures: &[[u8; 64]]) -> Result<Finished> {
    let inputs: Vec<InputIndex> = psbt.wallet_inputs().to_vec();
    if inputs.len() != signatures.len() {
        bail!(
            "{} signatures for {} wallet inputs",
            signatures.len(),
            inputs.len()
        );
    }
    for (input, signature) in inputs.into_iter().zip(signatures) {
        psbt.insert_signature(input, signature)?;
    }
    let psbt_base64 = psbt.to_base64();
    let tx = psbt.extract_transaction()?;
    Ok(Finished {
        psbt_base64,
        tx_hex: bitcoin::consensus::encode::serialize_hex(&tx),
        txid: tx.compute_txid().to_string(),
    })
}

pub(crate) fn status(args: &StatusArgs) -> Result<()> {
    let c = Coordinating::load(&args.config)?;
    let members = runtime()?.block_on(cluster_status(&c.peers));
    let mut rows = Vec::new();
    let mut text = String::new();
    for m in &members {
        match &m.wallets {
            Ok(list) => {
                let successor = |w: &WalletStatus| {
                    c.node
                        .wallet(&w.wallet)
                        .and_then(|n| n.config.successor.as_ref())
                };
                let states: Vec<serde_json::Value> = list
                    .iter()
                    .map(|w| {
                        let pending: Vec<serde_json::Value> = pending(w, successor(w))
                            .iter()
                            .map(|p| p.to_json(&w.wallet))
                            .collect();
                        json!({
                            "wallet": w.wallet,
                            "state": w.state,
                            "epoch": w.epoch.map(|e| e.0),
                            "live_nonces": w.live_nonces,
                            "pending": pending,
                            "refresh": crate::refresh::pending_json(w),
                            "policy": crate::policy::wallet_json(w),
                        })
                    })
                    .collect();
                let summary: Vec<String> = list
                    .iter()
                    .map(|w| {
                        let epoch = w
                            .epoch
                            .map_or_else(String::new, |e| format!("epoch {}, ", e.0));
                        let pending: Vec<String> = pending(w, successor(w))
                            .iter()
                            .map(|p| format!("; pending {}: {}", p.name(), p.step(&w.wallet)))
                            .collect();
                        format!(
                            "{} {} ({epoch}{} live nonces{}{}{})",
                            w.wallet,
                            w.state.as_str(),
                            w.live_nonces,
                            crate::policy::wallet_text(w),
                            pending.concat(),
                            crate::refresh::pending_text(w)
                        )
                    })
                    .collect();
                text.push_str(&format!(
                    "member {:>3}  reachable    {}\n",
                    m.seat,
                    summary.join(", ")
                ));
                rows.push(json!({"member": m.seat.get(), "reachable": true, "wallets": states}));
            }
            Err(e) => {
                text.push_str(&format!("member {:>3}  UNREACHABLE  {e}\n", m.seat));
                rows.push(
                    json!({"member": m.seat.get(), "reachable": false, "error": e.to_string()}),
                );
            }
        }
    }
    let views = wallet_views(c.node.member, &members);
    // The scores are this member's coordinator's own view of its peers: a
    // score file that does not read is shown as such, beside the rest.
    let roster: Vec<_> = c.node.members.keys().copied().collect();
    let now = std::time::SystemTime::now();
    let scores = thresig_cluster::scores::ScoreStore::read_file(&c.scores);
    if args.json {
        let wallets: serde_json::Map<String, serde_json::Value> = views
            .iter()
            .map(|w| {
                let disagreeing: Vec<serde_json::Value> = w
                    .disagreeing
                    .iter()
                    .map(|(seat, key)| json!({"member": seat.get(), "output_key": key}))
                    .collect();
                let view = json!({
                    "threshold": w.threshold,
                    "members": w.members,
                    "output_key": w.output_key,
                    "disagreeing": disagreeing,
                });
                (w.wallet.to_string(), view)
            })
            .collect();
        let quarantine = match &scores {
            Ok(scores) => json!(crate::quarantine::json_rows(&roster, scores, now)),
            Err(e) => json!({"error": {"code": e.code(), "message": e.to_string()}}),
        };
        println!(
            "{}",
            json!({"members": rows, "wallets": wallets, "quarantine": quarantine})
        );
    } else {
        print!("{text}");
        match &scores {
            Ok(scores) => print!(
                "scores kept by this member's coordinator (docs/quarantine.md):\n{}",
                crate::quarantine::text_rows(&roster, scores, now)
            ),
            Err(e) => println!("scores: error[{}]: {e}", e.code()),
        }
        for w in &views {
            let key = w.output_key.as_ref().map_or_else(
                || "(none from this member's signer yet)".to_owned(),
                |k| hex::encode(&k.0),
            );
            println!(
                "wallet {}: {}-of-{}, output key {key}",
                w.wallet, w.threshold, w.members
            );
            for (seat, other) in &w.disagreeing {
                println!(
                    "  MEMBERS DISAGREE: member {seat} reports output key {}; do not fund this wallet until an operator has compared every member's `thresig status`",
                    hex::encode(&other.0)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// The demo's faulty members run from the demo's own code: `thresig
    /// serve` takes its configuration and nothing else, so no flag can
    /// make a signer misbehave. A new argument of `serve` fails this test.
    #[test]
    fn serve_takes_only_its_configuration() {
        let mut cli = crate::Cli::command();
        cli.build();
        let serve = cli.find_subcommand("serve").unwrap();
        let mut args: Vec<&str> = serve
            .get_arguments()
            .map(|arg| arg.get_id().as_str())
            .collect();
        args.sort_unstable();
        // `--log-format` is the command line's, global to every command.
        assert_eq!(args, ["config", "help", "log_format"]);
        let config = serve
            .get_arguments()
            .find(|arg| arg.get_id() == "config")
            .unwrap();
        assert_eq!(config.get_long(), Some("config"));
        assert!(config.is_required_set());
    }
}
