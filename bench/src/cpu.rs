//! CPU time per core from /proc/stat, and pinning threads to a core.

/// Kernel nanoseconds of `cpu` since boot: system, irq and softirq time,
/// where packet receive work is accounted. User time is left out, so other
/// programs' userspace work on the machine does not pollute the figure.
pub fn busy_ns(cpu: usize) -> u64 {
    let t = ticks(cpu);
    // Fields: user nice system idle iowait irq softirq steal ...
    (t[2] + t[5] + t[6]) * TICK_NS
}

/// USER_HZ is 100 on Linux: one `/proc/stat` tick is 10 ms.
const TICK_NS: u64 = 10_000_000;

/// The tick counters of `cpu`'s line in `/proc/stat`, in the file's order.
fn ticks(cpu: usize) -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let name = format!("cpu{cpu} ");
    let line = stat
        .lines()
        .find(|l| l.starts_with(&name))
        .expect("cpu line");
    line.split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Pins an existing thread (by tid) to `cpu`.
pub fn pin_tid(tid: i32, cpu: usize) -> bool {
    // SAFETY: as above, for another thread id.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Thread ids whose name starts with `prefix` (kernel threads included).
pub fn threads_named(prefix: &str) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim().starts_with(prefix) {
                out.push(pid);
            }
        }
    }
    out
}

/// The threaded-NAPI kernel threads of `dev` (named `napi/<dev>-<napi id>`),
/// matched on the name as the kernel keeps it: 15 bytes, so a long device
/// name loses its tail (and the id) and a prefix of 16 or more would never
/// match.
pub fn napi_threads(dev: &str) -> Vec<i32> {
    let full = format!("napi/{dev}-");
    threads_named(&full[..full.len().min(15)])
}

/// CPU time (user + system) of a thread so far, in nanoseconds.
pub fn thread_cpu_ns(tid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).unwrap_or_default();
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // USER_HZ is 100 on Linux: one tick is 10 ms.
    f.iter().sum::<u64>() * 10_000_000
}

/// Time `cpu` spent in user, system and interrupt (irq + softirq) mode
/// since boot, in nanoseconds, from /proc/stat.
#[derive(Clone, Copy, Default)]
pub struct CpuSplit {
    pub user_ns: u64,
    pub system_ns: u64,
    pub softirq_ns: u64,
}

impl CpuSplit {
    pub fn now(cpu: usize) -> Self {
        let f = ticks(cpu);
        // Fields: user nice system idle iowait irq softirq ...
        Self {
            user_ns: (f[0] + f[1]) * TICK_NS,
            system_ns: f[2] * TICK_NS,
            softirq_ns: (f[5] + f[6]) * TICK_NS,
        }
    }

    /// The time spent between `earlier` and `self`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            system_ns: self.system_ns.saturating_sub(earlier.system_ns),
            softirq_ns: self.softirq_ns.saturating_sub(earlier.softirq_ns),
        }
    }
}
