//! The wire encoding of commitments and signing packages, read and written
//! without round trips through frost's serde codec.
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

/// Parses a 33-byte compressed point. k256 also reads SEC1's "compact"
/// prefix 0x05 at this length (x alone, y taken even), so `05‖x` would be a
/// second encoding of the point `02‖x`: only the compressed prefixes pass.
fn parse_point(bytes: &[u8]) -> Option<NonceCommitment> {
    if !matches!(bytes.first(), Some(0x02 | 0x03)) {
        return None;
    }
    NonceCommitment::deserialize(bytes).ok()
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
