//! Three daemons on loopback, each serving its own engine `Signer` over
//! real mutual TLS: a DKG and a signing session driven through
//! `SignerClient`s, and the refusals a coordinator meets.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use thresig_crypto::{Commitment, SignatureShare, SigningPackage, aggregate, verify, verify_share};
use thresig_daemon::{EngineHandler, Error, Recovery, SignerClient};
use thresig_engine::test_util::cluster::{Keys, Spec};
use thresig_engine::test_util::{cluster, dkg, identity};
use thresig_engine::{
    AbortRequest, Digest, DkgProposal, DkgSessionId, HexBytes, IdentityKey, Limits, Round1Request,
    Round2Request, Signer, SigningTarget, WalletStateKind,
};

/// The wallet's members: seats 1 to 3.
const MEMBERS: u16 = 3;
/// A cluster member that holds no seat of the wallet.
const OUTSIDER: u16 = 4;
/// A seat whose certificate the CA issued but which the cluster roster
/// lacks.
const STRANGER: u16 = 5;
const SESSION: DkgSessionId = DkgSessionId([0x5e; 32]);
const MESSAGE: [u8; 32] = [0x42; 32];

fn wallet_roster() -> Vec<IdentityKey> {
    (1..=MEMBERS).map(identity).collect()
}

/// The members' engines, seat 1 first: one 2-of-3 wallet awaiting its DKG
/// that may sign raw digests, each on its own encrypted store.
fn engines() -> Vec<Signer<cluster::TestStore>> {
    let wallet = Spec::new(vault().as_str(), Keys::None);
    cluster::Cluster::with_wallets(7, 2, MEMBERS, &[wallet], Limits::default()).into_signers()
}

struct Engines {
    tls: Cluster,
    servers: Vec<Running>,
}

impl Engines {
    /// Starts the three members' daemons; the cluster roster holds seats
    /// 1 to 4, and certificates exist for seats 1 to 5.
    async fn start() -> Self {
        let tls = Cluster::new();
        for s in 3..=STRANGER {
            tls.add_member(seat(s), &format!("seat{s}"));
        }
        let roster: BTreeMap<_, _> = (1..=OUTSIDER).map(|s| (seat(s), identity(s))).collect();
        let mut servers = Vec::new();
        for (s, engine) in (1..=MEMBERS).zip(engines()) {
            let handler = Arc::new(EngineHandler::new(engine, roster.clone()));
            let config = tls.member_config(&format!("seat{s}"), "");
            servers.push(start(config, handler).await);
        }
        Self { tls, servers }
    }

    /// Clients of the member at cluster seat `coordinator`, one per signer
    /// (index `i` is seat `i + 1`).
    async fn clients(&self, coordinator: u16) -> Vec<SignerClient> {
        let tls = self.tls.tls_of(&format!("seat{coordinator}"));
        let mut clients = Vec::new();
        for (s, server) in (1..=MEMBERS).zip(&self.servers) {
            clients.push(
                SignerClient::connect(&tls, server.addr, seat(s))
                    .await
                    .unwrap(),
            );
        }
        clients
    }

