//! Simulated clusters driving the ROAST coordinator: real FROST signers from
//! the crypto crate's DKG, a virtual clock, a seeded RNG and scripted faults.

mod attacks;
mod coordinator;
mod frost;
mod fuzz;
mod harness;
mod properties;
mod quarantine;
mod scenarios;
mod toy;
