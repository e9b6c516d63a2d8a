/// Whether an operation that failed can succeed if tried again unchanged.
///
/// Every error the store returns says which, so that no caller has to guess
/// (DESIGN.md invariant I6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// A retry may succeed: the cause is transient (a provider timeout, a
    /// full disk, a busy lock).
    Retryable,
    /// A retry cannot succeed without an operator acting first (corruption,
    /// rollback, a wrong or lost key, a misconfiguration).
    Terminal,
}
