//! The versioned JSON envelope: decoding limits, dispatch and error bodies.

mod common;

use common::*;
use thresig_engine::{
    API_VERSION, Envelope, Error, ErrorCode, Limits, Reply, Request, Response, Round1Request,
    WalletStateKind, decode_request, encode_reply,
};

fn encode(req: &Request, version: u16) -> Vec<u8> {
    let mut env = Envelope::new(req.clone());
    env.version = version;
    serde_json::to_vec(&env).unwrap()
}

#[test]
fn a_round1_request_travels_as_json_and_back() {
    let mut c = Cluster::new(30, 2, 3, &["w1"], Limits::default());
    let req = Request::Round1(Round1Request::new(wid("w1"), 2));
    let bytes = encode(&req, API_VERSION);
    let decoded = decode_request(&bytes, &Limits::default()).unwrap();
    assert_eq!(decoded, req);
    let now = c.now;
    let result = c.members[0]
        .signer()
        .handle(now, coordinator(COORD_A), decoded, &mut c.rng);
    let reply: Envelope<Reply> = serde_json::from_slice(&encode_reply(result.into())).unwrap();
    assert_eq!(reply.version, API_VERSION);
    let Reply::Ok(Response::Round1(r)) = reply.body else {
        panic!("unexpected reply {:?}", reply.body)
    };
    assert_eq!(r.commitments.len(), 2);
    assert_eq!(r.seat, seat(1));
}

#[test]
fn limits_and_versions_are_enforced_at_decode() {
    let req = Request::ListWallets;
    let limits = Limits::default();
    let err = decode_request(&encode(&req, API_VERSION + 1), &limits).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                got: 2,
                supported: 1
            }
        ),
        "{err:?}"
    );
    let mut small = limits.clone();
    small.max_request_bytes = 10;
    let err = decode_request(&encode(&req, API_VERSION), &small).unwrap_err();
    assert!(
        matches!(err, Error::RequestTooLarge { max: 10, .. }),
        "{err:?}"
    );
    let err = decode_request(b"{\"version\":1,\"body\":{\"type\":\"nope\"}}", &limits).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
}

#[test]
fn errors_travel_with_code_and_class() {
    let mut c = Cluster::new(31, 2, 3, &["w1"], Limits::default());
    let req = Request::Status {
        wallet: wid("other"),
    };
    let now = c.now;
    let result = c.members[0]
        .signer()
        .handle(now, coordinator(COORD_A), req, &mut c.rng);
    let json: serde_json::Value = serde_json::from_slice(&encode_reply(result.into())).unwrap();
    // Over the network an unknown wallet is answered as one the caller is
    // not a member of (no probing for wallet ids).
    assert_eq!(json["body"]["error"]["code"], "coordinator_not_member");
    assert_eq!(json["body"]["error"]["recovery"], "terminal");
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
    let stranger = thresig_engine::CoordinatorId([0xee; 32]);
    assert!(listed(&mut c, stranger).is_empty());
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
    let stranger = thresig_engine::CoordinatorId([0xee; 32]);
    let err = c.members[0]
        .signer()
        .handle(now, stranger, request(), &mut c.rng)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::CoordinatorNotMember);
}
