//! The checked-in C header is the one cbindgen generates from the crate,
//! and it compiles as C99 on its own.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generated() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .unwrap()
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_checked_in_header_is_the_generated_one() {
    let path = crate_dir().join("include/thresig.h");
    let fresh = generated();
    if std::env::var_os("THRESIG_WRITE_HEADER").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} is out of date with the crate's exports; regenerate it with \
         `THRESIG_WRITE_HEADER=1 cargo test -p thresig-ffi --test header` and commit it",
        path.display()
    );
}

#[test]
fn the_header_compiles_as_c99_on_its_own() {
    let header = crate_dir().join("include/thresig.h");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("only_the_header.c");
    std::fs::write(&source, format!("#include \"{}\"\n", header.display())).unwrap();
    let status = Command::new("cc")
        .args(["-std=c99", "-pedantic", "-Wall", "-Werror", "-fsyntax-only"])
        .arg(&source)
        .status()
        .expect("the system C compiler `cc` runs");
    assert!(
        status.success(),
        "{} is not valid C99 alone",
        Path::new(&header).display()
    );
}
