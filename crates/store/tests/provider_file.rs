//! The `file` key provider: modes, owners, versioned directories, links.

#[allow(dead_code, reason = "each test binary uses part of the helpers")]
mod provider_util;

use std::fs;
use std::path::Path;

use provider_util::{default_id, id, key_bytes, key_hex, open, round_trip, write_file};
use thresig_store::Recovery;
use thresig_store::provider::{KeyFileProblem, KeyProvider as _, ProviderError, check_provider};

fn single(path: &Path) -> String {
    format!(
        "[key_provider]\nkind = \"file\"\npath = '{}'\n",
        path.display()
    )
}

fn directory(path: &Path) -> String {
    format!(
        "[key_provider]\nkind = \"file\"\ndirectory = '{}'\n",
        path.display()
    )
}

fn file_problem(result: Result<impl std::fmt::Debug, ProviderError>) -> KeyFileProblem {
    match result {
        Err(ProviderError::KeyFile { problem, .. }) => problem,
        other => panic!("expected a key file error, got {other:?}"),
    }
}

#[test]
fn key_files_open_to_group_or_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    for mode in [0o644, 0o640, 0o604, 0o610] {
        write_file(&path, &key_hex(1), mode);
        let err = open(&single(&path), &[]).err().unwrap();
        assert_eq!(err.recovery(), Recovery::Terminal);
        assert!(!err.to_string().contains(&key_hex(1)[..16]));
        assert_eq!(
            file_problem(Err::<(), _>(err)),
            KeyFileProblem::Insecure { mode }
        );
    }
    for mode in [0o600, 0o400] {
        write_file(&path, &format!("{}\n", key_hex(1)), mode);
        let provider = open(&single(&path), &[]).unwrap();
        assert_eq!(
            provider.current_kek_id().unwrap(),
            default_id(&key_bytes(1))
        );
    }
}

#[test]
fn a_single_file_is_re_read_on_every_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    write_file(&path, &key_hex(1), 0o600);
    let provider = open(&single(&path), &[]).unwrap();
    let first = check_provider(&provider);
    round_trip(&provider, &first);

    write_file(&path, &key_hex(2), 0o600);
    assert_eq!(
        provider.current_kek_id().unwrap(),
        default_id(&key_bytes(2))
    );
    // The old key is gone with its file content.
    assert!(matches!(
        provider.wrap(&first, b"dek"),
        Err(ProviderError::UnknownKek { .. })
    ));
    // A later chmod is seen at the next poll too.
    write_file(&path, &key_hex(2), 0o644);
    assert_eq!(
        file_problem(provider.current_kek_id()),
        KeyFileProblem::Insecure { mode: 0o644 }
    );
}

#[test]
fn versioned_directory_rotates_and_forgets_removed_versions() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path();
    write_file(&keys.join("v1.key"), &key_hex(1), 0o600);
    let provider = open(&directory(keys), &[]).unwrap();
    assert_eq!(check_provider(&provider), id("v1"));
    let old_wrap = round_trip(&provider, &id("v1"));

    // Rotation: a newer version appears and is current at the next poll;
    // "v10" outranks "v9" (numbers, not text, are compared).
    write_file(&keys.join("v9.key"), &key_hex(9), 0o600);
    write_file(&keys.join("v10.key"), &key_hex(10), 0o600);
    assert_eq!(provider.current_kek_id().unwrap(), id("v10"));
    round_trip(&provider, &id("v10"));

    // The old version still unwraps while its file exists...
    assert_eq!(
        provider.unwrap(&id("v1"), &old_wrap).unwrap().as_slice(),
        &[0x5a; 32]
    );
    // ...and is unknown (terminal) once removed.
    fs::remove_file(keys.join("v1.key")).unwrap();
    let err = provider.unwrap(&id("v1"), &old_wrap).err().unwrap();
    assert!(matches!(err, ProviderError::UnknownKek { ref kek } if *kek == id("v1")));
    assert_eq!(err.recovery(), Recovery::Terminal);
}

