//! Installs what a fresh machine of our kind lacks: nightly's rust-src, LLVM
//! 22 for bpf-linker, bpf-linker 0.13, and the Debian packages the tests and
//! the lab use. Checks first; installs only what is missing.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Debian packages: LLVM for bpf-linker, then the network tools, clients and
/// servers the tests and the lab run.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "procps",
    "ethtool",
    "tcpdump",
    "bind9-dnsutils",
    "knot-dnsutils",
    "dnsmasq-base",
    "openssl",
    "curl",
    "chromium",
    "nginx",
    // Builds the evasion packets of the namespace tests and the lab (tests/evasion.py).
    "python3-scapy",
];

const BPF_LINKER_VERSION: &str = "0.13";

pub fn run() -> anyhow::Result<()> {
    rust_src()?;
    packages()?;
    bpf_linker()
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("setup: {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
        .context("the nightly toolchain is missing (rustup toolchain list)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    check(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    check(Command::new("apt-get").args(["update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    check(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if missing.contains(&"nginx") {
        stop_system_nginx();
    }
    Ok(())
}

/// Debian's nginx package starts the system service where the machine lets
/// it (an init system, no policy-rc.d refusing), listening on port 80 of the
/// host. The tests and the lab run their own nginx inside their namespaces
/// and nothing of ours should listen beyond them: stop it and keep it from
/// starting at boot. Best effort: where the package could not start it,
/// there is nothing to stop.
fn stop_system_nginx() {
    if std::path::Path::new("/run/nginx.pid").exists() {
        let _ = Command::new("nginx").args(["-s", "quit"]).status();
    }
    let _ = Command::new("update-rc.d").args(["nginx", "disable"]).output();
    let _ = Command::new("systemctl").args(["disable", "--now", "nginx"]).output();
}

fn bpf_linker() -> anyhow::Result<()> {
    if let Some(v) = output(Command::new("bpf-linker").arg("--version"))
        && v.split_whitespace().any(|w| w.starts_with(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    // Without LLVM_PREFIX its build script searches /usr and fails to link -lLLVM.
    check(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--version", &format!("~{BPF_LINKER_VERSION}")])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )
}
