//! `thresig keys` against a running signer: the commands go through the
//! signer's admin socket while it keeps serving, and fall back to opening
//! the store once it has stopped.

mod common;

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{ProcessCluster, WALLET, json, seat, thresig, wait_ready};
use serde_json::Value;
use thresig_cluster::config::Config;
use thresig_cluster::node::admin_socket_path;

fn keys(command: &str, config: &str, code: i32) -> Value {
    json(&["keys", command, "--config", config], code)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn socket_of(config: &Path) -> PathBuf {
    admin_socket_path(&Config::load(config).unwrap())
}

#[test]
fn keys_commands_act_on_a_running_signer_through_its_admin_socket() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[], 21);
    cluster.start_all(&runtime);
    let path = cluster.config_path(seat(1));
    let config = path.to_str().unwrap();
    let dkg = json(&["dkg", "--config", config, "--wallet", WALLET], 0);
    let output_key = dkg["output_key"].as_str().unwrap().to_owned();

    // Owner-only: a 0700 directory holding a 0600 socket.
    let socket = socket_of(&path);
    assert!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    let status = keys("status", config, 0);
    assert_eq!(status["via"], "daemon", "{status}");
    assert_eq!(status["current_dek"], 1);
    assert_eq!(status["provider"]["ok"], true);

    // The rotation runs in the signer, which keeps serving meanwhile.
    let rotated = keys("rotate-dek", config, 0);
    assert_eq!(rotated["via"], "daemon", "{rotated}");
    assert_eq!(rotated["rotated_to"], 2);
    let status = keys("status", config, 0);
    assert_eq!(status["current_dek"], 2, "{status}");
    assert_eq!(status["last_dek_rotation"]["term"], 2);
    let cluster_status = json(&["status", "--config", config], 0);
    assert_eq!(cluster_status["wallets"][WALLET]["output_key"], output_key);
    for m in cluster_status["members"].as_array().unwrap() {
        assert_eq!(m["reachable"], true, "{m}");
        assert_eq!(m["wallets"][0]["state"], "active", "{m}");
    }

    let verified = keys("verify", config, 0);
    assert_eq!(verified["via"], "daemon");
    assert_eq!(verified["failures"], serde_json::json!([]));
    assert!(verified["ok"].as_u64().unwrap() > 0);

    let rekeyed = keys("rotate-kek", config, 0);
    assert_eq!(rekeyed["via"], "daemon");

    // Text output is the command's own, with a note on stderr.
    let text = thresig(&["keys", "status", "--config", config]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("current DEK: term 2"));
    assert!(String::from_utf8_lossy(&text.stderr).contains("running signer"));

    // Recovery needs the store closed: refused before the key file is read.
    let refused = json(
        &[
            "keys",
            "recover",
            "--config",
            config,
            "--recovery-key",
            "/nonexistent",
        ],
        1,
    );
    assert_eq!(refused["error"]["code"], "daemon_running", "{refused}");
    assert_eq!(refused["error"]["retryable"], false);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stop it")
    );

    // A stopped signer removes its socket; the commands open the store.
    assert!(cluster.local.stop(seat(1)).unwrap());
    assert!(!socket.exists());
    let status = keys("status", config, 0);
    assert_eq!(status["via"], "store");
    assert_eq!(status["current_dek"], 2);
}

#[test]
fn a_killed_signers_stale_socket_is_replaced_at_start() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(3, 2, &[], 22);
    cluster.start_all(&runtime);
    let path = cluster.config_path(seat(2));
    let config = path.to_str().unwrap();
    let socket = socket_of(&path);
    cluster.local.kill(seat(2)).unwrap();
    // The socket file outlives SIGKILL, but nothing answers on it.
    assert!(socket.exists());
    assert_eq!(keys("status", config, 0)["via"], "store");

    cluster.local.start(seat(2)).unwrap();
    runtime.block_on(wait_ready(&cluster.peers(seat(1)), seat(2)));
    assert_eq!(keys("status", config, 0)["via"], "daemon");
    assert_eq!(mode(&socket), 0o600);
}

