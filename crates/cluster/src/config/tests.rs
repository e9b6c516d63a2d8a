use super::*;

use std::time::Duration;

use thresig_engine::test_util::cluster::seat;
use thresig_engine::test_util::identity;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/thresig/signer.toml"), text)
}

const PROVIDER: &str = "[key_provider]\nkind = \"env\"\nvariable = \"KEK\"\n";

#[test]
fn minimal_config_uses_store_defaults_and_resolves_relative_dir() {
    let c = parse(&format!("[store]\ndata_dir = \"state\"\n{PROVIDER}")).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/etc/thresig/state"));
    assert_eq!(c.options.max_batch, StoreOptions::default().max_batch);
    assert!(c.options.recovery_key.is_none());
}

#[test]
fn batch_settings_are_applied_and_bounded() {
    let c = parse(&format!(
        "[store]\ndata_dir = \"/var/lib/thresig\"\nmax_batch = 8\nreseal_batch = 3\n{PROVIDER}"
    ))
    .unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/thresig"));
    assert_eq!((c.options.max_batch, c.options.reseal_batch), (8, 3));
    let e = parse(&format!(
        "[store]\ndata_dir = \"d\"\nmax_batch = 0\n{PROVIDER}"
    ))
    .unwrap_err();
    assert!(
        matches!(&e, ConfigError::Invalid { field, .. } if field == "store.max_batch"),
        "{e}"
    );
}

#[test]
fn unknown_fields_are_refused_with_file_and_line() {
    let e = parse(&format!("[store]\ndata_dir = \"d\"\ncache = 1\n{PROVIDER}")).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ConfigError::Parse { line: 3, .. }), "{text}");
    assert!(
        text.contains("signer.toml") && text.contains("`cache`"),
        "{text}"
    );
    let e = parse("[store]\ndata_dir = \"d\"\n[key_provider]\nkind = \"env\"\nvarible = \"K\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("`varible`"), "{e}");
}

#[test]
fn wrong_typed_values_are_not_echoed() {
    let e = parse(&format!(
        "[store]\ndata_dir = \"d\"\nmax_batch = \"c0ffeec0ffee\"\n{PROVIDER}"
    ))
    .unwrap_err();
    assert!(!e.to_string().contains("c0ffee"), "{e}");
    assert!(matches!(e, ConfigError::Parse { line: 3, .. }), "{e}");
}

#[test]
fn provider_problems_name_the_file() {
    let e = parse("[store]\ndata_dir = \"d\"\n[key_provider]\nkind = \"env\"\n").unwrap_err();
    assert!(matches!(e, ConfigError::KeyProvider { .. }), "{e}");
    assert!(e.to_string().contains("signer.toml"), "{e}");
}

#[test]
fn recovery_key_reaches_store_options() {
    let (_, pk) = thresig_store::RecoverySecretKey::generate(&mut rand_core::OsRng);
    let c = parse(&format!(
        "[store]\ndata_dir = \"d\"\n{PROVIDER}recovery_public_key = \"{}\"\n",
        hex::encode(pk.to_bytes())
    ))
    .unwrap();
    assert_eq!(c.options.recovery_key, Some(pk));
}

#[test]
fn a_key_poll_interval_out_of_range_is_refused_naming_it() {
    for value in ["0", "86401", "9223372036854775807"] {
        let e = parse(&format!(
            "[store]\ndata_dir = \"d\"\nkey_poll_interval_secs = {value}\n{PROVIDER}"
        ))
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. }
                if field == "store.key_poll_interval_secs"),
            "{value}: {e}"
        );
        assert_eq!(e.recovery(), Recovery::Terminal, "{e}");
    }
}

#[test]
fn the_key_poll_interval_is_kept_for_the_key_manager() {
    let c = parse(&format!(
        "[store]\ndata_dir = \"d\"\nkey_poll_interval_secs = 7\n{PROVIDER}"
    ))
    .unwrap();
    assert_eq!(c.key_manager.poll_interval, Duration::from_secs(7));
    let c = parse(&format!("[store]\ndata_dir = \"d\"\n{PROVIDER}")).unwrap();
    assert_eq!(c.key_manager, KeyManagerOptions::default());
}

