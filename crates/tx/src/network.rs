//! The Bitcoin network a signer is configured for, and address parsing bound to it.

use std::fmt;
use std::str::FromStr;

use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, ScriptBuf};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The Bitcoin network named in a signer's configuration.
///
/// Every address the signer parses (destinations, allowlists, the CLI's
/// outputs) must belong to this network; an address of another network is
/// refused with [`Error::WrongNetwork`], so a testnet configuration can never
/// authorize a mainnet destination or the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Network {
    /// Bitcoin mainnet.
    Bitcoin,
    /// Bitcoin testnet (version 3).
    Testnet,
    /// Bitcoin signet.
    Signet,
    /// Local regression-test network (the demo's network).
    Regtest,
}

impl Network {
    /// The configuration spelling of this network (`bitcoin`, `testnet`, `signet`, `regtest`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bitcoin => "bitcoin",
            Self::Testnet => "testnet",
            Self::Signet => "signet",
            Self::Regtest => "regtest",
        }
    }

    /// The rust-bitcoin network value for this network.
    #[must_use]
    pub const fn to_bitcoin(self) -> bitcoin::Network {
        match self {
            Self::Bitcoin => bitcoin::Network::Bitcoin,
            Self::Testnet => bitcoin::Network::Testnet,
            Self::Signet => bitcoin::Network::Signet,
            Self::Regtest => bitcoin::Network::Regtest,
        }
    }

    /// Parses `text` as an address and requires it to belong to this network.
    ///
    /// # Errors
    /// [`Error::AddressParse`] if `text` is not an address at all, and
    /// [`Error::WrongNetwork`] if it is an address of another network.
    pub fn parse_address(self, text: &str) -> Result<Address, Error> {
        let unchecked: Address<NetworkUnchecked> = text
            .parse()
            .map_err(|source| Error::AddressParse { source })?;
        unchecked
            .require_network(self.to_bitcoin())
            .map_err(|_| Error::WrongNetwork {
                network: self,
                address: text.to_owned(),
            })
    }

    /// Parses `text` as an address of this network and returns its scriptPubKey.
    ///
    /// # Errors
    /// As [`Network::parse_address`].
    pub fn address_script(self, text: &str) -> Result<ScriptBuf, Error> {
        self.parse_address(text)
            .map(|address| address.script_pubkey())
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Network {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bitcoin" => Ok(Self::Bitcoin),
            "testnet" => Ok(Self::Testnet),
            "signet" => Ok(Self::Signet),
            "regtest" => Ok(Self::Regtest),
            _ => Err(Error::UnknownNetwork { name: s.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in [
            Network::Bitcoin,
            Network::Testnet,
            Network::Signet,
            Network::Regtest,
        ] {
            assert_eq!(n.as_str().parse::<Network>().unwrap(), n);
        }
        assert!(matches!(
            "mainnet".parse::<Network>(),
            Err(Error::UnknownNetwork { .. })
        ));
    }

    #[test]
    fn address_of_another_network_is_refused() {
        // BIP350 test address (mainnet P2TR).
        let mainnet = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0";
        assert!(Network::Bitcoin.parse_address(mainnet).is_ok());
        for other in [Network::Testnet, Network::Signet, Network::Regtest] {
            assert!(matches!(
                other.parse_address(mainnet),
                Err(Error::WrongNetwork { network, .. }) if network == other
            ));
        }
        assert!(matches!(
            Network::Bitcoin.parse_address("not an address"),
            Err(Error::AddressParse { .. })
        ));
    }
}
