//! The `command` key provider: each protocol mode against real programs,
//! timeouts that kill the whole process group, output limits, the cleared
//! environment and shell-free argv.

mod common;
#[allow(dead_code, reason = "each test binary uses part of the helpers")]
mod provider_util;

use common::Captured;
use provider_util::{
    default_id, id, key_bytes, key_hex, open, round_trip, write_file, write_script,
};
use std::fs;
use std::path::{Path, PathBuf};
use thresig_store::Recovery;
use thresig_store::provider::{
    CommandFailure, ConfiguredProvider, KeyOrigin, KeyProblem, KeyProvider as _, OutputProblem,
    ProviderError, RefusalCode, check_provider,
};

const PYTHON: &str = "/usr/bin/python3";

/// A `[key_provider]` section running `argv` in `mode`.
fn config(mode: &str, argv: &[&str], extra: &str) -> String {
    let argv: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "[key_provider]\nkind = \"command\"\nmode = \"{mode}\"\ncommand = [{}]\n{extra}\n",
        argv.join(", ")
    )
}

fn provider(mode: &str, argv: &[&str]) -> ConfiguredProvider {
    open(&config(mode, argv, ""), &[]).unwrap()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A script that answers every request with `stdout` and exits `code`.
fn answering(dir: &Path, stdout: &str, code: i32) -> PathBuf {
    write_script(
        dir,
        "answer.sh",
        &format!("#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {code}\n"),
    )
}

/// A script in a temporary directory, run with one argument: the path of a
/// file it writes what it saw to (`out`).
struct Recorder {
    dir: tempfile::TempDir,
    script: PathBuf,
    out: PathBuf,
}

fn recorder(body: &str) -> Recorder {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "script", body);
    let out = dir.path().join("out");
    Recorder { dir, script, out }
}

impl Recorder {
    fn argv(&self) -> Vec<&str> {
        vec![path_str(&self.script), path_str(&self.out)]
    }

    fn seen(&self) -> String {
        fs::read_to_string(&self.out).unwrap()
    }
}

/// Asks `argv` (in `wrap` mode) for the key id, expecting a command
/// failure: returns it, its recovery class and the error's message.
fn key_id_failure(argv: &[&str]) -> (CommandFailure, Recovery, String) {
    let err = provider("wrap", argv).current_kek_id().err().unwrap();
    let (recovery, message) = (err.recovery(), err.to_string());
    (failure(Err::<(), _>(err)), recovery, message)
}

fn failure(result: Result<impl std::fmt::Debug, ProviderError>) -> CommandFailure {
    match result {
        Err(ProviderError::Command { failure, .. }) => failure,
        other => panic!("expected a command failure, got {other:?}"),
    }
}

/// A fake KMS for `wrap` mode: two key versions; a wrap is the version's
/// tag, the reversed DEK and a 4-byte SHA-256 check value.
const FAKE_KMS: &str = r#"
import base64, hashlib, json, sys
KEYS = {"kms-1": b"one:", "kms-2": b"two:"}
request = json.loads(sys.stdin.readline())
op, key_id = request["op"], request.get("key_id")
def say(obj):
    print(json.dumps(obj))
def check(data):
    return hashlib.sha256(data).digest()[:4]
if op == "key-id":
    say({"key_id": "kms-2"})
elif key_id not in KEYS:
    say({"error": {"code": "unknown_key", "message": "no such key"}})
elif op == "wrap":
    body = KEYS[key_id] + base64.b64decode(request["plaintext"])[::-1]
    say({"ciphertext": base64.b64encode(body + check(body)).decode()})
elif op == "unwrap":
    wrapped = base64.b64decode(request["ciphertext"])
    body, tag = wrapped[:-4], wrapped[-4:]
    if not body.startswith(KEYS[key_id]) or check(body) != tag:
        say({"error": {"code": "invalid_ciphertext", "message": "check failed"}})
    else:
        say({"plaintext": base64.b64encode(body[len(KEYS[key_id]):][::-1]).decode()})