/// Seat 1 of a 2-of-2 cluster, started alone, and its admin socket.
fn started_alone(seed: u64) -> (ProcessCluster, PathBuf) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(2, 2, &[], seed);
    cluster.local.start(seat(1)).unwrap();
    runtime.block_on(wait_ready(&cluster.peers(seat(1)), seat(1)));
    let socket = socket_of(&cluster.config_path(seat(1)));
    (cluster, socket)
}

/// Reads one reply line from the admin socket.
fn reply_of(stream: &UnixStream) -> Value {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// A client that sends its request one byte at a time, each byte before
/// the previous one's read timeout would fire, must be cut off once the
/// whole request's deadline passes, not kept for as long as it trickles.
#[test]
fn a_client_trickling_its_request_is_cut_off_at_the_deadline() {
    let (cluster, socket) = started_alone(23);
    let mut stream = UnixStream::connect(&socket).unwrap();
    // Waiting for an answer between bytes paces the trickle: a byte every
    // half second, well inside the server's per-request deadline of
    // seconds. Forty bytes take twenty seconds, several deadlines.
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut answer = Vec::new();
    let mut cut_off = false;
    for _ in 0..40 {
        // Leading blanks: a request that stays valid JSON, never finished.
        if stream.write_all(b" ").is_err() {
            cut_off = true;
            break;
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk) {
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                cut_off = true;
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        cut_off,
        "the server still reads a request trickled for 20 s"
    );
    // The rest of the reply, up to the server's close.
    stream.set_read_timeout(None).unwrap();
    stream.read_to_end(&mut answer).unwrap();
    let reply: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(reply["error"]["code"], "admin_timeout", "{reply}");
    assert_eq!(reply["error"]["retryable"], true, "{reply}");
    // The server is free for the next client.
    let status = keys("status", cluster.config_path(seat(1)).to_str().unwrap(), 0);
    assert_eq!(status["via"], "daemon", "{status}");
}

/// A member whose KEK comes through a `raw` command provider that, once
/// the gate is shut, says so on `entered` and waits for a line on the
/// `release` FIFO.
///
/// The test holds `release` open for reading and writing from the start,
/// so a line written there stays in the FIFO until a provider reads it: a
/// release cannot be lost by coming before the provider waits. Dropping
/// the last descriptor ends every wait still pending (the provider reads
/// end of file), so no provider is left waiting after the test.
///
/// It holds `entered` the same way, read through one buffered reader for
/// its whole life: two providers entering at once (a command and the key
/// manager's poll) may write their lines in one go, and a reader opened
/// per call would drop the second line with its buffer, or read the end
/// of file of a writer that is just closing.
struct Gated {
    cluster: ProcessCluster,
    path: PathBuf,
    gate: PathBuf,
    entered: BufReader<std::fs::File>,
    release: std::fs::File,
}

impl Gated {
    /// Starts the member, its key manager polling the provider every
    /// `poll_secs`.
    fn start(runtime: &tokio::runtime::Runtime, seed: u64, poll_secs: u64) -> Self {
        let mut cluster = ProcessCluster::provision(2, 2, &[], seed);
        let path = cluster.config_path(seat(1));
        let gates = path.parent().unwrap().join("gates");
        std::fs::create_dir(&gates).unwrap();
        let (entered, release) = (gates.join("entered"), gates.join("release"));
        for fifo in [&entered, &release] {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        }
        let gate = gates.join("gate");
        let config = std::fs::read_to_string(&path).unwrap();
        let kek = path.parent().unwrap().join("kek");
        let script = format!(
            "if [ -e {gate} ]; then echo in > {entered}; read line < {release}; fi; /bin/cat {kek}",
            gate = gate.display(),
            entered = entered.display(),
            release = release.display(),
            kek = kek.display(),
        );
        let provider = format!(
            "[key_provider]\nkind = \"command\"\nmode = \"raw\"\ntimeout_secs = 120\ncommand = {}\n",
            toml::Value::Array(vec!["/bin/sh".into(), "-c".into(), script.into()])
        );
        let start = config.find("[key_provider]").unwrap();
        let end = start + config[start..].find("\n\n").unwrap_or(config.len() - start);
        let edited = format!("{}{provider}{}", &config[..start], &config[end..]).replacen(
            "[store]\n",
            &format!("[store]\nkey_poll_interval_secs = {poll_secs}\n"),
            1,
        );
        std::fs::write(&path, edited).unwrap();
        // Read and write: opening it never waits, and it keeps the FIFO's
        // lines (a FIFO drops what it holds once nothing has it open).
        let [entered, release] = [&entered, &release].map(|fifo| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(fifo)
                .unwrap()
        });
        let entered = BufReader::new(entered);
        cluster.local.start(seat(1)).unwrap();
        runtime.block_on(wait_ready(&cluster.peers(seat(1)), seat(1)));
        Self {
            cluster,
            path,
            gate,
            entered,
            release,
        }
    }

    /// Shuts the gate: the next provider calls wait at it.
    fn shut(&self) {
        std::fs::write(&self.gate, b"").unwrap();
    }

    /// Sends a status command and returns its connection once the command
    /// is stuck inside the provider.
    fn stuck_status(&mut self) -> UnixStream {
        self.shut();
        let mut slow = UnixStream::connect(socket_of(&self.path)).unwrap();
        slow.write_all(b"{\"command\":\"status\"}\n").unwrap();
        self.entered();
        slow
    }

    /// Waits until one more provider call has entered the gate.
    fn entered(&mut self) {
        let mut signal = String::new();
        self.entered.read_line(&mut signal).unwrap();
        assert_eq!(signal, "in\n");
    }

    /// Opens the gate and lets the providers waiting at it go on, or
    /// about to wait: one line each, for more calls than any test makes.
    fn release(&self) {
        let _ = std::fs::remove_file(&self.gate);
        let _ = (&self.release).write_all(&[b'\n'; RELEASES]);
    }
}

/// Lines written to a [`Gated`] member's release FIFO: a FIFO holds 64 KiB,
/// so they never block the write.
const RELEASES: usize = 64;

/// The gate's release is not lost when it comes right after the provider
/// said it entered, before it waits.
#[test]
fn a_release_right_after_the_provider_entered_is_not_lost() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut gated = Gated::start(&runtime, 27, 86400);
    let slow = gated.stuck_status();
    gated.release();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&slow)
        .read_line(&mut line)
        .expect("the provider was not released");
    let status: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(status["ok"]["json"]["provider"]["ok"], true, "{status}");
}

