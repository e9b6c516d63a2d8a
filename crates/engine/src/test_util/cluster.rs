//! Deterministic test harness: a cluster of signers over the real encrypted
//! store on simulated disks,
//! a virtual clock, a seeded RNG and a fault-injecting store decorator.

pub use super::ask::Via;
pub use super::{activation_ops, coordinator, identity, identity_secret, raw_policy};

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use thresig_crypto::{
    Commitment, GroupParams, ScriptTree, Seat, Signature, SignatureShare, SigningPackage,
    WalletKey, dkg_in_process, import_key,
};
use thresig_store::provider::{KekId, KeyProvider, MemoryProvider, ProviderError};
use thresig_store::{
    AuditSeq, CommitmentHash, DkgSessionId, EncryptedStore, Error as StoreError, KeyEpoch, Marker,
    MemoryWitness, MetaName, PendingWrite, Plaintext, PolicyKey, RecordEpoch, SimDisk, Store,
    StoreLocation, StoreOptions, WriteOp, WriteOutcome,
};
use thresig_tx::{Network, PolicyConfig};
use zeroize::Zeroizing;

use crate::{
    Digest, Error, HexBytes, IdentityKey, Limits, Round1Request, Round2Request, Signer,
    SignerConfig, SigningTarget, Timestamp, WalletConfig, WalletEpoch, WalletId, commitment_hash,
    decode_shares,
};

/// Prints the seed if the test panics while this guard lives.
pub struct SeedGuard(pub u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed with seed {}", self.0);
        }
    }
}

/// A key provider that can be switched off, as a KMS outage would.
pub struct FlakyProvider {
    inner: MemoryProvider,
    down: AtomicBool,
}

impl FlakyProvider {
    /// Switches the provider off (`true`) or back on.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), ProviderError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ProviderError::Unavailable {
                reason: "switched off by the test".into(),
            });
        }
        Ok(())
    }
}

impl KeyProvider for FlakyProvider {
    fn current_kek_id(&self) -> Result<KekId, ProviderError> {
        self.check()?;
        self.inner.current_kek_id()
    }

    fn wrap(&self, kek: &KekId, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError> {
        self.check()?;
        self.inner.wrap(kek, plaintext)
    }

    fn unwrap(&self, kek: &KekId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.check()?;
        self.inner.unwrap(kek, wrapped)
    }
}

/// One signer's machine: its disk, witness and key provider survive
/// restarts.
pub struct Machine {
    /// The simulated disk the store's database lives on.
    pub disk: SimDisk,
    /// The rollback witness.
    pub witness: MemoryWitness,
    /// The key provider holding the KEKs.
    pub provider: Arc<FlakyProvider>,
}

impl Machine {
    /// A machine with an empty disk and a provider whose first KEK is
    /// seeded by `seed`.
    pub fn new(seed: u8) -> Self {
        Self {
            disk: SimDisk::new(),
            witness: MemoryWitness::new(),
            provider: Arc::new(FlakyProvider {
                inner: MemoryProvider::with_key("kek-1", seed.max(1)),
                down: AtomicBool::new(false),
            }),
        }
    }

    /// Opens the real encrypted store on this machine's disk, creating it
    /// on the first start (as provisioning would).
    pub fn open(&self) -> TestStore {
        let location = || StoreLocation::Database {
            db: redb::Database::builder()
                .create_with_backend(self.disk.backend())
                .unwrap(),
            witness: self.witness.clone(),
        };
        let provider: Arc<dyn KeyProvider> = self.provider.clone();
        let store =
            match EncryptedStore::open(location(), provider.clone(), StoreOptions::default()) {
                Err(thresig_store::Error::NoStore { .. }) => {
                    EncryptedStore::create(location(), provider, StoreOptions::default())
                }
                opened => opened,
            };
        FaultStore::new(store.unwrap())
    }

