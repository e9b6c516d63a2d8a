//! The audit head gauge (`thresig_audit_head_sequence`, docs/metrics.md)
//! follows the log: set at the open and after every commit. It is
//! process-wide, so this binary holds this one test alone.

mod common;

use common::Machine;
use prometheus_client::registry::Registry;
use thresig_store::{Timestamp, WriteOp};

fn scraped_head() -> i64 {
    let mut registry = Registry::with_prefix("thresig");
    thresig_store::metrics::register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("thresig_audit_head_sequence ")?.parse().ok())
        .unwrap_or_else(|| panic!("no audit head in {text}"))
}

fn append(store: &dyn thresig_store::Store, at: u64) {
    store
        .write(vec![WriteOp::AppendAudit {
            at: Timestamp(at),
            entry: b"e".to_vec(),
        }])
        .unwrap();
}

#[test]
fn the_audit_head_gauge_follows_opens_and_commits() {
    let long = Machine::new();
    let store = long.open().unwrap();
    for at in 1..=3 {
        append(&store, at);
    }
    assert_eq!(scraped_head(), 3);
    drop(store);
    // Another store's open shows its own head, even an earlier one: a
    // head that goes back is what the alert must see.
    let short = Machine::new();
    let store = short.open().unwrap();
    assert_eq!(scraped_head(), 0);
    append(&store, 1);
    assert_eq!(scraped_head(), 1);
    drop(store);
    let _reopened = long.open().unwrap();
    assert_eq!(scraped_head(), 3);
}
