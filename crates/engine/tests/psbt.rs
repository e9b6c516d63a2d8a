//! Taproot PSBTs signed through the engine: the signer derives every
//! sighash itself, checks the wallet's policy, charges the rate ledger in
//! the marker's unit, and the result passes Bitcoin Core's interpreter.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc::channel;
use std::time::Duration;

use bitcoin::absolute::LockTime;
use bitcoin::{Amount, OutPoint, TapSighashType, Transaction, TxOut};
use common::psbt::*;
use common::*;
use thresig_consensus::verify_with_core;
use thresig_crypto::{Commitment, MerkleRoot, ScriptTree, Signature};
use thresig_engine::{
    Error, ErrorCode, Limits, Round1Request, Signer, SigningTarget, WalletStateKind,
};
use thresig_tx::{
    Destination, InputIndex, Payment, PolicyConfig, Rule, Violation, WalletPsbt, build_psbt,
};

/// [`policy`] with at most one transaction per minute for each coordinator
/// of a 2-of-n wallet (two for the wallet, so one each by default).
fn one_per_minute() -> PolicyConfig {
    let mut p = policy();
    p.max_per_minute = Some(2);
    p
}

/// Signs `psbt` through the engine at `seats`: round 1, round 2 and
/// aggregation (each signature verified under the output key).
fn sign(
    c: &mut Cluster,
    wallet: &str,
    seats: &[u16],
    psbt: &WalletPsbt,
) -> Result<Vec<Signature>, Error> {
    sign_by(c, COORD_A, wallet, seats, psbt)
}

/// [`sign`], requested by coordinator `from`.
fn sign_by(
    c: &mut Cluster,
    from: u16,
    wallet: &str,
    seats: &[u16],
    psbt: &WalletPsbt,
) -> Result<Vec<Signature>, Error> {
    let messages = sighashes(psbt);
    let comms: BTreeMap<u16, Vec<Commitment>> = seats
        .iter()
        .map(|s| (*s, c.round1(*s, from, wallet, messages.len()).unwrap()))
        .collect();
    let req = c.request_for(
        wallet,
        &comms,
        &messages,
        SigningTarget::psbt(psbt.serialize()),
    );
    let mut rng = c.rng.clone();
    let mut shares = BTreeMap::new();
    for s in seats {
        let reply = c
            .member(*s)
            .signer()
            .round2(c.now, coordinator(from), &req, &mut rng)?;
        shares.insert(*s, reply.shares.into_iter().map(|h| h.0).collect());
    }
    c.rng = rng;
    Ok(c.aggregate(wallet, &req, &shares))
}

/// Inserts the signatures (with `suffix` appended: the sighash type byte
/// of a non-default type) and extracts the transaction.
fn finalize(mut psbt: WalletPsbt, sigs: &[Signature], suffix: &[u8]) -> Transaction {
    let inputs = psbt.wallet_inputs().to_vec();
    assert_eq!(inputs.len(), sigs.len());
    for (input, sig) in inputs.into_iter().zip(sigs) {
        let bytes = [&sig.to_bytes().unwrap()[..], suffix].concat();
        psbt.insert_signature(input, &bytes).unwrap();
    }
    psbt.extract_transaction().unwrap()
}

/// Core accepts `tx`, and refuses it with one byte of input `victim`'s
/// signature flipped.
fn assert_core_accepts_only_untampered(tx: &Transaction, prevouts: &[TxOut], victim: usize) {
    verify_with_core(tx, prevouts).unwrap();
    let mut bad = tx.clone();
    let mut sig = bad.input[victim].witness.to_vec().remove(0);
    sig[10] ^= 0x01;
    bad.input[victim].witness = bitcoin::Witness::from_slice(&[sig]);
    assert_eq!(verify_with_core(&bad, prevouts).unwrap_err().input, victim);
}

#[test]
fn engine_signed_transactions_pass_core_and_tampered_ones_fail() {
    let specs = [
        Spec::new("dkg", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy()),
        Spec::new("dkg-root", Keys::Dkg(ScriptTree::Root(MerkleRoot([3; 32])))).policy(policy()),
        Spec::new("imported", Keys::Imported(7, ScriptTree::KeyPathOnly)).policy(policy()),
        Spec::new(
            "imported-root",
            Keys::Imported(9, ScriptTree::Root(MerkleRoot([4; 32]))),
        )
        .policy(policy()),
    ];
    let mut c = Cluster::with_wallets(30, 3, 5, &specs, Limits::default());
    let mut salt = 0;
    for spec in &specs {
        for inputs in [1, 6] {
            salt += 1;
            let w = taproot(&c, &spec.name);
            let psbt = spend(&w, inputs, salt);
            let sigs = sign(&mut c, &spec.name, &[1, 3, 5], &psbt).unwrap();
            let prevouts = psbt.prevouts().to_vec();
            let tx = finalize(psbt, &sigs, &[]);
            assert_core_accepts_only_untampered(&tx, &prevouts, inputs - 1);
        }
    }
}

