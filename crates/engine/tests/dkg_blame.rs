//! DKG blame proofs (docs/blame.md, "The DKG"): a member whose round-2
//! package to another does not open or verify is accused with evidence
//! anyone can check with the roster, and no relay (even with the accuser
//! on its side) can build a verifying proof against an honest member.
//! Malicious members are simulated with the harness's identity keys and
//! the randomness each member started its session from.

mod common;

use std::collections::BTreeMap;

use common::dkg::*;
use common::*;
use thresig_crypto::{Round1Package, Seat};
use thresig_engine::test_util::identity_secret;
use thresig_engine::{
    BlameError, BlameFile, DkgFault, DkgKind, DkgPayload, DkgProposal, DkgShareFault,
    DkgShareProof, HexBytes, RevealedHpkeKey, SignedDkgMessage, WalletConfig, WalletEpoch,
};

type Inbox = BTreeMap<Seat, Vec<SignedDkgMessage>>;

/// A session with a cheating member: the cluster, the proposal, the
/// round-1 messages, the part-3 inboxes and each seat's starting
/// randomness.
type Cheated = (
    Cluster,
    DkgProposal,
    Vec<SignedDkgMessage>,
    Inbox,
    BTreeMap<Seat, rand_chacha::ChaCha20Rng>,
);

