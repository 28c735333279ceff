//! The per-address table on a fake clock: each limit, IPv6 keying, the bound on its size, and
//! the log gate.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn limits(
    max_connections: Option<u32>,
    connect: Option<Rate>,
    max_addresses: usize,
) -> AddressLimits {
    AddressLimits {
        max_connections,
        connect,
        tls: Rate::new(2, 2),
        max_addresses,
    }
}

#[test]
fn the_n_plus_first_connection_from_one_address_is_refused_and_others_still_served() {
    let now = Instant::now();
    let mut table = AddressTable::new(limits(Some(3), None, 100));
    for _ in 0..3 {
        assert_eq!(table.admit(ip("198.51.100.1"), now), Ok(()));
    }
    assert_eq!(
        table.admit(ip("198.51.100.1"), now),
        Err(Refusal::Connections)
    );
    assert_eq!(table.admit(ip("198.51.100.2"), now), Ok(()));
    table.release(ip("198.51.100.1"));
    assert_eq!(table.admit(ip("198.51.100.1"), now), Ok(()));
}

#[test]
fn new_connections_follow_the_token_bucket() {
    let start = Instant::now();
    let rate = Rate::new(10, 5);
    let mut table = AddressTable::new(limits(None, rate, 100));
    let a = ip("203.0.113.5");
    for _ in 0..5 {
        assert_eq!(table.admit(a, start), Ok(()), "the burst");
    }
    assert_eq!(table.admit(a, start), Err(Refusal::ConnectRate));
    assert_eq!(
        table.admit(ip("203.0.113.6"), start),
        Ok(()),
        "another address"
    );
    // 10 a second: one token per 100 ms.
    assert_eq!(
        table.admit(a, start + Duration::from_millis(50)),
        Err(Refusal::ConnectRate)
    );
    assert_eq!(table.admit(a, start + Duration::from_millis(100)), Ok(()));
    assert_eq!(
        table.admit(a, start + Duration::from_millis(100)),
        Err(Refusal::ConnectRate)
    );
    // A long pause refills only up to the burst.
    let later = start + Duration::from_secs(60);
    for _ in 0..5 {
        assert_eq!(table.admit(a, later), Ok(()));
    }
    assert_eq!(table.admit(a, later), Err(Refusal::ConnectRate));
}

#[test]
fn tls_handshakes_have_their_own_bucket() {
    let now = Instant::now();
    let mut table = AddressTable::new(limits(None, None, 100));
    let a = ip("192.0.2.1");
    assert_eq!(table.admit(a, now), Ok(()));
    assert_eq!(table.admit_tls(a, now), Ok(()));
    assert_eq!(table.admit_tls(a, now), Ok(()));
    assert_eq!(table.admit_tls(a, now), Err(Refusal::TlsRate));
    assert_eq!(table.admit(a, now), Ok(()), "plain connections unaffected");
    assert_eq!(table.admit_tls(a, now + Duration::from_millis(500)), Ok(()));
}

#[test]
fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
    let now = Instant::now();
    let mut table = AddressTable::new(limits(Some(1), None, 100));
    assert_eq!(table.admit(ip("2001:db8:1:2::1"), now), Ok(()));
    assert_eq!(
        table.admit(ip("2001:db8:1:2:ffff::9"), now),
        Err(Refusal::Connections)
    );
    assert_eq!(table.admit(ip("2001:db8:1:3::1"), now), Ok(()));
    assert_eq!(table.admit(ip("10.0.0.1"), now), Ok(()));
    assert_eq!(
        table.admit(ip("::ffff:10.0.0.1"), now),
        Err(Refusal::Connections)
    );
}

#[test]
fn a_full_table_forgets_idle_addresses_and_refuses_only_when_all_hold_connections() {
    let start = Instant::now();
    let rate = Rate::new(1, 1);
    let mut table = AddressTable::new(limits(None, rate, 16));
    // 16 addresses that connected once and left: tracked (their buckets are not full yet).
    for i in 0..16 {
        let a = ip(&format!("10.0.0.{i}"));
        table.admit(a, start).expect("room");
        table.release(a);
    }
    assert_eq!(table.len(), 16);
    // A new address makes room by forgetting addresses without connections.
    assert_eq!(table.admit(ip("10.0.1.1"), start), Ok(()));
    assert!(table.len() <= 16);
    // Fill it with addresses that hold connections.
    let later = start + Duration::from_secs(1);
    let mut i = 0;
    while table.len() < 16 {
        table
            .admit(ip(&format!("10.0.2.{i}")), later)
            .expect("room");
        i += 1;
    }
    assert_eq!(
        table.admit(ip("10.0.3.1"), later + SWEEP_EVERY),
        Err(Refusal::TableFull)
    );
    // A tracked address is still served, and a freed one makes room again.
    assert_eq!(
        table.admit(ip("10.0.1.1"), later + Duration::from_secs(2)),
        Ok(())
    );
    table.release(ip("10.0.2.0"));
    assert_eq!(
        table.admit(ip("10.0.3.1"), later + Duration::from_secs(3)),
        Ok(())
    );
}

#[test]
fn the_log_gate_writes_one_line_a_second_and_counts_the_rest() {
    let start = Instant::now();
    let mut gate = LogGate::default();
    assert_eq!(gate.pass(start), Some(0));
    for ms in 1..1000 {
        assert_eq!(gate.pass(start + Duration::from_millis(ms)), None);
    }
    assert_eq!(gate.pass(start + Duration::from_secs(1)), Some(999));
    assert_eq!(gate.pass(start + Duration::from_secs(3)), Some(0));
}

proptest! {
    /// Whatever the addresses and timing, the table never tracks more than its bound and
    /// never admits past the connection limit.
    #[test]
    fn the_table_stays_bounded(
        events in proptest::collection::vec((0u32..64, 0u64..50, any::<bool>()), 1..400),
    ) {
        let mut now = Instant::now();
        let mut table = AddressTable::new(limits(Some(2), Rate::new(5, 3), 16));
        let mut held: Vec<IpAddr> = Vec::new();
        for (host, advance_ms, close) in events {
            now += Duration::from_millis(advance_ms);
            let a = IpAddr::from([10, 0, 0, host as u8]);
            if close {
                if let Some(pos) = held.iter().position(|h| *h == a) {
                    table.release(held.swap_remove(pos));
                }
            } else if table.admit(a, now).is_ok() {
                held.push(a);
            }
            prop_assert!(table.len() <= 16);
            prop_assert!(table.open(a) <= 2);
            prop_assert_eq!(table.open(a) as usize, held.iter().filter(|h| **h == a).count());
        }
    }
}

#[test]
fn an_entry_is_small_enough_for_the_default_cap() {
    // What one tracked address costs in the hash table (slot plus control byte): at the
    // default cap (16384, up to 32768 slots) a core's table stays under 3 MiB whatever an
    // attacker does.
    let per_entry = std::mem::size_of::<(IpAddr, Entry)>() + 1;
    assert!(per_entry <= 96, "{per_entry} bytes per entry");
}