#[test]
fn sighash_all_is_signed_and_none_single_anyonecanpay_are_refused_by_default() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(31, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let with_type = |ty: TapSighashType, salt| {
        let mut raw = spend(&w, 2, salt).psbt().clone();
        for input in &mut raw.inputs {
            input.sighash_type = Some(ty.into());
        }
        WalletPsbt::from_psbt(raw, &w).unwrap()
    };
    for (salt, ty) in [
        TapSighashType::None,
        TapSighashType::Single,
        TapSighashType::AllPlusAnyoneCanPay,
        TapSighashType::NonePlusAnyoneCanPay,
        TapSighashType::SinglePlusAnyoneCanPay,
    ]
    .into_iter()
    .enumerate()
    {
        let psbt = with_type(ty, u8::try_from(salt).unwrap() + 1);
        let err = sign(&mut c, "w", &[1, 2], &psbt).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PolicyDenied);
        let (rule, violation) = denial(&err);
        assert_eq!(rule, Rule::SighashType, "{ty:?}");
        assert!(
            matches!(violation, Violation::SighashType { input: InputIndex(0), sighash_type } if sighash_type == ty),
            "{violation:?}"
        );
    }
    let psbt = with_type(TapSighashType::All, 9);
    let sigs = sign(&mut c, "w", &[1, 2], &psbt).unwrap();
    let prevouts = psbt.prevouts().to_vec();
    let tx = finalize(psbt, &sigs, &[TapSighashType::All as u8]);
    verify_with_core(&tx, &prevouts).unwrap();
}

