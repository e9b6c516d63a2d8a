//! Running a provider program once: cleared environment, its own process
//! group, a deadline, capped stdout, stderr to the log.
//!
//! The program is started as the leader of a new process group. Whatever
//! happens (answer, timeout, oversize output, an early return), the whole
//! group is sent `SIGKILL` before the leader is reaped. Killing before
//! reaping matters: while the leader is an unreaped zombie its pid, which is
//! the group id, cannot be reused, so the signal can only reach the
//! program's own processes.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use zeroize::Zeroizing;

use super::printable;
use crate::provider::CommandFailure;
use crate::provider::keytext::{CappedReadError, read_capped};

/// The most a program may write to stdout per call. An answer is a few
/// hundred bytes (a KMS ciphertext blob is the largest); 64 KiB leaves room
/// for any KMS while bounding what a broken program can make us hold.
pub(crate) const MAX_STDOUT: usize = 64 * 1024;
/// Stderr lines longer than this are logged in pieces.
const MAX_STDERR_LINE: u64 = 1024;
/// Stderr lines logged per call; the rest is read and dropped, so a chatty
/// program cannot flood the log.
const MAX_STDERR_LINES: usize = 100;

/// What to run.
pub(crate) struct Invocation<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [String],
    /// The whole environment the program gets.
    pub(crate) env: &'a [(String, Zeroizing<Vec<u8>>)],
    pub(crate) timeout: Duration,
}

/// A program that ran to completion within its deadline.
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    /// Everything it wrote to stdout (may hold a key: zeroized on drop).
    pub(crate) stdout: Zeroizing<Vec<u8>>,
}

enum Event {
    Exited,
    Stdout(Result<Zeroizing<Vec<u8>>, CappedReadError>),
    StderrDone,
}

/// The running program's process group. Dropping it kills the group and
/// reaps the leader, so no path out of [`run`] leaves a process behind.
struct Group {
    child: Child,
    pgid: Pid,
    reaped: bool,
}

impl Group {
    fn kill(&self) {
        // ESRCH (nothing left to kill) is the only expected error, and there
        // is nothing to do about any other.
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }

    fn reap(&mut self) -> Result<ExitStatus, CommandFailure> {
        let status = self
            .child
            .wait()
            .map_err(|e| CommandFailure::Io { kind: e.kind() })?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the program once, writing `input` to its stdin.
///
/// Returns once the program has exited and both its stdout and stderr have
/// closed, its group having been killed when the leader exited (a helper
/// left running would otherwise hold stdout open).
///
/// # Errors
/// [`CommandFailure::Spawn`], [`CommandFailure::TimedOut`] (the group is
/// killed), [`CommandFailure::OutputTooLarge`] (the group is killed at the
/// first byte over [`MAX_STDOUT`]), [`CommandFailure::Io`].
pub(crate) fn run(
    invocation: &Invocation<'_>,
    input: Zeroizing<Vec<u8>>,
) -> Result<Finished, CommandFailure> {
    let mut command = Command::new(invocation.program);
    command
        .args(invocation.args)
        .env_clear()
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in invocation.env {
        command.env(name, OsStr::from_bytes(value));
    }
    let mut child = command
        .spawn()
        .map_err(|e| CommandFailure::Spawn { kind: e.kind() })?;
    let Ok(raw_pid) = i32::try_from(child.id()) else {
        // Pids fit in i32 on every Unix; refuse rather than signal a wrong
        // group.
        let _ = child.kill();
        let _ = child.wait();
        return Err(CommandFailure::Io {
            kind: std::io::ErrorKind::InvalidData,
        });
    };
    let mut group = Group {
        child,
        pgid: Pid::from_raw(raw_pid),
        reaped: false,
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (
        group.child.stdin.take(),
        group.child.stdout.take(),
        group.child.stderr.take(),
    ) else {
        return Err(CommandFailure::Io {
            kind: std::io::ErrorKind::BrokenPipe,
        });
    };

    let (events, received) = mpsc::channel();
    // A program that does not read its stdin must not block us: write from a
    // thread. A broken pipe just means it did not want the request.
    spawn("key-provider-stdin", move || {
        let _ = stdin.write_all(&input);
    })?;
    let sender = events.clone();
    spawn("key-provider-stdout", move || {
        let _ = sender.send(Event::Stdout(read_capped(stdout, MAX_STDOUT)));
    })?;
    let sender = events.clone();
    let program = invocation.program.to_owned();
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let span = tracing::Span::current();
    spawn("key-provider-stderr", move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let _entered = span.enter();
            forward_stderr(stderr, &program);
        });
        let _ = sender.send(Event::StderrDone);
    })?;
    let pid = group.pgid;
    spawn("key-provider-wait", move || {
        // WNOWAIT: learn that the leader exited without reaping it, so its
        // pid (the group id) stays reserved until the group is killed.
        while let Err(Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
        let _ = events.send(Event::Exited);
    })?;

    let deadline = Instant::now() + invocation.timeout;
    let (mut exited, mut output, mut stderr_done) = (false, None, false);
    while !(exited && output.is_some() && stderr_done) {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(Event::Exited) => {
                exited = true;
                group.kill();
            }
            Ok(Event::Stdout(Ok(bytes))) => output = Some(bytes),
            Ok(Event::Stdout(Err(CappedReadError::TooLarge))) => {
                return Err(CommandFailure::OutputTooLarge { limit: MAX_STDOUT });
            }
            Ok(Event::Stdout(Err(CappedReadError::Io(kind)))) => {
                return Err(CommandFailure::Io { kind });
            }
            Ok(Event::StderrDone) => stderr_done = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(CommandFailure::TimedOut {
                    after: invocation.timeout,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(CommandFailure::Io {
                    kind: std::io::ErrorKind::BrokenPipe,
                });
            }
        }
    }
    let status = group.reap()?;
    Ok(Finished {
        status,
        stdout: output.unwrap_or_default(),
    })
}

/// Starts a helper thread. Failing to (out of threads) is an I/O error the
/// caller may retry; on that path `Group`'s drop kills the program.
fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), CommandFailure> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(work)
        .map(drop)
        .map_err(|e| CommandFailure::Io { kind: e.kind() })
}

/// Logs the program's stderr line by line (cleaned of control characters).
/// The program never receives key material through anything it could echo
/// there except the request itself, which only `wrap` carries.
fn forward_stderr(stderr: impl Read, program: &Path) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut logged = 0;
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_STDERR_LINE)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) if logged < MAX_STDERR_LINES => {
                logged += 1;
                let text = printable(&String::from_utf8_lossy(&line), MAX_STDERR_LINE as usize);
                tracing::warn!(program = %program.display(), stderr = %text, "key provider program wrote to stderr");
            }
            Ok(_) => {}
        }
    }
}