/// A relay fault by name, and what it does to the inboxes.
type RelayFault = (&'static str, fn(&mut Inbox));

/// The wallet's configuration as every member holds it: all a verifier
/// needs.
fn config(c: &Cluster) -> WalletConfig {
    c.member(3).config.wallets[0].clone()
}

/// Seat `s`'s round-1 (package, HPKE key) in `round1`.
fn round1_of(round1: &[SignedDkgMessage], s: u16) -> (Vec<u8>, Vec<u8>) {
    let m = round1.iter().find(|m| m.sender == seat(s)).unwrap();
    let DkgPayload::Round1 { package, hpke_key } = &m.payload else {
        panic!("not round 1")
    };
    (package.0.clone(), hpke_key.0.clone())
}

/// Seat `from`'s round-2 message in seat `to`'s inbox.
fn from(inbox: &Inbox, sender: u16, to: u16) -> SignedDkgMessage {
    inbox[&seat(to)]
        .iter()
        .find(|m| m.sender == seat(sender))
        .unwrap()
        .clone()
}

/// `msg` with its sealed package replaced by `sealed`, signed by its
/// sender (a member that cheats).
fn resealed(msg: &SignedDkgMessage, sealed: Vec<u8>) -> SignedDkgMessage {
    resigned(msg, |payload| {
        let DkgPayload::Round2 { sealed: s, .. } = payload else {
            panic!("not round 2")
        };
        *s = HexBytes(sealed);
    })
}

/// In `inbox`, seat `sender`'s message to seat `to` replaced by `msg`.
fn replace(inbox: &mut Inbox, to: u16, msg: SignedDkgMessage) {
    let slot = inbox
        .get_mut(&seat(to))
        .unwrap()
        .iter_mut()
        .find(|m| m.sender == msg.sender)
        .unwrap();
    *slot = msg;
}

/// The accusation of part 3 failing at seat `at`, which must name
/// `accused` for `fault`.
fn accusation_at(
    c: &Cluster,
    p: &DkgProposal,
    inbox: &Inbox,
    (at, accused, fault): (u16, u16, DkgFault),
) -> SignedDkgMessage {
    let err = finish_at(c, p, inbox, at).unwrap_err();
    let accusation = err.accusation().cloned().expect("an accusation");
    assert_eq!(fault_of(err), (at, Some(accused), fault));
    accusation
}

/// `p`'s session of 2-of-3 cluster `c` through part 2, in which seat 2
/// sends seat 1 the share it computed for seat 3, sealed to seat 1 and
/// signed by seat 2: a valid package whose share does not verify at seat 1.
fn cheating_run(mut c: Cluster, p: DkgProposal) -> Cheated {
    let (r1, started) = part1_recorded(&mut c, &p);
    let mut inbox = part2(&mut c, &p, &r1);
    let (state, _) = own_secrets(&c, &p, 2, started[&seat(2)].clone());
    let peers = [1, 3]
        .map(|s| {
            let package = Round1Package::from_bytes(&round1_of(&r1, s).0).unwrap();
            (seat(s), package)
        })
        .to_vec();
    let (_, outgoing) = state.receive(peers).unwrap();
    let (_, for_three) = outgoing.into_iter().find(|(to, _)| to.get() == 3).unwrap();
    let (_, key_of_one) = round1_of(&r1, 1);
    let sealed = seal_as(
        &mut c,
        &p,
        (2, 1, &key_of_one),
        &for_three.to_bytes().unwrap(),
    );
    let msg = resealed(&from(&inbox, 2, 1), sealed);
    replace(&mut inbox, 1, msg);
    (c, p, r1, inbox, started)
}

#[test]
fn a_member_that_sends_an_invalid_share_is_accused_and_the_proof_verifies() {
    let c = Cluster::unkeyed(901, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let (c, p, r1, inbox, _) = cheating_run(c, p);
    let err = finish_at(&c, &p, &inbox, 1).unwrap_err();
    let accusation = err.accusation().cloned().expect("an accusation");
    let DkgPayload::Accuse { hpke_secret, .. } = &accusation.payload else {
        panic!("not an accusation: {accusation:?}")
    };
    // The revealed key appears in no error text and no Debug output.
    let secret = hex::encode(hpke_secret.as_bytes());
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{accusation:?}"),
    ] {
        assert!(!text.contains(&secret), "{text}");
    }
    assert_eq!(fault_of(err), (1, Some(2), DkgFault::InvalidPackage));

    let proof = DkgShareProof::new(DkgKind::Fresh, r1.clone(), from(&inbox, 2, 1), accusation);
    let proven = proof.verify(&config(&c)).unwrap();
    assert_eq!(
        (proven.accused, proven.accuser, proven.fault, proven.session),
        (seat(2), seat(1), DkgShareFault::Invalid, p.session)
    );
    // The file form reads back to the same proof, which verifies.
    let json = serde_json::to_string_pretty(&proof).unwrap();
    let BlameFile::DkgShare(back) = BlameFile::from_json(json.as_bytes()).unwrap() else {
        panic!("read back as another kind")
    };
    assert_eq!(*back, proof);
    assert_eq!(back.verify(&config(&c)).unwrap(), proven);
    // Seat 3 got only honest packages: it finishes, revealing nothing.
    let confirmation = finish_at(&c, &p, &inbox, 3).unwrap();
    assert!(matches!(confirmation.payload, DkgPayload::Confirm { .. }));
}

/// The same in a share refresh, whose shares are checked against
/// commitments without the constant term: proven only as the refresh its
/// accused signed.
#[test]
fn a_member_that_sends_an_invalid_refresh_share_is_proven_as_a_refresh() {
    let c = Cluster::new(908, 2, 3, &["w"], thresig_engine::Limits::default());
    let p = refresh_of(&c, "w", 3, 0);
    let (c, p, r1, inbox, started) = cheating_run(c, p);
    let accusation = accusation_at(&c, &p, &inbox, (1, 2, DkgFault::InvalidPackage));
    let proof = DkgShareProof::new(p.kind.clone(), r1.clone(), from(&inbox, 2, 1), accusation);
    let proven = proof.verify(&config(&c)).unwrap();
    assert_eq!(
        (proven.accused, proven.fault),
        (seat(2), DkgShareFault::Invalid)
    );
    // The file form, with its refresh kind, reads back and verifies.
    let json = serde_json::to_string_pretty(&proof).unwrap();
    let BlameFile::DkgShare(back) = BlameFile::from_json(json.as_bytes()).unwrap() else {
        panic!("read back as another kind")
    };
    assert_eq!(*back, proof);
    assert_eq!(back.verify(&config(&c)).unwrap(), proven);
    let mut as_fresh = proof;
    as_fresh.dkg = DkgKind::Fresh;
    assert!(matches!(
        as_fresh.verify(&config(&c)),
        Err(BlameError::DkgEcho { .. })
    ));
    // Seat 3 got seat 2's honest refresh package (checked at x = 3, where
    // a fresh DKG's reading of the commitments differs): accusing it with
    // seat 3's real key shows no fault.
    let (_, secret) = own_secrets(&c, &p, 3, started[&seat(3)].clone());
    let accusation = accuse(&p, 3, secret);
    let honest = DkgShareProof::new(p.kind.clone(), r1, from(&inbox, 2, 3), accusation);
    assert_eq!(
        honest.verify(&config(&c)).unwrap_err().code(),
        "blame_no_fault"
    );
}

/// Seat 2's message to seat 1 carrying the package it sealed to seat 3
/// (re-signed by seat 2): it does not open at seat 1.
fn unopenable(inbox: &mut Inbox) {
    let theirs = from(inbox, 2, 3);
    let DkgPayload::Round2 { sealed, .. } = &theirs.payload else {
        panic!("not round 2")
    };
    let msg = resealed(&from(inbox, 2, 1), sealed.0.clone());
    replace(inbox, 1, msg);
}

/// A package that does not open is proven, in a fresh DKG and in a
/// refresh; each proof verifies only under the session kind its accused
/// signed (the echo covers the kind, the epoch and the removal set).
#[test]
fn a_package_that_does_not_open_is_proven_under_its_own_session_kind_only() {
    let mut c = Cluster::unkeyed(902, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let mut inbox = part2(&mut c, &p, &r1);
    unopenable(&mut inbox);
    let accusation = accusation_at(&c, &p, &inbox, (1, 2, DkgFault::BadSeal));
    let fresh = DkgShareProof::new(DkgKind::Fresh, r1, from(&inbox, 2, 1), accusation);
    assert_eq!(
        fresh.verify(&config(&c)).unwrap().fault,
        DkgShareFault::Unopened
    );
    let mut as_refresh = fresh.clone();
    as_refresh.dkg = DkgKind::Refresh {
        from_epoch: WalletEpoch(0),
        removed: Vec::new(),
    };
    assert!(
        matches!(as_refresh.verify(&config(&c)), Err(BlameError::DkgEcho { seat, .. }) if seat.get() == 2)
    );

    let mut c = Cluster::new(903, 2, 3, &["w"], thresig_engine::Limits::default());
    let p = refresh_of(&c, "w", 2, 0);
    let r1 = part1(&mut c, &p);
    let mut inbox = part2(&mut c, &p, &r1);
    unopenable(&mut inbox);
    let accusation = accusation_at(&c, &p, &inbox, (1, 2, DkgFault::BadSeal));
    let refresh = DkgShareProof::new(p.kind.clone(), r1, from(&inbox, 2, 1), accusation);
    assert_eq!(
        refresh.verify(&config(&c)).unwrap().fault,
        DkgShareFault::Unopened
    );
    let other_epoch = DkgKind::Refresh {
        from_epoch: WalletEpoch(1),
        removed: Vec::new(),
    };
    for claimed in [DkgKind::Fresh, other_epoch] {
        let mut wrong = refresh.clone();
        wrong.dkg = claimed.clone();
        let err = wrong.verify(&config(&c)).unwrap_err();
        assert_eq!(err.code(), "blame_dkg_echo", "{claimed:?}: {err}");
    }
}

/// An honest 2-of-3 DKG through part 2, with seat 1 on the relay's side:
/// its signed accusation of seat 2, revealing its real session key.
struct Framing {
    c: Cluster,
    p: DkgProposal,
    r1: Vec<SignedDkgMessage>,
    inbox: Inbox,
    accusation: SignedDkgMessage,
}

/// Seat `by`'s signed accusation of seat 2 in `p`'s session, revealing
/// `secret`.
fn accuse(p: &DkgProposal, by: u16, secret: RevealedHpkeKey) -> SignedDkgMessage {
    SignedDkgMessage::sign(
        &identity_secret(by),
        p.session,
        p.wallet.clone(),
        seat(by),
        DkgPayload::Accuse {
            accused: seat(2),
            hpke_secret: secret,
        },
    )
}

fn framing(seed: u64) -> Framing {
    let mut c = Cluster::unkeyed(seed, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let (r1, started) = part1_recorded(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    let (_, secret) = own_secrets(&c, &p, 1, started[&seat(1)].clone());
    let accusation = accuse(&p, 1, secret);
    Framing {
        c,
        p,
        r1,
        inbox,
        accusation,
    }
}

impl Framing {
    /// The proof against seat 2 of what seat 2 really sent seat 1.
    fn proof(&self) -> DkgShareProof {
        DkgShareProof::new(
            DkgKind::Fresh,
            self.r1.clone(),
            from(&self.inbox, 2, 1),
            self.accusation.clone(),
        )
    }

    /// The code `proof` fails with.
    fn refused(&self, proof: &DkgShareProof) -> &'static str {
        proof.verify(&config(&self.c)).unwrap_err().code()
    }
}

#[test]
fn a_relay_cannot_build_a_verifying_proof_against_an_honest_member() {
    let f = framing(904);
    let honest = f.proof();
    assert!(
        matches!(honest.verify(&config(&f.c)), Err(BlameError::NoFault { seat, .. }) if seat.get() == 2),
        "{:?}",
        honest.verify(&config(&f.c))
    );

    // The ciphertext altered: no longer seat 2's signature.
    let mut altered = honest.clone();
    let DkgPayload::Round2 { sealed, .. } = &mut altered.round2.payload else {
        panic!("not round 2")
    };
    let last = sealed.0.len() - 1;
    sealed.0[last] ^= 1;
    assert_eq!(f.refused(&altered), "blame_bad_signature");

    // Another run of the same session id (the members' identity keys are
    // the same): each of its validly signed round-1 messages swapped in,
    // and with the accuser's, that run's accuser key revealed.
    let mut other = Cluster::unkeyed(905, 2, 3, &["w"]);
    let (r1_other, started) = part1_recorded(&mut other, &f.p);
    let (_, other_secret) = own_secrets(&other, &f.p, 1, started[&seat(1)].clone());
    for s in 1..=3u16 {
        let mut swapped = honest.clone();
        let i = swapped
            .round1
            .iter()
            .position(|m| m.sender == seat(s))
            .unwrap();
        swapped.round1[i] = r1_other[usize::from(s) - 1].clone();
        if s == 1 {
            swapped.accusation = accuse(&f.p, 1, other_secret.clone());
        }
        assert_eq!(f.refused(&swapped), "blame_dkg_echo", "seat {s}");
    }

    // The other kind claimed.
    let mut refresh = honest.clone();
    refresh.dkg = DkgKind::Refresh {
        from_epoch: WalletEpoch(0),
        removed: Vec::new(),
    };
    assert_eq!(f.refused(&refresh), "blame_dkg_echo");

    // Another key revealed than the accuser's of this session.
    let mut rekeyed = honest.clone();
    rekeyed.accusation = accuse(&f.p, 1, other_secret);
    assert_eq!(f.refused(&rekeyed), "blame_dkg_key");

    // Seat 3 accuses seat 2 of the package seat 2 sent seat 1.
    let mut third = honest.clone();
    third.accusation = accuse(&f.p, 3, RevealedHpkeKey::new(vec![1; 32]));
    assert_eq!(f.refused(&third), "blame_dkg_parts");

    // A round-1 message missing or given twice.
    let mut short = honest.clone();
    short.round1.pop();
    assert_eq!(f.refused(&short), "blame_dkg_round1");
    let mut twice = honest;
    twice.round1.push(twice.round1[0].clone());
    assert_eq!(f.refused(&twice), "blame_dkg_round1");
}

/// An honest member that signed two round-1 messages for one session (it
/// restarted after part 1 and was started again) is held to the one its
/// round-2 message names: a proof combining the first with its round-2
/// message from the second does not verify.
#[test]
fn an_honest_member_restarted_mid_session_cannot_be_framed_with_its_first_round1() {
    let mut c = Cluster::unkeyed(906, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let (first, started) = part1_recorded(&mut c, &p);
    c.restart(2);
    let again = c.members[1]
        .signer()
        .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
        .unwrap();
    assert_ne!(again, first[1], "a restarted member draws a new package");
    let mut r1 = first.clone();
    r1[1] = again;
    let inbox = part2(&mut c, &p, &r1);
    let (_, secret) = own_secrets(&c, &p, 1, started[&seat(1)].clone());
    let accusation = accuse(&p, 1, secret);
    let with = |round1: &[SignedDkgMessage]| {
        DkgShareProof::new(
            DkgKind::Fresh,
            round1.to_vec(),
            from(&inbox, 2, 1),
            accusation.clone(),
        )
        .verify(&config(&c))
        .unwrap_err()
        .code()
    };
    assert_eq!(with(&first), "blame_dkg_echo");
    assert_eq!(with(&r1), "blame_no_fault");
}

/// Relay faults accuse no one and reveal nothing; a part 3 that succeeds
/// reveals nothing, and asking it again with a bad package afterwards
/// draws its confirmation, no accusation.
#[test]
fn only_a_failed_part_3_that_names_a_senders_package_reveals_the_session_key() {
    let mut c = Cluster::unkeyed(907, 2, 3, &["w"]);
    let relay_faults: [RelayFault; 5] = [
        ("misrouted", |inbox| {
            let msg = from(inbox, 2, 3);
            replace(inbox, 1, msg);
        }),
        ("duplicated", |inbox| {
            let msg = from(inbox, 2, 1);
            inbox.get_mut(&seat(1)).unwrap().push(msg);
        }),
        ("missing", |inbox| {
            inbox
                .get_mut(&seat(1))
                .unwrap()
                .retain(|m| m.sender != seat(2));
        }),
        // Signed by seat 2, but over another echo than seat 1's: the two
        // saw different round-1 sets, which only the relay can cause.
        ("echo mismatch", |inbox| {
            let msg = resigned(&from(inbox, 2, 1), |payload| {
                let DkgPayload::Round2 { echo, .. } = payload else {
                    panic!("not round 2")
                };
                echo.0[0] ^= 1;
            });
            replace(inbox, 1, msg);
        }),
        // The ciphertext altered after seat 2 signed it.
        ("bad signature", |inbox| {
            let mut msg = from(inbox, 2, 1);
            let DkgPayload::Round2 { sealed, .. } = &mut msg.payload else {
                panic!("not round 2")
            };
            sealed.0[0] ^= 1;
            replace(inbox, 1, msg);
        }),
    ];
    // Each in a session of its own: a failure ends seat 1's session.
    for (session, (name, fault)) in (1..).zip(relay_faults) {
        let p = proposal(&c, "w", session);
        let r1 = part1(&mut c, &p);
        let mut inbox = part2(&mut c, &p, &r1);
        fault(&mut inbox);
        let err = finish_at(&c, &p, &inbox, 1).unwrap_err();
        assert!(err.accusation().is_none(), "{name}: {err:?}");
        assert_eq!(fault_of(err).1, None, "{name}");
        // Seat 3's inbox is untouched: its part 3 confirms.
        let confirmation = finish_at(&c, &p, &inbox, 3);
        assert!(
            matches!(&confirmation, Ok(m) if matches!(m.payload, DkgPayload::Confirm { .. })),
            "{name}: {confirmation:?}"
        );
        for s in 1..=3 {
            let _ = c.member(s).signer().dkg_abort(&wid("w"), p.session);
        }
    }

    // A session run honestly.
    let p = proposal(&c, "w", 9);
    let (r1, started_again) = part1_recorded(&mut c, &p);
    let mut inbox = part2(&mut c, &p, &r1);
    for s in seats(&c) {
        let confirmation = finish_at(&c, &p, &inbox, s);
        let Ok(confirmation) = confirmation else {
            panic!("seat {s}: part 3 refused: {confirmation:?}")
        };
        let (_, secret) = own_secrets(&c, &p, s, started_again[&seat(s)].clone());
        let json = serde_json::to_string(&confirmation).unwrap();
        assert!(!json.contains(&hex::encode(secret.as_bytes())), "seat {s}");
        assert!(
            matches!(confirmation.payload, DkgPayload::Confirm { .. }),
            "seat {s}: {confirmation:?}"
        );
    }
    // Asked again with a package that does not open: the finished
    // session answers with its confirmation, never an accusation.
    unopenable(&mut inbox);
    let again = finish_at(&c, &p, &inbox, 1).unwrap();
    assert!(
        matches!(again.payload, DkgPayload::Confirm { .. }),
        "{again:?}"
    );
}

/// A reply carrying an accusation may be lost: the byte-identical part 3
/// is answered with the same refusal and the same accusation; any other
/// part 3 of the session is refused as before, the failed session never
/// confirms, and a new session starts at once.
#[test]
fn a_failed_part_3_answers_its_identical_retry_with_the_same_accusation() {
    let mut c = Cluster::unkeyed(909, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let mut inbox = part2(&mut c, &p, &r1);
    unopenable(&mut inbox);
    let first = finish_at(&c, &p, &inbox, 1).unwrap_err();
    let accusation = first.accusation().cloned().expect("an accusation");
    let again = finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert_eq!(again.accusation(), Some(&accusation), "{again:?}");
    assert_eq!(fault_of(again), (1, Some(2), DkgFault::BadSeal));

    // Another request of the session: refused, revealing nothing.
    let mut other = inbox.clone();
    other.get_mut(&seat(1)).unwrap().reverse();
    let err = finish_at(&c, &p, &other, 1).unwrap_err();
    assert_eq!(
        err.code(),
        thresig_engine::ErrorCode::DkgNotInPhase,
        "{err:?}"
    );
    // The identical one still draws the accusation, never a confirmation.
    let err = finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert_eq!(err.accusation(), Some(&accusation));

    // A new session (here by another coordinator) is not held up.
    let next = proposal(&c, "w", 2);
    c.members[0]
        .signer()
        .dkg_start(
            c.now,
            thresig_engine::test_util::coordinator(2),
            &next,
            &mut c.rng,
        )
        .unwrap();
    let err = finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert!(err.accusation().is_none(), "{err:?}");

    // The relay's cancel of its failed run drops the kept accusation.
    let mut c = Cluster::unkeyed(911, 2, 3, &["w"]);
    let p = proposal(&c, "w", 3);
    let r1 = part1(&mut c, &p);
    let mut inbox = part2(&mut c, &p, &r1);
    unopenable(&mut inbox);
    assert!(
        finish_at(&c, &p, &inbox, 1)
            .unwrap_err()
            .accusation()
            .is_some()
    );
    c.member(1)
        .signer()
        .dkg_cancel(
            thresig_engine::test_util::coordinator(1),
            &p.wallet,
            p.session,
        )
        .unwrap();
    let err = finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert_eq!(
        err.code(),
        thresig_engine::ErrorCode::DkgNotInPhase,
        "{err:?}"
    );
}

/// A seat an earlier refresh removed stays in the roster and can sign: a
/// round-2 message of its own in a member's part 3 is a relay fault found
/// before any package is opened, so no one is accused and no key revealed.
#[test]
fn an_unexpected_sender_in_part_3_reveals_nothing() {
    let mut c = Cluster::new(910, 2, 3, &["w"], thresig_engine::Limits::default());
    for s in seats(&c) {
        c.members[usize::from(s) - 1].config.wallets[0].remove = vec![seat(3)];
        c.restart(s);
    }
    let p = proposal(&c, "w", 1).with_kind(DkgKind::Refresh {
        from_epoch: WalletEpoch(0),
        removed: vec![seat(3)],
    });
    let r1: Vec<SignedDkgMessage> = [1, 2]
        .map(|s| {
            c.members[s - 1]
                .signer()
                .dkg_start(
                    c.now,
                    thresig_engine::test_util::coordinator(1),
                    &p,
                    &mut c.rng,
                )
                .unwrap()
        })
        .to_vec();
    let mut inbox = part2_each(&mut c, &p, |s| {
        r1.iter().filter(|m| m.sender != s).cloned().collect()
    });
    inbox.remove(&seat(3));
    let mut inbox = route(inbox.into_values().flat_map(Result::unwrap));
    // Seat 3 signs a package that opens nowhere, with seat 1's echo, and
    // the relay puts it first.
    let mut payload = from(&inbox, 2, 1).payload;
    let DkgPayload::Round2 { sealed, .. } = &mut payload else {
        panic!("not round 2")
    };
    sealed.0 = vec![7; sealed.0.len()];
    let garbage = SignedDkgMessage::sign(
        &identity_secret(3),
        p.session,
        p.wallet.clone(),
        seat(3),
        payload,
    );
    inbox.get_mut(&seat(1)).unwrap().insert(0, garbage);
    let err = finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert!(err.accusation().is_none(), "{err:?}");
    assert_eq!(fault_of(err), (1, None, DkgFault::UnexpectedPayload));
}

/// Part 3 of a session commits (the wallet awaits its confirmations); the
/// relay then runs the same session again and part 3 fails with an
/// accusation. The operator's abort of the session still deletes the
/// stored result: the failed rerun in memory does not stand in for it.
#[test]
fn aborting_a_failed_rerun_of_a_committed_session_deletes_its_result() {
    use thresig_store::{KeyEpoch, Store};
    let mut c = Cluster::unkeyed(912, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    let held = |c: &Cluster| {
        let stored = c.member(1).store().key_package(&p.wallet, KeyEpoch(1));
        stored.unwrap().is_some()
    };
    confirmations(&c, &p, &inbox);
    assert!(held(&c));
    let r1 = part1(&mut c, &p);
    let mut inbox = part2(&mut c, &p, &r1);
    unopenable(&mut inbox);
    let err = finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert!(err.accusation().is_some(), "{err:?}");
    c.member(1)
        .signer()
        .dkg_abort(&p.wallet, p.session)
        .unwrap();
    assert_eq!(
        state(&c, 1, "w"),
        thresig_engine::WalletStateKind::DkgPending
    );
    assert!(!held(&c), "the key package is deleted");
    assert!(
        c.member(1)
            .store()
            .dkg_results(&p.wallet)
            .unwrap()
            .is_empty()
    );
}

/// A cheater that attaches a kind-bound signature to its round-2 message
/// (a field only round-1 messages carry) does not get it into the proof:
/// the file holds no unchecked field that earlier builds refuse, and it
/// verifies.
#[test]
fn a_round2_message_carrying_a_kind_signature_is_proven_without_it() {
    let c = Cluster::unkeyed(907, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let (c, p, r1, mut inbox, _) = cheating_run(c, p);
    let round2 = from(&inbox, 2, 1).with_kind_signature(Some(HexBytes(vec![7; 64])));
    replace(&mut inbox, 1, round2.clone());
    let accusation = accusation_at(&c, &p, &inbox, (1, 2, DkgFault::InvalidPackage))
        .with_kind_signature(Some(HexBytes(vec![9; 64])));
    let proof = DkgShareProof::new(DkgKind::Fresh, r1, round2, accusation);
    assert_eq!(proof.round2.kind_signature, None);
    assert_eq!(proof.accusation.kind_signature, None);
    let json = serde_json::to_string(&proof).unwrap();
    assert!(!json.contains("kind_signature"), "{json}");
    assert!(proof.verify(&config(&c)).is_ok());
}
