//! DKG driven as a coordinator would: a proposal, the three parts at every
//! seat, and the confirmations.

use std::collections::BTreeMap;

use super::cluster::{Cluster, seat, wid};
use super::{coordinator, identity_secret};
use crate::{
    DkgFault, DkgPayload, DkgProposal, DkgSessionId, Error, SignedDkgMessage, WalletStateKind,
};
use thresig_crypto::Seat;

/// Every seat number of the cluster, in order (the harness's members are
/// addressed by number; maps of DKG messages are keyed by [`Seat`]).
pub fn seats(c: &Cluster) -> std::ops::RangeInclusive<u16> {
    1..=u16::try_from(c.members.len()).unwrap()
}

/// The proposal of session `[session; 32]` that every member's
/// configuration agrees with.
pub fn proposal(c: &Cluster, wallet: &str, session: u8) -> DkgProposal {
    let roster = c.members[0].config.wallets[0].roster.clone();
    DkgProposal::new(
        DkgSessionId([session; 32]),
        wid(wallet),
        c.threshold,
        roster,
    )
}

/// Part 1 at every seat.
pub fn part1(c: &mut Cluster, p: &DkgProposal) -> Vec<SignedDkgMessage> {
    (seats(c))
        .map(|s| {
            let signer = c.members[usize::from(s) - 1].signer();
            signer
                .dkg_start(c.now, coordinator(1), p, &mut c.rng)
                .unwrap()
        })
        .collect()
}

/// Part 2 at every seat, each given the round-1 messages `view(seat)`
/// (what the coordinator relays to it); each seat's outcome.
pub fn part2_each(
    c: &mut Cluster,
    p: &DkgProposal,
    view: impl Fn(Seat) -> Vec<SignedDkgMessage>,
) -> BTreeMap<Seat, Result<Vec<SignedDkgMessage>, Error>> {
    let mut out = BTreeMap::new();
    for s in seats(c) {
        let s = seat(s);
        let signer = c.members[usize::from(s.get()) - 1].signer();
        out.insert(
            s,
            signer.dkg_round2(
                c.now,
                coordinator(1),
                &p.wallet,
                p.session,
                &view(s),
                &mut c.rng,
            ),
        );
    }
    out
}

/// Each recipient's inbox of the round-2 `messages`, in sender order.
pub fn route(
    messages: impl IntoIterator<Item = SignedDkgMessage>,
) -> BTreeMap<Seat, Vec<SignedDkgMessage>> {
    let mut inbox: BTreeMap<Seat, Vec<SignedDkgMessage>> = BTreeMap::new();
    for m in messages {
        let DkgPayload::Round2 { to, .. } = &m.payload else {
            panic!("not a round-2 message")
        };
        inbox.entry(*to).or_default().push(m);
    }
    inbox
}

/// Part 2 at every seat, each given every other seat's `round1` message;
/// returns each seat's inbox of round-2 messages.
pub fn part2(
    c: &mut Cluster,
    p: &DkgProposal,
    round1: &[SignedDkgMessage],
) -> BTreeMap<Seat, Vec<SignedDkgMessage>> {
    let out = part2_each(c, p, |s| {
        round1.iter().filter(|m| m.sender != s).cloned().collect()
    });
    route(out.into_values().flat_map(Result::unwrap))
}

/// Part 3 at every seat; returns the confirmations.
pub fn part3(
    c: &Cluster,
    p: &DkgProposal,
    inbox: &BTreeMap<Seat, Vec<SignedDkgMessage>>,
) -> Vec<Result<SignedDkgMessage, Error>> {
    (seats(c)).map(|s| finish_at(c, p, inbox, s)).collect()
}

/// Part 3 at seat `s`, given its inbox in `inbox`; its confirmation.
///
/// # Errors
/// The member's refusal.
pub fn finish_at(
    c: &Cluster,
    p: &DkgProposal,
    inbox: &BTreeMap<Seat, Vec<SignedDkgMessage>>,
    s: u16,
) -> Result<SignedDkgMessage, Error> {
    c.member(s).signer().dkg_finish(
        c.now,
        coordinator(1),
        &p.wallet,
        p.session,
        &inbox[&seat(s)],
    )
}

/// Delivers `confirmations` to `seat`; whether the wallet is then active.
pub fn deliver(c: &Cluster, seat: u16, wallet: &str, confirmations: &[SignedDkgMessage]) -> bool {
    let mut active = false;
    for m in confirmations {
        active = c
            .member(seat)
            .signer()
            .dkg_confirm(&wid(wallet), m)
            .unwrap()
            .active;
    }
    active
}

