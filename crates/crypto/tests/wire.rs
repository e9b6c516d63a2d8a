//! Commitments and signing packages keep the bytes they were parsed from,
//! and parsing takes only canonical encodings, so those bytes are always
//! frost's own encoding of the parsed value: hashing them is hashing the
//! re-encoding. Checked against frost's codec as the reference (decode,
//! then encode again and compare), over valid encodings and mutated ones.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use thresig_crypto::*;

/// frost's verdict on a commitment encoding under the rule the wire parser
/// must implement: frost decodes it and re-encodes it to the same bytes.
fn frost_canonical_commitment(bytes: &[u8]) -> bool {
    frost_secp256k1_tr::round1::SigningCommitments::deserialize(bytes)
        .and_then(|c| c.serialize())
        .is_ok_and(|again| again == bytes)
}

/// The same for a package, plus this crate's own rules: at least one
/// commitment, every identifier a seat, a 32-byte message.
fn frost_canonical_package(bytes: &[u8]) -> bool {
    let Ok(package) = frost_secp256k1_tr::SigningPackage::deserialize(bytes) else {
        return false;
    };
    let seats_only = package.signing_commitments().keys().all(|id| {
        (1..=MAX_SIGNERS).any(|n| frost_secp256k1_tr::Identifier::try_from(n).ok() == Some(*id))
    });
    seats_only
        && !package.signing_commitments().is_empty()
        && package.message().len() == 32
        && package.serialize().is_ok_and(|again| again == bytes)
}

/// A package of `k` fresh commitments from a 2-of-`n` group, and `many`
/// more commitments of seat 1.
fn package(n: u16, k: u16, many: usize, seed: u64) -> (SigningPackage, Vec<Commitment>) {
    let rng = &mut rng(seed);
    let (shares, _) = dkg(2, n, ScriptTree::KeyPathOnly, rng);
    let commitments: BTreeMap<Seat, Commitment> = (1..=k)
        .map(|s| (seat(s), commit(&shares[&seat(s)], rng).1))
        .collect();
    let mut message = [0u8; 32];
    message[..8].copy_from_slice(&seed.to_be_bytes());
    let batch = (0..many)
        .map(|_| commit(&shares[&seat(1)], rng).1)
        .collect();
    (SigningPackage::new(&commitments, &message).unwrap(), batch)
}

/// One edit of an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
}

