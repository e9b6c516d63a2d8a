use super::*;

fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(number << 3 | 2).unwrap()];
    out.push(u8::try_from(bytes.len()).unwrap());
    out.extend_from_slice(bytes);
    out
}

#[test]
fn a_rate_admits_its_burst_then_its_rate_and_makes_the_rest_wait_or_refuses_it() {
    let mut budget = Rate::new(1024, MAX_ROUND1_INPUTS);
    let start = Instant::now();
    let at_once = Duration::ZERO;
    // The burst: 2048 units, two seconds' worth.
    assert_eq!(
        budget.charge(start, MAX_ROUND1_INPUTS, at_once),
        Ok(at_once)
    );
    let refused = budget.charge(start, 1, at_once).unwrap_err();
    assert!(refused > Duration::ZERO && refused <= budget.per_unit);
    // Then 1024 a second: half a second pays for 512 and no more (so
    // the refusal above charged nothing).
    let later = start + Duration::from_millis(500);
    assert_eq!(budget.charge(later, 512, at_once), Ok(at_once));
    assert!(budget.charge(later, 1, at_once).is_err());
    // Beyond the burst a charge may wait: the wait is what the rate
    // needs, and the next charge waits behind it.
    let waited = budget.charge(later, 1024, Duration::from_secs(1)).unwrap();
    assert!(waited > Duration::from_millis(990) && waited <= Duration::from_secs(1));
    assert!(budget.charge(later, 1, Duration::from_secs(1)).is_err());
    // The input count is read as a decoder would (the last occurrence).
    let message = [0x0a, 0x01, b'w', 0x10, 0x05, 0x10, 0x80, 0x10];
    assert_eq!(last_varint(&message, 2), Some(2048));
    assert_eq!(last_field(&message, 1, WIRE_DELIMITED), Some(&b"w"[..]));
    assert_eq!(last_varint(&message[..7], 2), None);
    // A group a decoder skips cannot be read past: such a request is
    // refused, never charged as if it had no inputs.
    assert!(reads_to_end(&message));
    assert!(!reads_to_end(&[0x10, 0x80, 0x02, 0x1b, 0x1c]));
    assert!(!reads_to_end(&message[..7]));
}

#[test]
fn fields_are_counted_at_every_occurrence_of_their_parents() {
    // Two `Digests` messages (field 5) of 2 and 1 digests, a varint and
    // a fixed64 field around them.
    let mut message = vec![0x10, 0x96, 0x01];
    message.extend(field(5, &[field(1, &[7; 32]), field(1, &[8; 32])].concat()));
    message.extend([0x19, 1, 2, 3, 4, 5, 6, 7, 8]);
    message.extend(field(5, &field(1, &[9; 32])));
    message.extend(field(6, b"package"));
    assert_eq!(
        count_field(&message, &[5, 1], ElementKind::Delimited),
        Some(3)
    );
    assert_eq!(count_field(&message, &[6], ElementKind::Delimited), Some(1));
    assert_eq!(count_field(&message, &[4], ElementKind::Delimited), Some(0));
    // Numbers, packed (300 takes two bytes) and not: 2 + 1.
    let numbers = [vec![0x1a, 3, 0xac, 0x02, 7], vec![0x18, 5]].concat();
    assert_eq!(count_field(&numbers, &[3], ElementKind::Varint), Some(3));
    // Truncated: a length beyond the end, a varint without its end.
    assert_eq!(
        count_field(&[0x32, 10, 1], &[6], ElementKind::Delimited),
        None
    );
    assert_eq!(
        count_field(&[0x10, 0x80], &[6], ElementKind::Delimited),
        None
    );
}

/// `message` as one uncompressed gRPC frame.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(u32::try_from(message.len()).unwrap().to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn check(method: &str, body: &[u8]) -> Result<(), String> {
    let limits = method_limits(method).unwrap();
    match check_counts(body, limits.counts) {
        Ok(()) => Ok(()),
        Err(Refusal::Signer(err)) if err.code == ErrorCode::INVALID_REQUEST => Err(err.message),
        Err(_) => panic!("{method}: not an invalid_request refusal"),
    }
}

#[test]
fn a_body_must_be_exactly_one_uncompressed_frame() {
    // The review's DkgRound2 body: an empty first message, then a second
    // one of 1,835,002 empty DKG messages hidden behind a length prefix
    // the counter would read as protobuf fields.
    let mut second = [0x1a, 0x00].repeat(1_835_002);
    second.extend([0x7a, 0x0a, 0x09]);
    second.extend([0; 9]);
    assert_eq!(second.len(), 0x0038_0000);
    let body = [frame(&[]), frame(&second)].concat();
    assert!(check("DkgRound2", &body).is_err());
    // The same messages in one frame are counted.
    let err = check("DkgRound2", &frame(&second)).unwrap_err();
    assert!(err.contains("1835002 DKG messages"), "{err}");

    let status = frame(&field(1, b"w"));
    assert_eq!(check("Status", &status), Ok(()));
    // A declared length short of the body, beyond it, a compressed
    // frame, a missing or truncated header.
    for bad in [
        [status.clone(), vec![0]].concat(),
        status[..status.len() - 1].to_vec(),
        [&[1][..], &status[1..]].concat(),
        vec![],
        vec![0, 0, 0],
    ] {
        assert!(check("Status", &bad).is_err(), "{bad:?}");
    }
}

