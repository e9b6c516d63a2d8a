//! Part 3 of a fresh DKG with the peers' shares checked as one batch.
//!
//! frost's `part3` checks each of the n − 1 received shares on its own:
//! `f_j(me)·G == Σ_k me^k · C_{j,k}`, t scalar multiplications each, which
//! at (51, 100) is most of a member's DKG. Here a random linear combination
//! of all n − 1 equations is checked with one multi-scalar multiplication
//! (k256's own `lincomb`) over each sender's commitment evaluated at this
//! member's identifier: a set of shares with any invalid one passes with
//! probability 1/q for coefficients the senders cannot predict. Only when
//! the batch fails are the shares checked one by one, with frost's own
//! check, to name the culprit. Everything after the check is frost's
//! `part3` step for step (the same sums, the same `post_dkg` Taproot
//! tweak), except for the verifying shares, the summed commitment's
//! polynomial `F(x) = Σ_k C_k·x^k` at every identifier.
//!
//! Both evaluations, a sender's commitment at this member and the summed
//! commitment at every member, and the refresh share check's (in `dkg.rs`,
//! also a refresh blame proof's), are Horner's rule when the identifier is a
//! small integer, as a seat is: `x·P` for a public x below 2^32 is at most
//! 32 doublings and 32 additions of k256's points, where a `lincomb` term
//! costs at least 80 additions whatever its scalar (two 8-point tables of
//! 7 additions each, then one addition for each of the 2 × 33 radix-16
//! digits of the scalar's halves). At seats 1..=100 that is about 10
//! operations a coefficient, so about an eighth of the `lincomb`s it
//! replaces. Any other identifier is evaluated with one `lincomb` of the
//! t terms. The outputs are frost's (unit tests compare them on both
//! paths, and at t = 51 and 64).

use std::collections::BTreeMap;

use frost_core::Ciphersuite as _;
use frost_core::keys::{SecretShare, SigningShare, VerifyingShare};
use frost_secp256k1_tr::keys::dkg::{round1, round2};
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage};
use frost_secp256k1_tr::{Error as FrostError, Identifier, Secp256K1Sha256TR};
use k256::elliptic_curve::ops::LinearCombinationExt as _;
use k256::{ProjectivePoint, Scalar};
use zeroize::Zeroizing;

/// Domain separation of the batch coefficients from frost's own uses of its
/// hash-to-scalar.
const COEFFICIENT_DOMAIN: &[u8] = b"thresig/dkg-part3-batch/v1";

/// Terms per `lincomb` call: its tables (about 1.5 KB a term) stay in a
/// core's cache, while the 128 doublings are still shared by 64 terms.
const LINCOMB_CHUNK: usize = 64;

/// frost's `dkg::part3` for a fresh key, with the shares checked as one batch.
///
/// # Errors
/// frost's errors of `part3`: `InvalidSecretShare` naming the sender of an
/// invalid share, and the package-count and identifier errors.
pub(crate) fn part3(
    secret: &round2::SecretPackage,
    round1: &BTreeMap<Identifier, round1::Package>,
    round2: &BTreeMap<Identifier, round2::Package>,
) -> Result<(KeyPackage, PublicKeyPackage), FrostError> {
    let me = *secret.identifier();
    // frost's own preconditions, in its order and with its errors.
    if round1.len() != usize::from(secret.max_signers().saturating_sub(1)) {
        return Err(FrostError::IncorrectNumberOfPackages);
    }
    if round1.contains_key(&me) || round2.contains_key(&me) {
        return Err(FrostError::UnknownIdentifier);
    }
    if round1.len() != round2.len() {
        return Err(FrostError::IncorrectNumberOfPackages);
    }
    if round1.keys().any(|id| !round2.contains_key(id)) {
        return Err(FrostError::IncorrectPackage);
    }
    if !batch_holds(secret, round1, round2)? {
        for (from, package) in round2 {
            check_one(me, from, package, |id| round1.get(id))?;
        }
        // The batch fails only if some share does (or with probability
        // 1/q): nobody to name, but nothing is accepted either.
        return Err(FrostError::InvalidSecretShare { culprit: None });
    }
    let signing_share = round2.values().fold(secret.secret_share(), |sum, package| {
        sum + package.signing_share().to_scalar()
    });
    let signing_share = SigningShare::new(signing_share);
    let verifying_share = VerifyingShare::from(signing_share);
    let group = public_key_package(secret, round1)?;
    let key = KeyPackage::new(
        me,
        signing_share,
        verifying_share,
        *group.verifying_key(),
        *secret.min_signers(),
    );
    Secp256K1Sha256TR::post_dkg(key, group)
}

