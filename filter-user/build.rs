//! Builds the XDP programs (filter-ebpf's `namewall` and `baseline`
//! binaries) with the nightly toolchain and bpf-linker, into `OUT_DIR`, where
//! the loader embeds them. `cargo xtask setup` installs what this needs.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../filter-ebpf");
    let root = root.canonicalize().context("finding filter-ebpf")?;
    let root = root.to_str().context("filter-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "filter-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
    .context("building the XDP program (`cargo xtask setup` installs nightly rust-src and bpf-linker)")
}
