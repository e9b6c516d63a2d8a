//! Helpers of the ffi tests: a provisioned cluster, and the ABI called
//! from Rust as a host would call it.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::ptr;
use std::time::SystemTime;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{Value, json};
use thresig_cluster::provision::{self, CONFIG_FILE, ClusterSpec, member_dir};
use thresig_crypto::Seat;
use thresig_daemon::ClusterName;
use thresig_engine::WalletId;
use thresig_ffi::{
    THRESIG_OK, ThresigCoordinator, ThresigSigner, thresig_call, thresig_close,
    thresig_coordinator_call, thresig_coordinator_close, thresig_coordinator_open, thresig_free,
    thresig_open,
};
use thresig_tx::Network;

/// The wallet every test cluster holds.
pub const WALLET: &str = "w";

/// A 2-of-3 cluster provisioned in `dir` (never served: no socket is
/// bound); each member's configuration file, seat 1 first.
pub fn cluster(dir: &Path) -> Vec<PathBuf> {
    let spec = ClusterSpec::loopback(
        ClusterName::new("ffi".to_owned()).unwrap(),
        Network::Regtest,
        3,
        41_000,
        WalletId::new(WALLET.to_owned()).unwrap(),
        2,
    )
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let root = dir.join("cluster");
    provision::init_cluster(&root, &spec, SystemTime::now(), &mut rng).unwrap();
    (1..=3u16)
        .map(|s| member_dir(&root, Seat::try_from(s).unwrap()).join(CONFIG_FILE))
        .collect()
}

/// A returned buffer as JSON, freed.
pub fn take_json(ptr: *mut u8, len: usize) -> Value {
    serde_json::from_str(&take(ptr, len)).unwrap()
}

/// A returned buffer as a string, freed.
fn take(ptr: *mut u8, len: usize) -> String {
    // SAFETY: the library returned `len` bytes at `ptr`.
    let text = String::from_utf8(unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()).unwrap();
    // SAFETY: freed once, with its length.
    unsafe { thresig_free(ptr, len) };
    text
}

/// An open signer handle, closed on drop.
pub struct Member(pub *mut ThresigSigner);

// SAFETY: the pointee `ThresigSigner` is `Send + Sync` (asserted at compile
// time in the crate); a raw pointer alone never is, hence these impls.
unsafe impl Send for Member {}
// SAFETY: as above.
unsafe impl Sync for Member {}

impl Member {
    pub fn open(path: &Path) -> Self {
        let path = path.to_str().unwrap();
        let (mut handle, mut err, mut err_len) = (ptr::null_mut(), ptr::null_mut(), 0);
        // SAFETY: valid pointers for the call.
        let rc = unsafe {
            thresig_open(
                path.as_ptr(),
                path.len(),
                &mut handle,
                &mut err,
                &mut err_len,
            )
        };
        assert_eq!(rc, THRESIG_OK, "{}", take(err, err_len));
        Self(handle)
    }

    /// The raw response envelope of `request` (any bytes).
    pub fn call_bytes(&self, request: &[u8]) -> Value {
        let (mut out, mut out_len) = (ptr::null_mut(), 0);
        // SAFETY: valid pointers for the call.
        let rc = unsafe {
            thresig_call(
                self.0,
                request.as_ptr(),
                request.len(),
                &mut out,
                &mut out_len,
            )
        };
        assert_eq!(rc, THRESIG_OK);
        serde_json::from_str(&take(out, out_len)).unwrap()
    }

    /// The response envelope of a coordinator's transmitted `envelope`
    /// with `from` set, as a host sets it: to the cluster seat its own
    /// authentication of the sending peer names.
    pub fn relay(&self, envelope: &Value, from: u16) -> Value {
        let mut envelope = envelope.clone();
        envelope["request"]["from"] = json!(from);
        self.call_bytes(envelope.to_string().as_bytes())
    }

    /// The response envelope of `op` with `request`.
    pub fn call(&self, op: &str, request: Value) -> Value {
        let envelope = json!({"version": 1, "op": op, "request": request});
        self.call_bytes(envelope.to_string().as_bytes())
    }

    /// The `ok` value of `op`, which must succeed.
    pub fn ok(&self, op: &str, request: Value) -> Value {
        let response = self.call(op, request);
        response
            .get("ok")
            .cloned()
            .unwrap_or_else(|| panic!("{op}: {response}"))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // SAFETY: opened by `Member::open`, closed once.
        unsafe { thresig_close(self.0) };
    }
}

/// An open coordinator handle, closed on drop.
pub struct Coordinator(*mut ThresigCoordinator);

impl Coordinator {
    pub fn open(setup: &Value) -> Self {
        let setup = setup.to_string();
        let (mut handle, mut err, mut err_len) = (ptr::null_mut(), ptr::null_mut(), 0);
        // SAFETY: valid pointers for the call.
        let rc = unsafe {
            thresig_coordinator_open(
                setup.as_ptr(),
                setup.len(),
                &mut handle,
                &mut err,
                &mut err_len,
            )
        };
        assert_eq!(rc, THRESIG_OK, "{}", take(err, err_len));
        Self(handle)
    }

    /// The `ok` value of `op`, which must succeed.
    pub fn call(&self, op: &str, request: Value) -> Value {
        let response = self.call_raw(op, request);
        response
            .get("ok")
            .cloned()
            .unwrap_or_else(|| panic!("{op}: {response}"))
    }