#[test]
fn a_config_path_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR).unwrap();
    for path in [dir.path(), Path::new("/dev/zero"), &socket, &fifo] {
        let e = Config::load(path).unwrap_err();
        assert!(matches!(e, ConfigError::NotAFile { .. }), "{e}");
        assert_eq!(e.recovery(), Recovery::Terminal, "{e}");
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}

#[test]
fn a_config_file_larger_than_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signer.toml");
    let padding = "#".repeat(usize::try_from(MAX_CONFIG_BYTES).unwrap());
    std::fs::write(&path, format!("{padding}\n")).unwrap();
    assert!(matches!(
        Config::load(&path),
        Err(ConfigError::TooLarge { .. })
    ));
}

/// The identity public key of cluster seat `i`, as hex.
fn key_hex(i: u8) -> String {
    hex::encode(key(i).to_bytes())
}

/// The identity public key of cluster seat `i`.
fn key(i: u8) -> IdentityKey {
    identity(u16::from(i))
}

/// A P2WSH address (of an empty script) on `network`.
fn address(network: bitcoin::Network) -> String {
    bitcoin::Address::p2wsh(&bitcoin::ScriptBuf::new(), network).to_string()
}

/// A valid file for member 2 of a 4-member regtest cluster: "treasury"
/// (2 of cluster seats 4, 2, 1, with a policy and a successor) and
/// "reserve" (3 of seats 1, 2, 3).
fn valid() -> String {
    let members: String = (1..=4u8)
        .map(|i| {
            format!(
                "[[members]]\nseat = {i}\nidentity = \"{}\"\n\
                 tls_key_sha256 = \"{}\"\nendpoint = \"127.0.0.1:740{i}\"\n\n",
                key_hex(i),
                hex::encode([i; 32])
            )
        })
        .collect();
    format!(
        "network = \"regtest\"\nmember = 2\n\n[store]\ndata_dir = \"state\"\n\n{PROVIDER}\n\
         [daemon]\nlisten = \"127.0.0.1:7502\"\nmetrics_listen = \"127.0.0.1:9402\"\n\
         cluster = \"vault\"\n\n[daemon.tls]\nca_cert = \"tls/ca.pem\"\n\
         cert = \"tls/signer.pem\"\nkey = \"tls/signer.key\"\n\n{members}\
         [[wallets]]\nid = \"treasury\"\nthreshold = 2\nmembers = [4, 2, 1]\n\
         successor = \"reserve\"\n\n[wallets.policy]\ndestinations = [\"{}\"]\n\n\
         [[wallets]]\nid = \"reserve\"\nthreshold = 3\nmembers = [1, 2, 3]\n",
        address(bitcoin::Network::Regtest)
    )
}

/// [`valid`] with `from` (which must occur) replaced by `to`.
fn edited(from: &str, to: &str) -> String {
    let text = valid();
    assert!(text.contains(from), "the fixture has no {from:?}");
    text.replacen(from, to, 1)
}

