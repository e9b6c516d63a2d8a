//! Declares the `loom` cfg used by the concurrency model tests
//! (`RUSTFLAGS="--cfg loom" cargo test -p thresig-store --release loom`).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