    /// Makes a new KEK (`id`, its key seeded by `seed`) the provider's
    /// current one, as an operator's new KMS key version would; the old one
    /// stays available until rewrapped.
    pub fn new_kek(&self, id: &str, seed: u8) {
        self.provider.inner.add_key(id, seed);
        self.provider.inner.set_current(id);
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

/// Parks the marker commit of one wallet (or, without one, the next
/// policy rollout step) until released.
struct Park {
    wallet: Option<WalletId>,
    parked: Sender<()>,
    release: Receiver<()>,
}

/// Holds back the commits of one wallet's marker units (see
/// [`FaultStore::hold_commits`]).
struct Hold {
    wallet: WalletId,
    held: OnHeld,
}

/// What [`FaultStore::hold_commits`] does with each unit it holds.
pub type OnHeld = Box<dyn Fn(HeldCommit) + Send + Sync>;

/// A held marker unit waiting to be handed to the inner store, with its
/// fault and where its outcome goes.
type Deferred = (
    Vec<WriteOp>,
    Option<Fault>,
    Sender<Result<WriteOutcome, StoreError>>,
);

/// A unit whose commit [`FaultStore::hold_commits`] holds back: submitted,
/// not yet handed to the inner store, and its caller waits until this is
/// released (or dropped).
pub struct HeldCommit {
    /// The unit's marker's first commitment; `None` for a unit without
    /// one, held only to keep its place behind the held units before it.
    pub commitment: Option<CommitmentHash>,
    release: Sender<()>,
}

impl HeldCommit {
    /// Commits the unit, and every held unit submitted before it (in
    /// their order), and lets its caller have its outcome.
    pub fn release(self) {
        // The caller may have given up waiting (its pending write dropped).
        let _ = self.release.send(());
    }
}

/// Makes the error an injected fault returns.
type MakeError = fn() -> StoreError;

fn injected() -> StoreError {
    redb::Error::Io(std::io::Error::other("injected fault")).into()
}

/// A decorator injecting faults into any [`Store`]: lost and ambiguous
/// marker commits, failing marker reads, a parked commit, and marker
/// commits held until the test releases them. The inner
/// store may be shared by several decorators ([`FaultStore::share`]), as two
/// signer processes over one database would.
pub struct FaultStore<S> {
    /// The decorated store.
    pub inner: Arc<S>,
    commit_faults: Mutex<VecDeque<Fault>>,
    /// Faults of the next commits that rewrite a wallet's record (an
    /// operator's rekey or retire, a DKG's activation).
    record_faults: Mutex<VecDeque<Fault>>,
    fail_reads: AtomicBool,
    /// Faults of the next commits that append audit entries and nothing
    /// else.
    audit_faults: Mutex<VecDeque<Fault>>,
    /// Faults for the next marker purges (`fail_next_purge`).
    purge_faults: Mutex<VecDeque<Fault>>,
    /// While set, another entry lands right before each commit that
    /// appends audit entries and nothing else (as a concurrent release's).
    interleave_audit: AtomicBool,
    /// Commits that append audit entries and nothing else, submitted
    /// through this decorator.
    audit_writes: AtomicUsize,
    /// Key package reads of this wallet fail (retryably).
    fail_key_reads: Mutex<Option<(WalletId, MakeError)>>,
    /// Key package reads so far.
    key_reads: AtomicUsize,
    park: Mutex<Option<Park>>,
    /// Holds back the commits of a wallet's marker units while set.
    hold: Mutex<Option<Hold>>,
    /// The held units not yet handed to the inner store, in submission
    /// order.
    deferred: Mutex<VecDeque<Deferred>>,
    /// Policy-record writes (compare-and-sets) submitted through this
    /// decorator.
    policy_writes: AtomicUsize,
    /// Policy-record reads served through this decorator.
    policy_reads: AtomicUsize,
    /// Bytes of policy records read, and of policy records written
    /// (the new values of the compare-and-sets), through this decorator.
    policy_bytes: AtomicUsize,
    /// A policy record read as absent while set (a record lost).
    hidden_policy: Mutex<Option<PolicyKey>>,
    /// What a data key retirement does instead of retiring.
    retire: Mutex<Retire>,
    /// Data key retirements asked for so far.
    retires: AtomicUsize,
}

/// What [`FaultStore`] does on a data key retirement.
#[derive(Default)]
pub enum Retire {
    /// Retires, as the decorated store does.
    #[default]
    Pass,
    /// Fails with the error made.
    Fail(MakeError),
    /// Sends on the first sender, waits for the receiver, then fails
    /// retryably (a key provider that hangs).
    Hang(Sender<()>, Receiver<()>),
}

impl<S> FaultStore<S> {
    /// A decorator without faults over `inner`.
    pub fn new(inner: S) -> Self {
        Self::over(Arc::new(inner))
    }

    fn over(inner: Arc<S>) -> Self {
        Self {
            inner,
            commit_faults: Mutex::new(VecDeque::new()),
            record_faults: Mutex::new(VecDeque::new()),
            audit_faults: Mutex::new(VecDeque::new()),
            purge_faults: Mutex::new(VecDeque::new()),
            interleave_audit: AtomicBool::new(false),
            audit_writes: AtomicUsize::new(0),
            fail_reads: AtomicBool::new(false),
            fail_key_reads: Mutex::new(None),
            key_reads: AtomicUsize::new(0),
            park: Mutex::new(None),
            hold: Mutex::new(None),
            deferred: Mutex::new(VecDeque::new()),
            policy_writes: AtomicUsize::new(0),
            retire: Mutex::new(Retire::Pass),
            retires: AtomicUsize::new(0),
            policy_reads: AtomicUsize::new(0),
            policy_bytes: AtomicUsize::new(0),
            hidden_policy: Mutex::new(None),
        }
    }

    /// How many data key retirements were asked for so far.
    pub fn retires(&self) -> usize {
        self.retires.load(Ordering::SeqCst)
    }

    /// Data key retirements do `retire` from now on.
    pub fn on_retire(&self, retire: Retire) {
        *self.retire.lock().unwrap() = retire;
    }

    /// A second decorator (without faults) over the same inner store.
    pub fn share(&self) -> Self {
        Self::over(Arc::clone(&self.inner))
    }

    /// The next marker commit, or commit of a key package (a DKG's part 3,
    /// a repair's finish, a refresh switch or abort), or policy rollout
    /// step, fails as `fault`.
    pub fn fail_next_commit(&self, fault: Fault) {
        self.commit_faults.lock().unwrap().push_back(fault);
    }

    /// The next commit rewriting a wallet's record fails as `fault`.
    pub fn fail_next_record_write(&self, fault: Fault) {
        self.record_faults.lock().unwrap().push_back(fault);
    }

    /// The next commit that appends audit entries and nothing else fails
    /// as `fault`.
    pub fn fail_next_audit_write(&self, fault: Fault) {
        self.audit_faults.lock().unwrap().push_back(fault);
    }

    /// The next marker purge (the upkeep's) fails as `fault`.
    pub fn fail_next_purge(&self, fault: Fault) {
        self.purge_faults.lock().unwrap().push_back(fault);
    }

    /// While `on`, another entry lands right before each commit that
    /// appends audit entries and nothing else.
    pub fn interleave_audit_writes(&self, on: bool) {
        self.interleave_audit.store(on, Ordering::SeqCst);
    }

    /// How many commits appending audit entries and nothing else were
    /// submitted so far.
    pub fn audit_writes(&self) -> usize {
        self.audit_writes.load(Ordering::SeqCst)
    }

    /// How many policy-record writes were submitted so far.
    pub fn policy_writes(&self) -> usize {
        self.policy_writes.load(Ordering::SeqCst)
    }

    /// How many policy-record reads were served so far.
    pub fn policy_reads(&self) -> usize {
        self.policy_reads.load(Ordering::SeqCst)
    }

    /// How many bytes of policy records were read, plus how many were
    /// written, so far: what the rate ledger costs in bytes moved.
    pub fn policy_bytes(&self) -> usize {
        self.policy_bytes.load(Ordering::SeqCst)
    }

    /// Policy record `key` reads as absent (of every wallet); `None` ends
    /// it.
    pub fn hide_policy(&self, key: Option<PolicyKey>) {
        *self.hidden_policy.lock().unwrap() = key;
    }

    /// Marker reads fail (retryably) while set.
    pub fn fail_reads(&self, fail: bool) {
        self.fail_reads.store(fail, Ordering::SeqCst);
    }

    /// Key package reads of `wallet` fail (retryably); `None` ends it.
    pub fn fail_key_reads(&self, wallet: Option<&WalletId>) {
        *self.fail_key_reads.lock().unwrap() = wallet.map(|w| (w.clone(), injected as fn() -> _));
    }

    /// Key package reads of `wallet` fail with a terminal store error that
    /// says nothing about its records (the writer stopped).
    pub fn fail_key_reads_terminally(&self, wallet: &WalletId) {
        *self.fail_key_reads.lock().unwrap() =
            Some((wallet.clone(), || thresig_store::Error::WriterStopped));
    }

    /// How many key package reads this decorator has served or failed.
    pub fn key_reads(&self) -> usize {
        self.key_reads.load(Ordering::SeqCst)
    }

    /// The next marker unit of `wallet` sends on `parked` and waits for
    /// `release` before it is handed to the inner store. The wait is in
    /// [`Store::submit`], so its caller waits there (round 2 with the
    /// wallet's lock held), unlike a unit [`FaultStore::hold_commits`]
    /// holds, whose caller waits for its outcome.
    pub fn park_commit(&self, wallet: &WalletId, parked: Sender<()>, release: Receiver<()>) {
        *self.park.lock().unwrap() = Some(Park {
            wallet: Some(wallet.clone()),
            parked,
            release,
        });
    }

    /// [`FaultStore::park_commit`] over channels of its own: the receiver
    /// hears once the commit is parked, and the commit proceeds when the
    /// sender sends.
    pub fn park_next_commit(&self, wallet: &WalletId) -> (Receiver<()>, Sender<()>) {
        let (parked_tx, parked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        self.park_commit(wallet, parked_tx, release_rx);
        (parked_rx, release_tx)
    }

    /// From now on, every marker unit of `wallet` is held back before the
    /// inner store sees it, as behind a slow writer: `held` is called with
    /// a [`HeldCommit`] for it, and its caller waits until it is released.
    /// Any other unit submitted while a held one waits is held behind it
    /// too (and `held` called for it), so that every unit applies in
    /// submission order, as the real writer applies them. Releasing one
    /// commits the held units submitted before it first, in their order,
    /// whatever the order of the releases.
    ///
    /// Unlike the real store, a held unit is handed to the inner store
    /// only by the wait of its own [`PendingWrite`] or of one submitted
    /// after it: one whose pending write is dropped unwaited commits when
    /// a later held unit's is waited for, never by its release alone, and
    /// one never released never commits. No caller relies on that: round 2
    /// waits for every unit it submits, and the tests release every unit
    /// they are told of. `None` ends it (units held until then stay
    /// held).
    pub fn hold_commits(&self, hold: Option<(&WalletId, OnHeld)>) {
        *self.hold.lock().unwrap() = hold.map(|(wallet, held)| Hold {
            wallet: wallet.clone(),
            held,
        });
    }

    /// The next policy rollout step's commit sends on `parked` and waits
    /// for `release` before committing.
    pub fn park_rollout_step(&self, parked: Sender<()>, release: Receiver<()>) {
        *self.park.lock().unwrap() = Some(Park {
            wallet: None,
            parked,
            release,
        });
    }
}

impl<S: Store> FaultStore<S> {
    /// Hands `ops` to the inner store as `fault` says.
    fn faulted(
        &self,
        fault: Option<Fault>,
        ops: Vec<WriteOp>,
    ) -> Result<PendingWrite<'_>, StoreError> {
        match fault {
            None => self.inner.submit(ops),
            Some(Fault::Lost) => Ok(PendingWrite::new(|| Err(injected()))),
            Some(Fault::Ambiguous) => {
                let written = self.inner.submit(ops)?;
                Ok(PendingWrite::new(move || {
                    written.wait()?;
                    Err(injected())
                }))
            }
        }
    }

    /// Hands `ops` to the inner store as `fault` says, held back if the
    /// marker units of `marker`'s wallet are, or behind a held unit.
    fn submit_faulted(
        &self,
        fault: Option<Fault>,
        ops: Vec<WriteOp>,
        marker: Option<(WalletId, CommitmentHash)>,
    ) -> Result<PendingWrite<'_>, StoreError> {
        let hold = self.hold.lock().unwrap();
        let behind = !self.deferred.lock().unwrap().is_empty();
        if let Some(hold) = hold.as_ref()
            && (behind
                || marker
                    .as_ref()
                    .is_some_and(|(wallet, _)| *wallet == hold.wallet))
        {
            let commitment = marker.map(|(_, commitment)| commitment);
            let (outcome, answer) = std::sync::mpsc::channel();
            let (release, released) = std::sync::mpsc::channel();
            self.deferred
                .lock()
                .unwrap()
                .push_back((ops, fault, outcome));
            (hold.held)(HeldCommit {
                commitment,
                release,
            });
            return Ok(PendingWrite::new(move || {
                // A dropped `HeldCommit` releases too.
                let _ = released.recv();
                self.commit_held(&answer)
            }));
        }
        self.faulted(fault, ops)
    }

    /// Commits the held units, in order, up to the one whose outcome
    /// `answer` receives; returns that outcome.
    fn commit_held(
        &self,
        answer: &Receiver<Result<WriteOutcome, StoreError>>,
    ) -> Result<WriteOutcome, StoreError> {
        // Held while committing, so that two releases commit in order.
        let mut deferred = self.deferred.lock().unwrap();
        loop {
            if let Ok(outcome) = answer.try_recv() {
                return outcome;
            }
            let Some((ops, fault, outcome)) = deferred.pop_front() else {
                return Err(StoreError::WriterStopped);
            };
            let _ = outcome.send(self.faulted(fault, ops).and_then(PendingWrite::wait));
        }
    }
}

impl<S: Store> Store for FaultStore<S> {
    fn submit(&self, ops: Vec<WriteOp>) -> Result<PendingWrite<'_>, StoreError> {
        let (policy_ops, policy_bytes) = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::CasPolicy { new, .. } => Some(new.len()),
                _ => None,
            })
            .fold((0, 0), |(n, bytes), len| (n + 1, bytes + len));
        self.policy_writes.fetch_add(policy_ops, Ordering::SeqCst);
        self.policy_bytes.fetch_add(policy_bytes, Ordering::SeqCst);
        let marker = ops.iter().find_map(|op| match op {
            WriteOp::InsertMarker {
                wallet, commitment, ..
            } => Some((wallet.clone(), *commitment)),
            _ => None,
        });
        let marker_wallet = marker.as_ref().map(|(wallet, _)| wallet.clone());
        // A part-3 commit stores a result, a repair's finish a key package;
        // a refresh abort deletes a key package, and so does a refresh
        // switch, which also marks a data key retirement due. A rekey's
        // retirement deletes one in a record rewrite and is none of these.
        let deletes_package = ops
            .iter()
            .any(|op| matches!(op, WriteOp::DeleteKeyPackage { .. }));
        let rewrites = ops.iter().any(|op| matches!(op, WriteOp::PutWallet { .. }));
        let marks_due = ops.iter().any(|op| matches!(op, WriteOp::PutMeta { .. }));
        let dkg_result = (deletes_package && (!rewrites || marks_due))
            || ops.iter().any(|op| {
                matches!(
                    op,
                    WriteOp::PutDkgResult { .. } | WriteOp::InsertKeyPackage { .. }
                )
            });
        // A policy rollout step is a commit of its own (`fail_next_commit`).
        let rollout_step = ops.iter().any(|op| matches!(op, WriteOp::CasMeta { .. }));
        if marker_wallet.is_none() && !dkg_result && !rollout_step {
            let audit_only = ops
                .iter()
                .all(|op| matches!(op, WriteOp::AppendAudit { .. }));
            let fault = if rewrites {
                self.record_faults.lock().unwrap().pop_front()
            } else if audit_only {
                self.audit_writes.fetch_add(1, Ordering::SeqCst);
                if self.interleave_audit.load(Ordering::SeqCst) {
                    self.inner.write(vec![WriteOp::AppendAudit {
                        at: thresig_store::Timestamp(0),
                        entry: b"{\"kind\":\"prune\",\"before_ms\":0}".to_vec(),
                    }])?;
                }
                self.audit_faults.lock().unwrap().pop_front()
            } else if ops
                .iter()
                .any(|op| matches!(op, WriteOp::PurgeMarkers { .. }))
            {
                self.purge_faults.lock().unwrap().pop_front()
            } else {
                None
            };
            return self.submit_faulted(fault, ops, None);
        }
        let park = {
            let mut slot = self.park.lock().unwrap();
            match slot.as_ref() {
                Some(p) if p.wallet.is_none() && rollout_step => slot.take(),
                Some(p) if p.wallet.is_some() && p.wallet == marker_wallet => slot.take(),
                _ => None,
            }
        };
        if let Some(p) = park {
            p.parked.send(()).unwrap();
            p.release.recv().unwrap();
        }
        let fault = self.commit_faults.lock().unwrap().pop_front();
        self.submit_faulted(fault, ops, marker)
    }
    fn wallet(&self, wallet: &WalletId) -> Result<Option<Plaintext>, StoreError> {
        self.inner.wallet(wallet)
    }
    fn wallet_ids(&self) -> Result<Vec<WalletId>, StoreError> {
        self.inner.wallet_ids()
    }
    fn wallet_epoch(&self, wallet: &WalletId) -> Result<Option<RecordEpoch>, StoreError> {
        self.inner.wallet_epoch(wallet)
    }
    fn key_package(
        &self,
        wallet: &WalletId,
        epoch: KeyEpoch,
    ) -> Result<Option<Plaintext>, StoreError> {
        self.key_reads.fetch_add(1, Ordering::SeqCst);
        if let Some((failing, error)) = &*self.fail_key_reads.lock().unwrap()
            && failing == wallet
        {
            return Err(error());
        }
        self.inner.key_package(wallet, epoch)
    }
    fn key_packages(&self, wallet: &WalletId) -> Result<Vec<(KeyEpoch, Plaintext)>, StoreError> {
        self.inner.key_packages(wallet)
    }
    fn dkg_results(&self, wallet: &WalletId) -> Result<Vec<(DkgSessionId, Plaintext)>, StoreError> {
        self.inner.dkg_results(wallet)
    }
    fn marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
    ) -> Result<Option<Marker>, StoreError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.marker(wallet, commitment)
    }
    fn policy(&self, wallet: &WalletId, key: &PolicyKey) -> Result<Option<Plaintext>, StoreError> {
        self.policy_reads.fetch_add(1, Ordering::SeqCst);
        if self.hidden_policy.lock().unwrap().as_ref() == Some(key) {
            return Ok(None);
        }
        let record = self.inner.policy(wallet, key)?;
        let len = record.as_ref().map_or(0, |r| r.len());
        self.policy_bytes.fetch_add(len, Ordering::SeqCst);
        Ok(record)
    }
    fn meta(&self, name: &MetaName) -> Result<Option<Plaintext>, StoreError> {
        self.inner.meta(name)
    }
    fn audit(
        &self,
        from: AuditSeq,
        limit: usize,
    ) -> Result<Vec<thresig_store::AuditEntry>, StoreError> {
        self.inner.audit(from, limit)
    }
    fn audit_head(&self) -> Result<thresig_store::AuditHead, StoreError> {
        self.inner.audit_head()
    }
    fn audit_verify(&self) -> Result<thresig_store::AuditReport, StoreError> {
        self.inner.audit_verify()
    }
    fn corrupt_wallets(&self) -> Vec<WalletId> {
        self.inner.corrupt_wallets()
    }
    fn retire_deleted(
        &self,
        audit: &dyn thresig_store::KeyChangeAudit,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.retires.fetch_add(1, Ordering::SeqCst);
        let retire = self.retire.lock().unwrap();
        match &*retire {
            Retire::Pass => self.inner.retire_deleted(audit, at),
            Retire::Fail(error) => Err(error()),
            Retire::Hang(entered, release) => {
                entered.send(()).unwrap();
                release.recv().unwrap();
                Err(injected())
            }
        }
    }
}

