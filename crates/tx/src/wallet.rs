//! A wallet's spend identity as the transaction layer sees it.

use bitcoin::key::{TapTweak, TweakedPublicKey, XOnlyPublicKey};
use bitcoin::taproot::TapNodeHash;
use bitcoin::{Address, ScriptBuf};
use secp256k1::SECP256K1;

use crate::{Error, Network};

/// The keys a wallet spends with: internal key, optional script-tree root and
/// the output key that its P2TR scriptPubKey commits to.
///
/// # Invariants
/// `output_key == tweak(internal_key, merkle_root)` (BIP341 key-path tweak),
/// checked by both constructors, and `script_pubkey` is the P2TR script of
/// `output_key`. This holds for every key convention in the design (DKG key
/// path only, DKG with a script tree, imported): each records the internal
/// key and root it actually used. Holding no secret, this type is `Clone`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaprootWallet {
    network: Network,
    internal_key: XOnlyPublicKey,
    merkle_root: Option<TapNodeHash>,
    output_key: TweakedPublicKey,
    script_pubkey: ScriptBuf,
}

impl TaprootWallet {
    /// Derives the wallet's output key from its internal key and script-tree
    /// root (`None` for a key-path-only wallet).
    #[must_use]
    pub fn new(
        network: Network,
        internal_key: XOnlyPublicKey,
        merkle_root: Option<TapNodeHash>,
    ) -> Self {
        let (output_key, _parity) = internal_key.tap_tweak(SECP256K1, merkle_root);
        Self {
            network,
            internal_key,
            merkle_root,
            output_key,
            script_pubkey: ScriptBuf::new_p2tr_tweaked(output_key),
        }
    }

    /// Rebuilds a wallet from stored keys, checking that the stored output key
    /// is the tweak of the stored internal key by the stored root.
    ///
    /// # Errors
    /// [`Error::OutputKeyMismatch`] if `output_key` is not that tweak: the
    /// record is inconsistent and nothing may be signed for it.
    pub fn from_keys(
        network: Network,
        internal_key: XOnlyPublicKey,
        merkle_root: Option<TapNodeHash>,
        output_key: XOnlyPublicKey,
    ) -> Result<Self, Error> {
        let wallet = Self::new(network, internal_key, merkle_root);
        if wallet.output_key.to_x_only_public_key() == output_key {
            Ok(wallet)
        } else {
            Err(Error::OutputKeyMismatch { stored: output_key })
        }
    }

    /// The network this wallet lives on.
    #[must_use]
    pub const fn network(&self) -> Network {
        self.network
    }

    /// The BIP341 internal key (the PSBT's `tap_internal_key`).
    #[must_use]
    pub const fn internal_key(&self) -> XOnlyPublicKey {
        self.internal_key
    }

    /// The script-tree root (the PSBT's `tap_merkle_root`), if the wallet has one.
    #[must_use]
    pub const fn merkle_root(&self) -> Option<TapNodeHash> {
        self.merkle_root
    }

    /// The tweaked output key that signatures verify under.
    #[must_use]
    pub const fn output_key(&self) -> TweakedPublicKey {
        self.output_key
    }

    /// The wallet's P2TR scriptPubKey: every input it signs must spend this.
    #[must_use]
    pub fn script_pubkey(&self) -> &ScriptBuf {
        &self.script_pubkey
    }

    /// The wallet's P2TR address on its network.
    #[must_use]
    pub fn address(&self) -> Address {
        Address::p2tr_tweaked(self.output_key, self.network.to_bitcoin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> XOnlyPublicKey {
        let sk = secp256k1::SecretKey::from_slice(&[byte; 32]).unwrap();
        sk.x_only_public_key(SECP256K1).0
    }

    #[test]
    fn stored_output_key_must_be_the_tweak() {
        let w = TaprootWallet::new(Network::Regtest, key(1), None);
        assert!(w.script_pubkey().is_p2tr());
        assert_eq!(
            TaprootWallet::from_keys(
                Network::Regtest,
                key(1),
                None,
                w.output_key().to_x_only_public_key()
            )
            .unwrap(),
            w
        );
        assert!(matches!(
            TaprootWallet::from_keys(Network::Regtest, key(1), None, key(1)),
            Err(Error::OutputKeyMismatch { .. })
        ));
        let root = <TapNodeHash as bitcoin::hashes::Hash>::from_byte_array([7; 32]);
        let with_root = TaprootWallet::new(Network::Regtest, key(1), Some(root));
        assert_ne!(with_root.output_key(), w.output_key());
        assert!(with_root.address().to_string().starts_with("bcrt1p"));
    }
}
