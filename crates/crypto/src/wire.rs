//! The wire encoding of commitments and signing packages, read and written
//! without round trips through frost's serde codec, and the reading of DKG
//! round-1 packages (written by `codec.rs` once, then kept).
//!
//! The bytes are frost's own postcard encoding, byte for byte (the tests
//! compare them with frost's). What differs is how they are made and read:
//!
//! - Parsing refuses everything but the canonical encoding by construction
//!   (fixed-size fields, minimal lengths, seats strictly ascending, no
//!   trailing bytes, points as 33-byte compressed SEC1 with prefix 0x02 or
//!   0x03, whose decoding is injective), so a parsed value keeps the bytes
//!   it arrived as and never re-encodes them to check them. The generic
//!   codec (`codec.rs`) checks canonicity by encoding the value again,
//!   which for a package means converting every point back to affine form:
//!   one field inversion each.
//! - A package's encoding is the concatenation of its commitments' kept
//!   bytes, so encoding it touches no point at all.
//! - A fresh commitment's two points are converted to affine form in one
//!   batch (k256's `BatchNormalize`: one inversion for both) before encoding.

use frost_core::keys::VerifiableSecretSharingCommitment;
use frost_secp256k1_tr::Signature;
use frost_secp256k1_tr::keys::dkg::round1;
use frost_secp256k1_tr::round1::{NonceCommitment, SigningCommitments};
use k256::ProjectivePoint;
use k256::elliptic_curve::BatchNormalize as _;
use k256::elliptic_curve::group::GroupEncoding as _;

use crate::{MAX_SIGNERS, Seat};

/// frost's serialization header: format version 0, then the first four
/// bytes (big-endian CRC-32) of the ciphersuite id `FROST-secp256k1-SHA256-TR-v1`.
const HEADER: [u8; 5] = [0x00, 0x23, 0x0f, 0x8a, 0xb3];
/// A compressed SEC1 point.
const POINT_LEN: usize = 33;
/// An identifier: its scalar, 32 bytes big-endian.
const ID_LEN: usize = 32;
/// A commitment: the header, then its hiding and binding points.
pub(crate) const COMMITMENT_LEN: usize = HEADER.len() + 2 * POINT_LEN;
/// The only message length a package may carry (a BIP341 sighash).
const MESSAGE_LEN: usize = 32;

/// Encodes a commitment, its two points made affine in one batch.
pub(crate) fn encode_commitment(commitment: &SigningCommitments) -> [u8; COMMITMENT_LEN] {
    let points = [commitment.hiding().value(), commitment.binding().value()];
    let affine = ProjectivePoint::batch_normalize(&points);
    let mut out = [0u8; COMMITMENT_LEN];
    let (header, encoded) = out.split_at_mut(HEADER.len());
    header.copy_from_slice(&HEADER);
    for (dst, point) in encoded.chunks_exact_mut(POINT_LEN).zip(&affine) {
        dst.copy_from_slice(&point.to_bytes());
    }
    out
}

/// A commitment's two points as encoded (hiding, then binding), without
/// frost's header: what RFC 9591's commitment list holds of it.
pub(crate) fn commitment_points(commitment: &[u8; COMMITMENT_LEN]) -> &[u8] {
    let (_header, points) = commitment.split_at(HEADER.len());
    points
}

/// Parses one commitment's canonical encoding.
pub(crate) fn parse_commitment(bytes: &[u8]) -> Option<SigningCommitments> {
    let bytes: &[u8; COMMITMENT_LEN] = bytes.try_into().ok()?;
    let (header, points) = bytes.split_at(HEADER.len());
    if header != HEADER {
        return None;
    }
    let (hiding, binding) = points.split_at(POINT_LEN);
    Some(SigningCommitments::new(
        parse_point(hiding)?,
        parse_point(binding)?,
    ))
}

/// Parses a 33-byte compressed point.
fn parse_point(bytes: &[u8]) -> Option<NonceCommitment> {
    if !compressed_prefix(bytes) {
        return None;
    }
    NonceCommitment::deserialize(bytes).ok()
}

