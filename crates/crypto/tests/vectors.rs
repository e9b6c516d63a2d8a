//! Upstream test vectors (copies under `tests/vectors/`, origin in its README).

use std::collections::BTreeMap;

use frost_core::keys::dkg::{round1, round2};
use frost_core::keys::{
    KeyPackage, PublicKeyPackage, SigningShare, VerifiableSecretSharingCommitment,
};
use frost_core::round1::{Nonce, NonceCommitment, SigningCommitments, SigningNonces};
use frost_core::{Identifier, SigningPackage};
use frost_secp256k1_tr::Secp256K1Sha256TR as S;
use serde_json::Value;
use thresig_crypto::{
    MerkleRoot, ScriptTree, Signature, XOnlyKey, tap_tweak, taproot_output_key, verify,
};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/vectors/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn array32(v: &Value) -> [u8; 32] {
    bytes(v).try_into().unwrap()
}

fn id(n: u64) -> Identifier<S> {
    Identifier::try_from(u16::try_from(n).unwrap()).unwrap()
}

/// Independent BIP340 check with libsecp256k1.
fn secp_verify(key: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
    let secp = secp256k1::Secp256k1::verification_only();
    let key = match secp256k1::XOnlyPublicKey::from_slice(key) {
        Ok(k) => k,
        Err(_) => return false,
    };
    let sig = match secp256k1::schnorr::Signature::from_slice(sig) {
        Ok(s) => s,
        Err(_) => return false,
    };
    let Ok(msg) = <[u8; 32]>::try_from(message) else {
        // secp256k1 0.29 verifies 32-byte messages only.
        return false;
    };
    secp.verify_schnorr(&sig, &secp256k1::Message::from_digest(msg), &key)
        .is_ok()
}

#[test]
fn bip341_script_pubkeys_reproduce_tweak_and_output_key() {
    let v = json("bip341-wallet-test-vectors.json");
    let cases = v["scriptPubKey"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let internal = XOnlyKey::from_bytes(array32(&case["given"]["internalPubkey"])).unwrap();
        let tree = match &case["intermediary"]["merkleRoot"] {
            Value::Null => ScriptTree::KeyPathOnly,
            root => ScriptTree::Root(MerkleRoot(array32(root))),
        };
        assert_eq!(
            tap_tweak(&internal, &tree),
            array32(&case["intermediary"]["tweak"])
        );
        let output = taproot_output_key(&internal, &tree).unwrap();
        assert_eq!(
            output.to_bytes(),
            array32(&case["intermediary"]["tweakedPubkey"])
        );
        let spk = bytes(&case["expected"]["scriptPubKey"]);
        assert_eq!(&spk[..2], &[0x51, 0x20]);
        assert_eq!(&spk[2..], &output.to_bytes());
    }
}

#[test]
fn bip340_csv_verifies_as_stated() {
    let csv = read("bip340-test-vectors.csv");
    let mut rows = 0;
    for line in csv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.trim_end().split(',').collect();
        let (key, msg, sig, expected) = (f[2], f[4], f[5], f[6] == "TRUE");
        let key: [u8; 32] = hex::decode(key).unwrap().try_into().unwrap();
        let msg = hex::decode(msg).unwrap();
        let sig: [u8; 64] = hex::decode(sig).unwrap().try_into().unwrap();
        let ours = XOnlyKey::from_bytes(key)
            .and_then(|k| Signature::from_bytes(&sig).and_then(|s| verify(&k, &msg, &s)))
            .is_ok();
        assert_eq!(ours, expected, "row {}: {}", f[0], f.get(7).unwrap_or(&""));
        if msg.len() == 32 {
            assert_eq!(
                secp_verify(&key, &msg, &sig),
                expected,
                "secp256k1, row {}",
                f[0]
            );
        }
        rows += 1;
    }
    assert_eq!(rows, 19);
}

#[test]
fn frost_signing_vector_reproduces_byte_for_byte() {
    let v = json("frost-secp256k1-tr/vectors.json");
    let inputs = &v["inputs"];
    let message = bytes(&inputs["message"]);
    let vk =
        frost_core::VerifyingKey::<S>::deserialize(&bytes(&inputs["verifying_key_key"])).unwrap();
    let shares: BTreeMap<Identifier<S>, SigningShare<S>> = inputs["participant_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let share = SigningShare::deserialize(&bytes(&s["participant_share"])).unwrap();
            (id(s["identifier"].as_u64().unwrap()), share)
        })
        .collect();
    let verifying_shares = shares.iter().map(|(i, s)| (*i, (*s).into())).collect();
    let group = PublicKeyPackage::new(verifying_shares, vk, Some(2));

    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for r1 in v["round_one_outputs"]["outputs"].as_array().unwrap() {
        let i = id(r1["identifier"].as_u64().unwrap());
        let n = SigningNonces::<S>::from_nonces(
            Nonce::deserialize(&bytes(&r1["hiding_nonce"])).unwrap(),
            Nonce::deserialize(&bytes(&r1["binding_nonce"])).unwrap(),
        );
        let c = SigningCommitments::new(
            NonceCommitment::deserialize(&bytes(&r1["hiding_nonce_commitment"])).unwrap(),
            NonceCommitment::deserialize(&bytes(&r1["binding_nonce_commitment"])).unwrap(),
        );
        assert_eq!(n.commitments(), &c, "nonce commitments reproduce");
        nonces.insert(i, n);
        commitments.insert(i, c);
    }
    let package = SigningPackage::new(commitments, &message);
    let mut sig_shares = BTreeMap::new();
    for r2 in v["round_two_outputs"]["outputs"].as_array().unwrap() {
        let i = id(r2["identifier"].as_u64().unwrap());
        let key = KeyPackage::new(i, shares[&i], shares[&i].into(), vk, 2);
        let share = frost_core::round2::sign(&package, &nonces[&i], &key).unwrap();
        assert_eq!(share.serialize(), bytes(&r2["sig_share"]));
        sig_shares.insert(i, share);
    }
    let sig = frost_core::aggregate(&package, &sig_shares, &group).unwrap();
    let sig_bytes: [u8; 64] = sig.serialize().unwrap().try_into().unwrap();
    assert_eq!(sig_bytes.to_vec(), bytes(&v["final_output"]["sig"]));

    // The signature is a BIP340 signature under the x-only verifying key.
    let key: [u8; 32] = vk.serialize().unwrap()[1..].try_into().unwrap();
    let ours = Signature::from_bytes(&sig_bytes).unwrap();
    verify(&XOnlyKey::from_bytes(key).unwrap(), &message, &ours).unwrap();
}