/// The store of a harness member: the real encrypted store, decorated.
pub type TestStore = FaultStore<EncryptedStore>;

/// One member of a [`Cluster`]: its configuration, machine and signer.
pub struct Member {
    /// The configuration its signer runs with.
    pub config: SignerConfig,
    /// Its disk, witness and key provider.
    pub machine: Machine,
    /// `None` only while restarting.
    running: Option<Signer<TestStore>>,
}

impl Member {
    /// The running signer; coordinators' requests by kind go through its
    /// entry point ([`Via`]).
    pub fn signer(&self) -> Via<'_, TestStore> {
        Via(self.running.as_ref().unwrap())
    }

    /// The running signer's store.
    pub fn store(&self) -> &TestStore {
        self.running.as_ref().unwrap().store()
    }

    /// The shares of the durable marker keyed by `commitment`, if any.
    pub fn marker(&self, wallet: &str, commitment: &Commitment) -> Option<Vec<Vec<u8>>> {
        let key = commitment_hash(commitment);
        let marker = self.store().inner.marker(&wid(wallet), &key).unwrap()?;
        Some(decode_shares(&marker).unwrap())
    }
}

/// Where a test wallet's key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// A DKG run in the harness (the crypto crate's in-process runner).
    Dkg(ScriptTree),
    /// A trusted-dealer split of a single key (seeded by the byte).
    Imported(u8, ScriptTree),
    /// No key yet (`dkg_pending`).
    None,
}

