//! `thresig keys` end to end: the built binary against a store in a
//! temporary directory, with a `file` provider over a key directory.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use hpke::kem::X25519HkdfSha256;
use hpke::{Kem as _, Serializable as _};
use redb::ReadableTable as _;
use serde_json::Value;
use thresig_store::provider::KeyProviderConfig;
use thresig_store::{EncryptedStore, Store, StoreLocation, StoreOptions, WalletId, WriteOp};

/// A signer's directory: configuration, key directory, data directory.
struct Signer {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write_key(keys: &Path, id: &str, byte: u8) {
    let path = keys.join(format!("{id}.key"));
    std::fs::write(&path, hex::encode([byte; 32])).unwrap();
    chmod(&path, 0o600);
}

impl Signer {
    /// A signer whose provider holds key `v1`, optionally with a recovery
    /// public key in its configuration.
    fn new(recovery_public_key: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        chmod(&keys, 0o700);
        write_key(&keys, "v1", 0x11);
        let config = dir.path().join("signer.toml");
        let recovery = recovery_public_key
            .map(|k| format!("recovery_public_key = \"{k}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "[store]\ndata_dir = \"data\"\n\n[key_provider]\nkind = \"file\"\ndirectory = \"{}\"\n{recovery}",
                keys.display()
            ),
        )
        .unwrap();
        Self { dir, config }
    }

    /// A signer whose store was created, as `thresig init` does (the
    /// `keys` commands only ever open one).
    fn provisioned(recovery_public_key: Option<&str>) -> Self {
        let s = Self::new(recovery_public_key);
        let text = std::fs::read_to_string(&s.config).unwrap();
        let provider = KeyProviderConfig::from_toml(&text).unwrap();
        let mut options = StoreOptions::default();
        options.recovery_key = provider
            .recovery_public_key()
            .map(|k| thresig_store::RecoveryPublicKey::from_bytes(*k.as_bytes()).unwrap());
        drop(
            EncryptedStore::create(
                StoreLocation::Directory(s.dir.path().join("data")),
                Arc::new(provider.open().unwrap()),
                options,
            )
            .unwrap(),
        );
        s
    }

    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn keys_cmd(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
            .arg("keys")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Runs `keys <command> --json`, expecting exit code `code`.
    fn json(&self, args: &[&str], code: i32) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        common::json_of(&self.keys_cmd(&all), args, code)
    }

    /// Opens the store through the library with the configured provider.
    fn open_store(&self) -> EncryptedStore {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let provider = KeyProviderConfig::from_toml(&text).unwrap().open().unwrap();
        EncryptedStore::open(
            StoreLocation::Directory(self.dir.path().join("data")),
            Arc::new(provider),
            StoreOptions::default(),
        )
        .unwrap()
    }

    /// Stores `n` wallets, each holding its own index as its state.
    fn seed_wallets(&self, n: u8) {
        let store = self.open_store();
        let ops = (0..n)
            .map(|i| WriteOp::PutWallet {
                wallet: wallet(i),
                value: vec![i; 100],
            })
            .collect();
        store.write(ops).unwrap();
    }

