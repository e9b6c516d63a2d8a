//! Real FROST signers: key shares from the crypto crate's DKG (or a
//! trusted-dealer import), nonces that each sign once.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use thresig_crypto::{
    Commitment, DkgRound1, GroupParams, KeyShare, PreparedPackage, Round2Package, ScriptTree,
    SecretNonce, Signature, SignatureShare, SigningPackage, WalletKey, commit, import_key, sign,
    verify,
};
use thresig_roast::{Refusal, Seat};

use crate::harness::Backend;

/// n signers of one wallet.
pub(crate) struct FrostCluster {
    wallet: WalletKey,
    shares: BTreeMap<Seat, KeyShare>,
    nonces: BTreeMap<Seat, Vec<SecretNonce>>,
}

impl FrostCluster {
    /// Runs a DKG among `signers` members with threshold `threshold`.
    pub(crate) fn dkg(
        threshold: u16,
        signers: u16,
        tree: ScriptTree,
        rng: &mut ChaCha20Rng,
    ) -> Self {
        let params = GroupParams::new(threshold, signers).unwrap();
        let mut round1 = Vec::new();
        let mut states = Vec::new();
        for seat in params.seats() {
            let (state, package) = DkgRound1::start(params, seat, tree, rng).unwrap();
            round1.push((seat, package));
            states.push(state);
        }
        let mut inbox: BTreeMap<Seat, Vec<(Seat, Round2Package)>> = BTreeMap::new();
        let mut round2 = Vec::new();
        for state in states {
            let me = state.seat();
            let peers = round1.iter().filter(|(s, _)| *s != me).cloned().collect();
            let (state, outgoing) = state.receive(peers).unwrap();
            for (to, package) in outgoing {
                inbox.entry(to).or_default().push((me, package));
            }
            round2.push(state);
        }
        let mut shares = BTreeMap::new();
        let mut wallet = None;
        for state in round2 {
            let me = state.seat();
            let (share, key, _) = state
                .finish(inbox.remove(&me).unwrap_or_default())
                .unwrap()
                .into_parts();
            shares.insert(me, share);
            wallet = Some(key);
        }
        Self {
            wallet: wallet.unwrap(),
            shares,
            nonces: BTreeMap::new(),
        }
    }

    /// Splits a random existing key among `signers` members (the imported
    /// convention: frost's key is untweaked, signing applies the tweak).
    pub(crate) fn imported(
        threshold: u16,
        signers: u16,
        tree: ScriptTree,
        rng: &mut ChaCha20Rng,
    ) -> Self {
        let params = GroupParams::new(threshold, signers).unwrap();
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        secret[0] &= 0x7f; // below the group order
        let (wallet, shares) = import_key(&secret, params, tree, rng).unwrap();
        Self {
            wallet,
            shares: shares.into_iter().map(|s| (s.seat(), s)).collect(),
            nonces: BTreeMap::new(),
        }
    }

    pub(crate) fn wallet(&self) -> &WalletKey {
        &self.wallet
    }
}

impl Backend for FrostCluster {
    type S = WalletKey;

    fn seats(&self) -> Vec<Seat> {
        self.wallet.members()
    }

    fn threshold(&self) -> u16 {
        self.wallet.threshold()
    }

    fn scheme(&self) -> WalletKey {
        self.wallet.clone()
    }

    fn message(&self, rng: &mut ChaCha20Rng) -> [u8; 32] {
        let mut message = [0u8; 32];
        rng.fill_bytes(&mut message);
        message
    }

    fn commit(&mut self, seat: Seat, inputs: usize, rng: &mut ChaCha20Rng) -> Vec<Commitment> {
        let share = &self.shares[&seat];
        let live = self.nonces.entry(seat).or_default();
        (0..inputs)
            .map(|_| {
                let (nonce, commitment) = commit(share, rng);
                live.push(nonce);
                commitment
            })
            .collect()
    }

    fn sign(
        &mut self,
        seat: Seat,
        packages: &[PreparedPackage],
    ) -> Result<Vec<SignatureShare>, Refusal> {
        let share = &self.shares[&seat];
        let live = self.nonces.entry(seat).or_default();
        let mut out = Vec::new();
        for prepared in packages {
            // A signer gets the package's bytes, as over the wire.
            let package =
                &SigningPackage::from_bytes(prepared.bytes()).map_err(|_| Refusal::Rejected)?;
            let commitment = package.commitment(seat).ok_or(Refusal::Rejected)?;
            let at = live
                .iter()
                .position(|nonce| nonce.commitment() == commitment)
                .ok_or(Refusal::NonceUnknown)?;
            let nonce = live.swap_remove(at);
            out.push(sign(nonce, package, share, &self.wallet).map_err(|_| Refusal::Rejected)?);
        }
        Ok(out)
    }

    fn corrupt(&self, share: &SignatureShare) -> SignatureShare {
        let mut bytes = share.to_bytes();
        if let Some(last) = bytes.last_mut() {
            *last ^= 1;
        }
        SignatureShare::from_bytes(&bytes)
            .or_else(|_| SignatureShare::from_bytes(&[0u8; 32]))
            .unwrap()
    }

    fn verify(&self, message: &[u8; 32], signature: &Signature) -> bool {
        verify(&self.wallet.output_key(), message, signature).is_ok()
    }

    fn forget(&mut self, seat: Seat) {
        self.nonces.remove(&seat);
    }
}