#[test]
fn frost_dkg_vector_packages_verify_and_yield_its_keys() {
    let v = json("frost-secp256k1-tr/vectors_dkg.json");
    let inputs = &v["inputs"];
    let expected_vk = bytes(&inputs["verifying_key"]);
    let members: Vec<u64> = vec![1, 2, 3];
    let commitment = |n: u64| {
        let c: Vec<Vec<u8>> = inputs[n.to_string()]["vss_commitments"]
            .as_array()
            .unwrap()
            .iter()
            .map(bytes)
            .collect();
        VerifiableSecretSharingCommitment::<S>::deserialize(c).unwrap()
    };
    let round1_packages: BTreeMap<Identifier<S>, round1::Package<S>> = members
        .iter()
        .map(|n| {
            let pok = frost_core::Signature::<S>::deserialize(&bytes(
                &inputs[n.to_string()]["proof_of_knowledge"],
            ))
            .unwrap();
            (id(*n), round1::Package::new(commitment(*n), pok))
        })
        .collect();
    for (i, p) in &round1_packages {
        frost_core::keys::dkg::verify_proof_of_knowledge(
            *i,
            p.commitment(),
            p.proof_of_knowledge(),
        )
        .unwrap();
        // Also through this crate's codec: a frost round-1 package decodes.
        thresig_crypto::Round1Package::from_bytes(&p.serialize().unwrap()).unwrap();
    }

    for n in &members {
        let me = &inputs[n.to_string()];
        let secret = round2::SecretPackage::<S>::new(
            id(*n),
            commitment(*n),
            // f_i(i) is not in the vector; evaluate the member's polynomial.
            own_evaluation(me, *n),
            2,
            3,
        );
        let peers: BTreeMap<_, _> = round1_packages
            .iter()
            .filter(|(i, _)| **i != id(*n))
            .map(|(i, p)| (*i, p.clone()))
            .collect();
        let received: BTreeMap<_, _> = members
            .iter()
            .filter(|m| *m != n)
            .map(|m| {
                // `signing_shares[m]` of member n is what n received from m.
                let share = SigningShare::deserialize(&bytes(&me["signing_shares"][m.to_string()]))
                    .unwrap();
                (id(*m), round2::Package::new(share))
            })
            .collect();
        let (key, group) = frost_core::keys::dkg::part3(&secret, &peers, &received).unwrap();
        assert_eq!(key.signing_share().serialize(), bytes(&me["signing_share"]));
        assert_eq!(
            key.verifying_share().serialize().unwrap(),
            bytes(&me["verifying_share"])
        );
        assert_eq!(group.verifying_key().serialize().unwrap(), expected_vk);
    }

    // The DKG's key is the BIP341 key-path tweak of P, the sum of the constant terms.
    let constants: BTreeMap<_, _> = members
        .iter()
        .map(|n| {
            let c0 = bytes(&inputs[n.to_string()]["vss_commitments"][0]);
            (
                id(*n),
                VerifiableSecretSharingCommitment::<S>::deserialize(vec![c0]).unwrap(),
            )
        })
        .collect();
    let by_ref = constants.iter().map(|(i, c)| (*i, c)).collect();
    let p = PublicKeyPackage::from_dkg_commitments(&by_ref).unwrap();
    let p_x: [u8; 32] = p.verifying_key().serialize().unwrap()[1..]
        .try_into()
        .unwrap();
    let q = taproot_output_key(
        &XOnlyKey::from_bytes(p_x).unwrap(),
        &ScriptTree::KeyPathOnly,
    )
    .unwrap();
    assert_eq!(q.to_bytes().to_vec(), expected_vk[1..].to_vec());
}

/// f_i(i) = a_i0 + a_i1 * i for the degree-1 polynomial of member `n`.
fn own_evaluation(me: &Value, n: u64) -> <<<S as frost_core::Ciphersuite>::Group as frost_core::Group>::Field as frost_core::Field>::Scalar{
    use frost_core::{Field, Group};
    type F = <<S as frost_core::Ciphersuite>::Group as Group>::Field;
    let a0 = F::deserialize(&array32(&me["signing_key"])).unwrap();
    let a1 = F::deserialize(&array32(&me["coefficient"])).unwrap();
    let i = F::deserialize(&{
        let mut b = [0u8; 32];
        b[31] = u8::try_from(n).unwrap();
        b
    })
    .unwrap();
    a0 + a1 * i
}
