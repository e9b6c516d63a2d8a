//! Table-driven signing-policy tests: each rule refuses a PSBT that breaks
//! only that rule, and a PSBT that breaks none is allowed.

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::{Address, Amount, OutPoint, ScriptBuf, TapSighashType, Txid};
use common::{funding, wallet};
use thresig_tx::{
    ChargeKey, ChargeLedger, ChargeLog, CoordinatorId, DEFAULT_MAX_FEE_PER_DAY_SAT,
    DEFAULT_MAX_FEE_SAT, DEFAULT_MAX_PER_DAY, DEFAULT_MAX_PER_DAY_PER_COORDINATOR, Destination,
    Error, MAX_PER_DAY_CEILING, Network, Outcome, Payment, Policy, PolicyConfig, PolicyConfigError,
    RateCharge, Rule, SpendInput, TaprootWallet, UnixTime, Violation, WalletMode, WalletPsbt,
    build_psbt,
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
            key: ChargeKey::from_byte_array([id; 32]),
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
    let policy = Policy::from_toml(&policy_toml(), thresig_tx::Network::Regtest, 1).unwrap();
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
        // The table's ledgers name no coordinator, so their charges count
        // against every coordinator's share, which at t = 1 is the whole
        // budget: a rate limit's sub-limit refuses with it.
        let expected: Vec<Rule> = match c.refused_by {
            Some(Rule::RatePerMinute) => vec![Rule::RatePerMinute, Rule::CoordinatorRatePerMinute],
            Some(Rule::RatePerDay) => vec![Rule::RatePerDay, Rule::CoordinatorRatePerDay],
            other => other.into_iter().collect(),
        };
        assert_eq!(denials(&policy, c), expected, "{}", c.name);
        let result = policy.check(&c.psbt, &c.mode, c.now, &c.ledger);
        match (c.refused_by, result) {
            (None, Ok(_)) => {}
            (Some(rule), Err(Error::PolicyDenied(denial))) => {
                assert_eq!(denial.rule, rule, "{}", c.name);
                let err = Error::PolicyDenied(denial);
                assert_eq!(err.lifts_with_time(), rule.lifts_with_time());
                assert!(err.to_string().contains(rule.as_str()), "{}: {err}", c.name);
            }
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", c.name),
        }
    }
}

#[test]
fn default_policy_signs_only_default_and_all() {
    let policy = Policy::from_toml("", thresig_tx::Network::Regtest, 1).unwrap();
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
    Policy::from_toml("allow_raw_digests = true", thresig_tx::Network::Regtest, 1)
        .unwrap()
        .check_raw_digests()
        .unwrap();
}

#[test]
fn the_same_transaction_is_charged_once_across_sessions() {
    let policy = Policy::from_toml(
        "max_per_minute = 1\nmax_per_day = 2",
        thresig_tx::Network::Regtest,
        1,
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
                key: ChargeKey::of(&first),
                at: MONDAY_NOON,
            }
        } else {
            RateCharge::AlreadyCharged {
                key: ChargeKey::of(&first),
            }
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
    assert!(err.lifts_with_time());
    // ...and allowed a minute later.
    let later = UnixTime(MONDAY_NOON.0 + 61);
    let approval = policy
        .check(&second, &WalletMode::Active, later, &log)
        .unwrap();
    log.apply(approval.charge());
    // Pruning forgets only charges a day old or older (half-open windows).
    log.prune(later);
    assert_eq!(log.charged_since(UnixTime(0)), 2);
    log.prune(UnixTime(later.0 + 86_399));
    assert_eq!(log.charged_since(UnixTime(0)), 1);
    log.prune(UnixTime(later.0 + 86_400));
    assert_eq!(log.charged_since(UnixTime(0)), 0);
}

