//! The anti-rollback check at open (I5) and its single-use override.
//!
//! A database older than its witness, or a witness gone although the
//! database wrote one, refuses the open. The refusal prints an
//! [`AcceptedRollback`] naming exactly what was found; an operator who
//! restored a backup on purpose puts that value in `[store] rollback` for
//! one start. The accepting open moves the commit generation past the
//! witness it overrode, so every witness written from then on differs from
//! the accepted one and a setting left in the file accepts no later
//! rollback beside it. Not single use in two cases nothing on disk can
//! tell apart: a missing-witness value names only the database, so the
//! same backup with its witness lost again matches it again; and an old
//! copy of the witness still authenticates, so the same backup beside the
//! very witness copy it was accepted against matches too.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::RecordEpoch;
use crate::witness::Position;

/// Opens in this process that accepted an older database or a missing
/// witness. A process-wide count, like the metric it feeds: the daemon's
/// registry is built after the store opened, in a crate that never sees
/// the open itself.
static ROLLBACKS_ACCEPTED: AtomicU64 = AtomicU64::new(0);

/// How many store opens in this process accepted a rollback through
/// [`RollbackPolicy::AcceptOlderDatabase`] (exported as a metric; anything
/// above zero deserves an alert).
pub fn rollbacks_accepted() -> u64 {
    ROLLBACKS_ACCEPTED.load(Ordering::Relaxed)
}

/// What to do when the database is older than its witness, or the witness
/// is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RollbackPolicy {
    /// Refuse to open ([`crate::Error::RollbackDetected`], [`crate::Error::WitnessMissing`]).
    #[default]
    Refuse,
    /// Open anyway, once: the operator restored a backup on purpose and
    /// accepts that counters went back. Accepts only the situation it
    /// names, as the refusal printed it.
    AcceptOlderDatabase(AcceptedRollback),
}

/// One rollback an operator accepts, written as the refusal prints it:
/// `database epoch 6 generation 1200, witness epoch 7 generation 1234` (the
/// database at the first position is older than a witness at the second)
/// or `no witness, database epoch 3 generation 100` (the witness is gone
/// and the database is at that position). Naming the database too means a
/// setting printed for one restored backup accepts no other, older one put
/// in its place before the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum AcceptedRollback {
    /// The database at `database_epoch`, `database_generation` is older
    /// than a witness at `witness_epoch`, `witness_generation`.
    OlderThanWitness {
        /// The database's global epoch.
        database_epoch: RecordEpoch,
        /// The database's commit generation.
        database_generation: u64,
        /// The witness's global epoch.
        witness_epoch: RecordEpoch,
        /// The witness's commit generation.
        witness_generation: u64,
    },
    /// The witness is missing; the database is at this position.
    WitnessMissing {
        /// The database's global epoch.
        epoch: RecordEpoch,
        /// The database's commit generation.
        generation: u64,
    },
}

const DATABASE: &str = "database ";
const WITNESS: &str = ", witness ";
const MISSING: &str = "no witness, database ";

/// `epoch E generation G`, the way a position is written in a setting.
struct Written(RecordEpoch, u64);

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {} generation {}", self.0.0, self.1)
    }
}

impl fmt::Display for AcceptedRollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OlderThanWitness {
                database_epoch,
                database_generation,
                witness_epoch,
                witness_generation,
            } => write!(
                f,
                "{DATABASE}{}{WITNESS}{}",
                Written(database_epoch, database_generation),
                Written(witness_epoch, witness_generation)
            ),
            Self::WitnessMissing { epoch, generation } => {
                write!(f, "{MISSING}{}", Written(epoch, generation))
            }
        }
    }
}

/// A `rollback` value that is not one a refusal prints.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected the value a rollback refusal prints (\"database epoch E generation G, witness \
     epoch E generation G\" or \"no witness, database epoch E generation G\"), found {0:?}"
)]
pub struct InvalidAcceptedRollback(String);

/// Reads `epoch E generation G`.
fn read_position(s: &str) -> Option<(RecordEpoch, u64)> {
    let (epoch, generation) = s.strip_prefix("epoch ")?.split_once(" generation ")?;
    Some((RecordEpoch(epoch.parse().ok()?), generation.parse().ok()?))
}

impl FromStr for AcceptedRollback {
    type Err = InvalidAcceptedRollback;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let read = || {
            if let Some(rest) = s.strip_prefix(MISSING) {
                let (epoch, generation) = read_position(rest)?;
                return Some(Self::WitnessMissing { epoch, generation });
            }
            let (database, witness) = s.strip_prefix(DATABASE)?.split_once(WITNESS)?;
            let (database_epoch, database_generation) = read_position(database)?;
            let (witness_epoch, witness_generation) = read_position(witness)?;
            Some(Self::OlderThanWitness {
                database_epoch,
                database_generation,
                witness_epoch,
                witness_generation,
            })
        };
        read().ok_or_else(|| InvalidAcceptedRollback(s.to_owned()))
    }
}

