//! The signer handle: one member's signer opened from its `signer.toml`
//! exactly as `thresig serve` opens it, answering envelopes.
//!
//! A coordinator's request (the DKG parts, rounds 1 and 2, abort, status,
//! the wallet key, the steps of a repair) carries `from`, the cluster seat of the member that
//! coordinates, which the host authenticated on its own network (as the
//! daemon takes it from the peer's certificate); it reaches the engine
//! only through [`thresig_engine::Signer::handle`], as that member. The
//! operator's operations (PSBT build and inspect, key status and rotation,
//! the engine's operator commands: rekey, retire, repair approval) act on
//! this member's own configuration and store.

use std::path::Path;

use bitcoin::absolute::LockTime;
use bitcoin::{Amount, OutPoint, ScriptBuf, Txid};
use serde::Deserialize;
use serde_json::{Value, json};
use thresig_cluster::config::{NodeConfig, NodeWallet};
use thresig_cluster::node::{Node, NodeError, wall_clock};
use thresig_crypto::Seat;
use thresig_daemon::SignerHandler as _;
use thresig_engine::audit::KeyStepAudit;
use thresig_engine::{OperatorCommand, Request, WalletId};
use thresig_store::Recovery;
use thresig_tx::{
    ChargeLog, Destination, InputIndex, Outcome, Payment, SpendInput, UnixTime, WalletMode,
    WalletPsbt, build_psbt,
};

use crate::envelope::{Envelope, FfiError, to_value};

/// The engine's request kinds, which a coordinator sends: the op is the
/// engine's request `type`.
const COORDINATOR_OPS: [&str; 12] = [
    "dkg_start",
    "dkg_round2",
    "dkg_finish",
    "dkg_confirm",
    "dkg_cancel",
    "round1",
    "round2",
    "abort",
    "status",
    "list_wallets",
    "wallet_key",
    "repair",
];

/// The member's own operations.
const OPERATOR_OPS: [&str; 7] = [
    "psbt_build",
    "psbt_inspect",
    "keys_status",
    "keys_rotate_dek",
    "keys_rotate_kek",
    "prune",
    "operate",
];

/// One member's signer, open.
///
/// # Invariants
/// The node's pruner runs from open to close; the handle is `Send + Sync`
/// (the engine shards its state per wallet) and every method takes
/// `&self`.
pub(crate) struct SignerHandle {
    node: Node,
}

impl SignerHandle {
    /// Opens the member configured at `path` (store through its key
    /// provider, identity checked against the roster, key manager started,
    /// engine open, pruned on a timer), as `thresig serve` does, without
    /// serving it.
    pub(crate) fn open(path: &Path) -> Result<Self, FfiError> {
        let mut node = Node::open(path).map_err(|e| open_error(&e))?;
        node.start_pruning();
        Ok(Self { node })
    }

    /// Stops the pruner, the key manager (waiting for it no longer than
    /// `thresig serve` does) and the store's writer.
    pub(crate) fn close(self) {
        self.node.close();
    }

    fn config(&self) -> &NodeConfig {
        self.node.config()
    }

    /// Answers one envelope.
    pub(crate) fn call(&self, envelope: &Envelope) -> Result<Value, FfiError> {
        match envelope.op.as_str() {
            op if COORDINATOR_OPS.contains(&op) => self.coordinator_request(envelope),
            "psbt_build" => self.psbt_build(&envelope.request()?),
            "psbt_inspect" => self.psbt_inspect(&envelope.request()?),
            "keys_status" => self.keys_status(),
            "prune" => Ok(json!({"pruned": self.node.prune_now()})),
            "operate" => self.operate(&envelope.request()?),
            "keys_rotate_dek" => Ok(json!({"rotated_to": self.rotate_dek("rotate_dek")?})),
            "keys_rotate_kek" => {
                let steps = KeyStepAudit::new("rotate_kek");
                let kek = self
                    .node
                    .store()
                    .rotate_kek_audited(&steps, wall_clock())
                    .map_err(|e| FfiError::store(&e))?;
                Ok(json!({"current_kek": kek.as_str()}))
            }
            _ => Err(envelope.unknown_op(&[&COORDINATOR_OPS[..], &OPERATOR_OPS[..]].concat())),
        }
    }

    /// A coordinator's request, through the engine's one entry point as
    /// the member at `from`.
    fn coordinator_request(&self, envelope: &Envelope) -> Result<Value, FfiError> {
        let (from, request) = coordinator_request(envelope)?;
        let response = self
            .node
            .engine()
            .handle(from, request)
            .map_err(|e| FfiError::coded(e.code.as_str().to_owned(), e.recovery, e.message))?;
        to_value(&response)
    }

