//! `cargo xtask <command>`: what a developer (or CI) runs. Every command that
//! builds runs `setup` first, which installs what a fresh machine lacks and
//! returns at once when everything is there.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod setup;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "namewall developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install the toolchain pieces and Debian packages the build and tests need (idempotent).
    Setup,
    /// Build the XDP programs and the binaries.
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Client, router running namewall, and DNS server in network namespaces: real blocking, shown.
    Lab {
        /// Leave the lab running and print how to use it.
        #[arg(long, conflicts_with = "down")]
        keep: bool,
        /// Remove a lab left running by --keep.
        #[arg(long)]
        down: bool,
    },
    /// Every check: formatting, clippy (host and BPF target), unit, `test_run` and namespace tests.
    Test {
        /// Only run tests whose name contains this (passed to cargo test).
        filter: Option<String>,
        /// Skip formatting and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Formatting and clippy only.
    Lint,
    /// Measure ns/packet against a baseline XDP program and rule loading; writes BENCHMARKS.md.
    Bench {
        /// Repetitions per `BPF_PROG_TEST_RUN` measurement.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Where to write the report.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
    },
    /// Differential fuzz run: mutated packets through `BPF_PROG_TEST_RUN`, the kernel's verdicts
    /// checked against a host reference judge (see `tests/src/fuzz`).
    Fuzz {
        /// Mutated packets to run.
        #[arg(long, default_value_t = 10_000_000)]
        packets: u64,
        /// Seed of the mutator (default: a random one, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Where packets with a problem are saved as pcap files.
        #[arg(long, default_value = "target/fuzz-failures")]
        out: PathBuf,
        /// Record the result in BENCHMARKS.md's "Fuzzing" section.
        #[arg(long)]
        record: bool,
    },
}

/// The short fuzz run `cargo xtask test` makes: packets per seed, and the
/// fixed seed (a random one follows it).
const TEST_FUZZ_PACKETS: u64 = 200_000;
const TEST_FUZZ_SEED: u64 = 1;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Build { release } => {
            setup::run()?;
            build(release)
        }
        Cmd::Lab { keep, down } => {
            need_root("the lab creates network namespaces")?;
            setup::run()?;
            build(false)?;
            let mut cmd = Command::new(root.join("target/debug/namewall-lab"));
            if keep {
                cmd.arg("--keep");
            }
            if down {
                cmd.arg("--down");
            }
            run(&mut cmd)
        }
        Cmd::Test { filter, no_lint } => {
            need_root("the tests load XDP programs and create network namespaces")?;
            setup::run()?;
            build(false)?;
            if !no_lint {
                lint()?;
            }
            let mut cmd = cargo(&["test", "--no-fail-fast"]);
            if let Some(f) = &filter {
                cmd.arg(f);
            }
            let tests = run(&mut cmd);
            // The short fuzz run, with the debug build made above: a fixed
            // seed, then a random one (printed, to repeat a failure).
            let fuzz = if filter.is_none() {
                [Some(TEST_FUZZ_SEED), None].into_iter().try_for_each(|seed| {
                    fuzz(
                        &root.join("target/debug/namewall-fuzz"),
                        TEST_FUZZ_PACKETS,
                        seed,
                        Path::new("target/fuzz-failures"),
                        None,
                    )
                })
            } else {
                Ok(())
            };
            tests.and(fuzz)
        }
        Cmd::Lint => {
            setup::run()?;
            lint()
        }
        Cmd::Bench { repeat, out } => {
            need_root("the benchmark loads XDP programs")?;
            setup::run()?;
            build(true)?;
            run(Command::new(root.join("target/release/namewall-bench"))
                .arg("--repeat")
                .arg(repeat.to_string())
                .arg("--out")
                .arg(&out))
        }
        Cmd::Fuzz { packets, seed, out, record } => {
            need_root("the fuzz run loads XDP programs")?;
            setup::run()?;
            build(true)?;
            let record = record.then(|| Path::new("BENCHMARKS.md"));
            fuzz(&root.join("target/release/namewall-fuzz"), packets, seed, &out, record)
        }
    }
}

/// Runs the fuzz binary `bin`; with `record`, its result goes into that file.
fn fuzz(bin: &Path, packets: u64, seed: Option<u64>, out: &Path, record: Option<&Path>) -> anyhow::Result<()> {
    let mut cmd = Command::new(bin);
    cmd.arg("--packets").arg(packets.to_string()).arg("--out").arg(out);
    if let Some(s) = seed {
        cmd.arg("--seed").arg(s.to_string());
    }
    if let Some(file) = record {
        cmd.arg("--record").arg(file);
    }
    run(&mut cmd)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.args(args);
    c
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn build(release: bool) -> anyhow::Result<()> {
    // The default members: filter-ebpf's binaries only exist for the BPF
    // target, where filter-user's build script builds them.
    let mut cmd = cargo(&["build", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

fn lint() -> anyhow::Result<()> {
    run(&mut cargo(&["fmt", "--all", "--check"]))?;
    run(&mut cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The kernel program, for the target it runs on, with and without its
    // debug records.
    for features in [&[][..], &["--features", "debug"]] {
        run(Command::new("rustup")
            .args(["run", "nightly", "cargo", "clippy", "-p", "filter-ebpf", "--target", "bpfel-unknown-none"])
            .args(features)
            .args(["-Z", "build-std=core", "--release", "--target-dir", "target/clippy-bpf", "--", "-D", "warnings"]))?;
    }
    Ok(())
}

fn need_root(why: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        bail!("{why}: run as root (CAP_BPF and CAP_NET_ADMIN)");
    }
    Ok(())
}

unsafe extern "C" {
    fn geteuid() -> u32;
}