#[test]
fn the_documented_example_policy_loads() {
    let doc = include_str!("../../../docs/policy.md");
    let start = doc.find("[wallets.policy]\n").unwrap() + "[wallets.policy]\n".len();
    let table = &doc[start..start + doc[start..].find("```").unwrap()];
    // At the threshold the example's wallet states.
    let at = doc[..start].rfind("\nthreshold = ").unwrap() + "\nthreshold = ".len();
    let t: u16 = doc[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(t, 2);
    let policy = Policy::from_toml(table, thresig_tx::Network::Regtest, t).unwrap();
    assert_eq!(policy.version(), thresig_tx::PolicyVersion(2));
    // The same table names a regtest address, so it cannot load for mainnet.
    assert!(matches!(
        Policy::from_toml(table, thresig_tx::Network::Bitcoin, t),
        Err(Error::PolicyConfig(
            thresig_tx::PolicyConfigError::Destination { index: 0, .. }
        ))
    ));
}

/// A self-transfer of a made-up outpoint (`vout` makes each one distinct):
/// what any coordinator can fabricate, since the signer has no chain view.
fn self_send(vout: u32, in_sat: u64, out_sat: u64) -> WalletPsbt {
    let w = the_wallet();
    let coin = SpendInput {
        outpoint: OutPoint {
            txid: Txid::from_byte_array([0xee; 32]),
            vout,
        },
        value: Amount::from_sat(in_sat),
        script_pubkey: w.script_pubkey().clone(),
    };
    build_psbt(&w, &[coin], &[change(&w, out_sat)], LockTime::ZERO).unwrap()
}

fn refusal(result: Result<thresig_tx::Approval, Error>) -> Rule {
    result.unwrap_err().policy_denial().unwrap().rule
}

/// A rekeying wallet asked, outside its time window, for something that is
/// not a sweep: `time_window` (retryable) and `rekey_sweep` (terminal) both
/// refuse, and the terminal one is reported so no one retries in vain.
#[test]
fn a_spend_that_can_never_pass_is_reported_with_its_terminal_rule() {
    let policy = Policy::from_toml(
        r#"time_windows = [{ days = ["mon"], start = "08:00", end = "09:00" }]"#,
        Network::Regtest,
        1,
    )
    .unwrap();
    let successor = wallet(35, None).0;
    let rekeying = WalletMode::Rekeying {
        successor: successor.clone(),
    };
    let not_a_sweep = self_send(0, 50_000, 49_000);
    let report = policy.evaluate(&not_a_sweep, &rekeying, MONDAY_NOON, &ChargeLog::new());
    let denied: Vec<Rule> = report
        .outcomes()
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Denied(_)))
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(denied, vec![Rule::TimeWindow, Rule::RekeySweep]);
    let err = policy
        .check(&not_a_sweep, &rekeying, MONDAY_NOON, &ChargeLog::new())
        .unwrap_err();
    assert_eq!(err.policy_denial().unwrap().rule, Rule::RekeySweep);
    assert!(!err.lifts_with_time());
    // A real sweep outside the window is refused only by the window: retryable.
    let w = the_wallet();
    let sweep = build_psbt(
        &w,
        &funding(&w, 1, Amount::from_sat(50_000)),
        &[pay(successor.address(), 49_000)],
        LockTime::ZERO,
    )
    .unwrap();
    let err = policy
        .check(&sweep, &rekeying, MONDAY_NOON, &ChargeLog::new())
        .unwrap_err();
    assert_eq!(err.policy_denial().unwrap().rule, Rule::TimeWindow);
    assert!(err.lifts_with_time());
}

/// With `op_return` allowed, a zero-value OP_RETURN output needs no
/// allowlist entry; one carrying value still does, and without `op_return`
/// in the types none is signed.
#[test]
fn a_zero_value_op_return_is_exempt_from_the_allowlist_when_allowed() {
    let w = the_wallet();
    let with_op_return = |value: u64| {
        spend(
            1,
            100_000,
            vec![
                change(&w, 99_000 - value),
                Payment {
                    destination: Destination::Script(ScriptBuf::new_op_return([0xab; 20])),
                    value: Amount::from_sat(value),
                },
            ],
        )
    };
    let allowed = Policy::from_toml(
        r#"output_script_types = ["p2tr", "op_return"]"#,
        Network::Regtest,
        1,
    )
    .unwrap();
    let check = |policy: &Policy, psbt: &WalletPsbt| {
        policy.check(psbt, &WalletMode::Active, MONDAY_NOON, &ChargeLog::new())
    };
    check(&allowed, &with_op_return(0)).unwrap();
    assert_eq!(
        refusal(check(&allowed, &with_op_return(1))),
        Rule::DestinationAllowlist
    );
    let default = Policy::from_toml("", Network::Regtest, 1).unwrap();
    assert_eq!(
        refusal(check(&default, &with_op_return(0))),
        Rule::OutputScriptType
    );
}

