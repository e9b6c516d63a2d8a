//! Bitcoin Taproot transactions for thresig: PSBTs, sighashes, signing policy.
//!
//! This crate is pure: it holds no keys, does no I/O and reads no clock.
//!
//! - [`TaprootWallet`] is a wallet's spend identity (internal key, optional
//!   script-tree root, output key and its P2TR scriptPubKey, [`Network`]).
//! - [`build_psbt`] makes a PSBT spending the wallet's outputs by key path,
//!   with the BIP371 fields; [`WalletPsbt::from_base64`] and
//!   [`WalletPsbt::from_bytes`] accept PSBTs made by other wallets. Either
//!   way the result is a [`WalletPsbt`], validated against the wallet.
//! - [`WalletPsbt::wallet_sighashes`] gives the BIP341 key-path sighash of
//!   every input the wallet signs ([`key_spend_sighash`] for a bare
//!   transaction); the engine compares them with the coordinator's messages.
//! - [`Policy`] decides whether the signer may sign: [`Policy::check`]
//!   before releasing a share, [`Policy::evaluate`] for a per-rule report.
//!   It is configured by a [`PolicyConfig`] (`[wallets.policy]` in TOML).
//! - [`WalletPsbt::insert_signature`] takes the aggregated signatures,
//!   [`WalletPsbt::extract_transaction`] finalizes and returns the transaction.
//!
//! # Before a signer releases a share
//!
//! 1. Parse the coordinator's PSBT against the wallet's own record:
//!    `WalletPsbt::from_bytes(bytes, &wallet)` (the wallet's keys and root come
//!    from the signer's store, never from the request).
//! 2. Derive the messages: [`WalletPsbt::wallet_sighashes`] gives one
//!    [`KeySpendSighash`] per input the wallet signs; the request must ask for
//!    exactly these inputs with exactly these 32-byte messages.
//! 3. Check the policy: [`Policy::check_for`] with the wallet's [`WalletMode`],
//!    the current time, the rate ledger and the requesting coordinator's
//!    [`CoordinatorId`] ([`Policy::check`] when no coordinator is known: the
//!    per-coordinator limits then count every charge); a refusal is
//!    [`Error::PolicyDenied`].
//! 4. Record [`Approval::charge`] — with [`Approval::fee`] and
//!    [`Approval::coordinator`], as [`ChargeLog::record`] does — in the same
//!    durable transaction as the share's marker. A raw-digest request instead
//!    needs [`Policy::check_raw_digests`].
//!
//! # Example
//!
//! ```
//! # fn main() -> Result<(), thresig_tx::Error> {
//! use bitcoin::absolute::LockTime;
//! use bitcoin::hashes::Hash;
//! use bitcoin::{Amount, OutPoint, Txid};
//! use thresig_tx::*;
//!
//! let secp = bitcoin::secp256k1::Secp256k1::new();
//! let sk = bitcoin::secp256k1::SecretKey::from_slice(&[1; 32]).expect("valid key");
//! let wallet = TaprootWallet::new(Network::Regtest, sk.x_only_public_key(&secp).0, None);
//! let funding = SpendInput {
//!     outpoint: OutPoint { txid: Txid::all_zeros(), vout: 0 },
//!     value: Amount::from_sat(10_000),
//!     script_pubkey: wallet.script_pubkey().clone(),
//! };
//! let change = Payment { destination: Destination::Address(wallet.address()), value: Amount::from_sat(9_000) };
//! let psbt = build_psbt(&wallet, &[funding], &[change], LockTime::ZERO)?;
//!
//! // What a signer signs, and whether it may.
//! let messages = psbt.wallet_sighashes()?;
//! assert_eq!(messages.len(), 1);
//! let policy = Policy::from_toml("max_fee_sat = 2000", Network::Regtest, 2)?;
//! let approval = policy.check(&psbt, &WalletMode::Active, UnixTime(1_700_000_000), &ChargeLog::new())?;
//! assert!(matches!(approval.charge(), RateCharge::Charge { .. }));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod build;
mod error;
mod finalize;
mod network;
mod policy;
mod psbt;
mod sighash;
mod wallet;

pub use build::{Destination, Payment, SpendInput, build_psbt};
pub use error::{AmountOf, Error, TaprootField};
pub use network::Network;
pub use policy::{
    Approval, ChargeEntry, ChargeKey, ChargeLedger, ChargeLog, CoordinatorId,
    DEFAULT_MAX_FEE_PER_DAY_SAT, DEFAULT_MAX_FEE_RATE_SAT_VB, DEFAULT_MAX_FEE_SAT,
    DEFAULT_MAX_PER_DAY, DEFAULT_MAX_PER_DAY_PER_COORDINATOR, FUTURE_CHARGE_TOLERANCE_SECS,
    MAX_PER_DAY_CEILING, Outcome, OutputScriptType, Policy, PolicyConfig, PolicyConfigError,
    PolicyDenial, PolicyReport, PolicyVersion, RateCharge, RawDigests, Rule, SighashTypeName,
    TimeWindow, TimeWindowConfig, UnixTime, Violation, WalletMode, Weekday, rate_windows,
};
pub use psbt::{MAX_INPUTS, MAX_OUTPUTS, MAX_PSBT_ENTRIES, MAX_STANDARD_WEIGHT, WalletPsbt};
pub use sighash::{InputIndex, KeySpendSighash, OutputIndex, key_spend_sig_msg, key_spend_sighash};
pub use wallet::TaprootWallet;
