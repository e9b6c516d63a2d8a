//! The signer's one entry point, `Signer::handle`: every request kind is
//! refused to a coordinator outside the wallet before anything changes, and
//! members get each kind's answer.

mod common;

use std::collections::BTreeMap;

use common::dkg::{activate_everywhere, confirmations, part1, part2, proposal, state};
use common::*;
use thresig_crypto::Commitment;
use thresig_engine::{
    AbortRequest, CoordinatorId, Error, ErrorCode, HexBytes, Limits, Request, Response,
    Round1Request, WalletStateKind,
};

/// A coordinator that is in no wallet's roster.
fn stranger() -> CoordinatorId {
    CoordinatorId(identity(9).to_bytes())
}

/// Sends `request` from `from` to seat 1 and checks that it is refused as
/// from a non-member and that seat 1's wallets and the RNG are untouched
/// (no nonce or DKG secret was drawn).
fn refused_unchanged(c: &mut Cluster, from: CoordinatorId, request: Request) {
    let shown = format!("{request:?}");
    let before = c.member(1).signer().wallets().unwrap();
    let drawn = c.rng.get_word_pos();
    let now = c.now;
    let err = c.members[0].signer().handle(now, from, request, &mut c.rng);
    let err = err.expect_err(&shown);
    assert!(
        matches!(err, Error::CoordinatorNotMember { .. }),
        "{shown}: {err:?}"
    );
    assert_eq!(err.code(), ErrorCode::CoordinatorNotMember, "{shown}");
    assert_eq!(c.rng.get_word_pos(), drawn, "{shown}: randomness drawn");
    let after = c.member(1).signer().wallets().unwrap();
    assert_eq!(after, before, "{shown}: a wallet changed");
}

fn encoded(commitments: &[Commitment]) -> Vec<HexBytes> {
    commitments.iter().map(|c| HexBytes(c.to_bytes())).collect()
}

#[test]
fn a_non_member_is_refused_every_signing_request_and_nothing_changes() {
    let mut c = Cluster::new(35, 2, 3, &["w1"], Limits::default());
    // A member's attempt in progress: live nonces at seats 1 and 2.
    let comms: BTreeMap<u16, Vec<Commitment>> = [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, COORD_A, "w1", 1).unwrap()))
        .collect();
    let round2 = c.request("w1", &comms, &[[7; 32]]);
    // One request of each kind that addresses a wallet (the listing, which
    // addresses none, is checked below).
    let table = [
        Request::Round1(Round1Request::new(wid("w1"), 1)),
        Request::Round2(round2.clone()),
        Request::Abort(AbortRequest::new(wid("w1"), encoded(&comms[&1]))),
        Request::Status { wallet: wid("w1") },
        Request::WalletKey { wallet: wid("w1") },
        // An unknown wallet gets the same answer (no probing for ids).
        Request::Status {
            wallet: wid("other"),
        },
    ];
    for request in table {
        refused_unchanged(&mut c, stranger(), request);
    }
    let now = c.now;
    let listing = c.members[0]
        .signer()
        .handle(now, stranger(), Request::ListWallets, &mut c.rng)
        .unwrap();
    assert_eq!(listing, Response::Wallets { wallets: vec![] });
    // The member's attempt still signs: its nonces were neither drawn
    // anew, aborted nor spent by the refused requests.
    let shares: BTreeMap<u16, Vec<Vec<u8>>> = [1, 2]
        .into_iter()
        .map(|s| (s, c.round2(s, &round2).unwrap()))
        .collect();
    assert_eq!(c.aggregate("w1", &round2, &shares).len(), 1);
}