/// Any coordinator can fabricate self-transfers that pass every rule and are
/// charged. A per-coordinator sub-limit stops one coordinator from using up
/// the wallet's daily limit: the others keep signing.
#[test]
fn a_coordinator_cannot_exhaust_the_wallet_limit_for_the_others() {
    let policy = Policy::from_toml(
        "max_per_day = 10\nmax_per_day_per_coordinator = 3",
        Network::Regtest,
        1,
    )
    .unwrap();
    let (mallory, alice) = (
        CoordinatorId("mallory".into()),
        CoordinatorId("alice".into()),
    );
    let mut log = ChargeLog::new();
    let at = |k: u64| UnixTime(MONDAY_NOON.0 + k);
    for k in 0..3u32 {
        let junk = self_send(k, 1_000, 900);
        let approval = policy
            .check_for(&junk, &WalletMode::Active, at(k.into()), &log, &mallory)
            .unwrap();
        assert_eq!(approval.coordinator(), Some(&mallory));
        log.record(&approval);
    }
    let more = self_send(3, 1_000, 900);
    let err = policy
        .check_for(&more, &WalletMode::Active, at(10), &log, &mallory)
        .unwrap_err();
    let denial = err.policy_denial().unwrap();
    assert_eq!(denial.rule, Rule::CoordinatorRatePerDay);
    assert_eq!(
        denial.violation,
        Violation::Rate {
            charged: 3,
            limit: 3
        }
    );
    assert!(err.lifts_with_time());
    // Another coordinator is not affected.
    let real = self_send(100, 50_000, 49_000);
    let approval = policy
        .check_for(&real, &WalletMode::Active, at(20), &log, &alice)
        .unwrap();
    // A request naming no coordinator counts every charge of the wallet.
    assert_eq!(
        refusal(policy.check(&real, &WalletMode::Active, at(20), &log)),
        Rule::CoordinatorRatePerDay
    );
    log.record(&approval);
    assert_eq!(log.charged_since_by(&alice, MONDAY_NOON), 1);
    assert_eq!(log.charged_since_by(&mallory, MONDAY_NOON), 3);
    // A charge recorded without its coordinator counts against everyone.
    log.apply(&RateCharge::Charge {
        key: ChargeKey::from_byte_array([7; 32]),
        at: at(30),
    });
    assert_eq!(log.charged_since_by(&alice, MONDAY_NOON), 2);
    assert_eq!(log.charged_since(MONDAY_NOON), 5);
}

/// Windows are half-open, `(now - 60 s, now]` and `(now - 24 h, now]`: a
/// charge exactly a window old no longer counts.
#[test]
fn rate_windows_are_half_open() {
    let policy =
        Policy::from_toml("max_per_minute = 1\nmax_per_day = 1", Network::Regtest, 1).unwrap();
    let log = ledger(&[(1, MONDAY_NOON)]);
    let psbt = self_send(0, 50_000, 49_000);
    let check = |secs: u64| {
        policy.check(
            &psbt,
            &WalletMode::Active,
            UnixTime(MONDAY_NOON.0 + secs),
            &log,
        )
    };
    assert_eq!(refusal(check(59)), Rule::RatePerMinute);
    assert_eq!(refusal(check(60)), Rule::RatePerDay);
    assert_eq!(refusal(check(86_399)), Rule::RatePerDay);
    check(86_400).unwrap();
}

