//! Every member of a DKG in one process, messages passed in memory.

use std::collections::BTreeMap;

use rand_core::{CryptoRng, RngCore};

use crate::{
    DkgRound1, Error, GroupParams, KeyShare, Result, Round1Package, Round2Package, ScriptTree,
    Seat, WalletKey,
};

/// Key shares by seat, and the wallet key every member agreed on.
pub type LocalGroup = (BTreeMap<Seat, KeyShare>, WalletKey);

/// Runs parts 2 and 3 for members that have all run part 1 (a fresh DKG or a
/// refresh) in this process, delivering each message to its recipient.
///
/// All members' secrets pass through this one process, so this is for demos,
/// tests and benchmarks; a deployment runs one member per signer.
///
/// # Errors
/// Any error of [`DkgRound1::receive`] or [`crate::DkgRound2::finish`];
/// [`Error::TranscriptMismatch`] or [`Error::InternalKeyMismatch`] if
/// members disagree on the transcript or the wallet key;
/// [`Error::WrongPackageCount`] if `started` is empty.
pub fn run_in_process(started: Vec<(DkgRound1, Round1Package)>) -> Result<LocalGroup> {
    let round1: Vec<(Seat, Round1Package)> =
        started.iter().map(|(s, p)| (s.seat(), p.clone())).collect();
    let mut inbox: BTreeMap<Seat, Vec<(Seat, Round2Package)>> = BTreeMap::new();
    let mut waiting = Vec::with_capacity(started.len());
    for (state, _) in started {
        let me = state.seat();
        let peers = round1.iter().filter(|(s, _)| *s != me).cloned().collect();
        let (state, outgoing) = state.receive(peers)?;
        for (to, package) in outgoing {
            inbox.entry(to).or_default().push((me, package));
        }
        waiting.push(state);
    }
    let mut shares = BTreeMap::new();
    let mut agreed: Option<WalletKey> = None;
    let mut transcript = None;
    for state in waiting {
        let me = state.seat();
        let output = state.finish(inbox.remove(&me).unwrap_or_default())?;
        let (share, wallet, theirs) = output.into_parts();
        if transcript.is_some_and(|t| t != theirs) {
            return Err(Error::TranscriptMismatch);
        }
        transcript = Some(theirs);
        if agreed.as_ref().is_some_and(|w| *w != wallet) {
            return Err(Error::InternalKeyMismatch);
        }
        shares.insert(me, share);
        agreed = Some(wallet);
    }
    let wallet = agreed.ok_or(Error::WrongPackageCount {
        expected: 2,
        got: 0,
    })?;
    Ok((shares, wallet))
}

/// A fresh DKG of a `params` group, every member in this process (see
/// [`run_in_process`] for when that is appropriate).
///
/// # Errors
/// As [`run_in_process`].
pub fn dkg_in_process(
    params: GroupParams,
    tree: ScriptTree,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<LocalGroup> {
    let started = params
        .seats()
        .map(|seat| DkgRound1::start(params, seat, tree, rng))
        .collect::<Result<Vec<_>>>()?;
    run_in_process(started)
}
