//! Rule-set swaps under traffic: one thread runs packets through the
//! loaded program without pause (`BPF_PROG_TEST_RUN`) while another swaps
//! two rule sets back and forth, as reloads do. Every verdict must be the
//! old set's or the new set's; a packet judged by a mix (the new depth mask
//! or filter with the old map, or the reverse) would skip a lookup and pass
//! a name both sets block.
//!
//! The sets are built so that each verdict says which set gave it: set A
//! answers NXDOMAIN for `a.b.example` (3 labels) and below, set B answers
//! REFUSED for `c.a.b.example` (4 labels) and below and nothing at 3.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use filter_user::{
    dataplane::{Filter, LoadOptions},
    policy::blocklist::{self, ListKind},
    policy::rules::{self, RuleSet},
};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use namewall_tests::{dnswire, packet::Spec};

const SET_A: &str = "||a.b.example^$action=nxdomain\n||ok.a.b.example^$action=nxdomain\n";
const SET_B: &str = "||c.a.b.example^$action=refused\n";

fn set(text: &str, seed: u64) -> RuleSet {
    let mut rules = RuleSet::new(seed);
    let parsed = blocklist::parse_bytes(text.as_bytes(), "test", ListKind::Block);
    assert!(parsed.errors.is_empty());
    assert!(rules.extend(&parsed.entries).is_empty());
    rules
}

/// What a run came to: "nxdomain", "refused" or "pass".
fn verdict(action: u32, output: &[u8]) -> &'static str {
    match action {
        2 => "pass",
        3 => match dnswire::parse_answer(output).map(|a| a.message.response_code()) {
            Ok(ResponseCode::NXDomain) => "nxdomain",
            Ok(ResponseCode::Refused) => "refused",
            other => panic!("an answer with {other:?}"),
        },
        a => panic!("XDP action {a}"),
    }
}

/// How the test moves between the two sets.
#[derive(Clone, Copy, Debug)]
enum Switch {
    /// A new map built and swapped in (a reload with many changes).
    Install,
    /// Changes staged in the running map's other generation, then one flip
    /// (a reload with few changes).
    Transition,
}

#[test]
fn every_verdict_is_the_old_sets_or_the_new_sets() {
    swaps_under_traffic(Switch::Install);
}

#[test]
fn every_verdict_is_the_old_sets_or_the_new_sets_through_generations() {
    swaps_under_traffic(Switch::Transition);
}