/// The daily fee budget sums the fees of the day's charged transactions; a
/// ledger that does not know a fee counts it at the per-transaction cap.
#[test]
fn the_daily_fee_budget_bounds_the_fees_of_a_day() {
    let policy = Policy::from_toml(
        "max_fee_sat = 1000000\nmax_fee_rate_sat_vb = 100000\nmax_fee_per_day_sat = 2500000",
        Network::Regtest,
        1,
    )
    .unwrap();
    let active = WalletMode::Active;
    let mut log = ChargeLog::new();
    for k in 0..2u32 {
        let burn = self_send(k, 1_100_000, 100_000);
        assert_eq!(burn.fee(), Amount::from_sat(1_000_000));
        let approval = policy.check(&burn, &active, MONDAY_NOON, &log).unwrap();
        assert_eq!(approval.fee(), burn.fee());
        log.record(&approval);
    }
    assert_eq!(
        log.fees_charged_since(MONDAY_NOON),
        Some(Amount::from_sat(2_000_000))
    );
    let err = policy
        .check(
            &self_send(2, 1_100_000, 100_000),
            &active,
            MONDAY_NOON,
            &log,
        )
        .unwrap_err();
    assert_eq!(
        err.policy_denial().unwrap().violation,
        Violation::FeeBudget {
            charged: Amount::from_sat(2_000_000),
            fee: Amount::from_sat(1_000_000),
            cap: Amount::from_sat(2_500_000),
        }
    );
    assert!(err.lifts_with_time());
    // Exactly filling the budget passes; a day later the budget is free again.
    policy
        .check(&self_send(3, 600_000, 100_000), &active, MONDAY_NOON, &log)
        .unwrap();
    policy
        .check(
            &self_send(2, 1_100_000, 100_000),
            &active,
            UnixTime(MONDAY_NOON.0 + 86_400),
            &log,
        )
        .unwrap();
    // Unknown fees count at `max_fee_sat`: two bare charges leave 500 000.
    let unknown = ledger(&[(1, MONDAY_NOON), (2, MONDAY_NOON)]);
    assert_eq!(unknown.fees_charged_since(MONDAY_NOON), None);
    policy
        .check(
            &self_send(4, 600_000, 100_000),
            &active,
            MONDAY_NOON,
            &unknown,
        )
        .unwrap();
    assert_eq!(
        refusal(policy.check(
            &self_send(5, 600_001, 100_000),
            &active,
            MONDAY_NOON,
            &unknown
        )),
        Rule::FeePerDay
    );
}

#[test]
fn defaults_limit_transactions_and_fees_per_day() {
    let config = PolicyConfig::default();
    assert_eq!(config.max_per_day, None);
    assert_eq!(config.max_fee_per_day_sat, DEFAULT_MAX_FEE_PER_DAY_SAT);
    let policy = Policy::from_toml("", Network::Regtest, 1).unwrap();
    let full: Vec<(u8, UnixTime)> = (0..u8::try_from(DEFAULT_MAX_PER_DAY).unwrap())
        .map(|i| (i, MONDAY_NOON))
        .collect();
    let psbt = self_send(0, 50_000, 49_000);
    // One short of the limit passes, the limit refuses (the fee budget,
    // counting unknown fees at the cap, would also refuse with 100 charges).
    let almost = ledger(full.get(..4).unwrap());
    policy
        .check(&psbt, &WalletMode::Active, MONDAY_NOON, &almost)
        .unwrap();
    let report = policy.evaluate(&psbt, &WalletMode::Active, MONDAY_NOON, &ledger(&full));
    assert_eq!(
        report.first_denial().map(|d| d.rule),
        Some(Rule::RatePerDay)
    );
    // The budget may not be below the per-transaction fee cap.
    assert!(matches!(
        Policy::from_toml(
            "max_fee_sat = 10\nmax_fee_per_day_sat = 9",
            Network::Regtest,
            1
        ),
        Err(Error::PolicyConfig(
            PolicyConfigError::FeeBudgetBelowFeeCap { budget: 9, cap: 10 }
        ))
    ));
}

