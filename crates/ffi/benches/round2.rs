//! The envelope's overhead: member 1's round 2 of a one-input PSBT at
//! (2,3) through `thresig_call` (the request encoded as an envelope, the
//! response envelope parsed) against `Signer::handle` called directly, on
//! two clusters provisioned alike (each round 2 commits its marker to the
//! member's store on disk). Round 1 and the signing package are made
//! outside the measurement.
//!
//! Run: `cargo bench -p thresig-ffi --bench round2 -- --measurement-time 5`
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bitcoin::hashes::Hash as _;
use common::{Member, WALLET};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand_core::OsRng;
use serde_json::{Value, json};
use thresig_cluster::config::Config;
use thresig_cluster::node::{Node, wall_clock};
use thresig_crypto::{Commitment, Seat, WalletKey};
use thresig_engine::{
    CoordinatorId, HexBytes, Request, Response, Round2Request, SigningTarget, WalletEpoch, WalletId,
};
use thresig_roast::Scheme as _;

/// A cluster with its wallet made; what round 2 needs.
struct Made {
    configs: Vec<PathBuf>,
    key: WalletKey,
    epoch: WalletEpoch,
    psbt: Vec<u8>,
    message: [u8; 32],
}

fn made(dir: &Path) -> (Made, Vec<Member>) {
    let configs = common::cluster(dir);
    let members: Vec<Member> = configs.iter().map(|c| Member::open(c)).collect();
    common::dkg(&configs, &members);
    let first = &members[0];
    let key_hex = first.ok("wallet_key", json!({"from": 1, "wallet": WALLET}))["key"].clone();
    let key = WalletKey::from_bytes(&hex::decode(key_hex.as_str().unwrap()).unwrap()).unwrap();
    let status = first.ok("status", json!({"from": 1, "wallet": WALLET}));
    let psbt = common::self_spend(first, 0x33);
    let taproot = thresig_engine::taproot_wallet(thresig_tx::Network::Regtest, &key).unwrap();
    let psbt = thresig_tx::WalletPsbt::from_base64(&psbt, &taproot).unwrap();
    let message = psbt.wallet_sighashes().unwrap()[0].sighash.to_byte_array();
    let made = Made {
        configs,
        key,
        epoch: WalletEpoch(status["epoch"].as_u64().unwrap()),
        psbt: psbt.serialize(),
        message,
    };
    (made, members)
}

/// Member 2's round-1 commitment, through its handle.
fn partner_commitment(partner: &Member) -> Commitment {
    let round1 = partner.ok("round1", json!({"from": 1, "wallet": WALLET, "inputs": 1}));
    decode(&round1["commitments"][0])
}

fn decode(hex_value: &Value) -> Commitment {
    Commitment::from_bytes(&hex::decode(hex_value.as_str().unwrap()).unwrap()).unwrap()
}

/// The round-2 request of one attempt by seats 1 and 2.
fn round2(made: &Made, mine: Commitment, partner: Commitment) -> Round2Request {
    let seat = |s: u16| Seat::try_from(s).unwrap();
    let commitments: BTreeMap<Seat, Commitment> = [(seat(1), mine), (seat(2), partner)].into();
    let package = made.key.package(&made.message, &commitments).unwrap();
    Round2Request::new(
        WalletId::new(WALLET.to_owned()).unwrap(),
        made.epoch,
        package.package().signers(),
        SigningTarget::psbt(made.psbt.clone()),
        vec![HexBytes(package.bytes().to_vec())],
    )
}

/// A round-2 request as a coordinator's envelope from seat 1.
fn envelope(request: Round2Request) -> Value {
    let Value::Object(mut fields) = serde_json::to_value(Request::Round2(request)).unwrap() else {
        unreachable!("a request is an object")
    };
    fields.remove("type");
    fields.insert("from".to_owned(), json!(1));
    json!({"version": 1, "op": "round2", "request": fields})
}

fn overhead(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (through_ffi, ffi_members) = made(&dir.path().join("ffi"));
    let (direct, mut direct_members) = made(&dir.path().join("direct"));
    // Member 1 of the second cluster is opened as the signer process opens
    // it, and called without the envelope.
    drop(direct_members.remove(0));
    let node = Node::open(&direct.configs[0]).unwrap();
    let config = Config::load(&direct.configs[0])
        .unwrap()
        .into_node(&direct.configs[0])
        .unwrap();
    let coordinator = CoordinatorId(config.identities()[&Seat::FIRST].to_bytes());
    let signer = node.engine().signer();

    let mut group = c.benchmark_group("round2_2_of_3");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("thresig_call", |b| {
        b.iter_batched(
            || {
                let mine =
                    ffi_members[0].ok("round1", json!({"from": 1, "wallet": WALLET, "inputs": 1}));
                let request = round2(
                    &through_ffi,
                    decode(&mine["commitments"][0]),
                    partner_commitment(&ffi_members[1]),
                );
                envelope(request)
            },
            |envelope| {
                let bytes = serde_json::to_vec(&envelope).unwrap();
                let response = ffi_members[0].call_bytes(&bytes);
                assert!(response.get("ok").is_some(), "{response}");
            },
            BatchSize::SmallInput,
        );
    });
    let wallet = WalletId::new(WALLET.to_owned()).unwrap();
    group.bench_function("engine", |b| {
        b.iter_batched(
            || {
                let mine = signer
                    .handle(
                        wall_clock,
                        coordinator,
                        Request::Round1(thresig_engine::Round1Request::new(wallet.clone(), 1)),
                        &mut OsRng,
                    )
                    .unwrap();
                let Response::Round1(mine) = mine else {
                    unreachable!("round 1 answers round 1")
                };
                let mine = Commitment::from_bytes(&mine.commitments[0].0).unwrap();
                Request::Round2(round2(
                    &direct,
                    mine,
                    partner_commitment(&direct_members[0]),
                ))
            },
            |request| {
                let response = signer
                    .handle(wall_clock, coordinator, request, &mut OsRng)
                    .unwrap();
                assert!(matches!(response, Response::Round2(_)));
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
    drop(node);
}

criterion_group!(benches, overhead);
criterion_main!(benches);
