//! `thresig demo`: a real DKG among N members and a T-of-N Taproot key-path
//! signature, all in one process.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest as _, Sha256};
use thresig_crypto::{
    GroupParams, KeyShare, ScriptTree, Seat, SigningPackage, WalletKey, aggregate, commit,
    dkg_in_process, sign, verify, verify_share,
};
use tracing::info;

/// Flags of `thresig demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// Number of members (n).
    #[arg(long, default_value_t = 5)]
    signers: u16,
    /// Members needed to sign (t), 2 <= t <= n.
    #[arg(long, default_value_t = 3)]
    threshold: u16,
    /// Print exactly one JSON object instead of the readable summary.
    #[arg(long)]
    json: bool,
}

/// What the demo produced.
struct Outcome {
    wallet: WalletKey,
    message: [u8; 32],
    signature: [u8; 64],
    signers: Vec<Seat>,
}

/// The 32-byte demo message: BIP340 tagged hash `thresig/demo` of a fixed string.
fn demo_message() -> [u8; 32] {
    let tag = Sha256::digest(b"thresig/demo");
    Sha256::new()
        .chain_update(tag)
        .chain_update(tag)
        .chain_update(b"thresig demo: t-of-n Taproot key-path signature")
        .finalize()
        .into()
}

/// Runs the demo and prints its result on stdout.
pub(crate) fn main(args: &DemoArgs, rng: &mut (impl RngCore + CryptoRng)) -> anyhow::Result<()> {
    if args.threshold < 2 {
        bail!("--threshold must be at least 2 (got {})", args.threshold);
    }
    if args.threshold > args.signers {
        bail!(
            "--threshold ({}) must not exceed --signers ({})",
            args.threshold,
            args.signers
        );
    }
    let params = GroupParams::new(args.threshold, args.signers)
        .with_context(|| format!("--signers must be at most {}", thresig_crypto::MAX_SIGNERS))?;
    let outcome = run(params, rng)?;
    let json = serde_json::json!({
        "group_key": format!("{:x}", outcome.wallet.internal_key()),
        "output_key": format!("{:x}", outcome.wallet.output_key()),
        "message": hex::encode(outcome.message),
        "signature": hex::encode(outcome.signature),
    });
    if args.json {
        println!("{json}");
    } else {
        println!(
            "thresig demo: {}-of-{} FROST wallet, Taproot key path",
            params.threshold(),
            params.signers()
        );
        let seats: Vec<String> = outcome.signers.iter().map(Seat::to_string).collect();
        println!("  signers          : {}", seats.join(", "));
        let fields = [
            ("internal key (P)", "group_key"),
            ("output key   (Q)", "output_key"),
            ("message         ", "message"),
            ("signature       ", "signature"),
        ];
        for (label, field) in fields {
            println!("  {label} : {}", json[field].as_str().unwrap_or_default());
        }
        println!("  BIP340 signature verifies under the output key.");
    }
    Ok(())
}

fn run(params: GroupParams, rng: &mut (impl RngCore + CryptoRng)) -> anyhow::Result<Outcome> {
    let (shares, wallet) = dkg_in_process(params, ScriptTree::KeyPathOnly, rng)?;
    info!(output_key = %format!("{:x}", wallet.output_key()), "DKG complete");
    let message = demo_message();
    let signers: Vec<Seat> = params
        .seats()
        .take(usize::from(params.threshold()))
        .collect();
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for seat in &signers {
        let (nonce, commitment) = commit(share(&shares, *seat)?, rng);
        nonces.push(nonce);
        commitments.insert(*seat, commitment);
    }
    let package = SigningPackage::new(&commitments, &message)?;
    let mut sig_shares = BTreeMap::new();
    for nonce in nonces {
        let seat = nonce.seat();
        let sig_share = sign(nonce, &package, share(&shares, seat)?, &wallet)?;
        verify_share(&wallet, &package, seat, &sig_share)?;
        sig_shares.insert(seat, sig_share);
    }
    let signature = aggregate(&wallet, &package, &sig_shares)?;
    verify(&wallet.output_key(), &message, &signature)?;
    info!(signers = signers.len(), "signature aggregated and verified");
    Ok(Outcome {
        wallet,
        message,
        signature: signature.to_bytes()?,
        signers,
    })
}

fn share(shares: &BTreeMap<Seat, KeyShare>, seat: Seat) -> anyhow::Result<&KeyShare> {
    shares
        .get(&seat)
        .with_context(|| format!("no key share for seat {seat}"))
}
