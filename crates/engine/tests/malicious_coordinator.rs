//! A malicious coordinator, one test per case of the checklist,
//! driving several engine signers in-process exactly as a coordinator
//! would (sans-IO). Every case names the error each honest member returns
//! and checks that no member becomes active or releases a share:
//!
//! - (a) a round-1 package altered for some members: an echo mismatch at
//!   every honest member;
//! - (b) a member's round-1 package substituted consistently for everyone:
//!   the identity signature does not verify;
//! - (c) a swapped identity key, another threshold or another roster:
//!   refused by every signer, whose configuration disagrees;
//! - (d) the round-2 bytes it relays open only with the recipient's session
//!   key, and do not contain the plaintext package;
//! - (e) a signing package naming an identifier outside the roster, or a
//!   message that is not the PSBT's sighash: refused.

mod common;

use std::collections::BTreeMap;

use common::dkg::*;
use common::psbt::*;
use common::*;
use thresig_crypto::{DkgRound1, GroupParams, Round1Package, ScriptTree, Seat};
use thresig_engine::{
    DkgFault, DkgPayload, DkgProposal, DkgSessionId, Error, ErrorCode, HexBytes, Limits,
    SignedDkgMessage, SigningTarget, WalletStateKind,
};
use thresig_store::{KeyEpoch, Store};

/// No member holds a key package for `wallet`, and none is active.
fn assert_no_member_keyed(c: &Cluster, wallet: &str) {
    for s in seats(c) {
        assert_eq!(state(c, s, wallet), WalletStateKind::DkgPending, "seat {s}");
        let stored = c
            .member(s)
            .store()
            .key_package(&wid(wallet), KeyEpoch(1))
            .unwrap();
        assert!(stored.is_none(), "seat {s} stored a key package");
    }
}

/// (a) The coordinator needs no key to hand members different, validly
/// signed round-1 sets: it asks seat 4 to start the session twice (a
/// repeated start answers the same package while the session lives, so it
/// waits until seat 4's copy expired), then relays seat 4's first package
/// to seat 3 and its second to everyone else. Every message verifies and
/// every member is honest; only the echo hash shows that the members saw
/// different round-1 sets, and every member stops there.
#[test]
fn a_round1_package_altered_for_some_members_fails_the_echo_at_every_honest_member() {
    let mut c = Cluster::unkeyed(301, 3, 4, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let same = c.members[3]
        .signer()
        .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
        .unwrap();
    assert_eq!(same, r1[3], "a live session's start is answered again");
    let later = c
        .now
        .saturating_add(std::time::Duration::from_secs(11 * 60));
    let second = c.members[3]
        .signer()
        .dkg_start(later, coordinator(1), &p, &mut c.rng)
        .unwrap();
    assert_ne!(second.payload, r1[3].payload);
    let out = part2_each(&mut c, &p, |s| {
        r1.iter()
            .filter(|m| m.sender != s)
            .map(|m| match (s.get(), m.sender.get()) {
                (3, _) | (_, 1..=3) => m.clone(),
                _ => second.clone(),
            })
            .collect()
    });
    // Part 2 succeeds everywhere: nothing is wrong with any one message.
    let inbox = route(out.into_values().flat_map(Result::unwrap));
    for (s, result) in seats(&c).zip(part3(&c, &p, &inbox)) {
        let err = result.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DkgFailed);
        // No member is accused: every member is honest, and nothing shows
        // which one the relay lied to.
        assert_eq!(fault_of(err), (s, None, DkgFault::EchoMismatch), "seat {s}");
    }
    assert_no_member_keyed(&c, "w");
}

/// How the coordinator makes a substitute for a genuine round-1 message,
/// given a package of its own.
type Substitute = fn(&SignedDkgMessage, &DkgPayload) -> SignedDkgMessage;