#[test]
fn requests_that_differ_from_the_psbt_release_nothing() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(32, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let psbt = spend(&w, 3, 1);
    let bytes = psbt.serialize();
    let honest = sighashes(&psbt);

    let mut wrong = honest.clone();
    wrong[1][0] ^= 1;
    let (req, comms) = psbt_request(&mut c, "w", &[1, 2], &bytes, &wrong);
    let err = c.round2(1, &req).unwrap_err();
    assert!(
        matches!(err, Error::MessageMismatch { input: 1, .. }),
        "{err:?}"
    );
    assert!(c.member(1).marker("w", &comms[&1][0]).is_none());
    // The refused request spent no nonce: the honest one signs with them.
    let target = SigningTarget::psbt(bytes.clone());
    let ok = c.request_for("w", &comms, &honest, target);
    assert_eq!(c.round2(1, &ok).unwrap().len(), 3);

    // A subset or a superset of the wallet's inputs.
    let mut superset = honest.clone();
    superset.push([7; 32]);
    for messages in [&honest[..2], &superset[..]] {
        let (req, comms) = psbt_request(&mut c, "w", &[1, 2], &bytes, messages);
        let err = c.round2(1, &req).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err:?}");
        assert!(
            matches!(
                err,
                Error::Malformed {
                    part: thresig_engine::RequestPart::InputCount { messages: 3, .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(c.member(1).marker("w", &comms[&1][0]).is_none());
    }
}

#[test]
fn a_psbt_stating_another_prevout_script_or_amount_is_refused() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(33, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");

    // Input 0 claims the wallet's internal key but spends another script.
    let mut raw = spend(&w, 2, 1).psbt().clone();
    let foreign = external().script_pubkey();
    raw.inputs[0].witness_utxo.as_mut().unwrap().script_pubkey = foreign.clone();
    let psbt = WalletPsbt::from_psbt(raw, &w).unwrap();
    let err = sign(&mut c, "w", &[1, 2], &psbt).unwrap_err();
    let (rule, violation) = denial(&err);
    assert_eq!(rule, Rule::PrevoutScript);
    assert_eq!(
        violation,
        Violation::PrevoutScript {
            input: InputIndex(0),
            script_pubkey: foreign
        }
    );

    // The full previous transaction says 90 000 sat, witness_utxo 100 000.
    let prev = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![],
        output: vec![TxOut {
            value: Amount::from_sat(90_000),
            script_pubkey: w.script_pubkey().clone(),
        }],
    };
    let mut inputs = funding(&w, 1, 100_000, 2);
    inputs[0].outpoint = OutPoint {
        txid: prev.compute_txid(),
        vout: 0,
    };
    let honest = pay(&w, &inputs, Some(external()));
    let messages = sighashes(&honest);
    let mut raw = honest.psbt().clone();
    raw.inputs[0].non_witness_utxo = Some(prev);
    let mut out = Vec::new();
    raw.serialize_to_writer(&mut out).unwrap();
    let (req, _) = psbt_request(&mut c, "w", &[1, 2], &out, &messages);
    let err = c.round2(1, &req).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transaction {
                source: thresig_tx::Error::PrevoutMismatch {
                    input: InputIndex(0)
                },
                ..
            }
        ),
        "{err:?}"
    );

    // A PSBT overstating the amount: its sighash is not the one a
    // coordinator that knows the real amount asks for.
    let real = pay(&w, &funding(&w, 1, 90_000, 3), Some(external()));
    let inflated = pay(&w, &funding(&w, 1, 100_000, 3), Some(external()));
    let (req, _) = psbt_request(
        &mut c,
        "w",
        &[1, 2],
        &inflated.serialize(),
        &sighashes(&real),
    );
    let err = c.round2(1, &req).unwrap_err();
    assert!(
        matches!(err, Error::MessageMismatch { input: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn a_transaction_is_charged_once_however_many_sessions_sign_it() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(one_per_minute())];
    let mut c = Cluster::with_wallets(34, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let first = spend(&w, 2, 1);
    // Three ROAST sessions over one transaction, with different signer sets.
    for seats in [[1, 2], [1, 3], [2, 1]] {
        assert_eq!(sign(&mut c, "w", &seats, &first).unwrap().len(), 2);
    }
    // A second transaction in the same minute is over the limit.
    let second = spend(&w, 1, 2);
    let err = sign(&mut c, "w", &[1, 2], &second).unwrap_err();
    assert_eq!(err.code(), ErrorCode::PolicyDenied);
    assert_eq!(
        denial(&err),
        (
            Rule::CoordinatorRatePerMinute,
            Violation::Rate {
                charged: 1,
                limit: 1
            }
        )
    );
    // The ledger is durable.
    c.restart(1);
    assert_eq!(
        denial(&sign(&mut c, "w", &[1, 3], &second).unwrap_err()).0,
        Rule::CoordinatorRatePerMinute
    );
    // A minute later it signs.
    c.advance(Duration::from_secs(61));
    let sigs = sign(&mut c, "w", &[1, 2], &second).unwrap();
    let prevouts = second.prevouts().to_vec();
    verify_with_core(&finalize(second, &sigs, &[]), &prevouts).unwrap();
}

/// Two requests over one database, from coordinators `from_a` and `from_b`,
/// both checked against the same ledger: B commits while A is parked in
/// its commit. A's charge then conflicts and, re-checked against B's, must
/// be refused; returns A's refusal after checking that A released nothing.
fn race(c: &mut Cluster, from_a: u16, from_b: u16, salt: u8) -> Error {
    let w = taproot(c, "w");
    // A second signer process for seat 1 over the same database.
    let member = c.member(1);
    let other = Signer::open(
        member.config.clone(),
        identity_secret(1),
        member.store().share(),
    )
    .unwrap();
    let other = Via(&other);

    let tx_a = spend(&w, 1, salt);
    let tx_b = spend(&w, 1, salt + 1);
    let messages_a = sighashes(&tx_a);
    let comms_a: BTreeMap<u16, Vec<Commitment>> = [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, from_a, "w", messages_a.len()).unwrap()))
        .collect();
    let req_a = c.request_for(
        "w",
        &comms_a,
        &messages_a,
        SigningTarget::psbt(tx_a.serialize()),
    );
    let now = c.now;
    let own = other
        .round1(
            now,
            coordinator(from_b),
            &Round1Request::new(wid("w"), 1),
            &mut c.rng,
        )
        .unwrap();
    let seat2 = c.round1(2, from_b, "w", 1).unwrap();
    let own: Vec<Commitment> = own
        .commitments
        .iter()
        .map(|h| Commitment::from_bytes(&h.0).unwrap())
        .collect();
    let comms_b = [(1, own), (2, seat2)].into();
    let req_b = c.request_for(
        "w",
        &comms_b,
        &sighashes(&tx_b),
        SigningTarget::psbt(tx_b.serialize()),
    );

    // A is checked against the ledger, then parked in its commit.
    let (parked_tx, parked_rx) = channel();
    let (release_tx, release_rx) = channel();
    c.member(1)
        .store()
        .park_commit(&wid("w"), parked_tx, release_rx);
    let signer = c.member(1).signer();
    let mut rng_a = c.rng.clone();
    let mut rng_b = c.rng.clone();
    let err = std::thread::scope(|scope| {
        let a = scope.spawn(|| signer.round2(now, coordinator(from_a), &req_a, &mut rng_a));
        parked_rx.recv().unwrap();
        // B, checked against the same ledger, commits first.
        let b = other.round2(now, coordinator(from_b), &req_b, &mut rng_b);
        assert_eq!(b.unwrap().shares.len(), 1);
        release_tx.send(()).unwrap();
        a.join().unwrap().unwrap_err()
    });
    assert!(
        c.member(1).marker("w", &comms_a[&1][0]).is_none(),
        "A released nothing"
    );
    assert!(c.member(1).marker("w", &comms_b[&1][0]).is_some());
    err
}

#[test]
fn two_concurrent_transactions_never_both_pass_a_limit_of_one() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(one_per_minute())];
    let mut c = Cluster::with_wallets(35, 2, 3, &specs, Limits::default());
    let err = race(&mut c, COORD_A, COORD_A, 1);
    assert_eq!(denial(&err).0, Rule::CoordinatorRatePerMinute);
}

