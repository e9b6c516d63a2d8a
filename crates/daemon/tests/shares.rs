//! `thresig_shares_released_total` counts the shares a member received: a
//! round-2 answer that comes after the request's deadline, which the
//! member never gets, is not counted. (Its own test binary: the counter is
//! process-wide, and no other test here releases shares.)

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use common::*;
use thresig_daemon::{SignerError, SignerHandler};
use thresig_engine::{Digest, Request, Response, SigningTarget};

const SHARES: &str = "thresig_shares_released_total";
const ROUND2_OK: &str = r#"thresig_requests_total{method="round2",outcome="ok"}"#;

/// A handler whose round 2 reports that it started, then waits for the
/// test's go-ahead before answering as a [`Recorder`] does: one share per
/// package.
struct GatedRound2 {
    inner: Recorder,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl SignerHandler for GatedRound2 {
    fn handle(
        &self,
        peer: thresig_crypto::Seat,
        request: Request,
    ) -> Result<Response, SignerError> {
        if matches!(request, Request::Round2(_)) {
            self.entered.lock().unwrap().send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        self.inner.handle(peer, request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round2_answer_past_its_deadline_releases_no_share_a_member_sees() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let handler = Arc::new(GatedRound2 {
        inner: Recorder::default(),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let cluster = Cluster::new();
    let server = start(cluster.config("request_timeout_ms = 200"), handler).await;
    let client = server.client(&cluster.client_tls()).await;
    let target = || SigningTarget::digests(vec![Digest([7; 32])]);

    // The handler holds the first round 2 past its deadline: the member
    // gets `timeout`, and the answer the handler gives afterwards is
    // thrown away.
    let late = client.round2(round2(target())).await;
    assert_eq!(refusal(&late.unwrap_err()).code.as_str(), "timeout");
    tokio::task::block_in_place(|| entered.recv().unwrap());
    release.send(()).unwrap();
    // The second is answered in time, and the member gets its share.
    release.send(()).unwrap();
    let answered = client.round2(round2(target())).await.unwrap();
    tokio::task::block_in_place(|| entered.recv().unwrap());

    let text = scrape(server.metrics_addr).await;
    assert_eq!(series(&text, ROUND2_OK), 1);
    assert_eq!(
        series(&text, SHARES),
        u64::try_from(answered.shares.len()).unwrap()
    );
    server.stop().await;
}
