//! Wallet states, each holding only the data valid in it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use thresig_crypto::{KeyShare, ScriptTree, Seat, WalletKey};
use thresig_tx::{Network, TaprootWallet};

use crate::api::HexBytes;
use crate::dkg_msg::{DkgPayload, DkgSessionId};
use crate::error::{Error, InternalFault};
use crate::ids::WalletEpoch;
use crate::target::taproot_wallet;
use thresig_store::WalletId;

/// The name of a wallet's state, as `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WalletStateKind {
    /// Configured, but no confirmed key package yet.
    DkgPending,
    /// Signs.
    Active,
    /// Signs with its current shares while a refresh's new shares await
    /// every remaining member's confirmation.
    Refreshing,
    /// Refuses every spend except the sweep to its successor.
    Rekeying,
    /// Signs nothing; its shares may be deleted.
    Retired,
    /// Its records failed to authenticate; refuses to sign until an
    /// operator acts.
    Corrupt,
}

impl WalletStateKind {
    /// Every state, so a transport can decode a name with [`Self::as_str`]
    /// as the only table.
    pub const ALL: [Self; 6] = [
        Self::DkgPending,
        Self::Active,
        Self::Refreshing,
        Self::Rekeying,
        Self::Retired,
        Self::Corrupt,
    ];

    /// The state's stable wire name (the same as its JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DkgPending => "dkg_pending",
            Self::Active => "active",
            Self::Refreshing => "refreshing",
            Self::Rekeying => "rekeying",
            Self::Retired => "retired",
            Self::Corrupt => "corrupt",
        }
    }
}

/// The key material a wallet signs with at one wallet epoch (the
/// generation of these key shares): its public record (which alone decides
/// the tweak) and this signer's share.
pub(crate) struct SigningKey {
    pub(crate) epoch: WalletEpoch,
    /// Private, with [`SigningKey::key`] to read it: `record` and `taproot`
    /// are derived from it once, so it must never change in place.
    key: WalletKey,
    /// Shared so that a round 1 can draw nonces from it with the wallet's
    /// lock released; the share is wiped when its last holder drops it, and
    /// the allocation identifies this key while a draw runs.
    pub(crate) share: Arc<KeyShare>,
    /// `key`'s bytes, encoded at the first round-2 answer that signs them.
    record: OnceLock<Vec<u8>>,
    /// `key`'s spend identity, derived at the first round 2 that checks a
    /// request against it.
    taproot: OnceLock<TaprootWallet>,
}

impl SigningKey {
    /// The key material of one wallet epoch.
    pub(crate) fn new(epoch: WalletEpoch, key: WalletKey, share: impl Into<Arc<KeyShare>>) -> Self {
        Self {
            epoch,
            key,
            share: share.into(),
            record: OnceLock::new(),
            taproot: OnceLock::new(),
        }
    }

    /// The public record the key signs under.
    pub(crate) fn key(&self) -> &WalletKey {
        &self.key
    }

    /// The public record and the share, this key's caches dropped.
    pub(crate) fn into_key_and_share(self) -> (WalletKey, Arc<KeyShare>) {
        (self.key, self.share)
    }

    /// The public record's bytes (`WalletKey::to_bytes`), which every
    /// round-2 answer signs (docs/blame.md): encoded once per key rather
    /// than once per answer, since the record never changes.
    ///
    /// # Errors
    /// [`thresig_crypto::Error`] if the record does not encode (not
    /// expected for a record in use).
    pub(crate) fn record(&self) -> Result<&[u8], thresig_crypto::Error> {
        once(&self.record, || self.key.to_bytes()).map(Vec::as_slice)
    }

    /// The wallet's spend identity on `network` ([`taproot_wallet`] of the
    /// record), which every round 2 checks its request against: derived
    /// once per key rather than once per request, since checking that the
    /// output key is the tweak of the internal key is an elliptic-curve
    /// computation. `network` is the signer's, the same at every call; a
    /// key switch makes a new `SigningKey`, so an identity never outlives
    /// its key.
    ///
    /// # Errors
    /// As [`taproot_wallet`] (an invariant failure, not kept: every request
    /// reports it); an invariant failure too if asked on another network
    /// than the first call's, rather than an identity on the wrong one.
    pub(crate) fn taproot(&self, network: Network) -> Result<&TaprootWallet, Error> {
        let taproot = once(&self.taproot, || taproot_wallet(network, &self.key))?;
        if taproot.network() != network {
            return Err(Error::Internal(InternalFault::Invariant));
        }
        Ok(taproot)
    }
}

