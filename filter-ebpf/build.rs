//! Link settings of the XDP programs, and a rebuild when bpf-linker changes
//! (the build has an undeclared dependency on that binary; same trick as
//! aya-template).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // Packet fields sit at any offset; without allows-misaligned-mem-access
    // LLVM splits every multi-byte load of an align-1 type into byte loads.
    // The kernel allows misaligned packet and map access on architectures
    // with efficient unaligned access (x86-64, arm64), where namewall runs.
    // alu32 (Linux 5.1+): 32-bit arithmetic, fewer zero-extensions.
    // (rustc already passes --cpu, so the CPU itself cannot be chosen here.)
    // Only for the BPF target: host builds of this crate (cargo clippy
    // --workspace) link with the system linker.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo:rustc-link-arg=--cpu-features=+alu32,+allows-misaligned-mem-access");
    }
}
