//! Signing rounds end to end: nonces, markers, replays, conflicts, checks.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use thresig_crypto::Commitment;
use thresig_engine::{Error, ErrorCode, Limits, WalletEpoch};
use thresig_store::{Store, WriteOp};

const D1: [u8; 32] = [1; 32];
const D2: [u8; 32] = [2; 32];
const D3: [u8; 32] = [3; 32];

fn cluster(seed: u64) -> Cluster {
    Cluster::new(seed, 2, 3, &["w1", "w2"], small_limits())
}

/// Round 1 at seats 1 and 2 for `inputs` inputs.
fn commitments(c: &mut Cluster, inputs: usize) -> BTreeMap<u16, Vec<Commitment>> {
    [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, COORD_A, "w1", inputs).unwrap()))
        .collect()
}

#[test]
fn two_of_three_signs_and_verifies() {
    let mut c = cluster(1);
    let sigs = c.sign("w1", &[1, 3], &[D1]);
    assert_eq!(sigs.len(), 1);
    let sigs = c.sign("w2", &[2, 3], &[D1, D2]);
    assert_eq!(sigs.len(), 2);
}

#[test]
fn three_inputs_use_three_nonces_and_one_marker() {
    let mut c = cluster(2);
    let comms = commitments(&mut c, 3);
    let distinct: BTreeSet<Vec<u8>> = comms[&1].iter().map(|c| c.to_bytes()).collect();
    assert_eq!(distinct.len(), 3, "three distinct nonces");
    let req = c.request("w1", &comms, &[D1, D2, D3]);
    let shares: BTreeMap<u16, Vec<Vec<u8>>> =
        [1, 2].map(|s| (s, c.round2(s, &req).unwrap())).into();
    let m = c.member(1);
    let marker = m.marker("w1", &comms[&1][0]).unwrap();
    assert_eq!(marker, shares[&1], "all three shares in one marker");
    assert_eq!(marker.len(), 3);
    assert!(m.marker("w1", &comms[&1][1]).is_none());
    assert!(m.marker("w1", &comms[&1][2]).is_none());
    assert_eq!(c.aggregate("w1", &req, &shares).len(), 3);
}

#[test]
fn a_commitment_used_for_two_inputs_is_refused() {
    let mut c = cluster(3);
    let mut comms = commitments(&mut c, 2);
    let good = c.request("w1", &comms, &[D1, D2]);
    let first = comms.get(&1).unwrap()[0];
    comms.get_mut(&1).unwrap()[1] = first;
    let bad = c.request("w1", &comms, &[D1, D2]);
    let err = c.round2(1, &bad).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CommitmentReused {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    // Nothing was consumed: the honest request still signs.
    assert_eq!(c.round2(1, &good).unwrap().len(), 2);
}

#[test]
fn a_partial_or_mixed_vector_is_refused() {
    let mut c = cluster(4);
    let comms = commitments(&mut c, 2);
    let mut one = comms.clone();
    for v in one.values_mut() {
        v.truncate(1);
    }
    let req = c.request("w1", &one, &[D1]);
    assert!(matches!(
        c.round2(1, &req),
        Err(Error::NotOneRound1Vector { .. })
    ));
    let other = commitments(&mut c, 2);
    let mut mixed = comms.clone();
    mixed.get_mut(&1).unwrap()[1] = other[&1][0];
    let req = c.request("w1", &mixed, &[D1, D2]);
    assert!(matches!(
        c.round2(1, &req),
        Err(Error::NotOneRound1Vector { .. })
    ));
}

#[test]
fn replay_returns_identical_bytes_before_and_after_restart() {
    let mut c = cluster(5);
    let comms = commitments(&mut c, 2);
    let req = c.request("w1", &comms, &[D1, D2]);
    let first = c.round2(1, &req).unwrap();
    assert_eq!(
        c.round2(1, &req).unwrap(),
        first,
        "replay in the same process"
    );
    c.restart(1);
    assert_eq!(c.round2(1, &req).unwrap(), first, "replay after a restart");
    // The replayed shares still aggregate.
    let second = c.round2(2, &req).unwrap();
    c.aggregate("w1", &req, &[(1, first), (2, second)].into());
}

#[test]
fn a_lost_marker_commit_releases_nothing_and_the_identical_retry_succeeds() {
    let mut c = cluster(6);
    let comms = commitments(&mut c, 2);
    let req = c.request("w1", &comms, &[D1, D2]);
    c.member(1).store().fail_next_commit(Fault::Lost);
    let err = c.round2(1, &req).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageUnavailable);
    assert_eq!(err.recovery(), thresig_store::Recovery::Retryable);
    assert!(
        c.member(1).marker("w1", &comms[&1][0]).is_none(),
        "nothing durable"
    );
    let shares1 = c.round2(1, &req).unwrap();
    assert_eq!(c.member(1).marker("w1", &comms[&1][0]).unwrap(), shares1);
    let shares2 = c.round2(2, &req).unwrap();
    c.aggregate("w1", &req, &[(1, shares1), (2, shares2)].into());
}

