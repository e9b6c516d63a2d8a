//! A secret file read through [`read_opened`] into a buffer that zeroizes
//! must not leave its bytes in buffers freed while the read grows the
//! buffer. A scanning allocator inspects every buffer as it is freed (as
//! crates/crypto/tests/zeroize_alloc.rs does).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use thresig_store::file::{open_regular, read_opened};
use zeroize::Zeroizing;

/// The first bytes of the secret file, looked for in every freed buffer.
const NEEDLE: [u8; 12] = *b"SECRET-KEY:7";
static ARMED: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicUsize = AtomicUsize::new(0);

struct Scanning;

unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::SeqCst) && layout.size() >= NEEDLE.len() {
            let freed = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if freed.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
                FOUND.fetch_add(1, Ordering::SeqCst);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Scanning = Scanning;

/// The only test in this binary (the allocator is global).
#[test]
fn reading_a_secret_file_frees_no_buffer_holding_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("member.key");
    // A few KB, as a PEM key with its certificate chain can be.
    let mut contents = NEEDLE.to_vec();
    contents.extend(std::iter::repeat_n(b'k', 5000));
    std::fs::write(&path, &contents).unwrap();
    let (file, _) = open_regular(&path).unwrap();
    ARMED.store(true, Ordering::SeqCst);
    let mut bytes = Zeroizing::new(Vec::new());
    read_opened(file, &path, 64 * 1024, &mut bytes).unwrap();
    let read = bytes.len();
    drop(bytes);
    ARMED.store(false, Ordering::SeqCst);
    assert_eq!(read, contents.len());
    assert_eq!(
        FOUND.load(Ordering::SeqCst),
        0,
        "freed buffers held the secret"
    );
}
