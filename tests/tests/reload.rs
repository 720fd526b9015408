//! Reloads that read only the lines that changed. Two checks over many
//! rounds of random edits to several lists (inserts, removals,
//! replacements, moves, names in several lists, malformed lines, a
//! byte-order mark coming and going): the policy a reload by lines gives
//! is exactly the one loading the lists whole gives (rules, actions,
//! origins, malformed lines, figures); and after each reload of a running
//! daemon the loaded program's rule set is exactly the lists' rules with
//! the operator's on top, in both rule generations, every key in the
//! filter and every depth in the mask.

use std::{collections::BTreeMap, path::PathBuf};

use aya::maps::Array;
use filter_user::{
    control::{Reply, Request},
    daemon::{Daemon, RunInfo, effective_arrays, events::EventLog},
    dataplane::{Filter, LoadOptions},
    policy::{Policy, PolicyError, PolicySource, Reload},
};
use maps::Rule;
use namewall_tests::edits::{edit, insert_block, random_line, write};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Everything a policy says, in a form that compares.
fn summary(p: &Policy) -> Vec<String> {
    let mut out: Vec<String> = p
        .rules
        .iter()
        .map(|(k, r)| {
            let (_, own) = p.rules.contributions(k).expect("a rule's entries");
            let own: Vec<String> = own.iter().map(|c| format!("{:?}@{}", c.rule, c.origin)).collect();
            format!("{k:x} {} {:?} {} [{}]", r.domain, r.rule, r.origin, own.join(" "))
        })
        .collect();
    out.sort();
    out.extend(p.skipped.iter().map(ToString::to_string));
    out.extend(p.collisions.iter().map(ToString::to_string));
    out.push(format!("lines {}", p.lines));
    out.extend(p.lists.iter().map(|l| format!("{l:?}")));
    out
}

/// Two blocklists and an allowlist in `dir`.
fn three_lists(dir: &std::path::Path) -> ([PathBuf; 3], PolicySource) {
    let paths = [dir.join("a.txt"), dir.join("b.txt"), dir.join("allow.txt")];
    let source =
        PolicySource { blocklists: paths[..2].to_vec(), allowlists: paths[2..].to_vec(), ..PolicySource::default() };
    (paths, source)
}

#[test]
fn line_reloads_match_whole_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (paths, source) = three_lists(dir.path());
    let mut rng = StdRng::seed_from_u64(11);
    let (mut by_lines, mut whole) = (0, 0);
    for run in 0..60 {
        // Mostly short lists of a few names (names meet often); every
        // tenth run long lists that get blocks of new lines inserted.
        let (long, names) = if run % 10 == 9 { (1500, 400) } else { (25, 30) };
        let mut lists: Vec<Vec<String>> =
            (0..3).map(|_| (0..rng.random_range(0..long)).map(|_| random_line(&mut rng, names)).collect()).collect();
        for (p, l) in paths.iter().zip(&lists) {
            write(p, l, false, true);
        }
        let seed = rng.random();
        let mut policy = source.load(seed).expect("load");
        for round in 0..15 {
            for (i, (p, l)) in paths.iter().zip(&mut lists).enumerate() {
                if rng.random_bool(0.6) {
                    edit(&mut rng, l, if long > 25 { 40 } else { 5 }, names);
                }
                if long > 25 && rng.random_bool(0.3) {
                    let n = rng.random_range(257..400);
                    insert_block(&mut rng, l, n, names);
                }
                write(p, l, i == 0 && rng.random_bool(0.2), rng.random_bool(0.9));
            }
            match source.reload(&policy).expect("reload") {
                Reload::Lines(changes) => {
                    by_lines += 1;
                    policy.apply(changes);
                }
                Reload::Whole(p) => {
                    whole += 1;
                    policy = p;
                }
            }
            let fresh = source.load(seed).expect("load");
            assert_eq!(summary(&policy), summary(&fresh), "run {run} round {round}");
        }
    }
    assert!(by_lines > 800, "{by_lines} reloads by lines, {whole} whole");
}

/// A byte-order mark is ignored only at the start of line 1: a line that
/// starts with one reads anew when it moves to or from there.
#[test]
fn a_byte_order_mark_line_reads_anew_when_it_moves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hosts");
    let source = PolicySource { blocklists: vec![path.clone()], ..PolicySource::default() };
    let cases = [
        ("\u{feff}0.0.0.0 ads.example\n", "# generated\n\u{feff}0.0.0.0 ads.example\n"),
        ("x.example\n\u{feff}# title\n", "\u{feff}# title\n"),
    ];
    for (before, after) in cases {
        std::fs::write(&path, before).expect("write");
        let mut policy = source.load(3).expect("load");
        std::fs::write(&path, after).expect("write");
        match source.reload(&policy).expect("reload") {
            Reload::Lines(changes) => policy.apply(changes),
            Reload::Whole(p) => policy = p,
        }
        assert_eq!(summary(&policy), summary(&source.load(3).expect("load")), "{before:?} to {after:?}");
    }
}

