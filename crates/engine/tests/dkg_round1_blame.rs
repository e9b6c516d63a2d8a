//! DKG round-1 blame proofs (docs/blame.md, "The DKG"): a member whose
//! signed round-1 package fails part 2's checks is proven with its
//! kind-bound signature, and no relay can make an honest member's round-1
//! message into a verifying proof by changing what it controls (the kind,
//! the session, the wallet, the seat). Malicious members are simulated
//! with the harness's identity keys.

mod common;

use common::dkg::*;
use common::*;
use thresig_crypto::{Round1Fault, Seat};
use thresig_engine::test_util::identity_secret;
use thresig_engine::{
    BlameError, BlameFile, DkgFault, DkgKind, DkgPayload, DkgProposal, DkgRound1Proof,
    DkgSessionId, HexBytes, Round1Answer, SignedDkgMessage, WalletConfig, WalletEpoch, WalletId,
    check_round1_answer,
};

/// The wallet's configuration as every member holds it.
fn config(c: &Cluster) -> WalletConfig {
    c.member(3).config.wallets[0].clone()
}

/// Seat `s`'s message in `round1`.
fn of(round1: &[SignedDkgMessage], s: u16) -> SignedDkgMessage {
    round1.iter().find(|m| m.sender == seat(s)).unwrap().clone()
}

/// The package of a round-1 message.
fn package(m: &SignedDkgMessage) -> Vec<u8> {
    let DkgPayload::Round1 { package, .. } = &m.payload else {
        panic!("not round 1")
    };
    package.0.clone()
}

/// `m` with its package replaced by `package`, signed (both signatures)
/// by its sender for `kind` at the harness's threshold (2): a member that
/// cheats.
fn with_package(m: &SignedDkgMessage, package: Vec<u8>, kind: &DkgKind) -> SignedDkgMessage {
    let DkgPayload::Round1 { hpke_key, .. } = &m.payload else {
        panic!("not round 1")
    };
    let payload = DkgPayload::Round1 {
        package: HexBytes(package),
        hpke_key: hpke_key.clone(),
    };
    SignedDkgMessage::sign_round1(
        &identity_secret(m.sender.get()),
        m.session,
        m.wallet.clone(),
        m.sender,
        payload,
        (kind, 2),
    )
}

/// Part 2 at seat 1 given `round1` (every other seat's message), which
/// must fail as `(accused, fault)`.
fn part2_fails_at_one(
    c: &mut Cluster,
    p: &DkgProposal,
    round1: &[SignedDkgMessage],
) -> (Option<u16>, DkgFault) {
    let view: Vec<SignedDkgMessage> = round1
        .iter()
        .filter(|m| m.sender != Seat::FIRST)
        .cloned()
        .collect();
    let mut out = part2_each(c, p, |_| view.clone());
    let (accuser, accused, fault) = fault_of(out.remove(&Seat::FIRST).unwrap().unwrap_err());
    assert_eq!(accuser, 1);
    (accused, fault)
}

