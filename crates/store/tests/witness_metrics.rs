//! `thresig_store_witness_writes_total` counts every witness write,
//! including the one opening a store makes. (Its own test binary: the
//! counter is process-wide.)

use std::sync::Arc;

use prometheus_client::registry::Registry;
use thresig_store::provider::{KeyProvider, MemoryProvider};
use thresig_store::{EncryptedStore, Error, StoreLocation, StoreOptions};

/// The value of `thresig_store_witness_writes_total{outcome}` now.
fn witness_writes(outcome: &str) -> u64 {
    let mut registry = Registry::with_prefix("thresig");
    thresig_store::metrics::register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let series = format!(r#"thresig_store_witness_writes_total{{outcome="{outcome}"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

/// A witness write that fails while a store opens (here its temporary
/// file's name is taken by a directory) counts as failed, as one after a
/// commit does: an operator sees the disk problem before the first request.
#[test]
fn a_witness_write_failing_at_open_counts_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let location = || StoreLocation::Directory(dir.path().to_path_buf());
    let provider: Arc<dyn KeyProvider> = Arc::new(MemoryProvider::with_key("kek-1", 7));
    drop(EncryptedStore::create(location(), provider.clone(), StoreOptions::default()).unwrap());
    std::fs::create_dir(dir.path().join("state.witness.tmp")).unwrap();
    let before = witness_writes("failed");
    let Err(err) = EncryptedStore::open(location(), provider, StoreOptions::default()) else {
        panic!("the store opened without writing its witness");
    };
    assert!(matches!(err, Error::WitnessIo { .. }), "{err}");
    assert_eq!(witness_writes("failed"), before + 1);
}