/// The state of `wallet` at `seat`.
pub fn state(c: &Cluster, seat: u16, wallet: &str) -> WalletStateKind {
    c.member(seat).signer().status(&wid(wallet)).unwrap().state
}

/// A full DKG up to (not including) the confirmations.
pub fn through_part3(c: &mut Cluster, wallet: &str, session: u8) -> Vec<SignedDkgMessage> {
    let p = proposal(c, wallet, session);
    let r1 = part1(c, &p);
    let inbox = part2(c, &p, &r1);
    confirmations(c, &p, &inbox)
}

/// Part 3 at every member, each expected to succeed: their confirmations.
pub fn confirmations(
    c: &Cluster,
    p: &DkgProposal,
    inbox: &BTreeMap<Seat, Vec<SignedDkgMessage>>,
) -> Vec<SignedDkgMessage> {
    part3(c, p, inbox).into_iter().map(Result::unwrap).collect()
}

/// The (accuser, accused, fault) of a DKG failure, as seat numbers
/// (`None`: no member accused).
pub fn fault_of(err: Error) -> (u16, Option<u16>, DkgFault) {
    match err {
        Error::DkgFailed {
            accuser,
            accused,
            fault,
            ..
        } => (accuser.get(), accused.map(thresig_crypto::Seat::get), fault),
        other => panic!("expected a DKG failure, got {other:?}"),
    }
}

/// Seat 2's round-2 message to seat 1, re-signed after `edit`.
pub fn tampered(
    inbox: &mut BTreeMap<Seat, Vec<SignedDkgMessage>>,
    edit: impl FnOnce(&mut DkgPayload, &[SignedDkgMessage]),
) {
    let to_three = inbox[&seat(3)].clone();
    let msg = inbox
        .get_mut(&Seat::FIRST)
        .unwrap()
        .iter_mut()
        .find(|m| m.sender.get() == 2)
        .unwrap();
    let mut payload = msg.payload.clone();
    edit(&mut payload, &to_three);
    *msg = SignedDkgMessage::sign(
        &identity_secret(2),
        msg.session,
        msg.wallet.clone(),
        seat(2),
        payload,
    );
}

/// The wallet becomes active everywhere once every confirmation arrives.
pub fn activate_everywhere(c: &Cluster, wallet: &str, confirmations: &[SignedDkgMessage]) {
    for s in seats(c) {
        assert!(deliver(c, s, wallet, confirmations), "seat {s} inactive");
    }
}

/// A refresh proposal of `wallet`, session `[session; 32]`, from wallet
/// epoch `from`, removing no one.
pub fn refresh_of(c: &Cluster, wallet: &str, session: u8, from: u64) -> DkgProposal {
    proposal(c, wallet, session).with_kind(crate::DkgKind::Refresh {
        from_epoch: crate::WalletEpoch(from),
        removed: Vec::new(),
    })
}

/// A refresh of `wallet` (session `[session; 32]`, from epoch `from`)
/// run through part 2 at every member: the proposal and each member's
/// part-3 inbox.
pub fn refresh_to_part3(
    c: &mut Cluster,
    wallet: &str,
    session: u8,
    from: u64,
) -> (DkgProposal, BTreeMap<Seat, Vec<SignedDkgMessage>>) {
    let p = refresh_of(c, wallet, session, from);
    let r1 = part1(c, &p);
    let inbox = part2(c, &p, &r1);
    (p, inbox)
}

/// Seat `s`'s (state, epoch) of `wallet`.
pub fn at(c: &Cluster, s: u16, wallet: &str) -> (WalletStateKind, Option<crate::WalletEpoch>) {
    let status = c.member(s).signer().status(&wid(wallet)).unwrap();
    (status.state, status.epoch)
}

/// Whether seat `s` stores a key package of wallet `w` at wallet epoch
/// `epoch` (key epochs count from 1).
pub fn has_share(c: &Cluster, s: u16, w: &str, epoch: u64) -> bool {
    use thresig_store::Store as _;
    c.member(s)
        .store()
        .key_package(&wid(w), thresig_store::KeyEpoch(epoch + 1))
        .unwrap()
        .is_some()
}

/// 2-of-3, wallet "old" (successor "new"), both keyed by DKG.
pub fn with_successor(seed: u64) -> Cluster {
    use super::cluster::{Keys, Spec};
    let specs = [
        Spec::new("old", Keys::Dkg(thresig_crypto::ScriptTree::KeyPathOnly)).successor("new"),
        Spec::new("new", Keys::Dkg(thresig_crypto::ScriptTree::KeyPathOnly)),
    ];
    Cluster::with_wallets(seed, 2, 3, &specs, crate::Limits::default())
}

