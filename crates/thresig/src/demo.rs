//! `thresig demo`: a real DKG among N members and a T-of-N Taproot key-path
//! signature, all in one process.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest as _, Sha256};
use thresig_crypto::{
    GroupParams, KeyOrigin, KeyShare, ScriptTree, Seat, SigningPackage, WalletKey, aggregate,
    commit, dkg_in_process, sign, taproot_output_key, verify, verify_share,
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
    if args.json {
        println!("{}", outcome.json());
    } else {
        print!("{}", outcome.readable(params));
    }
    Ok(())
}

/// The printed fields: JSON name, readable label, value (hex). `group_key`
/// is the x-only internal key as the wallet records it (for this key-path
/// DKG wallet, P, the sum of the round-1 constant-term commitments);
/// `output_key` is its BIP341 key-path tweak Q.
impl Outcome {
    fn fields(&self) -> [(&'static str, &'static str, String); 4] {
        [
            (
                "group_key",
                "group key (internal, P)",
                format!("{:x}", self.wallet.internal_key()),
            ),
            (
                "output_key",
                "output key (Q = tweak(P))",
                format!("{:x}", self.wallet.output_key()),
            ),
            ("message", "message", hex::encode(self.message)),
            ("signature", "signature", hex::encode(self.signature)),
        ]
    }

    /// The one JSON object of `--json`.
    fn json(&self) -> serde_json::Value {
        self.fields()
            .into_iter()
            .map(|(name, _, value)| (name.to_owned(), serde_json::Value::String(value)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// The readable summary, the same values under their labels.
    fn readable(&self, params: GroupParams) -> String {
        let seats: Vec<String> = self.signers.iter().map(Seat::to_string).collect();
        let mut out = format!(
            "thresig demo: {}-of-{} FROST wallet, Taproot key path\n",
            params.threshold(),
            params.signers()
        );
        out.push_str(&format!("  {:<25} : {}\n", "signers", seats.join(", ")));
        for (_, label, value) in self.fields() {
            out.push_str(&format!("  {label:<25} : {value}\n"));
        }
        out.push_str("  BIP340 signature verifies under the output key.\n");
        out
    }
}

fn run(params: GroupParams, rng: &mut (impl RngCore + CryptoRng)) -> anyhow::Result<Outcome> {
    let (shares, wallet) = dkg_in_process(params, ScriptTree::KeyPathOnly, rng)?;
    // The printed group key is the recorded internal key; for a key-path DKG
    // wallet that is P, and the output key is its key-path tweak.
    if wallet.origin() != KeyOrigin::Dkg
        || wallet.script_tree() != ScriptTree::KeyPathOnly
        || taproot_output_key(&wallet.internal_key(), &ScriptTree::KeyPathOnly)?
            != wallet.output_key()
    {
        bail!("the DKG wallet does not follow the key-path convention");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded RNG for replayable tests: SHA-256 of (seed, counter) blocks.
    struct SeededRng {
        seed: u64,
        counter: u64,
    }

    impl RngCore for SeededRng {
        fn next_u32(&mut self) -> u32 {
            rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(32) {
                let block = Sha256::new()
                    .chain_update(self.seed.to_be_bytes())
                    .chain_update(self.counter.to_be_bytes())
                    .finalize();
                self.counter += 1;
                chunk.copy_from_slice(&block[..chunk.len()]);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl CryptoRng for SeededRng {}

    #[test]
    fn json_and_readable_output_show_the_recorded_keys_under_matching_labels() {
        let params = GroupParams::new(2, 3).unwrap();
        let rng = &mut SeededRng {
            seed: 11,
            counter: 0,
        };
        let outcome = run(params, rng).unwrap();
        let json = outcome.json();
        let internal = format!("{:x}", outcome.wallet.internal_key());
        let output = format!("{:x}", outcome.wallet.output_key());
        assert_eq!(json["group_key"].as_str(), Some(internal.as_str()));
        assert_eq!(json["output_key"].as_str(), Some(output.as_str()));
        assert_ne!(internal, output);
        let readable = outcome.readable(params);
        let line = |label: &str| {
            readable
                .lines()
                .find(|l| l.trim_start().starts_with(label))
                .and_then(|l| l.split(" : ").nth(1))
                .map(str::to_owned)
        };
        assert_eq!(line("group key (internal, P)"), Some(internal));
        assert_eq!(line("output key (Q"), Some(output));
        assert!(readable.contains("2-of-3"));
    }
}
