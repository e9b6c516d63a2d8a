//! The engine's integration-test helpers: the cluster harness of
//! `thresig_engine::test_util` (re-exported here so tests import one
//! module) and Taproot PSBTs of a test wallet.
#![allow(dead_code, unreachable_pub, missing_docs, unused_imports)]

pub mod psbt;

pub use thresig_engine::test_util::cluster::*;
pub use thresig_engine::test_util::dkg;
pub use thresig_engine::test_util::repair;