#[test]
fn ambiguous_commit_then_another_package_gets_session_conflict() {
    let mut c = cluster(7);
    let comms = commitments(&mut c, 1);
    let p1 = c.request("w1", &comms, &[D1]);
    let p2 = c.request("w1", &comms, &[D2]);
    c.member(1).store().fail_next_commit(Fault::Ambiguous);
    assert_eq!(
        c.round2(1, &p1).unwrap_err().code(),
        ErrorCode::StorageUnavailable
    );
    let err = c.round2(1, &p2).unwrap_err();
    assert_eq!(err.code(), ErrorCode::SessionConflict, "{err:?}");
    // The durable marker still answers P1, and only P1.
    let shares = c.round2(1, &p1).unwrap();
    assert_eq!(c.member(1).marker("w1", &comms[&1][0]).unwrap(), shares);
    assert_eq!(
        c.round2(1, &p2).unwrap_err().code(),
        ErrorCode::SessionConflict
    );
    // And after a restart too.
    c.restart(1);
    assert_eq!(
        c.round2(1, &p2).unwrap_err().code(),
        ErrorCode::SessionConflict
    );
    assert_eq!(c.round2(1, &p1).unwrap(), shares);
}

#[test]
fn another_package_drops_pending_shares_for_good() {
    let mut c = cluster(8);
    let comms = commitments(&mut c, 1);
    let p1 = c.request("w1", &comms, &[D1]);
    let p2 = c.request("w1", &comms, &[D2]);
    c.member(1).store().fail_next_commit(Fault::Lost);
    assert_eq!(
        c.round2(1, &p1).unwrap_err().code(),
        ErrorCode::StorageUnavailable
    );
    assert_eq!(
        c.round2(1, &p2).unwrap_err().code(),
        ErrorCode::SessionConflict
    );
    // The pending shares for P1 are gone with their nonce: no share ever.
    assert_eq!(
        c.round2(1, &p1).unwrap_err().code(),
        ErrorCode::SessionConflict
    );
    assert!(c.member(1).marker("w1", &comms[&1][0]).is_none());
}

#[test]
fn unknown_and_restarted_commitments_get_nonce_unknown() {
    let mut c = cluster(9);
    let comms = commitments(&mut c, 1);
    let req = c.request("w1", &comms, &[D1]);
    c.restart(1);
    let err = c.round2(1, &req).unwrap_err();
    assert!(matches!(err, Error::NonceUnknown { .. }), "{err:?}");
    assert_eq!(err.code().as_str(), "nonce_unknown");
}