    /// The response envelope of `op` with `request`.
    pub fn call_raw(&self, op: &str, request: Value) -> Value {
        let envelope = json!({"version": 1, "op": op, "request": request}).to_string();
        let (mut out, mut out_len) = (ptr::null_mut(), 0);
        // SAFETY: valid pointers for the call.
        let rc = unsafe {
            thresig_coordinator_call(
                self.0,
                envelope.as_ptr(),
                envelope.len(),
                &mut out,
                &mut out_len,
            )
        };
        assert_eq!(rc, THRESIG_OK);
        serde_json::from_str(&take(out, out_len)).unwrap()
    }

    /// Relays every request to `members` until an event of `done` type;
    /// that event.
    pub fn drive(&self, members: &[Member], done: &str, now_ms: u64) -> Value {
        loop {
            let mut moved = false;
            loop {
                let transmit = self.call("poll_transmit", json!({}));
                if transmit.is_null() {
                    break;
                }
                moved = true;
                let to = transmit["to"].as_u64().unwrap();
                let member = &members[usize::try_from(to).unwrap() - 1];
                // Every test run is coordinated by member 1.
                let response = member.relay(&transmit["envelope"], 1);
                self.call(
                    "handle_reply",
                    json!({"from": to, "tag": transmit["tag"], "now_ms": now_ms, "response": response}),
                );
            }
            loop {
                let event = self.call("poll_event", json!({}));
                if event.is_null() {
                    break;
                }
                assert_ne!(event["type"], "failed", "{event}");
                if event["type"] == done {
                    return event;
                }
            }
            assert!(moved, "the coordinator is idle without a {done} event");
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        // SAFETY: opened by `Coordinator::open`, closed once.
        unsafe { thresig_coordinator_close(self.0) };
    }
}

/// Runs the wallet's DKG among `members`, coordinated by seat 1.
pub fn dkg(configs: &[PathBuf], members: &[Member]) -> Value {
    let relay = Coordinator::open(&json!({
        "kind": "dkg",
        "config_path": configs[0],
        "wallet": WALLET,
    }));
    relay.drive(members, "dkg_done", 0)
}

/// The crate's static library from this test's own build: cargo builds the
/// library once with every crate type of `[lib]` for the tests that link
/// it and leaves the `.a` beside their binaries (in `deps/`, whatever the
/// profile). Reusing it costs nothing; a nested `cargo build` would resolve
/// the features without the dev-dependencies and build the workspace again.
pub fn static_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().join("libthresig_ffi.a");
    assert!(
        lib.exists(),
        "{} is missing: the test build makes it from `crate-type` in crates/ffi/Cargo.toml",
        lib.display()
    );
    lib
}

/// Checks what a host program printed ("signature", "message", "key" and
/// "psbt" lines) with rust-bitcoin and libsecp256k1 alone: the message is
/// the BIP341 sighash of the PSBT's one input, the key the one its prevout
/// pays to, and the signature verifies.
pub fn verify_host_output(stdout: &str) {
    use bitcoin::hashes::Hash as _;
    use bitcoin::secp256k1::{Message, Secp256k1, XOnlyPublicKey, schnorr};
    use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
    use bitcoin::{Psbt, TxOut};

    let field = |name: &str| -> &str {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line in:\n{stdout}"))
    };
    let psbt: Psbt = field("psbt").parse().unwrap();
    let prevouts: Vec<TxOut> = psbt
        .inputs
        .iter()
        .map(|i| i.witness_utxo.clone().unwrap())
        .collect();
    let sighash = SighashCache::new(&psbt.unsigned_tx)
        .taproot_key_spend_signature_hash(0, &Prevouts::All(&prevouts), TapSighashType::Default)
        .unwrap();
    let message = hex::decode(field("message")).unwrap();
    assert_eq!(message, sighash.to_byte_array());
    let key = hex::decode(field("key")).unwrap();
    assert_eq!(prevouts[0].script_pubkey.as_bytes()[2..], key[..]);
    let signature =
        schnorr::Signature::from_slice(&hex::decode(field("signature")).unwrap()).unwrap();
    Secp256k1::verification_only()
        .verify_schnorr(
            &signature,
            &Message::from_digest_slice(&message).unwrap(),
            &XOnlyPublicKey::from_slice(&key).unwrap(),
        )
        .expect("the host's signature verifies under the wallet's output key");
}

/// Runs a host program on the cluster and checks its signature
/// ([`verify_host_output`]).
pub fn run_host(program: &Path, configs: &[PathBuf]) {
    let ran = std::process::Command::new(program)
        .arg(WALLET)
        .args(configs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{} failed:\n{stdout}\n{}",
        program.display(),
        String::from_utf8_lossy(&ran.stderr)
    );
    verify_host_output(&stdout);
}

/// A PSBT (base64) spending one synthetic output of the wallet (its txid
/// made of `byte`) back to the wallet, built by `member`.
pub fn self_spend(member: &Member, byte: u8) -> String {
    let status = member.ok("status", json!({"from": 1, "wallet": WALLET}));
    let script = format!("5120{}", status["output_key"].as_str().unwrap());
    let built = member.ok(
        "psbt_build",
        json!({
            "wallet": WALLET,
            "inputs": [{"txid": hex::encode([byte; 32]), "vout": 0, "value_sat": 60_000, "script_pubkey": script}],
            "outputs": [{"script_pubkey": script, "value_sat": 59_000}],
        }),
    );
    built["psbt"].as_str().unwrap().to_owned()
}
