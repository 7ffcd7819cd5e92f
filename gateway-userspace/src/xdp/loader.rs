//! Loading the XDP program with its maps pinned under a bpffs directory
//! (reusing maps pinned by an earlier run), and attaching it to an interface.
//!
//! The attachment is a bpf_link pinned at `<pin_dir>/links/<interface>`, so
//! the kernel filter outlives the process: after a stop, a crash or
//! `kill -9` the last program keeps enforcing the pinned maps (blocks and
//! their TTLs, limits). A new start adopts the pinned link and replaces its
//! program atomically (`bpf_link_update`): there is no instant without a
//! filter. `[xdp] detach_on_exit`, `gateway run --xdp-detach-on-exit` or
//! `gateway xdp detach` remove it. A pin whose link no longer points at the
//! interface (the interface was deleted and recreated) is replaced.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    pin::PinError,
    programs::{
        ProgramError, Xdp,
        links::{FdLink, LinkError, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use gateway_common::{BASELINE_PROGRAM_NAME, LAYOUT_VERSION, PROGRAM_NAME};

use super::config::XdpMode;
use super::{
    PROGRAM, XdpMaps,
    bpffs::{self, BpffsError},
    layout::LayoutError,
    maps::MapsError,
};
use crate::error_chain::chain;

/// Why the XDP program could not be loaded, attached or detached. The
/// variants say where to look: the pin directory, the eBPF object (another
/// build), the verifier, the interface, or the kernel.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The pin directory is not usable (bpffs not mounted, not creatable).
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    /// Maps pinned by another build are in the way.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The eBPF object could not be parsed or its maps created or opened
    /// (`what` says which step).
    #[error("{what}")]
    Object {
        /// The step that failed.
        what: String,
        /// aya's error (boxed: it is large).
        #[source]
        source: Box<EbpfError>,
    },
    /// The eBPF object lacks a program this build expects.
    #[error("the XDP object has no program {0}")]
    MissingProgram(&'static str),
    /// The kernel verifier rejected the program; the text carries its log.
    #[error("the kernel verifier rejected the XDP program: {0}")]
    Verifier(String),
    /// Loading the program failed otherwise.
    #[error("loading the XDP program into the kernel")]
    Load(#[source] ProgramError),
    /// A program operation failed (a test run, a detach, a type check).
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// The maps could not be taken from the object.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// Attaching to the interface failed; `hint` says what to check.
    #[error("{hint}")]
    Attach {
        /// What to check (the interface name, another XDP program).
        hint: String,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// A pinned link could not be opened, adopted or written (`what` says
    /// which).
    #[error("{what}")]
    Link {
        /// The step that failed.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pin file could not be removed.
    #[error("removing {}", .path.display())]
    Remove {
        /// The pin file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = XdpError> = std::result::Result<T, E>;

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

/// A program attached to an interface through a pinned link. Dropping it
/// leaves the filter attached unless `detach_on_exit` was asked for.
pub struct AttachedXdp {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    /// The link's pin, while this process holds it.
    pinned: Option<PinnedLink>,
    /// `<pin_dir>/links/<interface>`; `None` when the link could not be
    /// pinned (then it detaches with the process, as before).
    pin_file: Option<PathBuf>,
    /// The interface the program is attached to.
    pub interface: String,
    /// The mode it attached in (`auto` resolved); for an adopted link, the
    /// mode of the attachment it continues.
    pub mode: XdpMode,
    /// Whether an existing pinned link was adopted (its program replaced).
    pub adopted: bool,
    /// Detach when dropped (process exit) instead of leaving the filter.
    pub detach_on_exit: bool,
}

impl Loader {
    /// A loader pinning maps under `pin_dir` (the `[xdp] pin_dir`, which must be on bpffs; bpffs is
    /// mounted at /sys/fs/bpf when the directory is below it and nothing is mounted there).
    pub fn new(pin_dir: impl Into<PathBuf>) -> Self {
        Self {
            pin_dir: pin_dir.into(),
        }
    }

    /// The versioned directory the maps are pinned in.
    pub fn pin_path(&self) -> PathBuf {
        self.pin_dir.join(format!("v{LAYOUT_VERSION}"))
    }

    /// Loads and verifies the program, reusing the maps pinned by a previous run (same layout
    /// version) or creating them, and importing entries from an older layout's pins when this
    /// layout has none. Errors carry the verifier log when the kernel rejects the program, and the
    /// pin directory otherwise.
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
            .map_err(|source| XdpError::Object {
                what: format!(
                    "loading the XDP program (maps pinned in {})",
                    pin_path.display()
                ),
                source: Box::new(source),
            })?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpError::MissingProgram(PROGRAM_NAME))?
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
    /// A second handle on the maps [`Loader::load`] pinned (descriptors of
    /// its own, behind a lock of its own): for readers that walk whole maps
    /// (`gateway block list`, `stats`, the dashboard), so that a long walk
    /// never holds the lock escalation and the sweeper write through. The
    /// kernel serializes the map operations themselves.
    ///
    /// # Errors
    /// The object cannot be parsed or a pinned map cannot be opened.
    pub fn open_maps(&self) -> Result<XdpMaps> {
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(self.pin_path())
            .load(PROGRAM)
            .map_err(|source| XdpError::Object {
                what: "opening the pinned XDP maps again for readers".into(),
                source: Box::new(source),
            })?;
        Ok(XdpMaps::take_for_reading(&mut ebpf)?)
    }

    /// A new map layout starts with empty maps in a new directory: carry
    /// the allow, block and limit entries over from the newest older one.
    /// A failed import is logged, never fatal (the file's static lists are
    /// applied anyway), and says what to do by hand.
    fn import_older(&self, maps: &mut XdpMaps, version: u32, old: &Path) {
        let now = crate::clock::monotonic_ns();
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
                error = %chain(&e),
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
fn verifier_context(e: ProgramError) -> XdpError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => XdpError::Verifier(format!("{io_error}\n{verifier_log}")),
        other => XdpError::Load(other),
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

    /// The versioned directory the maps are pinned in (`<pin_dir>/v<LAYOUT_VERSION>`).
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
            .ok_or(XdpError::MissingProgram(BASELINE_PROGRAM_NAME))?
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

    /// Attaches to `interface`, pinning the link under `pin_dir/links`.
    /// A link pinned there by an earlier run (still on this interface) is
    /// adopted: its program is replaced atomically by this one and `mode`
    /// is not applied (detach first to change it). Otherwise `auto` tries
    /// native (driver) mode and falls back to generic (skb) mode.
    pub fn attach(self, interface: &str, mode: XdpMode, pin_dir: &Path) -> Result<AttachedXdp> {
        let links = pin_dir.join("links");
        // bpffs holds only BPF objects, so the mode is in the pin's name:
        // `<interface>@native` or `<interface>@skb`.
        for (pin_file, pinned_mode) in pins_of(&links, Some(interface)) {
            match adoptable(&pin_file, interface) {
                Ok(Some(fd_link)) => return self.adopt(fd_link, interface, &pin_file, pinned_mode),
                Ok(None) => {
                    tracing::warn!(pin = %pin_file.display(), interface, "the pinned XDP link no longer points at this interface (it was recreated); attaching afresh");
                }
                Err(e) => {
                    tracing::warn!(pin = %pin_file.display(), error = %chain(&e), "the pinned XDP link cannot be adopted; attaching afresh");
                }
            }
            let _ = std::fs::remove_file(&pin_file);
        }
        self.attach_fresh(interface, mode, &links)
    }

    fn adopt(
        mut self,
        fd_link: FdLink,
        interface: &str,
        pin_file: &Path,
        mode: XdpMode,
    ) -> Result<AttachedXdp> {
        let link = XdpLink::try_from(fd_link).map_err(|e| XdpError::Link {
            what: "the pinned link is not an XDP link".into(),
            source: Box::new(e),
        })?;
        let id = self
            .program_mut()
            .attach_to_link(link)
            .map_err(|e| XdpError::Link {
                what: format!(
                    "replacing the program of the XDP link pinned at {}",
                    pin_file.display()
                ),
                source: Box::new(e),
            })?;
        Ok(AttachedXdp {
            ebpf: self.ebpf,
            link: Some(id),
            pinned: None,
            pin_file: Some(pin_file.to_owned()),
            interface: interface.to_owned(),
            mode,
            adopted: true,
            detach_on_exit: false,
        })
    }

    fn attach_fresh(mut self, interface: &str, mode: XdpMode, links: &Path) -> Result<AttachedXdp> {
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
        // Pin the link so the filter outlives this process.
        let pin_file = links.join(format!("{interface}@{used}"));
        let pinned = self
            .program_mut()
            .take_link(link)
            .map_err(PinStep::Take)
            .and_then(|l| FdLink::try_from(l).map_err(PinStep::Fd))
            .and_then(|l| {
                bpffs::ensure_dir(links)?;
                l.pin(&pin_file).map_err(PinStep::Pin)
            });
        let (link, pinned, pin_file) = match pinned {
            Ok(p) => (None, Some(p), Some(pin_file)),
            Err(e) => {
                // The program's link was taken; without a pin it detaches
                // when this process exits (a netlink attachment, old kernels).
                tracing::warn!(error = %chain(&e), "the XDP link could not be pinned: the filter will detach when the gateway exits");
                return Err(XdpError::Link {
                    what: "pinning the XDP link".into(),
                    source: Box::new(e),
                });
            }
        };
        Ok(AttachedXdp {
            ebpf: self.ebpf,
            link,
            pinned,
            pin_file,
            interface: interface.to_owned(),
            mode: used,
            adopted: false,
            detach_on_exit: false,
        })
    }
}

/// The step of pinning a fresh link that failed.
#[derive(Debug, thiserror::Error)]
enum PinStep {
    /// Taking the link from the program.
    #[error(transparent)]
    Take(ProgramError),
    /// Turning it into a link that can be pinned.
    #[error("{0}")]
    Fd(LinkError),
    /// The links directory.
    #[error(transparent)]
    Dir(#[from] BpffsError),
    /// Writing the pin.
    #[error(transparent)]
    Pin(PinError),
}

/// The link pins under `links` (for one interface, or all), with the mode
/// their name records.
fn pins_of(links: &Path, interface: Option<&str>) -> Vec<(PathBuf, XdpMode)> {
    let Ok(entries) = std::fs::read_dir(links) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (iface, mode) = name.rsplit_once('@')?;
            if interface.is_some_and(|i| i != iface) {
                return None;
            }
            let mode = match mode {
                "native" => XdpMode::Native,
                "skb" => XdpMode::Skb,
                _ => return None,
            };
            Some((e.path(), mode))
        })
        .collect()
}

/// Opens the pinned link; `Some` when it is an XDP link still attached to
/// `interface` (same ifindex), `None` when it points elsewhere or nowhere.
fn adoptable(pin_file: &Path, interface: &str) -> Result<Option<FdLink>> {
    let link: FdLink = PinnedLink::from_pin(pin_file)
        .map_err(|e| XdpError::Link {
            what: format!("opening the pinned link {}", pin_file.display()),
            source: Box::new(e),
        })?
        .into();
    let id = link
        .info()
        .map_err(|e| XdpError::Link {
            what: format!("reading the pinned link {}", pin_file.display()),
            source: Box::new(e),
        })?
        .id();
    let want = std::fs::read_to_string(format!("/sys/class/net/{interface}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    Ok((want.is_some() && link_ifindex(id) == want).then_some(link))
}

/// The interface index an XDP link with kernel id `id` is attached to, read
/// from the `fdinfo` of one of this process's descriptors for it (the
/// kernel prints `link_id` and `ifindex` there; 0 once the interface is
/// gone).
fn link_ifindex(id: u32) -> Option<u32> {
    let dir = std::fs::read_dir("/proc/self/fdinfo").ok()?;
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        if field("link_id:") == Some(id) {
            return field("ifindex:");
        }
    }
    None
}

fn attach_error(e: ProgramError, interface: &str, mode: &str) -> XdpError {
    let hint = match &e {
        ProgramError::UnknownInterface { .. } => {
            format!("there is no interface named {interface:?}; `ip link` lists them")
        }
        _ => format!(
            "attaching XDP in {mode} mode to {interface} failed (another XDP program attached? try mode = \"skb\")"
        ),
    };
    XdpError::Attach { hint, source: e }
}

impl AttachedXdp {
    /// Detaches now: removes the pin (and its mode file) and drops this
    /// process's hold on the link, so no packet is filtered any more.
    pub fn detach(&mut self) -> Result<()> {
        if let Some(pin) = self.pin_file.take() {
            match std::fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(XdpError::Remove { path: pin, source }),
            }
        }
        self.pinned.take();
        if let Some(link) = self.link.take() {
            let prog: &mut Xdp = self
                .ebpf
                .program_mut(PROGRAM_NAME)
                .ok_or(XdpError::MissingProgram(PROGRAM_NAME))?
                .try_into()?;
            prog.detach(link)?;
        }
        Ok(())
    }
}

impl Drop for AttachedXdp {
    fn drop(&mut self) {
        if self.detach_on_exit || self.pin_file.is_none() {
            if let Err(e) = self.detach() {
                tracing::warn!(error = %e, interface = %self.interface, "detaching XDP failed");
            }
        } else if let Some(pin) = &self.pin_file {
            tracing::info!(interface = %self.interface, pin = %pin.display(), "the XDP filter stays attached after exit (pinned link); `gateway xdp detach` removes it");
        }
    }
}

/// Removes the pinned XDP links under `pin_dir/links` (all interfaces, or
/// one): the filter detaches once no process holds the link any more (a
/// running gateway keeps its own until it exits). Returns the interfaces
/// whose pins were removed.
pub fn detach_pinned(pin_dir: &Path, interface: Option<&str>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (pin, _) in pins_of(&pin_dir.join("links"), interface) {
        std::fs::remove_file(&pin).map_err(|source| XdpError::Remove {
            path: pin.clone(),
            source,
        })?;
        removed.push(
            pin.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    Ok(removed)
}

/// One pinned XDP link, for `gateway xdp status`.
#[derive(Debug)]
pub struct LinkStatus {
    /// The interface the link is attached to.
    pub interface: String,
    /// The mode it was attached in.
    pub mode: XdpMode,
    /// The link's pin file (`<pin_dir>/links/<interface>`).
    pub pin: PathBuf,
    /// The program the link runs now: kernel id, tag (a hash of its
    /// instructions: the same build has the same tag) and when it was
    /// loaded (the start of the gateway that attached or adopted it).
    /// `None` when the pin cannot be read.
    pub program: Option<(u32, u64, Option<std::time::SystemTime>)>,
}

/// The XDP links pinned under `pin_dir/links`.
pub fn pinned_links(pin_dir: &Path) -> Vec<LinkStatus> {
    pins_of(&pin_dir.join("links"), None)
        .into_iter()
        .map(|(pin, mode)| {
            let name = pin
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let interface = name
                .rsplit_once('@')
                .map_or(name.as_str(), |(i, _)| i)
                .to_owned();
            let program = PinnedLink::from_pin(&pin)
                .ok()
                .map(FdLink::from)
                .and_then(|l| l.info().ok())
                .map(|info| info.program_id())
                .and_then(|id| {
                    aya::programs::loaded_programs()
                        .flatten()
                        .find(|p| p.id() == id)
                        .map(|p| (id, p.tag(), p.loaded_at()))
                });
            LinkStatus {
                interface,
                mode,
                pin,
                program,
            }
        })
        .collect()
}
