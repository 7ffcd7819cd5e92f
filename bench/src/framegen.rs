//! A frame-sourced flood: raw Ethernet frames handed to a veth's receive
//! side as `xdp_frame`s, the way a NIC hands frames to its driver's XDP hook
//! before any skb exists (what xdp-tools' `xdp-trafficgen` does).
//!
//! In the client namespace a four-instruction XDP program
//! (`r1 = ifindex; r2 = 0; call bpf_redirect; exit`) is run with
//! BPF_PROG_TEST_RUN and `BPF_F_TEST_XDP_LIVE_FRAMES` (Linux 5.18): the
//! kernel builds each repeat as a real frame in a page pool and redirects it
//! to the namespace's veth end, whose `ndo_xdp_xmit` puts it into the ring
//! of the host end's receive queue (queue = sending CPU modulo the number of
//! queues). The host end's NAPI poll then runs its XDP program on the raw
//! frame, or, with no program, builds an skb from it for the stack
//! (nftables, iptables, the socket). veth accepts redirected frames only on
//! a receive queue with NAPI, which an XDP program or GRO turns on
//! ([`set_gro`]); without it the frames are silently dropped. Frames that
//! find the ring full are dropped by veth and counted in the host end's
//! `rx_dropped`.
//!
//! The program is loaded with a raw bpf(2) call rather than aya: aya loads
//! programs from ELF objects (this one would need its own eBPF build target
//! for four instructions) and the live-frames flag is all we need from
//! BPF_PROG_TEST_RUN.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::cpu::pin_current_thread;
use test_support::{guard::Netns, netns::enter};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
const BPF_FUNC_REDIRECT: i32 = 23;

/// The fields of `union bpf_attr` that BPF_PROG_LOAD reads (the rest zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The fields of `union bpf_attr` that BPF_PROG_TEST_RUN reads.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// One eBPF instruction: opcode, dst/src registers, offset, immediate.
fn insn(code: u8, dst: u8, imm: i32) -> u64 {
    u64::from(code) | (u64::from(dst & 0xf) << 8) | (u64::from(imm as u32) << 32)
}

/// Loads `insns` as an XDP program named `name` (at most 15 bytes).
fn load_xdp(insns: &[u64], name: &str) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name,
        ..Default::default()
    };
    // SAFETY: bpf(2) reads `attr` (its size passed) and the buffers it
    // points to, which outlive the call; the log buffer is writable.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        return Err(io::Error::new(
            err.kind(),
            format!(
                "BPF_PROG_LOAD of {name}: {err}; verifier: {}",
                String::from_utf8_lossy(&log[..end])
            ),
        ));
    }
    // SAFETY: a fresh fd the kernel returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The loaded redirect program; closed on drop.
pub struct Redirector {
    fd: OwnedFd,
}

impl Redirector {
    /// Loads `return bpf_redirect(ifindex, 0)` as an XDP program.
    pub fn load(ifindex: u32) -> io::Result<Self> {
        let insns = [
            insn(0xb7, 1, ifindex as i32), // mov64 r1, ifindex
            insn(0xb7, 2, 0),              // mov64 r2, 0
            insn(0x85, 0, BPF_FUNC_REDIRECT),
            insn(0x95, 0, 0), // exit
        ];
        Ok(Self {
            fd: load_xdp(&insns, "gw_fgen")?,
        })
    }

    /// Sends `repeat` copies of `frame` as live frames (one BPF_PROG_TEST_RUN
    /// call). Must run on a thread inside the namespace of the target
    /// device: the redirect looks the ifindex up in the caller's namespace.
    pub fn send(&self, frame: &[u8], repeat: u32) -> io::Result<()> {
        let attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: BATCH,
            ..Default::default()
        };
        // SAFETY: bpf(2) reads `attr` and `frame` (its length given), both
        // alive for the call; no output buffers are passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &attr as *const TestRunAttr,
                std::mem::size_of::<TestRunAttr>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `return XDP_DROP`, attached in native mode through a bpf_link (not
/// pinned: detached when this is dropped). On the receiving veth end it
/// measures the floor of the frame path: ring, program call, and the
/// frame's page going back to the generator's page pool on the other core.
pub struct DropAll {
    _link: OwnedFd,
    _prog: OwnedFd,
}

/// The fields of `union bpf_attr` that BPF_LINK_CREATE reads for XDP.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

impl DropAll {
    /// Attaches to the device `dev` of this namespace (a veth the bench
    /// created; never a real interface).
    pub fn attach(dev: &str) -> io::Result<Self> {
        let prog = load_xdp(&[insn(0xb7, 0, 1), insn(0x95, 0, 0)], "gw_dropall")?;
        let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{dev}/ifindex"))?
            .trim()
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("ifindex: {e}")))?;
        let attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: XDP_FLAGS_DRV_MODE,
        };
        // SAFETY: bpf(2) reads `attr` (its size passed), alive for the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_LINK_CREATE,
                &attr as *const LinkCreateAttr,
                std::mem::size_of::<LinkCreateAttr>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: a fresh fd the kernel returned, owned by nobody else.
            _link: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            _prog: prog,
        })
    }
}

