//! Table-driven signing-policy tests: each rule refuses a PSBT that breaks
//! only that rule, and a PSBT that breaks none is allowed.

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::psbt::Psbt;
use bitcoin::{Address, Amount, ScriptBuf, TapSighashType};
use common::{funding, wallet};
use thresig_tx::{
    ChargeLedger, ChargeLog, Destination, Error, Outcome, Payment, Policy, RateCharge, Rule,
    TaprootWallet, UnixTime, WalletMode, WalletPsbt, build_psbt,
};

/// Monday 2024-01-01 12:00:00 UTC.
const MONDAY_NOON: UnixTime = UnixTime(1_704_067_200 + 12 * 3600);

fn addr(seed: u8) -> Address {
    wallet(seed, None).0.address()
}

fn p2wsh() -> Address {
    Address::p2wsh(
        &ScriptBuf::from_bytes(vec![0x51]),
        bitcoin::Network::Regtest,
    )
}

fn policy_toml() -> String {
    format!(
        r#"
version = 3
sighash_types = ["default", "all"]
output_script_types = ["p2tr", "p2wpkh"]
destinations = ["{}", "{}", "{}"]
max_output_sat = 60000
max_tx_sat = 100000
max_fee_sat = 20000
max_fee_rate_sat_vb = 50
time_windows = [{{ days = ["mon", "tue", "wed", "thu", "fri"], start = "08:00", end = "18:00" }}]
max_per_minute = 2
max_per_day = 10
"#,
        addr(50),
        addr(51),
        p2wsh()
    )
}

fn the_wallet() -> TaprootWallet {
    wallet(1, None).0
}

fn pay(address: Address, sat: u64) -> Payment {
    Payment {
        destination: Destination::Address(address),
        value: Amount::from_sat(sat),
    }
}

fn change(w: &TaprootWallet, sat: u64) -> Payment {
    Payment {
        destination: Destination::Script(w.script_pubkey().clone()),
        value: Amount::from_sat(sat),
    }
}

/// `inputs` wallet outputs of `each` sat spent to `outputs`.
fn spend(inputs: usize, each: u64, outputs: Vec<Payment>) -> WalletPsbt {
    let w = the_wallet();
    build_psbt(
        &w,
        &funding(&w, inputs, Amount::from_sat(each)),
        &outputs,
        LockTime::ZERO,
    )
    .unwrap()
}

/// The base transaction: 200 000 in, 50 000 to an allowed address, 149 000 change, fee 1 000.
fn base() -> WalletPsbt {
    spend(
        1,
        200_000,
        vec![pay(addr(50), 50_000), change(&the_wallet(), 149_000)],
    )
}

fn edit(psbt: &WalletPsbt, f: impl FnOnce(&mut Psbt)) -> WalletPsbt {
    let mut raw = psbt.psbt().clone();
    f(&mut raw);
    WalletPsbt::from_psbt(raw, &the_wallet()).unwrap()
}

fn ledger(charges: &[(u8, UnixTime)]) -> ChargeLog {
    let mut log = ChargeLog::new();
    for &(id, at) in charges {
        log.apply(&RateCharge::Charge {
            txid: bitcoin::hashes::Hash::from_byte_array([id; 32]),
            at,
        });
    }
    log
}

struct Case {
    name: &'static str,
    psbt: WalletPsbt,
    mode: WalletMode,
    now: UnixTime,
    ledger: ChargeLog,
    refused_by: Option<Rule>,
}

fn case(name: &'static str, psbt: WalletPsbt, refused_by: Option<Rule>) -> Case {
    Case {
        name,
        psbt,
        mode: WalletMode::Active,
        now: MONDAY_NOON,
        ledger: ChargeLog::new(),
        refused_by,
    }
}

fn denials(policy: &Policy, c: &Case) -> Vec<Rule> {
    let report = policy.evaluate(&c.psbt, &c.mode, c.now, &c.ledger);
    assert_eq!(report.outcomes().len(), Rule::ALL.len());
    report
        .outcomes()
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Denied(_)))
        .map(|(r, _)| *r)
        .collect()
}

