//! Loading the XDP program with its maps pinned under a bpffs directory
//! (reusing maps pinned by an earlier run), and attaching it to an interface.
//! The attachment is a bpf_link owned by this process: it detaches when the
//! [`AttachedXdp`] is dropped or the process exits, while the pinned maps
//! (blocks, limits, counters) stay for the next start.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, Xdp, xdp::XdpLinkId},
};
use gateway_common::{BASELINE_PROGRAM_NAME, LAYOUT_VERSION, PROGRAM_NAME};

use super::{PROGRAM, XdpMaps, bpffs};
use crate::config::XdpMode;

/// Loads the program into the kernel (where the verifier checks it).
pub struct Loader {
    /// bpffs directory; maps are pinned in `<pin_dir>/v<LAYOUT_VERSION>`.
    pub pin_dir: PathBuf,
}

/// A loaded, verified program that is not attached anywhere yet.
pub struct LoadedXdp {
    ebpf: Ebpf,
    pin_path: PathBuf,
}

/// A program attached to an interface. Dropping it detaches.
pub struct AttachedXdp {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    pub interface: String,
    /// The mode it actually attached in (`auto` resolved).
    pub mode: XdpMode,
}

impl Loader {
    pub fn new(pin_dir: impl Into<PathBuf>) -> Self {
        Self {
            pin_dir: pin_dir.into(),
        }
    }

    /// The versioned directory the maps are pinned in.
    pub fn pin_path(&self) -> PathBuf {
        self.pin_dir.join(format!("v{LAYOUT_VERSION}"))
    }

    pub fn load(&self) -> Result<(LoadedXdp, XdpMaps)> {
        let pin_path = self.pin_path();
        bpffs::ensure_dir(&pin_path)?;
        let reused = std::fs::read_dir(&pin_path)
            .map(|d| d.count() > 0)
            .unwrap_or(false);
        super::layout::check_pins(&pin_path)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_path)
            .load(PROGRAM)
            .with_context(|| {
                format!(
                    "loading the XDP program (maps pinned in {})",
                    pin_path.display()
                )
            })?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("the XDP object has no program {PROGRAM_NAME}"))?
            .try_into()?;
        program.load().map_err(verifier_context)?;
        if reused {
            tracing::info!(pin_dir = %pin_path.display(), "reusing pinned XDP maps from a previous run");
        }
        let mut maps = XdpMaps::take_from(&mut ebpf)?;
        if !reused && let Some((version, old)) = super::migrate::older_layout_dir(&self.pin_dir) {
            self.import_older(&mut maps, version, &old);
        }
        Ok((LoadedXdp { ebpf, pin_path }, maps))
    }
}

impl Loader {
    /// A new map layout starts with empty maps in a new directory: carry
    /// the allow, block and limit entries over from the newest older one.
    /// A failed import is logged, never fatal (the file's static lists are
    /// applied anyway), and says what to do by hand.
    fn import_older(&self, maps: &mut XdpMaps, version: u32, old: &Path) {
        let now = super::clock::monotonic_ns();
        match super::migrate::import(maps, old, now) {
            Ok(got) => tracing::warn!(
                old = %old.display(),
                new = %self.pin_path().display(),
                allows = got.allows,
                blocks = got.blocks,
                expired_blocks_skipped = got.expired_skipped,
                limit_overrides = got.limits,
                "XDP map layout changed from v{version} to v{LAYOUT_VERSION}: allow, block and limit entries \
                 were copied into the new maps (counters, token buckets and per-source drops start afresh); \
                 once this gateway runs as wanted, remove the old maps with `rm -r {}`",
                old.display()
            ),
            Err(e) => tracing::error!(
                old = %old.display(),
                error = %format!("{e:#}"),
                "XDP map layout changed from v{version} to v{LAYOUT_VERSION} and the old entries could not be \
                 copied: inspect them with `bpftool map dump pinned {0}/GW_BLOCK_V4` (also GW_BLOCK_V6, \
                 GW_BLOCK_CIDR_V4, GW_BLOCK_CIDR_V6, GW_LIMIT_V4, GW_LIMIT_V6), re-add what is still wanted \
                 with `gateway block add` / `gateway limit set`, then `rm -r {0}`",
                old.display()
            ),
        }
    }
}

