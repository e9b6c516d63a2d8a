//! Running a provider program once: cleared environment, its own process
//! group, a deadline, capped stdout, stderr to the log.
//!
//! The program is started as the leader of a new process group. The calling
//! thread drives its pipes itself, with `poll(2)` over stdin, stdout, stderr
//! and a pipe that closes when the leader exits, so nothing of a call
//! outlives it but a short-lived thread that waits for the leader.
//!
//! The answer is what the program wrote before it exited. When the leader
//! exits, its whole group is sent `SIGKILL`, what the pipes already hold is
//! read, and the call ends: it does not wait for end of file, so a helper
//! that left the group (its own session) and still holds stdout or stderr
//! neither delays a complete answer nor keeps anything of ours open (our
//! ends of the pipes are closed when the call returns).
//!
//! Whatever happens (answer, timeout, oversize output, an early return), the
//! whole group is sent `SIGKILL` before the leader is reaped. Killing before
//! reaping matters: while the leader is an unreaped zombie its pid, which is
//! the group id, cannot be reused, so the signal can only reach the
//! program's own processes.

use std::ffi::OsStr;
use std::io::{self, Read, Write as _};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use zeroize::Zeroizing;

use super::printable;
use crate::provider::CommandFailure;

/// The most a program may write to stdout per call. An answer is a few
/// hundred bytes (a KMS ciphertext blob is the largest); 64 KiB leaves room
/// for any KMS while bounding what a broken program can make us hold.
pub(crate) const MAX_STDOUT: usize = 64 * 1024;
/// Stderr lines longer than this are logged in pieces.
const MAX_STDERR_LINE: usize = 1024;
/// Stderr lines logged per call; the rest is read and dropped, so a chatty
/// program cannot flood the log.
const MAX_STDERR_LINES: usize = 100;
/// The most read from stderr at each wakeup: a program (or a helper left
/// behind) that floods it must not keep the call from its deadline or its
/// end.
const STDERR_BUDGET: usize = 64 * 1024;
/// Bytes read per `read` call.
const CHUNK: usize = 4096;

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
/// Returns once the program has exited, its group has been killed and what
/// it wrote has been read (a helper left running would otherwise hold
/// stdout open).
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
            kind: io::ErrorKind::InvalidData,
        });
    };
    let mut group = Group {
        child,
        pgid: Pid::from_raw(raw_pid),
        reaped: false,
    };
    let (Some(stdin), Some(stdout), Some(stderr)) = (
        group.child.stdin.take(),
        group.child.stdout.take(),
        group.child.stderr.take(),
    ) else {
        return Err(CommandFailure::Io {
            kind: io::ErrorKind::BrokenPipe,
        });
    };
    let (exited, exit_signal) = io::pipe().map_err(io_failure)?;
    let pid = group.pgid;
    // No pidfd in our bindings: a thread learns that the leader exited and
    // says so by closing its end of the pipe. WNOWAIT leaves the leader
    // unreaped, so its pid (the group id) stays reserved until the group is
    // killed. The thread ends when the leader exits or is reaped (ECHILD),
    // which every path out of `run` makes happen.
    spawn("key-provider-wait", move || {
        while let Err(Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
        drop(exit_signal);
    })?;
    let mut pipes = Pipes {
        stdin: Some(nonblocking(stdin)?),
        input,
        sent: 0,
        stdout: Some(nonblocking(stdout)?),
        output: Zeroizing::new(Vec::new()),
        stderr: Some(nonblocking(stderr)?),
        log: StderrLog::new(invocation.program),
        exited: Some(exited),
    };
    let deadline = Instant::now() + invocation.timeout;
    while pipes.exited.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CommandFailure::TimedOut {
                after: invocation.timeout,
            });
        }
        let ready = pipes.wait(left)?;
        pipes.serve(ready)?;
    }
    group.kill();
    let stdout = pipes.finish()?;
    let status = group.reap()?;
    Ok(Finished { status, stdout })
}

/// The program's pipes, driven by the calling thread. Each is dropped
/// (closed) as soon as it is done with.
struct Pipes<'a> {
    stdin: Option<ChildStdin>,
    /// The request (may hold a DEK: zeroized on drop).
    input: Zeroizing<Vec<u8>>,
    /// Bytes of `input` written so far.
    sent: usize,
    stdout: Option<ChildStdout>,
    output: Zeroizing<Vec<u8>>,
    stderr: Option<ChildStderr>,
    log: StderrLog<'a>,
    /// Closes (reads end of file) when the leader has exited.
    exited: Option<io::PipeReader>,
}

/// Which pipes `poll` found ready (readable, writable, or closed).
#[derive(Default)]
struct Ready {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    exited: bool,
}