#[test]
fn each_rule_refuses_exactly_what_breaks_it() {
    let policy = Policy::from_toml(&policy_toml(), thresig_tx::Network::Regtest).unwrap();
    let w = the_wallet();
    let successor = wallet(2, None).0;
    let many_inputs = spend(10, 20_000, vec![pay(addr(50), 50_000), change(&w, 125_000)]);
    let cases = vec![
        case("allowed", base(), None),
        case(
            "two allowed destinations",
            spend(
                1,
                200_000,
                vec![
                    pay(addr(50), 50_000),
                    pay(addr(51), 50_000),
                    change(&w, 99_000),
                ],
            ),
            None,
        ),
        case(
            "sighash SINGLE",
            edit(&base(), |p| {
                p.inputs[0].sighash_type = Some(TapSighashType::Single.into())
            }),
            Some(Rule::SighashType),
        ),
        case(
            "claimed input spends another key",
            edit(
                &spend(2, 100_000, vec![pay(addr(50), 50_000), change(&w, 149_000)]),
                |p| {
                    p.inputs[1].witness_utxo.as_mut().unwrap().script_pubkey =
                        wallet(3, None).0.script_pubkey().clone();
                },
            ),
            Some(Rule::PrevoutScript),
        ),
        case(
            "allowlisted P2WSH of a refused type",
            spend(1, 200_000, vec![pay(p2wsh(), 50_000), change(&w, 149_000)]),
            Some(Rule::OutputScriptType),
        ),
        case(
            "destination not on the allowlist",
            spend(1, 200_000, vec![pay(addr(52), 50_000), change(&w, 149_000)]),
            Some(Rule::DestinationAllowlist),
        ),
        case(
            "output marked as change pays elsewhere",
            edit(&base(), |p| {
                p.outputs[0].tap_internal_key = Some(w.internal_key())
            }),
            Some(Rule::Change),
        ),
        case(
            "one output above the cap",
            spend(1, 200_000, vec![pay(addr(50), 70_000), change(&w, 129_000)]),
            Some(Rule::MaxOutputValue),
        ),
        case(
            "outputs together above the cap",
            spend(
                1,
                200_000,
                vec![
                    pay(addr(50), 55_000),
                    pay(addr(51), 55_000),
                    change(&w, 89_000),
                ],
            ),
            Some(Rule::MaxTxValue),
        ),
        case(
            "fee above the cap at a modest rate",
            many_inputs.clone(),
            Some(Rule::MaxFee),
        ),
        case(
            "fee rate above the cap",
            spend(1, 200_000, vec![pay(addr(50), 50_000), change(&w, 140_000)]),
            Some(Rule::MaxFeeRate),
        ),
        Case {
            now: UnixTime(MONDAY_NOON.0 + 8 * 3600),
            ..case("Monday 20:00", base(), Some(Rule::TimeWindow))
        },
        Case {
            now: UnixTime(MONDAY_NOON.0 + 5 * 86_400),
            ..case("Saturday noon", base(), Some(Rule::TimeWindow))
        },
        Case {
            ledger: ledger(&[
                (1, MONDAY_NOON.minus_secs(10)),
                (2, MONDAY_NOON.minus_secs(50)),
            ]),
            ..case("two others this minute", base(), Some(Rule::RatePerMinute))
        },
        Case {
            ledger: ledger(&[(1, MONDAY_NOON.minus_secs(61))]),
            ..case("one other a minute ago", base(), None)
        },
        Case {
            ledger: ledger(
                &(1..=10)
                    .map(|i| (i, MONDAY_NOON.minus_secs(7200)))
                    .collect::<Vec<_>>(),
            ),
            ..case("ten others today", base(), Some(Rule::RatePerDay))
        },
        Case {
            ledger: ledger(
                &(1..=10)
                    .map(|i| (i, MONDAY_NOON.minus_secs(86_401)))
                    .collect::<Vec<_>>(),
            ),
            ..case("ten others yesterday", base(), None)
        },
        Case {
            mode: WalletMode::Rekeying {
                successor: successor.clone(),
            },
            ..case("rekeying: ordinary spend", base(), Some(Rule::RekeySweep))
        },
        Case {
            mode: WalletMode::Rekeying {
                successor: successor.clone(),
            },
            ..case(
                "rekeying: sweep to the successor",
                spend(3, 100_000, vec![change(&successor, 299_000)]),
                None,
            )
        },
        Case {
            mode: WalletMode::Rekeying {
                successor: successor.clone(),
            },
            ..case(
                "rekeying: sweep split with another key",
                spend(
                    3,
                    100_000,
                    vec![change(&successor, 200_000), pay(addr(50), 99_000)],
                ),
                Some(Rule::RekeySweep),
            )
        },
        Case {
            mode: WalletMode::Rekeying {
                successor: successor.clone(),
            },
            ..case(
                "rekeying: sweep paying too much fee",
                spend(10, 30_000, vec![change(&successor, 275_000)]),
                Some(Rule::MaxFee),
            )
        },
        case(
            "sweep to the successor while active",
            spend(1, 50_000, vec![change(&successor, 49_000)]),
            Some(Rule::DestinationAllowlist),
        ),
    ];
    // The fee and fee-rate cases really sit on the sides of the caps they are meant to.
    assert!(
        many_inputs.fee() > Amount::from_sat(20_000)
            && many_inputs.fee().to_sat() <= 50 * many_inputs.estimated_vsize()
    );
    for c in &cases {
        let expected: Vec<Rule> = c.refused_by.into_iter().collect();
        assert_eq!(denials(&policy, c), expected, "{}", c.name);
        let result = policy.check(&c.psbt, &c.mode, c.now, &c.ledger);
        match (c.refused_by, result) {
            (None, Ok(_)) => {}
            (Some(rule), Err(Error::PolicyDenied(denial))) => {
                assert_eq!(denial.rule, rule, "{}", c.name);
                let err = Error::PolicyDenied(denial);
                assert_eq!(err.is_retryable(), rule.is_retryable());
                assert!(err.to_string().contains(rule.as_str()), "{}: {err}", c.name);
            }
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", c.name),
        }
    }
}

