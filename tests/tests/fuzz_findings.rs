//! The fuzz run's fixed points, through `BPF_PROG_TEST_RUN`: the committed
//! seed corpus judged alike by the kernel and the reference, and the saved
//! findings (fixed) kept as regressions.

use std::path::Path;

use maps::counters::CounterKind;
use namewall_tests::{
    fuzz::{Fuzzer, KNOWN_BYPASSES, corpus, reference},
    harness::Harness,
};

fn fuzzer() -> Fuzzer {
    let (block, allow) = reference::list_texts();
    Fuzzer::new(Harness::new(&block, &allow).filter).expect("fuzzer")
}

fn dir(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn seed_corpus_is_judged_alike() {
    let seeds = corpus::read_pcap(&dir("fuzz-corpus/seeds.pcap")).expect("seed corpus");
    let mut f = fuzzer();
    let mut decisions = std::collections::BTreeSet::new();
    for (i, frame) in seeds.iter().enumerate() {
        let problems = f.check(frame).expect("test run");
        assert!(problems.is_empty(), "seed {i}: {problems:?}");
        if let reference::Judgement::Judged(j) = reference::judge(frame) {
            let proto = matches!(j.asked, reference::Asked::Dns(_));
            decisions.insert((proto, format!("{:?}", j.decision)));
        }
    }
    // Every seed was run, most were compared, and the compared ones cover
    // each decision for DNS and for TLS.
    assert_eq!(f.tally.packets, seeds.len() as u64);
    assert!(f.tally.compared * 4 > seeds.len() as u64 * 3, "{:?}", f.tally);
    assert_eq!(decisions.len(), 6, "{decisions:?}");
}

/// The saved findings, fixed: no longer a way past the filter. The fuzz
/// run finds nothing wrong with them, and the blocked name they carry is
/// blocked (or, behind more headers than the parser follows, dropped as
/// not judged).
#[test]
fn findings_stay_fixed() {
    let mut files: Vec<_> = std::fs::read_dir(dir("fuzz-findings"))
        .expect("tests/fuzz-findings")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut f = fuzzer();
    let (block, allow) = reference::list_texts();
    let dropping = Harness::with(&block, &allow, maps::Action::Nxdomain, true);
    for file in files {
        for frame in corpus::read_pcap(&file).expect("finding") {
            let problems = f.check(&frame).expect("test run");
            assert!(problems.is_empty(), "{}: {problems:?} (known: {KNOWN_BYPASSES:?})", file.display());
            // The blocked name no longer passes: judged (the parser follows
            // up to eight extension headers now) and blocked, or not judged
            // and dropped.
            let o = dropping.run(&frame);
            let kind = o.outcome.kind();
            assert!(
                o.action != 2 && matches!(kind, CounterKind::Verdict | CounterKind::Unjudged),
                "{}: {} (action {}) under --unjudged drop",
                file.display(),
                o.outcome.name(),
                o.action
            );
        }
    }
}
