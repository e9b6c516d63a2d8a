use super::*;

#[test]
fn a_full_key_drops_its_own_oldest_and_a_full_set_the_oldest_of_the_key_holding_most() {
    let mut set = OldestFirst::new(4, 2);
    assert_eq!(set.insert('a', 1, "a1"), None);
    assert_eq!(set.insert('b', 2, "b1"), None);
    assert_eq!(set.insert('a', 3, "a2"), None);
    // 'a' is full: its own oldest goes, 'b' keeps its entry.
    assert_eq!(set.insert('a', 4, "a3"), Some((Eviction::KeyFull, "a1")));
    assert_eq!(set.insert('c', 5, "c1"), None);
    assert_eq!(set.len(), 4);
    // The set is full: the key holding the most ('a') loses its oldest,
    // though 'b' holds the oldest entry of all.
    assert_eq!(set.insert('d', 6, "d1"), Some((Eviction::SetFull, "a2")));
    // Every key holds one: the oldest entry of all goes.
    assert_eq!(set.insert('e', 7, "e1"), Some((Eviction::SetFull, "b1")));
    assert_eq!(set.remove(&2), None);
    assert_eq!(set.remove(&5), Some("c1"));
    assert_eq!(set.insert('f', 8, "f1"), None);
    assert_eq!(set.len(), 4);
}

#[test]
fn a_key_cycling_its_entries_in_a_full_set_drops_only_its_own() {
    // Seats 2 and 3 hold two connections each, seat 1 one; seat 1 keeps
    // opening new ones. Holding as many as the others once its new one
    // is in, seat 1 pays for its own.
    let mut set = OldestFirst::new(5, 2);
    for (seat, id) in [(2u16, 1u64), (2, 2), (3, 3), (3, 4), (1, 5)] {
        assert_eq!(set.insert(seat, id, id), None);
    }
    let mut oldest = 5;
    for id in 6..20 {
        assert_eq!(set.insert(1, id, id), Some((Eviction::SetFull, oldest)));
        oldest = id;
    }
    for id in 1..=4 {
        assert_eq!(set.remove(&id), Some(id));
    }
}

#[test]
fn a_removed_entry_frees_its_keys_room() {
    let mut set = OldestFirst::new(8, 1);
    assert_eq!(set.insert('a', 1, ()), None);
    assert_eq!(set.remove(&1), Some(()));
    assert_eq!(set.insert('a', 2, ()), None);
    assert_eq!(set.insert('a', 3, ()), Some((Eviction::KeyFull, ())));
    assert_eq!(set.len(), 1);
}

/// A listener whose accepts fail with `errors`, in order, then succeed.
struct Failing(std::sync::Mutex<Vec<io::ErrorKind>>);

impl Listen for Failing {
    type Io = tokio::io::DuplexStream;
    type Addr = ();

    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, ())>> + Send {
        let next = self.0.lock().unwrap().pop();
        async move {
            match next {
                Some(kind) => Err(io::Error::from(kind)),
                None => Ok((tokio::io::duplex(8).0, ())),
            }
        }
    }
}

#[tokio::test]
async fn a_connection_error_does_not_pause_the_accept_loop() {
    let mut warnings = WarnLimiter::new();
    let listener = Failing(std::sync::Mutex::new(vec![
        io::ErrorKind::ConnectionAborted,
    ]));
    // Real time: a pause takes the full ACCEPT_RETRY_PAUSE, and the
    // two accepts without one take microseconds.
    let start = std::time::Instant::now();
    assert!(
        accept_or_pause(&listener, &mut warnings, "test")
            .await
            .is_none()
    );
    assert!(
        accept_or_pause(&listener, &mut warnings, "test")
            .await
            .is_some()
    );
    assert!(
        start.elapsed() < ACCEPT_RETRY_PAUSE,
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn resource_errors_are_the_ones_that_free_up_only_with_time() {
    for errno in [
        nix::libc::EMFILE,
        nix::libc::ENFILE,
        nix::libc::ENOBUFS,
        nix::libc::ENOMEM,
    ] {
        assert!(
            is_resource_error(&io::Error::from_raw_os_error(errno)),
            "{errno}"
        );
    }
    for errno in [
        nix::libc::ECONNABORTED,
        nix::libc::ECONNRESET,
        nix::libc::EPROTO,
        nix::libc::EPERM,
    ] {
        assert!(
            !is_resource_error(&io::Error::from_raw_os_error(errno)),
            "{errno}"
        );
    }
}

#[test]
fn warnings_are_written_once_per_interval_with_the_count_left_out() {
    let mut warnings = WarnLimiter::new();
    let start = Instant::now();
    assert_eq!(warnings.allow(start), Some(0));
    for i in 1..=5 {
        assert_eq!(warnings.allow(start + Duration::from_millis(i)), None);
    }
    assert_eq!(warnings.allow(start + WARNING_INTERVAL), Some(5));
    assert_eq!(warnings.allow(start + WARNING_INTERVAL), None);
}

#[test]
fn the_soft_limit_goes_to_the_hard_one_unless_the_hard_one_is_too_low() {
    assert_eq!(soft_limit_to_set(1024, 4096, 1500).unwrap(), Some(4096));
    assert_eq!(soft_limit_to_set(4096, 4096, 1500).unwrap(), None);
    assert_eq!(
        soft_limit_to_set(1024, RLIM_INFINITY, 1500).unwrap(),
        Some(NR_OPEN)
    );
    let err = soft_limit_to_set(1024, 1024, 1500).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OpenFileLimit {
                needed: 1500,
                hard: 1024
            }
        ),
        "{err}"
    );
}

#[test]
fn the_default_limits_fit_a_service_managers_default_soft_limit() {
    let limits = Limits::from_section(crate::LimitsSection::default()).unwrap();
    let needed = descriptors_needed(&limits);
    assert!(needed <= 1024, "{needed}");
}