/// A position: half the time among the first bytes, where the headers and
/// the signer count are, else anywhere.
fn position() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..8, any::<usize>()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (position(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        position().prop_map(|at| Mutation::Truncate { at }),
        (position(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        position().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let len = out.len();
    match *m {
        Mutation::Flip { at, mask } => out[at % len] ^= mask,
        Mutation::Truncate { at } => out.truncate(at % len),
        Mutation::Insert { at, byte } => out.insert(at % (len + 1), byte),
        Mutation::Remove { at } => {
            out.remove(at % len);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// What this crate writes is what frost writes.
    #[test]
    fn encodings_are_frosts(n in 2u16..=6, k in 1u16..=6, many in 1usize..=4, seed in any::<u64>()) {
        let k = k.min(n);
        let (package, batch) = package(n, k, many, seed);
        for c in package.signers().iter().filter_map(|s| package.commitment(*s)).chain(batch) {
            prop_assert!(frost_canonical_commitment(c.as_bytes()));
            prop_assert_eq!(c.to_bytes(), c.as_bytes());
        }
        let bytes = package.to_bytes();
        prop_assert!(frost_canonical_package(&bytes));
        let decoded = frost_secp256k1_tr::SigningPackage::deserialize(&bytes).unwrap();
        prop_assert_eq!(decoded.message(), package.message());
        prop_assert_eq!(SigningPackage::from_bytes(&bytes).unwrap(), package);
    }

    /// Parsing accepts exactly frost's canonical encodings, and what it
    /// accepts keeps bytes equal to frost's re-encoding (so hashing the kept
    /// bytes is hashing the re-encoding).
    #[test]
    fn parsing_accepts_exactly_the_canonical_encodings(
        n in 2u16..=4,
        seed in any::<u64>(),
        edits in proptest::collection::vec(mutation(), 1..=3),
    ) {
        let (package, batch) = package(n, n, 1, seed);
        let mut bytes = package.to_bytes();
        let mut one = batch[0].to_bytes();
        for edit in &edits {
            bytes = mutate(&bytes, edit);
            one = mutate(&one, edit);
            if bytes.is_empty() || one.is_empty() {
                break;
            }
        }
        let parsed = SigningPackage::from_bytes(&bytes);
        prop_assert_eq!(parsed.is_ok(), frost_canonical_package(&bytes), "package {:?}", edits);
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed.to_bytes(), bytes);
            for s in parsed.signers() {
                prop_assert!(frost_canonical_commitment(parsed.commitment(s).unwrap().as_bytes()));
            }
        }
        let parsed = Commitment::from_bytes(&one);
        prop_assert_eq!(parsed.is_ok(), frost_canonical_commitment(&one), "commitment {:?}", edits);
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed.as_bytes(), &one[..]);
        }
    }
}

/// postcard writes lengths in LEB128 and reads an overlong form (a zero
/// final byte) as the same length, so one package would have many
/// encodings; the parser takes only the shortest.
#[test]
fn overlong_lengths_are_refused() {
    let (package, _) = package(3, 2, 1, 7);
    let bytes = package.to_bytes();
    // Header (5), then the signer count, 2, as one byte.
    assert_eq!(bytes[5], 2);
    let overlong_count = [&bytes[..5], &[0x82, 0x00], &bytes[6..]].concat();
    // The message length, 32, sits just before the 32-byte message.
    let at = bytes.len() - 33;
    assert_eq!(bytes[at], 32);
    let overlong_message = [&bytes[..at], &[0xa0, 0x00], &bytes[at + 1..]].concat();
    for bad in [overlong_count, overlong_message] {
        assert!(!frost_canonical_package(&bad));
        assert!(SigningPackage::from_bytes(&bad).is_err());
    }
}

/// Where the hiding and binding points' SEC1 prefixes sit in a commitment's
/// encoding (after frost's 5-byte header, then 33 bytes per point).
const HIDING_PREFIX: usize = 5;
const BINDING_PREFIX: usize = HIDING_PREFIX + 33;

/// A package of two commitments from a 2-of-3 group whose first commitment's
/// hiding and binding points both have even y (prefix 0x02), and a lone
/// commitment of the same kind: drawn until the prefixes are 0x02.
fn even_points(seed: u64) -> (Vec<u8>, Vec<u8>) {
    let rng = &mut rng(seed);
    let (shares, _) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let mut even = || loop {
        let (_, c) = commit(&shares[&seat(1)], rng);
        let bytes = c.as_bytes();
        if bytes[HIDING_PREFIX] == 0x02 && bytes[BINDING_PREFIX] == 0x02 {
            return c;
        }
    };
    let first = even();
    let one = even();
    let second = commit(&shares[&seat(2)], rng).1;
    let commitments = BTreeMap::from([(seat(1), first), (seat(2), second)]);
    let package = SigningPackage::new(&commitments, &[7; 32]).unwrap();
    (package.to_bytes(), one.to_bytes())
}

/// SEC1's "compact" prefix 0x05 followed by x decodes (in k256, which frost
/// uses) to the point with that x and even y: the same point as 0x02 and x.
/// Accepting it would give one commitment two encodings, so two hashes, and
/// a package 4^k encodings.
#[test]
fn compact_points_are_refused() {
    let (package, one) = even_points(11);
    // In a package: header (5), count (1), seat 1's identifier (32), then
    // its commitment.
    let in_package = 5 + 1 + 32;
    for at in [HIDING_PREFIX, BINDING_PREFIX] {
        let mut compact = one.clone();
        compact[at] = 0x05;
        let frost = frost_secp256k1_tr::round1::SigningCommitments::deserialize(&compact);
        let canonical = frost_secp256k1_tr::round1::SigningCommitments::deserialize(&one);
        assert_eq!(frost.ok(), canonical.ok(), "frost reads 05 as 02");
        assert!(!frost_canonical_commitment(&compact));
        assert!(Commitment::from_bytes(&compact).is_err(), "prefix at {at}");

        let mut compact = package.clone();
        compact[in_package + at] = 0x05;
        assert!(!frost_canonical_package(&compact));
        assert!(
            SigningPackage::from_bytes(&compact).is_err(),
            "package prefix at {}",
            in_package + at
        );
    }
}

/// Every value of every byte that has a fixed set of valid values (headers,
/// point prefixes, the signer count, identifiers' bytes, the message length)
/// gets the parser's verdict equal to frost's, exhaustively: the property
/// test above draws these values only by chance.
#[test]
fn every_value_of_each_fixed_byte_gets_frosts_verdict() {
    let (package, one) = even_points(12);
    let check_commitment = |bytes: &[u8]| {
        let parsed = Commitment::from_bytes(bytes);
        assert_eq!(
            parsed.is_ok(),
            frost_canonical_commitment(bytes),
            "{bytes:02x?}"
        );
    };
    let check_package = |bytes: &[u8]| {
        let parsed = SigningPackage::from_bytes(bytes);
        assert_eq!(
            parsed.is_ok(),
            frost_canonical_package(bytes),
            "{bytes:02x?}"
        );
        if let Ok(parsed) = parsed {
            assert_eq!(parsed.to_bytes(), bytes);
        }
    };

    let commitment_positions = [0, 1, 2, 3, 4, HIDING_PREFIX, BINDING_PREFIX];
    // Per seat in a package: the identifier's first and last two bytes,
    // then the commitment's fixed bytes.
    let per_seat = |start: usize| {
        [start, start + 30, start + 31]
            .into_iter()
            .chain(commitment_positions.map(|at| start + 32 + at))
    };
    let seat_len = 32 + one.len();
    let message_len_at = package.len() - 33;
    let package_positions: Vec<usize> = (0..=5)
        .chain(per_seat(6))
        .chain(per_seat(6 + seat_len))
        .chain([message_len_at])
        .collect();

    for value in 0..=u8::MAX {
        for &at in &commitment_positions {
            let mut bytes = one.clone();
            bytes[at] = value;
            check_commitment(&bytes);
        }
        for &at in &package_positions {
            let mut bytes = package.clone();
            bytes[at] = value;
            check_package(&bytes);
        }
    }
}
