//! The `[store]` section of the signer's TOML configuration.
//!
//! Deserialized with unknown fields denied, then validated into
//! [`StoreOptions`] and [`KeyManagerOptions`]; nothing below reads raw
//! strings. `docs/configuration.md` documents every field.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;
use crate::manager::KeyManagerOptions;
use crate::rollback::RollbackPolicy;
use crate::store::{StoreLocation, StoreOptions};

/// The `[store]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Directory holding `state.redb` and `state.witness`.
    pub data_dir: PathBuf,
    /// Capacity of the writer's queue (1 to 65,536; default 1,024).
    #[serde(default = "defaults::queue_capacity")]
    pub queue_capacity: usize,
    /// Most units per commit (1 to 4,096; default 256).
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// Records re-sealed per transaction during DEK rotation (1 to 100,000;
    /// default 256).
    #[serde(default = "defaults::reseal_batch")]
    pub reseal_batch: usize,
    /// Seconds between key-manager polls of the provider's key id (1 to
    /// 86,400; default 60).
    #[serde(default = "defaults::key_poll_interval_secs")]
    pub key_poll_interval_secs: u64,
    /// What to do with a database older than its witness, or a missing
    /// witness: `"refuse"` (default), or `{ accept_older_database = "…" }`
    /// naming the one rollback an operator accepts, as the refusal printed
    /// it (a backup restored on purpose; it accepts nothing else).
    #[serde(default)]
    pub rollback: RollbackPolicy,
}

mod defaults {
    pub(super) fn queue_capacity() -> usize {
        1024
    }
    pub(super) fn max_batch() -> usize {
        256
    }
    pub(super) fn reseal_batch() -> usize {
        256
    }
    pub(super) fn key_poll_interval_secs() -> u64 {
        60
    }
}

fn check<T: PartialOrd>(field: &'static str, value: T, min: T, max: T) -> Result<T, Error> {
    if value < min || value > max {
        return Err(Error::InvalidConfig { field });
    }
    Ok(value)
}

impl StoreConfig {
    /// The validated store options (without a recovery key, which comes
    /// from the `[key_provider]` section).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first field out of range.
    pub fn options(&self) -> Result<StoreOptions, Error> {
        Ok(StoreOptions {
            queue_capacity: check("queue_capacity", self.queue_capacity, 1, 65_536)?,
            max_batch: check("max_batch", self.max_batch, 1, 4_096)?,
            reseal_batch: check("reseal_batch", self.reseal_batch, 1, 100_000)?,
            rollback: self.rollback,
            ..StoreOptions::default()
        })
    }

    /// The validated key-manager options.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an interval out of range.
    pub fn key_manager_options(&self) -> Result<KeyManagerOptions, Error> {
        let secs = check(
            "key_poll_interval_secs",
            self.key_poll_interval_secs,
            1,
            86_400,
        )?;
        Ok(KeyManagerOptions {
            poll_interval: Duration::from_secs(secs),
        })
    }

    /// Where the store lives.
    pub fn location(&self) -> StoreLocation {
        StoreLocation::Directory(self.data_dir.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_refuses_unknown_fields() {
        let config: StoreConfig = toml::from_str("data_dir = \"/var/lib/thresig\"").unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/thresig"));
        let options = config.options().unwrap();
        assert_eq!(options.queue_capacity, 1024);
        assert_eq!(options.rollback, RollbackPolicy::Refuse);
        assert_eq!(
            config.key_manager_options().unwrap().poll_interval,
            Duration::from_secs(60)
        );
        assert!(toml::from_str::<StoreConfig>("data_dir = \"x\"\nqueue = 3").is_err());
        let accept: StoreConfig = toml::from_str(
            "data_dir = \"x\"\nrollback = { accept_older_database = \"database epoch 3 generation 5, witness epoch 4 generation 9\" }",
        )
        .unwrap();
        assert_eq!(
            accept.rollback,
            RollbackPolicy::AcceptOlderDatabase(crate::AcceptedRollback::OlderThanWitness {
                database_epoch: crate::RecordEpoch(3),
                database_generation: 5,
                witness_epoch: crate::RecordEpoch(4),
                witness_generation: 9
            })
        );
        // The old form named no rollback, so it could accept any later one.
        assert!(
            toml::from_str::<StoreConfig>("data_dir = \"x\"\nrollback = \"accept_older_database\"")
                .is_err()
        );
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let config: StoreConfig = toml::from_str("data_dir = \"x\"\nmax_batch = 0").unwrap();
        assert!(matches!(
            config.options(),
            Err(Error::InvalidConfig { field: "max_batch" })
        ));
        let config: StoreConfig =
            toml::from_str("data_dir = \"x\"\nkey_poll_interval_secs = 0").unwrap();
        assert!(matches!(
            config.key_manager_options(),
            Err(Error::InvalidConfig {
                field: "key_poll_interval_secs"
            })
        ));
    }
}