/// Adds the verifier log to a load error, which is where the reason is.
fn verifier_context(e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            anyhow!("the kernel verifier rejected the XDP program: {io_error}\n{verifier_log}")
        }
        other => anyhow!(other).context("loading the XDP program into the kernel"),
    }
}

impl LoadedXdp {
    fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("checked at load")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked at load")
    }

    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    /// Runs the program on `frame` with BPF_PROG_TEST_RUN, `repeat` times;
    /// returns the verdict and the kernel's average time per run.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat.max(1);
        let r = self.program().test_run(opts)?;
        Ok((r.return_value, r.duration))
    }

    /// Runs the empty baseline program the same way, loading it on first use:
    /// the harness cost to subtract from [`Self::test_run`] figures.
    pub fn test_run_baseline(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(BASELINE_PROGRAM_NAME)
            .ok_or_else(|| anyhow!("the XDP object has no program {BASELINE_PROGRAM_NAME}"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load().map_err(verifier_context)?;
        }
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat.max(1);
        let r = prog.test_run(opts)?;
        Ok((r.return_value, r.duration))
    }

    /// Attaches to `interface`. `auto` tries native (driver) mode and falls
    /// back to generic (skb) mode with a warning.
    pub fn attach(mut self, interface: &str, mode: XdpMode) -> Result<AttachedXdp> {
        let attempt = |prog: &mut Xdp, flags| prog.attach(interface, flags);
        let (link, used) = match mode {
            XdpMode::Native => (
                attempt(self.program_mut(), aya::programs::xdp::XdpMode::Driver)
                    .map_err(|e| attach_error(e, interface, "native"))?,
                XdpMode::Native,
            ),
            XdpMode::Skb => (
                attempt(self.program_mut(), aya::programs::xdp::XdpMode::Skb)
                    .map_err(|e| attach_error(e, interface, "skb"))?,
                XdpMode::Skb,
            ),
            XdpMode::Auto => match attempt(self.program_mut(), aya::programs::xdp::XdpMode::Driver)
            {
                Ok(link) => (link, XdpMode::Native),
                Err(e) => {
                    tracing::warn!(
                        interface,
                        error = %e,
                        "native XDP is not available on this interface; falling back to generic (skb) mode, which is slower"
                    );
                    (
                        attempt(self.program_mut(), aya::programs::xdp::XdpMode::Skb)
                            .map_err(|e| attach_error(e, interface, "skb"))?,
                        XdpMode::Skb,
                    )
                }
            },
        };
        Ok(AttachedXdp {
            ebpf: self.ebpf,
            link: Some(link),
            interface: interface.to_owned(),
            mode: used,
        })
    }
}

fn attach_error(e: ProgramError, interface: &str, mode: &str) -> anyhow::Error {
    let hint = match &e {
        ProgramError::UnknownInterface { .. } => {
            format!("there is no interface named {interface:?}; `ip link` lists them")
        }
        _ => format!(
            "attaching XDP in {mode} mode to {interface} failed (another XDP program attached? try mode = \"skb\")"
        ),
    };
    anyhow!(e).context(hint)
}

impl AttachedXdp {
    /// Detaches now (also done on drop).
    pub fn detach(&mut self) -> Result<()> {
        if let Some(link) = self.link.take() {
            let prog: &mut Xdp = self
                .ebpf
                .program_mut(PROGRAM_NAME)
                .ok_or_else(|| anyhow!("program vanished"))?
                .try_into()?;
            prog.detach(link)?;
        }
        Ok(())
    }
}

impl Drop for AttachedXdp {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            tracing::warn!(error = %e, interface = %self.interface, "detaching XDP failed");
        }
    }
}
