//! Builds the XDP program (gateway-ebpf) for bpfel-unknown-none with the
//! nightly toolchain and `-Z build-std=core`, as aya-template does. The
//! object is embedded by `src/xdp/loader.rs`. `AYA_BUILD_SKIP=1` skips it
//! (for clippy or docs on a host without bpf-linker).

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata_root()?;
    let ebpf = aya_build::Package {
        name: "gateway-ebpf",
        root_dir: &metadata,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
        .context("building gateway-ebpf failed: run `cargo xtask build`, which installs bpf-linker and nightly rust-src")
}

fn cargo_metadata_root() -> anyhow::Result<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&dir)
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .join("gateway-ebpf");
    root.into_os_string()
        .into_string()
        .map_err(|_| anyhow!("non-UTF-8 path"))
}