/// Extreme clock values do not panic and the calendar is right at a week wrap.
#[test]
fn time_windows_hold_at_the_week_wrap_and_extreme_clocks() {
    let policy = Policy::from_toml(
        r#"time_windows = [{ days = ["sun"], start = "23:59", end = "24:00" }]"#,
        Network::Regtest,
        1,
    )
    .unwrap();
    let psbt = self_send(0, 50_000, 49_000);
    // Sunday 2024-01-07 23:59:59 is inside; Monday 00:00:00 is not.
    let sunday_last = UnixTime(1_704_067_200 + 7 * 86_400 - 1);
    let check = |now| policy.check(&psbt, &WalletMode::Active, now, &ChargeLog::new());
    check(sunday_last).unwrap();
    assert_eq!(
        refusal(check(UnixTime(sunday_last.0 + 1))),
        Rule::TimeWindow
    );
    for t in [0, 1, u64::MAX - 1, u64::MAX] {
        let report = policy.evaluate(&psbt, &WalletMode::Active, UnixTime(t), &ChargeLog::new());
        assert_eq!(report.outcomes().len(), Rule::ALL.len());
    }
}

/// Unknown or misspelt keys and mistyped values are refused at every level.
#[test]
fn unknown_or_mistyped_policy_fields_are_refused() {
    for text in [
        "max_fee_sats = 1",
        "network = \"regtest\"",
        r#"time_windows = [{ days = ["mon"], start = "08:00", end = "18:00", tz = "CET" }]"#,
        r#"sighash_types = ["ALL"]"#,
        r#"output_script_types = ["P2TR"]"#,
        "max_fee_sat = -1",
        "max_fee_sat = 1.5",
        "version = 4294967296",
        "max_fee_per_day_sat = \"lots\"",
        "[wallets.policy]\nmax_fee_sat = 1",
    ] {
        assert!(
            matches!(
                Policy::from_toml(text, Network::Regtest, 1),
                Err(Error::PolicyConfig(PolicyConfigError::Toml { .. }))
            ),
            "{text}"
        );
    }
}

/// `self_send` paying `fee` from one input of `in_sat`.
fn with_fee(vout: u32, in_sat: u64, fee: u64) -> WalletPsbt {
    self_send(vout, in_sat, in_sat - fee)
}

/// The per-coordinator sub-limits are on without being configured, at the
/// wallet's budgets divided by the threshold: count per minute and per day,
/// and fees per day.
#[test]
fn sub_limits_default_to_each_coordinators_share_of_the_budget() {
    let policy = Policy::from_toml(
        "max_per_minute = 6\nmax_per_day = 9\nmax_fee_per_day_sat = 3000000\n\
         max_fee_rate_sat_vb = 100000",
        Network::Regtest,
        3,
    )
    .unwrap();
    let active = WalletMode::Active;
    let mallory = CoordinatorId("mallory".into());
    let mut log = ChargeLog::new();
    let sign = |log: &mut ChargeLog, psbt: &WalletPsbt, secs: u64, by: &CoordinatorId| {
        let now = UnixTime(MONDAY_NOON.0 + secs);
        let approval = policy.check_for(psbt, &active, now, log, by)?;
        log.record(&approval);
        Ok::<_, Error>(())
    };
    // Two a minute (6 / 3).
    sign(&mut log, &with_fee(0, 10_000, 100), 0, &mallory).unwrap();
    sign(&mut log, &with_fee(1, 10_000, 100), 1, &mallory).unwrap();
    let err = sign(&mut log, &with_fee(2, 10_000, 100), 2, &mallory).unwrap_err();
    let denial = err.policy_denial().unwrap();
    assert_eq!(denial.rule.as_str(), "coordinator_rate_per_minute");
    assert_eq!(
        denial.violation,
        Violation::Rate {
            charged: 2,
            limit: 2
        }
    );
    // Three a day (9 / 3).
    sign(&mut log, &with_fee(2, 10_000, 100), 120, &mallory).unwrap();
    let err = sign(&mut log, &with_fee(3, 10_000, 100), 240, &mallory).unwrap_err();
    assert_eq!(
        err.policy_denial().unwrap().rule.as_str(),
        "coordinator_rate_per_day"
    );
    assert!(err.lifts_with_time());
    // 1 000 000 sat of fees a day (3 000 000 / 3).
    let eve = CoordinatorId("eve".into());
    sign(&mut log, &with_fee(10, 700_000, 600_000), 300, &eve).unwrap();
    let err = sign(&mut log, &with_fee(11, 700_000, 600_000), 400, &eve).unwrap_err();
    let denial = err.policy_denial().unwrap();
    assert_eq!(denial.rule.as_str(), "coordinator_fee_per_day");
    assert_eq!(
        denial.violation,
        Violation::FeeBudget {
            charged: Amount::from_sat(600_000),
            fee: Amount::from_sat(600_000),
            cap: Amount::from_sat(1_000_000),
        }
    );
    assert!(err.lifts_with_time());
    // Another coordinator still has its own share of all three.
    let alice = CoordinatorId("alice".into());
    sign(&mut log, &with_fee(20, 700_000, 600_000), 500, &alice).unwrap();
}