/// `cell`'s value, made by `make` if it has none yet; a failure leaves the
/// cell empty. `make` runs outside the cell's lock, so two racing callers
/// may both make it and one result is kept.
fn once<T, E>(cell: &OnceLock<T>, make: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    let value = make()?;
    Ok(cell.get_or_init(|| value))
}

/// A finished DKG whose key package is durable, waiting for every
/// member's signed confirmation before the wallet may sign.
pub(crate) struct Confirming {
    session: DkgSessionId,
    key: WalletKey,
    share: Arc<KeyShare>,
    transcript: [u8; 32],
    kind: ResultKind,
    confirmed: BTreeSet<Seat>,
    /// The signatures of the other members' confirmations it counted:
    /// kept (durably, for a refresh) so that `--resume` can gather them
    /// from this member when the coordinator lost them.
    received: BTreeMap<Seat, HexBytes>,
}

/// What a finished DKG session made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ResultKind {
    /// A new wallet key, at [`WalletEpoch::INITIAL`].
    Fresh,
    /// New shares of the wallet's key at wallet epoch `epoch`, without the
    /// seats in `removed` (ascending).
    Refresh {
        epoch: WalletEpoch,
        removed: Vec<Seat>,
    },
}

impl Confirming {
    /// A result awaiting confirmations (none counted yet).
    pub(crate) fn new(
        session: DkgSessionId,
        key: WalletKey,
        share: impl Into<Arc<KeyShare>>,
        transcript: [u8; 32],
    ) -> Self {
        Self {
            session,
            key,
            share: share.into(),
            transcript,
            kind: ResultKind::Fresh,
            confirmed: BTreeSet::new(),
            received: BTreeMap::new(),
        }
    }

    /// This result as a refresh of `kind`.
    pub(crate) fn with_kind(mut self, kind: ResultKind) -> Self {
        self.kind = kind;
        self
    }

    /// What the session made.
    pub(crate) fn kind(&self) -> &ResultKind {
        &self.kind
    }

    /// The wallet epoch of the result's shares.
    pub(crate) fn epoch(&self) -> WalletEpoch {
        match &self.kind {
            ResultKind::Fresh => WalletEpoch::INITIAL,
            ResultKind::Refresh { epoch, .. } => *epoch,
        }
    }

    /// The DKG session.
    pub(crate) fn session(&self) -> DkgSessionId {
        self.session
    }

    /// The seats whose confirmations verified, ascending.
    pub(crate) fn confirmed(&self) -> impl Iterator<Item = Seat> + '_ {
        self.confirmed.iter().copied()
    }

    /// This member's share of the result.
    pub(crate) fn share(&self) -> &KeyShare {
        &self.share
    }

    /// The transcript (echo) hash the result is bound to.
    pub(crate) fn transcript(&self) -> [u8; 32] {
        self.transcript
    }

    /// The wallet key the DKG produced.
    pub(crate) fn key(&self) -> &WalletKey {
        &self.key
    }

    /// The confirmation payload every member must sign.
    ///
    /// # Errors
    /// Never in practice; the wallet key always encodes.
    pub(crate) fn payload(&self) -> Result<DkgPayload, Error> {
        Ok(match &self.kind {
            ResultKind::Fresh => DkgPayload::Confirm {
                output_key: HexBytes(self.key.output_key().to_bytes().to_vec()),
                transcript: HexBytes(self.transcript.to_vec()),
            },
            ResultKind::Refresh { epoch, removed } => DkgPayload::RefreshConfirm {
                wallet_key: HexBytes(crate::refresh::key_digest(&self.key)?.to_vec()),
                transcript: HexBytes(self.transcript.to_vec()),
                removed: removed.clone(),
                from_epoch: WalletEpoch(
                    epoch
                        .0
                        .checked_sub(1)
                        .ok_or(Error::Internal(InternalFault::Invariant))?,
                ),
            },
        })
    }

    /// Whether `payload` confirms this result.
    ///
    /// # Errors
    /// As for [`Confirming::payload`].
    pub(crate) fn matches(&self, payload: &DkgPayload) -> Result<bool, Error> {
        Ok(*payload == self.payload()?)
    }

    /// Counts `seat`'s (verified) confirmation; returns how many there are.
    pub(crate) fn accept(&mut self, seat: Seat) -> usize {
        self.confirmed.insert(seat);
        self.confirmed.len()
    }

    /// Counts another member's verified confirmation of this result and
    /// keeps its signature; whether it was new.
    pub(crate) fn receive(&mut self, sender: Seat, signature: HexBytes) -> bool {
        let new = self.confirmed.insert(sender);
        self.received.entry(sender).or_insert(signature);
        new
    }

    /// Uncounts `sender`'s confirmation, whose storing failed.
    pub(crate) fn forget(&mut self, sender: Seat) {
        self.confirmed.remove(&sender);
        self.received.remove(&sender);
    }

    /// The other members' confirmation signatures kept, by seat.
    pub(crate) fn received(&self) -> &BTreeMap<Seat, HexBytes> {
        &self.received
    }

    /// The key material, once confirmed.
    pub(crate) fn into_parts(self) -> (WalletKey, Arc<KeyShare>) {
        (self.key, self.share)
    }
}

