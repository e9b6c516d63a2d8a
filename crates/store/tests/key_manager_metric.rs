//! The key manager's failing-tick gauge
//! (`thresig_store_key_manager_failing_ticks`, docs/metrics.md): a manager
//! that cannot commit its key changes (a broken audit log, a failing
//! provider) shows, instead of failing silently. It is process-wide, so
//! this binary holds this one test alone.

mod common;

use std::sync::Arc;

use common::{Machine, edit_raw, raw_table};
use prometheus_client::registry::Registry;
use thresig_store::{DebugKeyAudit, KeyManager, Store as _, Timestamp, WriteOp};

fn scraped_failing_ticks() -> i64 {
    let mut registry = Registry::with_prefix("thresig");
    thresig_store::metrics::register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("thresig_store_key_manager_failing_ticks ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no failing-ticks gauge in {text}"))
}

#[test]
fn a_key_manager_blocked_by_a_broken_log_shows_in_the_gauge() {
    let machine = Machine::new();
    {
        let store = machine.open().unwrap();
        for at in [1, 2] {
            let entry = WriteOp::AppendAudit {
                at: Timestamp(at),
                entry: b"e".to_vec(),
            };
            store.write(vec![entry]).unwrap();
        }
    }
    edit_raw(&machine, |txn| {
        let mut t = txn.open_table(raw_table("audit")).unwrap();
        t.remove(2u64.to_be_bytes().as_slice()).unwrap();
    });
    let store = Arc::new(machine.open().unwrap());
    machine.provider.add_key("kek-2", 2);
    machine.provider.set_current("kek-2");
    let manager = KeyManager::new(store.clone(), Arc::new(DebugKeyAudit));
    manager.tick(Timestamp(3));
    manager.tick(Timestamp(4));
    assert_eq!(scraped_failing_ticks(), 2);
    drop(manager);
    drop(store);
    // A manager whose ticks succeed clears it.
    let healthy = Machine::new();
    let store = Arc::new(healthy.open().unwrap());
    KeyManager::new(store, Arc::new(DebugKeyAudit)).tick(Timestamp(5));
    assert_eq!(scraped_failing_ticks(), 0);
}