/// The field an [`ConfigError::Invalid`] names.
fn invalid_field(text: &str) -> String {
    match parse(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn the_dkg_session_ttl_is_read_from_the_signer_table_and_bounded() {
    let node = parse(&valid()).unwrap().node.unwrap();
    assert_eq!(
        node.signer_config().limits.dkg_session_ttl,
        Duration::from_secs(600)
    );
    let text = edited(
        "[[wallets]]",
        "[signer]\ndkg_session_ttl_secs = 45\n\n[[wallets]]",
    );
    let node = parse(&text).unwrap().node.unwrap();
    assert_eq!(
        node.signer_config().limits.dkg_session_ttl,
        Duration::from_secs(45)
    );
    for value in ["0", "86401"] {
        let text = edited(
            "[[wallets]]",
            &format!("[signer]\ndkg_session_ttl_secs = {value}\n\n[[wallets]]"),
        );
        assert_eq!(
            invalid_field(&text),
            "signer.dkg_session_ttl_secs",
            "{value}"
        );
    }
}

#[test]
fn the_signer_table_may_require_the_round1_kind_signature() {
    let node = parse(&valid()).unwrap().node.unwrap();
    assert!(!node.limits.require_round1_kind_signature);
    let text = edited(
        "[[wallets]]",
        "[signer]\nrequire_round1_kind_signature = true\n\n[[wallets]]",
    );
    let node = parse(&text).unwrap().node.unwrap();
    assert!(node.signer_config().limits.require_round1_kind_signature);
}

#[test]
fn a_full_member_file_loads_with_wallet_seats_identities_and_policy() {
    let config = parse(&valid()).unwrap();
    let node = config.node.unwrap();
    assert_eq!(node.network, Network::Regtest);
    assert_eq!(node.member, seat(2));
    assert_eq!(node.identity, key(2));
    assert_eq!(node.members.len(), 4);
    for i in 1..=4u8 {
        let m = &node.members[&seat(u16::from(i))];
        assert_eq!(m.identity, key(i));
        assert_eq!(m.endpoint, format!("127.0.0.1:740{i}").parse().unwrap());
    }
    let treasury = node.wallet(&WalletId::new("treasury").unwrap()).unwrap();
    assert_eq!(treasury.seats, vec![seat(4), seat(2), seat(1)]);
    // Wallet seat i is cluster seat members[i - 1], identity included.
    assert_eq!(treasury.cluster_seat(seat(1)), Some(seat(4)));
    assert_eq!(treasury.cluster_seat(seat(3)), Some(seat(1)));
    assert_eq!(treasury.cluster_seat(seat(4)), None);
    assert_eq!(treasury.config.roster, vec![key(4), key(2), key(1)]);
    assert_eq!(treasury.config.threshold, 2);
    assert_eq!(
        treasury.config.policy.destinations,
        vec![address(bitcoin::Network::Regtest)]
    );
    assert_eq!(
        treasury.config.successor,
        Some(WalletId::new("reserve").unwrap())
    );
    let reserve = node.wallet(&WalletId::new("reserve").unwrap()).unwrap();
    assert_eq!(reserve.config.roster, vec![key(1), key(2), key(3)]);
    assert_eq!(reserve.config.policy, PolicyConfig::default());
    let daemon = node.daemon.as_ref().unwrap();
    assert_eq!(daemon.cluster.as_str(), "vault");
    assert_eq!(
        daemon.tls.cert,
        PathBuf::from("/etc/thresig/tls/signer.pem")
    );
    assert!(node.signer_config().validate().is_ok());
}

#[test]
fn member_connections_below_the_roster_times_the_seat_cap_are_refused() {
    let limits = |total: u32| {
        edited(
            "key = \"tls/signer.key\"\n",
            &format!(
                "key = \"tls/signer.key\"\n\n[daemon.limits]\n\
                 max_member_connections = {total}\nmax_connections_per_seat = 2\n"
            ),
        )
    };
    // Four members at two connections each need eight places.
    assert_eq!(
        invalid_field(&limits(7)),
        "daemon.limits.max_member_connections"
    );
    let node = parse(&limits(8)).unwrap().node.unwrap();
    assert_eq!(node.daemon.unwrap().limits.max_member_connections, 8);
}

#[test]
fn a_member_missing_from_the_roster_is_refused() {
    assert_eq!(invalid_field(&edited("member = 2", "member = 5")), "member");
}

#[test]
fn a_duplicate_seat_is_refused() {
    let text = edited("seat = 3", "seat = 1");
    assert_eq!(invalid_field(&text), "members.seat");
}

#[test]
fn a_duplicate_identity_is_refused() {
    let text = edited(&key_hex(3), &key_hex(1));
    assert_eq!(invalid_field(&text), "members.identity");
}

#[test]
fn a_duplicate_endpoint_is_refused() {
    let text = edited("127.0.0.1:7403", "127.0.0.1:7401");
    assert_eq!(invalid_field(&text), "members.endpoint");
}

#[test]
fn a_wallet_naming_an_unknown_seat_is_refused() {
    let text = edited("members = [4, 2, 1]", "members = [5, 2, 1]");
    assert_eq!(invalid_field(&text), "wallets.members");
    let text = edited("members = [4, 2, 1]", "members = [0, 2, 1]");
    assert_eq!(invalid_field(&text), "wallets.members");
}

#[test]
fn a_wallet_naming_a_seat_twice_is_refused() {
    let text = edited("members = [4, 2, 1]", "members = [4, 2, 2]");
    assert_eq!(invalid_field(&text), "wallets.members");
}

/// `remove` names cluster seats; the engine gets them as wallet seats
/// (treasury's members are cluster seats 4, 2, 1: seat 4 is wallet seat 1).
#[test]
fn a_wallets_remove_list_becomes_wallet_seats() {
    let text = edited(
        "members = [4, 2, 1]\n",
        "members = [4, 2, 1]\nremove = [4]\n",
    );
    let config = parse(&text).unwrap();
    let node = config.node.unwrap();
    let treasury = node
        .wallet(&thresig_engine::WalletId::new("treasury".to_owned()).unwrap())
        .unwrap();
    assert_eq!(treasury.config.remove, vec![thresig_crypto::Seat::FIRST]);
}

/// A removal naming a seat that is not one of the wallet's members, or one
/// seat twice, is refused naming the field: a typo must not remove nobody.
#[test]
fn a_remove_list_naming_a_non_member_or_a_seat_twice_is_refused() {
    for remove in ["remove = [3]", "remove = [9]", "remove = [4, 4]"] {
        let text = edited(
            "members = [4, 2, 1]\n",
            &format!("members = [4, 2, 1]\n{remove}\n"),
        );
        assert_eq!(invalid_field(&text), "wallets.remove", "{remove}");
    }
}

/// Removing as many seats as the threshold is refused: those seats' old
/// shares together still sign for the unchanged key.
#[test]
fn a_remove_list_of_threshold_seats_is_refused() {
    let text = edited(
        "members = [4, 2, 1]\n",
        "members = [4, 2, 1]\nremove = [4, 1]\n",
    );
    assert_eq!(invalid_field(&text), "wallets.remove");
}

#[test]
fn a_wallet_without_this_member_is_refused() {
    let text = edited("members = [1, 2, 3]", "members = [1, 3, 4]");
    assert_eq!(invalid_field(&text), "wallets.members");
}

#[test]
fn a_threshold_out_of_range_is_refused() {
    for threshold in ["0", "1", "4", "65535"] {
        let text = edited("threshold = 2", &format!("threshold = {threshold}"));
        assert_eq!(
            invalid_field(&text),
            "wallets.threshold",
            "threshold {threshold}"
        );
    }
}

#[test]
fn a_policy_destination_of_another_network_is_refused() {
    let text = edited(
        &address(bitcoin::Network::Regtest),
        &address(bitcoin::Network::Bitcoin),
    );
    let e = parse(&text).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Invalid { field, problem, .. }
            if field == "wallets.policy" && problem.contains("destinations[0]")),
        "{e}"
    );
    // The refused address is not quoted.
    assert!(!e.to_string().contains("bc1"), "{e}");
}