/// A wallet's state on this signer.
pub(crate) enum WalletState {
    /// No key package yet.
    DkgPending,
    /// Key package durable; waiting for every member's confirmation.
    AwaitingConfirmations(Confirming),
    /// Signing with this key.
    Active(SigningKey),
    /// Signing with the current key while a refresh's result waits for
    /// every remaining member's confirmation.
    Refreshing(Box<Refreshing>),
    /// Being replaced by a successor wallet; holds its key for the sweep.
    Rekeying(SigningKey),
    /// Retired.
    Retired,
    /// Failed to authenticate.
    Corrupt,
    /// Its key record commits to another script tree than its
    /// configuration names (shown as `corrupt`: it signs nothing).
    ScriptTreeMismatch {
        /// The tree the key record (the DKG) committed to.
        recorded: ScriptTree,
        /// Whether the key is an unconfirmed DKG's result, which the
        /// operator may abort (a confirmed key is never given up).
        unconfirmed: bool,
    },
}

impl WalletState {
    /// The state's name.
    pub(crate) fn kind(&self) -> WalletStateKind {
        match self {
            Self::DkgPending | Self::AwaitingConfirmations(_) => WalletStateKind::DkgPending,
            Self::Active(_) => WalletStateKind::Active,
            Self::Refreshing(r) => match r.role {
                Role::Active => WalletStateKind::Refreshing,
                Role::Rekeying => WalletStateKind::Rekeying,
            },
            Self::Rekeying(_) => WalletStateKind::Rekeying,
            Self::Retired => WalletStateKind::Retired,
            Self::Corrupt | Self::ScriptTreeMismatch { .. } => WalletStateKind::Corrupt,
        }
    }

    /// The DKG or refresh result awaiting confirmations, if any.
    pub(crate) fn confirming(&self) -> Option<&Confirming> {
        match self {
            Self::AwaitingConfirmations(c) => Some(c),
            Self::Refreshing(r) => Some(&r.pending),
            _ => None,
        }
    }

    /// The key material, for states that hold one.
    pub(crate) fn key(&self) -> Option<&SigningKey> {
        match self {
            Self::Active(key) | Self::Rekeying(key) => Some(key),
            Self::Refreshing(r) => Some(&r.current),
            Self::DkgPending
            | Self::AwaitingConfirmations(_)
            | Self::Retired
            | Self::Corrupt
            | Self::ScriptTreeMismatch { .. } => None,
        }
    }

    /// The key to sign with, and whether the wallet signs ordinary spends
    /// or only its rekey sweep.
    ///
    /// # Errors
    /// The error naming why the wallet's state refuses to sign.
    pub(crate) fn signing_key(&self, wallet: &WalletId) -> Result<(&SigningKey, Role), Error> {
        let wallet = wallet.clone();
        match self {
            Self::Active(key) => Ok((key, Role::Active)),
            Self::Refreshing(r) => Ok((&r.current, r.role)),
            Self::Rekeying(key) => Ok((key, Role::Rekeying)),
            Self::DkgPending | Self::AwaitingConfirmations(_) => {
                Err(Error::WalletNotActive { wallet })
            }
            Self::Retired => Err(Error::WalletRetired { wallet }),
            Self::Corrupt => Err(Error::WalletCorrupt { wallet }),
            Self::ScriptTreeMismatch {
                recorded,
                unconfirmed,
            } => Err(Error::ScriptTreeMismatch {
                wallet,
                recorded: root_text(*recorded),
                unconfirmed: *unconfirmed,
            }),
        }
    }
}

