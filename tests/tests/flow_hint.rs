//! The flow hint (`FLOW_HINT`, see `maps::layout::flow`) after an LRU
//! eviction: the `NEW_FLOWS` LRU pushes entries out without telling the
//! kernel program, so their hint counts stay behind; the daemon's sweep
//! takes them back once they are seen in excess at two sweeps in a row, and
//! never takes a count an entry still holds.

use aya::maps::{Array, MapData};
use filter_user::dataplane::LoadOptions;
use maps::{Counter, layout::names};
use namewall_tests::{harness::Harness, tls::Flow};

/// The sum of every hint counter.
fn hint_total(h: &Harness) -> u64 {
    let map = h.filter.ebpf().map(names::FLOW_HINT).expect("FLOW_HINT");
    let hint: Array<&MapData, u64> = Array::try_from(map).expect("an array");
    (0..hint.len()).map(|i| hint.get(&i, 0).expect("hint word")).sum()
}

#[test]
fn counts_the_lru_leaves_behind_are_taken_back() {
    let opts = LoadOptions { max_flows: 16, ..LoadOptions::default() };
    let mut h = Harness::with_options(
        "blocked.example\n",
        "",
        opts,
        maps::Action::Nxdomain,
        false,
        filter_user::dataplane::TlsPolicy::default(),
    );
    let flow =
        |i: u8| Flow::v4().sport(20_000 + u16::from(i)).with_client_ip(std::net::Ipv4Addr::new(10, 9, 0, i).into());
    for i in 0..48 {
        let o = h.run(&flow(i).syn());
        assert_eq!(o.outcome, Counter::TcpSyn);
    }
    // The kernel's LRU frees entries in batches: it holds at most its size.
    let held = h.filter.new_flow_count().expect("new flows");
    assert!((8..=16).contains(&held), "the LRU holds {held} of 16");
    assert_eq!(hint_total(&h), 48, "each SYN counted; the evicted entries left their counts");
    // The first sweep only notes the excess; the second takes it back.
    assert_eq!(h.filter.sweep_flows().expect("sweep"), 0);
    assert_eq!(hint_total(&h), 48, "nothing taken at the first sight of an excess");
    assert_eq!(h.filter.sweep_flows().expect("sweep"), 0);
    assert_eq!(hint_total(&h) as usize, held, "the excess taken back, the live entries' counts kept");
    // The live entries still work: the newest flow's data must start at
    // its first byte (its entry was found through the hint).
    let newest = flow(47);
    let o = h.run(&newest.segment(100, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"));
    assert_eq!(o.outcome, Counter::TlsOutOfOrder, "a flow still in the LRU is still held to its stream");
}