/// The wallet-wide limit holds under the same race between two different
/// coordinators, each with room in its own sub-limit: one transaction is
/// left in the wallet's minute (another coordinator used the other), and
/// only one of the two gets it.
#[test]
fn two_coordinators_racing_for_the_wallets_last_transaction_never_both_pass() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(one_per_minute())];
    let mut c = Cluster::with_wallets(49, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    sign_by(&mut c, 1, "w", &[1, 2], &spend(&w, 1, 1)).unwrap();
    let err = race(&mut c, COORD_A, COORD_B, 2);
    assert_eq!(
        denial(&err),
        (
            Rule::RatePerMinute,
            Violation::Rate {
                charged: 2,
                limit: 2
            }
        )
    );
}

#[test]
fn a_rekeying_wallet_signs_only_the_sweep_to_its_active_successor() {
    let specs = [
        Spec::new("old", Keys::Dkg(ScriptTree::KeyPathOnly))
            .policy(policy())
            .successor("new"),
        Spec::new("new", Keys::Dkg(ScriptTree::KeyPathOnly)),
    ];
    let mut c = Cluster::with_wallets(36, 2, 3, &specs, Limits::default());
    let old = taproot(&c, "old");
    let new = taproot(&c, "new");
    for s in [1, 2, 3] {
        let err = c.member(s).signer().begin_rekey(&wid("new")).unwrap_err();
        assert!(
            matches!(err, Error::RekeyNotPossible { .. }),
            "no successor: {err:?}"
        );
        c.member(s).signer().begin_rekey(&wid("old")).unwrap();
    }
    c.restart(2);
    for s in [1, 2, 3] {
        let state = c.member(s).signer().status(&wid("old")).unwrap().state;
        assert_eq!(state, WalletStateKind::Rekeying, "durable at seat {s}");
    }
    // An ordinary spend, a spend keeping change, raw digests: refused.
    let ordinary = spend(&old, 1, 1);
    let keep_change = pay(&old, &funding(&old, 2, 100_000, 2), Some(new.address()));
    for psbt in [&ordinary, &keep_change] {
        let err = sign(&mut c, "old", &[1, 2], psbt).unwrap_err();
        assert_eq!(err.code(), ErrorCode::RekeyInProgress, "{err:?}");
    }
    let comms = round1(&mut c, "old", &[1, 2], 1);
    let err = c
        .round2(1, &c.request("old", &comms, &[[1; 32]]))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RekeyInProgress);

    // The sweep of everything to the successor signs and passes Core.
    sweeps_to_successor(&mut c, &[2, 3]);
}

/// The sweep of three outputs of `old` to `new` signs with `seats` and
/// passes Core.
fn sweeps_to_successor(c: &mut Cluster, seats: &[u16]) {
    let (old, new) = (taproot(c, "old"), taproot(c, "new"));
    let inputs = funding(&old, 3, 100_000, 3);
    let sweep = build_psbt(
        &old,
        &inputs,
        &[Payment {
            destination: Destination::Address(new.address()),
            value: Amount::from_sat(299_000),
        }],
        LockTime::ZERO,
    )
    .unwrap();
    let sigs = sign(c, "old", seats, &sweep).unwrap();
    let prevouts = sweep.prevouts().to_vec();
    verify_with_core(&finalize(sweep, &sigs, &[]), &prevouts).unwrap();
}

/// The refresh no repair can get past (docs/lifecycle.md): every member
/// ran part 3 and released its confirmation, member 3 withholds its own
/// and then loses its disk. No helper repairs it while the refresh is
/// pending (`refresh_confirmed`), and `--resume` cannot finish without
/// its confirmation. The way out is the rekey: after `begin_rekey` the
/// repair is refused with `rekey_in_progress` (the successor is the way
/// back, not `--resume`), and the sweep of everything to the successor
/// signs with the honest members 1 and 2.
#[test]
fn a_wallet_stuck_on_a_withheld_refresh_confirmation_is_swept_to_its_successor() {
    use common::dkg::{confirmations, refresh_to_part3};
    use common::repair;
    let specs = [
        Spec::new("old", Keys::Dkg(ScriptTree::KeyPathOnly))
            .policy(policy())
            .successor("new"),
        Spec::new("new", Keys::Dkg(ScriptTree::KeyPathOnly)),
    ];
    let mut c = Cluster::with_wallets(37, 2, 3, &specs, Limits::default());
    let (p, inbox) = refresh_to_part3(&mut c, "old", 1, 0);
    confirmations(&c, &p, &inbox);
    c.lose_disk(3);
    repair::approve(&c, "old", 3, &[1, 2]);
    let session = repair::session(&c, "old", 3, &[1, 2], 1);
    let (_, err) = repair::run(&mut c, &session).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RefreshConfirmed, "{err}");
    for s in [1, 2] {
        c.member(s).signer().begin_rekey(&wid("old")).unwrap();
        let state = c.member(s).signer().status(&wid("old")).unwrap().state;
        assert_eq!(state, WalletStateKind::Rekeying, "seat {s}");
    }
    let session = repair::session(&c, "old", 3, &[1, 2], 2);
    let (_, err) = repair::run(&mut c, &session).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RekeyInProgress, "{err}");
    sweeps_to_successor(&mut c, &[1, 2]);
}

