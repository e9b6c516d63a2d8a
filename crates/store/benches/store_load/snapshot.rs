//! The baseline: an emulation of the single-snapshot design the store
//! replaces (DESIGN.md section 8).
//!
//! The whole state (every wallet and every record) is one JSON document,
//! encrypted with XChaCha20-Poly1305 and written with temp file + fsync +
//! rename + directory fsync on every write, under one global mutex. The key
//! is resolved through the key provider on every write (an `unwrap` of the
//! stored state key), as the replaced design fetched it from its KMS.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead as _, KeyInit as _};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore as _};
use serde::Serialize;
use thresig_store::provider::{KekId, KeyProvider};

use crate::{Payload, Target};

/// The state as the replaced design kept it: everything in one document.
#[derive(Serialize, Default)]
struct State {
    wallets: BTreeMap<String, String>,
    markers: BTreeMap<String, String>,
}

/// One snapshot file, its lock, and the provider its key comes from.
pub(crate) struct Snapshot {
    path: PathBuf,
    provider: Arc<dyn KeyProvider>,
    kek: KekId,
    wrapped_key: Vec<u8>,
    state: Mutex<State>,
}

impl Snapshot {
    /// A snapshot in `dir` holding `wallets` wallets of `payload` bytes each,
    /// whose state key is wrapped by `provider` (one provider call here).
    pub(crate) fn new(
        dir: PathBuf,
        provider: Arc<dyn KeyProvider>,
        wallets: usize,
        payload: &Payload,
    ) -> Self {
        let kek = provider.current_kek_id().expect("provider names its key");
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let wrapped_key = provider.wrap(&kek, &key).expect("provider wraps");
        let mut state = State::default();
        for w in 0..wallets {
            state.wallets.insert(
                format!("wallet-{w:05}"),
                hex::encode(payload.wallet_state(w)),
            );
        }
        Self {
            path: dir.join("state.json.enc"),
            provider,
            kek,
            wrapped_key,
            state: Mutex::new(state),
        }
    }

    /// The replaced design's write: resolve the key, change the state,
    /// rewrite the whole file durably, all under the global lock.
    fn write(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().expect("no writer panicked");
        let key = self
            .provider
            .unwrap(&self.kek, &self.wrapped_key)
            .expect("provider unwraps the state key");
        change(&mut state);
        let plain = serde_json::to_vec(&*state).expect("state serializes");
        let cipher = XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key");
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_slice())
            .expect("encryption succeeds");
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = File::create(&tmp).expect("create temp file");
            f.write_all(&nonce).expect("write");
            f.write_all(&sealed).expect("write");
            f.sync_all().expect("fsync");
        }
        std::fs::rename(&tmp, &self.path).expect("rename");
        let dir = self.path.parent().expect("file has a directory");
        File::open(dir)
            .and_then(|d| d.sync_all())
            .expect("directory fsync");
    }
}

impl Target for Snapshot {
    fn insert_marker(&self, seq: u64, payload: &Payload) {
        let (commitment, marker) = payload.marker(seq);
        self.write(|state| {
            let key = hex::encode(commitment);
            assert!(!state.markers.contains_key(&key), "marker already present");
            state.markers.insert(key, hex::encode(marker));
        });
    }
}