fn swaps_under_traffic(how: Switch) {
    let hash_seed = rand::random();
    let (a, b) = (set(SET_A, hash_seed), set(SET_B, hash_seed));
    let (arrays_a, arrays_b) = (a.to_arrays(), b.to_arrays());
    let mut filter = Filter::load(LoadOptions::default()).expect("load");
    filter.install(&a).expect("install A");
    let runner = filter.runner().expect("a runner");

    // (name, verdicts allowed): A's and B's.
    let cases: Vec<(&str, [&str; 2])> = vec![
        ("q.c.a.b.example", ["nxdomain", "refused"]),
        ("c.a.b.example", ["nxdomain", "refused"]),
        ("w.a.b.example", ["nxdomain", "pass"]),
        ("x.ok.a.b.example", ["nxdomain", "pass"]),
        ("other.example", ["pass", "pass"]),
    ];
    let packets: Vec<Vec<u8>> =
        cases.iter().map(|(n, _)| Spec::udp4().build(&dnswire::query(n, RecordType::A))).collect();
    let done = AtomicBool::new(false);
    let swaps = 60;
    let seen = std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            let mut seen: BTreeMap<(&str, &str), u64> = BTreeMap::new();
            let start = Instant::now();
            let mut runs = 0u64;
            while !done.load(Ordering::Relaxed) && runs < 2_000_000 && start.elapsed() < Duration::from_mins(1) {
                for ((name, _), p) in cases.iter().zip(&packets) {
                    let r = runner.run(p).expect("test run");
                    *seen.entry((name, verdict(r.action, &r.output))).or_default() += 1;
                    runs += 1;
                }
            }
            seen
        });
        for i in 0..swaps {
            let ((to_set, to), from) =
                if i % 2 == 0 { ((&b, &arrays_b), &arrays_a) } else { ((&a, &arrays_a), &arrays_b) };
            match how {
                Switch::Install => filter.install(to_set).expect("swap"),
                Switch::Transition => {
                    let changes = rules::diff(&from.0, &from.1, &to.0, &to.1);
                    filter.transition(&changes).expect("transition");
                    filter.narrow(to.0.iter().copied().zip(to.1.iter().map(|r| r.labels))).expect("narrow");
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        done.store(true, Ordering::Relaxed);
        traffic.join().expect("the traffic thread")
    });
    let mut wrong = Vec::new();
    for ((name, v), n) in &seen {
        let allowed = cases.iter().find(|(c, _)| c == name).expect("a case").1;
        if !allowed.contains(v) {
            wrong.push(format!("{name}: {v} x{n}, expected one of {allowed:?}"));
        }
    }
    assert!(wrong.is_empty(), "{how:?}: verdicts of neither set:\n{}\nall: {seen:?}", wrong.join("\n"));
    // Both sets were seen by the traffic, or the test proved nothing.
    for v in ["nxdomain", "refused"] {
        assert!(seen.get(&("q.c.a.b.example", v)).is_some_and(|n| *n > 0), "{v} never seen: {seen:?}");
    }
}

/// Hit counts survive switches: a rule whose name stays keeps its count
/// through a new set swapped in and through a generation transition.
#[test]
fn hit_counts_survive_switches() {
    let seed = rand::random();
    let (a, b) = (set(SET_A, seed), set("||a.b.example^$action=nxdomain\n||z.example^\n", seed));
    let key = filter_user::policy::names::Domain::parse("a.b.example").expect("a name").key(seed);
    let mut filter = Filter::load(LoadOptions::default()).expect("load");
    filter.install(&a).expect("install A");
    let query = Spec::udp4().build(&dnswire::query("w.a.b.example", RecordType::A));
    for _ in 0..3 {
        let r = filter.run(&query).expect("run");
        assert_eq!(verdict(r.action, &r.output), "nxdomain");
    }
    assert_eq!(filter.active_rule(key).map(|r| r.hits), Some(3));
    filter.install(&b).expect("install B");
    assert_eq!(filter.active_rule(key).map(|r| r.hits), Some(3), "kept by a new set");
    filter.run(&query).expect("run");
    let (from, to) = (b.to_arrays(), a.to_arrays());
    filter.transition(&rules::diff(&from.0, &from.1, &to.0, &to.1)).expect("transition");
    assert_eq!(filter.active_rule(key).map(|r| r.hits), Some(4), "kept through a transition");
}

/// The active set reads back whole and exactly, across the read's batches
/// (64k entries each).
#[test]
fn the_active_set_reads_back_whole() {
    let n = 150_000u64;
    let keys: Vec<u64> = (0..n).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555).collect();
    let values: Vec<maps::Rule> =
        (0..n).map(|i| maps::Rule { flags: 3, labels: (i % 5 + 1) as u8, ..maps::Rule::default() }).collect();
    let mut filter = Filter::load(LoadOptions { expected_rules: n as usize, ..LoadOptions::default() }).expect("load");
    filter.install_arrays(7, &keys, &values).expect("install");
    let mut read = filter.active_rules().expect("read the set");
    read.sort_by_key(|(k, _)| *k);
    let mut want: Vec<(u64, maps::Rule)> = keys.into_iter().zip(values.into_iter().map(maps::Rule::both)).collect();
    want.sort_by_key(|(k, _)| *k);
    assert_eq!(read.len(), want.len());
    assert!(read == want, "the set read back differs from the one installed");
}