/// Seat `s`'s signed veto of refresh `session` of `wallet` at wallet
/// epoch `from`, made with its identity key without asking it (what a
/// malicious member sends).
pub fn veto_of(s: u16, wallet: &str, session: DkgSessionId, from: u64) -> SignedDkgMessage {
    SignedDkgMessage::sign(
        &identity_secret(s),
        session,
        wid(wallet),
        seat(s),
        DkgPayload::RefreshAbandon {
            from_epoch: crate::WalletEpoch(from),
        },
    )
}

/// Signs `digest` for `wallet` with `signers`, aggregating with the key
/// record member 1 now reports (a refresh changed the verifying shares).
pub fn signs_with_current_key(c: &mut Cluster, wallet: &str, signers: &[u16], digest: [u8; 32]) {
    let key = c.member(1).signer().wallet_key(&wid(wallet)).unwrap();
    c.keys.insert(wid(wallet), key);
    c.sign(wallet, signers, &[digest]);
}

/// Part 1 at every seat, with the randomness each seat started from:
/// what a member (or one colluding with the relay) knows of its own
/// session, recomputed by [`own_secrets`].
pub fn part1_recorded(
    c: &mut Cluster,
    p: &DkgProposal,
) -> (
    Vec<SignedDkgMessage>,
    BTreeMap<Seat, rand_chacha::ChaCha20Rng>,
) {
    let mut started = BTreeMap::new();
    let mut messages = Vec::new();
    for s in seats(c) {
        started.insert(seat(s), c.rng.clone());
        let signer = c.members[usize::from(s) - 1].signer();
        messages.push(
            signer
                .dkg_start(c.now, coordinator(1), p, &mut c.rng)
                .unwrap(),
        );
    }
    (messages, started)
}

/// Seat `s`'s round-1 state and HPKE private key of `p`'s session, which
/// it started from randomness `rng` (as [`part1_recorded`] recorded it):
/// the engine draws them in this order, a refresh's from the share of the
/// epoch it refreshes.
pub fn own_secrets(
    c: &Cluster,
    p: &DkgProposal,
    s: u16,
    mut rng: rand_chacha::ChaCha20Rng,
) -> (thresig_crypto::DkgRound1, crate::RevealedHpkeKey) {
    let config = &c.member(s).config.wallets[0];
    let (state, _) = match &p.kind {
        crate::DkgKind::Fresh => thresig_crypto::DkgRound1::start(
            config.params().unwrap(),
            seat(s),
            config.script_tree,
            &mut rng,
        ),
        crate::DkgKind::Refresh {
            from_epoch,
            removed,
        } => {
            use thresig_store::Store as _;
            let stored = c
                .member(s)
                .store()
                .key_package(&p.wallet, thresig_store::KeyEpoch(from_epoch.0 + 1))
                .unwrap()
                .unwrap();
            let share = thresig_crypto::KeyShare::from_bytes(&stored).unwrap();
            let key = c.member(s).signer().wallet_key(&p.wallet).unwrap();
            thresig_crypto::DkgRound1::refresh(&share, &key, removed, &mut rng)
        }
    }
    .unwrap();
    let (hpke, _) = crate::dkg_msg::hpke_keypair(&mut rng);
    (state, hpke.reveal())
}

/// `plaintext` sealed as seat `from`'s round-2 package of `p`'s session
/// to seat `to`, whose round-1 HPKE key is `to_key`.
pub fn seal_as(
    c: &mut Cluster,
    p: &DkgProposal,
    (from, to, to_key): (u16, u16, &[u8]),
    plaintext: &[u8],
) -> Vec<u8> {
    crate::dkg_msg::seal(
        to_key,
        &p.session,
        &p.wallet,
        seat(from),
        seat(to),
        plaintext,
        &mut c.rng,
    )
    .unwrap()
}

/// `msg` with its payload changed by `edit`, re-signed by its sender (a
/// malicious member, or a coordinator holding its key).
pub fn resigned(msg: &SignedDkgMessage, edit: impl FnOnce(&mut DkgPayload)) -> SignedDkgMessage {
    let mut payload = msg.payload.clone();
    edit(&mut payload);
    SignedDkgMessage::sign(
        &identity_secret(msg.sender.get()),
        msg.session,
        msg.wallet.clone(),
        msg.sender,
        payload,
    )
}
