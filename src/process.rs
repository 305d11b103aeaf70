//! What the operating system says about this process and the machine: resident memory, and CPU time to tell how
//! busy the other cores were during a measurement. Linux `/proc` only; elsewhere the figures are NaN / absent.

/// Which resident-set figure to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// Resident now (`VmRSS`).
    Current,
    /// The process's peak so far (`VmHWM`).
    Peak,
}

/// Resident memory of this process, MiB (0 when `/proc` is not there).
pub fn memory_mib(which: Memory) -> f64 {
    let key = match which {
        Memory::Current => "VmRSS:",
        Memory::Peak => "VmHWM:",
    };
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Memory the machine can give a new allocation without swapping (`MemAvailable` of `/proc/meminfo`), bytes;
/// `None` where `/proc` is not there.
pub fn available_memory_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    })
}

/// CPU time in USER_HZ ticks: the whole machine's busy and total time (`/proc/stat`), and this process's own plus
/// its waited-for children's (`/proc/self/stat`).
#[derive(Clone, Copy, Debug)]
pub struct CpuSnapshot {
    busy: u64,
    total: u64,
    ours: u64,
}

impl CpuSnapshot {
    pub fn take() -> Option<CpuSnapshot> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let f: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is already inside user).
        let busy =
            f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7).unwrap_or(&0);
        let total = busy + f.get(3)? + f.get(4)?;
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, from ppid (field 4) on; utime stime cutime cstime are fields 14–17.
        let g: Vec<i64> = me
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ours = (g.get(10)? + g.get(11)? + g.get(12)? + g.get(13)?).max(0) as u64;
        Some(CpuSnapshot { busy, total, ours })
    }
}

/// Cores kept busy by other processes between two snapshots, on average: the machine's busy time less this
/// process's and its children's, as a share of all CPU time, times the core count. Near 0 on a quiet machine.
pub fn other_load(before: Option<CpuSnapshot>, after: Option<CpuSnapshot>) -> f64 {
    let (Some(a), Some(b)) = (before, after) else {
        return f64::NAN;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let total = b.total.saturating_sub(a.total).max(1) as f64;
    let others = b.busy.saturating_sub(a.busy) as f64 - b.ours.saturating_sub(a.ours) as f64;
    (others.max(0.0) / total * cores * 100.0).round() / 100.0
}