impl TryFrom<String> for AcceptedRollback {
    type Error = InvalidAcceptedRollback;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Counts and logs an accepted rollback, once the open that accepted it
/// has moved past it and rewritten the witness (an open that failed
/// accepted nothing).
pub(crate) fn report_accepted(accepted: AcceptedRollback, database: &Path, witness: &Path) {
    ROLLBACKS_ACCEPTED.fetch_add(1, Ordering::Relaxed);
    let (database, witness) = (database.display(), witness.display());
    match accepted {
        AcceptedRollback::OlderThanWitness { .. } => tracing::error!(
            %database,
            %witness,
            %accepted,
            "opened a database older than its witness because [store] rollback accepts it: \
             markers and rate counters went back; remove the setting"
        ),
        AcceptedRollback::WitnessMissing { .. } => tracing::error!(
            %database,
            %witness,
            %accepted,
            "opened a database with a missing witness because [store] rollback accepts it: \
             markers and rate counters may have gone back; remove the setting"
        ),
    }
}

/// What the anti-rollback check found at open.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The database covers its witness (or no witness was ever written).
    Current,
    /// A rollback the policy names: open, after moving the commit
    /// generation past `past`.
    Accepted {
        /// What was accepted, for the log and the count.
        accepted: AcceptedRollback,
        /// The position every later witness must differ from.
        past: Position,
    },
    /// A rollback the policy does not name: refuse, printing `found`.
    Refused {
        /// What would accept it.
        found: AcceptedRollback,
    },
}

/// Checks a database at `database` against its witness (`None` when absent;
/// `written` when the database says one was written) under `policy`.
pub(crate) fn check(
    database: Position,
    witness: Option<Position>,
    written: bool,
    policy: RollbackPolicy,
) -> Verdict {
    let (found, past) = match witness {
        Some(w) if !database.covers(&w) => (
            AcceptedRollback::OlderThanWitness {
                database_epoch: database.epoch,
                database_generation: database.generation,
                witness_epoch: w.epoch,
                witness_generation: w.generation,
            },
            w,
        ),
        None if written => (
            AcceptedRollback::WitnessMissing {
                epoch: database.epoch,
                generation: database.generation,
            },
            database,
        ),
        _ => return Verdict::Current,
    };
    if policy != RollbackPolicy::AcceptOlderDatabase(found) {
        return Verdict::Refused { found };
    }
    Verdict::Accepted {
        accepted: found,
        past,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, generation: u64) -> Position {
        Position {
            epoch: RecordEpoch(epoch),
            generation,
            audit: crate::witness::AuditMark::default(),
        }
    }

    /// The setting for a database at `database` older than a witness at
    /// `witness`, each as (epoch, generation).
    fn older(database: (u64, u64), witness: (u64, u64)) -> AcceptedRollback {
        AcceptedRollback::OlderThanWitness {
            database_epoch: RecordEpoch(database.0),
            database_generation: database.1,
            witness_epoch: RecordEpoch(witness.0),
            witness_generation: witness.1,
        }
    }

    #[test]
    fn accepted_rollbacks_read_back_what_they_print() {
        for a in [
            older((6, 1200), (7, 1234)),
            AcceptedRollback::WitnessMissing {
                epoch: RecordEpoch(3),
                generation: 100,
            },
        ] {
            assert_eq!(a.to_string().parse::<AcceptedRollback>(), Ok(a));
        }
        for bad in [
            "",
            "accept_older_database",
            "witness epoch 7",
            "witness epoch x generation 1",
            "witness epoch 7 generation 1",
            "database epoch 6 generation 1, witness epoch 7 generation 1 ",
            "database epoch 6 generation 1, witness epoch 7",
        ] {
            assert!(bad.parse::<AcceptedRollback>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_named_rollback_is_accepted() {
        let named = RollbackPolicy::AcceptOlderDatabase;
        assert_eq!(
            check(at(1, 5), Some(at(2, 9)), true, named(older((1, 5), (2, 8)))),
            Verdict::Refused {
                found: older((1, 5), (2, 9))
            }
        );
        assert_eq!(
            check(at(1, 5), Some(at(2, 9)), true, named(older((1, 5), (2, 9)))),
            Verdict::Accepted {
                accepted: older((1, 5), (2, 9)),
                past: at(2, 9)
            }
        );
        let missing = AcceptedRollback::WitnessMissing {
            epoch: RecordEpoch(1),
            generation: 5,
        };
        assert_eq!(
            check(at(1, 5), None, true, named(older((1, 5), (2, 9)))),
            Verdict::Refused { found: missing }
        );
        for policy in [RollbackPolicy::Refuse, named(older((1, 5), (2, 9)))] {
            assert_eq!(
                check(at(2, 9), Some(at(2, 9)), true, policy),
                Verdict::Current
            );
            assert_eq!(check(at(2, 9), None, false, policy), Verdict::Current);
        }
    }
}