#[test]
fn a_non_member_is_refused_every_dkg_request_and_nothing_changes() {
    let mut c = Cluster::unkeyed(36, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    // A member's DKG in progress: every seat in part 1.
    let round1 = part1(&mut c, &p);
    let other = proposal(&c, "w", 2);
    let table = [
        Request::DkgStart(other),
        Request::DkgRound2 {
            wallet: wid("w"),
            session: p.session,
            round1: round1[1..].to_vec(),
        },
        Request::DkgFinish {
            wallet: wid("w"),
            session: p.session,
            round2: Vec::new(),
        },
        Request::DkgConfirm {
            wallet: wid("w"),
            confirmation: round1[1].clone(),
        },
        Request::DkgCancel {
            wallet: wid("w"),
            session: p.session,
            abandon: false,
            abandonments: Vec::new(),
        },
        Request::DkgCancel {
            wallet: wid("w"),
            session: p.session,
            abandon: true,
            abandonments: Vec::new(),
        },
    ];
    for request in table {
        refused_unchanged(&mut c, stranger(), request);
    }
    assert_eq!(state(&c, 1, "w"), WalletStateKind::DkgPending);
    // The member's session was neither replaced, advanced nor cancelled:
    // its DKG completes.
    let inbox = part2(&mut c, &p, &round1);
    let confirmed = confirmations(&c, &p, &inbox);
    activate_everywhere(&c, "w", &confirmed);
    assert_eq!(state(&c, 1, "w"), WalletStateKind::Active);
}

#[test]
fn a_round1_request_is_answered_through_the_entry_point() {
    let mut c = Cluster::new(30, 2, 3, &["w1"], Limits::default());
    let req = Request::Round1(Round1Request::new(wid("w1"), 2));
    let now = c.now;
    let reply = c.members[0]
        .signer()
        .handle(now, coordinator(COORD_A), req, &mut c.rng)
        .unwrap();
    let Response::Round1(r) = reply else {
        panic!("unexpected reply {reply:?}")
    };
    assert_eq!(r.commitments.len(), 2);
    assert_eq!(r.seat, seat(1));
    assert_eq!(r.wallet, wid("w1"));
}

#[test]
fn a_refusal_carries_its_code_and_class() {
    let mut c = Cluster::new(31, 2, 3, &["w1"], Limits::default());
    let now = c.now;
    let too_many = Request::Round1(Round1Request::new(
        wid("w1"),
        Limits::default().max_inputs + 1,
    ));
    let err = c.members[0]
        .signer()
        .handle(now, coordinator(COORD_A), too_many, &mut c.rng)
        .unwrap_err();
    assert!(matches!(err, Error::TooManyInputs { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert_eq!(err.recovery(), ErrorCode::InvalidRequest.recovery());
    let unknown = Request::Status {
        wallet: wid("other"),
    };
    let err = c.members[0]
        .signer()
        .handle(now, coordinator(COORD_A), unknown, &mut c.rng)
        .unwrap_err();
    // An unknown wallet is answered as one the caller is not a member of.
    assert_eq!(err.code(), ErrorCode::CoordinatorNotMember);
    assert_eq!(err.recovery(), thresig_store::Recovery::Terminal);
}

#[test]
fn status_and_listing_show_each_wallet() {
    let mut c = Cluster::new(32, 2, 3, &["w1", "w2"], Limits::default());
    c.round1(2, COORD_A, "w2", 3).unwrap();
    let list = c.member(2).signer().wallets().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].wallet, wid("w2"));
    assert_eq!(list[1].state, WalletStateKind::Active);
    assert_eq!(list[1].live_nonces, 3);
    assert_eq!(list[1].seat, seat(2));
    let key = c.keys[&wid("w2")].output_key().to_bytes().to_vec();
    assert_eq!(list[1].output_key.as_ref().unwrap().0, key);
}

#[test]
fn a_listing_shows_only_the_wallets_the_coordinator_is_a_member_of() {
    let mut c = Cluster::new(33, 2, 3, &["w1", "w2"], Limits::default());
    let now = c.now;
    let listed = |c: &mut Cluster, from| {
        let reply = c.members[0]
            .signer()
            .handle(now, from, Request::ListWallets, &mut c.rng)
            .unwrap();
        let Response::Wallets { wallets } = reply else {
            panic!("not a listing: {reply:?}")
        };
        wallets.into_iter().map(|w| w.wallet).collect::<Vec<_>>()
    };
    assert_eq!(listed(&mut c, coordinator(COORD_A)), [wid("w1"), wid("w2")]);
    assert!(listed(&mut c, stranger()).is_empty());
}

#[test]
fn a_member_gets_the_wallet_key_record_and_a_stranger_does_not() {
    let mut c = Cluster::new(34, 2, 3, &["w1"], Limits::default());
    let now = c.now;
    let request = || Request::WalletKey { wallet: wid("w1") };
    let reply = c.members[0]
        .signer()
        .handle(now, coordinator(COORD_A), request(), &mut c.rng)
        .unwrap();
    let Response::WalletKey { key } = reply else {
        panic!("not a key: {reply:?}")
    };
    let decoded = thresig_crypto::WalletKey::from_bytes(&key.0).unwrap();
    assert_eq!(decoded.output_key(), c.keys[&wid("w1")].output_key());
    let err = c.members[0]
        .signer()
        .handle(now, stranger(), request(), &mut c.rng)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::CoordinatorNotMember);
}