/// Whether a 33-byte point encoding has a compressed SEC1 prefix. k256 also
/// reads SEC1's "compact" prefix 0x05 at this length (x alone, y taken
/// even), so `05‖x` would be a second encoding of the point `02‖x`: only
/// the compressed prefixes pass.
fn compressed_prefix(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x02 | 0x03))
}

/// Parses a DKG round-1 package's canonical encoding (frost's postcard
/// layout: the header, the commitment's point count, its compressed
/// points, then the proof of knowledge as a length-prefixed 64-byte BIP340
/// signature, nothing after it). It refuses what frost's decoding followed
/// by an encoding back to the same bytes refuses, and a count of more than
/// 16383 points (more than two varint bytes), which no threshold reaches.
/// A commitment of no points is read, as frost reads it: counting is part
/// 2's check ([`crate::check_round1_package`]).
///
/// Decoding through frost and encoding back cost four field
/// exponentiations a point where one, its decompression, is needed (frost
/// reads each point into a buffer it makes by encoding the generator, and
/// encoding back, sized first, converts each point to affine twice): 90 %
/// of a member's DKG part 2 at (51, 100) in a profile. Reading frost's
/// layout here is safe because frost, k256 and postcard are pinned to exact
/// versions and a property test compares this reader's verdicts and values
/// with frost's own decoding, over frost's encodings and mutations of them.
pub(crate) fn parse_round1_package(bytes: &[u8]) -> Option<round1::Package> {
    let mut rest = bytes.strip_prefix(&HEADER)?;
    let count = take_varint(&mut rest)?;
    let points = take(&mut rest, count.checked_mul(POINT_LEN)?)?;
    // frost refuses a signature of any length but 64.
    let signature_len = take_varint(&mut rest)?;
    let signature = take(&mut rest, signature_len)?;
    if !rest.is_empty() || !points.chunks_exact(POINT_LEN).all(compressed_prefix) {
        return None;
    }
    let commitment =
        VerifiableSecretSharingCommitment::deserialize(points.chunks_exact(POINT_LEN)).ok()?;
    let signature = Signature::deserialize(signature).ok()?;
    Some(round1::Package::new(commitment, signature))
}

/// Encodes a package from its commitments' encodings and its message.
pub(crate) fn encode_package<'a>(
    commitments: impl ExactSizeIterator<Item = (Seat, &'a [u8; COMMITMENT_LEN])>,
    message: &[u8],
) -> Vec<u8> {
    let count = commitments.len();
    let mut out = Vec::with_capacity(
        HEADER.len() + 3 + count * (ID_LEN + COMMITMENT_LEN) + 3 + message.len(),
    );
    out.extend_from_slice(&HEADER);
    push_varint(&mut out, count);
    for (seat, commitment) in commitments {
        out.extend_from_slice(&[0u8; ID_LEN - 2]);
        out.extend_from_slice(&seat.get().to_be_bytes());
        out.extend_from_slice(commitment);
    }
    push_varint(&mut out, message.len());
    out.extend_from_slice(message);
    out
}

/// A package's encoding split into each seat's commitment encoding and the
/// message, as slices of it.
pub(crate) type SplitPackage<'a> = (Vec<(Seat, &'a [u8])>, &'a [u8]);

/// Splits a package's canonical encoding into each seat's commitment
/// encoding (still to be parsed, by [`parse_commitment`]) and the message:
/// at least one commitment, seats strictly ascending, a 32-byte message,
/// nothing after it.
pub(crate) fn split_package(bytes: &[u8]) -> Option<SplitPackage<'_>> {
    let mut rest = bytes.strip_prefix(&HEADER)?;
    let count = take_varint(&mut rest)?;
    if count == 0 || count > usize::from(MAX_SIGNERS) {
        return None;
    }
    let mut commitments = Vec::with_capacity(count);
    let mut last: Option<Seat> = None;
    for _ in 0..count {
        let seat = parse_seat(take(&mut rest, ID_LEN)?)?;
        // Ascending order is what frost writes (a BTreeMap); it also
        // refuses a seat listed twice, which frost's decoding would accept.
        if last.is_some_and(|last| last >= seat) {
            return None;
        }
        last = Some(seat);
        commitments.push((seat, take(&mut rest, COMMITMENT_LEN)?));
    }
    if take_varint(&mut rest)? != MESSAGE_LEN {
        return None;
    }
    let message = take(&mut rest, MESSAGE_LEN)?;
    rest.is_empty().then_some((commitments, message))
}