/// One wallet of a test cluster: its key source and configuration.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The wallet id.
    pub name: String,
    /// Where its key comes from.
    pub keys: Keys,
    /// Its policy.
    pub policy: PolicyConfig,
    /// Its configured successor, if any.
    pub successor: Option<String>,
}

impl Spec {
    /// A wallet keyed by `keys` with the raw-digest policy and no successor.
    pub fn new(name: &str, keys: Keys) -> Self {
        Self {
            name: name.to_owned(),
            keys,
            policy: raw_policy(),
            successor: None,
        }
    }

    /// The wallet with `policy`.
    pub fn policy(mut self, policy: PolicyConfig) -> Self {
        self.policy = policy;
        self
    }

    /// The wallet with `successor` as its configured successor.
    pub fn successor(mut self, successor: &str) -> Self {
        self.successor = Some(successor.to_owned());
        self
    }
}

/// `n` signers sharing `wallets` (each made by a DKG), on a virtual clock.
pub struct Cluster {
    /// The seed of every RNG of the cluster (printed if a test fails).
    pub seed: u64,
    /// The RNG of round 1, the DKG parts and the harness's own keys.
    pub rng: ChaCha20Rng,
    /// The virtual clock.
    pub now: Timestamp,
    /// Every wallet's threshold.
    pub threshold: u16,
    /// The group key of every keyed wallet, as the harness made it.
    pub keys: BTreeMap<WalletId, WalletKey>,
    /// The members, seat `s` at index `s - 1`.
    pub members: Vec<Member>,
    /// The RNG of the fresh commitments round 2 returns (separate, so that
    /// `round2` can take `&self`).
    pub fresh_rng: RefCell<ChaCha20Rng>,
    _guard: SeedGuard,
}