/// frost's `PublicKeyPackage::from_dkg_commitments`, with the verifying
/// shares computed by `verifying_shares`.
fn public_key_package(
    secret: &round2::SecretPackage,
    round1: &BTreeMap<Identifier, round1::Package>,
) -> Result<PublicKeyPackage, FrostError> {
    let commitments: Vec<_> = round1
        .values()
        .map(round1::Package::commitment)
        .chain(std::iter::once(secret.commitment()))
        .collect();
    let group = frost_core::keys::sum_commitments(&commitments)?;
    let coefficients: Vec<ProjectivePoint> =
        group.coefficients().iter().map(|c| c.value()).collect();
    let verifying_key =
        frost_core::VerifyingKey::new(*coefficients.first().ok_or(FrostError::MissingCommitment)?);
    let min_signers =
        u16::try_from(coefficients.len()).map_err(|_| FrostError::IncorrectNumberOfCommitments)?;
    let ids: Vec<Identifier> = round1
        .keys()
        .chain(std::iter::once(secret.identifier()))
        .copied()
        .collect();
    Ok(PublicKeyPackage::new(
        verifying_shares(&coefficients, &ids),
        verifying_key,
        Some(min_signers),
    ))
}

/// `F(id) = Σ_k id^k · C_k` for every identifier, F the polynomial whose
/// coefficients are the summed commitment's points. Everything here
/// (commitments, shares) is public, so none of it is zeroized.
fn verifying_shares(
    coefficients: &[ProjectivePoint],
    ids: &[Identifier],
) -> BTreeMap<Identifier, VerifyingShare<Secp256K1Sha256TR>> {
    ids.iter()
        .map(|id| (*id, VerifyingShare::new(evaluate(coefficients, id))))
        .collect()
}

/// `Σ_k id^k · C_k` for the coefficients `C_0, C_1, …`: by Horner's rule
/// when `id` is a small integer (see the module doc), else as one
/// `lincomb` of the t terms. Variable-time: every input is public.
pub(crate) fn evaluate(coefficients: &[ProjectivePoint], id: &Identifier) -> ProjectivePoint {
    match (small_integer(id), coefficients.split_last()) {
        (Some(x), Some((last, lower))) => lower
            .iter()
            .rev()
            .fold(*last, |value, c| times_public_small(&value, x) + c),
        (Some(_), None) => ProjectivePoint::IDENTITY,
        (None, _) => by_lincomb(coefficients, id),
    }
}

/// The identifier as the integer it is, if that is below 2^32.
fn small_integer(id: &Identifier) -> Option<u64> {
    let bytes = id.to_scalar().to_bytes();
    let (high, low) = bytes.as_slice().split_at(28);
    let low: [u8; 4] = low.try_into().ok()?;
    high.iter()
        .all(|b| *b == 0)
        .then(|| u64::from(u32::from_be_bytes(low)))
}

/// `x·P` by doubling and adding over the bits of x below its highest,
/// most significant first: one doubling for each and one addition per set
/// bit. Variable-time in x and `point`, so both must be public.
fn times_public_small(point: &ProjectivePoint, x: u64) -> ProjectivePoint {
    let Some(top) = u64::BITS.checked_sub(x.leading_zeros() + 1) else {
        return ProjectivePoint::IDENTITY;
    };
    (0..top).rev().fold(*point, |sum, bit| {
        let doubled = sum.double();
        if (x >> bit) & 1 == 1 {
            doubled + point
        } else {
            doubled
        }
    })
}

/// `Σ_k x^k · C_k` as one `lincomb` of the t terms.
fn by_lincomb(coefficients: &[ProjectivePoint], id: &Identifier) -> ProjectivePoint {
    let x = id.to_scalar();
    let mut power = Scalar::ONE;
    let terms: Vec<(ProjectivePoint, Scalar)> = coefficients
        .iter()
        .map(|c| {
            let term = (*c, power);
            power *= x;
            term
        })
        .collect();
    ProjectivePoint::lincomb_ext(terms.as_slice())
}