/// Every way a relay can present `honest` (seat 2's round-1 message of a
/// session of `kind`) as a proof, none verifying: under the other kinds,
/// another session, wallet or seat, and without its kind-bound signature.
fn relay_variants(c: &Cluster, honest: &SignedDkgMessage, kind: &DkgKind) {
    let wallet = config(c);
    let real = DkgRound1Proof::new(kind.clone(), honest.clone());
    assert!(
        matches!(real.verify(&wallet), Err(BlameError::DkgRound1NoFault { seat: s, .. }) if s == seat(2)),
        "{:?}",
        real.verify(&wallet)
    );
    let refresh = |from: u64, removed: &[u16]| DkgKind::Refresh {
        from_epoch: WalletEpoch(from),
        removed: removed.iter().map(|s| seat(*s)).collect(),
    };
    let kinds = [
        DkgKind::Fresh,
        refresh(0, &[]),
        refresh(1, &[]),
        refresh(0, &[3]),
    ];
    for other in kinds.iter().filter(|k| *k != kind) {
        let mut proof = real.clone();
        proof.dkg = other.clone();
        assert_eq!(
            proof.verify(&wallet).unwrap_err().code(),
            "blame_bad_signature",
            "as {other:?}"
        );
    }
    let mut session = real.clone();
    session.session = DkgSessionId([0xee; 32]);
    session.round1.session = session.session;
    assert_eq!(
        session.verify(&wallet).unwrap_err().code(),
        "blame_bad_signature"
    );
    let mut sender = real.clone();
    sender.round1.sender = seat(3);
    assert_eq!(
        sender.verify(&wallet).unwrap_err().code(),
        "blame_bad_signature"
    );
    // Another wallet of the same roster and threshold.
    let other = WalletId::new("other").unwrap();
    let mut renamed = real.clone();
    renamed.wallet = other.clone();
    renamed.round1.wallet = other.clone();
    let other_wallet = WalletConfig::new(other, wallet.threshold, wallet.roster.clone());
    assert_eq!(
        renamed.verify(&other_wallet).unwrap_err().code(),
        "blame_bad_signature"
    );
    assert_eq!(
        renamed.verify(&wallet).unwrap_err().code(),
        "blame_other_wallet"
    );
    // A verifier configured with another threshold: the signature, not
    // the package, fails.
    let other_threshold = WalletConfig::new(wallet.id.clone(), 3, wallet.roster.clone());
    assert_eq!(
        real.verify(&other_threshold).unwrap_err().code(),
        "blame_bad_signature"
    );
    // Only the old signature: no proof.
    let mut unbound = real.clone();
    unbound.round1 = unbound.round1.with_kind_signature(None);
    assert_eq!(
        unbound.verify(&wallet).unwrap_err().code(),
        "blame_bad_signature"
    );
    // The old signature in the kind-bound one's place.
    let mut swapped = real;
    swapped.round1 = swapped
        .round1
        .clone()
        .with_kind_signature(Some(swapped.round1.signature.clone()));
    assert_eq!(
        swapped.verify(&wallet).unwrap_err().code(),
        "blame_bad_signature"
    );
}

