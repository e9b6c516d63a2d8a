//! How long work reports how far it is, so a command line can draw a
//! progress bar without the drivers knowing about terminals.

/// Receives progress of a DKG or a signing run.
pub trait Progress: Send + Sync {
    /// `done` of `total` steps of `phase` are complete.
    fn step(&self, phase: &str, done: usize, total: usize);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn step(&self, _phase: &str, _done: usize, _total: usize) {}
}
