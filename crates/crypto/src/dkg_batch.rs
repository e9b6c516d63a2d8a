//! Part 3 of a fresh DKG with the peers' shares checked as one batch.
//!
//! frost's `part3` checks each of the n − 1 received shares on its own:
//! `f_j(me)·G == Σ_k me^k · C_{j,k}`, t scalar multiplications each, which
//! at (51, 100) is most of a member's DKG. Here a random linear combination
//! of all n − 1 equations is checked with one multi-scalar multiplication
//! (k256's own `lincomb`): a set of shares with any invalid one passes with
//! probability 1/q for coefficients the senders cannot predict. Only when
//! the batch fails are the shares checked one by one, with frost's own
//! check, to name the culprit. Everything after the check is frost's
//! `part3` step for step (the same sums, the same `post_dkg` Taproot
//! tweak), except for the verifying shares, the summed commitment's
//! polynomial `F(x) = Σ_k C_k·x^k` at every identifier. When the
//! identifiers are small integers (seats 1..=n), t `lincomb`s give the
//! forward differences `Δ^m F(0)` (about t²/2 terms in all) and stepping
//! x = 0, 1, 2, … takes t − 1 point additions a step, where frost makes
//! n·t scalar multiplications; for any other identifiers each share is one
//! `lincomb` of the t terms. The outputs are frost's (unit tests compare
//! them on both paths).

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
/// coefficients are the summed commitment's points: by forward differences
/// when every identifier is a small integer, otherwise one `lincomb` per
/// identifier. Everything here (commitments, differences, shares) is
/// public, so none of it is zeroized.
fn verifying_shares(
    coefficients: &[ProjectivePoint],
    ids: &[Identifier],
) -> BTreeMap<Identifier, VerifyingShare<Secp256K1Sha256TR>> {
    match small_integers(ids, coefficients.len()) {
        Some(xs) => by_forward_differences(coefficients, xs),
        None => ids
            .iter()
            .map(|id| (*id, VerifyingShare::new(by_lincomb(coefficients, id))))
            .collect(),
    }
}

