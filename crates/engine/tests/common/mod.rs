//! Deterministic test harness: a cluster of signers over in-memory stores,
//! a virtual clock, a seeded RNG and a fault-injecting store decorator.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use thresig_crypto::{
    Commitment, DkgRound1, GroupParams, Round2Package, ScriptTree, Seat, Signature, SignatureShare,
    SigningPackage, WalletKey,
};
use thresig_engine::{
    CommitmentHash, CoordinatorId, Digest, Epoch, Error, HexBytes, IdentityKey, Limits, Marker,
    MarkerInsert, RawDigestPolicy, Round1Request, Round2Request, Signer, SignerConfig, SignerStore,
    SigningTarget, StorageFault, StoredKey, StoredWallet, Timestamp, WalletConfig, WalletId,
};
use zeroize::Zeroizing;

/// Prints the seed if the test panics while this guard lives.
pub struct SeedGuard(pub u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed with seed {}", self.0);
        }
    }
}

/// A stored wallet: epoch, encoded wallet key, encoded share.
type WalletRecord = (Epoch, Vec<u8>, Vec<u8>);

/// An in-memory store double: wallet records and markers.
#[derive(Default)]
pub struct MemStore {
    wallets: Mutex<HashMap<WalletId, WalletRecord>>,
    markers: Mutex<HashMap<(WalletId, CommitmentHash), Marker>>,
}

impl MemStore {
    pub fn put_wallet(&self, wallet: &WalletId, epoch: Epoch, key: Vec<u8>, share: Vec<u8>) {
        self.wallets
            .lock()
            .unwrap()
            .insert(wallet.clone(), (epoch, key, share));
    }

    pub fn markers(&self) -> HashMap<(WalletId, CommitmentHash), Marker> {
        self.markers.lock().unwrap().clone()
    }
}

impl SignerStore for MemStore {
    fn load_wallet(&self, wallet: &WalletId) -> Result<StoredWallet, StorageFault> {
        Ok(match self.wallets.lock().unwrap().get(wallet) {
            None => StoredWallet::Absent,
            Some((epoch, key, share)) => StoredWallet::Active(StoredKey::new(
                *epoch,
                key.clone(),
                Zeroizing::new(share.clone()),
            )),
        })
    }

    fn marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
    ) -> Result<Option<Marker>, StorageFault> {
        Ok(self
            .markers
            .lock()
            .unwrap()
            .get(&(wallet.clone(), *commitment))
            .cloned())
    }

    fn insert_marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
        marker: &Marker,
    ) -> Result<MarkerInsert, StorageFault> {
        let mut markers = self.markers.lock().unwrap();
        let key = (wallet.clone(), *commitment);
        if let Some(existing) = markers.get(&key) {
            return Ok(MarkerInsert::Existing(existing.clone()));
        }
        markers.insert(key, marker.clone());
        Ok(MarkerInsert::Inserted)
    }
}

/// A scripted failure of the next marker commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The commit fails and nothing is written.
    Lost,
    /// The commit is durable but the caller is told it failed.
    Ambiguous,
}

/// Parks the marker commit of one wallet until released.
struct Park {
    wallet: WalletId,
    parked: Sender<()>,
    release: Receiver<()>,
}

/// A decorator injecting storage faults into any store.
pub struct FaultStore<S> {
    pub inner: S,
    commit_faults: Mutex<VecDeque<Fault>>,
    read_fault: Mutex<Option<StorageFault>>,
    park: Mutex<Option<Park>>,
}

impl<S> FaultStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            commit_faults: Mutex::new(VecDeque::new()),
            read_fault: Mutex::new(None),
            park: Mutex::new(None),
        }
    }

    /// The next marker commit fails as `fault`.
    pub fn fail_next_commit(&self, fault: Fault) {
        self.commit_faults.lock().unwrap().push_back(fault);
    }

    /// Every read fails with `fault` until cleared with `None`.
    pub fn fail_reads(&self, fault: Option<StorageFault>) {
        *self.read_fault.lock().unwrap() = fault;
    }

    /// The next marker commit of `wallet` sends on `parked` and waits for
    /// `release` before committing.
    pub fn park_commit(&self, wallet: &WalletId, parked: Sender<()>, release: Receiver<()>) {
        *self.park.lock().unwrap() = Some(Park {
            wallet: wallet.clone(),
            parked,
            release,
        });
    }
}

impl<S: SignerStore> SignerStore for FaultStore<S> {
    fn load_wallet(&self, wallet: &WalletId) -> Result<StoredWallet, StorageFault> {
        if let Some(fault) = *self.read_fault.lock().unwrap() {
            return Err(fault);
        }
        self.inner.load_wallet(wallet)
    }

