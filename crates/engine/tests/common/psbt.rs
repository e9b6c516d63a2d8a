//! Taproot PSBTs of a test wallet, and round-2 requests over them.

use std::collections::BTreeMap;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::key::XOnlyPublicKey;
use bitcoin::secp256k1::{SECP256K1, SecretKey};
use bitcoin::taproot::TapNodeHash;
use bitcoin::{Amount, OutPoint, Txid};
use thresig_crypto::{Commitment, ScriptTree};
use thresig_engine::{Error, Round2Request, SigningTarget};
use thresig_tx::{
    Destination, Network, Payment, PolicyConfig, Rule, SpendInput, TaprootWallet, Violation,
    WalletPsbt, build_psbt,
};

use super::{COORD_A, Cluster, wid};

/// An address outside every test wallet, on regtest.
pub fn external() -> bitcoin::Address {
    let sk = SecretKey::from_slice(&[0x42; 32]).unwrap();
    TaprootWallet::new(Network::Regtest, sk.x_only_public_key(SECP256K1).0, None).address()
}

/// The default policy with [`external`] on the destination allowlist.
pub fn policy() -> PolicyConfig {
    let mut p = PolicyConfig::default();
    p.destinations = vec![external().to_string()];
    p
}

/// The wallet's spend identity, from the key the harness made (what a
/// coordinator knows; the signer uses its own record).
pub fn taproot(c: &Cluster, wallet: &str) -> TaprootWallet {
    let key = &c.keys[&wid(wallet)];
    let internal = XOnlyPublicKey::from_slice(&key.internal_key().to_bytes()).unwrap();
    let output = XOnlyPublicKey::from_slice(&key.output_key().to_bytes()).unwrap();
    let root = match key.script_tree() {
        ScriptTree::Root(r) => Some(TapNodeHash::from_byte_array(r.0)),
        _ => None,
    };
    TaprootWallet::from_keys(Network::Regtest, internal, root, output).unwrap()
}

/// `n` made-up outputs of the wallet of `value` each; `salt` makes the
/// outpoints (and so the transaction) distinct.
pub fn funding(w: &TaprootWallet, n: usize, value: u64, salt: u8) -> Vec<SpendInput> {
    (0..n)
        .map(|i| SpendInput {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([salt; 32]),
                vout: u32::try_from(i).unwrap(),
            },
            value: Amount::from_sat(value),
            script_pubkey: w.script_pubkey().clone(),
        })
        .collect()
}

/// Spends `inputs` outputs of 100 000 sat: 50 000 to [`external`], the
/// rest less a 1 000 sat fee back to the wallet.
pub fn spend(w: &TaprootWallet, inputs: usize, salt: u8) -> WalletPsbt {
    pay(w, &funding(w, inputs, 100_000, salt), Some(external()))
}

/// Spends `inputs`: 50 000 sat to `to` if given, the rest less a 1 000 sat
/// fee to the wallet itself; or, without `to`, everything to the wallet.
pub fn pay(w: &TaprootWallet, inputs: &[SpendInput], to: Option<bitcoin::Address>) -> WalletPsbt {
    pay_with_fee(w, inputs, to, 1_000)
}

/// [`pay`] with a fee of `fee` sat.
pub fn pay_with_fee(
    w: &TaprootWallet,
    inputs: &[SpendInput],
    to: Option<bitcoin::Address>,
    fee: u64,
) -> WalletPsbt {
    let total: u64 = inputs.iter().map(|i| i.value.to_sat()).sum();
    let mut outputs = Vec::new();
    let mut rest = total - fee;
    if let Some(to) = to {
        outputs.push(Payment {
            destination: Destination::Address(to),
            value: Amount::from_sat(50_000),
        });
        rest -= 50_000;
    }
    outputs.push(Payment {
        destination: Destination::Script(w.script_pubkey().clone()),
        value: Amount::from_sat(rest),
    });
    build_psbt(w, inputs, &outputs, LockTime::ZERO).unwrap()
}

/// The messages an honest coordinator asks for: every wallet input's
/// sighash, in input order.
pub fn sighashes(psbt: &WalletPsbt) -> Vec<[u8; 32]> {
    psbt.wallet_sighashes()
        .unwrap()
        .iter()
        .map(|s| s.sighash.to_byte_array())
        .collect()
}

/// Round 1 at `seats` for `inputs` nonces each.
pub fn round1(
    c: &mut Cluster,
    wallet: &str,
    seats: &[u16],
    inputs: usize,
) -> BTreeMap<u16, Vec<Commitment>> {
    seats
        .iter()
        .map(|s| (*s, c.round1(*s, COORD_A, wallet, inputs).unwrap()))
        .collect()
}

/// A round-2 request for `psbt` with the given messages.
pub fn psbt_request(
    c: &mut Cluster,
    wallet: &str,
    seats: &[u16],
    psbt: &[u8],
    messages: &[[u8; 32]],
) -> (Round2Request, BTreeMap<u16, Vec<Commitment>>) {
    let comms = round1(c, wallet, seats, messages.len());
    let req = c.request_for(wallet, &comms, messages, SigningTarget::psbt(psbt.to_vec()));
    (req, comms)
}

/// The rule and violation of a policy denial (any other error fails the
/// test).
pub fn denial(err: &Error) -> (Rule, Violation) {
    match err {
        Error::PolicyDenied { denial, .. } => (denial.rule, denial.violation.clone()),
        other => panic!("expected policy_denied, got {other:?}"),
    }
}

/// The [`denial`] of a coordinator past its one transaction a day.
pub const COORDINATOR_DAY_FULL: (Rule, Violation) = (
    Rule::CoordinatorRatePerDay,
    Violation::Rate {
        charged: 1,
        limit: 1,
    },
);

/// The rate ledger of `wallet` as stored at `seat` (docs/storage-format.md):
/// the summary's length, and the charges its ring holds from `head` to
/// `next`, each as its charge key and time, in sequence order.
pub fn stored_charges(c: &Cluster, seat: u16, wallet: &str) -> (usize, Vec<([u8; 32], u64)>) {
    use thresig_store::Store as _;
    let record = |name: &[u8]| {
        let key = thresig_store::PolicyKey::new(name.to_vec()).unwrap();
        c.member(seat).store().policy(&wid(wallet), &key).unwrap()
    };
    let word = |bytes: &[u8], at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    let summary = record(b"rate-ledger").map_or(Vec::new(), |p| p.to_vec());
    if summary.is_empty() {
        return (0, Vec::new());
    }
    let (head, next) = (word(&summary, 1), word(&summary, 17));
    let charges = (head..next)
        .map(|seq| {
            let slot = u16::try_from(seq % 10_000).unwrap().to_be_bytes();
            let slot = record(&[b"rate-ledger/slot/".as_slice(), &slot].concat()).unwrap();
            assert_eq!(word(&slot, 0), seq);
            (slot[8..40].try_into().unwrap(), word(&slot, 8 + 32))
        })
        .collect();
    (summary.len(), charges)
}
