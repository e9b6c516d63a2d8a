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
/// session's `size` signers. A seat is pending in at most one session. Only
/// share vectors that passed [`Session::check`] are stored.
pub(crate) struct Session<S: Scheme> {
    /// One package per message.
    pub(crate) packages: Arc<[S::Package]>,
    /// Members whose answer is awaited.
    pub(crate) pending: BTreeSet<Seat>,
    /// Verified share vectors, one per member that answered validly.
    shares: BTreeMap<Seat, Vec<S::Share>>,
    /// The number of members (t).
    size: usize,
}

/// A share vector every element of which verified for its session: the only
/// kind [`Session::record`] accepts, and only [`Session::check`] makes one.
pub(crate) struct Verified<S: Scheme> {
    seat: Seat,
    shares: Vec<S::Share>,
}

/// The verdict on one signer's share vector.
pub(crate) enum Checked<S: Scheme> {
    /// Every element verified.
    Valid(Verified<S>),
    /// The element at `input` did not.
    Invalid { input: usize },
}

impl<S: Scheme> Session<S> {
    /// A session of `members` awaiting every member's answer.
    pub(crate) fn new(packages: Arc<[S::Package]>, members: &[Seat]) -> Self {
        Self {
            packages,
            pending: members.iter().copied().collect(),
            shares: BTreeMap::new(),
            size: members.len(),
        }
    }

    /// Checks `seat`'s share vector element by element against this
    /// session's packages, stopping at the first invalid element. The caller
    /// has checked that the vector has one share per package.
    ///
    /// # Errors
    /// If the scheme cannot run a check (not the signer's fault).
    pub(crate) fn check(
        &self,
        scheme: &S,
        seat: Seat,
        shares: Vec<S::Share>,
    ) -> Result<Checked<S>, S::Error> {
        for (input, (package, share)) in self.packages.iter().zip(&shares).enumerate() {
            match scheme.verify_share(package, seat, share)? {
                Verdict::Valid => {}
                Verdict::Invalid => return Ok(Checked::Invalid { input }),
            }
        }
        Ok(Checked::Valid(Verified { seat, shares }))
    }

    /// Stores a verified vector (its sender is no longer pending).
    pub(crate) fn record(&mut self, verified: Verified<S>) {
        self.pending.remove(&verified.seat);
        self.shares.insert(verified.seat, verified.shares);
    }

    /// Whether every member has answered validly.
    pub(crate) fn is_complete(&self) -> bool {
        self.shares.len() == self.size
    }

    /// Whether no member has refused, left or proved malicious (so the
    /// session can still complete).
    pub(crate) fn is_intact(&self) -> bool {
        self.pending.len() + self.shares.len() == self.size
    }

    /// The members that answered validly, ascending.
    pub(crate) fn answered(&self) -> Vec<Seat> {
        self.shares.keys().copied().collect()
    }

    /// Aggregates every input's shares into its signature, consuming the
    /// session. The caller has checked that the session is complete.
    ///
    /// # Errors
    /// If the scheme fails to aggregate an input.
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