#[test]
fn no_sweep_is_signed_while_the_successor_is_not_active() {
    let specs = [
        Spec::new("old", Keys::Dkg(ScriptTree::KeyPathOnly))
            .policy(policy())
            .successor("new"),
        Spec::new("new", Keys::None),
    ];
    let mut c = Cluster::with_wallets(37, 2, 3, &specs, Limits::default());
    let old = taproot(&c, "old");
    for s in [1, 2] {
        c.member(s).signer().begin_rekey(&wid("old")).unwrap();
    }
    // Any output: the successor has no key yet, so nothing is a sweep.
    let psbt = pay(&old, &funding(&old, 1, 100_000, 1), None);
    let err = sign(&mut c, "old", &[1, 2], &psbt).unwrap_err();
    assert!(matches!(err, Error::SuccessorNotActive { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::RekeyInProgress);
}

#[test]
fn round2_returns_a_fresh_live_vector_for_the_next_session() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(38, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let first = spend(&w, 2, 1);
    let (req, _) = psbt_request(&mut c, "w", &[1, 2], &first.serialize(), &sighashes(&first));
    let replies: BTreeMap<u16, _> = [1, 2].map(|s| (s, c.round2_reply(s, &req).unwrap())).into();
    // The next session (another transaction) uses only the returned vectors.
    let second = spend(&w, 2, 2);
    let fresh: BTreeMap<u16, Vec<Commitment>> = replies
        .iter()
        .map(|(s, r)| {
            assert_eq!(r.commitments.len(), 2);
            let v = r
                .commitments
                .iter()
                .map(|h| Commitment::from_bytes(&h.0).unwrap());
            (*s, v.collect())
        })
        .collect();
    let target = SigningTarget::psbt(second.serialize());
    let next = c.request_for("w", &fresh, &sighashes(&second), target);
    let shares: BTreeMap<u16, _> = [1, 2].map(|s| (s, c.round2(s, &next).unwrap())).into();
    let sigs = c.aggregate("w", &next, &shares);
    let prevouts = second.prevouts().to_vec();
    verify_with_core(&finalize(second, &sigs, &[]), &prevouts).unwrap();
}

#[test]
fn a_policy_of_another_network_or_a_bad_successor_stops_the_signer() {
    let c = Cluster::with_wallets(
        39,
        2,
        3,
        &[Spec::new("a", Keys::None), Spec::new("b", Keys::None)],
        Limits::default(),
    );
    let open = |config: thresig_engine::SignerConfig| {
        Signer::open(config, identity_secret(1), c.member(1).store().share()).unwrap_err()
    };
    let mut config = c.member(1).config.clone();
    let mut mainnet = PolicyConfig::default();
    mainnet.destinations = vec!["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq".to_owned()];
    config.wallets[0] = config.wallets[0].clone().with_policy(mainnet);
    let err = open(config);
    assert!(
        matches!(
            err,
            thresig_engine::OpenError::Config(thresig_engine::ConfigError::Policy { .. })
        ),
        "{err:?}"
    );
    for successor in ["a", "zz"] {
        let mut config = c.member(1).config.clone();
        config.wallets[0] = config.wallets[0].clone().with_successor(wid(successor));
        let err = open(config);
        assert!(
            matches!(
                err,
                thresig_engine::OpenError::Config(thresig_engine::ConfigError::BadSuccessor { .. })
            ),
            "{successor}: {err:?}"
        );
    }
}

#[test]
fn a_psbt_request_through_the_entry_point_is_signed_or_refused_as_policy_denied() {
    use thresig_engine::{Request, Response};
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly))];
    let mut c = Cluster::with_wallets(40, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    // The default policy: change to the wallet is fine, an external
    // destination is not on the (empty) allowlist.
    let cases = [
        (pay(&w, &funding(&w, 1, 100_000, 1), None), None),
        (spend(&w, 1, 2), Some("destination_allowlist")),
    ];
    for (psbt, refused_by) in cases {
        let (req, _) = psbt_request(&mut c, "w", &[1, 2], &psbt.serialize(), &sighashes(&psbt));
        let now = c.now;
        let result = c.member(1).signer().handle(
            now,
            coordinator(COORD_A),
            Request::Round2(req),
            &mut *c.fresh_rng.borrow_mut(),
        );
        match (result, refused_by) {
            (Ok(Response::Round2(r)), None) => assert_eq!(r.shares.len(), 1),
            (Err(err), Some(rule)) => {
                assert_eq!(err.code(), ErrorCode::PolicyDenied);
                assert_eq!(err.recovery(), thresig_store::Recovery::Terminal);
                assert!(err.to_string().contains(rule), "{err}");
            }
            (other, _) => panic!("unexpected reply {other:?}"),
        }
    }
}