impl Pipes<'_> {
    /// Waits until a pipe is ready or `left` passes.
    fn wait(&self, left: Duration) -> Result<Ready, CommandFailure> {
        let watched: [(Option<BorrowedFd<'_>>, PollFlags); 4] = [
            (self.stdin.as_ref().map(AsFd::as_fd), PollFlags::POLLOUT),
            (self.stdout.as_ref().map(AsFd::as_fd), PollFlags::POLLIN),
            (self.stderr.as_ref().map(AsFd::as_fd), PollFlags::POLLIN),
            (self.exited.as_ref().map(AsFd::as_fd), PollFlags::POLLIN),
        ];
        let (mut fds, slots): (Vec<PollFd<'_>>, Vec<usize>) = watched
            .into_iter()
            .enumerate()
            .filter_map(|(slot, (fd, events))| Some((PollFd::new(fd?, events), slot)))
            .unzip();
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(io_failure(e.into())),
        }
        let mut ready = Ready::default();
        for (fd, slot) in fds.iter().zip(slots) {
            // Any event counts, including a hangup or an error: the read or
            // write that follows tells which.
            if fd.any().unwrap_or(false) {
                match slot {
                    0 => ready.stdin = true,
                    1 => ready.stdout = true,
                    2 => ready.stderr = true,
                    _ => ready.exited = true,
                }
            }
        }
        Ok(ready)
    }

    /// Moves what the ready pipes allow.
    fn serve(&mut self, ready: Ready) -> Result<(), CommandFailure> {
        if ready.stdin {
            self.write_input();
        }
        if ready.stdout {
            self.read_stdout()?;
        }
        if ready.stderr {
            self.read_stderr();
        }
        if ready.exited {
            self.exited = None;
            // A request it did not read is of no use to it any more.
            self.stdin = None;
        }
        Ok(())
    }

    /// Writes what stdin takes now. A program that closed stdin just did
    /// not want the request.
    fn write_input(&mut self) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        let rest = self.input.get(self.sent..).unwrap_or_default();
        match stdin.write(rest) {
            Ok(n) => self.sent = self.sent.saturating_add(n),
            Err(e) if retry_later(&e) => return,
            Err(_) => self.sent = self.input.len(),
        }
        if self.sent >= self.input.len() {
            // Closing stdin is the request's end of file.
            self.stdin = None;
        }
    }

    /// Reads what stdout holds now (bounded by [`MAX_STDOUT`]).
    ///
    /// # Errors
    /// [`CommandFailure::OutputTooLarge`] past [`MAX_STDOUT`],
    /// [`CommandFailure::Io`] when a read fails.
    fn read_stdout(&mut self) -> Result<(), CommandFailure> {
        let Some(stdout) = self.stdout.as_mut() else {
            return Ok(());
        };
        let mut chunk = Zeroizing::new([0u8; CHUNK]);
        loop {
            match stdout.read(chunk.as_mut_slice()) {
                Ok(0) => {
                    self.stdout = None;
                    break;
                }
                Ok(n) => {
                    self.output
                        .extend_from_slice(chunk.get(..n).unwrap_or_default());
                    if self.output.len() > MAX_STDOUT {
                        return Err(CommandFailure::OutputTooLarge { limit: MAX_STDOUT });
                    }
                }
                Err(e) if retry_later(&e) => break,
                Err(e) => return Err(CommandFailure::Io { kind: e.kind() }),
            }
        }
        Ok(())
    }

    /// Logs what stderr holds now, at most [`STDERR_BUDGET`] bytes. A read
    /// error ends the logging, not the call.
    fn read_stderr(&mut self) {
        let Some(stderr) = self.stderr.as_mut() else {
            return;
        };
        let mut chunk = [0u8; CHUNK];
        let mut read = 0usize;
        while read < STDERR_BUDGET {
            match stderr.read(&mut chunk) {
                Ok(n) if n > 0 => {
                    read = read.saturating_add(n);
                    self.log.feed(chunk.get(..n).unwrap_or_default());
                }
                Err(e) if retry_later(&e) => return,
                Ok(_) | Err(_) => {
                    self.stderr = None;
                    return;
                }
            }
        }
    }

    /// After the leader's exit (its group killed): reads what the pipes
    /// already hold, without waiting for end of file, and returns stdout.
    fn finish(mut self) -> Result<Zeroizing<Vec<u8>>, CommandFailure> {
        self.read_stdout()?;
        self.read_stderr();
        self.log.flush();
        Ok(std::mem::take(&mut self.output))
    }
}

/// Whether a pipe has nothing to move right now.
fn retry_later(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// `pipe` with `O_NONBLOCK` set, so a read or write never waits: `poll`
/// does the waiting, with the deadline.
fn nonblocking<P: AsFd>(pipe: P) -> Result<P, CommandFailure> {
    let flags = fcntl(pipe.as_fd(), FcntlArg::F_GETFL).map_err(|e| io_failure(e.into()))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(pipe.as_fd(), FcntlArg::F_SETFL(flags)).map_err(|e| io_failure(e.into()))?;
    Ok(pipe)
}

fn io_failure(e: io::Error) -> CommandFailure {
    CommandFailure::Io { kind: e.kind() }
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

/// The program's stderr, logged line by line (cleaned of control
/// characters) as it arrives. The program never receives key material
/// through anything it could echo there except the request itself, which
/// only `wrap` carries.
struct StderrLog<'a> {
    program: &'a Path,
    line: Vec<u8>,
    logged: usize,
}

impl<'a> StderrLog<'a> {
    fn new(program: &'a Path) -> Self {
        Self {
            program,
            line: Vec::new(),
            logged: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.line.push(byte);
            if byte == b'\n' || self.line.len() >= MAX_STDERR_LINE {
                self.flush();
            }
        }
    }

    /// Logs the line collected so far, if any.
    fn flush(&mut self) {
        if self.line.is_empty() {
            return;
        }
        if self.logged < MAX_STDERR_LINES {
            self.logged += 1;
            let text = printable(&String::from_utf8_lossy(&self.line), MAX_STDERR_LINE);
            tracing::warn!(program = %self.program.display(), stderr = %text, "key provider program wrote to stderr");
        }
        self.line.clear();
    }
}
