//! `namewall-fuzz`: the differential fuzz run (`cargo xtask fuzz`), see
//! `namewall_tests::fuzz`. Needs root: it loads the XDP program.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use maps::Counter;
use namewall_tests::{
    fuzz::{Fuzzer, KNOWN_BYPASSES, Problem, Tally, corpus, mutate::Mutator, reference},
    harness::Harness,
    report,
};

/// Mutated packets through `BPF_PROG_TEST_RUN`, checked against the
/// program's invariants and a host reference judge.
#[derive(Debug, Parser)]
#[command(name = "namewall-fuzz")]
struct Args {
    /// Mutated packets to run (after the seeds themselves).
    #[arg(long, default_value_t = 10_000_000)]
    packets: u64,
    /// Seed of the mutator (default: a random one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where packets with a problem are saved, one pcap each.
    #[arg(long, default_value = "target/fuzz-failures")]
    out: PathBuf,
    /// The seed corpus.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz-corpus/seeds.pcap"))]
    corpus: PathBuf,
    /// Build the seed corpus afresh, write it to this file and exit.
    #[arg(long, conflicts_with = "replay")]
    write_corpus: Option<PathBuf>,
    /// Record the run's result in this file's "Fuzzing" section (BENCHMARKS.md).
    #[arg(long, conflicts_with = "replay")]
    record: Option<PathBuf>,
    /// Run the frames of these pcap files (or of every pcap file in these
    /// directories) unmutated, and report.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
}