else:
    say({"error": {"code": "denied", "message": "unsupported"}})
"#;

#[test]
fn wrap_mode_keeps_the_key_in_the_kms() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kms.py");
    write_file(&script, FAKE_KMS, 0o600);
    let kms = provider("wrap", &[PYTHON, path_str(&script)]);
    assert_eq!(check_provider(&kms), id("kms-2"));
    let wrapped = round_trip(&kms, &id("kms-2"));
    round_trip(&kms, &id("kms-1"));
    assert!(matches!(
        kms.unwrap(&id("kms-1"), &wrapped),
        Err(ProviderError::WrongKek { ref kek }) if *kek == id("kms-1")
    ));
    let unknown = kms.unwrap(&id("kms-9"), &wrapped).err().unwrap();
    assert!(matches!(unknown, ProviderError::UnknownKek { ref kek } if *kek == id("kms-9")));
    assert_eq!(unknown.recovery(), Recovery::Terminal);
}

#[test]
fn get_key_mode_with_the_documented_example_script() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/key-provider-dir.py");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    fs::create_dir(&keys).unwrap();
    write_file(&keys.join("v1.key"), &key_hex(1), 0o600);
    let kms = provider("get-key", &[PYTHON, path_str(&example), path_str(&keys)]);
    assert_eq!(check_provider(&kms), id("v1"));
    let old_wrap = round_trip(&kms, &id("v1"));

    write_file(&keys.join("v2.key"), &key_hex(2), 0o600);
    assert_eq!(kms.current_kek_id().unwrap(), id("v2"));
    round_trip(&kms, &id("v2"));
    assert_eq!(
        kms.unwrap(&id("v1"), &old_wrap).unwrap().as_slice(),
        &[0x5a; 32]
    );
    fs::remove_file(keys.join("v1.key")).unwrap();
    assert!(matches!(
        kms.unwrap(&id("v1"), &old_wrap),
        Err(ProviderError::UnknownKek { .. })
    ));
    // The example refuses a key file others can read, as the file provider does.
    write_file(&keys.join("v2.key"), &key_hex(2), 0o644);
    assert_eq!(
        failure(kms.wrap(&id("v2"), b"dek")),
        CommandFailure::Refused {
            code: RefusalCode::Denied,
            message: "key file is not a regular file of mode 0600 or stricter".into()
        }
    );
}