/// An honest member's fresh round-1 message proves nothing, as it is or
/// with anything the relay controls changed.
#[test]
fn an_honest_fresh_round1_cannot_be_made_a_proof() {
    let mut c = Cluster::unkeyed(931, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    relay_variants(&c, &of(&r1, 2), &DkgKind::Fresh);
}

/// Nor an honest member's refresh round-1 message, whose package (one
/// commitment fewer) fails a fresh DKG's checks: the kind it signed holds.
#[test]
fn an_honest_refresh_round1_cannot_be_made_a_proof() {
    let mut c = Cluster::new(932, 2, 3, &["w"], thresig_engine::Limits::default());
    let p = refresh_of(&c, "w", 2, 0);
    let r1 = part1(&mut c, &p);
    let honest = of(&r1, 2);
    relay_variants(&c, &honest, &p.kind);
    // What the relay would need: the package fails as a fresh one.
    let resigned_as_fresh = with_package(&honest, package(&honest), &DkgKind::Fresh);
    let fault = DkgRound1Proof::new(DkgKind::Fresh, resigned_as_fresh)
        .verify(&config(&c))
        .unwrap()
        .fault;
    assert_eq!(fault, Round1Fault::WrongCommitmentLength);
}

/// A member whose round-1 package carries another seat's proof of
/// knowledge (seat 3's package, signed by seat 2) is refused in part 2
/// naming it, and the proof of its signed message verifies; its file form
/// reads back through the strict parser, and one altered byte fails.
#[test]
fn a_round1_package_with_a_bad_proof_of_knowledge_is_proven() {
    let mut c = Cluster::unkeyed(933, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let mut r1 = part1(&mut c, &p);
    let cheat = with_package(&of(&r1, 2), package(&of(&r1, 3)), &p.kind);
    r1[1] = cheat.clone();
    assert_eq!(
        part2_fails_at_one(&mut c, &p, &r1),
        (Some(2), DkgFault::InvalidPackage)
    );
    let proof = DkgRound1Proof::new(p.kind.clone(), cheat);
    let proven = proof.verify(&config(&c)).unwrap();
    assert_eq!(
        (proven.accused, proven.fault, proven.session),
        (seat(2), Round1Fault::BadProofOfKnowledge, p.session)
    );
    let json = serde_json::to_string_pretty(&proof).unwrap();
    let BlameFile::DkgRound1(back) = BlameFile::from_json(json.as_bytes()).unwrap() else {
        panic!("read back as another kind")
    };
    assert_eq!(back.verify(&config(&c)).unwrap(), proven);
    // A field the proof does not have is refused, at every level.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["round1"]["payload"]["extra"] = serde_json::json!(1);
    assert!(BlameFile::from_json(value.to_string().as_bytes()).is_err());
}

/// A bad package under a kind-bound signature that does not verify (one
/// byte flipped) is no proof: a third party verifying the proof alone
/// checks the signature itself, and the relay's check names the
/// signature, not the package, without a proof.
#[test]
fn a_bad_round1_package_under_a_bad_kind_signature_is_not_proven() {
    let mut c = Cluster::unkeyed(939, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let cheat = with_package(&of(&r1, 2), package(&of(&r1, 3)), &p.kind);
    let wallet = config(&c);
    let proven = check_round1_answer(&wallet, (&p.kind, p.session), &cheat);
    // The relay's proof is one a third party's verify accepts.
    let Round1Answer::Proven(relayed) = &proven else {
        panic!("{proven:?}");
    };
    relayed.verify(&wallet).unwrap();
    let mut flipped_sig = cheat.kind_signature.clone().unwrap();
    flipped_sig.0[0] ^= 1;
    let flipped = cheat.with_kind_signature(Some(flipped_sig));
    let proof = DkgRound1Proof::new(p.kind.clone(), flipped.clone());
    assert_eq!(
        proof.verify(&wallet).unwrap_err().code(),
        "blame_bad_signature"
    );
    assert_eq!(
        check_round1_answer(&wallet, (&p.kind, p.session), &flipped),
        Round1Answer::BadKindSignature
    );
}

/// A package of the wrong length is proven as a wrong number of
/// commitments (a fresh package in a refresh) or as undecodable (cut
/// short).
#[test]
fn a_round1_package_of_the_wrong_length_is_proven() {
    let mut fresh = Cluster::unkeyed(934, 2, 3, &["w"]);
    let fresh_p = proposal(&fresh, "w", 1);
    let fresh_r1 = part1(&mut fresh, &fresh_p);
    let mut c = Cluster::new(935, 2, 3, &["w"], thresig_engine::Limits::default());
    let p = refresh_of(&c, "w", 2, 0);
    let r1 = part1(&mut c, &p);
    let honest = of(&r1, 2);
    let short = package(&honest)[..10].to_vec();
    for (bad, expected) in [
        (
            package(&of(&fresh_r1, 2)),
            Round1Fault::WrongCommitmentLength,
        ),
        (short, Round1Fault::Undecodable),
    ] {
        let cheat = with_package(&honest, bad, &p.kind);
        let mut view = r1.clone();
        view[1] = cheat.clone();
        let mut run = Cluster::new(935, 2, 3, &["w"], thresig_engine::Limits::default());
        let _ = part1(&mut run, &p);
        assert_eq!(
            part2_fails_at_one(&mut run, &p, &view),
            (Some(2), DkgFault::WrongPackageLength)
        );
        let proven = DkgRound1Proof::new(p.kind.clone(), cheat)
            .verify(&config(&c))
            .unwrap();
        assert_eq!((proven.accused, proven.fault), (seat(2), expected));
    }
}

/// A kind-bound signature that does not verify for the session's kind
/// (signed for another kind, or altered) makes the member refuse the
/// message, accusing nobody (the relay may have changed it).
#[test]
fn a_kind_signature_that_does_not_verify_is_refused() {
    let mut c = Cluster::unkeyed(936, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let honest = of(&r1, 2);
    let other_kind = DkgKind::Refresh {
        from_epoch: WalletEpoch(0),
        removed: Vec::new(),
    };
    let as_refresh = with_package(&honest, package(&honest), &other_kind);
    let mut flipped_sig = honest.kind_signature.clone().unwrap();
    flipped_sig.0[0] ^= 1;
    let flipped = honest.clone().with_kind_signature(Some(flipped_sig));
    for bad in [as_refresh, flipped] {
        let mut run = Cluster::unkeyed(936, 2, 3, &["w"]);
        let mut view = part1(&mut run, &p);
        view[1] = bad;
        assert_eq!(
            part2_fails_at_one(&mut run, &p, &view),
            (None, DkgFault::BadSignature)
        );
    }
}

/// A member of an earlier version sends no kind-bound signature: its
/// message is accepted and the DKG completes (a mixed cluster), though a
/// fault in it could not be proven.
#[test]
fn a_round1_message_without_the_kind_signature_is_accepted() {
    let mut c = Cluster::unkeyed(937, 2, 3, &["w"]);
    let p = proposal(&c, "w", 1);
    let mut r1 = part1(&mut c, &p);
    assert!(r1.iter().all(|m| m.kind_signature.is_some()));
    r1[1] = r1[1].clone().with_kind_signature(None);
    let inbox = part2(&mut c, &p, &r1);
    let confirmations: Vec<SignedDkgMessage> = part3(&c, &p, &inbox)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    activate_everywhere(&c, "w", &confirmations);
    let proof = DkgRound1Proof::new(p.kind.clone(), r1[1].clone());
    assert_eq!(
        proof.verify(&config(&c)).unwrap_err().code(),
        "blame_bad_signature"
    );
}

/// With `require_round1_kind_signature` on (every member upgraded), a
/// round-1 message without a kind-bound signature is refused, accusing no
/// member (the relay may have stripped it), with a fault of its own that a
/// relay tells apart from a bad signature.
#[test]
fn a_round1_message_without_the_kind_signature_is_refused_when_required() {
    let mut limits = small_limits();
    limits.require_round1_kind_signature = true;
    let mut c = Cluster::with_wallets(941, 2, 3, &[Spec::new("w", Keys::None)], limits);
    let p = proposal(&c, "w", 1);
    let mut r1 = part1(&mut c, &p);
    r1[1] = r1[1].clone().with_kind_signature(None);
    assert_eq!(
        part2_fails_at_one(&mut c, &p, &r1),
        (None, DkgFault::MissingKindSignature)
    );
}

/// A proof against seat 2 of a fresh DKG (its package carrying seat 3's
/// proof of knowledge), its file text and what it proves; built once.
fn bad_pok_proof() -> &'static (WalletConfig, String, thresig_engine::ProvenRound1Fault) {
    static PROOF: std::sync::OnceLock<(WalletConfig, String, thresig_engine::ProvenRound1Fault)> =
        std::sync::OnceLock::new();
    PROOF.get_or_init(|| {
        let mut c = Cluster::unkeyed(938, 2, 3, &["w"]);
        let p = proposal(&c, "w", 1);
        let r1 = part1(&mut c, &p);
        let cheat = with_package(&of(&r1, 2), package(&of(&r1, 3)), &p.kind);
        let proof = DkgRound1Proof::new(p.kind.clone(), cheat);
        let proven = proof.verify(&config(&c)).unwrap();
        (
            config(&c),
            serde_json::to_string_pretty(&proof).unwrap(),
            proven,
        )
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any one byte of a round-1 proof's file changed: the parser never
    /// panics, and what still verifies proves exactly what the original
    /// did (a change of hex case or of white space), never another fault,
    /// seat or session.
    #[test]
    fn an_altered_round1_proof_file_proves_the_same_or_nothing(
        at in proptest::prelude::any::<proptest::sample::Index>(),
        byte in proptest::prelude::any::<u8>(),
    ) {
        let (wallet, text, proven) = bad_pok_proof();
        let mut bytes = text.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(BlameFile::DkgRound1(proof)) = BlameFile::from_json(&bytes)
            && let Ok(shown) = proof.verify(wallet)
        {
            proptest::prop_assert_eq!(&shown, proven);
        }
    }
}