/// While one client's command is stuck in a slow key provider, a second
/// client is served.
#[test]
fn a_second_client_is_served_while_a_slow_command_runs() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut gated = Gated::start(&runtime, 24, 86400);
    let slow = gated.stuck_status();
    let second = UnixStream::connect(socket_of(&gated.path)).unwrap();
    // Generous: only a server that serves one client at a time takes
    // longer, and then it takes until the provider is released.
    second
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    (&second).write_all(b"{\"command\":\"verify\"}\n").unwrap();
    let mut line = String::new();
    let served = BufReader::new(&second).read_line(&mut line);
    gated.release();
    served.expect("the second client was not served while the first command ran");
    let verified: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(verified["ok"]["findings"], false, "{verified}");
    let status = reply_of(&slow);
    assert_eq!(status["ok"]["json"]["provider"]["ok"], true, "{status}");
}

/// A signer told to stop while an admin command and a key-manager poll
/// are stuck in the provider stops all the same, within the admin
/// socket's grace of 10 s: the stuck command and poll are abandoned, the
/// command's client sees the connection close without a reply.
#[test]
fn a_signer_stops_while_an_admin_command_is_stuck() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut gated = Gated::start(&runtime, 25, 1);
    let slow = gated.stuck_status();
    // The key manager polls the provider each second: its next poll
    // enters the gate too (the two may enter in either order).
    gated.entered();
    // Should the stop wait for the stuck command, the watchdog opens the
    // gate after a minute, so the test fails instead of hanging.
    let (stopped, watch) = std::sync::mpsc::channel::<()>();
    let mut release = gated.release.try_clone().unwrap();
    let watchdog = std::thread::spawn(move || {
        let fired = watch.recv_timeout(Duration::from_secs(60)).is_err();
        if fired {
            let _ = release.write_all(&[b'\n'; RELEASES]);
        }
        fired
    });
    let stopping = std::time::Instant::now();
    let clean = gated.cluster.local.stop(seat(1)).unwrap();
    let took = stopping.elapsed();
    let _ = stopped.send(());
    let fired = watchdog.join().unwrap();
    gated.release();
    assert!(!fired, "the signer waited for the stuck provider calls");
    // The grace and the process's exit; a signer that waits for the
    // provider takes until the watchdog's minute.
    assert!(took < Duration::from_secs(25), "stopping took {took:?}");
    assert!(clean, "the signer did not exit cleanly");
    let mut rest = Vec::new();
    let _ = (&slow).read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