#[test]
fn get_key_answers_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let other = answering(
        dir.path(),
        &format!(r#"{{"key_id":"v7","key":"{}"}}"#, key_hex(7)),
        0,
    );
    let kms = provider("get-key", &[path_str(&other)]);
    assert_eq!(
        failure(kms.wrap(&id("v1"), b"dek")),
        CommandFailure::BadOutput {
            problem: OutputProblem::KeyIdMismatch {
                asked: id("v1"),
                got: id("v7")
            }
        }
    );
    round_trip(&kms, &id("v7"));
    let short = answering(
        dir.path(),
        &format!(r#"{{"key_id":"v7","key":"{}"}}"#, &key_hex(7)[..40]),
        0,
    );
    let kms = provider("get-key", &[path_str(&short)]);
    assert!(matches!(
        kms.wrap(&id("v7"), b"dek"),
        Err(ProviderError::BadKey {
            origin: KeyOrigin::Command { .. },
            problem: KeyProblem::TooShort { len: 20 }
        })
    ));
}

#[test]
fn raw_mode_names_the_key_by_its_hash() {
    let script = recorder(&format!("#!/bin/sh\nprintf '%s\\n' {}\n", key_hex(4)));
    let raw = provider("raw", &[path_str(&script.script)]);
    let kek = check_provider(&raw);
    assert_eq!(kek, default_id(&key_bytes(4)));
    let wrapped = round_trip(&raw, &kek);
    // A raw program knows only its current key.
    assert!(matches!(
        raw.unwrap(&id("sha256:00"), &wrapped),
        Err(ProviderError::UnknownKek { .. })
    ));
    let zero = recorder(&format!("#!/bin/sh\necho {}\n", "00".repeat(32)));
    assert!(matches!(
        provider("raw", &[path_str(&zero.script)]).current_kek_id(),
        Err(ProviderError::BadKey {
            problem: KeyProblem::AllZero,
            ..
        })
    ));
}

/// Whether `pid` is a running (not dead, not zombie) process.
fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

#[test]
fn a_provider_that_never_answers_is_killed_with_its_children() {
    let hang = recorder("#!/bin/sh\n/bin/sleep 1000 &\necho \"$$ $!\" > \"$1\"\n/bin/sleep 1000\n");
    let hung = open(&config("wrap", &hang.argv(), "timeout_secs = 1"), &[]).unwrap();
    let err = hung.current_kek_id().err().unwrap();
    assert_eq!(err.recovery(), Recovery::Retryable);
    assert_eq!(
        failure(Err::<(), _>(err)),
        CommandFailure::TimedOut {
            after: std::time::Duration::from_secs(1)
        }
    );
    let text = hang.seen();
    let pids: Vec<u32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{text}");
    // The script itself was reaped before the call returned.
    assert!(!running(pids[0]), "the provider program survived");
    assert_dies(pids[1]);
}

/// Asserts that `pid` dies. It was sent SIGKILL with its process group but
/// is not our child, so its death cannot be waited for: poll the condition,
/// with a bound far above any signal delivery delay (this asserts that it
/// dies, not how fast).
fn assert_dies(pid: u32) {
    let gone = (0..1000).any(|_| {
        let gone = !running(pid);
        if !gone {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        gone
    });
    assert!(gone, "process {pid} of the provider's group survived");
}

#[test]
fn processes_left_behind_by_an_answering_program_are_killed() {
    // The child keeps stdout open: without the group kill at exit, the call
    // would wait for it until the timeout.
    let leaver = recorder(
        "#!/bin/sh\n/bin/sleep 1000 &\necho \"$!\" > \"$1\"\necho '{\"key_id\":\"k1\"}'\n",
    );
    let provider = open(&config("wrap", &leaver.argv(), "timeout_secs = 5"), &[]).unwrap();
    assert_eq!(provider.current_kek_id().unwrap(), id("k1"));
    assert_dies(leaver.seen().trim().parse().unwrap());
}

/// Whether `pid` is an unreaped child of this process.
fn zombie_child(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the command name: state, then the parent's pid.
    let mut fields = stat
        .rsplit_once(") ")
        .map_or("", |(_, rest)| rest)
        .split(' ');
    fields.next() == Some("Z") && fields.next() == Some(&std::process::id().to_string())
}

/// The pipes (`pipe:[inode]`) open on `pid`'s stdout and stderr.
fn pipes_of(pid: u32) -> Vec<PathBuf> {
    [1, 2]
        .iter()
        .filter_map(|fd| fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .collect()
}

/// What this process's open descriptors refer to.
fn own_descriptors() -> Vec<PathBuf> {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .collect()
}

/// Kills the helpers whose pids a script recorded (second word of each
/// line of `out`), so none outlives the test even when it fails.
struct KillHelpers<'a>(&'a Path);

impl KillHelpers<'_> {
    fn pids(&self) -> Vec<(u32, u32)> {
        fs::read_to_string(self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (leader, helper) = line.split_once(' ')?;
                Some((leader.parse().ok()?, helper.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for KillHelpers<'_> {
    fn drop(&mut self) {
        for (_, helper) in self.pids() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(helper).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn a_helper_that_leaves_the_group_holding_stdout_neither_delays_the_answer_nor_leaks() {
    // The helper starts its own session, so the group kill cannot reach it,
    // and it keeps the program's stdout and stderr open after the program
    // has printed its whole answer and exited. The program answers only
    // once the helper has said (through a FIFO) that it left the group; the
    // helper says it from a subshell, since a redirection in the helper's
    // own shell replaces its stdout with the FIFO until the write returns,
    // and the pipes below would then be checked while it still holds that.
    let escaper = recorder(concat!(
        "#!/bin/sh\n",
        "fifo=\"$1.$$\"\n",
        "/usr/bin/mkfifo \"$fifo\"\n",
        "/usr/bin/setsid /bin/sh -c '(echo $$ > \"$1\"); exec /bin/sleep 1000' helper \"$fifo\" &\n",
        "read helper < \"$fifo\"\n",
        "/bin/rm \"$fifo\"\n",
        "echo \"$$ $helper\" >> \"$1\"\n",
        "echo '{\"key_id\":\"k1\"}'\n",
    ));
    let helpers = KillHelpers(&escaper.out);
    // Waiting for the helper to close stdout would end in this timeout, far
    // above the time a real answer takes.
    let provider = open(&config("wrap", &escaper.argv(), "timeout_secs = 20"), &[]).unwrap();
    const CALLS: usize = 10;
    for _ in 0..CALLS {
        assert_eq!(provider.current_kek_id().unwrap(), id("k1"));
    }
    let pids = helpers.pids();
    assert_eq!(pids.len(), CALLS);
    let ours = own_descriptors();
    for (leader, helper) in pids {
        assert!(!zombie_child(leader), "program {leader} was not reaped");
        let held = pipes_of(helper);
        assert_eq!(held.len(), 2, "helper {helper} does not hold both pipes");
        for pipe in held {
            assert!(
                !ours.contains(&pipe),
                "this process still holds {} that helper {helper} writes to",
                pipe.display()
            );
        }
    }
}

#[test]
fn oversized_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let endless = write_script(dir.path(), "yes.sh", "#!/bin/sh\nexec /usr/bin/yes\n");
    let just_over = write_script(
        dir.path(),
        "big.sh",
        "#!/bin/sh\n/usr/bin/head -c 65537 /dev/zero\n",
    );
    for script in [endless, just_over] {
        let (failure, recovery, _) = key_id_failure(&[path_str(&script)]);
        assert_eq!(recovery, Recovery::Terminal);
        assert_eq!(failure, CommandFailure::OutputTooLarge { limit: 65536 });
    }
}

#[test]
fn a_failing_program_is_retryable_and_its_stderr_goes_to_the_log() {
    let script = recorder("#!/bin/sh\necho 'token expired for role signer' >&2\nexit 3\n");
    let failing = provider("wrap", &[path_str(&script.script)]);
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let err = tracing::subscriber::with_default(subscriber, || failing.current_kek_id())
        .err()
        .unwrap();
    assert_eq!(err.recovery(), Recovery::Retryable);
    assert!(!err.to_string().contains("token expired"), "{err}");
    match failure(Err::<(), _>(err)) {
        CommandFailure::Exited { status } => assert_eq!(status.code(), Some(3)),
        other => panic!("{other:?}"),
    }
    let logged = log.text();
    assert!(logged.contains("token expired for role signer"), "{logged}");
}

#[test]
fn error_objects_map_to_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unavailable", 1, Recovery::Retryable),
        ("unavailable", 0, Recovery::Retryable),
        ("denied", 0, Recovery::Terminal),
    ];
    for (code, exit, recovery) in cases {
        let script = answering(
            dir.path(),
            &format!(r#"{{"error":{{"code":"{code}","message":"kms\u0007 says {code}"}}}}"#),
            exit,
        );
        let (failure, got_recovery, _) = key_id_failure(&[path_str(&script)]);
        assert_eq!(got_recovery, recovery, "{code}");
        match failure {
            CommandFailure::Refused { code: got, message } => {
                assert_eq!(got.to_string(), code);
                assert_eq!(message, format!("kms? says {code}"));
            }
            other => panic!("{other:?}"),
        }
    }
    let garbage = answering(dir.path(), "hello, I am not JSON", 0);
    let (failure, recovery, message) = key_id_failure(&[path_str(&garbage)]);
    assert_eq!(recovery, Recovery::Terminal);
    assert!(!message.contains("hello"), "{message}");
    assert!(matches!(
        failure,
        CommandFailure::BadOutput {
            problem: OutputProblem::Unparseable { line: 1, .. }
        }
    ));
    let (failure, recovery, _) = key_id_failure(&["/nonexistent/kms-client"]);
    assert_eq!(recovery, Recovery::Terminal);
    assert_eq!(
        failure,
        CommandFailure::Spawn {
            kind: std::io::ErrorKind::NotFound
        }
    );
}

#[test]
fn the_environment_is_cleared_except_the_allowlist() {
    // /proc/$$/environ is what the program was started with, before the
    // shell adds anything of its own.
    let shell = recorder(
        "#!/bin/sh\n/usr/bin/tr '\\0' '\\n' < /proc/$$/environ > \"$1\"\necho '{\"key_id\":\"k1\"}'\n",
    );
    let section = config(
        "wrap",
        &shell.argv(),
        "pass_env = [\"ALLOWED\", \"NOT_SET\"]",
    );
    let env = [("ALLOWED", "yes"), ("KEK", "do-not-pass"), ("PATH", "/bin")];
    let kms = open(&section, &env).unwrap();
    assert_eq!(kms.current_kek_id().unwrap(), id("k1"));
    assert_eq!(shell.seen(), "ALLOWED=yes\n");
    // Debug names the variables but not their values.
    let shown = format!("{kms:?}");
    assert!(
        shown.contains("ALLOWED") && !shown.contains("yes"),
        "{shown}"
    );
}

#[test]
fn arguments_reach_the_program_without_a_shell() {
    let shell = recorder(
        "#!/bin/sh\nout=\"$1\"\nshift\nprintf '%s\\n' \"$@\" > \"$out\"\necho '{\"key_id\":\"k1\"}'\n",
    );
    let marker = shell.dir.path().join("marker");
    let m = path_str(&marker);
    let args = [
        format!("$(touch {m})"),
        format!("x; touch {m}"),
        format!("`touch {m}`"),
        "two words".to_owned(),
        "*".to_owned(),
    ];
    let mut argv = shell.argv();
    argv.extend(args.iter().map(String::as_str));
    assert_eq!(provider("wrap", &argv).current_kek_id().unwrap(), id("k1"));
    assert_eq!(shell.seen().lines().collect::<Vec<_>>(), args);
    assert!(!marker.exists());
}

#[test]
fn wrap_requests_reach_the_program_as_documented() {
    let shell = recorder("#!/bin/sh\n/bin/cat > \"$1\"\necho '{\"ciphertext\":\"AAEC\"}'\n");
    let kms = provider("wrap", &shell.argv());
    assert_eq!(kms.wrap(&id("k1"), &[1, 2, 3]).unwrap(), vec![0, 1, 2]);
    let request: serde_json::Value = serde_json::from_str(&shell.seen()).unwrap();
    assert_eq!(
        request,
        serde_json::json!({"op": "wrap", "key_id": "k1", "plaintext": "AQID"})
    );
}

mod arbitrary_output {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        // Each case runs two programs; 16 keep the suite fast.
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Whatever a program prints (exit 0), the provider returns a value
        /// or a typed error about the answer; it never panics.
        #[test]
        fn arbitrary_stdout_gives_a_typed_error(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..512),
                "\\{\"key_id\":\"[ -~]{0,8}\"\\}".prop_map(String::into_bytes),
                "[0-9a-f]{60,68}".prop_map(String::into_bytes),
            ]
        ) {
            let cat = recorder("#!/bin/sh\nexec /bin/cat \"$1\"\n");
            fs::write(&cat.out, &bytes).unwrap();
            let argv = cat.argv();
            match provider("wrap", &argv).current_kek_id() {
                Ok(kek) => prop_assert!(!kek.as_str().is_empty()),
                Err(ProviderError::Command {
                    failure: CommandFailure::BadOutput { .. } | CommandFailure::Refused { .. },
                    ..
                }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
            match provider("raw", &argv).current_kek_id() {
                Ok(kek) => prop_assert!(kek.as_str().starts_with("sha256:")),
                Err(ProviderError::BadKey { origin: KeyOrigin::Command { .. }, .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }
}