#[test]
fn element_counts_are_bounded_per_method() {
    let empty = |number: u32, n: usize| field(number, &[]).repeat(n);
    // Abort: commitments.
    assert_eq!(check("Abort", &frame(&empty(2, INPUTS))), Ok(()));
    let err = check("Abort", &frame(&empty(2, INPUTS + 1))).unwrap_err();
    assert!(err.contains("commitments"), "{err}");
    // DkgRound2 and DkgFinish: DKG messages.
    for method in ["DkgRound2", "DkgFinish"] {
        assert_eq!(check(method, &frame(&empty(3, MAX_MEMBERS))), Ok(()));
        let err = check(method, &frame(&empty(3, MAX_MEMBERS + 1))).unwrap_err();
        assert!(err.contains("DKG messages"), "{err}");
    }
    // DkgStart: roster keys.
    assert_eq!(check("DkgStart", &frame(&empty(4, MAX_MEMBERS))), Ok(()));
    let err = check("DkgStart", &frame(&empty(4, MAX_MEMBERS + 1))).unwrap_err();
    assert!(err.contains("roster keys"), "{err}");
}

#[test]
fn wire_type_tricks_never_decode_more_elements_than_counted() {
    let commitments = |message: &[u8]| -> Option<usize> {
        proto::AbortRequest::decode(message)
            .ok()
            .map(|r| r.commitments.len())
    };
    let many = field(2, &[]).repeat(INPUTS + 1);
    let tricks: Vec<Vec<u8>> = vec![
        // A key in a non-minimal varint (prost accepts it).
        [0x92, 0x00, 0x00].repeat(INPUTS + 1),
        // The field number with bits above 32.
        [many.clone(), vec![0x92, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00]].concat(),
        // A group (wire types 3 and 4) around the run.
        [vec![0x13], many.clone(), vec![0x14]].concat(),
        // The run inside an unknown length-delimited field.
        [vec![0x7a], varint_bytes(many.len()), many.clone()].concat(),
        // One element as a varint, the rest as bytes.
        [vec![0x10, 0x00], many[2..].to_vec()].concat(),
        // A length prefix with a 10-byte varint.
        [
            many.clone(),
            vec![
                0x12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
        ]
        .concat(),
    ];
    for (i, message) in tricks.iter().enumerate() {
        let decoded = commitments(message);
        if check("Abort", &frame(message)).is_ok() {
            assert!(
                decoded.is_none_or(|n| n <= INPUTS),
                "trick {i}: counted within the limit, decodes {decoded:?}"
            );
        }
    }
    // The non-minimal keys are counted as the decoder reads them.
    assert_eq!(commitments(&tricks[0]), Some(INPUTS + 1));
    assert!(check("Abort", &frame(&tricks[0])).is_err());
}

fn varint_bytes(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push(u8::try_from(n & 0x7f | 0x80).unwrap());
        n >>= 7;
    }
    out.push(u8::try_from(n).unwrap());
    out
}

#[test]
fn the_error_reply_decodes_as_every_methods_reply() {
    let err = SignerError::new(ErrorCode::OVERLOADED, Recovery::Retryable, "busy");
    let response = error_reply(err);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/grpc"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let collected = runtime.block_on(response.into_body().collect()).unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    let body = collected.to_bytes();
    let message = body.get(5..).unwrap();
    let wire = proto::Error::from(SignerError::new(
        ErrorCode::OVERLOADED,
        Recovery::Retryable,
        "busy",
    ));
    macro_rules! decodes_as {
        ($($reply:ident :: $outcome:ident),*) => {$(
            let reply = proto::$reply::decode(message).unwrap();
            assert_eq!(reply.outcome, Some(proto::$outcome::Outcome::Error(wire.clone())));
        )*};
    }
    decodes_as!(
        Round1Reply::round1_reply,
        Round2Reply::round2_reply,
        AbortReply::abort_reply,
        DkgStartReply::dkg_start_reply,
        DkgRound2Reply::dkg_round2_reply,
        DkgFinishReply::dkg_finish_reply,
        DkgConfirmReply::dkg_confirm_reply,
        StatusReply::status_reply,
        WalletKeyReply::wallet_key_reply
    );
}

#[tokio::test]
async fn a_members_turns_at_a_wallet_are_removed_once_no_request_holds_or_waits_for_them() {
    let turns = Turns::default();
    let seat = Seat::try_from(2).unwrap();
    let key = move |kind| (seat, b"vault-1".to_vec(), kind);
    let entries = || turns.lock().unwrap().len();
    let (waited_tx, waited_rx) = tokio::sync::oneshot::channel();
    let first = WalletTurn::take(&turns, key(TurnKind::Signing), 2, || {}).await;
    let second = WalletTurn::take(&turns, key(TurnKind::Signing), 2, || {}).await;
    let lifecycle = WalletTurn::take(&turns, key(TurnKind::Other), 1, || {}).await;
    let third = tokio::spawn({
        let turns = turns.clone();
        async move {
            let turn = WalletTurn::take(&turns, key(TurnKind::Signing), 2, || {
                waited_tx.send(()).unwrap();
            });
            drop(turn.await);
        }
    });
    waited_rx.await.unwrap();
    assert_eq!(entries(), 2);
    drop(lifecycle);
    assert_eq!(entries(), 1);
    drop((first, second));
    third.await.unwrap();
    assert_eq!(entries(), 0);
}