#[test]
fn strict_reloads_refuse_new_malformed_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("block.txt");
    std::fs::write(&path, "a.example\nb.example\n").expect("write");
    let source = PolicySource { blocklists: vec![path.clone()], strict: true, ..PolicySource::default() };
    let policy = source.load(1).expect("load");
    std::fs::write(&path, "a.example\nbad..example\nb.example\n").expect("write");
    match source.reload(&policy) {
        Err(PolicyError::Malformed(e)) => assert_eq!((e.len(), e[0].origin.line), (1, 2)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn another_set_of_lists_is_read_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "a.example\n").expect("write");
    std::fs::write(&b, "b.example\n").expect("write");
    let one = PolicySource { blocklists: vec![a.clone()], ..PolicySource::default() };
    let two = PolicySource { blocklists: vec![a, b], ..PolicySource::default() };
    let policy = one.load(1).expect("load");
    assert!(matches!(two.reload(&policy).expect("reload"), Reload::Whole(p) if p.rules.len() == 2));
    assert!(matches!(one.reload(&policy).expect("reload"), Reload::Lines(c) if c.updates().is_empty()));
}

/// A rule as the test compares it: generation 0, no hit count.
fn bare(r: Rule) -> Rule {
    Rule { hits: 0, action_next: 0, flags: r.flags & 0x0f, ..r }
}

/// The loaded program holds exactly what the lists (loaded whole now) and
/// the operator's rules say: the same keys with the same rules, both
/// generations equal, every key's filter bit set and its depth in the mask.
fn check_kernel(daemon: &Daemon, source: &PolicySource, seed: u64, what: &str) {
    let fresh = source.load(seed).expect("load");
    let (keys, values) = effective_arrays(&fresh.rules, daemon.operator_rules());
    let want: BTreeMap<u64, Rule> = keys.iter().copied().zip(values.into_iter().map(bare)).collect();
    let f = &daemon.filter;
    let settings = f.settings();
    let mut have = BTreeMap::new();
    for (key, r) in f.active_rules().expect("walk the rule set") {
        assert_eq!(bare(r.in_generation(0)), bare(r.in_generation(1)), "{what}: generations of {key:x} differ");
        have.insert(key, bare(r.in_generation(settings.generation)));
    }
    if have != want {
        let extra: Vec<_> = have.iter().filter(|(k, v)| want.get(k) != Some(v)).take(5).collect();
        let missing: Vec<_> = want.iter().filter(|(k, v)| have.get(k) != Some(v)).take(5).collect();
        panic!(
            "{what}: kernel rules differ ({} vs {}): kernel has {extra:?}, lists say {missing:?}",
            have.len(),
            want.len()
        );
    }
    let map = f.ebpf().map(maps::layout::names::FILTER).expect("the filter map");
    let words: Array<_, u64> = Array::try_from(map).expect("an array");
    for (key, rule) in &want {
        let (w, bit) = maps::layout::filter::position(*key, settings.filter_mask);
        assert_ne!(words.get(&w, 0).expect("a filter word") & bit, 0, "{what}: {key:x} not in the filter");
        assert!(settings.has_depth(rule.labels as usize), "{what}: depth {} not in the mask", rule.labels);
    }
}

#[test]
fn daemon_reloads_leave_the_kernel_as_a_whole_load_would() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (paths, source) = three_lists(dir.path());
    let mut rng = StdRng::seed_from_u64(5);
    let mut lists: Vec<Vec<String>> =
        (0..3).map(|_| (0..3000).map(|_| random_line(&mut rng, 2000)).collect()).collect();
    for (p, l) in paths.iter().zip(&lists) {
        write(p, l, false, true);
    }
    let seed = rng.random();
    let policy = source.load(seed).expect("load");
    let opts = LoadOptions { expected_rules: policy.rules.len(), ..LoadOptions::default() };
    let filter = Filter::load(opts).expect("load the program");
    let log = EventLog::open(None, 1 << 20).expect("event log");
    let mut daemon =
        Daemon::start(filter, source.clone(), policy, dir.path().join("rules.json"), true, RunInfo::default(), log)
            .expect("start");
    check_kernel(&daemon, &source, seed, "start");
    let (mut by_lines, mut whole) = (0, 0);
    for round in 0..40 {
        // The operator's rules change now and then, on names the lists
        // have and names they do not.
        if round % 3 == 0 {
            let names: Vec<String> =
                (0..rng.random_range(1..20)).map(|_| format!("n{}.example", rng.random_range(0..2500))).collect();
            let req = match rng.random_range(0..3) {
                0 => Request::Block { domains: names, action: Some("refused".into()) },
                1 => Request::Allow { domains: names },
                _ => Request::Unblock { domains: names },
            };
            let resp = daemon.handle(req);
            assert!(matches!(resp.reply, Some(Reply::Changed(_))), "round {round}: operator change: {:?}", resp.error);
        }
        for (i, (p, l)) in paths.iter().zip(&mut lists).enumerate() {
            if round % 10 == 9 {
                // Now and then a list rewritten: read whole.
                *l = (0..3000).map(|_| random_line(&mut rng, 2000)).collect();
            } else if round % 10 == 4 && i == 0 {
                // Or many new names: read by lines, but more new rules
                // than a switch of generations takes: a new set installed.
                l.extend((0..1500).map(|n| format!("fresh{round}x{n}.example")));
            } else if rng.random_bool(0.7) {
                edit(&mut rng, l, 60, 2000);
            }
            write(p, l, false, true);
        }
        let r = daemon.reload("test").unwrap_or_else(|e| panic!("round {round}: {e}"));
        if r.changed_lines.is_some() {
            by_lines += 1;
        } else {
            whole += 1;
        }
        check_kernel(&daemon, &source, seed, &format!("round {round} ({r:?})"));
    }
    assert!(by_lines >= 25 && whole >= 8, "{by_lines} reloads by lines, {whole} whole");
}
