use proptest::prelude::*;

use super::*;
use crate::api::Code;

/// Decodes `bytes` as the wire message `W` and, if that works, converts
/// it to `T`: any outcome but a panic is fine.
fn decode<W: prost::Message + Default, T: TryFrom<W, Error = Error>>(bytes: &[u8]) {
    if let Ok(wire) = W::decode(bytes) {
        let _ = T::try_from(wire);
    }
}

fn signed(payload: DkgPayload, sender: u16) -> SignedDkgMessage {
    SignedDkgMessage::new(
        DkgSessionId([7; 32]),
        WalletId::new("vault-1").unwrap(),
        thresig_crypto::Seat::try_from(sender).unwrap(),
        payload,
        HexBytes(vec![9; 64]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_wire_bytes_never_panic_the_decoders(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        decode::<proto::Round1Request, Request>(&bytes);
        decode::<proto::Round1Result, Round1Response>(&bytes);
        decode::<proto::Round2Request, Request>(&bytes);
        decode::<proto::Round2Result, Round2Response>(&bytes);
        decode::<proto::AbortRequest, Request>(&bytes);
        decode::<proto::AbortResult, usize>(&bytes);
        decode::<proto::DkgMessage, SignedDkgMessage>(&bytes);
        decode::<proto::DkgMessages, Vec<SignedDkgMessage>>(&bytes);
        decode::<proto::DkgProposal, Request>(&bytes);
        decode::<proto::DkgRound2Request, Request>(&bytes);
        decode::<proto::DkgFinishRequest, Request>(&bytes);
        decode::<proto::DkgConfirmRequest, Request>(&bytes);
        decode::<proto::DkgCancelRequest, Request>(&bytes);
        decode::<proto::StatusRequest, Request>(&bytes);
        decode::<proto::WalletKeyRequest, Request>(&bytes);
        decode::<proto::ConfirmationStatus, ConfirmationStatus>(&bytes);
        decode::<proto::StatusResult, Vec<WalletStatus>>(&bytes);
        decode::<proto::WalletKeyResult, WalletKey>(&bytes);
        decode::<proto::Error, SignerError>(&bytes);
    }

    #[test]
    fn dkg_messages_round_trip_and_bad_fields_are_typed_errors(
        to in 1u16..=1000,
        sealed in proptest::collection::vec(any::<u8>(), 0..64),
        session in proptest::collection::vec(any::<u8>(), 0..40),
        sender in any::<u32>(),
        bad_to in prop_oneof![Just(0u16), 1001u16..],
    ) {
        let message = signed(
            DkgPayload::Round2 {
                to: seat(to),
                sealed: HexBytes(sealed),
                echo: HexBytes(vec![3; 32]),
            },
            to,
        );
        let wire = proto::DkgMessage::from(message.clone());
        let back = SignedDkgMessage::try_from(wire.clone());
        prop_assert_eq!(back.ok(), Some(message));

        let mut bad = wire.clone();
        bad.session_id = session.clone();
        prop_assert_eq!(SignedDkgMessage::try_from(bad).is_ok(), session.len() == 32);
        let mut bad = wire.clone();
        bad.sender = sender;
        prop_assert_eq!(
            SignedDkgMessage::try_from(bad).is_ok(),
            (1..=1000).contains(&sender)
        );
        let mut bad = wire.clone();
        bad.payload.push(0);
        prop_assert!(matches!(
            SignedDkgMessage::try_from(bad),
            Err(Error::Malformed(_))
        ));
        // A recipient that is no seat (0, or above the largest) is a typed
        // decode error: the 2 bytes after the tag and the 8-byte length.
        let mut bad = wire;
        bad.payload[9..11].copy_from_slice(&bad_to.to_be_bytes());
        prop_assert!(matches!(
            SignedDkgMessage::try_from(bad),
            Err(Error::Malformed(_))
        ));
    }
}

fn seat(number: u16) -> Seat {
    Seat::try_from(number).unwrap()
}

#[test]
fn requests_and_replies_round_trip() {
    let wallet = WalletId::new("vault-1").unwrap();
    let request = Round2Request::new(
        wallet.clone(),
        WalletEpoch(3),
        vec![seat(1), seat(3)],
        SigningTarget::digests(vec![Digest([5; 32])]),
        vec![HexBytes(vec![1; 10])],
    );
    let wire = proto::Round2Request::try_from(request.clone()).unwrap();
    assert_eq!(Request::try_from(wire).unwrap(), Request::Round2(request));

    let reply = Round1Response::new(
        wallet.clone(),
        seat(2),
        WalletEpoch(4),
        vec![HexBytes(vec![2; 33])],
    );
    let wire = proto::Round1Result::from(reply.clone());
    assert_eq!(Round1Response::try_from(wire).unwrap(), reply);

    let mut status = WalletStatus::new(wallet.clone(), WalletStateKind::Active, 2, 3, seat(1));
    status.epoch = Some(WalletEpoch(1));
    status.output_key = Some(HexBytes(vec![0xab; 32]));
    status.live_nonces = 4;
    status.repair_approvals = vec![(seat(3), thresig_store::Timestamp(1_700_000_000_000))];
    status.repairing = Some(seat(3));
    status.policy_version = Some(2);
    status.policy_rollout = Some(thresig_engine::WalletRollout::new(
        3,
        thresig_engine::Phase::Ten,
        false,
    ));
    let wallets = vec![status.clone()];
    let wire = proto::StatusResult::from_response(Response::Wallets { wallets }).unwrap();
    assert_eq!(Vec::<WalletStatus>::try_from(wire).unwrap(), vec![status]);

    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
    let roster = vec![IdentityKey::from_bytes(key.to_bytes()).unwrap()];
    let proposal = DkgProposal::new(DkgSessionId([1; 32]), wallet, 2, roster);
    let wire = proto::DkgProposal::from(proposal.clone());
    assert_eq!(
        Request::try_from(wire).unwrap(),
        Request::DkgStart(proposal)
    );
}

#[test]
fn an_answer_converts_only_to_its_own_kinds_result() {
    let aborted = || Response::Aborted { destroyed: 3 };
    let wire = proto::AbortResult::from_response(aborted()).unwrap();
    assert_eq!(usize::try_from(wire).unwrap(), 3);
    assert!(proto::Round1Result::from_response(aborted()).is_none());
    assert!(proto::StatusResult::from_response(aborted()).is_none());
    // Parts 1 and 3 answer with exactly one message; part 2 with any.
    let message = signed(
        DkgPayload::Confirm {
            output_key: HexBytes(vec![1; 32]),
            transcript: HexBytes(vec![2; 32]),
        },
        1,
    );
    let messages = |n| Response::DkgMessages {
        messages: vec![message.clone(); n],
    };
    assert!(proto::DkgMessage::from_response(messages(1)).is_some());
    assert!(proto::DkgMessage::from_response(messages(2)).is_none());
    assert!(proto::DkgMessage::from_response(messages(0)).is_none());
    let wire = proto::DkgMessages::from_response(messages(2)).unwrap();
    assert_eq!(wire.messages.len(), 2);
}

/// A refusal's code is read once, at the edge, into what this version
/// knows: an engine code, one of the daemon's own, or an unknown code
/// kept as received (a newer signer's).
#[test]
fn a_refusal_code_is_typed_when_decoded() {
    let refusal = |code: &str| {
        SignerError::try_from(proto::Error {
            retryable: false,
            code: code.to_owned(),
            message: "m".to_owned(),
            accusation: None,
        })
        .unwrap()
    };
    assert_eq!(
        refusal("dkg_busy").code.kind(),
        &Code::Engine(thresig_engine::ErrorCode::DkgBusy)
    );
    assert_eq!(refusal("overloaded").code.kind(), &Code::Overloaded);
    assert_eq!(refusal("timeout").code, ErrorCode::TIMEOUT);
    let newer = refusal("from_a_newer_signer");
    assert_eq!(
        newer.code.kind(),
        &Code::Unknown("from_a_newer_signer".to_owned())
    );
    assert_eq!(newer.code.as_str(), "from_a_newer_signer");
    assert_eq!(newer.code.metric_label(), "other");
}

#[test]
fn malformed_fields_become_typed_errors() {
    let mut wire = proto::Round1Result {
        wallet_id: "vault-1".into(),
        seat: 0,
        epoch: 1,
        commitments: Vec::new(),
    };
    assert!(matches!(
        Round1Response::try_from(wire.clone()),
        Err(Error::InvalidId(InvalidId::Seat))
    ));
    wire.seat = 1;
    wire.wallet_id = "a b".into();
    assert!(matches!(
        Round1Response::try_from(wire),
        Err(Error::InvalidId(InvalidId::Wallet))
    ));
    let proposal = proto::DkgProposal {
        session_id: vec![1; 32],
        wallet_id: "vault-1".into(),
        threshold: 2,
        roster: vec![vec![1; 31]],
        refresh: None,
    };
    assert!(matches!(
        Request::try_from(proposal),
        Err(Error::InvalidId(InvalidId::IdentityKey))
    ));
    let status = proto::WalletStatus {
        wallet_id: "vault-1".into(),
        state: "sleeping".into(),
        threshold: 2,
        members: 3,
        seat: 1,
        epoch: None,
        output_key: None,
        live_nonces: 0,
        repair_approvals: Vec::new(),
        repairing: None,
        refresh: None,
        policy_version: None,
        policy_rollout: None,
    };
    assert!(matches!(
        WalletStatus::try_from(status.clone()),
        Err(Error::Malformed("unknown wallet state"))
    ));
    // A rollout step a newer member names is shown as no rollout, the
    // rest of its status kept.
    let status = proto::WalletStatus {
        state: "active".into(),
        policy_version: Some(2),
        policy_rollout: Some(proto::PolicyRollout {
            version: 2,
            phase: "25%".into(),
            on_new_version: true,
        }),
        ..status
    };
    let decoded = WalletStatus::try_from(status).unwrap();
    assert_eq!(
        (decoded.policy_version, decoded.policy_rollout),
        (Some(2), None)
    );
    let confirm = proto::DkgConfirmRequest {
        wallet_id: "vault-1".into(),
        confirmation: None,
    };
    assert!(Request::try_from(confirm).is_err());
}

/// A failed DKG part 3's accusation travels in its refusal and reads back
/// the same; a refusal without one reads back without one.
#[test]
fn a_refusals_accusation_round_trips() {
    let accusation = thresig_engine::SignedDkgMessage::sign(
        &ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        thresig_engine::DkgSessionId([9; 32]),
        thresig_engine::WalletId::new("w".to_owned()).unwrap(),
        crate::ids::Seat::try_from(1).unwrap(),
        thresig_engine::DkgPayload::Accuse {
            accused: crate::ids::Seat::try_from(2).unwrap(),
            hpke_secret: thresig_engine::RevealedHpkeKey::new(vec![5; 32]),
        },
    );
    let code = ErrorCode::from(thresig_engine::ErrorCode::DkgFailed);
    let refusal = SignerError::new(code, Recovery::Terminal, "m");
    for accusation in [Some(accusation), None] {
        let sent = refusal.clone().with_accusation(accusation);
        let wire = proto::Error::from(sent.clone());
        assert_eq!(SignerError::try_from(wire).unwrap(), sent);
    }
}

/// A round-1 message's kind-bound signature travels in its own field, and
/// a message without one (an earlier member's) arrives without one: the
/// encoding of the earlier fields is unchanged.
#[test]
fn a_kind_bound_signature_round_trips_and_its_absence_too() {
    let round1 = DkgPayload::Round1 {
        package: HexBytes(vec![1; 8]),
        hpke_key: HexBytes(vec![2; 32]),
    };
    let without = signed(round1, 2);
    let with = without
        .clone()
        .with_kind_signature(Some(HexBytes(vec![3; 64])));
    for message in [&without, &with] {
        let wire = proto::DkgMessage::from(message.clone());
        let back = SignedDkgMessage::try_from(wire.clone()).unwrap();
        assert_eq!(&back, message);
        let bytes = prost::Message::encode_to_vec(&wire);
        let decoded: proto::DkgMessage = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(SignedDkgMessage::try_from(decoded).unwrap(), *message);
    }
    let old = prost::Message::encode_to_vec(&proto::DkgMessage::from(without));
    let new = prost::Message::encode_to_vec(&proto::DkgMessage::from(with));
    assert!(new.starts_with(&old));
}