/// A script tree as `script_tree_root` would name it, for messages.
fn root_text(tree: ScriptTree) -> String {
    match tree {
        ScriptTree::Root(root) => format!("script_tree_root = \"{}\"", hex::encode(root.0)),
        _ => "no script_tree_root".to_owned(),
    }
}

/// A wallet with a refresh result awaiting confirmations: it signs with
/// `current` until the switch, in `role`.
///
/// The part-3 commit that stored `pending` is the point where this member
/// released its confirmation (it leaves right after the commit, and a
/// crash in between cannot be told apart): a member in this state never
/// vetoes the refresh and keeps the pending shares until it switches or a
/// threshold of participants' vetoes proves nobody can.
pub(crate) struct Refreshing {
    /// The key the wallet signs with until the switch.
    pub(crate) current: SigningKey,
    /// The refresh result (its key package durable at the next epoch).
    pub(crate) pending: Confirming,
    /// What the wallet signs, before and after the switch: an emergency
    /// rekey begun after the release keeps the pending refresh, and the
    /// wallet stays `rekeying` if it later switches.
    pub(crate) role: Role,
}

impl Refreshing {
    /// The wallet's state once the pending result is discarded.
    pub(crate) fn without_pending(self) -> WalletState {
        self.role.holding(self.current)
    }
}

impl Role {
    /// The state of a wallet in this role signing with `key`.
    pub(crate) fn holding(self, key: SigningKey) -> WalletState {
        match self {
            Self::Active => WalletState::Active(key),
            Self::Rekeying => WalletState::Rekeying(key),
        }
    }
}

/// What a wallet that holds a key may sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Any spend its policy allows.
    Active,
    /// Only the sweep to its successor (DESIGN.md §4, emergency rekey).
    Rekeying,
}

#[cfg(test)]
pub(crate) mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    use thresig_crypto::GroupParams;

    use super::*;

    /// A signing key at `epoch` of a (2, 3) key-path-only wallet imported
    /// from `secret`: seat 1's share.
    pub(crate) fn key(secret: u8, epoch: u64, rng: &mut ChaCha20Rng) -> SigningKey {
        let params = GroupParams::new(2, 3).unwrap();
        let (key, shares) =
            thresig_crypto::import_key(&[secret; 32], params, ScriptTree::KeyPathOnly, rng)
                .unwrap();
        let share = shares.into_iter().next().unwrap();
        SigningKey::new(WalletEpoch(epoch), key, share)
    }

    /// Round 2 checks a request against the identity a wallet's key keeps:
    /// after the wallet switches keys (a refresh, a repair, in either role)
    /// it must be the new key's, never the one derived for the key before.
    #[test]
    fn spend_identity_is_the_held_keys_after_a_switch() {
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        let network = Network::Regtest;
        let mut state = WalletState::Active(key(1, 0, &mut rng));
        for (secret, epoch, role) in [(2, 1, Role::Active), (3, 2, Role::Rekeying)] {
            let before = state.key().unwrap().taproot(network).unwrap().clone();
            state = role.holding(key(secret, epoch, &mut rng));
            let held = state.key().unwrap();
            let identity = held.taproot(network).unwrap();
            assert_eq!(identity, &taproot_wallet(network, &held.key).unwrap());
            assert_ne!(identity, &before);
            assert_eq!(held.taproot(network).unwrap(), identity);
        }
    }

    /// The identity kept is for the network it was first asked on; asked
    /// on another, the key refuses rather than answer with it.
    #[test]
    fn spend_identity_is_never_given_for_another_network() {
        let mut rng = ChaCha20Rng::seed_from_u64(18);
        let held = key(1, 0, &mut rng);
        assert_eq!(
            held.taproot(Network::Regtest).unwrap().network(),
            Network::Regtest
        );
        assert!(matches!(
            held.taproot(Network::Bitcoin),
            Err(Error::Internal(InternalFault::Invariant))
        ));
    }
}