    /// The wallet `id` as this member holds it: its configuration and its
    /// Taproot output (keys from this member's own store).
    fn wallet(&self, id: &WalletId) -> Result<(&NodeWallet, thresig_tx::TaprootWallet), FfiError> {
        let configured = self.config().wallet(id).ok_or_else(|| {
            FfiError::engine(&thresig_engine::Error::UnknownWallet { wallet: id.clone() })
        })?;
        let signer = self.node.engine().signer();
        let key = signer.wallet_key(id).map_err(|e| FfiError::engine(&e))?;
        let taproot = thresig_engine::taproot_wallet(self.config().network, &key)
            .map_err(|e| FfiError::engine(&e))?;
        Ok((configured, taproot))
    }

    fn psbt_build(&self, request: &PsbtBuild) -> Result<Value, FfiError> {
        let (_, wallet) = self.wallet(&request.wallet)?;
        let inputs = request
            .inputs
            .iter()
            .map(InputJson::to_input)
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = request
            .outputs
            .iter()
            .map(|o| o.to_payment(&wallet))
            .collect::<Result<Vec<_>, _>>()?;
        let psbt = build_psbt(
            &wallet,
            &inputs,
            &outputs,
            LockTime::from_consensus(request.lock_time),
        )
        .map_err(|e| tx_error(&e))?;
        Ok(json!({"psbt": psbt.to_base64(), "txid": psbt.txid().to_string()}))
    }

    /// The PSBT against the wallet's policy as this member would judge it
    /// now, with an empty rate ledger (as `thresig psbt inspect` does: the
    /// rate rules say whether one more transaction fits at all).
    fn psbt_inspect(&self, request: &PsbtInspect) -> Result<Value, FfiError> {
        let (configured, wallet) = self.wallet(&request.wallet)?;
        let psbt = WalletPsbt::from_base64(&request.psbt, &wallet).map_err(|e| tx_error(&e))?;
        let policy = configured
            .config
            .validated_policy(self.config().network)
            .map_err(FfiError::invalid_request)?;
        let now = UnixTime(wall_clock().whole_secs());
        let report = policy.evaluate(&psbt, &WalletMode::Active, now, &ChargeLog::new());
        let rules: Vec<Value> = report
            .outcomes()
            .iter()
            .map(|(rule, outcome)| {
                let verdict = match outcome {
                    Outcome::Passed => "pass".to_owned(),
                    Outcome::Denied(denial) => format!("denied: {denial:?}"),
                    _ => "not_applicable".to_owned(),
                };
                json!({"rule": rule.as_str(), "verdict": verdict})
            })
            .collect();
        let wallet_inputs: Vec<usize> = psbt
            .wallet_inputs()
            .iter()
            .map(|InputIndex(i)| *i)
            .collect();
        Ok(json!({
            "txid": psbt.txid().to_string(),
            "fee_sat": psbt.fee().to_sat(),
            "vsize": psbt.estimated_vsize(),
            "wallet_inputs": wallet_inputs,
            "rules": rules,
            "approved": report.first_denial().is_none(),
        }))
    }

    /// One of the engine's operator commands, as `thresig wallet` and
    /// `thresig repair approve` run it. A retire then rotates the DEK, as
    /// `thresig wallet retire` does, so the live keyring no longer holds the
    /// key of the deleted share's ciphertext; it rotates on every retire, so
    /// running it again finishes a rotation that failed.
    fn operate(&self, command: &OperatorCommand) -> Result<Value, FfiError> {
        let outcome = self
            .node
            .engine()
            .signer()
            .operate(wall_clock(), command)
            .map_err(|e| FfiError::engine(&e))?;
        let mut answer = to_value(&outcome)?;
        if let OperatorCommand::Retire { .. } = command {
            answer["rotated_to"] = json!(self.rotate_dek("retire")?);
        }
        Ok(answer)
    }

    /// Rotates the DEK for `command`, each key change committing with its
    /// `key_step` audit entry; the new term.
    fn rotate_dek(&self, command: &'static str) -> Result<u64, FfiError> {
        self.node
            .store()
            .rotate_dek_audited(&KeyStepAudit::new(command), wall_clock())
            .map(|term| term.0)
            .map_err(|e| FfiError::store(&e))
    }