#[test]
fn current_file_chooses_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path();
    write_file(&keys.join("a.key"), &key_hex(1), 0o600);
    write_file(&keys.join("b.key"), &key_hex(2), 0o600);
    // Ids without version numbers: ambiguous until `current` names one.
    assert_eq!(
        file_problem(open(&directory(keys), &[])),
        KeyFileProblem::AmbiguousCurrent
    );
    write_file(&keys.join("current"), "b\n", 0o644);
    let provider = open(&directory(keys), &[]).unwrap();
    assert_eq!(provider.current_kek_id().unwrap(), id("b"));
    write_file(&keys.join("current"), "c\n", 0o644);
    assert_eq!(
        file_problem(provider.current_kek_id()),
        KeyFileProblem::CurrentMissing { kek: id("c") }
    );
    write_file(&keys.join("current"), "../a\n", 0o644);
    assert_eq!(
        file_problem(provider.current_kek_id()),
        KeyFileProblem::BadCurrent
    );
    // Anyone who can write `current` could choose the key.
    write_file(&keys.join("current"), "a\n", 0o666);
    assert_eq!(
        file_problem(provider.current_kek_id()),
        KeyFileProblem::WritableByOthers { mode: 0o666 }
    );
}

#[test]
fn directory_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path();
    assert_eq!(
        file_problem(open(&directory(keys), &[])),
        KeyFileProblem::NoKeys
    );
    write_file(&keys.join("v1.key"), &key_hex(1), 0o600);
    write_file(&keys.join("01.key"), &key_hex(2), 0o600);
    assert_eq!(
        file_problem(open(&directory(keys), &[])),
        KeyFileProblem::AmbiguousCurrent
    );
    fs::remove_file(keys.join("01.key")).unwrap();
    let provider = open(&directory(keys), &[]).unwrap();
    // Ids that could leave the directory are never looked up.
    for bad in ["../v1", ".v1", "sha256:00"] {
        assert!(matches!(
            provider.unwrap(&id(bad), b"x"),
            Err(ProviderError::UnknownKek { .. })
        ));
    }
    fs::set_permissions(keys, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    assert_eq!(
        file_problem(provider.current_kek_id()),
        KeyFileProblem::WritableByOthers { mode: 0o777 }
    );
}

#[test]
fn symlinks_are_followed_and_the_target_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.key");
    let link = dir.path().join("link.key");
    write_file(&target, &key_hex(3), 0o600);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let provider = open(&single(&link), &[]).unwrap();
    assert_eq!(
        provider.current_kek_id().unwrap(),
        default_id(&key_bytes(3))
    );
    fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    assert_eq!(
        file_problem(provider.current_kek_id()),
        KeyFileProblem::Insecure { mode: 0o644 }
    );
}

#[test]
fn special_and_oversized_files_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO would block a plain open until a writer came.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(
        file_problem(open(&single(&fifo), &[])),
        KeyFileProblem::NotRegular
    );
    let big = dir.path().join("big");
    write_file(&big, &"a".repeat(10_000), 0o600);
    assert!(matches!(
        file_problem(open(&single(&big), &[])),
        KeyFileProblem::TooLarge { .. }
    ));
    let missing = dir.path().join("missing");
    let problem = file_problem(open(&single(&missing), &[]));
    assert_eq!(
        problem,
        KeyFileProblem::Io {
            kind: std::io::ErrorKind::NotFound
        }
    );
    assert_eq!(problem.recovery(), Recovery::Terminal);
}

#[test]
fn files_of_another_user_are_refused() {
    // Giving a file away needs root; as another user the check cannot be
    // staged, so the test only runs where it can fail.
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    write_file(&path, &key_hex(1), 0o600);
    std::os::unix::fs::chown(&path, Some(4321), None).unwrap();
    assert_eq!(
        file_problem(open(&single(&path), &[])),
        KeyFileProblem::NotOwned {
            owner: 4321,
            expected: 0
        }
    );
}