/// (b) Without seat 2's identity key the coordinator cannot sign a
/// substitute: its own package under seat 2's genuine signature, under its
/// own key, or seat 2's genuine package of another session all fail the
/// signature check at every other member, as a relay fault accusing no
/// one, and each stops its session.
#[test]
fn a_round1_package_substituted_for_everyone_fails_the_signature_check() {
    const VICTIM: u16 = 2;
    let mut c = Cluster::unkeyed(303, 2, 3, &["w"]);
    // A round-1 package the coordinator made up (another cluster's).
    let mut forger = Cluster::unkeyed(304, 2, 3, &["w"]);
    let forged_proposal = proposal(&forger, "w", 1);
    let made_up = forger.members[0]
        .signer()
        .dkg_start(
            forger.now,
            coordinator(1),
            &forged_proposal,
            &mut forger.rng,
        )
        .unwrap()
        .payload;
    let substitutes: [(&str, Substitute); 3] = [
        ("its own package, seat 2's signature", |genuine, made_up| {
            SignedDkgMessage::new(
                genuine.session,
                genuine.wallet.clone(),
                seat(VICTIM),
                made_up.clone(),
                genuine.signature.clone(),
            )
        }),
        (
            "its own package, signed by an outsider",
            |genuine, made_up| {
                SignedDkgMessage::sign(
                    &identity_secret(9),
                    genuine.session,
                    genuine.wallet.clone(),
                    seat(VICTIM),
                    made_up.clone(),
                )
            },
        ),
        ("seat 2's package of another session", |genuine, _| {
            SignedDkgMessage::sign(
                &identity_secret(VICTIM),
                DkgSessionId([0xee; 32]),
                genuine.wallet.clone(),
                seat(VICTIM),
                genuine.payload.clone(),
            )
        }),
    ];
    for (session, (what, substitute)) in (1u8..).zip(substitutes) {
        // Seat 2 still holds the previous session until it expires.
        c.advance(std::time::Duration::from_secs(11 * 60));
        let p = proposal(&c, "w", session);
        let r1 = part1(&mut c, &p);
        let fake = substitute(&r1[usize::from(VICTIM) - 1], &made_up);
        let out = part2_each(&mut c, &p, |s| {
            r1.iter()
                .filter(|m| m.sender != s)
                .map(|m| {
                    if m.sender.get() == VICTIM {
                        fake.clone()
                    } else {
                        m.clone()
                    }
                })
                .collect()
        });
        for (s, result) in out {
            let s = s.get();
            if s == VICTIM {
                // Seat 2 was relayed the genuine packages of the others.
                assert!(result.is_ok(), "{what}: seat 2");
                continue;
            }
            let err = result.unwrap_err();
            assert_eq!(err.code(), ErrorCode::DkgFailed, "{what}");
            assert_eq!(fault_of(err), (s, None, DkgFault::BadSignature), "{what}");
            // The session stopped: the genuine packages no longer help.
            let genuine: Vec<_> = r1.iter().filter(|m| m.sender.get() != s).cloned().collect();
            let again = c.member(s).signer().dkg_round2(
                c.now,
                coordinator(1),
                &p.wallet,
                p.session,
                &genuine,
                &mut *c.fresh_rng.borrow_mut(),
            );
            assert!(
                matches!(again, Err(Error::DkgNotInPhase { .. })),
                "{what}: {again:?}"
            );
        }
        assert_no_member_keyed(&c, "w");
    }
}

/// How the coordinator alters the honest proposal.
type Edit = fn(&mut DkgProposal);