/// `thresig keys` whose signer stops under it, its command abandoned, is
/// told to retry (exit 2): run again once the signer has stopped, it opens
/// the store, or reaches the restarted signer.
#[test]
fn a_keys_command_cut_off_by_a_stopping_signer_is_retryable() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut gated = Gated::start(&runtime, 28, 86400);
    gated.shut();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(["keys", "status", "--json", "--config"])
        .arg(&gated.path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gated.entered();
    assert!(gated.cluster.local.stop(seat(1)).unwrap());
    gated.release();
    let out = child.wait_with_output().unwrap();
    let err = common::json_of(&out, &["keys", "status"], 2);
    assert_eq!(err["error"]["retryable"], true, "{err}");
    assert_eq!(err["error"]["code"], "admin_socket", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("without a reply"), "{err}");
    let status = keys("status", gated.path.to_str().unwrap(), 0);
    assert_eq!(status["via"], "store", "{status}");
}

/// The admin socket holds at most four connections: a fifth is answered
/// `admin_busy` (retryable) at once, and once one of the four has closed
/// the next client is served. The four held connections send nothing, so
/// each keeps its slot until the server's request deadline.
#[test]
fn a_fifth_admin_client_is_busy_until_one_of_four_closes() {
    let (_cluster, socket) = started_alone(26);
    // The server accepts in connection order, so these four hold every
    // slot before the fifth is accepted.
    let held: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let fifth = UnixStream::connect(&socket).unwrap();
    let busy = reply_of(&fifth);
    assert_eq!(busy["error"]["code"], "admin_busy", "{busy}");
    assert_eq!(busy["error"]["retryable"], true, "{busy}");
    // Each of the four holds a slot: nothing was answered on it (a server
    // with fewer slots would have answered the last of them busy).
    for (i, stream) in held.iter().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut byte = [0u8; 1];
        match (&*stream).read(&mut byte) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("held connection {i} was answered: {other:?}"),
        }
        stream.set_read_timeout(None).unwrap();
    }

    // Closing our side ends that connection's request (empty: a probe);
    // the server closes the connection after giving its slot back, so the
    // end of the stream here means the slot is free.
    let first = &held[0];
    first.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    (&*first).read_to_end(&mut rest).unwrap();
    let next = UnixStream::connect(&socket).unwrap();
    (&next).write_all(b"{\"command\":\"status\"}\n").unwrap();
    let status = reply_of(&next);
    assert_eq!(status["ok"]["json"]["provider"]["ok"], true, "{status}");
    drop(held);
}
