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

impl KeptAnswers {
    /// Checks wallet seat `seat`'s `answer` to `request`, asked in
    /// `session`, before ROAST sees it: ROAST's reply, with the answer kept
    /// as evidence, if the answer names that seat and its identity key (in
    /// `wallet`) signed it over the request and `key_record`; `None`
    /// otherwise. Such an answer counts as missing (it times out) and
    /// blames no one: it proves nothing about the seat it names.
    pub fn take_signed(
        &mut self,
        wallet: &WalletConfig,
        key_record: &[u8],
        seat: Seat,
        session: SessionId,
        request: Round2Request,
        answer: Round2Response,
    ) -> Option<Reply<WireScheme>> {
        if answer.seat != seat || !answer.signed_for(wallet, &package_hash(&request), key_record) {
            return None;
        }
        let reply = shares_reply(session, &answer);
        self.keep(seat, session.get(), request, answer);
        Some(reply)
    }

    /// Keeps `answer` of wallet seat `seat` to `request`, asked in session
    /// number `session`, unless an answer of a later session is kept: a
    /// late answer to a session ROAST gave up on must not replace the one
    /// the current session may convict.
    fn keep(&mut self, seat: Seat, session: u32, request: Round2Request, answer: Round2Response) {
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
    use thresig_engine::{HexBytes, SigningTarget, WalletEpoch};

    use super::*;

    /// An answer of seat 2 marked by `mark` (its one share).
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

    /// A late answer to an earlier session (one ROAST already gave up on)
    /// does not replace the answer of the session that convicted the
    /// member.
    #[test]
    fn a_late_answer_to_an_earlier_session_is_not_the_proof() {
        let mut kept = KeptAnswers::default();
        let (r2, a2) = answered(2);
        let (r1, a1) = answered(1);
        kept.keep(seat(2), 2, r2.clone(), a2.clone());
        kept.keep(seat(2), 1, r1, a1);
        let proof = kept.proof(seat(2), 2, &[9]).expect("session 2's answer");
        assert_eq!((proof.request, proof.answer), (r2, a2));
    }

    /// A conviction in a session whose answer is not kept yields no proof,
    /// never another session's answer.
    #[test]
    fn a_session_whose_answer_is_not_kept_has_no_proof() {
        let mut kept = KeptAnswers::default();
        let (r1, a1) = answered(1);
        kept.keep(seat(2), 1, r1, a1);
        assert!(kept.proof(seat(2), 2, &[9]).is_none());
    }
}