/// Problems printed in full; every one is counted, and the first
/// [`MAX_SAVED`] are saved.
const MAX_SHOWN: usize = 20;
const MAX_SAVED: usize = 200;
/// Packets with known bypasses only saved, as examples.
const MAX_SAVED_KNOWN: u64 = 10;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.write_corpus {
        let frames = corpus::build();
        corpus::write_pcap(path, &frames)?;
        eprintln!("fuzz: wrote {} seed frames to {}", frames.len(), path.display());
        return Ok(());
    }
    let (block, allow) = reference::list_texts();
    let mut fuzzer = Fuzzer::new(Harness::new(&block, &allow).filter)?;
    if !args.replay.is_empty() {
        for (name, frame) in replay_frames(&args.replay)? {
            let problems = fuzzer.check(&frame)?;
            let outcome = last_outcome(&fuzzer);
            eprintln!("fuzz: {name}: {outcome}, reference: {}", describe(&reference::judge(&frame)));
            for p in &problems {
                eprintln!("fuzz:   {p}");
            }
        }
        return finish(&fuzzer.tally, None, fuzzer.tally.problems);
    }
    let seeds = corpus::read_pcap(&args.corpus)?;
    if seeds.is_empty() {
        bail!("{}: no seed frames", args.corpus.display());
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!(
        "fuzz: seed {seed} ({} seed frames from {}, {} mutated packets; repeat with --seed {seed})",
        seeds.len(),
        args.corpus.display(),
        args.packets
    );
    // Failures of an earlier run would be mistaken for this one's.
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out).with_context(|| format!("removing {}", args.out.display()))?;
    }
    let mut saved = Report { out: args.out.clone(), found: 0, known: 0 };
    for (i, frame) in seeds.iter().enumerate() {
        let problems = fuzzer.check(frame)?;
        saved.record(&format!("seed {i}"), frame, &problems)?;
    }
    let seeds_tally = fuzzer.tally.clone();
    if seeds_tally.problems > 0 {
        bail!("{} of the {} seed frames have problems (see above)", seeds_tally.problems, seeds.len());
    }
    let mut mutator = Mutator::new(seed, &seeds);
    let start = Instant::now();
    let mut last = Instant::now();
    for n in 0..args.packets {
        let (from, frame) = mutator.next_frame();
        let problems = fuzzer.check(&frame)?;
        if !problems.is_empty() {
            saved.record(&format!("packet {n} (seed frame {from})"), &frame, &problems)?;
        }
        if last.elapsed().as_secs() >= 30 {
            last = Instant::now();
            let done = n + 1;
            eprintln!(
                "fuzz: {done} packets, {:.0}/s, {} with problems",
                rate(done, start.elapsed().as_secs_f64()),
                fuzzer.tally.problems
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(path) = &args.record {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let run = Run { seed, seeds: seeds.len(), packets: args.packets, secs, found: saved.found };
        std::fs::write(path, report::with_section(&old, &record(&fuzzer.tally, &run)))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("fuzz: recorded the run in {}", path.display());
    }
    finish(&fuzzer.tally, Some((seed, args.packets, secs)), saved.found)
}

/// The outcome the program traced last.
fn last_outcome(fuzzer: &Fuzzer) -> &'static str {
    fuzzer.filter.trace().ok().and_then(|t| Counter::from_index(t.outcome)).map_or("?", Counter::name)
}

fn describe(j: &reference::Judgement) -> String {
    match j {
        reference::Judgement::CannotJudge(why) => format!("cannot judge ({why})"),
        reference::Judgement::Judged(j) => format!(
            "{} {:?}{}",
            j.asked,
            j.decision,
            j.refused.map_or_else(String::new, |why| format!(", Linux would refuse it: {why}"))
        ),
    }
}

/// Saves and shows packets with problems.
struct Report {
    out: PathBuf,
    found: u64,
    known: u64,
}

impl Report {
    /// Shows and saves the packet if it has a problem that fails the run;
    /// saves the first few with known bypasses.
    fn record(&mut self, what: &str, frame: &[u8], problems: &[Problem]) -> anyhow::Result<()> {
        if problems.is_empty() {
            return Ok(());
        }
        if problems.iter().all(Problem::known) {
            self.known += 1;
            if self.known <= MAX_SAVED_KNOWN {
                let path = self.out.join(format!("known-{:02}.pcap", self.known));
                corpus::write_pcap(&path, &[frame.to_vec()])?;
            }
            return Ok(());
        }
        self.found += 1;
        let n = usize::try_from(self.found).unwrap_or(usize::MAX);
        if n <= MAX_SHOWN {
            for p in problems {
                eprintln!("fuzz: {what}: {p}");
            }
            eprintln!("fuzz:   reference: {}", describe(&reference::judge(frame)));
        }
        if n <= MAX_SAVED {
            let path = self.out.join(format!("{n:04}-{}.pcap", problems[0].kind()));
            corpus::write_pcap(&path, &[frame.to_vec()])?;
            if n <= MAX_SHOWN {
                eprintln!("fuzz:   saved as {}", path.display());
            }
        }
        Ok(())
    }
}

/// Frames of the pcap files named, or found in the directories named, each
/// with a name for output.
fn replay_frames(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .with_context(|| format!("listing {}", p.display()))?;
            in_dir.retain(|f| f.extension().is_some_and(|e| e == "pcap"));
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for f in files {
        for (i, frame) in corpus::read_pcap(&f)?.into_iter().enumerate() {
            out.push((format!("{}#{i}", display(&f)), frame));
        }
    }
    Ok(out)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// The `n` largest counts of `m`.
fn top<'a>(m: &'a std::collections::BTreeMap<&'static str, u64>, n: usize) -> Vec<(&'static str, &'a u64)> {
    let mut v: Vec<(&'static str, &u64)> = m.iter().map(|(k, v)| (*k, v)).collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.truncate(n);
    v
}

/// Packets per second.
#[expect(clippy::cast_precision_loss, reason = "packet counts far below 2^52")]
fn rate(packets: u64, secs: f64) -> f64 {
    packets as f64 / secs
}

/// Prints the summary; fails when any packet had a problem.
fn finish(t: &Tally, run: Option<(u64, u64, f64)>, found: u64) -> anyhow::Result<()> {
    eprintln!("fuzz: outcomes:");
    for c in Counter::ALL {
        let n = t.outcomes[*c as usize];
        if n > 0 {
            eprintln!("fuzz:   {:<24} {n}", c.name());
        }
    }
    for (what, reasons) in
        [("reference could not judge", &t.cannot), ("of those, the kernel gave a name verdict", &t.kernel_only_why)]
    {
        eprintln!("fuzz: {what} (most frequent reasons):");
        for (why, n) in top(reasons, 8) {
            eprintln!("fuzz:   {why:<48} {n}");
        }
    }
    eprintln!(
        "fuzz: {} packets in all; compared with the reference: {}; judged by the reference only: {} ({} blocked by \
         it and passed as malformed by fail-open); judged by the kernel only: {}",
        t.packets, t.compared, t.reference_only, t.blocked_but_malformed, t.kernel_only
    );
    if let Some((seed, packets, secs)) = run {
        eprintln!(
            "fuzz: seed {seed}: {packets} mutated packets in {secs:.1} s ({:.0} packets/s), {} aborts, {found} \
             packets with problems, {} with known bypasses only",
            rate(packets, secs),
            t.aborts,
            t.known,
        );
    } else {
        eprintln!("fuzz: {} aborts, {found} packets with problems, {} with known bypasses only", t.aborts, t.known);
    }
    for (class, n) in &t.by_class {
        eprintln!("fuzz:   {class:<48} {n}");
    }
    for (c, doc) in KNOWN_BYPASSES {
        eprintln!("fuzz: known bypass {}: see {doc}", c.name());
    }
    if found > 0 || t.aborts > 0 {
        bail!("{found} packets with problems, {} aborts", t.aborts);
    }
    Ok(())
}

/// A finished mutation run, for the record.
struct Run {
    seed: u64,
    seeds: usize,
    packets: u64,
    secs: f64,
    /// Packets with problems that fail the run.
    found: u64,
}

/// The "Fuzzing" section of BENCHMARKS.md for a run.
fn record(t: &Tally, run: &Run) -> String {
    use std::fmt::Write as _;
    let class = |name: &str| t.by_class.iter().filter(|(c, _)| c.starts_with(name)).map(|(_, n)| n).sum::<u64>();
    let mut w = String::new();
    let _ = writeln!(w, "{}\n", report::FUZZ_HEADING);
    let _ = writeln!(
        w,
        "`cargo xtask fuzz --record --seed {}` on {}: {} mutated packets (after the {} seed frames of \
         `tests/fuzz-corpus/seeds.pcap`) through `BPF_PROG_TEST_RUN` on the release object, each judged \
         by the host reference too (`tests/src/fuzz`), in {:.0} s ({:.0} packets/s, one thread: a test run, \
         a counter and a trace read per packet). The run fails on any aborted, invariant, disagreement \
         or new bypass; known bypasses are counted.\n",
        run.seed,
        report::machine(),
        run.packets,
        run.seeds,
        run.secs,
        rate(run.packets, run.secs),
    );
    let _ = writeln!(w, "| check | packets |\n|---|---:|");
    let rows = [
        ("`XDP_ABORTED` returned", t.aborts),
        ("invariants broken (action, trace, exactly one outcome counter)", class("invariant")),
        ("disagreements with the reference (name or decision)", class("disagreement")),
        ("new bypasses (reference blocks, Linux would accept, kernel skipped)", class("bypass")),
        ("packets failing the run", run.found),
        ("known bypasses (`ipv6_ext_too_deep`, see `tests/fuzz-findings/README.md`)", class("known bypass")),
        ("compared: both sides judged a name", t.compared),
        ("judged by the reference only (kernel: skipped, malformed, no name verdict)", t.reference_only),
        ("of those, blocked by the reference and passed as malformed (fail-open)", t.blocked_but_malformed),
        ("judged by the kernel only (the reference could not)", t.kernel_only),
    ];
    for (what, n) in rows {
        let _ = writeln!(w, "| {what} | {n} |");
    }
    let mut outcomes: Vec<(u64, &str)> =
        Counter::ALL.iter().map(|c| (t.outcomes[*c as usize], c.name())).filter(|(n, _)| *n > 0).collect();
    outcomes.sort_by(|a, b| b.cmp(a));
    let shown: Vec<String> = outcomes.iter().map(|(n, name)| format!("{name} {n}")).collect();
    let _ = writeln!(w, "\nOutcomes (seed frames included): {}.", shown.join(", "));
    let why: Vec<String> = top(&t.kernel_only_why, 5).iter().map(|(why, n)| format!("{why} {n}")).collect();
    let _ = writeln!(
        w,
        "\nPackets judged by the kernel only, by why the reference could not (it is stricter than Linux where \
         in doubt; the five largest): {}.",
        why.join(", ")
    );
    w
}
