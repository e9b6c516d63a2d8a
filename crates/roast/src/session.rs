//! One open ROAST session and the vector helpers the coordinator needs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::{Scheme, Seat, Verdict};

/// A session in progress: its packages, the members whose answer is still
/// awaited, and the verified share vectors received so far.
///
/// # Invariants
/// `pending` and the keys of `shares` are disjoint, and together with the
/// members that refused, left or proved malicious they make up the
/// session's t signers. A seat is pending in at most one session.
pub(crate) struct Session<S: Scheme> {
    /// One package per message.
    pub(crate) packages: Arc<[S::Package]>,
    /// Members whose answer is awaited.
    pub(crate) pending: BTreeSet<Seat>,
    /// Verified share vectors, one per member that answered validly.
    pub(crate) shares: BTreeMap<Seat, Vec<S::Share>>,
}

impl<S: Scheme> Session<S> {
    /// Checks `seat`'s share vector element by element against this
    /// session's packages, stopping at the first invalid element.
    ///
    /// Returns the index of the first invalid share, or `None` if all are
    /// valid. The caller has checked that the vector has one share per
    /// package.
    pub(crate) fn first_invalid(
        &self,
        scheme: &S,
        seat: Seat,
        shares: &[S::Share],
    ) -> Result<Option<usize>, S::Error> {
        for (input, (package, share)) in self.packages.iter().zip(shares).enumerate() {
            match scheme.verify_share(package, seat, share)? {
                Verdict::Valid => {}
                Verdict::Invalid => return Ok(Some(input)),
            }
        }
        Ok(None)
    }

    /// Aggregates every input's shares into its signature, consuming the
    /// session. The caller has checked that every member answered validly.
    pub(crate) fn aggregate(self, scheme: &S) -> Result<Vec<S::Signature>, S::Error> {
        let columns = transpose(self.shares, self.packages.len());
        self.packages
            .iter()
            .zip(&columns)
            .map(|(package, shares)| scheme.aggregate(package, shares))
            .collect()
    }
}

/// Turns per-signer vectors (one element per input) into per-input maps
/// (one element per signer).
///
/// Rows are expected to hold `width` elements each; a shorter row leaves
/// its seat out of the later columns instead of panicking (the coordinator
/// checks lengths before it stores a row, so this does not happen).
pub(crate) fn transpose<T>(
    rows: impl IntoIterator<Item = (Seat, Vec<T>)>,
    width: usize,
) -> Vec<BTreeMap<Seat, T>> {
    let mut columns: Vec<BTreeMap<Seat, T>> = (0..width).map(|_| BTreeMap::new()).collect();
    for (seat, row) in rows {
        for (column, item) in columns.iter_mut().zip(row) {
            column.insert(seat, item);
        }
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(n: u16) -> Seat {
        Seat::try_from(n).unwrap()
    }

    #[test]
    fn transpose_turns_rows_into_columns() {
        let rows = vec![(seat(2), vec!['a', 'b']), (seat(1), vec!['c', 'd'])];
        let columns = transpose(rows, 2);
        assert_eq!(columns.len(), 2);
        assert_eq!(columns[0], BTreeMap::from([(seat(1), 'c'), (seat(2), 'a')]));
        assert_eq!(columns[1], BTreeMap::from([(seat(1), 'd'), (seat(2), 'b')]));
    }

    #[test]
    fn transpose_tolerates_short_rows() {
        let columns = transpose(vec![(seat(1), vec![1]), (seat(2), vec![2, 3])], 2);
        assert_eq!(columns[0].len(), 2);
        assert_eq!(columns[1], BTreeMap::from([(seat(2), 3)]));
    }
}
