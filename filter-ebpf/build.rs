//! The eBPF build has an undeclared dependency on the `bpf-linker` binary;
//! rebuild when it changes (the same trick as aya-template).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