    async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

/// Runs the wallet's DKG through `clients` (start, round 2, finish, every
/// confirmation to every signer).
async fn run_dkg(clients: &[SignerClient]) {
    let proposal = DkgProposal::new(SESSION, vault(), 2, wallet_roster());
    let mut round1 = Vec::new();
    for client in clients {
        round1.push(client.dkg_start(proposal.clone()).await.unwrap());
    }
    let mut round2 = Vec::new();
    for (s, client) in (1..=MEMBERS).zip(clients) {
        let peers: Vec<_> = round1
            .iter()
            .filter(|m| m.sender.get() != s)
            .cloned()
            .collect();
        let sealed = client.dkg_round2(vault(), SESSION, peers).await.unwrap();
        assert_eq!(sealed.len(), usize::from(MEMBERS) - 1);
        round2.extend(sealed);
    }
    let mut inbox = dkg::route(round2);
    let mut confirmations = Vec::new();
    for (s, client) in (1..=MEMBERS).zip(clients) {
        let mine = inbox.remove(&cluster::seat(s)).unwrap();
        confirmations.push(client.dkg_finish(vault(), SESSION, mine).await.unwrap());
    }
    // A signer counts its own confirmation when it finishes; it activates
    // the wallet with the last of the others'.
    for client in clients {
        let mut confirmed = 1;
        for confirmation in &confirmations {
            let status = client
                .dkg_confirm(vault(), confirmation.clone())
                .await
                .unwrap();
            assert!(status.confirmed >= confirmed);
            confirmed = status.confirmed;
            assert_eq!(status.needed, usize::from(MEMBERS));
            assert_eq!(status.active, confirmed == usize::from(MEMBERS));
        }
        assert_eq!(confirmed, usize::from(MEMBERS));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dkg_and_a_signature_run_through_the_daemons() {
    let engines = Engines::start().await;
    let clients = engines.clients(1).await;
    run_dkg(&clients).await;

    // Every member reports the wallet active under the same output key.
    let mut output_keys = Vec::new();
    for (s, client) in (1..=MEMBERS).zip(&clients) {
        let wallets = client.status().await.unwrap();
        assert_eq!(wallets.len(), 1);
        let status = &wallets[0];
        assert_eq!(status.wallet, vault());
        assert_eq!(status.state, WalletStateKind::Active);
        assert_eq!(
            (status.threshold, status.members, status.seat),
            (2, 3, seat(s))
        );
        output_keys.push(status.output_key.clone().unwrap());
    }
    assert!(output_keys.iter().all(|k| *k == output_keys[0]));
    let key = clients[2].wallet_key(vault()).await.unwrap();
    assert_eq!(
        HexBytes(key.output_key().to_bytes().to_vec()),
        output_keys[0]
    );

    // Round 1 at seats 1 and 2, concurrently over cloned clients.
    let signers = [1u16, 2];
    let calls: Vec<_> = signers
        .iter()
        .map(|&s| {
            let client = clients[usize::from(s) - 1].clone();
            tokio::spawn(async move { client.round1(Round1Request::new(vault(), 1)).await })
        })
        .collect();
    let mut commitments = BTreeMap::new();
    let mut epoch = None;
    for (s, call) in signers.iter().zip(calls) {
        let reply = call.await.unwrap().unwrap();
        assert_eq!(reply.seat, seat(*s));
        assert_eq!(reply.commitments.len(), 1);
        epoch = Some(reply.epoch);
        let commitment = Commitment::from_bytes(&reply.commitments[0].0).unwrap();
        commitments.insert(seat(*s), commitment);
    }
    let package = SigningPackage::new(&commitments, &MESSAGE).unwrap();
    let request = Round2Request::new(
        vault(),
        epoch.unwrap(),
        signers.iter().copied().map(seat).collect(),
        SigningTarget::digests(vec![Digest(MESSAGE)]),
        vec![HexBytes(package.to_bytes())],
    );

    // Round 2 at both; every share verifies, and so does their aggregate.
    let mut shares = BTreeMap::new();
    for s in signers {
        let reply = clients[usize::from(s) - 1]
            .round2(request.clone())
            .await
            .unwrap();
        assert_eq!(reply.seat, seat(s));
        let share = SignatureShare::from_bytes(&reply.shares[0].0).unwrap();
        verify_share(&key, &package, seat(s), &share).unwrap();
        shares.insert(seat(s), share);
    }
    let signature = aggregate(&key, &package, &shares).unwrap();
    verify(&key.output_key(), &MESSAGE, &signature).unwrap();

    // Seat 3's unused round-1 vector is destroyed by an abort, once.
    let reply = clients[2]
        .round1(Round1Request::new(vault(), 2))
        .await
        .unwrap();
    let abort = AbortRequest::new(vault(), reply.commitments[..1].to_vec());
    assert_eq!(clients[2].abort(abort.clone()).await.unwrap(), 2);
    assert_eq!(clients[2].abort(abort).await.unwrap(), 0);
    engines.stop().await;
}

/// Asserts that `result` is the signer's terminal `code` refusal.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, Error>, code: &str) {
    let err = result.unwrap_err();
    assert_eq!(refusal(&err).code.as_str(), code, "{err}");
    assert_eq!(refusal(&err).recovery, Recovery::Terminal);
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_outside_the_wallet_or_the_cluster_is_refused() {
    let engines = Engines::start().await;
    for coordinator in [OUTSIDER, STRANGER] {
        for client in engines.clients(coordinator).await {
            let round1 = client.round1(Round1Request::new(vault(), 1)).await;
            assert_refused(round1, "coordinator_not_member");
            let proposal = DkgProposal::new(SESSION, vault(), 2, wallet_roster());
            assert_refused(client.dkg_start(proposal).await, "coordinator_not_member");
            assert_refused(client.wallet_key(vault()).await, "coordinator_not_member");
            if coordinator == OUTSIDER {
                // A cluster member sees none of the wallets it is not in.
                assert!(client.status().await.unwrap().is_empty());
            } else {
                assert_refused(client.status().await, "coordinator_not_member");
            }
        }
    }
    engines.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_with_another_threshold_is_refused_by_every_signer() {
    let engines = Engines::start().await;
    let clients = engines.clients(1).await;
    let proposal = DkgProposal::new(SESSION, vault(), 3, wallet_roster());
    for client in &clients {
        assert_refused(client.dkg_start(proposal.clone()).await, "dkg_mismatch");
    }
    // The wallet still waits for its DKG, which the right proposal runs.
    for client in &clients {
        let wallets = client.status().await.unwrap();
        assert_eq!(wallets[0].state, WalletStateKind::DkgPending);
        let err = client.wallet_key(vault()).await.unwrap_err();
        assert_eq!(refusal(&err).code.as_str(), "wallet_not_active");
        assert!(err.is_retryable());
    }
    engines.stop().await;
}