/// Frames per BPF_PROG_TEST_RUN call: tens of milliseconds of sending, so
/// the loop checks its stop flag and deadline often. Each call sets up a
/// fresh page pool, so small calls cost the generator much more (8,192 per
/// call sent about 8x fewer frames per second than 65,536 here).
pub const FRAMES_PER_CALL: u32 = 65536;

/// Frames per batch inside a call, and so the size of the call's page pool
/// ring (the kernel's maximum, `TEST_XDP_MAX_BATCH`). Frames come back to
/// that pool from the receiving core; a larger ring overflows less.
const BATCH: u32 = 256;

/// What a flood from [`flood_in_netns`] sent.
pub struct Sent {
    /// Frames handed to the redirect (those veth found no ring room for
    /// are in the receiving end's `rx_dropped`).
    pub frames: u64,
    /// How long it ran.
    pub secs: f64,
}

/// A flood to start: `frame` through the device `ifindex` of namespace
/// `ns`, from a thread pinned to `cpu` (which picks the receive queue: the
/// CPU modulo the queue count) at nice level `nice` (19: idle time only).
pub struct Generator {
    pub ns: String,
    pub ifindex: u32,
    pub frame: Vec<u8>,
    pub cpu: usize,
    pub nice: i32,
}

impl Generator {
    /// Starts the flood; it ends when `secs` pass, `max` frames are sent or
    /// `stop` is set, whichever comes first.
    pub fn spawn(
        self,
        secs: f64,
        max: u64,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<Sent> {
        std::thread::spawn(move || {
            enter(&self.ns);
            pin_current_thread(self.cpu);
            if self.nice != 0 {
                // SAFETY: setpriority on the calling thread (tid 0 = caller).
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, self.nice);
                }
            }
            let prog = Redirector::load(self.ifindex).expect("load the frame generator");
            let start = Instant::now();
            let deadline = start + Duration::from_secs_f64(secs);
            let mut frames = 0u64;
            while frames < max && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let n = FRAMES_PER_CALL.min((max - frames) as u32);
                match prog.send(&self.frame, n) {
                    Ok(()) => frames += u64::from(n),
                    // A signal cut the batch short; the receiver's counters
                    // say how many arrived.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("BPF_PROG_TEST_RUN (live frames): {e}"),
                }
            }
            Sent {
                frames,
                secs: start.elapsed().as_secs_f64(),
            }
        })
    }
}

/// The ifindex and MAC address of `dev` inside namespace `ns`.
pub fn ns_device(ns: &Netns, dev: &str) -> (u32, [u8; 6]) {
    let ifindex = ns
        .sh(&["cat", &format!("/sys/class/net/{dev}/ifindex")])
        .trim()
        .parse()
        .expect("ifindex");
    let mac = parse_mac(&ns.sh(&["cat", &format!("/sys/class/net/{dev}/address")]));
    (ifindex, mac)
}

/// The MAC address of `dev` in this namespace.
pub fn host_mac(dev: &str) -> [u8; 6] {
    parse_mac(
        &std::fs::read_to_string(format!("/sys/class/net/{dev}/address")).expect("MAC address"),
    )
}

/// An Ethernet + IPv4 + UDP frame with `payload` zero bytes: a valid IPv4
/// header checksum (the stack checks it when the frame passes), UDP
/// checksum 0 (none, allowed for IPv4).
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: usize,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src_port.to_be_bytes());
    f.extend_from_slice(&dst_port.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(f.len() + payload, 0);
    f
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    let parts: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).expect("MAC byte"))
        .collect();
    assert_eq!(parts.len(), 6, "MAC address {s:?}");
    m.copy_from_slice(&parts);
    m
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// ethtool commands on one feature flag (`struct ethtool_value`).
const ETHTOOL_SGRO: u32 = 0x2c;
const ETHTOOL_STSO: u32 = 0x1f;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// `ethtool -K <dev> <feature> on|off` through SIOCETHTOOL, for the
/// device named `dev` in the calling thread's namespace.
fn set_feature(dev: &str, cmd: u32, on: bool) -> io::Result<()> {
    let mut value = EthtoolValue {
        cmd,
        data: u32::from(on),
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut value,
        _pad: [0; 16],
    };
    let n = dev.len().min(15);
    req.name[..n].copy_from_slice(&dev.as_bytes()[..n]);
    // SAFETY: a plain datagram socket, closed by OwnedFd.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points
    // to, both alive for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ethtool -K <dev> gro on|off`. On a veth without an XDP program GRO
/// turns NAPI on, which its receive side needs to take redirected frames.
pub fn set_gro(dev: &str, on: bool) -> io::Result<()> {
    set_feature(dev, ETHTOOL_SGRO, on)
}

/// `ethtool -K <dev> tso off` (all TSO flavours). veth hands a TSO-capable
/// sender's TCP skbs to its peer's NAPI ring only when the sender has no
/// TSO (an XDP program on the peer clears it by itself); with it, they
/// bypass the ring (netif_rx). Turned off so every case takes one path.
pub fn set_tso(dev: &str, on: bool) -> io::Result<()> {
    set_feature(dev, ETHTOOL_STSO, on)
}

/// The host end's receive counters: (`rx_packets`, `rx_dropped`).
pub fn rx_counters(dev: &str) -> (u64, u64) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{dev}/statistics/{f}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    (read("rx_packets"), read("rx_dropped"))
}