/// A seat's identifier: the scalar equal to its number, whose only
/// encoding is 30 zero bytes and the number as two bytes big-endian.
fn parse_seat(bytes: &[u8]) -> Option<Seat> {
    let (high, low) = bytes.split_at_checked(ID_LEN - 2)?;
    if high.iter().any(|b| *b != 0) {
        return None;
    }
    Seat::try_from(u16::from_be_bytes(low.try_into().ok()?)).ok()
}

/// The next `len` bytes of `rest`.
fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(len)?;
    *rest = tail;
    Some(head)
}

/// postcard's length prefix: LEB128, seven bits a byte, least significant
/// first.
fn push_varint(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a length prefix written by [`push_varint`], refusing overlong
/// forms (postcard accepts a zero final byte, so one length has many
/// encodings) and lengths of more than two bytes (no field here needs one).
fn take_varint(rest: &mut &[u8]) -> Option<usize> {
    let mut value = 0usize;
    for shift in [0u32, 7] {
        let byte = *take(rest, 1)?.first()?;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return (shift == 0 || byte != 0).then_some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use frost_secp256k1_tr::Identifier;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng as _;

    use super::*;
    use crate::codec::FrostCodec as _;
    use crate::{Encoding, Error, Round1Package};

    /// Where a package's point count sits: right after the header.
    const COUNT_AT: usize = HEADER.len();
    /// A proof of knowledge: a BIP340 signature (x-only R, then z).
    const SIGNATURE_LEN: usize = 64;

    /// The round-1 package frost makes for seat 1 of a `t`-of-`t` DKG.
    fn frost_package(t: u16, seed: u64) -> round1::Package {
        let id = Identifier::try_from(1).unwrap();
        let rng = ChaCha20Rng::seed_from_u64(seed);
        frost_secp256k1_tr::keys::dkg::part1(id, t, t, rng)
            .unwrap()
            .1
    }

    fn encode(package: &round1::Package) -> Vec<u8> {
        crate::codec::encode_exact(package).unwrap().to_vec()
    }

    /// The decoding `Round1Package::from_bytes` used before it read the
    /// layout itself: frost's own, then an encoding back to the same bytes.
    fn frost_canonical(bytes: &[u8]) -> Option<round1::Package> {
        round1::Package::decode(bytes).ok()
    }

    /// Decodes `bytes` the way a member does, checking that what it keeps
    /// is the input and that the package is the one the reader gave.
    fn decode(bytes: &[u8]) -> Option<round1::Package> {
        let parsed = parse_round1_package(bytes);
        match Round1Package::from_bytes(bytes) {
            Ok(kept) => {
                assert!(parsed.is_some());
                assert_eq!(kept.to_bytes().unwrap(), bytes);
            }
            Err(error) => {
                assert!(parsed.is_none());
                assert!(matches!(
                    error,
                    Error::Decode {
                        what: Encoding::Round1Package
                    }
                ));
            }
        }
        parsed
    }

    /// Where the proof's length prefix sits: before its 64 bytes, last.
    fn signature_length_at(bytes: &[u8]) -> usize {
        bytes.len() - 1 - SIGNATURE_LEN
    }

    /// `bytes` with `at..at + 1` replaced by `with`.
    fn splice(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
        [&bytes[..at], with, &bytes[at + 1..]].concat()
    }

    /// One edit of an encoding.
    #[derive(Debug, Clone)]
    enum Mutation {
        Flip { at: usize, mask: u8 },
        SetPrefix { point: usize, prefix: u8 },
        Truncate { at: usize },
        Extend { tail: Vec<u8> },
        Insert { at: usize, byte: u8 },
        Remove { at: usize },
        OverlongCount,
        OverlongSignatureLength,
        Header { at: usize, byte: u8 },
    }

    /// A position: half the time among the first bytes, where the header
    /// and the count are, else anywhere.
    fn position() -> impl Strategy<Value = usize> {
        prop_oneof![0usize..8, any::<usize>()]
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let prefix = prop_oneof![3 => 0u8..=7, 1 => any::<u8>()];
        prop_oneof![
            (position(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
            (any::<usize>(), prefix)
                .prop_map(|(point, prefix)| Mutation::SetPrefix { point, prefix }),
            position().prop_map(|at| Mutation::Truncate { at }),
            proptest::collection::vec(any::<u8>(), 1..=3)
                .prop_map(|tail| Mutation::Extend { tail }),
            (position(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
            position().prop_map(|at| Mutation::Remove { at }),
            Just(Mutation::OverlongCount),
            Just(Mutation::OverlongSignatureLength),
            (0..HEADER.len(), any::<u8>()).prop_map(|(at, byte)| Mutation::Header { at, byte }),
        ]
    }

    /// Applies `m` to `bytes`, a valid encoding of `points` points (fewer
    /// than 128) or an earlier mutation of one.
    fn mutate(bytes: &[u8], points: usize, m: &Mutation) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let len = out.len();
        match m {
            Mutation::Flip { at, mask } => out[at % len] ^= mask,
            Mutation::SetPrefix { point, prefix } => {
                if let Some(byte) = out.get_mut(COUNT_AT + 1 + point % points.max(1) * POINT_LEN) {
                    *byte = *prefix;
                }
            }
            Mutation::Truncate { at } => out.truncate(at % len),
            Mutation::Extend { tail } => out.extend_from_slice(tail),
            Mutation::Insert { at, byte } => out.insert(at % (len + 1), *byte),
            Mutation::Remove { at } => {
                out.remove(at % len);
            }
            Mutation::OverlongCount => {
                out = splice(&out, COUNT_AT, &[out[COUNT_AT] | 0x80, 0x00]);
            }
            Mutation::OverlongSignatureLength => {
                if len > SIGNATURE_LEN {
                    let at = signature_length_at(&out);
                    out = splice(&out, at, &[out[at] | 0x80, 0x00]);
                }
            }
            Mutation::Header { at, byte } => out[*at] = *byte,
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// A package frost makes decodes to itself, keeping its bytes, as
        /// frost's own decoding gives it.
        #[test]
        fn a_package_frost_makes_decodes_to_itself(t in 2u16..=70, seed in any::<u64>()) {
            let package = frost_package(t, seed);
            let bytes = encode(&package);
            let decoded = decode(&bytes);
            prop_assert_eq!(decoded.as_ref(), Some(&package));
            prop_assert_eq!(decoded, frost_canonical(&bytes));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any edit of a valid encoding is accepted exactly when frost's
        /// decoding and encoding back accept it, as the same package.
        #[test]
        fn an_edited_encoding_decodes_exactly_as_frost_decodes_it(
            t in 2u16..=4,
            seed in any::<u64>(),
            edits in proptest::collection::vec(mutation(), 1..=3),
        ) {
            let mut bytes = encode(&frost_package(t, seed));
            for edit in &edits {
                bytes = mutate(&bytes, usize::from(t), edit);
                if bytes.len() <= COUNT_AT {
                    break;
                }
            }
            prop_assert_eq!(decode(&bytes), frost_canonical(&bytes), "{:?}", edits);
        }
    }

    /// A valid encoding of 3 points, whose first point has prefix `prefix`.
    fn three_points_with_first_prefix(prefix: u8) -> Vec<u8> {
        (0..)
            .map(|seed| encode(&frost_package(3, seed)))
            .find(|bytes| bytes[COUNT_AT + 1] == prefix)
            .unwrap()
    }

    /// Each edit that breaks one rule of the layout is refused, as frost's
    /// decoding with the encoding back refuses it.
    #[test]
    fn every_non_canonical_or_malformed_encoding_is_refused() {
        let bytes = encode(&frost_package(3, 1));
        let even = three_points_with_first_prefix(0x02);
        assert_eq!((bytes[COUNT_AT], decode(&bytes).is_some()), (3, true));
        let first_point = COUNT_AT + 1;
        let at = signature_length_at(&bytes);
        assert_eq!(usize::from(bytes[at]), SIGNATURE_LEN);
        let r = at + 1;
        let z = r + 32;
        let over = [0xff; 32];
        let cases = [
            ("overlong count", splice(&bytes, COUNT_AT, &[0x83, 0x00])),
            ("count past the points", splice(&bytes, COUNT_AT, &[4])),
            ("trailing byte", [&bytes[..], &[0]].concat()),
            ("no proof", bytes[..at].to_vec()),
            (
                "signature length 63",
                splice(&bytes, at, &[63])[..bytes.len() - 1].to_vec(),
            ),
            (
                "signature length 65",
                [&splice(&bytes, at, &[65])[..], &[0]].concat(),
            ),
            (
                "overlong signature length",
                splice(&bytes, at, &[0xc0, 0x00]),
            ),
            ("uncompressed prefix", splice(&bytes, first_point, &[0x04])),
            ("compact prefix", splice(&even, first_point, &[0x05])),
            (
                "x at least p",
                [&bytes[..=first_point], &over, &bytes[first_point + 33..]].concat(),
            ),
            (
                "identity",
                [&bytes[..first_point], &[0; 33], &bytes[first_point + 33..]].concat(),
            ),
            (
                "R's x at least p",
                [&bytes[..r], &over, &bytes[z..]].concat(),
            ),
            ("z at least n", [&bytes[..z], &over].concat()),
            ("version 1", splice(&bytes, 0, &[1])),
            ("another ciphersuite", splice(&bytes, 1, &[bytes[1] ^ 1])),
            ("empty", Vec::new()),
        ];
        for (what, bad) in cases {
            assert!(frost_canonical(&bad).is_none(), "frost accepts {what}");
            assert!(decode(&bad).is_none(), "accepted {what}");
        }
    }

    /// Counts of two varint bytes (128 points and more, thresholds up to
    /// the 1,000 a roster allows) decode as frost decodes them.
    #[test]
    fn packages_of_two_byte_counts_decode_as_frost_decodes_them() {
        for t in [128, 1000] {
            let package = frost_package(t, 7);
            let bytes = encode(&package);
            assert!(bytes[COUNT_AT] & 0x80 != 0, "t = {t}");
            assert_eq!(decode(&bytes).as_ref(), Some(&package), "t = {t}");
            assert_eq!(decode(&bytes), frost_canonical(&bytes), "t = {t}");
        }
    }

    /// The largest count two varint bytes hold is read; one more is
    /// refused, where frost would read it.
    #[test]
    fn a_count_of_more_than_16383_points_is_refused() {
        let bytes = encode(&frost_package(2, 5));
        let point = &bytes[COUNT_AT + 1..COUNT_AT + 1 + POINT_LEN];
        let proof = &bytes[signature_length_at(&bytes)..];
        let with = |count: usize, varint: &[u8]| {
            [&HEADER[..], varint, &point.repeat(count), proof].concat()
        };
        let largest = with(16_383, &[0xff, 0x7f]);
        assert!(decode(&largest).is_some());
        assert_eq!(decode(&largest), frost_canonical(&largest));
        let past = with(16_384, &[0x80, 0x80, 0x01]);
        assert!(frost_canonical(&past).is_some());
        assert!(decode(&past).is_none());
    }

    /// Every value of the proof's length byte, its 64 bytes kept: only 64
    /// is read, so no second byte string reads as the same package.
    #[test]
    fn only_the_proof_length_64_is_read() {
        let bytes = encode(&frost_package(3, 2));
        let at = signature_length_at(&bytes);
        for length in 0..=u8::MAX {
            let edited = splice(&bytes, at, &[length]);
            assert_eq!(decode(&edited).is_some(), length == 64, "length {length}");
            assert_eq!(decode(&edited), frost_canonical(&edited), "length {length}");
        }
    }

    /// A commitment of no points is read as frost reads it; part 2 refuses
    /// it for its count.
    #[test]
    fn a_commitment_of_no_points_is_read_as_frost_reads_it() {
        let bytes = encode(&frost_package(2, 3));
        let proof = &bytes[signature_length_at(&bytes)..];
        let empty = [&HEADER[..], &[0], proof].concat();
        let decoded = decode(&empty);
        assert!(decoded.is_some());
        assert_eq!(decoded, frost_canonical(&empty));
    }
}