/// The policy's config error message for `text` at threshold `t`, which
/// must fail to load.
fn config_refusal(text: &str, t: u16) -> String {
    match Policy::from_toml(text, Network::Regtest, t) {
        Err(e @ Error::PolicyConfig(_)) => e.to_string(),
        other => panic!("{text}: expected a policy config error, got {other:?}"),
    }
}

/// `text` fails to load at threshold `t` with a message starting `start`
/// (the field it names first).
fn assert_refused_naming(text: &str, t: u16, start: &str) {
    let message = config_refusal(text, t);
    assert!(message.starts_with(start), "{text}: {message}");
}

/// A sub-limit above the budget divided by the threshold, or a budget too
/// small to give each coordinator a share, is refused at load, naming the
/// field; so is a fee cap that a coordinator's daily fee share could never
/// pay. Left out, the fee cap is the smaller of its default and that share.
#[test]
fn sub_limits_above_the_share_of_the_budget_are_refused_at_load() {
    for (text, field) in [
        (
            "max_per_day = 9\nmax_per_day_per_coordinator = 4",
            "max_per_day_per_coordinator",
        ),
        (
            "max_per_minute = 9\nmax_per_minute_per_coordinator = 4",
            "max_per_minute_per_coordinator",
        ),
        (
            "max_fee_per_day_sat = 3000000\nmax_fee_per_day_per_coordinator_sat = 1000001",
            "max_fee_per_day_per_coordinator_sat",
        ),
        ("max_per_minute = 2", "max_per_minute"),
        ("max_per_day = 2", "max_per_day"),
        (
            "max_fee_sat = 1000000\nmax_fee_per_day_sat = 2000000",
            "max_fee_sat",
        ),
    ] {
        assert_refused_naming(text, 3, &format!("{field} "));
    }
    // Exactly the share loads.
    Policy::from_toml(
        "max_per_day = 9\nmax_per_day_per_coordinator = 3\nmax_per_minute = 9\n\
         max_per_minute_per_coordinator = 3\nmax_fee_per_day_sat = 3000000\n\
         max_fee_per_day_per_coordinator_sat = 1000000",
        Network::Regtest,
        3,
    )
    .unwrap();
    // The default fee cap shrinks to a coordinator's share of the default
    // budget: 5 000 000 / 6.
    let policy = Policy::from_toml("", Network::Regtest, 6).unwrap();
    assert_eq!(policy.max_fee(), Amount::from_sat(833_333));
    assert_eq!(
        Policy::from_toml("", Network::Regtest, 2)
            .unwrap()
            .max_fee(),
        Amount::from_sat(DEFAULT_MAX_FEE_SAT)
    );
}

/// The rate ledger stays bounded: `max_per_day` has a ceiling, so no
/// configuration lets it grow without bound.
#[test]
fn max_per_day_has_a_ceiling() {
    let message = config_refusal("max_per_day = 4294967295", 1);
    assert!(message.starts_with("max_per_day "), "{message}");
    let ceiling = format!("max_per_day = {MAX_PER_DAY_CEILING}");
    Policy::from_toml(&ceiling, Network::Regtest, 1).unwrap();
    let over = format!("max_per_day = {}", MAX_PER_DAY_CEILING + 1);
    config_refusal(&over, 1);
}