    fn marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
    ) -> Result<Option<Marker>, StorageFault> {
        if let Some(fault) = *self.read_fault.lock().unwrap() {
            return Err(fault);
        }
        self.inner.marker(wallet, commitment)
    }

    fn insert_marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
        marker: &Marker,
    ) -> Result<MarkerInsert, StorageFault> {
        let park = {
            let mut slot = self.park.lock().unwrap();
            match slot.as_ref() {
                Some(p) if &p.wallet == wallet => slot.take(),
                _ => None,
            }
        };
        if let Some(p) = park {
            p.parked.send(()).unwrap();
            p.release.recv().unwrap();
        }
        let fault = self.commit_faults.lock().unwrap().pop_front();
        match fault {
            None => self.inner.insert_marker(wallet, commitment, marker),
            Some(Fault::Lost) => Err(StorageFault::Unavailable),
            Some(Fault::Ambiguous) => {
                self.inner.insert_marker(wallet, commitment, marker)?;
                Err(StorageFault::Unavailable)
            }
        }
    }
}

pub type TestStore = Arc<FaultStore<MemStore>>;

pub struct Member {
    pub config: SignerConfig,
    pub store: TestStore,
    pub signer: Signer<TestStore>,
}

/// `n` signers sharing `wallets` (each made by a DKG), on a virtual clock.
pub struct Cluster {
    pub seed: u64,
    pub rng: ChaCha20Rng,
    pub now: Timestamp,
    pub threshold: u16,
    pub keys: BTreeMap<WalletId, WalletKey>,
    pub members: Vec<Member>,
    _guard: SeedGuard,
}

/// The identity key of seat `s` (deterministic).
pub fn identity(s: u16) -> IdentityKey {
    let mut secret = [0u8; 32];
    secret[..2].copy_from_slice(&s.to_be_bytes());
    secret[2] = 0x5e;
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    IdentityKey::from_bytes(key.verifying_key().to_bytes()).unwrap()
}

/// Seat `s` acting as a coordinator.
pub fn coordinator(s: u16) -> CoordinatorId {
    CoordinatorId(identity(s).to_bytes())
}

/// Two coordinators (the members at seats 3 and 2).
pub const COORD_A: u16 = 3;
pub const COORD_B: u16 = 2;

pub fn wid(name: &str) -> WalletId {
    WalletId::new(name).unwrap()
}

pub fn seat(n: u16) -> Seat {
    Seat::try_from(n).unwrap()
}

pub fn small_limits() -> Limits {
    Limits::new(4, 8, 12, Duration::from_secs(60))
}

