//! Bitcoin Taproot transactions for thresig: PSBTs, sighashes, signing policy.
#![forbid(unsafe_code)]
