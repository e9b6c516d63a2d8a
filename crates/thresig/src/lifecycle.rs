//! The lifecycle operations a wallet waits for on a member, as `thresig
//! status` lists them: one list per wallet and member, each item with a
//! stable name (the JSON's `op`) and the operator's next step. Each
//! lifecycle command adds its own kinds here.

use serde_json::{Value, json};
use thresig_crypto::Seat;
use thresig_engine::{WalletId, WalletStateKind, WalletStatus};
use thresig_store::Timestamp;

/// A lifecycle operation a wallet waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// No confirmed key yet: the wallet's DKG is to run (or to finish).
    Dkg,
    /// An emergency rekey: the sweep to the successor, then the retire.
    Sweep { successor: Option<WalletId> },
    /// Records that fail to authenticate, or that disagree with the
    /// configuration (a changed `script_tree_root`): the status cannot
    /// tell which, so the step names both.
    Restore,
    /// This member's operator approved helping to repair a wallet seat,
    /// and no repair has used the approval up yet.
    RepairApproval { seat: Seat, expires: Timestamp },
    /// A repair of a wallet seat runs on this member.
    Repair { seat: Seat },
}

impl Pending {
    /// The stable name, the JSON's `op`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Dkg => "dkg",
            Self::Sweep { .. } => "sweep",
            Self::Restore => "restore",
            Self::RepairApproval { .. } => "repair_approval",
            Self::Repair { .. } => "repair",
        }
    }

    /// What the operator does next about `wallet`.
    pub(crate) fn step(&self, wallet: &WalletId) -> String {
        match self {
            Self::Dkg => format!("run `thresig dkg --wallet {wallet}`"),
            Self::Sweep {
                successor: Some(successor),
            } => format!(
                "sweep its outputs to {successor} (`thresig sweep --wallet {wallet}`), then `thresig wallet retire` on every member"
            ),
            Self::Sweep { successor: None } => {
                "name a successor in its configuration, then sweep and retire it".to_owned()
            }
            Self::Restore => "run `thresig keys verify` on that member: if the wallet's records fail it, restore them (keys-runbook.md); if they pass, its configuration disagrees with its key record (the signer's refusal names the recorded `script_tree_root`): restore that entry".to_owned(),
            Self::RepairApproval { seat, expires } => format!(
                "this member helps repair wallet seat {seat} until {} (Unix ms, or until it restarts): run `thresig repair --wallet {wallet}` for that seat's member, or let the approval expire",
                expires.0
            ),
            Self::Repair { seat } => format!(
                "let the running repair of wallet seat {seat} finish, or run `thresig repair --wallet {wallet}` for that seat's member again once it stopped"
            ),
        }
    }

    /// The JSON form: `{"op", "step"}`.
    pub(crate) fn to_json(&self, wallet: &WalletId) -> Value {
        json!({"op": self.name(), "step": self.step(wallet)})
    }
}

/// What `status` (one member's view of a wallet) waits for; `successor`
/// is the one the coordinating member's configuration names.
pub(crate) fn pending(status: &WalletStatus, successor: Option<&WalletId>) -> Vec<Pending> {
    let mut pending = match status.state {
        WalletStateKind::DkgPending => vec![Pending::Dkg],
        WalletStateKind::Rekeying => vec![Pending::Sweep {
            successor: successor.cloned(),
        }],
        WalletStateKind::Corrupt => vec![Pending::Restore],
        _ => Vec::new(),
    };
    pending.extend(status.repairing.map(|seat| Pending::Repair { seat }));
    pending.extend(
        status
            .repair_approvals
            .iter()
            .map(|(seat, expires)| Pending::RepairApproval {
                seat: *seat,
                expires: *expires,
            }),
    );
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: WalletStateKind) -> WalletStatus {
        WalletStatus::new(WalletId::new("w").unwrap(), state, 2, 3, Seat::FIRST)
    }

    #[test]
    fn each_state_lists_what_it_waits_for() {
        let next = WalletId::new("next").unwrap();
        assert_eq!(pending(&status(WalletStateKind::Active), Some(&next)), []);
        assert_eq!(pending(&status(WalletStateKind::Retired), None), []);
        assert_eq!(
            pending(&status(WalletStateKind::DkgPending), None),
            [Pending::Dkg]
        );
        let sweep = pending(&status(WalletStateKind::Rekeying), Some(&next));
        assert_eq!(
            sweep,
            [Pending::Sweep {
                successor: Some(next.clone())
            }]
        );
        let item = sweep[0].to_json(&WalletId::new("w").unwrap());
        assert_eq!(item["op"], "sweep");
        assert!(item["step"].as_str().unwrap().contains("to next"), "{item}");
        // A corrupt wallet may only have a changed script tree, whose
        // records authenticate: the step covers that cause too.
        let restore = pending(&status(WalletStateKind::Corrupt), None);
        let step = restore[0].step(&WalletId::new("w").unwrap());
        assert!(step.contains("script_tree_root"), "{step}");
    }

    #[test]
    fn a_live_repair_approval_and_a_running_repair_are_listed() {
        let three = Seat::try_from(3).unwrap();
        let mut lost = status(WalletStateKind::DkgPending);
        lost.repairing = Some(three);
        assert_eq!(
            pending(&lost, None),
            [Pending::Dkg, Pending::Repair { seat: three }]
        );
        let mut helper = status(WalletStateKind::Active);
        helper.repair_approvals = vec![(three, Timestamp(1_700_000_000_000))];
        let listed = pending(&helper, None);
        assert_eq!(
            listed,
            [Pending::RepairApproval {
                seat: three,
                expires: Timestamp(1_700_000_000_000)
            }]
        );
        let item = listed[0].to_json(&WalletId::new("w").unwrap());
        assert_eq!(item["op"], "repair_approval");
        let step = item["step"].as_str().unwrap();
        assert!(
            step.contains("seat 3") && step.contains("1700000000000"),
            "{step}"
        );
    }
}