/// Whether `Σ_j r_j·f_j(me)·G − Σ_j r_j·F_j(me)` is the identity, with
/// `F_j(me) = Σ_k me^k·C_{j,k}` each sender's commitment evaluated at this
/// member, for coefficients `r_j` derived from this member's own secret
/// share (never sent to anyone, fresh in every DKG), so no sender can
/// predict them.
fn batch_holds(
    secret: &round2::SecretPackage,
    round1: &BTreeMap<Identifier, round1::Package>,
    round2: &BTreeMap<Identifier, round2::Package>,
) -> Result<bool, FrostError> {
    let me = secret.identifier();
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&secret.secret_share().to_bytes());
    // The coefficients come from this member's secret share and the sum
    // of weighted shares from the shares themselves: both are wiped when
    // dropped (the vector sized once, so no reallocation leaves an unwiped
    // copy). The scalar digits `lincomb` derives from them live in k256's
    // own stack buffers, which it does not wipe and we cannot reach.
    let mut terms: Zeroizing<Vec<(ProjectivePoint, Scalar)>> =
        Zeroizing::new(Vec::with_capacity(round2.len() + 1));
    let mut shares_sum = Zeroizing::new(Scalar::ZERO);
    for (from, package) in round2 {
        let commitment = round1.get(from).ok_or(FrostError::PackageNotFound)?;
        let r = Zeroizing::new(coefficient(&key, from));
        *shares_sum += *r * package.signing_share().to_scalar();
        let coefficients: Vec<ProjectivePoint> = commitment
            .commitment()
            .coefficients()
            .iter()
            .map(|c| c.value())
            .collect();
        terms.push((evaluate(&coefficients, me), -*r));
    }
    terms.push((ProjectivePoint::GENERATOR, *shares_sum));
    // One sum, evaluated by `lincomb` in slices of LINCOMB_CHUNK terms:
    // its lookup tables for all terms at once leave the cache, and
    // measured slower per term than slices that share their doublings
    // and stay in it.
    let sum: ProjectivePoint = terms
        .chunks(LINCOMB_CHUNK)
        .map(ProjectivePoint::lincomb_ext)
        .sum();
    Ok(sum == ProjectivePoint::IDENTITY)
}

/// The batch coefficient of `from`'s equation: frost's hash to a scalar
/// over this member's secret share and the sender's identifier.
fn coefficient(key: &[u8; 32], from: &Identifier) -> Scalar {
    let mut input = Zeroizing::new(Vec::with_capacity(COEFFICIENT_DOMAIN.len() + 64));
    input.extend_from_slice(COEFFICIENT_DOMAIN);
    input.extend_from_slice(key);
    input.extend_from_slice(&from.serialize());
    Secp256K1Sha256TR::H3(&input)
}