#[test]
fn a_wallet_signs_many_transactions_a_day_under_the_default_policy() {
    // Fees of 1 000 sat, far below `max_fee_sat`: the daily fee budget
    // counts the real fees, not five full caps.
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(40, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    for salt in 1..=8u8 {
        c.advance(Duration::from_secs(61));
        sign(&mut c, "w", &[1, 2], &spend(&w, 1, salt)).unwrap();
    }
}

#[test]
fn the_daily_fee_budget_refuses_a_transaction_over_it_across_a_restart() {
    let mut p = policy();
    p.max_fee_sat = Some(1_000);
    p.max_fee_per_day_sat = 2_500;
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(p)];
    let mut c = Cluster::with_wallets(41, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    // Two coordinators, each within its share (1 250 sat) of the budget.
    sign_by(&mut c, COORD_A, "w", &[1, 2], &spend(&w, 1, 1)).unwrap();
    sign_by(&mut c, COORD_B, "w", &[1, 2], &spend(&w, 1, 2)).unwrap();
    let third = spend(&w, 1, 3);
    let budget = Violation::FeeBudget {
        charged: Amount::from_sat(2_000),
        fee: Amount::from_sat(1_000),
        cap: Amount::from_sat(2_500),
    };
    let err = sign(&mut c, "w", &[1, 2], &third).unwrap_err();
    assert_eq!(denial(&err), (Rule::FeePerDay, budget.clone()));
    assert_eq!(Rule::FeePerDay.as_str(), "fee_per_day");
    // The fees are durable: after a restart the same 2 000 sat count.
    c.restart(1);
    let err = sign(&mut c, "w", &[1, 3], &third).unwrap_err();
    assert_eq!(denial(&err), (Rule::FeePerDay, budget));
    // A day after the first charge, it fits again.
    c.advance(Duration::from_secs(24 * 3600));
    sign(&mut c, "w", &[1, 2], &third).unwrap();
}

#[test]
fn one_coordinator_at_its_daily_sub_limit_does_not_block_another() {
    let mut p = policy();
    p.max_per_day_per_coordinator = Some(2);
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(p)];
    let mut c = Cluster::with_wallets(42, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    sign_by(&mut c, COORD_A, "w", &[1, 2], &spend(&w, 1, 1)).unwrap();
    sign_by(&mut c, COORD_A, "w", &[1, 2], &spend(&w, 1, 2)).unwrap();
    let refused = |c: &mut Cluster, seats: &[u16], salt: u8| {
        let err = sign_by(c, COORD_A, "w", seats, &spend(&w, 1, salt)).unwrap_err();
        denial(&err)
    };
    let over = (
        Rule::CoordinatorRatePerDay,
        Violation::Rate {
            charged: 2,
            limit: 2,
        },
    );
    assert_eq!(refused(&mut c, &[1, 2], 3), over);
    // The other coordinator still signs, and its charge is its own.
    sign_by(&mut c, COORD_B, "w", &[1, 2], &spend(&w, 1, 4)).unwrap();
    sign_by(&mut c, COORD_B, "w", &[1, 2], &spend(&w, 1, 5)).unwrap();
    // The coordinators of the charges survive a restart.
    c.restart(1);
    assert_eq!(refused(&mut c, &[1, 3], 6), over);
    let err = sign_by(&mut c, COORD_B, "w", &[1, 3], &spend(&w, 1, 7)).unwrap_err();
    assert_eq!(denial(&err), over);
}

/// The default policy with `max_per_day = 9`, a fee budget of 3 000 000
/// sat a day and no fee-rate cap to speak of (so large fees pass it): what
/// t − 1 colluding coordinators try to use up.
fn small_budgets() -> PolicyConfig {
    let mut p = PolicyConfig::from_toml(
        "max_per_day = 9\nmax_fee_per_day_sat = 3000000\nmax_fee_rate_sat_vb = 100000",
    )
    .unwrap();
    p.destinations = policy().destinations;
    p
}

/// Coordinator `from` gets fabricated self-transfers paying `fee` signed
/// until the signer refuses one.
fn fabricate_until_refused(c: &mut Cluster, from: u16, seats: &[u16], fee: u64, salt: &mut u8) {
    let w = taproot(c, "w");
    for _ in 0..20 {
        *salt += 1;
        let junk = pay_with_fee(&w, &funding(&w, 1, 2_000_000, *salt), None, fee);
        if let Err(e) = sign_by(c, from, "w", seats, &junk) {
            assert_eq!(e.code(), ErrorCode::PolicyDenied, "{e:?}");
            return;
        }
    }
    panic!("coordinator {from} was never refused");
}

/// t − 1 colluding coordinators each use up everything the signers let
/// them (cheap transactions first to use up the count, or dear ones to use
/// up the fee budget), without configuring any sub-limit: the honest
/// coordinator's ordinary withdrawal still passes.
#[test]
fn t_minus_one_colluding_coordinators_cannot_stall_an_honest_withdrawal() {
    let seats = [1, 2, 3];
    let honest = 1;
    for (seed, fees) in [(43, [1_000, 1_000_000]), (44, [1_000_000, 1_000])] {
        let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(small_budgets())];
        let mut c = Cluster::with_wallets(seed, 3, 3, &specs, Limits::default());
        let mut salt = 0;
        for colluder in [COORD_A, COORD_B] {
            for fee in fees {
                fabricate_until_refused(&mut c, colluder, &seats, fee, &mut salt);
            }
        }
        let w = taproot(&c, "w");
        sign_by(&mut c, honest, "w", &seats, &spend(&w, 1, 200)).unwrap();
    }
}

