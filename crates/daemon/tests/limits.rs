//! Request memory limits over real loopback sockets, driven by a raw HTTP/2
//! client authenticated as a member: streams per connection, per-method
//! sizes, counts refused before decoding, request slots per seat and the
//! deadline for receiving a body.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use raw::{
    Answer, MemberFiles, answer, call, connect, connect_with, field, grpc_request, unfinished,
};
use thresig_engine::{Round1Request, SigningTarget, WalletId};

/// The gRPC status of an OUT_OF_RANGE refusal (request too large).
const OUT_OF_RANGE: &str = "11";

fn member_files(cluster: &Cluster, name: &str) -> MemberFiles {
    MemberFiles {
        ca_cert: cluster.path("ca.pem"),
        cert: cluster.path(&format!("{name}.pem")),
        key: cluster.path(&format!("{name}.key")),
    }
}

/// An HTTP/2 connection to the server at `addr`, authenticated with the
/// member files `<name>.{pem,key}`.
async fn raw_connection(
    cluster: &Cluster,
    addr: SocketAddr,
    name: &str,
) -> h2::client::SendRequest<Bytes> {
    connect(
        &member_files(cluster, name),
        addr,
        &format!("seat-1.{CLUSTER}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_reply_holds_its_members_request_until_the_send_deadline() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder {
        // About 1 MiB of status reply.
        status_wallets: 5_000,
        ..Recorder::default()
    });
    let limits = "max_requests_per_seat = 1\nbody_timeout_ms = 2000";
    let server = start(cluster.config(limits), handler.clone()).await;
    // A client that never opens its receive window: no reply is read.
    let mut reader = h2::client::Builder::new();
    reader.initial_window_size(0);
    let mut stuck = connect_with(
        &member_files(&cluster, "seat2"),
        server.addr,
        &format!("seat-1.{CLUSTER}"),
        &reader,
    )
    .await;
    let (response, mut body) = stuck.send_request(grpc_request("Status"), false).unwrap();
    body.send_data(Bytes::from_static(&[0; 5]), true).unwrap();
    // The headers arrive once the handler has answered; the reply's data
    // waits for a window that never opens.
    let response = response.await.unwrap();
    assert_eq!(handler.peers(), vec![seat(2)]);
    // Until the reply is sent, the member's only request is still in use:
    // another call, on another connection, is refused.
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    let started = tokio::time::Instant::now();
    let refused = call(&mut send, "Status", &[]).await;
    assert_eq!(refused.status, "0");
    assert!(refused.has_error_code("overloaded"));
    assert_eq!(handler.peers(), vec![seat(2)]);
    // At the send deadline (`body_timeout_ms` after the answer) the unread
    // reply is dropped and the member is served again.
    tokio::time::sleep_until(started + Duration::from_millis(2500)).await;
    let served = call(&mut send, "Status", &[]).await;
    assert_eq!(served.status, "0");
    assert!(!served.has_error_code("overloaded"));
    assert_eq!(handler.peers(), vec![seat(2), seat(2)]);
    // The stuck stream is reset, so the server's graceful stop can end.
    drop((response, body, stuck));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_caps_the_streams_of_a_connection() {
    let cluster = Cluster::new();
    let server = start(cluster.config(""), Arc::new(Recorder::default())).await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    // One round trip, so the server's settings have arrived.
    let answer = call(&mut send, "Status", &[]).await;
    assert_eq!(answer.status, "0");
    assert_eq!(send.current_max_send_streams(), 32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_request_of_one_megabyte_is_refused_by_its_method_limit() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    // An unknown field, which a decoder would skip: only the size refuses it.
    let padding = field(15, &vec![0; 1024 * 1024]);
    let answer = call(&mut send, "Status", &padding).await;
    assert_eq!(answer.status, OUT_OF_RANGE);
    assert!(handler.peers().is_empty());
    // The same method within its limit is served.
    assert_eq!(call(&mut send, "Status", &[]).await.status, "0");
    assert_eq!(handler.peers(), vec![seat(2)]);
    server.stop().await;
}

/// Sends `message` as one `method` call from seat 2 to a fresh server and
/// returns its answer, checking that the handler never saw the call.
async fn unhandled(method: &str, message: &[u8]) -> Answer {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    let answer = call(&mut send, method, message).await;
    assert!(handler.peers().is_empty());
    server.stop().await;
    answer
}

/// The start of a round-2 request of `vault-1` over one digest.
fn round2_over_a_digest() -> Vec<u8> {
    [field(1, b"vault-1"), field(5, &field(1, &[7; 32]))].concat()
}

#[test]
fn an_error_code_is_read_from_the_replys_error_field_only() {
    let answer = |reply: Vec<u8>| {
        let mut body = vec![0, 0, 0, 0, u8::try_from(reply.len()).unwrap()];
        body.extend(reply);
        Answer {
            status: "0".to_owned(),
            body,
        }
    };
    // Error { code: "timeout", message: "overloaded" } as the reply's error.
    let error = answer(field(
        2,
        &[field(1, b"timeout"), field(3, b"overloaded")].concat(),
    ));
    assert!(error.has_error_code("timeout"));
    assert!(!error.has_error_code("overloaded"));
    assert!(!error.has_error_code("time"));
    // A result (field 1) holding the same bytes is no error.
    let result = answer(field(1, &field(1, b"timeout")));
    assert!(!result.has_error_code("timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_of_two_million_empty_commitments_is_refused_by_its_size_undecoded() {
    let mut message = field(1, b"vault-1");
    for _ in 0..2_000_000 {
        message.extend_from_slice(&field(2, &[]));
    }
    assert_eq!(unhandled("Abort", &message).await.status, OUT_OF_RANGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_of_more_commitments_than_any_round_1_within_its_size_is_refused_undecoded() {
    // 100,000 empty commitments: 200 KB, within an abort's 256 KiB, but a
    // round 1 returns at most 2048.
    let mut message = field(1, b"vault-1");
    for _ in 0..100_000 {
        message.extend_from_slice(&field(2, &[]));
    }
    let answer = unhandled("Abort", &message).await;
    assert_eq!(answer.status, "0");
    assert!(answer.has_error_code("invalid_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_beyond_one_requests_limits_is_sent_in_parts() {
    // Two round-1 vectors of 2048 inputs (an engine whose
    // `nonces_per_coordinator` allows it): 4096 commitments of 33 bytes,
    // above an abort request's count limit (2048).
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let client = server.client(&cluster.client_tls()).await;
    let commitments = (0..4096u32)
        .map(|i| thresig_engine::HexBytes(vec![u8::try_from(i % 251).unwrap(); 33]))
        .collect();
    let abort = thresig_engine::AbortRequest::new(WalletId::new("vault-1").unwrap(), commitments);
    assert_eq!(client.abort(abort).await.unwrap(), 4096);
    assert_eq!(handler.peers(), vec![seat(2), seat(2)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round2_with_more_packages_than_any_wallet_signs_is_refused_undecoded() {
    // 1 MiB, within round 2's size limit, but 500,000 packages: a wallet
    // signs at most 2048 inputs.
    let mut message = round2_over_a_digest();
    for _ in 0..500_000 {
        message.extend_from_slice(&field(6, &[]));
    }
    let answer = unhandled("Round2", &message).await;
    assert_eq!(answer.status, "0");
    assert!(answer.has_error_code("invalid_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round2_with_a_million_packed_signer_seats_is_refused_undecoded() {
    // One field of 1 MiB: a packed run of a million one-byte seat numbers,
    // which would decode into 4 MiB of `u32`s.
    let mut message = round2_over_a_digest();
    message.extend_from_slice(&field(3, &vec![1; 1024 * 1024]));
    let answer = unhandled("Round2", &message).await;
    assert_eq!(answer.status, "0");
    assert!(answer.has_error_code("invalid_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seat_cannot_take_every_request_slot() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    let (gate, control) = Gate::new();
    let limits = "max_concurrent_requests = 4\nrequest_timeout_ms = 5000";
    let server = start(cluster.config(limits), gate).await;
    let attacker = server.client(&cluster.client_tls()).await;
    let wallet = WalletId::new("vault-1").unwrap();
    let mut held = Vec::new();
    // On two wallets, so that what fills the member's share is its
    // requests, not its turns at one wallet.
    for name in ["vault-1", "vault-2"] {
        let attacker = attacker.clone();
        let wallet = WalletId::new(name).unwrap();
        held.push(tokio::spawn(async move {
            attacker.round1(Round1Request::new(wallet, 1)).await
        }));
        control.wait_entered().await;
    }
    // Half the slots are the most one seat holds: its next request is
    // refused at once, retryably, instead of queueing for a slot.
    let err = attacker
        .round1(Round1Request::new(wallet.clone(), 1))
        .await
        .unwrap_err();
    assert_eq!(refusal(&err).code.as_str(), "overloaded");
    assert!(err.is_retryable());
    // The operator sees which member is refused.
    let refused = r#"thresig_requests_refused_total{seat="2",reason="overloaded"}"#;
    let text = scrape(server.metrics_addr).await;
    assert_eq!(series(&text, refused), 1, "{text}");
    // Another member still gets a slot.
    let member = server.client(&cluster.tls_of("seat3")).await;
    let honest = tokio::spawn(async move { member.round1(Round1Request::new(wallet, 1)).await });
    control.wait_entered().await;
    for _ in 0..3 {
        control.release.send(()).unwrap();
    }
    honest.await.unwrap().unwrap();
    for call in held {
        call.await.unwrap().unwrap();
    }
    server.stop().await;
}

type Round1Call =
    tokio::task::JoinHandle<Result<thresig_engine::Round1Response, thresig_daemon::Error>>;

/// A call of `client` to round 1 on `wallet`, running.
fn round1_on(client: &thresig_daemon::SignerClient, wallet: &str) -> Round1Call {
    let client = client.clone();
    let request = Round1Request::new(WalletId::new(wallet).unwrap(), 1);
    tokio::spawn(async move { client.round1(request).await })
}

/// Four round 1 calls of `client` on `vault-1`, once all four are in the
/// handler.
async fn four_round1s_in_the_handler(
    client: &thresig_daemon::SignerClient,
    control: &GateControl,
) -> Vec<Round1Call> {
    let calls = (0..4).map(|_| round1_on(client, "vault-1")).collect();
    for _ in 0..4 {
        control.wait_entered().await;
    }
    calls
}

/// Four round 1 calls of `client` on `vault-1` in the handler
/// ([`four_round1s_in_the_handler`]) and a fifth waiting for its turn.
async fn four_running_and_one_waiting(
    server: &Running,
    client: &thresig_daemon::SignerClient,
    control: &GateControl,
) -> Vec<Round1Call> {
    let mut calls = four_round1s_in_the_handler(client, control).await;
    calls.push(round1_on(client, "vault-1"));
    turn_waits(server, 2, 1).await;
    calls
}

/// Lets the `blocked` calls held in the handler return, and checks that
/// every one of `calls` is served.
async fn release_and_serve(control: &GateControl, blocked: usize, calls: Vec<Round1Call>) {
    for _ in 0..blocked {
        control.release.send(()).unwrap();
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
}

/// Waits until `seat`'s requests made to wait for their turn at a wallet
/// number `count`: the last of them is then held in admission, short of the
/// handler.
async fn turn_waits(server: &Running, seat: u16, count: u64) {
    until(
        "a request waits for its member's turn at the wallet",
        || async { waited(server, seat, "wallet_turn").await == count },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_signing_requests_on_a_wallet_run_four_at_a_time() {
    let cluster = Cluster::new();
    let (gate, control) = Gate::new();
    let server = start(cluster.config(""), gate).await;
    let member = server.client(&cluster.client_tls()).await;
    // The fifth waits for one of the four to return.
    let calls = four_running_and_one_waiting(&server, &member, &control).await;
    assert!(control.entered.try_recv().is_err());
    control.release.send(()).unwrap();
    control.wait_entered().await;
    release_and_serve(&control, 4, calls).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_request_waiting_for_its_turn_beyond_its_time_is_refused_retryably() {
    let cluster = Cluster::new();
    let (gate, control) = Gate::new();
    let server = start(cluster.config("request_timeout_ms = 1000"), gate).await;
    let member = server.client(&cluster.client_tls()).await;
    let held = four_round1s_in_the_handler(&member, &control).await;
    // The guard only keeps a wait that never ends from hanging the test.
    let waiting = tokio::time::timeout(Duration::from_secs(30), round1_on(&member, "vault-1"));
    let err = waiting
        .await
        .expect("a request waiting for its turn outlasted its time")
        .unwrap()
        .unwrap_err();
    assert_eq!(refusal(&err).code.as_str(), "timeout", "{err}");
    assert!(err.is_retryable());
    // Refused while waiting for its turn, never handled.
    assert_eq!(waited(&server, 2, "wallet_turn").await, 1);
    assert!(control.entered.try_recv().is_err());
    for _ in 0..held.len() {
        control.release.send(()).unwrap();
    }
    // The held calls outlasted their time too.
    for call in held {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(refusal(&err).code.as_str(), "timeout", "{err}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_other_requests_on_a_wallet_run_one_at_a_time_apart_from_its_signing() {
    let cluster = Cluster::new();
    let (gate, control) = Gate::new();
    let server = start(cluster.config(""), gate).await;
    let member = server.client(&cluster.client_tls()).await;
    let wallet_key = || {
        let member = member.clone();
        tokio::spawn(async move { member.wallet_key(WalletId::new("vault-1").unwrap()).await })
    };
    let mut calls = vec![wallet_key()];
    control.wait_entered().await;
    calls.push(wallet_key());
    turn_waits(&server, 2, 1).await;
    assert!(control.entered.try_recv().is_err());
    // Its signing requests on the wallet have turns of their own.
    let signing = round1_on(&member, "vault-1");
    control.wait_entered().await;
    control.release.send(()).unwrap();
    control.wait_entered().await;
    control.release.send(()).unwrap();
    control.release.send(()).unwrap();
    signing.await.unwrap().unwrap();
    for call in calls {
        // The gate's key is not a key: the client refuses it, after the
        // handler answered.
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, thresig_daemon::Error::Malformed(_)), "{err}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_members_request_on_a_wallet_is_not_held_behind_a_members_signing_requests() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    let (gate, control) = Gate::new();
    let server = start(cluster.config(""), gate).await;
    let busy = server.client(&cluster.client_tls()).await;
    // Four running and a fifth waiting for its turn.
    let mut calls = four_running_and_one_waiting(&server, &busy, &control).await;
    // Another member's call on the wallet runs while they are held.
    let other = server.client(&cluster.tls_of("seat3")).await;
    calls.push(round1_on(&other, "vault-1"));
    control.wait_entered().await;
    let blocked = calls.len();
    release_and_serve(&control, blocked, calls).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_request_on_another_wallet_runs_while_its_turns_at_one_are_taken() {
    let cluster = Cluster::new();
    let (gate, control) = Gate::new();
    let server = start(cluster.config(""), gate).await;
    let member = server.client(&cluster.client_tls()).await;
    // Four running on one wallet and a fifth waiting for its turn there.
    let mut calls = four_running_and_one_waiting(&server, &member, &control).await;
    // Its call on another wallet runs while they are held, with no wait.
    calls.push(round1_on(&member, "vault-2"));
    control.wait_entered().await;
    assert_eq!(waited(&server, 2, "wallet_turn").await, 1);
    assert!(control.entered.try_recv().is_err());
    let blocked = calls.len();
    release_and_serve(&control, blocked, calls).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bodies_are_cut_off_and_another_member_is_served() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    let handler = Arc::new(Recorder::default());
    let server = start(cluster.config(""), handler.clone()).await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    // Streams announcing a 4 MB round 2 whose body never ends.
    let mut pending = Vec::new();
    for _ in 0..20 {
        let (next, response, body) = unfinished(send, "Round2", 4_000_000, 60_000).await;
        send = next;
        pending.push((response, body));
    }
    let member = server.client(&cluster.tls_of("seat3")).await;
    member
        .round1(Round1Request::new(WalletId::new("vault-1").unwrap(), 1))
        .await
        .unwrap();
    // The member's share of requests (8) is cut off at the body deadline,
    // the rest are refused at once; the guard only keeps a broken server
    // from hanging the test.
    let mut codes = Vec::new();
    for (response, _body) in pending {
        let answer = tokio::time::timeout(Duration::from_secs(60), answer(response))
            .await
            .expect("an unfinished body was never cut off");
        assert_eq!(answer.status, "0");
        codes.push(
            ["timeout", "overloaded"]
                .into_iter()
                .find(|c| answer.has_error_code(c)),
        );
    }
    let count = |code| codes.iter().filter(|c| **c == Some(code)).count();
    assert_eq!(
        (count("timeout"), count("overloaded")),
        (8, 12),
        "{codes:?}"
    );
    assert_eq!(handler.peers(), vec![seat(3)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_round1_nonces_are_charged_against_its_budget_per_second() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    let handler = Arc::new(Recorder::default());
    // One nonce a second: the burst is one round 1 at the input limit
    // (2048), and the next fits only 2048 s later.
    let server = start(
        cluster.config("max_round1_inputs_per_second = 1"),
        handler.clone(),
    )
    .await;
    let attacker = server.client(&cluster.client_tls()).await;
    let largest = |wallet: &str| Round1Request::new(WalletId::new(wallet).unwrap(), 2048);
    attacker.round1(largest("vault-1")).await.unwrap();
    // Charged per member, whatever the wallet: refused at once, retryably,
    // before reaching the handler.
    let Err(err) = attacker.round1(largest("vault-2")).await else {
        panic!("a second round 1 at the input limit within the second was admitted");
    };
    assert_eq!(refusal(&err).code.as_str(), "overloaded");
    assert!(err.is_retryable());
    assert_eq!(handler.peers(), vec![seat(2)]);
    // Another member's budget is its own, and other methods are not charged.
    let member = server.client(&cluster.tls_of("seat3")).await;
    member.round1(largest("vault-1")).await.unwrap();
    attacker.status().await.unwrap();
    assert_eq!(handler.peers(), vec![seat(2), seat(3), seat(2)]);
    server.stop().await;
}

/// Seat `seat`'s requests made to wait for `rate` (`request_rate`,
/// `nonce_rate`), as the server's metrics count them.
async fn waited(server: &Running, seat: u16, rate: &str) -> u64 {
    let text = scrape(server.metrics_addr).await;
    series(
        &text,
        &format!(r#"thresig_requests_waited_total{{seat="{seat}",reason="{rate}"}}"#),
    )
}

/// Waits until `done` holds, checking every 20 ms; the guard only keeps a
/// broken server from hanging the test.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let check = async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), check)
        .await
        .unwrap_or_else(|_| panic!("never: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round1_the_admission_cannot_read_to_its_end_is_refused_before_any_work() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let server = start(
        cluster.config("max_round1_inputs_per_second = 1"),
        handler.clone(),
    )
    .await;
    let mut send = raw_connection(&cluster, server.addr, "seat2").await;
    // 256 inputs, then an empty group (field 3, wire types 3 and 4), which
    // a decoder skips: unread, its nonces would be charged nothing.
    let message = [field(1, b"vault-1"), vec![0x10, 0x80, 0x02, 0x1b, 0x1c]].concat();
    for _ in 0..2 {
        let answer = call(&mut send, "Round1", &message).await;
        assert_eq!(answer.status, "0");
        assert_eq!(answer.error_code().as_deref(), Some("invalid_request"));
    }
    assert!(handler.peers().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_round2_commitments_are_charged_against_its_nonce_rate() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    let handler = Arc::new(Recorder::default());
    // One nonce a second, and half a second for a request: once round 1
    // has taken the burst, a round 2's fresh commitment would wait a
    // second, past its deadline.
    let limits = "max_round1_inputs_per_second = 1\nrequest_timeout_ms = 500";
    let server = start(cluster.config(limits), handler.clone()).await;
    let attacker = server.client(&cluster.client_tls()).await;
    attacker
        .round1(Round1Request::new(WalletId::new("vault-1").unwrap(), 2048))
        .await
        .unwrap();
    let request = round2(SigningTarget::psbt(vec![0x70; 64]));
    for _ in 0..3 {
        let err = attacker.round2(request.clone()).await.unwrap_err();
        assert_eq!(refusal(&err).code.as_str(), "overloaded", "{err}");
        assert!(err.is_retryable());
    }
    assert_eq!(handler.peers(), vec![seat(2)]);
    // Another member's rate is its own.
    let member = server.client(&cluster.tls_of("seat3")).await;
    member.round2(request).await.unwrap();
    assert_eq!(handler.peers(), vec![seat(2), seat(3)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_over_its_nonce_rate_waits_for_its_round1_and_others_are_not_held_up() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    let handler = Arc::new(Recorder::default());
    // 512 nonces a second: the burst is 2048 (four seconds' worth), so
    // after a round 1 of 2048 one of 1536 waits three seconds.
    let server = start(
        cluster.config("max_round1_inputs_per_second = 512"),
        handler.clone(),
    )
    .await;
    let attacker = server.client(&cluster.client_tls()).await;
    let round1 = |wallet: &str, inputs| Round1Request::new(WalletId::new(wallet).unwrap(), inputs);
    attacker.round1(round1("vault-1", 2048)).await.unwrap();
    let waiting = {
        let attacker = attacker.clone();
        let request = round1("vault-2", 1536);
        tokio::spawn(async move { attacker.round1(request).await })
    };
    until("the second round 1 waits", || async {
        waited(&server, 2, "nonce_rate").await == 1
    })
    .await;
    // Meanwhile another member is served.
    let member = server.client(&cluster.tls_of("seat3")).await;
    member.round1(round1("vault-1", 2048)).await.unwrap();
    assert!(!waiting.is_finished());
    // The waiting round 1 is served, not refused.
    let reply = waiting.await.unwrap().unwrap();
    assert_eq!(reply.commitments.len(), 1536);
    assert_eq!(handler.peers(), vec![seat(2), seat(3), seat(2)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_requests_beyond_its_rate_wait_then_are_served_and_others_are_not_held_up() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    let handler = Arc::new(Recorder::default());
    let limits = "max_requests_per_second_per_seat = 1";
    let server = start(cluster.config(limits), handler.clone()).await;
    let flooder = server.client(&cluster.client_tls()).await;
    // Three at once at one a second: those beyond the burst (one) wait.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let flooder = flooder.clone();
            tokio::spawn(async move { flooder.status().await })
        })
        .collect();
    until("a request waits for its turn", || async {
        waited(&server, 2, "request_rate").await >= 1
    })
    .await;
    // Another member's rate is its own.
    let member = server.client(&cluster.tls_of("seat3")).await;
    member.status().await.unwrap();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let mut peers = handler.peers();
    peers.sort();
    assert_eq!(peers, vec![seat(2), seat(2), seat(2), seat(3)]);
    assert!(waited(&server, 2, "request_rate").await >= 1);
    assert_eq!(waited(&server, 3, "request_rate").await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_their_rate_when_the_signer_stops_are_refused_retryably() {
    let cluster = Cluster::new();
    let handler = Arc::new(Recorder::default());
    let limits = "max_requests_per_second_per_seat = 1\nrequest_timeout_ms = 120000";
    let mut server = start(cluster.config(limits), handler.clone()).await;
    let flooder = server.client(&cluster.client_tls()).await;
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let flooder = flooder.clone();
            tokio::spawn(async move { flooder.status().await })
        })
        .collect();
    // Every call is served or waiting for its turn (up to 19 s).
    until("every request is served or waiting", || async {
        handler.peers().len() as u64 + waited(&server, 2, "request_rate").await == 20
    })
    .await;
    server.shutdown.take().unwrap().send(()).unwrap();
    // The guard is generous: the waits end at the stop, not at their turn.
    tokio::time::timeout(Duration::from_secs(10), &mut server.task)
        .await
        .expect("the server stops while requests wait for their rate")
        .unwrap()
        .unwrap();
    let mut served = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => served += 1,
            Err(err) => {
                assert_eq!(refusal(&err).code.as_str(), "overloaded", "{err}");
                assert!(err.is_retryable());
                assert!(err.to_string().contains("shutting down"), "{err}");
            }
        }
    }
    assert_eq!(served, handler.peers().len());
    assert!(served < 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_slot_when_the_signer_stops_is_refused_retryably() {
    let cluster = Cluster::new();
    cluster.add_member(seat(3), "seat3");
    cluster.add_member(seat(4), "seat4");
    let (gate, control) = Gate::new();
    // Two slots, one per member, and a request time far beyond the guard
    // below: a request waiting for a slot would wait that long.
    let limits = "max_concurrent_requests = 2\nrequest_timeout_ms = 120000";
    let mut server = start(cluster.config(limits), gate).await;
    let round1 = |client: thresig_daemon::SignerClient, wallet: &str| {
        let request = Round1Request::new(WalletId::new(wallet).unwrap(), 1);
        tokio::spawn(async move { client.round1(request).await })
    };
    let mut held = Vec::new();
    for name in ["seat2", "seat3"] {
        held.push(round1(
            server.client(&cluster.tls_of(name)).await,
            "vault-1",
        ));
        control.wait_entered().await;
    }
    // Two round 1s of a member with one request permit: one takes it and
    // waits for a slot, the other is refused at once. Which one is refused
    // tells which one waits.
    let late = server.client(&cluster.tls_of("seat4")).await;
    let mut calls = [round1(late.clone(), "vault-1"), round1(late, "vault-2")];
    let first_answered = tokio::time::timeout(Duration::from_secs(30), async {
        let [first, second] = &mut calls;
        tokio::select! {
            refused = first => (0, refused),
            refused = second => (1, refused),
        }
    })
    .await
    .expect("one of two requests beyond the member's permit is refused at once");
    let (index, refused) = first_answered;
    let [first, second] = calls;
    let waiting = if index == 0 { second } else { first };
    let err = refused.unwrap().unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("already has 1 requests"), "{err}");
    server.shutdown.take().unwrap().send(()).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("a request waiting for a slot is answered once the signer stops")
        .unwrap();
    let Err(err) = answer else {
        panic!("a request was served while the signer stopped");
    };
    assert_eq!(refusal(&err).code.as_str(), "overloaded", "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("shutting down"), "{err}");
    for _ in 0..held.len() {
        control.release.send(()).unwrap();
    }
    for call in held {
        call.await.unwrap().unwrap();
    }
    server.task.await.unwrap().unwrap();
}