/// (c) A proposal that swaps a seat's identity key, or announces another
/// threshold or roster, is refused by every signer before it starts
/// anything, and leaves the honest session in progress untouched.
#[test]
fn a_swapped_identity_key_threshold_or_roster_is_refused_by_every_signer() {
    let mut c = Cluster::unkeyed(305, 2, 3, &["w"]);
    let honest = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &honest);
    let edits: [(&str, Edit); 6] = [
        ("seat 2's identity key swapped", |p| {
            p.roster[1] = identity(9)
        }),
        ("a higher threshold", |p| p.threshold += 1),
        ("a lower threshold", |p| p.threshold -= 1),
        ("two seats exchanged", |p| p.roster.swap(0, 1)),
        ("a member left out", |p| {
            p.roster.pop();
        }),
        ("an outsider added", |p| p.roster.push(identity(9))),
    ];
    for (what, edit) in edits {
        // The same session id as the honest one, and a fresh one.
        for session in [1, 2] {
            let mut p = proposal(&c, "w", session);
            edit(&mut p);
            for s in seats(&c) {
                let err =
                    c.member(s)
                        .signer()
                        .dkg_start(c.now, coordinator(1), &p, &mut c.rng.clone());
                let err = err.unwrap_err();
                assert!(matches!(err, Error::DkgMismatch { .. }), "{what}: {err:?}");
                assert_eq!(err.code(), ErrorCode::DkgMismatch, "{what}");
            }
        }
    }
    assert_no_member_keyed(&c, "w");
    // The honest session carries on to an active wallet.
    let inbox = part2(&mut c, &honest, &r1);
    activate_everywhere(&c, "w", &confirmations(&c, &honest, &inbox));
}

/// Whether `needle` occurs anywhere in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// (d) The round-2 packages the coordinator relays are sealed to the
/// recipient's per-session key: re-addressed to another member, or opened
/// by another member, they fail; and the bytes it sees do not contain the
/// plaintext package (recomputed here from seat 2's replayed randomness).
#[test]
fn relayed_round2_packages_open_only_with_the_recipients_session_key() {
    let mut c = Cluster::unkeyed(306, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let mut r1 = Vec::new();
    let mut seat2_rng = None;
    for s in seats(&c) {
        if s == 2 {
            seat2_rng = Some(c.rng.clone());
        }
        let signer = c.members[usize::from(s) - 1].signer();
        r1.push(
            signer
                .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
                .unwrap(),
        );
    }
    // Seat 2's round-1 secret, recomputed from the same randomness: its
    // package is byte-identical to the one seat 2 sent.
    let params = GroupParams::new(2, 3).unwrap();
    let (secret, package) = DkgRound1::start(
        params,
        seat(2),
        ScriptTree::KeyPathOnly,
        &mut seat2_rng.unwrap(),
    )
    .unwrap();
    let DkgPayload::Round1 { package: sent, .. } = &r1[1].payload else {
        panic!("not round 1")
    };
    assert_eq!(package.to_bytes().unwrap(), sent.0);
    let peers = [1, 3]
        .map(|s| {
            let DkgPayload::Round1 { package, .. } = &r1[usize::from(s) - 1].payload else {
                panic!("not round 1")
            };
            (seat(s), Round1Package::from_bytes(&package.0).unwrap())
        })
        .to_vec();
    let (_, plaintexts) = secret.receive(peers).unwrap();
    let plaintexts: BTreeMap<Seat, Vec<u8>> = plaintexts
        .into_iter()
        .map(|(to, package)| (to, package.to_bytes().unwrap().to_vec()))
        .collect();

    let inbox = part2(&mut c, &p, &r1);
    let from2 = |to: u16| {
        inbox[&seat(to)]
            .iter()
            .find(|m| m.sender.get() == 2)
            .unwrap()
            .clone()
    };
    // What the coordinator relays holds no plaintext package, nor any 16
    // bytes of one, in its bytes or its JSON form.
    for to in [1, 3] {
        let DkgPayload::Round2 { sealed, .. } = &from2(to).payload else {
            panic!("not round 2")
        };
        let plain = &plaintexts[&seat(to)];
        assert!(plain.len() >= 32);
        assert!(!contains(&sealed.0, plain));
        assert!(plain.windows(16).all(|w| !contains(&sealed.0, w)));
        let json = serde_json::to_string(&inbox[&seat(to)]).unwrap();
        assert!(!json.contains(&hex::encode(plain)));
    }

    // Re-addressed: seat 2's message to seat 3 relayed to seat 1. The
    // signature covers the recipient, so it is refused as misrouted, and,
    // since seat 2 did sign it for seat 3, as a relay fault.
    let mut misrouted = inbox[&seat(1)].clone();
    for m in &mut misrouted {
        if m.sender.get() == 2 {
            *m = from2(3);
        }
    }
    let err = c
        .member(1)
        .signer()
        .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &misrouted)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DkgFailed);
    assert_eq!(fault_of(err), (1, None, DkgFault::WrongRecipient));
    // Seat 2's message to seat 1 with its recipient rewritten to seat 3:
    // the signature fails.
    let mut readdressed = inbox[&seat(3)].clone();
    for m in &mut readdressed {
        if m.sender.get() == 2 {
            *m = from2(1);
            let DkgPayload::Round2 { to, .. } = &mut m.payload else {
                panic!("not round 2")
            };
            *to = seat(3);
        }
    }
    let err = c
        .member(3)
        .signer()
        .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &readdressed)
        .unwrap_err();
    assert_eq!(fault_of(err), (3, None, DkgFault::BadSignature));
    assert_no_member_keyed(&c, "w");

    // Opened with another key: even re-signed by seat 2 itself, the
    // package sealed to seat 3 does not open with seat 1's session key.
    let mut c = Cluster::unkeyed(307, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let mut inbox = part2(&mut c, &p, &r1);
    tampered(&mut inbox, |payload, to_three| {
        let other = to_three.iter().find(|m| m.sender.get() == 2).unwrap();
        let DkgPayload::Round2 { sealed: theirs, .. } = &other.payload else {
            panic!("not round 2")
        };
        let DkgPayload::Round2 { sealed, .. } = payload else {
            panic!("not round 2")
        };
        *sealed = HexBytes(theirs.0.clone());
    });
    let err = part3(&c, &p, &inbox).remove(0).unwrap_err();
    assert_eq!(fault_of(err), (1, Some(2), DkgFault::BadSeal));
    assert_eq!(state(&c, 1, "w"), WalletStateKind::DkgPending);
}