/// Two coordinators (the members at seats 3 and 2).
pub const COORD_A: u16 = 3;
/// The second coordinator (see [`COORD_A`]).
pub const COORD_B: u16 = 2;

/// The wallet id `name`.
pub fn wid(name: &str) -> WalletId {
    WalletId::new(name).unwrap()
}

/// Seat `n`.
pub fn seat(n: u16) -> Seat {
    Seat::try_from(n).unwrap()
}

/// Limits small enough for tests to reach: 4 nonces per wallet and
/// coordinator, 8 per wallet, 12 in all, a 60 s nonce lifetime.
pub fn small_limits() -> Limits {
    Limits::new(4, 8, 12, Duration::from_secs(60))
}

impl Cluster {
    /// Every audit entry of seat `s`'s log, decoded (its first 1,000).
    pub fn audit_events(&self, s: u16) -> Vec<crate::audit::AuditEvent> {
        self.member(s)
            .store()
            .inner
            .audit(thresig_store::AuditSeq(1), 1_000)
            .unwrap()
            .iter()
            .map(|e| serde_json::from_slice(&e.body).unwrap())
            .collect()
    }
}

impl Cluster {
    /// Wallets keyed by a DKG run in the harness.
    pub fn new(seed: u64, t: u16, n: u16, wallets: &[&str], limits: Limits) -> Self {
        let specs: Vec<Spec> = wallets
            .iter()
            .map(|w| Spec::new(w, Keys::Dkg(ScriptTree::KeyPathOnly)))
            .collect();
        Self::with_wallets(seed, t, n, &specs, limits)
    }

