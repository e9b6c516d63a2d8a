//! The signed round-2 answers a coordinator keeps as evidence: a culprit's
//! proof must be the very answer ROAST convicted, never another answer of
//! the same member (docs/blame.md).

use std::collections::BTreeMap;

use thresig_crypto::Seat;
use thresig_engine::{BlameProof, Round2Request, Round2Response, WalletConfig, package_hash};
use thresig_roast::{Reply, SessionId};

use crate::sign::{WireScheme, shares_reply};

/// The latest signed round-2 answer of each wallet seat, with the request
/// it answers and the ROAST session (its number) it was asked in. One
/// entry per seat bounds the memory to one request per member.
#[derive(Debug, Default)]
pub struct KeptAnswers(BTreeMap<Seat, (u32, Round2Request, Round2Response)>);

/// A round-2 answer that passed [`CheckedAnswer::check`]: the only
/// answer ROAST sees or [`KeptAnswers`] keeps.
#[derive(Debug)]
pub struct CheckedAnswer {
    seat: Seat,
    request: Round2Request,
    answer: Round2Response,
}

impl CheckedAnswer {
    /// Checks wallet seat `seat`'s `answer` to `request` before ROAST sees
    /// it: the answer, checked, if it names that seat and its identity key
    /// (in `wallet`) signed it over the request and `key_record`; `None`
    /// otherwise. Such an answer counts as missing (it times out) and
    /// blames no one: it proves nothing about the seat it names. It takes
    /// no lock: the members' answers are verified side by side, and only
    /// [`KeptAnswers::take`] needs the shared answers.
    #[must_use]
    pub fn check(
        wallet: &WalletConfig,
        key_record: &[u8],
        seat: Seat,
        request: Round2Request,
        answer: Round2Response,
    ) -> Option<Self> {
        let signed =
            answer.seat == seat && answer.signed_for(wallet, &package_hash(&request), key_record);
        signed.then_some(Self {
            seat,
            request,
            answer,
        })
    }
}

impl KeptAnswers {
    /// Keeps the `checked` answer, asked in `session`, as evidence: ROAST's
    /// reply.
    pub fn take(&mut self, session: SessionId, checked: CheckedAnswer) -> Reply<WireScheme> {
        let reply = shares_reply(session, &checked.answer);
        self.keep(session.get(), checked);
        reply
    }

    /// Keeps the `checked` answer, asked in session number `session`,
    /// unless an answer of a later session is kept: a late answer to a
    /// session ROAST gave up on must not replace the one the current
    /// session may convict.
    fn keep(&mut self, session: u32, checked: CheckedAnswer) {
        let CheckedAnswer {
            seat,
            request,
            answer,
        } = checked;
        if self.0.get(&seat).is_none_or(|(kept, ..)| *kept <= session) {
            self.0.insert(seat, (session, request, answer));
        }
    }

    /// The proof against wallet seat `seat` for its answer in session
    /// number `session`, signed over the key record `key_record`; `None`
    /// if that answer is not kept.
    pub fn proof(&mut self, seat: Seat, session: u32, key_record: &[u8]) -> Option<BlameProof> {
        if self.0.get(&seat)?.0 != session {
            return None;
        }
        let (_, request, answer) = self.0.remove(&seat)?;
        Some(BlameProof::new(key_record, request, answer))
    }
}

#[cfg(test)]
mod tests {
    use thresig_engine::test_util::cluster::{seat, wid};
    use thresig_engine::{HexBytes, IdentityKey, SigningTarget, WalletEpoch};

    use super::*;

    /// An answer of seat 2 marked by `mark` (its one share), unsigned.
    fn answered(mark: u8) -> (Round2Request, Round2Response) {
        let request = Round2Request::new(
            wid("w"),
            WalletEpoch(0),
            vec![seat(1), seat(2)],
            SigningTarget::psbt(vec![mark]),
            vec![HexBytes(vec![mark])],
        );
        let answer = Round2Response::new(wid("w"), seat(2), vec![HexBytes(vec![mark])], vec![]);
        (request, answer)
    }

    /// `answer` of seat 2 to `request`, taken as checked without a check:
    /// for the tests of what is kept, not of the check.
    fn unchecked(request: Round2Request, answer: Round2Response) -> CheckedAnswer {
        CheckedAnswer {
            seat: seat(2),
            request,
            answer,
        }
    }

    /// Only an answer that names the seat it was asked of, signed by that
    /// seat's identity key over the request and the key record, passes the
    /// check and can be kept.
    #[test]
    fn only_an_answer_its_seat_signed_is_checked_and_kept() {
        let keys = [1u8, 2].map(|b| ed25519_dalek::SigningKey::from_bytes(&[b; 32]));
        let roster = keys
            .iter()
            .map(|k| IdentityKey::from(k.verifying_key()))
            .collect();
        let wallet = WalletConfig::new(wid("w"), 2, roster);
        let record = [9u8];
        let (request, unsigned) = answered(5);
        let hash = package_hash(&request);
        let signed_by = |key: &ed25519_dalek::SigningKey, record: &[u8]| {
            let mut answer = unsigned.clone();
            answer.sign(key, &hash, record);
            answer
        };
        let check =
            |seat, answer| CheckedAnswer::check(&wallet, &record, seat, request.clone(), answer);
        assert!(check(seat(2), unsigned.clone()).is_none(), "unsigned");
        assert!(
            check(seat(2), signed_by(&keys[0], &record)).is_none(),
            "another seat's key"
        );
        assert!(
            check(seat(2), signed_by(&keys[1], &[8])).is_none(),
            "another key record"
        );
        let good = signed_by(&keys[1], &record);
        assert!(
            check(seat(1), good.clone()).is_none(),
            "asked of another seat"
        );
        let checked = check(seat(2), good.clone()).expect("its seat signed it");
        let mut kept = KeptAnswers::default();
        kept.keep(1, checked);
        let proof = kept.proof(seat(2), 1, &record).expect("kept");
        assert_eq!((proof.request, proof.answer), (request, good));
    }

    /// A late answer to an earlier session (one ROAST already gave up on)
    /// does not replace the answer of the session that convicted the
    /// member.
    #[test]
    fn a_late_answer_to_an_earlier_session_is_not_the_proof() {
        let mut kept = KeptAnswers::default();
        let (r2, a2) = answered(2);
        let (r1, a1) = answered(1);
        kept.keep(2, unchecked(r2.clone(), a2.clone()));
        kept.keep(1, unchecked(r1, a1));
        let proof = kept.proof(seat(2), 2, &[9]).expect("session 2's answer");
        assert_eq!((proof.request, proof.answer), (r2, a2));
    }

    /// A conviction in a session whose answer is not kept yields no proof,
    /// never another session's answer.
    #[test]
    fn a_session_whose_answer_is_not_kept_has_no_proof() {
        let mut kept = KeptAnswers::default();
        let (r1, a1) = answered(1);
        kept.keep(1, unchecked(r1, a1));
        assert!(kept.proof(seat(2), 2, &[9]).is_none());
    }
}