/// (e) Round 2 over a signing package that names an identifier outside the
/// roster, or whose message is not the PSBT's sighash, is refused by every
/// signer asked; neither releases a share nor spends a nonce, and the
/// honest request then signs with the same commitments.
#[test]
fn a_signing_package_outside_the_roster_or_not_the_psbts_sighash_is_refused() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy())];
    let mut c = Cluster::with_wallets(308, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let psbt = spend(&w, 2, 1);
    let bytes = psbt.serialize();
    let honest = sighashes(&psbt);
    let comms = round1(&mut c, "w", &[1, 2], honest.len());
    let target = || SigningTarget::psbt(bytes.clone());
    let signers = [1, 2];
    let assert_nothing_released = |c: &Cluster| {
        for s in signers {
            assert!(c.member(s).marker("w", &comms[&s][0]).is_none(), "seat {s}");
        }
    };

    // Seat 4 does not exist in the 3-member roster.
    let mut outside = comms.clone();
    outside.insert(4, comms[&2].clone());
    let req = c.request_for("w", &outside, &honest, target());
    for s in signers {
        let err = c.round2(s, &req).unwrap_err();
        assert!(
            matches!(err, Error::IdentifierNotInRoster { identifier, .. } if identifier.get() == 4),
            "seat {s}: {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::RosterMismatch);
    }
    assert_nothing_released(&c);

    // A message that is not the second input's sighash.
    let mut wrong = honest.clone();
    wrong[1] = [7; 32];
    let req = c.request_for("w", &comms, &wrong, target());
    for s in signers {
        let err = c.round2(s, &req).unwrap_err();
        assert!(
            matches!(err, Error::MessageMismatch { input: 1, .. }),
            "seat {s}: {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
    }
    assert_nothing_released(&c);

    let req = c.request_for("w", &comms, &honest, target());
    let shares: BTreeMap<u16, Vec<Vec<u8>>> = signers
        .iter()
        .map(|s| (*s, c.round2(*s, &req).unwrap()))
        .collect();
    assert_eq!(c.aggregate("w", &req, &shares).len(), 2);
}