/// A coordinator first gets a decoy of the same unsigned transaction
/// signed, stating amounts that leave a 1-sat fee, then the real one: the
/// real one is charged at its own fee, so the daily fee budget holds.
#[test]
fn a_decoy_of_the_same_unsigned_transaction_does_not_skip_the_fee_budget() {
    let mut p = policy();
    p.max_fee_per_day_sat = 2_000_000;
    p.max_fee_rate_sat_vb = 100_000;
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(p)];
    let mut c = Cluster::with_wallets(45, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let real = pay_with_fee(&w, &funding(&w, 1, 700_000, 1), None, 600_000);
    let mut raw = real.psbt().clone();
    let utxo = raw.inputs[0].witness_utxo.as_mut().unwrap();
    utxo.value = utxo.value - real.fee() + Amount::from_sat(1);
    let decoy = WalletPsbt::from_psbt(raw, &w).unwrap();
    assert_eq!(
        (decoy.txid(), decoy.fee()),
        (real.txid(), Amount::from_sat(1))
    );
    sign(&mut c, "w", &[1, 2], &decoy).unwrap();
    sign(&mut c, "w", &[1, 2], &real).unwrap();
    // Both charges count: 600 001 sat, and another 600 000 does not fit the
    // coordinator's 1 000 000 a day.
    let next = pay_with_fee(&w, &funding(&w, 1, 700_000, 2), None, 600_000);
    let err = sign(&mut c, "w", &[1, 2], &next).unwrap_err();
    assert_eq!(
        denial(&err).1,
        Violation::FeeBudget {
            charged: Amount::from_sat(600_001),
            fee: Amount::from_sat(600_000),
            cap: Amount::from_sat(1_000_000),
        }
    );
}

/// The rate ledger stays bounded over days of requests: its summary is a
/// fixed header and one tally per requesting coordinator (a name of 64 hex
/// digits and four counters), and the charges it holds (the ring's records
/// from `head` to `next`, docs/storage-format.md) are exactly those of the
/// last day: a day-old charge leaves it.
#[test]
fn the_stored_rate_ledger_stays_bounded_over_days() {
    let mut p = PolicyConfig::from_toml("max_per_day = 4").unwrap();
    p.destinations = policy().destinations;
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(p)];
    let mut c = Cluster::with_wallets(46, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    // The charges the ring holds: each slot's time.
    let held = |c: &Cluster| {
        let (summary, charges) = stored_charges(c, 1, "w");
        (
            summary,
            charges.into_iter().map(|(_, at)| at).collect::<Vec<_>>(),
        )
    };
    const HEADER: usize = 1 + 6 * 8 + 2;
    const TALLY: usize = 1 + 64 + 4 + 4 + 8 + 4;
    let mut signed = Vec::new();
    for k in 0..36u8 {
        // A request every two hours for three days, from two coordinators.
        c.advance(Duration::from_secs(2 * 3600));
        let from = if k % 2 == 0 { COORD_A } else { COORD_B };
        let now = c.now.whole_secs();
        if sign_by(&mut c, from, "w", &[1, 2], &spend(&w, 1, k)).is_ok() {
            signed.push(now);
        }
        let (summary, held) = held(&c);
        assert!(
            summary <= HEADER + 2 * TALLY,
            "{summary} bytes after request {k}"
        );
        let day: Vec<u64> = signed
            .iter()
            .copied()
            .filter(|at| *at >= thresig_tx::rate_windows(thresig_tx::UnixTime(now)).1.0)
            .collect();
        assert_eq!(held, day, "the charges held after request {k}");
    }
    assert!(signed.len() >= 8, "{}", signed.len());
}

