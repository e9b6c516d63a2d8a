//! Verifying the audit log walks it in bounded chunks: no allocation grows
//! with the length of the log, so a log of years verifies in the memory of
//! a day's. A measuring allocator records the largest single allocation
//! made while the check runs.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::Machine;
use thresig_store::{Store, Timestamp, WriteOp};

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Measuring;

unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::SeqCst) {
            LARGEST.fetch_max(layout.size(), Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::SeqCst) {
            LARGEST.fetch_max(new_size, Ordering::SeqCst);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Measuring = Measuring;

/// Entries in the log: enough that a list of every row (48 bytes a row
/// for its key and value buffers alone) passes the bound below.
const ENTRIES: u64 = 30_000;

/// The largest allocation allowed while verifying: far above one chunk
/// and a database page, far below a list of every row.
const BOUND: usize = 512 * 1024;

/// The only test in this binary (the allocator is global).
#[test]
fn verifying_a_long_log_allocates_nothing_that_grows_with_it() {
    let machine = Machine::new();
    let store = machine.open().unwrap();
    for batch in 0..ENTRIES / 1_000 {
        let ops = (0..1_000)
            .map(|i| WriteOp::AppendAudit {
                at: Timestamp(batch * 1_000 + i),
                entry: b"an entry".to_vec(),
            })
            .collect();
        store.write(ops).unwrap();
    }
    ARMED.store(true, Ordering::SeqCst);
    let report = store.audit_verify();
    ARMED.store(false, Ordering::SeqCst);
    assert_eq!(report.unwrap().entries, ENTRIES);
    let largest = LARGEST.load(Ordering::SeqCst);
    assert!(largest <= BOUND, "an allocation of {largest} bytes");
}