#[test]
fn default_policy_signs_only_default_and_all() {
    let policy = Policy::from_toml("", thresig_tx::Network::Regtest).unwrap();
    let w = the_wallet();
    let consolidation = spend(2, 100_000, vec![change(&w, 100_000), change(&w, 99_000)]);
    for ty in [
        TapSighashType::Default,
        TapSighashType::All,
        TapSighashType::None,
        TapSighashType::Single,
        TapSighashType::AllPlusAnyoneCanPay,
        TapSighashType::NonePlusAnyoneCanPay,
        TapSighashType::SinglePlusAnyoneCanPay,
    ] {
        let psbt = edit(&consolidation, |p| {
            p.inputs[1].sighash_type = Some(ty.into())
        });
        // Computed for every type, whatever the policy says.
        assert_eq!(psbt.wallet_sighashes().unwrap()[1].sighash_type, ty);
        let result = policy.check(&psbt, &WalletMode::Active, MONDAY_NOON, &ChargeLog::new());
        if matches!(ty, TapSighashType::Default | TapSighashType::All) {
            result.unwrap();
        } else {
            let err = result.unwrap_err();
            let denial = err.policy_denial().unwrap();
            assert_eq!(denial.rule, Rule::SighashType, "{ty}");
            assert_eq!(
                denial.violation,
                thresig_tx::Violation::SighashType {
                    input: thresig_tx::InputIndex(1),
                    sighash_type: ty
                }
            );
        }
    }
    // The default allowlist is empty: no external destination at all.
    let external = spend(1, 100_000, vec![pay(addr(50), 10_000), change(&w, 89_000)]);
    let err = policy
        .check(
            &external,
            &WalletMode::Active,
            MONDAY_NOON,
            &ChargeLog::new(),
        )
        .unwrap_err();
    assert_eq!(
        err.policy_denial().unwrap().rule,
        Rule::DestinationAllowlist
    );
    // Raw digests are refused by default and allowed only when configured.
    assert_eq!(
        policy
            .check_raw_digests()
            .unwrap_err()
            .policy_denial()
            .unwrap()
            .rule,
        Rule::RawDigests
    );
    Policy::from_toml("allow_raw_digests = true", thresig_tx::Network::Regtest)
        .unwrap()
        .check_raw_digests()
        .unwrap();
}

#[test]
fn the_same_transaction_is_charged_once_across_sessions() {
    let policy = Policy::from_toml(
        "max_per_minute = 1\nmax_per_day = 2",
        thresig_tx::Network::Regtest,
    )
    .unwrap();
    let w = the_wallet();
    let first = spend(2, 100_000, vec![change(&w, 199_000)]);
    let second = spend(2, 100_000, vec![change(&w, 198_000)]);
    assert_ne!(first.txid(), second.txid());
    let mut log = ChargeLog::new();
    // Several ROAST sessions ask for shares of `first`: one charge in all.
    for session in 0..4u64 {
        let now = UnixTime(MONDAY_NOON.0 + session * 5);
        let approval = policy
            .check(&first, &WalletMode::Active, now, &log)
            .unwrap();
        let expected = if session == 0 {
            RateCharge::Charge {
                txid: first.txid(),
                at: MONDAY_NOON,
            }
        } else {
            RateCharge::AlreadyCharged { txid: first.txid() }
        };
        assert_eq!(approval.charge(), &expected);
        log.apply(approval.charge());
    }
    assert_eq!(log.charged_since(UnixTime(0)), 1);
    // Another transaction in the same minute is over the per-minute limit...
    let err = policy
        .check(
            &second,
            &WalletMode::Active,
            UnixTime(MONDAY_NOON.0 + 30),
            &log,
        )
        .unwrap_err();
    assert_eq!(err.policy_denial().unwrap().rule, Rule::RatePerMinute);
    assert!(err.is_retryable());
    // ...and allowed a minute later.
    let later = UnixTime(MONDAY_NOON.0 + 61);
    let approval = policy
        .check(&second, &WalletMode::Active, later, &log)
        .unwrap();
    log.apply(approval.charge());
    // Pruning forgets only charges older than a day.
    log.prune(later);
    assert_eq!(log.charged_since(UnixTime(0)), 2);
    log.prune(UnixTime(later.0 + 86_400));
    assert_eq!(log.charged_since(UnixTime(0)), 1);
}

#[test]
fn the_documented_example_policy_loads() {
    let doc = include_str!("../../../docs/policy.md");
    let start = doc.find("[wallets.policy]\n").unwrap() + "[wallets.policy]\n".len();
    let table = &doc[start..start + doc[start..].find("```").unwrap()];
    let policy = Policy::from_toml(table, thresig_tx::Network::Regtest).unwrap();
    assert_eq!(policy.version(), thresig_tx::PolicyVersion(2));
    // The same table names a regtest address, so it cannot load for mainnet.
    assert!(matches!(
        Policy::from_toml(table, thresig_tx::Network::Bitcoin),
        Err(Error::PolicyConfig(
            thresig_tx::PolicyConfigError::Destination { index: 0, .. }
        ))
    ));
}
