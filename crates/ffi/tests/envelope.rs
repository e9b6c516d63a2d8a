//! Malformed input at the boundary: each kind gets its typed error, and
//! arbitrary bytes never crash the library.

mod common;

use std::ptr;
use std::sync::OnceLock;

use common::Member;
use proptest::prelude::*;
use serde_json::{Value, json};
use thresig_ffi::{MAX_REQUEST_BYTES, THRESIG_NO_OUTPUT, THRESIG_OK, thresig_call};

/// Member 1 of a provisioned cluster whose wallet went through its DKG, so
/// that requests reach the wallet's checks; shared by the tests of this
/// file (its directory lives as long as the process).
fn member() -> &'static Member {
    static MEMBERS: OnceLock<(tempfile::TempDir, Vec<Member>)> = OnceLock::new();
    let (_, members) = MEMBERS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let configs = common::cluster(dir.path());
        let members: Vec<Member> = configs.iter().map(|c| Member::open(c)).collect();
        common::dkg(&configs, &members);
        (dir, members)
    });
    &members[0]
}

/// The error of a response envelope: its code and whether it is retryable.
fn error_of(response: &Value) -> (&str, bool) {
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("not an error: {response}"));
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{response}"
    );
    (
        error["code"].as_str().unwrap(),
        error["retryable"].as_bool().unwrap(),
    )
}

#[test]
fn each_malformed_envelope_gets_its_typed_terminal_error() {
    let member = member();
    let cases: [(&str, &[u8], &str); 9] = [
        ("bad JSON", b"{\"version\": 1, \"op\":", "invalid_envelope"),
        ("invalid UTF-8", b"{\"version\": 1, \"op\": \"\xff\"}", "invalid_envelope"),
        (
            "a version of the wrong type",
            br#"{"version": "1", "op": "status", "request": {}}"#,
            "invalid_envelope",
        ),
        (
            "an unknown envelope field",
            br#"{"version": 1, "op": "status", "request": {}, "extra": 1}"#,
            "invalid_envelope",
        ),
        (
            "another version",
            br#"{"version": 2, "op": "status", "request": {"from": 1, "wallet": "w"}}"#,
            "unsupported_version",
        ),
        (
            "an unknown op",
            br#"{"version": 1, "op": "sign_everything", "request": {}}"#,
            "unknown_op",
        ),
        (
            "a request field of the wrong type",
            br#"{"version": 1, "op": "round1", "request": {"from": 1, "wallet": "w", "inputs": "two"}}"#,
            "invalid_request",
        ),
        (
            "a coordinator's request without `from`",
            br#"{"version": 1, "op": "status", "request": {"wallet": "w"}}"#,
            "invalid_request",
        ),
        (
            "a request that is not an object",
            br#"{"version": 1, "op": "status", "request": [1, 2]}"#,
            "invalid_request",
        ),
    ];
    for (what, bytes, code) in cases {
        let response = member.call_bytes(bytes);
        assert_eq!(error_of(&response), (code, false), "{what}: {response}");
    }
}

#[test]
fn a_100_mb_request_is_refused_by_its_size() {
    // Deep nesting that a JSON parser would reject only after reading it.
    let request = vec![b'['; 100 * 1024 * 1024];
    assert!(request.len() > MAX_REQUEST_BYTES);
    let response = member().call_bytes(&request);
    assert_eq!(error_of(&response), ("request_too_large", false));
}

#[test]
fn null_pointers_get_a_typed_error_or_no_output() {
    let request = br#"{"version": 1, "op": "list_wallets", "request": {"from": 1}}"#;
    let (mut out, mut out_len) = (ptr::null_mut(), 0);
    let call = |handle, req: *const u8, out: *mut *mut u8, out_len: *mut usize| {
        // SAFETY: every pointer is null or valid.
        unsafe { thresig_call(handle, req, request.len(), out, out_len) }
    };
    for (handle, req) in [
        (ptr::null(), request.as_ptr()),
        (member().0.cast_const(), ptr::null()),
    ] {
        assert_eq!(call(handle, req, &mut out, &mut out_len), THRESIG_OK);
        let response = common::take_json(out, out_len);
        assert_eq!(error_of(&response), ("null_argument", false));
    }
    let handle = member().0.cast_const();
    assert_eq!(
        call(handle, request.as_ptr(), ptr::null_mut(), &mut out_len),
        THRESIG_NO_OUTPUT
    );
    assert_eq!(
        call(handle, request.as_ptr(), &mut out, ptr::null_mut()),
        THRESIG_NO_OUTPUT
    );
}