/// After a day without charges, a denied request stores the windows it
/// moved the day's charges out of: the next denied request reads the
/// summary and its index bucket, not every charge again.
#[test]
fn a_denied_request_after_a_quiet_day_does_not_walk_the_day_again() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(50, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    for salt in 1..=8 {
        sign(&mut c, "w", &[1, 2], &spend(&w, 1, salt)).unwrap();
    }
    c.advance(Duration::from_secs(25 * 3600));
    let reads = |c: &Cluster| c.member(1).store().policy_reads();
    let denied = |c: &mut Cluster, salt: u8| {
        let dear = pay_with_fee(&w, &funding(&w, 1, 2_000_000, salt), None, 1_000_000);
        let before = reads(c);
        let err = sign(c, "w", &[1, 2], &dear).unwrap_err();
        assert_eq!(denial(&err).0, Rule::MaxFeeRate, "{err:?}");
        reads(c) - before
    };
    let first = denied(&mut c, 20);
    assert!(first >= 16, "the first walks the 8 charges: {first} reads");
    let second = denied(&mut c, 21);
    assert!(second <= 2, "{second} reads");
}

/// A charge made while the clock ran two days ahead does not fill the
/// limits once the clock is set right (until it reaches the charge's date):
/// the wallet signs again at once.
#[test]
fn a_charge_made_while_the_clock_ran_ahead_does_not_stall_the_wallet() {
    let mut p = policy();
    p.max_per_day = Some(2);
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(p)];
    let mut c = Cluster::with_wallets(47, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let right = c.now;
    c.advance(Duration::from_secs(2 * 86_400));
    sign(&mut c, "w", &[1, 2], &spend(&w, 1, 1)).unwrap();
    c.now = right;
    sign(&mut c, "w", &[1, 2], &spend(&w, 1, 2)).unwrap();
    // The charge made now counts: a limit of one a day for the coordinator.
    assert_eq!(
        denial(&sign(&mut c, "w", &[1, 2], &spend(&w, 1, 3)).unwrap_err()).0,
        Rule::CoordinatorRatePerDay
    );
}

/// A transaction already charged is signed in another ROAST session
/// without rewriting the ledger: its records (the summary, the charge and
/// its key's index bucket) are written once, at the charge, not at every
/// release.
#[test]
fn a_replayed_charge_writes_no_ledger_record() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(48, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let psbt = spend(&w, 1, 1);
    let writes = |c: &Cluster| c.member(1).store().policy_writes();
    let before = writes(&c);
    sign(&mut c, "w", &[1, 2], &psbt).unwrap();
    assert_eq!(writes(&c), before + 3, "the charge is written once");
    sign(&mut c, "w", &[1, 3], &psbt).unwrap();
    assert_eq!(writes(&c), before + 3, "the second session charges nothing");
}

/// A signer reads its rate ledger once per released share vector: the
/// summary, the transaction's index bucket and the ring slot its charge
/// takes. (The policy check before the nonces are spent and the
/// compare-and-set of the charge use the same read; the wallet's lock is
/// held in between.) A wallet's first charge also reads slot 0 once more,
/// to tell a wallet never charged from a ledger that lost its summary.
#[test]
fn a_round_2_reads_the_rate_ledger_once() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(49, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let reads = |c: &Cluster| {
        [1, 2]
            .iter()
            .map(|s| c.member(*s).store().policy_reads())
            .sum::<usize>()
    };
    let before = reads(&c);
    sign(&mut c, "w", &[1, 2], &spend(&w, 1, 1)).unwrap();
    assert_eq!(
        reads(&c),
        before + 8,
        "four reads at each of the two signers at the first charge"
    );
    let before = reads(&c);
    sign(&mut c, "w", &[1, 2], &spend(&w, 1, 2)).unwrap();
    assert_eq!(
        reads(&c),
        before + 6,
        "three reads at each of the two signers"
    );
}

/// What a signature costs in rate-ledger bytes (read and written at one
/// signer) does not grow with the charges of the day: the 40th charge of
/// the day moves no more than a small, fixed number of bytes, where a
/// ledger kept as one record would read and rewrite all 39 earlier ones.
#[test]
fn a_signature_moves_the_same_ledger_bytes_whatever_the_days_charges() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(50, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let bytes = |c: &Cluster| c.member(1).store().policy_bytes();
    let mut per_signature = Vec::new();
    for k in 0..40u8 {
        // Some charges leave the minute window as others arrive.
        c.advance(Duration::from_secs(7));
        let before = bytes(&c);
        sign(&mut c, "w", &[1, 2], &spend(&w, 1, k)).unwrap();
        per_signature.push(bytes(&c) - before);
    }
    // A charge, its key's index and the summary of the windows; an
    // expired charge read on its way out of a window.
    const BOUND: usize = 1_500;
    assert!(
        per_signature.iter().all(|b| *b <= BOUND),
        "ledger bytes per signature: {per_signature:?}"
    );
}