#[test]
fn roster_threshold_and_epoch_are_each_checked() {
    let mut c = cluster(10);
    let mut comms = commitments(&mut c, 1);
    // Seat 4 is outside the 3-member roster.
    let foreign = comms[&2].clone();
    comms.insert(4, foreign);
    let req = c.request("w1", &comms, &[D1]);
    let err = c.round2(1, &req).unwrap_err();
    assert!(
        matches!(err, Error::IdentifierNotInRoster { identifier, .. } if identifier.get() == 4),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::RosterMismatch);

    comms.remove(&4);
    comms.remove(&2);
    let req = c.request("w1", &comms, &[D1]);
    let err = c.round2(1, &req).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooFewSigners {
                signers: 1,
                threshold: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::RosterMismatch);

    let comms = commitments(&mut c, 1);
    let mut req = c.request("w1", &comms, &[D1]);
    let current = req.epoch;
    req.epoch = WalletEpoch(current.0 + 1);
    let err = c.round2(1, &req).unwrap_err();
    assert!(matches!(err, Error::StaleEpoch { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::StaleEpoch);
    // None of these consumed the nonce.
    req.epoch = current;
    assert!(c.round2(1, &req).is_ok());
}

#[test]
fn a_message_other_than_the_derived_one_is_refused() {
    let mut c = cluster(11);
    let comms = commitments(&mut c, 1);
    let mut req = c.request("w1", &comms, &[D1]);
    let other = c.request("w1", &comms, &[D2]);
    req.packages = other.packages;
    let err = c.round2(1, &req).unwrap_err();
    assert!(
        matches!(err, Error::MessageMismatch { input: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn nonce_ttl_expiry_is_typed() {
    let mut c = cluster(12);
    let comms = commitments(&mut c, 1);
    let req = c.request("w1", &comms, &[D1]);
    c.advance(Duration::from_secs(61));
    let err = c.round2(1, &req).unwrap_err();
    assert!(matches!(err, Error::AttemptExpired { .. }), "{err:?}");
    assert_eq!(err.code().as_str(), "attempt_expired");
}

#[test]
fn a_coordinators_quota_evicts_its_own_oldest_and_spares_another() {
    // Quota 8 per coordinator, 12 per wallet, requests of at most 4.
    let mut c = cluster(13);
    let b = c.round1(1, COORD_B, "w1", 4).unwrap();
    let oldest = c.round1(1, COORD_A, "w1", 4).unwrap();
    c.round1(1, COORD_A, "w1", 4).unwrap();
    c.round1(1, COORD_A, "w1", 4).unwrap(); // evicts `oldest`
    let seat2 = c.round1(2, COORD_A, "w1", 4).unwrap();
    let req = c.request(
        "w1",
        &[(1, oldest), (2, seat2.clone())].into(),
        &[D1, D2, D3, D1],
    );
    let err = c.round2(1, &req).unwrap_err();
    assert!(matches!(err, Error::NonceEvicted { .. }), "{err:?}");
    // No retry of this round 2 can succeed: terminal, not capacity.
    assert_eq!(err.code(), ErrorCode::NonceUnknown);
    assert_eq!(err.recovery(), thresig_store::Recovery::Terminal);
    // Coordinator B's vector survived A's churn; only B spends it.
    let req = c.request("w1", &[(1, b), (2, seat2)].into(), &[D1, D2, D3, D1]);
    let reply = c.round2_as(1, COORD_B, &req).unwrap();
    assert_eq!(reply.shares.len(), 4);
    // A's 8 and the fresh vector of 4 returned to B.
    let before = c.member(1).signer().status(&wid("w1")).unwrap().live_nonces;
    assert_eq!(before, 12);
    // The wallet is at its cap (12), yet a third coordinator still gets its
    // reserved share (12 / 3 members): others cannot lock it out.
    c.round1(1, 1, "w1", 4).unwrap();
    // Beyond its share it needs room under the cap, and there is none.
    let err = c.round1(1, 1, "w1", 1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonceCapacity {
                live: 16,
                max: 12,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::CapacityExhausted);
}

#[test]
fn request_size_and_policy_are_typed() {
    let mut c = cluster(14);
    let err = c.round1(1, COORD_A, "w1", 5).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyInputs {
                requested: 5,
                max: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let err = c.round1(1, COORD_A, "w1", 0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    // A coordinator is told the same for an unknown wallet as for one it is
    // not a member of.
    let err = c.round1(1, COORD_A, "nope", 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CoordinatorNotMember);
}

#[test]
fn raw_digests_need_the_wallet_policy() {
    let mut c = Cluster::new(15, 2, 3, &["w1"], Limits::default());
    let deny: Vec<_> = c.members[0]
        .config
        .wallets
        .iter()
        .cloned()
        .map(|w| w.with_policy(thresig_tx::PolicyConfig::default()))
        .collect();
    c.members[0].config.wallets = deny;
    c.restart(1);
    let comms = commitments(&mut c, 1);
    let req = c.request("w1", &comms, &[D1]);
    let err = c.round2(1, &req).unwrap_err();
    assert_eq!(err.code(), ErrorCode::PolicyDenied);
    assert!(
        matches!(&err, Error::PolicyDenied { denial, .. } if denial.rule == thresig_tx::Rule::RawDigests),
        "{err:?}"
    );
    assert!(c.member(1).marker("w1", &comms[&1][0]).is_none());
}

#[test]
fn replay_is_identical_while_the_key_provider_is_down() {
    let mut c = cluster(16);
    let comms = commitments(&mut c, 1);
    let req = c.request("w1", &comms, &[D1]);
    let shares = c.round2(1, &req).unwrap();
    c.member(1).machine.provider.set_down(true);
    assert_eq!(c.round2(1, &req).unwrap(), shares, "replay, provider down");
    // Fresh attempts do not wait on the provider either.
    assert_eq!(c.sign("w1", &[1, 2], &[D2]).len(), 1);
    c.member(1).machine.provider.set_down(false);
    c.restart(1);
    assert_eq!(c.round2(1, &req).unwrap(), shares, "replay after restart");
}

#[test]
fn a_failing_marker_read_is_retryable_and_releases_nothing() {
    let mut c = cluster(18);
    let comms = commitments(&mut c, 1);
    let req = c.request("w1", &comms, &[D1]);
    c.member(1).store().fail_reads(true);
    let err = c.round2(1, &req).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageUnavailable);
    assert_eq!(err.recovery(), thresig_store::Recovery::Retryable);
    c.member(1).store().fail_reads(false);
    let shares = c.round2(1, &req).unwrap();
    assert_eq!(c.member(1).marker("w1", &comms[&1][0]).unwrap(), shares);
}

#[test]
fn only_members_may_coordinate() {
    let mut c = cluster(17);
    let outsider = thresig_engine::CoordinatorId(identity(9).to_bytes());
    let req = thresig_engine::Round1Request::new(wid("w1"), 1);
    let now = c.now;
    let err = c.members[0]
        .signer()
        .round1(now, outsider, &req, &mut c.rng)
        .unwrap_err();
    assert!(matches!(err, Error::CoordinatorNotMember { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::CoordinatorNotMember);
    let comms = commitments(&mut c, 1);
    let req = c.request("w1", &comms, &[D1]);
    let err = c
        .member(1)
        .signer()
        .round2(now, outsider, &req, &mut *c.fresh_rng.borrow_mut())
        .unwrap_err();
    assert!(matches!(err, Error::CoordinatorNotMember { .. }), "{err:?}");
}

/// Seat 1's stored record of `wallet` (the engine's 10-byte header, then
/// the encoded wallet key).
fn stored_record(c: &Cluster, wallet: &str) -> Vec<u8> {
    let bytes = c.member(1).store().inner.wallet(&wid(wallet));
    bytes.unwrap().unwrap().to_vec()
}

fn put_record(c: &Cluster, wallet: &str, value: Vec<u8>) {
    let op = WriteOp::PutWallet {
        wallet: wid(wallet),
        value,
    };
    Store::write(&*c.member(1).store().inner, vec![op]).unwrap();
}

/// After seat 1 restarts, its `w1` is `corrupt` and refuses to sign while
/// `w2` still signs.
fn restarted_w1_is_corrupt_and_w2_serves(c: &mut Cluster) {
    c.restart(1);
    let status = c.member(1).signer().status(&wid("w1")).unwrap();
    assert_eq!(status.state, thresig_engine::WalletStateKind::Corrupt);
    let err = c.round1(1, COORD_A, "w1", 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::WalletCorrupt);
    assert_eq!(c.sign("w2", &[1, 2], &[D1]).len(), 1, "w2 still signs");
}

/// Open reads no key material: each wallet's records are read on the first
/// request that locks it, so a wallet whose key cannot be read fails there
/// (retryably, until the store answers) while the signer opens and the
/// other wallets serve.
#[test]
fn open_reads_no_key_package_and_a_wallet_loads_on_first_use() {
    let c = cluster(24);
    let member = c.member(1);
    let store = member.store().share();
    store.fail_key_reads(Some(&wid("w1")));
    let signer =
        thresig_engine::Signer::open(member.config.clone(), identity_secret(1), store).unwrap();
    assert_eq!(signer.store().key_reads(), 0, "open reads no key package");

    let err = signer.status(&wid("w1")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageUnavailable);
    assert_eq!(err.recovery(), thresig_store::Recovery::Retryable);
    let w2 = signer.status(&wid("w2")).unwrap();
    assert_eq!(w2.state, thresig_engine::WalletStateKind::Active);
    assert_eq!(
        signer.store().key_reads(),
        2,
        "w1 tried once, w2 loaded once"
    );

    signer.store().fail_key_reads(None);
    let w1 = signer.status(&wid("w1")).unwrap();
    assert_eq!(w1.state, thresig_engine::WalletStateKind::Active);
    signer.status(&wid("w1")).unwrap();
    signer.status(&wid("w2")).unwrap();
    assert_eq!(
        signer.store().key_reads(),
        3,
        "a loaded wallet is not read again"
    );
}

/// A store that cannot read now (a latched handle, a stopped writer) says
/// nothing about the wallet's records: the wallet is not marked corrupt, and
/// a later request reads it again.
#[test]
fn a_terminal_store_fault_at_first_load_does_not_mark_the_wallet_corrupt() {
    let c = cluster(25);
    let member = c.member(1);
    let store = member.store().share();
    store.fail_key_reads_terminally(&wid("w1"));
    let signer =
        thresig_engine::Signer::open(member.config.clone(), identity_secret(1), store).unwrap();
    let err = signer.status(&wid("w1")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageFailed, "{err:?}");
    signer.store().fail_key_reads(None);
    let w1 = signer.status(&wid("w1")).unwrap();
    assert_eq!(w1.state, thresig_engine::WalletStateKind::Active);
}

#[test]
fn a_wallet_whose_record_does_not_decode_is_corrupt_and_others_serve() {
    let mut c = cluster(19);
    put_record(&c, "w1", vec![0xff; 5]);
    restarted_w1_is_corrupt_and_w2_serves(&mut c);
}

#[test]
fn a_wallet_whose_share_does_not_fit_its_record_is_corrupt_and_others_serve() {
    let mut c = cluster(20);
    // w1's record now names w2's key, which seat 1's w1 share is no share of.
    put_record(&c, "w1", stored_record(&c, "w2"));
    restarted_w1_is_corrupt_and_w2_serves(&mut c);
}

/// A wallet key is checked when it is made (DKG, import, refresh) or
/// decoded from elsewhere; the stored record, which only this signer could
/// have sealed, is not checked again at every open (at 51-of-100 that check
/// costs about 0.13 s per wallet). Only what ties this signer to the record
/// (its own share fits, threshold and roster match) is.
#[test]
fn a_stored_wallet_keys_verifying_shares_are_not_rechecked_at_open() {
    let mut c = cluster(23);
    let good = stored_record(&c, "w1");
    // Header (10), then version, origin, tree, recorded P, output Q (67),
    // the package header (5) and map length (1); entries are an identifier
    // (32) and a verifying share (33). Swap seats 2 and 3's shares: no
    // longer on one polynomial, but seat 1's own share still fits.
    let share_at = |i: usize| 10 + 67 + 6 + i * 65 + 32;
    let mut swapped = good.clone();
    swapped[share_at(1)..share_at(1) + 33].copy_from_slice(&good[share_at(2)..share_at(2) + 33]);
    swapped[share_at(2)..share_at(2) + 33].copy_from_slice(&good[share_at(1)..share_at(1) + 33]);
    assert!(thresig_crypto::WalletKey::from_bytes(&swapped[10..]).is_err());
    put_record(&c, "w1", swapped);
    c.restart(1);
    let status = c.member(1).signer().status(&wid("w1")).unwrap();
    assert_eq!(status.state, thresig_engine::WalletStateKind::Active);
    assert_eq!(c.sign("w1", &[1, 3], &[D1]).len(), 1);
}

#[test]
fn abort_and_prune_destroy_nonces() {
    let mut c = cluster(21);
    let comms = commitments(&mut c, 2);
    let req = c.request("w1", &comms, &[D1, D2]);
    let hex: Vec<_> = comms[&1]
        .iter()
        .map(|m| thresig_engine::HexBytes(m.to_bytes()))
        .collect();
    let abort = thresig_engine::AbortRequest::new(wid("w1"), hex);
    let signer = c.member(1).signer();
    let now = c.now;
    assert_eq!(
        signer.abort(now, coordinator(COORD_B), &abort).unwrap(),
        0,
        "not B's"
    );
    assert_eq!(signer.abort(now, coordinator(COORD_A), &abort).unwrap(), 2);
    assert_eq!(
        c.round2(1, &req).unwrap_err().code(),
        ErrorCode::NonceUnknown
    );

    c.round1(1, COORD_A, "w1", 3).unwrap();
    assert_eq!(
        c.member(1).signer().status(&wid("w1")).unwrap().live_nonces,
        3
    );
    c.advance(Duration::from_secs(61));
    c.member(1).signer().prune(c.now).unwrap();
    assert_eq!(
        c.member(1).signer().status(&wid("w1")).unwrap().live_nonces,
        0
    );
}

/// The scheduled prune alone drops what a wallet that gets no more
/// requests holds: its expired nonces, the tombstones of its spent ones and,
/// past the replay window, its markers.
#[test]
fn prune_drops_what_an_idle_wallet_holds() {
    let mut c = cluster(22);
    let comms: BTreeMap<u16, Vec<Commitment>> = [1, 2]
        .map(|s| (s, c.round1(s, COORD_A, "w2", 1).unwrap()))
        .into();
    let req = c.request("w2", &comms, &[D1]);
    let shares = c.round2(1, &req).unwrap();
    c.round1(1, COORD_B, "w2", 2).unwrap();
    let w2 = wid("w2");
    assert!(c.member(1).signer().status(&w2).unwrap().live_nonces > 0);
    assert_eq!(c.member(1).marker("w2", &comms[&1][0]).unwrap(), shares);

    // small_limits: nonces live 60 s; the replay window is an hour.
    c.advance(Duration::from_secs(60 + 3600 + 1));
    c.member(1).signer().prune(c.now).unwrap();
    assert_eq!(c.member(1).signer().status(&w2).unwrap().live_nonces, 0);
    assert!(
        c.member(1).marker("w2", &comms[&1][0]).is_none(),
        "the expired marker is still stored"
    );
    // Neither a marker nor a tombstone remembers the spent commitment.
    let err = c.round2(1, &req).unwrap_err();
    assert!(matches!(err, Error::NonceUnknown { .. }), "{err:?}");
}

#[test]
fn an_evicted_nonce_in_round2_is_terminal() {
    let mut c = cluster(101);
    let oldest = c.round1(1, COORD_A, "w1", 4).unwrap();
    c.round1(1, COORD_A, "w1", 4).unwrap();
    c.round1(1, COORD_A, "w1", 4).unwrap(); // evicts `oldest`
    let seat2 = c.round1(2, COORD_A, "w1", 4).unwrap();
    let req = c.request("w1", &[(1, oldest), (2, seat2)].into(), &[D1, D2, D3, D1]);
    let err = c.round2(1, &req).unwrap_err();
    assert!(matches!(err, Error::NonceEvicted { .. }), "{err:?}");
    // The identical retry fails identically: nothing can make it succeed.
    let again = c.round2(1, &req).unwrap_err();
    assert!(matches!(again, Error::NonceEvicted { .. }), "{again:?}");
    assert_eq!(err.recovery(), thresig_store::Recovery::Terminal);
    assert_eq!(err.code(), ErrorCode::NonceUnknown);
}

/// Quotas are per (wallet, coordinator): coordinators that fill the
/// wallet-wide cap within their own quotas do not lock another out.
#[test]
fn coordinators_within_their_quotas_do_not_lock_another_out_of_round1() {
    // small_limits: 4 inputs max, 8 per coordinator, 12 per wallet.
    let mut c = cluster(102);
    c.round1(1, COORD_A, "w1", 4).unwrap();
    c.round1(1, COORD_A, "w1", 4).unwrap();
    c.round1(1, COORD_B, "w1", 4).unwrap();
    // Seat 1 itself, a coordinator holding no nonces, asks for one.
    let r = c.round1(1, 1, "w1", 1);
    assert!(r.is_ok(), "locked out: {:?}", r.err());
}

/// A refused round 1 destroys nothing, not even the caller's own vectors.
#[test]
fn a_refused_round1_does_not_evict_the_callers_vectors() {
    let mut c = cluster(103);
    let a_old = c.round1(1, COORD_A, "w1", 3).unwrap();
    c.round1(1, COORD_A, "w1", 3).unwrap();
    c.round1(1, COORD_B, "w1", 3).unwrap();
    c.round1(1, COORD_B, "w1", 3).unwrap(); // wallet at 12/12
    let err = c.round1(1, COORD_A, "w1", 4).unwrap_err();
    assert!(matches!(err, Error::NonceCapacity { .. }), "{err:?}");
    let seat2 = c.round1(2, COORD_A, "w1", 3).unwrap();
    let req = c.request("w1", &[(1, a_old), (2, seat2)].into(), &[D1, D2, D3]);
    let r = c.round2(1, &req);
    assert!(
        r.is_ok(),
        "the refused round 1 evicted a live vector: {:?}",
        r.err()
    );
}

/// Round 2 spends only nonces issued to the requesting coordinator.
#[test]
fn another_coordinator_cannot_spend_my_nonces() {
    let mut c = cluster(105);
    let comms: BTreeMap<_, _> = [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, COORD_A, "w1", 1).unwrap()))
        .collect();
    let req = c.request("w1", &comms, &[D2]);
    let err = c.round2_as(1, COORD_B, &req).unwrap_err();
    assert!(matches!(err, Error::NonceUnknown { .. }), "{err:?}");
    // The owner's session still signs.
    assert_eq!(c.round2(1, &req).unwrap().len(), 1);
}

/// Pending shares (their marker commit failed, their nonces are spent)
/// belong to the coordinator whose nonces they used: another member
/// coordinator sending the same commitments with another package learns
/// nothing (`nonce_unknown`) and cannot make them be dropped, so the
/// owner's byte-identical retry still gets its shares.
#[test]
fn another_coordinator_cannot_drop_pending_shares_it_does_not_own() {
    let mut c = Cluster::new(41, 2, 3, &["w1"], small_limits());
    let comms: BTreeMap<u16, Vec<Commitment>> = [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, COORD_A, "w1", 1).unwrap()))
        .collect();
    let mine = c.request("w1", &comms, &[[1; 32]]);
    c.member(1).store().fail_next_commit(Fault::Lost);
    assert!(c.round2_as(1, COORD_A, &mine).is_err(), "commit lost");
    let other = c.request("w1", &comms, &[[2; 32]]);
    let stolen = c.round2_as(1, 1, &other);
    assert!(
        matches!(stolen, Err(Error::NonceUnknown { .. })),
        "{:?}",
        stolen.map(|_| ())
    );
    let retry = c.round2_as(1, COORD_A, &mine);
    assert!(retry.is_ok(), "{:?}", retry.map(|_| ()));
}

/// Pending shares (computed, marker not durable) are capped per wallet:
/// at the cap a coordinator's fresh attempt drops its own oldest pending
/// attempt, and a coordinator holding none is refused, retryably and
/// before any nonce is spent, instead of growing memory.
#[test]
fn pending_shares_are_capped_per_wallet_oldest_own_first() {
    let mut limits = small_limits();
    limits.pending_per_wallet = 2;
    let mut c = Cluster::new(42, 2, 3, &["w1"], limits);
    // Three attempts of coordinator A, each of whose marker commits is lost.
    let attempts: Vec<(Commitment, thresig_engine::Round2Request)> = (1..=3u8)
        .map(|i| {
            let comms: BTreeMap<u16, Vec<Commitment>> = [1, 2]
                .into_iter()
                .map(|s| (s, c.round1(s, COORD_A, "w1", 1).unwrap()))
                .collect();
            let req = c.request("w1", &comms, &[[i; 32]]);
            c.member(1).store().fail_next_commit(Fault::Lost);
            let err = c.round2_as(1, COORD_A, &req).map(|_| ()).unwrap_err();
            assert_eq!(err.code(), ErrorCode::StorageUnavailable, "{err:?}");
            (comms[&1][0], req)
        })
        .collect();
    // Coordinator B (seat 2) holds no pending attempt: refused, retryably.
    let comms_b: BTreeMap<u16, Vec<Commitment>> = [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, 2, "w1", 1).unwrap()))
        .collect();
    let req_b = c.request("w1", &comms_b, &[[9; 32]]);
    let err = c.round2_as(1, 2, &req_b).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PendingCapacity {
                pending: 2,
                max: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::CapacityExhausted);
    assert_eq!(err.recovery(), thresig_store::Recovery::Retryable);
    // A's first attempt was dropped to make room for its third: its
    // retry gets no share. The two newer ones still commit.
    let (dropped, req) = &attempts[0];
    assert!(c.round2_as(1, COORD_A, req).is_err());
    assert!(c.member(1).marker("w1", dropped).is_none());
    for (lead, req) in &attempts[1..] {
        let retry = c.round2_as(1, COORD_A, req);
        assert!(retry.is_ok(), "{:?}", retry.map(|_| ()));
        assert!(c.member(1).marker("w1", lead).is_some());
    }
    // Room again, and B's refused request spent no nonce: it now succeeds.
    let retry = c.round2_as(1, 2, &req_b);
    assert!(retry.is_ok(), "{:?}", retry.map(|_| ()));
}