    /// Wallets configured but without keys (`dkg_pending`).
    pub fn unkeyed(seed: u64, t: u16, n: u16, wallets: &[&str]) -> Self {
        let specs: Vec<Spec> = wallets.iter().map(|w| Spec::new(w, Keys::None)).collect();
        Self::with_wallets(seed, t, n, &specs, small_limits())
    }

    /// Wallets as `specs` describe them.
    pub fn with_wallets(seed: u64, t: u16, n: u16, specs: &[Spec], limits: Limits) -> Self {
        let guard = SeedGuard(seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identities: Vec<IdentityKey> = (1..=n).map(identity).collect();
        let machines: Vec<Machine> = (1..=n).map(|s| Machine::new(s as u8)).collect();
        let stores: Vec<TestStore> = machines.iter().map(Machine::open).collect();
        let mut keys = BTreeMap::new();
        let mut configs = Vec::new();
        for spec in specs {
            let id = wid(&spec.name);
            let params = GroupParams::new(t, n).unwrap();
            let keyed = match spec.keys {
                Keys::Dkg(tree) => {
                    let (shares, key) = dkg_in_process(params, tree, &mut rng).unwrap();
                    Some((shares.into_values().collect::<Vec<_>>(), key))
                }
                Keys::Imported(byte, tree) => {
                    let (key, shares) = import_key(&[byte; 32], params, tree, &mut rng).unwrap();
                    Some((shares, key))
                }
                Keys::None => None,
            };
            if let Some((shares, key)) = keyed {
                for (store, share) in stores.iter().zip(&shares) {
                    let ops = activation_ops(&id, &key, share).unwrap();
                    let outcome = store.write(ops).unwrap();
                    assert!(matches!(outcome, WriteOutcome::Committed(_)), "{outcome:?}");
                }
                keys.insert(id.clone(), key);
            }
            let tree = match spec.keys {
                Keys::Dkg(tree) | Keys::Imported(_, tree) => tree,
                Keys::None => ScriptTree::KeyPathOnly,
            };
            let mut config = WalletConfig::new(id, t, identities.clone())
                .with_policy(spec.policy.clone())
                .with_script_tree(tree);
            if let Some(successor) = &spec.successor {
                config = config.with_successor(wid(successor));
            }
            configs.push(config);
        }
        let members = identities
            .iter()
            .zip(stores)
            .zip(machines)
            .enumerate()
            .map(|(i, ((identity, store), machine))| {
                let config =
                    SignerConfig::new(*identity, Network::Regtest, configs.clone(), limits.clone());
                let seat = u16::try_from(i + 1).unwrap();
                let signer = Signer::open(config.clone(), identity_secret(seat), store).unwrap();
                Member {
                    config,
                    machine,
                    running: Some(signer),
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
            fresh_rng: RefCell::new(ChaCha20Rng::seed_from_u64(seed ^ 0x5eed)),
            _guard: guard,
        }
    }

    /// The member at seat `s`.
    pub fn member(&self, s: u16) -> &Member {
        &self.members[usize::from(s) - 1]
    }

    /// The members' signers, seat 1 first, for a transport to serve (the
    /// cluster ends here).
    pub fn into_signers(self) -> Vec<Signer<TestStore>> {
        self.members
            .into_iter()
            .map(|m| m.running.unwrap())
            .collect()
    }

    /// Restarts seat `s`: the signer and its store are dropped (closing
    /// the database), then the store is reopened from the machine's disk
    /// and a new signer opened over it.
    pub fn restart(&mut self, s: u16) {
        let m = &mut self.members[usize::from(s) - 1];
        drop(m.running.take());
        let secret = identity_secret(s);
        m.running = Some(Signer::open(m.config.clone(), secret, m.machine.open()).unwrap());
    }

    /// Restarts seat `s` with its configuration changed by `edit` (an
    /// operator editing the file between runs).
    pub fn restart_with(&mut self, s: u16, edit: impl FnOnce(&mut SignerConfig)) {
        edit(&mut self.members[usize::from(s) - 1].config);
        self.restart(s);
    }

    /// Stops seat `s`, runs `edit` in a raw write transaction on its disk
    /// (as an attacker with disk access would), and restarts it.
    pub fn edit_disk(&mut self, s: u16, edit: impl FnOnce(&redb::WriteTransaction)) {
        let m = &mut self.members[usize::from(s) - 1];
        drop(m.running.take());
        let db = redb::Database::builder()
            .create_with_backend(m.machine.disk.backend())
            .unwrap();
        let txn = db.begin_write().unwrap();
        edit(&txn);
        txn.commit().unwrap();
        drop(db);
        self.restart(s);
    }

    /// Seat `s` loses its disk: the signer stops, and a new one opens over
    /// a fresh, empty store on a new machine (same identity key), as after
    /// a disk failure with no backup.
    pub fn lose_disk(&mut self, s: u16) {
        let m = &mut self.members[usize::from(s) - 1];
        drop(m.running.take());
        m.machine = Machine::new(u8::try_from(s).unwrap().wrapping_add(100));
        let secret = identity_secret(s);
        m.running = Some(Signer::open(m.config.clone(), secret, m.machine.open()).unwrap());
    }

    /// The wallet's current epoch, as seat 1 reports it.
    pub fn epoch(&self, wallet: &str) -> WalletEpoch {
        self.epoch_at(1, wallet)
    }

    /// The wallet's current epoch, as seat `s` reports it (what a
    /// coordinator at seat `s` puts in its requests).
    pub fn epoch_at(&self, s: u16, wallet: &str) -> WalletEpoch {
        self.member(s)
            .signer()
            .status(&wid(wallet))
            .unwrap()
            .epoch
            .unwrap()
    }

    /// Rotates seat `s`'s DEK (new term, re-seal, retire), as
    /// `thresig keys rotate-dek` does.
    pub fn rotate_dek(&self, s: u16) {
        self.member(s).store().inner.rotate_dek().unwrap();
    }

    /// Gives seat `s`'s provider a new current KEK `id` and rewraps every
    /// DEK under it, as `thresig keys rotate-kek` does.
    pub fn rotate_kek(&self, s: u16, id: &str, seed: u8) {
        let member = self.member(s);
        member.machine.new_kek(id, seed);
        let kek = member.store().inner.rotate_kek().unwrap();
        assert_eq!(kek.as_str(), id);
    }

    /// Moves the virtual clock `d` forward.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
    }

    /// Round 1 at seat `s` for `inputs` nonces, requested by the
    /// coordinator of seat `from`: the commitments.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn round1(
        &mut self,
        s: u16,
        from: u16,
        wallet: &str,
        inputs: usize,
    ) -> Result<Vec<Commitment>, Error> {
        let req = Round1Request::new(wid(wallet), inputs);
        let now = self.now;
        let resp = self.members[usize::from(s) - 1].signer().round1(
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
        let target = SigningTarget::digests(digests.iter().map(|d| Digest(*d)).collect());
        self.request_for(wallet, commitments, digests, target)
    }

    /// A round-2 request signing `target`, whose packages carry `digests`
    /// (the messages the coordinator claims; a signer derives its own).
    pub fn request_for(
        &self,
        wallet: &str,
        commitments: &BTreeMap<u16, Vec<Commitment>>,
        digests: &[[u8; 32]],
        target: SigningTarget,
    ) -> Round2Request {
        self.request_at(self.epoch(wallet), wallet, commitments, digests, target)
    }

    /// A round-2 request as [`Cluster::request_for`] builds it, naming
    /// `epoch`.
    pub fn request_at(
        &self,
        epoch: WalletEpoch,
        wallet: &str,
        commitments: &BTreeMap<u16, Vec<Commitment>>,
        digests: &[[u8; 32]],
        target: SigningTarget,
    ) -> Round2Request {
        let packages = (0..digests.len())
            .map(|i| {
                let map: BTreeMap<Seat, Commitment> =
                    commitments.iter().map(|(s, v)| (seat(*s), v[i])).collect();
                HexBytes(SigningPackage::new(&map, &digests[i]).unwrap().to_bytes())
            })
            .collect();
        Round2Request::new(
            wid(wallet),
            epoch,
            commitments.keys().copied().map(seat).collect(),
            target,
            packages,
        )
    }

    /// Round 2 at seat `s`, requested by [`COORD_A`]: the shares.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn round2(&self, s: u16, req: &Round2Request) -> Result<Vec<Vec<u8>>, Error> {
        self.round2_reply(s, req)
            .map(|r| r.shares.into_iter().map(|h| h.0).collect())
    }

    /// Round 2 at seat `s`, the whole reply (shares and fresh commitments).
    pub fn round2_reply(
        &self,
        s: u16,
        req: &Round2Request,
    ) -> Result<crate::Round2Response, Error> {
        self.round2_as(s, COORD_A, req)
    }

    /// Round 2 at seat `s`, requested by the coordinator of seat `coord`.
    pub fn round2_as(
        &self,
        s: u16,
        coord: u16,
        req: &Round2Request,
    ) -> Result<crate::Round2Response, Error> {
        self.member(s).signer().round2(
            self.now,
            coordinator(coord),
            req,
            &mut *self.fresh_rng.borrow_mut(),
        )
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
        let epoch = self.epoch(wallet);
        self.sign_at_epoch(COORD_A, epoch, wallet, seats, digests)
            .unwrap()
    }

    /// A full signing of `digests` by `seats`, coordinated by the member at
    /// seat `coord` with the epoch its own signer reports (as the cluster's
    /// coordinator does).
    ///
    /// # Errors
    /// The first signer's refusal, with its seat.
    #[allow(
        clippy::result_large_err,
        reason = "a test helper: the refusal is inspected at once, never propagated"
    )]
    pub fn sign_as(
        &mut self,
        coord: u16,
        wallet: &str,
        seats: &[u16],
        digests: &[[u8; 32]],
    ) -> Result<Vec<Signature>, (u16, Error)> {
        let epoch = self.epoch_at(coord, wallet);
        self.sign_at_epoch(coord, epoch, wallet, seats, digests)
    }

    /// A full signing as [`Cluster::sign_as`] runs it, naming `epoch`.
    #[allow(
        clippy::result_large_err,
        reason = "a test helper: the refusal is inspected at once, never propagated"
    )]
    pub fn sign_at_epoch(
        &mut self,
        coord: u16,
        epoch: WalletEpoch,
        wallet: &str,
        seats: &[u16],
        digests: &[[u8; 32]],
    ) -> Result<Vec<Signature>, (u16, Error)> {
        let mut commitments = BTreeMap::new();
        for s in seats {
            let c = self
                .round1(*s, coord, wallet, digests.len())
                .map_err(|e| (*s, e))?;
            commitments.insert(*s, c);
        }
        let target = SigningTarget::digests(digests.iter().map(|d| Digest(*d)).collect());
        let req = self.request_at(epoch, wallet, &commitments, digests, target);
        let mut shares = BTreeMap::new();
        for s in seats {
            let reply = self.round2_as(*s, coord, &req).map_err(|e| (*s, e))?;
            shares.insert(*s, reply.shares.into_iter().map(|h| h.0).collect());
        }
        Ok(self.aggregate(wallet, &req, &shares))
    }
}