    fn keys_status(&self) -> Result<Value, FfiError> {
        let keyring = self
            .node
            .store()
            .keyring_status()
            .map_err(|e| FfiError::store(&e))?;
        let provider = match self.node.provider().current_kek_id() {
            Ok(kek) => json!({"ok": true, "current_kek": kek.as_str()}),
            Err(e) => json!({
                "ok": false,
                "code": e.code(),
                "retryable": e.recovery() == Recovery::Retryable,
                "message": e.to_string(),
            }),
        };
        let deks: Vec<Value> = keyring
            .deks
            .iter()
            .map(|d| {
                json!({
                    "term": d.term.0,
                    "keks": d.keks.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                    "recoverable": d.recoverable,
                    "records": d.records,
                })
            })
            .collect();
        Ok(json!({
            "current_dek": keyring.current.0,
            "deks": deks,
            "retired_deks": keyring.retired.iter().map(|t| t.0).collect::<Vec<_>>(),
            "provider": provider,
        }))
    }
}

/// Splits a coordinator's envelope into the member it comes from and the
/// engine's request: the op is the request's `type`, and `request` holds
/// the request's fields beside `from`.
pub(crate) fn coordinator_request(envelope: &Envelope) -> Result<(Seat, Request), FfiError> {
    let Value::Object(fields) = &envelope.request else {
        return Err(FfiError::invalid_request(format!(
            "{}: the request is not an object",
            envelope.op
        )));
    };
    let mut fields = fields.clone();
    let from = fields
        .remove("from")
        .ok_or_else(|| FfiError::invalid_request(format!("{}: no `from` seat", envelope.op)))?;
    let from: Seat = serde_json::from_value(from)
        .map_err(|e| FfiError::invalid_request(format!("{}: from: {e}", envelope.op)))?;
    if fields.contains_key("type") {
        return Err(FfiError::invalid_request(format!(
            "{}: `type` is the op; remove it from the request",
            envelope.op
        )));
    }
    fields.insert("type".to_owned(), Value::String(envelope.op.clone()));
    let request = serde_json::from_value(Value::Object(fields))
        .map_err(|e| FfiError::invalid_request(format!("{}: {e}", envelope.op)))?;
    Ok((from, request))
}

/// Why a signer did not open, with the store's or provider's own code
/// where it has one and `config_invalid` for what the configuration must
/// change.
fn open_error(err: &NodeError) -> FfiError {
    let code = match err {
        NodeError::Provider(e) => e.code(),
        NodeError::Store(e) => e.code(),
        NodeError::Audit(e) => e.code(),
        _ => "config_invalid",
    };
    FfiError::coded(code, err.recovery(), format!("opening the signer: {err}"))
}

fn tx_error(err: &thresig_tx::Error) -> FfiError {
    FfiError::invalid_request(format!("the transaction: {err}"))
}

/// `psbt_build`'s request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PsbtBuild {
    wallet: WalletId,
    inputs: Vec<InputJson>,
    outputs: Vec<OutputJson>,
    #[serde(default)]
    lock_time: u32,
}

/// `psbt_inspect`'s request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PsbtInspect {
    wallet: WalletId,
    psbt: String,
}

/// An output of the wallet to spend.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputJson {
    txid: String,
    vout: u32,
    value_sat: u64,
    script_pubkey: String,
}

impl InputJson {
    fn to_input(&self) -> Result<SpendInput, FfiError> {
        let txid: Txid = self
            .txid
            .parse()
            .map_err(|e| FfiError::invalid_request(format!("input txid {:?}: {e}", self.txid)))?;
        Ok(SpendInput {
            outpoint: OutPoint {
                txid,
                vout: self.vout,
            },
            value: Amount::from_sat(self.value_sat),
            script_pubkey: ScriptBuf::from_bytes(hex_field(&self.script_pubkey, "script_pubkey")?),
        })
    }
}

/// A payment: to an address of the wallet's network, or to a raw script.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    script_pubkey: Option<String>,
    value_sat: u64,
}

impl OutputJson {
    fn to_payment(&self, wallet: &thresig_tx::TaprootWallet) -> Result<Payment, FfiError> {
        let destination = match (&self.address, &self.script_pubkey) {
            (Some(address), None) => Destination::Address(
                wallet
                    .network()
                    .parse_address(address)
                    .map_err(|e| tx_error(&e))?,
            ),
            (None, Some(script)) => {
                Destination::Script(ScriptBuf::from_bytes(hex_field(script, "script_pubkey")?))
            }
            _ => {
                return Err(FfiError::invalid_request(
                    "an output names exactly one of `address` and `script_pubkey`",
                ));
            }
        };
        Ok(Payment {
            destination,
            value: Amount::from_sat(self.value_sat),
        })
    }
}

fn hex_field(text: &str, field: &str) -> Result<Vec<u8>, FfiError> {
    hex::decode(text).map_err(|e| FfiError::invalid_request(format!("{field} is not hex: {e}")))
}