/// Unknown fields are refused by the parser, so they are a
/// [`ConfigError::Parse`] naming the field and its line, not `Invalid`.
#[test]
fn an_unknown_field_in_members_is_refused_naming_it() {
    let text = edited("seat = 3\n", "seat = 3\nport = 7403\n");
    let line = text.lines().position(|l| l == "port = 7403").unwrap() + 1;
    let e = parse(&text).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Parse { line: l, message, .. }
            if *l == line && message.contains("unknown field `port`")),
        "{e:?}"
    );
}

#[test]
fn wallets_without_member_are_refused() {
    let text = edited("member = 2\n", "");
    assert_eq!(invalid_field(&text), "member");
}

/// The invariants [`NodeConfig`] promises.
fn assert_node_invariants(node: &NodeConfig) {
    assert_eq!(
        node.members.get(&node.member).unwrap().identity,
        node.identity
    );
    let identities: BTreeSet<_> = node.members.values().map(|m| m.identity).collect();
    let endpoints: BTreeSet<_> = node.members.values().map(|m| m.endpoint).collect();
    assert_eq!(identities.len(), node.members.len());
    assert_eq!(endpoints.len(), node.members.len());
    for w in &node.wallets {
        let distinct: BTreeSet<_> = w.seats.iter().collect();
        assert_eq!(distinct.len(), w.seats.len());
        assert!(w.seats.contains(&node.member));
        let roster: Vec<_> = w.seats.iter().map(|s| node.members[s].identity).collect();
        assert_eq!(roster, w.config.roster);
    }
    assert!(node.signer_config().validate().is_ok());
}

