//! Polynomial checks in the exponent, with frost-core's own group and field
//! (its public `Group`/`Field` traits): a wallet's verifying shares against
//! its group key by interpolation, and `s·G` for a refresh share's check
//! (whose commitment `dkg_batch::evaluate` evaluates).

use frost_core::{Element, Field, Group, Scalar};
use frost_secp256k1_tr::Secp256K1Sha256TR;

use crate::Seat;

type C = Secp256K1Sha256TR;
type G = <C as frost_core::Ciphersuite>::Group;
type F = <G as Group>::Field;

/// The scalar equal to a seat's number (its FROST identifier).
pub(crate) fn seat_scalar(seat: Seat) -> Scalar<C> {
    let mut bytes = [0u8; 32];
    let (_, low) = bytes.split_at_mut(30);
    low.copy_from_slice(&seat.get().to_be_bytes());
    // Every u16 is below the group order.
    F::deserialize(&bytes).unwrap_or_else(|_| F::zero())
}

/// A group element from its 33-byte compressed encoding.
pub(crate) fn element(bytes: &[u8]) -> Option<Element<C>> {
    let array: [u8; 33] = bytes.try_into().ok()?;
    G::deserialize(&array).ok()
}

/// The scalar zero (the abscissa of the secret).
pub(crate) fn zero() -> Scalar<C> {
    F::zero()
}

/// `s·G`.
pub(crate) fn base_mul(s: &Scalar<C>) -> Element<C> {
    G::generator() * *s
}

/// The element at `x` of the degree-`(points.len() - 1)` polynomial through
/// `points` (Lagrange interpolation in the exponent). `None` if two points
/// share an abscissa.
pub(crate) fn interpolate(points: &[(Scalar<C>, Element<C>)], x: &Scalar<C>) -> Option<Element<C>> {
    let mut sum = G::identity();
    for (i, (xi, yi)) in points.iter().enumerate() {
        let (mut num, mut den) = (F::one(), F::one());
        for (j, (xj, _)) in points.iter().enumerate() {
            if i != j {
                num *= *x - *xj;
                den *= *xi - *xj;
            }
        }
        sum += *yi * (num * F::invert(&den).ok()?);
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(n: u16) -> Seat {
        Seat::try_from(n).unwrap()
    }

    #[test]
    fn interpolation_recovers_the_polynomial_everywhere() {
        // f(x) = 5 + 7x + 11x^2, in the exponent.
        let coefficients: Vec<_> = [5u16, 7, 11]
            .iter()
            .map(|c| base_mul(&seat_scalar(seat(*c))))
            .collect();
        let points: Vec<_> = [2u16, 5, 9]
            .iter()
            .map(|x| {
                let at = seat(*x);
                (
                    seat_scalar(at),
                    crate::dkg_batch::evaluate(&coefficients, &at.identifier()),
                )
            })
            .collect();
        let zero = F::zero();
        assert_eq!(interpolate(&points, &zero), coefficients.first().copied());
        let four = seat_scalar(seat(4));
        // f(4) = 5 + 28 + 176 = 209.
        assert_eq!(
            interpolate(&points, &four),
            Some(base_mul(&seat_scalar(seat(209))))
        );
    }
}