/// frost's own check of one share, naming its sender when it fails;
/// `round1` finds the sender's round-1 package.
pub(crate) fn check_one<'a>(
    me: Identifier,
    from: &Identifier,
    package: &round2::Package,
    round1: impl FnOnce(&Identifier) -> Option<&'a round1::Package>,
) -> Result<(), FrostError> {
    let commitment = round1(from).ok_or(FrostError::PackageNotFound)?;
    SecretShare::new(
        me,
        *package.signing_share(),
        commitment.commitment().clone(),
    )
    .verify()
    .map(|_| ())
    .map_err(|err| match err {
        FrostError::InvalidSecretShare { .. } => FrostError::InvalidSecretShare {
            culprit: Some(*from),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use frost_secp256k1_tr::keys::dkg;
    use rand_core::OsRng;

    type Started = (
        Vec<round2::SecretPackage>,
        BTreeMap<Identifier, round1::Package>,
        BTreeMap<(Identifier, Identifier), round2::Package>,
    );

    /// frost's parts 1 and 2 for a `t`-of-`n` group with seats 1..=n.
    fn parts_1_and_2(t: u16, n: u16) -> Started {
        let ids: Vec<Identifier> = (1..=n).map(|i| Identifier::try_from(i).unwrap()).collect();
        parts_1_and_2_for(t, &ids)
    }

    /// frost's parts 1 and 2 for a group of threshold `t` and members `ids`.
    fn parts_1_and_2_for(t: u16, ids: &[Identifier]) -> Started {
        let n = u16::try_from(ids.len()).unwrap();
        let mut secrets1 = BTreeMap::new();
        let mut public1 = BTreeMap::new();
        for id in ids {
            let (secret, package) = dkg::part1(*id, n, t, OsRng).unwrap();
            secrets1.insert(*id, secret);
            public1.insert(*id, package);
        }
        let mut secrets2 = Vec::new();
        let mut sent = BTreeMap::new();
        for (id, secret) in secrets1 {
            let mut others = public1.clone();
            others.remove(&id);
            let (secret, out) = dkg::part2(secret, &others).unwrap();
            for (to, package) in out {
                sent.insert((id, to), package);
            }
            secrets2.push(secret);
        }
        (secrets2, public1, sent)
    }

    fn inputs(
        secret: &round2::SecretPackage,
        public1: &BTreeMap<Identifier, round1::Package>,
        sent: &BTreeMap<(Identifier, Identifier), round2::Package>,
    ) -> (
        BTreeMap<Identifier, round1::Package>,
        BTreeMap<Identifier, round2::Package>,
    ) {
        let me = *secret.identifier();
        let mut round1 = public1.clone();
        round1.remove(&me);
        let round2 = sent
            .iter()
            .filter(|((_, to), _)| *to == me)
            .map(|((from, _), p)| (*from, p.clone()))
            .collect();
        (round1, round2)
    }

    #[test]
    fn outputs_are_frosts_for_every_member() {
        check_outputs_are_frosts(3, &seats(&[1, 2, 3, 4, 5]), true);
    }

    /// Every member's `part3` equals frost's for a threshold-`t` group of
    /// `ids`, whose evaluations are all Horner's exactly when `by_horner`.
    fn check_outputs_are_frosts(t: u16, ids: &[Identifier], by_horner: bool) {
        assert_eq!(ids.iter().all(|id| small_integer(id).is_some()), by_horner);
        let (secrets, public1, sent) = parts_1_and_2_for(t, ids);
        for secret in &secrets {
            let (round1, round2) = inputs(secret, &public1, &sent);
            let ours = part3(secret, &round1, &round2).unwrap();
            let frosts = dkg::part3(secret, &round1, &round2).unwrap();
            assert_eq!(ours, frosts);
        }
    }

    fn seats(seats: &[u16]) -> Vec<Identifier> {
        seats
            .iter()
            .map(|s| Identifier::try_from(*s).unwrap())
            .collect()
    }

    #[test]
    fn outputs_are_frosts_for_sparse_seats() {
        check_outputs_are_frosts(5, &seats(&[1, 2, 4, 7, 11, 16, 34]), true);
    }

    #[test]
    fn outputs_are_frosts_for_the_largest_seat() {
        check_outputs_are_frosts(3, &seats(&[1, 2, 3, 4, u16::MAX]), true);
    }

    fn identifier(value: u64) -> Identifier {
        let mut bytes = [0u8; 32];
        bytes[24..].copy_from_slice(&value.to_be_bytes());
        Identifier::deserialize(&bytes).unwrap()
    }

    /// 2^32 − 1 is the largest identifier Horner's rule takes, 2^32 the
    /// smallest `lincomb` takes: both in one group.
    #[test]
    fn outputs_are_frosts_for_identifiers_either_side_of_two_to_the_32() {
        let (largest, next) = (identifier(u64::from(u32::MAX)), identifier(1 << 32));
        assert_eq!(small_integer(&largest), Some(u64::from(u32::MAX)));
        assert_eq!(small_integer(&next), None);
        let mut ids = seats(&[1, 2, 3]);
        ids.extend([largest, next]);
        check_outputs_are_frosts(3, &ids, false);
    }

    /// `times_public_small` against k256's scalar multiplication, at the
    /// edges of the bits it walks and at random values.
    #[test]
    fn times_public_small_is_scalar_multiplication() {
        use k256::elliptic_curve::Field as _;
        use rand_core::RngCore as _;
        let point = ProjectivePoint::GENERATOR * Scalar::random(&mut OsRng);
        let edges = [0, 1, 2, 3, 5, 100, 255, 256, u64::from(u32::MAX)];
        let random = (0..32).map(|_| u64::from(OsRng.next_u32()));
        for x in edges.into_iter().chain(random) {
            assert_eq!(
                times_public_small(&point, x),
                point * Scalar::from(x),
                "x = {x}"
            );
        }
    }

    /// `small_integer` gives x exactly for the identifiers below 2^32,
    /// whatever byte of a larger one is set.
    #[test]
    fn small_integer_takes_only_identifiers_below_two_to_the_32() {
        for x in [1, 2, 255, 256, 65_535, u64::from(u32::MAX)] {
            assert_eq!(small_integer(&identifier(x)), Some(x));
        }
        for byte in 0..28 {
            let mut bytes = [0u8; 32];
            bytes[byte] = 1;
            bytes[31] = 5;
            let id = Identifier::deserialize(&bytes).unwrap();
            assert_eq!(small_integer(&id), None, "byte {byte}");
        }
        let largest = Identifier::new(-Scalar::ONE).unwrap();
        assert_eq!(small_integer(&largest), None);
    }

    #[test]
    fn outputs_are_frosts_for_two_members() {
        check_outputs_are_frosts(2, &seats(&[1, 2]), true);
        let pair = [identifier(u64::from(u32::MAX)), identifier(1 << 32)];
        check_outputs_are_frosts(2, &pair, false);
    }

    /// 2^32 + 5: only the high bytes tell it from seat 5.
    #[test]
    fn outputs_are_frosts_for_an_identifier_with_small_low_bytes() {
        let mut ids = seats(&[1, 2, 3, 4]);
        ids.push(identifier((1 << 32) + 5));
        check_outputs_are_frosts(3, &ids, false);
    }

    #[test]
    fn outputs_are_frosts_for_derived_identifiers() {
        let ids: Vec<Identifier> = ["alice", "bob", "carol", "dave", "erin"]
            .iter()
            .map(|name| Identifier::derive(name.as_bytes()).unwrap())
            .collect();
        check_outputs_are_frosts(3, &ids, false);
    }

    /// The thresholds a wallet runs at: Horner's rule against frost's own
    /// evaluation of a random commitment, for seats 1..=100 and for 64
    /// seats spread up to 320. The DKG tests above cannot afford such a
    /// group; a wrong step at a high degree would still give shares on
    /// one polynomial through the group key, which no later check of a
    /// DKG's key record would catch.
    #[test]
    fn verifying_shares_are_frosts_at_large_thresholds() {
        use k256::elliptic_curve::Field as _;
        use k256::elliptic_curve::group::GroupEncoding as _;
        for (t, spread) in [(51usize, 1u16), (64, 5)] {
            let points: Vec<ProjectivePoint> = (0..t)
                .map(|_| ProjectivePoint::GENERATOR * Scalar::random(&mut OsRng))
                .collect();
            let commitment =
                frost_core::keys::VerifiableSecretSharingCommitment::<Secp256K1Sha256TR>::deserialize(
                    points.iter().map(|p| p.to_bytes().to_vec()),
                )
                .unwrap();
            let n = if spread == 1 { 100 } else { 64 };
            let ids = seats(&(1..=n).map(|s| s * spread).collect::<Vec<_>>());
            assert!(ids.iter().all(|id| small_integer(id).is_some()));
            let frosts =
                PublicKeyPackage::from_commitment(&ids.iter().copied().collect(), &commitment)
                    .unwrap();
            assert_eq!(&verifying_shares(&points, &ids), frosts.verifying_shares());
        }
    }

    /// On both paths of the evaluation: seats, and identifiers derived
    /// from names.
    #[test]
    fn an_invalid_share_is_named_after_the_batch_fails() {
        let derived: Vec<Identifier> = ["alice", "bob", "carol", "dave", "erin"]
            .iter()
            .map(|name| Identifier::derive(name.as_bytes()).unwrap())
            .collect();
        for ids in [seats(&[1, 2, 3, 4, 5]), derived] {
            let (secrets, public1, sent) = parts_1_and_2_for(3, &ids);
            let secret = &secrets[0];
            let (round1, mut round2) = inputs(secret, &public1, &sent);
            let others: Vec<Identifier> = round2.keys().copied().collect();
            let (culprit, victim) = (others[2], others[0]);
            // The culprit's share for another member, presented as the
            // culprit's share for this one.
            round2.insert(culprit, sent[&(culprit, victim)].clone());
            assert!(!batch_holds(secret, &round1, &round2).unwrap());
            assert_eq!(
                part3(secret, &round1, &round2).unwrap_err(),
                FrostError::InvalidSecretShare {
                    culprit: Some(culprit)
                }
            );
        }
    }

    /// Two invalid shares whose errors cancel in any sum with equal
    /// coefficients (+1 on seat 2's, −1 on seat 3's) still fail the batch:
    /// its coefficients must differ per sender and be unknown to them.
    #[test]
    fn errors_that_cancel_in_a_plain_sum_still_fail_the_batch() {
        let (secrets, public1, sent) = parts_1_and_2(3, 5);
        let secret = &secrets[0];
        let (round1, mut round2) = inputs(secret, &public1, &sent);
        let two = Identifier::try_from(2).unwrap();
        let three = Identifier::try_from(3).unwrap();
        for (from, delta) in [(two, Scalar::ONE), (three, -Scalar::ONE)] {
            let share = round2[&from].signing_share().to_scalar() + delta;
            round2.insert(from, round2::Package::new(SigningShare::new(share)));
        }
        assert!(!batch_holds(secret, &round1, &round2).unwrap());
        assert_eq!(
            part3(secret, &round1, &round2).unwrap_err(),
            FrostError::InvalidSecretShare { culprit: Some(two) }
        );
    }
}