/// A decoy: the same unsigned transaction as `real`, its first input
/// stated at an amount that leaves a fee of 1 sat.
fn decoy_of(real: &WalletPsbt) -> WalletPsbt {
    edit(real, |p| {
        let utxo = p.inputs[0].witness_utxo.as_mut().unwrap();
        utxo.value = utxo.value - real.fee() + Amount::from_sat(1);
    })
}

/// A charge covers what was signed: the transaction id with every stated
/// prevout amount and script. A coordinator that gets a decoy of the same
/// unsigned transaction charged at a 1-sat fee does not get the real one
/// through uncharged.
#[test]
fn the_same_txid_with_other_stated_amounts_is_charged_again() {
    let policy = Policy::from_toml(
        "max_fee_sat = 1000000\nmax_fee_rate_sat_vb = 100000\nmax_fee_per_day_sat = 1500000",
        Network::Regtest,
        1,
    )
    .unwrap();
    let active = WalletMode::Active;
    let real = with_fee(0, 1_100_000, 1_000_000);
    let decoy = decoy_of(&real);
    assert_eq!(decoy.txid(), real.txid());
    assert_eq!(decoy.fee(), Amount::from_sat(1));
    let mut log = ChargeLog::new();
    let approval = policy.check(&decoy, &active, MONDAY_NOON, &log).unwrap();
    log.record(&approval);
    let approval = policy.check(&real, &active, MONDAY_NOON, &log).unwrap();
    assert!(
        matches!(approval.charge(), RateCharge::Charge { .. }),
        "{:?}",
        approval.charge()
    );
    log.record(&approval);
    assert_eq!(
        log.fees_charged_since(MONDAY_NOON),
        Some(Amount::from_sat(1_000_001))
    );
    assert_eq!(log.charged_since(MONDAY_NOON), 2);
    // The real transaction again (another ROAST session) is not charged again.
    let again = policy.check(&real, &active, MONDAY_NOON, &log).unwrap();
    assert!(matches!(again.charge(), RateCharge::AlreadyCharged { .. }));
    // Another stated script of an input of another party is another
    // transaction too.
    let w = the_wallet();
    let two = spend(2, 100_000, vec![change(&w, 199_000)]);
    let foreign = |to: Address| {
        edit(&two, |p| {
            p.inputs[1].witness_utxo.as_mut().unwrap().script_pubkey = to.script_pubkey();
            p.inputs[1].tap_internal_key = None;
            p.inputs[1].tap_merkle_root = None;
        })
    };
    let (a, b) = (foreign(addr(50)), foreign(addr(51)));
    assert_eq!(a.txid(), b.txid());
    assert_ne!(ChargeKey::of(&a), ChargeKey::of(&b));
    assert_eq!(ChargeKey::of(&a), ChargeKey::of(&foreign(addr(50))));
}

/// A charge counts for a day and no longer: a ledger still holding an older
/// charge (nothing was written since) does not let the same transaction
/// through as already charged.
#[test]
fn a_charge_a_day_old_is_not_already_charged() {
    let policy = Policy::from_toml("max_per_day = 1", Network::Regtest, 1).unwrap();
    let active = WalletMode::Active;
    let psbt = self_send(0, 50_000, 49_000);
    let mut log = ChargeLog::new();
    log.record(&policy.check(&psbt, &active, MONDAY_NOON, &log).unwrap());
    let a_day_later = UnixTime(MONDAY_NOON.0 + 86_400);
    let approval = policy.check(&psbt, &active, a_day_later, &log).unwrap();
    assert!(
        matches!(approval.charge(), RateCharge::Charge { .. }),
        "{:?}",
        approval.charge()
    );
    let other = self_send(1, 50_000, 49_000);
    log.record(&policy.check(&other, &active, a_day_later, &log).unwrap());
    // The old charge is forgotten; the day's one charge of `other` fills the
    // limit, and `psbt` counts as a new transaction against it.
    assert_eq!(
        refusal(policy.check(&psbt, &active, a_day_later, &log)),
        Rule::RatePerDay
    );
}