/// Every identifier as the integer it is, if all of them are at most
/// 4·n + t for n identifiers and t coefficients, and n ≥ t.
///
/// The bound keeps the stepping cheaper than one `lincomb` per identifier.
/// Each `lincomb` term costs k256 at least 80 point additions whatever its
/// scalar (two 8-point tables of 7 additions each, then one addition for
/// each of the 2 × 33 radix-16 digits of the scalar's halves), so the
/// per-identifier path costs at least 80·n·t additions. The differences
/// cost 80·t(t + 1)/2 additions in `lincomb`s of t, t − 1, …, 1 terms
/// (fewer doublings too: t calls where there were n, and t ≤ n) and the
/// steps up to the largest identifier at most (4n + t)(t − 1) more; with
/// t ≤ n that is under 45·n·t + 40·t, below 80·n·t for every n ≥ 2 (and
/// equal at n = t = 1, where no step adds anything).
fn small_integers(ids: &[Identifier], t: usize) -> Option<Vec<(u64, Identifier)>> {
    if ids.len() < t {
        return None;
    }
    let bound = u64::try_from(ids.len().checked_mul(4)?.checked_add(t)?).ok()?;
    ids.iter()
        .map(|id| {
            let bytes = id.to_scalar().to_bytes();
            let (high, low) = bytes.as_slice().split_at(24);
            let x = u64::from_be_bytes(low.try_into().ok()?);
            (high.iter().all(|b| *b == 0) && x <= bound).then_some((x, *id))
        })
        .collect()
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

/// F at the integers `xs`, by Newton's forward differences: the t values
/// `d_m = Δ^m F(0)` come from the coefficients, and moving from x to x + 1
/// is `d_m += d_{m+1}` for m ascending (each `d_{m+1}` still at x when it
/// is added), t − 1 point additions; `d_0` is then F(x + 1).
fn by_forward_differences(
    coefficients: &[ProjectivePoint],
    mut xs: Vec<(u64, Identifier)>,
) -> BTreeMap<Identifier, VerifyingShare<Secp256K1Sha256TR>> {
    xs.sort_unstable_by_key(|(x, _)| *x);
    let mut differences = differences_at_zero(coefficients);
    let mut at = 0;
    let mut shares = BTreeMap::new();
    for (x, id) in xs {
        while at < x {
            let mut lower = differences.iter_mut();
            if let Some(mut d) = lower.next() {
                for higher in lower {
                    *d += *higher;
                    d = higher;
                }
            }
            at += 1;
        }
        // Without coefficients F is the zero polynomial.
        let value = differences
            .first()
            .copied()
            .unwrap_or(ProjectivePoint::IDENTITY);
        shares.insert(id, VerifyingShare::new(value));
    }
    shares
}

/// `Δ^m F(0) = Σ_{k≥m} T(k, m) · C_k` for m = 0..t, with
/// `T(k, m) = m!·S(k, m)` (S the Stirling numbers of the second kind)
/// taken mod q: one `lincomb` of t − m terms each. The column `T(·, m)`
/// is built from `T(·, m − 1)` by
/// `T(k, m) = m·(T(k − 1, m) + T(k − 1, m − 1))`, `T(0, 0) = 1` and
/// `T(k, 0) = 0` for k > 0.
fn differences_at_zero(coefficients: &[ProjectivePoint]) -> Vec<ProjectivePoint> {
    let t = coefficients.len();
    let mut column: Vec<Scalar> = std::iter::once(Scalar::ONE)
        .chain(std::iter::repeat(Scalar::ZERO))
        .take(t)
        .collect();
    let mut m_mod_q = Scalar::ZERO;
    let mut terms: Vec<(ProjectivePoint, Scalar)> = Vec::with_capacity(t);
    (0..t)
        .map(|m| {
            if m > 0 {
                m_mod_q += Scalar::ONE;
                // T(k − 1, m) and T(k − 1, m − 1), both 0 for k = 0.
                let (mut above, mut above_left) = (Scalar::ZERO, Scalar::ZERO);
                for entry in &mut column {
                    let here = m_mod_q * (above + above_left);
                    above_left = *entry;
                    *entry = here;
                    above = here;
                }
            }
            terms.clear();
            terms.extend(
                coefficients
                    .iter()
                    .zip(&column)
                    .skip(m)
                    .map(|(c, s)| (*c, *s)),
            );
            ProjectivePoint::lincomb_ext(terms.as_slice())
        })
        .collect()
}

/// Whether `Σ_j r_j·f_j(me)·G − Σ_j Σ_k r_j·me^k·C_{j,k}` is the identity,
/// for coefficients `r_j` derived from this member's own secret share
/// (never sent to anyone, fresh in every DKG), so no sender can predict
/// them.
fn batch_holds(
    secret: &round2::SecretPackage,
    round1: &BTreeMap<Identifier, round1::Package>,
    round2: &BTreeMap<Identifier, round2::Package>,
) -> Result<bool, FrostError> {
    let x = secret.identifier().to_scalar();
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&secret.secret_share().to_bytes());
    // The coefficients come from this member's secret share and the sum
    // of weighted shares from the shares themselves: both are wiped when
    // dropped (the vector sized once, so no reallocation leaves an unwiped
    // copy). The scalar digits `lincomb` derives from them live in k256's
    // own stack buffers, which it does not wipe and we cannot reach.
    let len = round2.len() * usize::from(*secret.min_signers()) + 1;
    let mut terms: Zeroizing<Vec<(ProjectivePoint, Scalar)>> =
        Zeroizing::new(Vec::with_capacity(len));
    let mut shares_sum = Zeroizing::new(Scalar::ZERO);
    for (from, package) in round2 {
        let commitment = round1.get(from).ok_or(FrostError::PackageNotFound)?;
        let r = Zeroizing::new(coefficient(&key, from));
        *shares_sum += *r * package.signing_share().to_scalar();
        let mut power = Zeroizing::new(*r);
        for c in commitment.commitment().coefficients() {
            terms.push((c.value(), -*power));
            *power *= x;
        }
    }
    terms.push((ProjectivePoint::GENERATOR, *shares_sum));
    // One sum, evaluated by `lincomb` in slices of LINCOMB_CHUNK terms: its
    // lookup tables for all (n − 1)·t terms at once (about 7.7 MB at
    // (51, 100)) leave the cache, and measured slower per term than slices
    // that share their doublings and stay in it.
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
    /// `ids`, whose verifying shares are computed by forward differences
    /// exactly when `by_differences`.
    fn check_outputs_are_frosts(t: u16, ids: &[Identifier], by_differences: bool) {
        assert_eq!(
            small_integers(ids, usize::from(t)).is_some(),
            by_differences
        );
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

    /// Gaps between the seats, the largest at the bound 4·7 + 5 = 33: the
    /// differences reach every degree up to T(4, m).
    #[test]
    fn outputs_are_frosts_for_sparse_seats_up_to_the_bound() {
        check_outputs_are_frosts(5, &seats(&[1, 2, 4, 7, 11, 16, 33]), true);
    }

    #[test]
    fn outputs_are_frosts_for_a_seat_past_the_bound() {
        check_outputs_are_frosts(5, &seats(&[1, 2, 4, 7, 11, 16, 34]), false);
    }

    #[test]
    fn outputs_are_frosts_for_the_largest_seat() {
        check_outputs_are_frosts(3, &seats(&[1, 2, 3, 4, u16::MAX]), false);
    }

    /// 2^64 + 5: only the high bytes tell it from seat 5.
    #[test]
    fn outputs_are_frosts_for_an_identifier_with_small_low_bytes() {
        let mut bytes = [0u8; 32];
        bytes[23] = 1;
        bytes[31] = 5;
        let mut ids = seats(&[1, 2, 3, 4]);
        ids.push(Identifier::deserialize(&bytes).unwrap());
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

    /// The thresholds a wallet runs at, where the coefficients T(k, m)
    /// pass the group order (from k ≈ 46): the differences against frost's
    /// own evaluation of a random commitment, for seats 1..=100 and for 64
    /// seats spread up to the bound (320 = 4·64 + 64). The DKG tests
    /// above cannot afford such a group; a wrong coefficient at a high
    /// degree would still give shares on one polynomial through the group
    /// key, which no later check of a DKG's key record would catch.
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
            assert!(small_integers(&ids, t).is_some());
            let frosts =
                PublicKeyPackage::from_commitment(&ids.iter().copied().collect(), &commitment)
                    .unwrap();
            assert_eq!(&verifying_shares(&points, &ids), frosts.verifying_shares());
        }
    }

    #[test]
    fn an_invalid_share_is_named_after_the_batch_fails() {
        let (secrets, public1, sent) = parts_1_and_2(3, 5);
        let secret = &secrets[0];
        let (round1, mut round2) = inputs(secret, &public1, &sent);
        let four = Identifier::try_from(4).unwrap();
        let two = Identifier::try_from(2).unwrap();
        // Seat 4's share for seat 2, presented to seat 1 as seat 4's.
        round2.insert(four, sent[&(four, two)].clone());
        assert!(!batch_holds(secret, &round1, &round2).unwrap());
        assert_eq!(
            part3(secret, &round1, &round2).unwrap_err(),
            FrostError::InvalidSecretShare {
                culprit: Some(four)
            }
        );
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