#[test]
fn a_well_formed_request_is_answered() {
    let wallets = member().ok("list_wallets", json!({"from": 2}));
    assert_eq!(wallets["type"], "wallets");
    assert_eq!(wallets["wallets"][0]["wallet"], common::WALLET);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes get a response envelope: an answer or a typed
    /// error, never a crash.
    #[test]
    fn arbitrary_bytes_get_an_envelope(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let response = member().call_bytes(&bytes);
        let ok = response.get("ok").is_some();
        let error = response.get("error").is_some_and(|e| e["code"].is_string() && e["retryable"].is_boolean());
        prop_assert!(ok ^ error, "{}", response);
    }

    /// Envelopes of every coordinator op with arbitrary small requests get
    /// an answer or a typed error.
    #[test]
    fn arbitrary_requests_of_each_op_get_an_envelope(
        op in prop::sample::select(vec!["round1", "round2", "abort", "status", "wallet_key", "dkg_start", "dkg_round2", "dkg_finish", "dkg_confirm", "dkg_cancel", "psbt_build", "psbt_inspect"]),
        from in 0u16..5,
        // Mostly the keyed wallet, so that requests get past its lookup.
        wallet in prop_oneof![3 => Just(common::WALLET.to_owned()), 1 => "[a-z0-9]{0,12}"],
        inputs in any::<i64>(),
        text in "[a-z0-9]{0,12}",
    ) {
        let response = member().call(op, json!({"from": from, "wallet": wallet, "inputs": inputs, "psbt": text, "session": text}));
        prop_assert!(response.get("ok").is_some() ^ response.get("error").is_some(), "{}", response);
    }
}

#[test]
fn a_length_past_the_cap_is_refused_before_the_bytes_are_read() {
    // Only the first bytes are readable: the library must refuse the length
    // alone, before it makes a slice of it.
    let request = br#"{"version": 1}"#;
    let (mut out, mut out_len) = (ptr::null_mut(), 0);
    // SAFETY: valid pointers; the length is the one under test.
    let rc = unsafe {
        thresig_call(
            member().0,
            request.as_ptr(),
            usize::MAX,
            &mut out,
            &mut out_len,
        )
    };
    assert_eq!(rc, THRESIG_OK);
    let response = common::take_json(out, out_len);
    assert_eq!(error_of(&response), ("request_too_large", false));
}

#[test]
fn a_100_mb_coordinator_setup_is_refused_by_its_size() {
    let setup = vec![b'['; 100 * 1024 * 1024];
    let (mut handle, mut err, mut err_len) = (ptr::null_mut(), ptr::null_mut(), 0);
    // SAFETY: valid pointers for the call.
    let rc = unsafe {
        thresig_ffi::thresig_coordinator_open(
            setup.as_ptr(),
            setup.len(),
            &mut handle,
            &mut err,
            &mut err_len,
        )
    };
    assert_eq!(rc, thresig_ffi::THRESIG_ERROR);
    let response = common::take_json(err, err_len);
    assert_eq!(error_of(&response), ("request_too_large", false));
}

#[test]
fn an_open_with_a_null_error_pointer_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let configs = common::cluster(dir.path());
    let path = configs[1].to_str().unwrap();
    let mut handle = ptr::null_mut();
    let mut err_len = 0;
    // SAFETY: valid pointers but the error pointer, which is null on purpose.
    let rc = unsafe {
        thresig_ffi::thresig_open(
            path.as_ptr(),
            path.len(),
            &mut handle,
            ptr::null_mut(),
            &mut err_len,
        )
    };
    assert_eq!(rc, THRESIG_NO_OUTPUT);
    assert!(
        handle.is_null(),
        "a handle was opened that no caller expects"
    );
}