/// A mutation of the valid file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Remove the chars in `[start, start + len)`.
    Delete(proptest::sample::Index, usize),
    /// Insert text at a char position.
    Insert(proptest::sample::Index, String),
    /// Replace one line with a copy of another.
    CopyLine(proptest::sample::Index, proptest::sample::Index),
    /// Replace one ASCII digit with another.
    Digit(proptest::sample::Index, char),
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in mutations {
        match m {
            Mutation::Delete(at, len) if !chars.is_empty() => {
                let start = at.index(chars.len());
                let end = (start + len).min(chars.len());
                chars.drain(start..end);
            }
            Mutation::Insert(at, s) => {
                let at = at.index(chars.len() + 1);
                chars.splice(at..at, s.chars());
            }
            Mutation::CopyLine(to, from) => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let from = lines[from.index(lines.len())];
                    let to = to.index(lines.len());
                    lines[to] = from;
                }
                chars = lines.join("\n").chars().collect();
            }
            Mutation::Digit(at, d) => {
                let digits: Vec<usize> = (0..chars.len())
                    .filter(|i| chars[*i].is_ascii_digit())
                    .collect();
                if !digits.is_empty() {
                    chars[digits[at.index(digits.len())]] = *d;
                }
            }
            Mutation::Delete(..) => {}
        }
    }
    chars.into_iter().collect()
}

fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    let index = any::<proptest::sample::Index>;
    prop_oneof![
        (index(), 1..40usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (index(), ".{0,12}").prop_map(|(a, s)| Mutation::Insert(a, s)),
        (
            index(),
            prop::sample::select(vec![
                "\n",
                "[[members]]\n",
                "[[wallets]]\n",
                "\"",
                "=",
                "[",
                "]"
            ])
        )
            .prop_map(|(a, s)| Mutation::Insert(a, s.to_owned())),
        (index(), index()).prop_map(|(a, b)| Mutation::CopyLine(a, b)),
        (index(), prop::char::range('0', '9')).prop_map(|(a, d)| Mutation::Digit(a, d)),
    ]
}

/// Whatever the outcome, it is a typed error that displays, or a
/// configuration that keeps every invariant.
fn check(text: &str) {
    match parse(text) {
        Ok(config) => {
            if let Some(node) = &config.node {
                assert_node_invariants(node);
            }
        }
        Err(e) => {
            assert_eq!(e.recovery(), Recovery::Terminal, "{e:?}");
            assert!(e.to_string().contains("signer.toml"), "{e}");
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        check(&text);
    }

    #[test]
    fn mutations_of_a_valid_file_give_a_typed_error_or_a_valid_config(
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        check(&mutate(&valid(), &mutations));
    }
}

#[test]
fn a_script_tree_root_is_read_as_the_wallets_tree_and_must_be_32_bytes_hex() {
    let reserve = |text: &str| {
        let node = parse(text).unwrap().node.unwrap();
        node.wallet(&WalletId::new("reserve").unwrap())
            .unwrap()
            .config
            .script_tree
    };
    assert_eq!(reserve(&valid()), thresig_crypto::ScriptTree::KeyPathOnly);
    let root = "members = [1, 2, 3]\n";
    let with = |value: &str| edited(root, &format!("{root}script_tree_root = \"{value}\"\n"));
    assert_eq!(
        reserve(&with(&"ab".repeat(32))),
        thresig_crypto::ScriptTree::Root(thresig_crypto::MerkleRoot([0xab; 32]))
    );
    for bad in ["ab", &"zz".repeat(32), &"ab".repeat(33)] {
        assert_eq!(
            invalid_field(&with(bad)),
            "wallets.script_tree_root",
            "{bad}"
        );
    }
}
