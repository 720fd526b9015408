//! Builds the XDP programs (filter-ebpf's `namewall-xdp` and `baseline-xdp`
//! binaries, and `namewall-xdp` again with kernel debug records) with the
//! nightly toolchain and bpf-linker, into `OUT_DIR`, where the loader
//! embeds them. `cargo xtask setup` installs what this needs.
//!
//! This does what `aya_build::build_ebpf` does, with one difference that
//! matters: it compiles for BPF ISA v3 (`-C target-cpu=v3`, Linux 5.1+),
//! whose 32-bit jumps spare LLVM from materialising every comparison as a
//! 0/1 value; the program comes out a sixth smaller and faster. aya-build
//! 0.2 sets the compiler flags itself and offers no way to choose the CPU.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The programs filter-ebpf builds, as embedded: the release object and the
/// baseline, then the object with kernel debug records (`--features debug`,
/// in a target directory of its own so neither build undoes the other's).
const OBJECTS: &[Object] = &[
    Object {
        features: &[],
        target_dir: "ebpf-target",
        bins: &[("namewall-xdp", "namewall-xdp"), ("baseline-xdp", "baseline-xdp")],
    },
    Object { features: &["debug"], target_dir: "ebpf-target-debug", bins: &[("namewall-xdp", "namewall-xdp-debug")] },
];
const TARGET: &str = "bpfel-unknown-none";

/// One build of filter-ebpf.
struct Object {
    features: &'static [&'static str],
    target_dir: &'static str,
    /// (binary built, file name in `OUT_DIR`).
    bins: &'static [(&'static str, &'static str)],
}

fn main() -> anyhow::Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ebpf = manifest.join("../filter-ebpf").canonicalize().context("finding filter-ebpf")?;
    let shared = manifest.join("../maps").canonicalize().context("finding maps")?;
    // Directories: cargo rescans them for any modified file.
    println!("cargo:rerun-if-changed={}", ebpf.display());
    println!("cargo:rerun-if-changed={}", shared.display());

    let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    // The flags aya-build passes, plus the CPU.
    let flags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        "-Ctarget-cpu=v3".into(),
    ];
    for object in OBJECTS {
        let target_dir = out.join(object.target_dir);
        let mut cmd = Command::new("rustup");
        cmd.args(["run", "nightly", "cargo", "build", "--package", "filter-ebpf", "--release"])
            .args(["--target", TARGET, "-Z", "build-std=core", "--target-dir"])
            .arg(&target_dir)
            .current_dir(&ebpf)
            .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
        for (bin, _) in object.bins {
            cmd.args(["--bin", bin]);
        }
        if !object.features.is_empty() {
            cmd.args(["--features", &object.features.join(",")]);
        }
        // Inherited from the outer cargo and rustup proxy; they would pick the
        // stable toolchain or wrap the wrong compiler.
        for key in ["RUSTC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "RUSTUP_TOOLCHAIN", "CARGO_TARGET_DIR"] {
            cmd.env_remove(key);
        }
        let output = cmd.output().with_context(|| format!("spawning {cmd:?} (is rustup installed?)"))?;
        if !output.status.success() {
            for line in String::from_utf8_lossy(&output.stderr).lines() {
                println!("cargo:warning={line}");
            }
            bail!(
                "building the XDP programs failed ({}); `cargo xtask setup` installs nightly's rust-src and bpf-linker",
                output.status
            );
        }
        for (bin, name) in object.bins {
            let built = target_dir.join(TARGET).join("release").join(bin);
            fs::copy(&built, out.join(name)).with_context(|| format!("copying {}", built.display()))?;
        }
    }
    Ok(())
}