/// However many requests arrive over several days, a ledger pruned at each
/// charge (as the signer's is) holds at most `max_per_day` charges, one
/// more per approval at most.
#[test]
fn the_ledger_holds_at_most_max_per_day_charges() {
    let policy = Policy::from_toml("max_per_day = 5", Network::Regtest, 1).unwrap();
    let active = WalletMode::Active;
    let mut log = ChargeLog::new();
    let mut approved = 0;
    for k in 0..400u32 {
        // One request every 20 minutes, for more than five days.
        let now = UnixTime(MONDAY_NOON.0 + u64::from(k) * 1_200);
        let before = log.iter().count();
        if let Ok(approval) = policy.check(&self_send(k, 50_000, 49_000), &active, now, &log) {
            log.record(&approval);
            approved += 1;
        }
        log.prune(now);
        let after = log.iter().count();
        assert!(after <= 5, "{after} charges on record at request {k}");
        assert!(after <= before + 1);
    }
    assert!(approved > 5 * 5, "{approved}");
}

/// A wallet without a `[wallets.policy]` table loads at every threshold the
/// engine allows, and the default leaves each coordinator at least
/// [`DEFAULT_MAX_PER_DAY_PER_COORDINATOR`] transactions a day, even at the
/// design's (51, 100).
#[test]
fn the_default_policy_loads_at_every_threshold_with_ten_a_day_per_coordinator() {
    for t in [2, 3, 51, 100, 101, 999, 1000] {
        PolicyConfig::default()
            .validate(Network::Regtest, t)
            .unwrap_or_else(|e| panic!("t = {t}: {e}"));
    }
    let policy = PolicyConfig::default()
        .validate(Network::Regtest, 51)
        .unwrap();
    let alice = CoordinatorId("alice".into());
    let mut log = ChargeLog::new();
    for k in 0..DEFAULT_MAX_PER_DAY_PER_COORDINATOR {
        let now = UnixTime(MONDAY_NOON.0 + u64::from(k) * 600);
        let approval = policy
            .check_for(
                &self_send(k, 50_000, 49_000),
                &WalletMode::Active,
                now,
                &log,
                &alice,
            )
            .unwrap_or_else(|e| panic!("transaction {k}: {e}"));
        log.record(&approval);
    }
}

/// A charge dated after `now` by more than a minute was dated by a clock
/// that ran ahead and was set right: pruning drops it rather than let it
/// fill the limits until the clock reaches its date. One dated a little
/// after `now` (a concurrent request's later clock reading) counts as made
/// at `now`, and leaves the window a day later.
#[test]
fn a_charge_dated_in_the_future_does_not_count_forever() {
    let day = 86_400;
    let far = UnixTime(MONDAY_NOON.0 + 2 * day);
    let near = UnixTime(MONDAY_NOON.0 + 30);
    let mut log = ledger(&[(1, far), (2, near)]);
    log.prune(MONDAY_NOON);
    assert_eq!(
        log.iter().map(|e| (e.key, e.at)).collect::<Vec<_>>(),
        [(ChargeKey::from_byte_array([2; 32]), MONDAY_NOON)]
    );
    assert_eq!(log.charged_since(MONDAY_NOON), 1);
    let a_day_later = UnixTime(MONDAY_NOON.0 + day);
    log.prune(a_day_later);
    assert_eq!(log.iter().count(), 0);
}

/// An explicit count sub-limit of 0 would refuse every request with a
/// retryable `coordinator_rate_*`, so coordinators would retry forever: it
/// is refused at load, naming the field.
#[test]
fn a_count_sub_limit_of_zero_is_refused_at_load() {
    for (text, field) in [
        (
            "max_per_day_per_coordinator = 0",
            "max_per_day_per_coordinator",
        ),
        (
            "max_per_minute = 4\nmax_per_minute_per_coordinator = 0",
            "max_per_minute_per_coordinator",
        ),
        (
            "max_per_minute_per_coordinator = 0",
            "max_per_minute_per_coordinator",
        ),
    ] {
        assert_refused_naming(text, 2, &format!("{field} is 0"));
    }
}
