//! The crate's error type.

use bitcoin::key::XOnlyPublicKey;
use bitcoin::{Amount, ScriptBuf, TapSighashType};

use crate::Network;
use crate::policy::{PolicyConfigError, PolicyDenial};
use crate::sighash::{InputIndex, OutputIndex};

/// Which amount of a PSBT an [`Error::AboveMaxMoney`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AmountOf {
    /// The value of the output an input spends.
    Input(InputIndex),
    /// An output's value.
    Output(OutputIndex),
    /// The sum of the inputs' values.
    InputTotal,
    /// The sum of the outputs' values.
    OutputTotal,
}

/// A BIP371 Taproot field of a PSBT input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaprootField {
    /// `PSBT_IN_TAP_INTERNAL_KEY`.
    InternalKey,
    /// `PSBT_IN_TAP_MERKLE_ROOT`.
    MerkleRoot,
}

/// Everything that can go wrong in the transaction layer.
///
/// Apart from [`Error::PolicyDenied`] under a time or rate rule (see
/// [`Error::lifts_with_time`]), the same input fails the same way again,
/// because this crate is pure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The binary PSBT could not be decoded.
    #[error("malformed PSBT: {}", causes(source))]
    PsbtDecode {
        /// The decoder's error.
        #[source]
        source: bitcoin::psbt::Error,
    },
    /// The base64 PSBT could not be decoded.
    #[error("malformed base64 PSBT: {}", causes(source))]
    PsbtText {
        /// The decoder's error.
        #[source]
        source: bitcoin::psbt::PsbtParseError,
    },
    /// Bytes follow the PSBT's last map (BIP174 allows none).
    #[error("{trailing} bytes after the PSBT")]
    PsbtTrailingBytes {
        /// How many bytes follow.
        trailing: usize,
    },
    /// The PSBT's maps hold more key-value pairs in all than
    /// [`crate::MAX_PSBT_ENTRIES`].
    #[error("more than {max} key-value pairs in the PSBT's maps")]
    TooManyPsbtEntries {
        /// The cap.
        max: usize,
    },
    /// The transaction has more inputs than any standard transaction can
    /// have ([`crate::MAX_INPUTS`]).
    #[error("{inputs} inputs, at most {max} allowed")]
    TooManyInputs {
        /// Inputs of the transaction.
        inputs: usize,
        /// The cap.
        max: usize,
    },
    /// The transaction has more outputs than any standard transaction can
    /// have ([`crate::MAX_OUTPUTS`]).
    #[error("{outputs} outputs, at most {max} allowed")]
    TooManyOutputs {
        /// Outputs of the transaction.
        outputs: usize,
        /// The cap.
        max: usize,
    },
    /// Even with the smallest possible scriptSigs and witnesses the signed
    /// transaction would weigh more than Bitcoin Core relays
    /// ([`crate::MAX_STANDARD_WEIGHT`]).
    #[error("estimated weight {weight} WU above the standard limit {max} WU")]
    TooHeavy {
        /// The estimated (lower-bound) weight.
        weight: u64,
        /// The limit.
        max: u64,
    },
    /// Two inputs spend the same outpoint (consensus refuses such a transaction).
    #[error("{input} spends the same outpoint as {first}")]
    DuplicateOutpoint {
        /// The later input.
        input: InputIndex,
        /// The first input spending that outpoint.
        first: InputIndex,
    },
    /// An amount, or a total, is above 21 million BTC (`Amount::MAX_MONEY`).
    #[error("{amount:?} is {value}, above 21 million BTC")]
    AboveMaxMoney {
        /// Which amount.
        amount: AmountOf,
        /// Its value.
        value: Amount,
    },
    /// The PSBT has not one input map per transaction input and one output
    /// map per transaction output.
    #[error(
        "PSBT has {psbt_inputs}/{psbt_outputs} input/output maps for {tx_inputs}/{tx_outputs} inputs/outputs"
    )]
    PsbtMapCount {
        /// Inputs of the unsigned transaction.
        tx_inputs: usize,
        /// Input maps of the PSBT.
        psbt_inputs: usize,
        /// Outputs of the unsigned transaction.
        tx_outputs: usize,
        /// Output maps of the PSBT.
        psbt_outputs: usize,
    },
    /// An input lacks `witness_utxo`, so no BIP341 sighash can be computed
    /// (BIP341 commits to every prevout).
    #[error("{input} has no witness_utxo")]
    MissingWitnessUtxo {
        /// The input.
        input: InputIndex,
    },
    /// An input's `non_witness_utxo` is not the transaction it spends, or
    /// disagrees with its `witness_utxo` on amount or script.
    #[error("{input}: non_witness_utxo and witness_utxo disagree")]
    PrevoutMismatch {
        /// The input.
        input: InputIndex,
    },
    /// An input claimed for the wallet spends a script that is not Taproot.
    #[error("{input} is claimed for the wallet but spends a non-Taproot script")]
    NonTaprootInput {
        /// The input.
        input: InputIndex,
        /// The script it spends.
        script_pubkey: ScriptBuf,
    },
    /// An input claimed for the wallet has a BIP371 field that is not the wallet's.
    #[error("{input}: {field:?} differs from the wallet's")]
    TaprootFieldMismatch {
        /// The input.
        input: InputIndex,
        /// The field.
        field: TaprootField,
    },
    /// An input declares a sighash type that is not a Taproot sighash type.
    #[error("{input} declares invalid Taproot sighash type {value:#x}")]
    InvalidSighashType {
        /// The input.
        input: InputIndex,
        /// The declared value.
        value: u32,
    },
    /// An input declares `SINGLE` but has no output at its index, so BIP341
    /// defines no sighash for it.
    #[error("{input} declares SIGHASH_SINGLE without a matching output")]
    SingleWithoutOutput {
        /// The input.
        input: InputIndex,
    },
    /// No input of the PSBT belongs to the wallet: nothing to sign.
    #[error("no input of the PSBT belongs to the wallet")]
    NoWalletInputs,
    /// A sum of amounts overflows.
    #[error("amounts overflow")]
    AmountOverflow,
    /// The outputs spend more than the inputs hold.
    #[error("outputs ({outputs}) exceed inputs ({inputs})")]
    OutputsExceedInputs {
        /// Total input value.
        inputs: Amount,
        /// Total output value.
        outputs: Amount,
    },
    /// A transaction to build has no inputs.
    #[error("no inputs")]
    NoInputs,
    /// A transaction to build, or a PSBT, has no outputs.
    #[error("no outputs")]
    NoOutputs,
    /// An input to build from does not pay the wallet's scriptPubKey.
    #[error("{input} does not spend the wallet's output key")]
    InputNotWallet {
        /// The input.
        input: InputIndex,
    },
    /// An input index past the last input.
    #[error("{input} out of range ({inputs} inputs)")]
    InputOutOfRange {
        /// The index.
        input: InputIndex,
        /// How many inputs there are.
        inputs: usize,
    },
    /// A signature was offered for an input the wallet does not sign.
    #[error("{input} is not the wallet's")]
    NotWalletInput {
        /// The input.
        input: InputIndex,
    },
    /// The sighash could not be computed (index, prevouts or `SINGLE` without output).
    #[error("sighash of {input}: {source}")]
    Sighash {
        /// The input.
        input: InputIndex,
        /// rust-bitcoin's error.
        #[source]
        source: bitcoin::sighash::TaprootError,
    },
    /// Encoding the signature message failed (cannot happen when writing to memory).
    #[error("sighash message of {input} could not be encoded")]
    SighashEncoding {
        /// The input.
        input: InputIndex,
    },
    /// A signature is not 64 bytes, or 65 with a valid non-default type byte.
    #[error("{input}: malformed Schnorr signature of {len} bytes")]
    SignatureEncoding {
        /// The input.
        input: InputIndex,
        /// Its length.
        len: usize,
    },
    /// A signature's sighash type is not the one its input declares.
    #[error("{input}: signature has sighash type {signature}, input declares {declared}")]
    SighashTypeMismatch {
        /// The input.
        input: InputIndex,
        /// The declared type.
        declared: TapSighashType,
        /// The signature's type.
        signature: TapSighashType,
    },
    /// A signature does not verify under the wallet's output key.
    #[error("{input}: signature does not verify")]
    InvalidSignature {
        /// The input.
        input: InputIndex,
    },
    /// An input has no signature (or, for a foreign input, no final witness).
    #[error("{input} is not signed")]
    MissingSignature {
        /// The input.
        input: InputIndex,
    },
    /// A stored output key is not the tweak of the stored internal key and root.
    #[error("stored output key {stored} is not the tweak of the stored internal key and root")]
    OutputKeyMismatch {
        /// The key that was stored.
        stored: XOnlyPublicKey,
    },
    /// Text that is not an address.
    #[error("not an address: {}", causes(source))]
    AddressParse {
        /// The parser's error.
        #[source]
        source: bitcoin::address::ParseError,
    },
    /// An address of another network than the configured one.
    #[error("address {address} is not for network {network}")]
    WrongNetwork {
        /// The configured network.
        network: Network,
        /// The address as given.
        address: String,
    },
    /// A network name other than `bitcoin`, `testnet`, `signet`, `regtest`.
    #[error("unknown network {name:?}")]
    UnknownNetwork {
        /// The name given.
        name: String,
    },
    /// The policy configuration is invalid.
    #[error(transparent)]
    PolicyConfig(#[from] PolicyConfigError),
    /// The signing policy refuses (`policy_denied`): the rule and the offending value.
    #[error("policy_denied: rule {} refused ({:?})", .0.rule, .0.violation)]
    PolicyDenied(PolicyDenial),
}

impl Error {
    /// Whether the same request may succeed later: only a refusal by a time
    /// window or a rate limit, which passing time can lift.
    #[must_use]
    pub const fn lifts_with_time(&self) -> bool {
        match self {
            Self::PolicyDenied(denial) => denial.rule.lifts_with_time(),
            _ => false,
        }
    }

    /// The refusal, if this is `policy_denied`.
    #[must_use]
    pub const fn policy_denial(&self) -> Option<&PolicyDenial> {
        match self {
            Self::PolicyDenied(denial) => Some(denial),
            _ => None,
        }
    }
}

/// A rust-bitcoin error and its causes as one line. rust-bitcoin's errors
/// name only their own level and give the rest through `source()`, while
/// this crate's messages are whole (nothing prints their chains), so the
/// chain is spelled out here; a level that repeats the one above it, or a
/// trailing period, is left out.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut next = error.source();
    while let Some(cause) = next {
        let line = cause.to_string();
        if line != last {
            text.push_str(": ");
            text.push_str(&line);
        }
        last = line;
        next = cause.source();
    }
    text.trim_end_matches('.').to_owned()
}