    fn assert_wallets(&self, n: u8) {
        let store = self.open_store();
        for i in 0..n {
            assert_eq!(
                store.wallet(&wallet(i)).unwrap().unwrap().as_slice(),
                [i; 100]
            );
        }
    }
}

fn wallet(i: u8) -> WalletId {
    WalletId::new(format!("w{i}")).unwrap()
}

/// A recovery key pair: (secret hex, public hex).
fn recovery_pair() -> (String, String) {
    let (sk, pk) = X25519HkdfSha256::derive_keypair(b"keys test recovery key material");
    (hex::encode(sk.to_bytes()), hex::encode(pk.to_bytes()))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn dek(status: &Value, term: u64) -> &Value {
    status["deks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["term"] == term)
        .unwrap_or_else(|| panic!("no DEK {term} in {status}"))
}

#[test]
fn status_on_a_fresh_store() {
    let s = Signer::provisioned(None);
    let status = s.json(&["status"], 0);
    assert_eq!(status["current_dek"], 1);
    assert_eq!(status["deks"].as_array().unwrap().len(), 1);
    assert_eq!(dek(&status, 1)["state"], "current");
    assert_eq!(dek(&status, 1)["recoverable"], false);
    assert!(dek(&status, 1)["records"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["keks_needed"], serde_json::json!(["v1"]));
    assert_eq!(status["provider"]["ok"], true);
    assert_eq!(status["provider"]["current_kek"], "v1");
    assert_eq!(status["last_dek_rotation"], Value::Null);
    assert_eq!(status["kek_rotation_pending"], false);
    let text = s.keys_cmd(&["status"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("current DEK: term 1") && text.contains("KEK ids still needed: v1"),
        "{text}"
    );
}

#[test]
fn rotate_dek_then_verify_shows_every_record_under_the_new_term() {
    let s = Signer::provisioned(None);
    s.json(&["status"], 0);
    s.seed_wallets(40);
    let before = s.json(&["status"], 0);
    let records = dek(&before, 1)["records"].as_u64().unwrap();
    let rotated = s.json(&["rotate-dek"], 0);
    assert_eq!(rotated["rotated_to"], 2);
    assert_eq!(rotated["current_dek"], 2);
    assert_eq!(dek(&rotated, 2)["state"], "current");
    assert_eq!(dek(&rotated, 1)["state"], "retired");
    let under_new = dek(&rotated, 2)["records"].as_u64().unwrap();
    // Every record moved; the rotation added its own bookkeeping records.
    assert!(under_new >= records, "{under_new} < {records}");
    let verified = s.json(&["verify"], 0);
    assert_eq!(verified["failures"], serde_json::json!([]));
    assert_eq!(verified["ok"].as_u64().unwrap(), under_new);
    let status = s.json(&["status"], 0);
    assert!(
        status["last_dek_rotation"]["at_unix"].as_u64().is_some(),
        "{status}"
    );
    assert_eq!(status["last_dek_rotation"]["term"], 2);
    s.assert_wallets(40);
}

#[test]
fn rotate_kek_after_the_provider_key_changes() {
    let s = Signer::provisioned(None);
    s.json(&["status"], 0);
    s.seed_wallets(5);
    write_key(&s.keys(), "v2", 0x22);
    let status = s.json(&["status"], 0);
    assert_eq!(status["provider"]["current_kek"], "v2");
    assert_eq!(status["keks_needed"], serde_json::json!(["v1"]));
    assert_eq!(status["kek_rotation_pending"], true);
    let rotated = s.json(&["rotate-kek"], 0);
    assert_eq!(rotated["kek"], "v2");
    assert_eq!(rotated["keks_needed"], serde_json::json!(["v2"]));
    // The old version can now be destroyed.
    std::fs::remove_file(s.keys().join("v1.key")).unwrap();
    let status = s.json(&["status"], 0);
    assert_eq!(status["keks_needed"], serde_json::json!(["v2"]));
    assert_eq!(status["last_kek_rotation"]["kek"], "v2");
    assert_eq!(status["kek_rotation_pending"], false);
    assert_eq!(s.json(&["verify"], 0)["failures"], serde_json::json!([]));
    s.assert_wallets(5);
}

#[test]
fn verify_detects_a_tampered_record() {
    let s = Signer::provisioned(None);
    s.json(&["status"], 0);
    s.seed_wallets(3);
    {
        let db = redb::Database::open(s.dir.path().join("data/state.redb")).unwrap();
        let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("wallets");
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table).unwrap();
            let (key, mut value) = {
                let (k, v) = t.first().unwrap().unwrap();
                (k.value().to_vec(), v.value().to_vec())
            };
            *value.last_mut().unwrap() ^= 1;
            t.insert(key.as_slice(), value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let report = s.json(&["verify"], 1);
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert_eq!(failures[0]["code"], "record_tampered");
    assert_eq!(report["corrupt_wallets"].as_array().unwrap().len(), 1);
    let text = s.keys_cmd(&["verify"]);
    assert_eq!(text.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&text.stdout).contains("records failing: 1"));
}

#[test]
fn recover_brings_back_a_store_whose_kek_version_is_gone() {
    let (secret, public) = recovery_pair();
    let s = Signer::provisioned(Some(&public));
    let status = s.json(&["status"], 0);
    assert_eq!(dek(&status, 1)["recoverable"], true);
    s.seed_wallets(7);
    // The KMS loses v1 and now only has v2.
    std::fs::remove_file(s.keys().join("v1.key")).unwrap();
    write_key(&s.keys(), "v2", 0x22);
    let lost = s.json(&["status"], 1);
    assert_eq!(lost["error"]["code"], "kek_unavailable");
    assert_eq!(lost["error"]["retryable"], false);
    let key_file = s.dir.path().join("recovery.key");
    std::fs::write(&key_file, format!("{secret}\n")).unwrap();
    chmod(&key_file, 0o600);
    let recovered = s.json(
        &["recover", "--recovery-key", key_file.to_str().unwrap()],
        0,
    );
    assert_eq!(recovered["kek"], "v2");
    assert_eq!(recovered["keks_needed"], serde_json::json!(["v2"]));
    let status = s.json(&["status"], 0);
    assert_eq!(status["provider"]["current_kek"], "v2");
    assert_eq!(s.json(&["verify"], 0)["failures"], serde_json::json!([]));
    s.assert_wallets(7);
}

#[test]
fn a_recovery_key_file_readable_by_others_is_refused() {
    let (secret, public) = recovery_pair();
    let s = Signer::provisioned(Some(&public));
    s.json(&["status"], 0);
    let key_file = s.dir.path().join("recovery.key");
    std::fs::write(&key_file, &secret).unwrap();
    chmod(&key_file, 0o644);
    let out = s.keys_cmd(&["recover", "--recovery-key", key_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("error[recovery_key_file]") && err.contains("0644"),
        "{err}"
    );
    assert!(err.contains("terminal"), "{err}");
    assert!(!err.contains(&secret), "{err}");
}

/// A FIFO given as the recovery key is refused at once, not waited on for a
/// writer that never comes; so is a device.
#[test]
fn a_recovery_key_fifo_or_device_is_refused_without_waiting() {
    let (_secret, public) = recovery_pair();
    let s = Signer::provisioned(Some(&public));
    let fifo = s.dir.path().join("recovery.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for path in [fifo.as_path(), Path::new("/dev/zero")] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
            .args(["keys", "recover", "--json", "--recovery-key"])
            .arg(path)
            .arg("--config")
            .arg(&s.config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(20) {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("keys recover waits on {}", path.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let err = common::json_of(&out, &["recover"], 1);
        assert_eq!(err["error"]["code"], "recovery_key_file", "{err}");
        assert_eq!(err["error"]["retryable"], false, "{err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains("not a regular file"), "{err}");
        assert!(message.contains(&path.display().to_string()), "{err}");
    }
}

#[test]
fn status_on_a_missing_database_creates_nothing() {
    let s = Signer::new(None);
    let err = s.json(&["status"], 1);
    assert_eq!(err["error"]["retryable"], false, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    let database = s.dir.path().join("data").join("state.redb");
    assert!(message.contains(&database.display().to_string()), "{err}");
    assert!(
        !s.dir.path().join("data").exists(),
        "keys status made a store"
    );
}

#[test]
fn a_provider_key_file_readable_by_others_is_refused() {
    let s = Signer::new(None);
    chmod(&s.keys().join("v1.key"), 0o644);
    let err = s.json(&["status"], 1);
    assert_eq!(err["error"]["code"], "provider_key_file", "{err}");
    assert!(!s.dir.path().join("data").exists());
}

#[test]
fn a_config_with_an_unknown_field_is_refused() {
    let s = Signer::new(None);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("[store]\n", "[store]\ncolour = \"red\"\n"),
    )
    .unwrap();
    let out = s.keys_cmd(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error[config_invalid]"), "{err}");
    assert!(
        err.contains("signer.toml") && err.contains("line 2") && err.contains("`colour`"),
        "{err}"
    );
    assert!(!s.dir.path().join("data").exists());
}

#[test]
fn an_unreachable_provider_is_a_retryable_exit() {
    // The store exists; its provider now hangs (a KMS that does not answer).
    let s = Signer::provisioned(None);
    let program = s.dir.path().join("hung-kms");
    std::fs::write(&program, "#!/bin/sh\n/bin/sleep 30\n").unwrap();
    chmod(&program, 0o700);
    std::fs::write(
        &s.config,
        format!(
            "[store]\ndata_dir = \"data\"\n[key_provider]\nkind = \"command\"\ncommand = [\"{}\"]\nmode = \"raw\"\ntimeout_secs = 1\n",
            program.display()
        ),
    )
    .unwrap();
    let err = s.json(&["status"], 2);
    assert_eq!(err["error"]["retryable"], true, "{err}");
}

/// `--config` naming something other than a regular file is refused before
/// it is read: `/dev/zero` never ends, a directory is no file.
#[test]
fn a_config_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for config in [Path::new("/dev/zero"), dir.path()] {
        for command in [&["keys", "status", "--json"][..], &["serve"]] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
                .args(command)
                .arg("--config")
                .arg(config)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{command:?}: {}", stderr(&out));
            let said = if command[0] == "keys" {
                let err: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(err["error"]["code"], "config_invalid", "{err}");
                assert_eq!(err["error"]["retryable"], false, "{err}");
                err["error"]["message"].as_str().unwrap().to_owned()
            } else {
                stderr(&out)
            };
            assert!(
                said.contains(&config.display().to_string()) && said.contains("not a regular file"),
                "{command:?}: {said}"
            );
        }
    }
}

/// With a broken audit log no key change can commit: `status` says so and
/// does not send the operator to `rotate-kek`, which refuses having
/// changed nothing.
#[test]
fn a_broken_audit_log_shows_in_status_and_blocks_rotate_kek() {
    let s = Signer::provisioned(None);
    {
        let store = s.open_store();
        for at in [1, 2] {
            let entry = WriteOp::AppendAudit {
                at: thresig_store::Timestamp(at),
                entry: b"e".to_vec(),
            };
            store.write(vec![entry]).unwrap();
        }
    }
    let db = redb::Database::open(s.dir.path().join("data/state.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("audit");
        let mut t = txn.open_table(table).unwrap();
        t.remove(2u64.to_be_bytes().as_slice()).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    write_key(&s.keys(), "v2", 0x22);
    let status = s.json(&["status"], 0);
    assert_eq!(status["audit_log"]["ok"], false, "{status}");
    assert_eq!(status["audit_log"]["code"], "audit_broken", "{status}");
    let text = String::from_utf8(s.keys_cmd(&["status"]).stdout).unwrap();
    assert!(text.contains("audit log: BROKEN"), "{text}");
    assert!(!text.contains("run `thresig keys rotate-kek`"), "{text}");
    let refused = s.json(&["rotate-kek"], 1);
    assert_eq!(refused["error"]["code"], "audit_broken", "{refused}");
    let status = s.json(&["status"], 0);
    assert_eq!(status["keks_needed"], serde_json::json!(["v1"]), "{status}");
}