impl Cluster {
    pub fn new(seed: u64, t: u16, n: u16, wallets: &[&str], limits: Limits) -> Self {
        let guard = SeedGuard(seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identities: Vec<IdentityKey> = (1..=n).map(identity).collect();
        let stores: Vec<TestStore> = (0..n)
            .map(|_| Arc::new(FaultStore::new(MemStore::default())))
            .collect();
        let mut keys = BTreeMap::new();
        let mut configs = Vec::new();
        for name in wallets {
            let id = wid(name);
            let (shares, key) = dkg(t, n, &mut rng);
            for (i, share) in shares.into_iter().enumerate() {
                stores[i]
                    .inner
                    .put_wallet(&id, Epoch(1), key.to_bytes().unwrap(), share);
            }
            keys.insert(id.clone(), key);
            configs.push(WalletConfig::new(
                id,
                t,
                identities.clone(),
                RawDigestPolicy::Allow,
            ));
        }
        let members = identities
            .iter()
            .zip(stores)
            .map(|(identity, store)| {
                let config = SignerConfig::new(*identity, configs.clone(), limits.clone());
                let signer = Signer::open(config.clone(), store.clone()).unwrap();
                Member {
                    config,
                    store,
                    signer,
                }
            })
            .collect();
        Self {
            seed,
            rng,
            now: Timestamp(1_700_000_000_000),
            threshold: t,
            keys,
            members,
            _guard: guard,
        }
    }

    pub fn member(&self, s: u16) -> &Member {
        &self.members[usize::from(s) - 1]
    }

    /// Drops seat `s`'s signer and opens a new one over the same store.
    pub fn restart(&mut self, s: u16) {
        let m = &mut self.members[usize::from(s) - 1];
        m.signer = Signer::open(m.config.clone(), m.store.clone()).unwrap();
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
    }

    pub fn round1(
        &mut self,
        s: u16,
        from: u16,
        wallet: &str,
        inputs: usize,
    ) -> Result<Vec<Commitment>, Error> {
        let req = Round1Request::new(wid(wallet), inputs);
        let now = self.now;
        let resp = self.members[usize::from(s) - 1].signer.round1(
            now,
            coordinator(from),
            &req,
            &mut self.rng,
        )?;
        Ok(resp
            .commitments
            .iter()
            .map(|c| Commitment::from_bytes(&c.0).unwrap())
            .collect())
    }

    /// A round-2 request over the given per-seat commitment vectors.
    pub fn request(
        &self,
        wallet: &str,
        commitments: &BTreeMap<u16, Vec<Commitment>>,
        digests: &[[u8; 32]],
    ) -> Round2Request {
        let packages = (0..digests.len())
            .map(|i| {
                let map: BTreeMap<Seat, Commitment> =
                    commitments.iter().map(|(s, v)| (seat(*s), v[i])).collect();
                HexBytes(
                    SigningPackage::new(&map, &digests[i])
                        .unwrap()
                        .to_bytes()
                        .unwrap(),
                )
            })
            .collect();
        Round2Request::new(
            wid(wallet),
            Epoch(1),
            commitments.keys().copied().collect(),
            SigningTarget::digests(digests.iter().map(|d| Digest(*d)).collect()),
            packages,
        )
    }

    pub fn round2(&self, s: u16, req: &Round2Request) -> Result<Vec<Vec<u8>>, Error> {
        self.member(s)
            .signer
            .round2(self.now, coordinator(COORD_A), req)
            .map(|r| r.shares.into_iter().map(|h| h.0).collect())
    }

    /// Aggregates per-seat shares of every input and verifies each signature.
    pub fn aggregate(
        &self,
        wallet: &str,
        req: &Round2Request,
        shares: &BTreeMap<u16, Vec<Vec<u8>>>,
    ) -> Vec<Signature> {
        let key = &self.keys[&wid(wallet)];
        req.packages
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let package = SigningPackage::from_bytes(&p.0).unwrap();
                let by_seat: BTreeMap<Seat, SignatureShare> = shares
                    .iter()
                    .map(|(s, v)| (seat(*s), SignatureShare::from_bytes(&v[i]).unwrap()))
                    .collect();
                let sig = thresig_crypto::aggregate(key, &package, &by_seat).unwrap();
                thresig_crypto::verify(&key.output_key(), package.message(), &sig).unwrap();
                sig
            })
            .collect()
    }

    /// A full signing of `digests` by `seats`: round 1, round 2, aggregate.
    pub fn sign(&mut self, wallet: &str, seats: &[u16], digests: &[[u8; 32]]) -> Vec<Signature> {
        let mut commitments = BTreeMap::new();
        for s in seats {
            let c = self.round1(*s, COORD_A, wallet, digests.len()).unwrap();
            commitments.insert(*s, c);
        }
        let req = self.request(wallet, &commitments, digests);
        let shares: BTreeMap<u16, Vec<Vec<u8>>> = seats
            .iter()
            .map(|s| (*s, self.round2(*s, &req).unwrap()))
            .collect();
        self.aggregate(wallet, &req, &shares)
    }
}

/// A full DKG among `n` members: every member's encoded share, and the
/// wallet key.
pub fn dkg(t: u16, n: u16, rng: &mut ChaCha20Rng) -> (Vec<Vec<u8>>, WalletKey) {
    let params = GroupParams::new(t, n).unwrap();
    let mut round1 = Vec::new();
    let mut states = Vec::new();
    for s in params.seats() {
        let (state, package) = DkgRound1::start(params, s, ScriptTree::KeyPathOnly, rng).unwrap();
        round1.push((s, package));
        states.push(state);
    }
    let mut inbox: BTreeMap<Seat, Vec<(Seat, Round2Package)>> = BTreeMap::new();
    let mut states2 = Vec::new();
    for state in states {
        let me = state.seat();
        let peers = round1.iter().filter(|(s, _)| *s != me).cloned().collect();
        let (state, outgoing) = state.receive(peers).unwrap();
        for (to, package) in outgoing {
            inbox.entry(to).or_default().push((me, package));
        }
        states2.push(state);
    }
    let mut shares = Vec::new();
    let mut wallet = None;
    for state in states2 {
        let me = state.seat();
        let (share, key) = state
            .finish(inbox.remove(&me).unwrap_or_default())
            .unwrap()
            .into_parts();
        shares.push(share.to_bytes().unwrap().to_vec());
        wallet = Some(key);
    }
    (shares, wallet.unwrap())
}
