//! Threshold Schnorr signatures for Bitcoin Taproot, over `frost-secp256k1-tr`.
#![forbid(unsafe_code)]
