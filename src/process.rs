//! What the operating system says about this process and the machine: resident memory (with a per-run peak,
//! [`RunPeak`]), and CPU time to tell how busy the other cores were during a measurement. Linux `/proc` only;
//! elsewhere the figures are NaN / absent.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Which resident-set figure to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// Resident now (`VmRSS`).
    Current,
    /// The process's peak since it started or since the last [`reset_peak`] (`VmHWM`). [`RunPeak`] turns it
    /// into a per-run figure.
    Peak,
}

/// Keeps memory that training frees inside the process for its next step. glibc hands large blocks back to the
/// kernel when they are freed (`mmap`ped blocks, and the heap's top past the trim threshold), so every step
/// faulted its activations' pages in again, zero-filled by the kernel: about 5 % of a training step in `perf`.
/// With both thresholds raised, the next step reuses the same pages. On the bench model the peak resident memory
/// did not move (a step's blocks are alive at once anyway); heap fragmentation could raise it on other workloads. Only for processes that run one job: a study's per-run
/// peak ([`RunPeak`]) would otherwise count memory an earlier run left behind. A no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; callers run it at start-up, before other threads allocate.
    unsafe {
        // 32 MiB is the largest mmap threshold glibc accepts on 64-bit. A rejected setting leaves glibc's
        // default: nothing to report.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        // Blocks above that threshold (a 4096² layer's ΔW and its gradients, a big vocabulary's logits) come from
        // the heap too, instead of being mapped afresh on every use: the 4096² layer bench's materialised step at
        // B = 256 went from 576–598 to 289–352 ms, its Khatri–Rao step at B = 2048 from 727–840 to 557–651 ms
        // (alternated), peak memory the same within 31 MiB. (If the heap cannot grow, glibc still maps.)
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
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

/// Resets this process's resident-memory high-water mark (`VmHWM`) to its current resident memory, by writing
/// "5" to `/proc/self/clear_refs` (Linux ≥ 4.0). False where that is not possible; the mark then keeps counting
/// from the start of the process.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// What a peak-memory figure taken by [`RunPeak`] covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeakScope {
    /// The high-water mark was reset when the run started and no other run was in flight at any time during it:
    /// the process's peak resident memory during this run (what the process already held at its start
    /// included).
    Run,
    /// Other runs of this process were in flight during this run (parallel runs in threads of one process share
    /// one high-water mark, which is reset only when a run starts alone): the process's peak over a window that
    /// covers this run and the runs overlapping it, an upper bound on this run's own peak.
    Overlapping,
    /// The high-water mark could not be reset (not Linux): the process's peak since it started.
    Process,
}

impl PeakScope {
    pub fn name(self) -> &'static str {
        match self {
            PeakScope::Run => "run",
            PeakScope::Overlapping => "overlapping",
            PeakScope::Process => "process",
        }
    }
}

static RUNS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static RUNS_STARTED: AtomicU64 = AtomicU64::new(0);

/// Per-run peak-memory accounting: started when a run starts, read when it ends. A run that starts while no
/// other is in flight resets the process's high-water mark, so runs executed one after another in one process
/// each get their own peak; runs that overlap in time are reported as [`PeakScope::Overlapping`].
#[must_use]
pub struct RunPeak {
    alone_at_start: bool,
    reset: bool,
    /// [`RUNS_STARTED`] after this run's own start: any other start moves it on.
    started: u64,
}

impl RunPeak {
    pub fn start() -> Self {
        let others = RUNS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        let started = RUNS_STARTED.fetch_add(1, Ordering::SeqCst) + 1;
        let reset = others == 0 && reset_peak();
        RunPeak {
            alone_at_start: others == 0,
            reset,
            started,
        }
    }

    /// The peak so far (MiB) and what it covers.
    pub fn read(&self) -> (f64, PeakScope) {
        let peak = memory_mib(Memory::Peak);
        let overlapped =
            !self.alone_at_start || RUNS_STARTED.load(Ordering::SeqCst) != self.started;
        let scope = if overlapped {
            PeakScope::Overlapping
        } else if self.reset {
            PeakScope::Run
        } else {
            PeakScope::Process
        };
        (peak, scope)
    }
}

impl Drop for RunPeak {
    fn drop(&mut self) {
        RUNS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(mib: usize) -> Vec<u8> {
        let mut v = vec![0u8; mib << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        // The caller only drops it: without the barrier an optimiser may leave the pages untouched.
        std::hint::black_box(v)
    }

    /// Other tests of this binary may start runs concurrently; the per-run comparison is asserted only when both
    /// runs had the process to themselves, the labelling of overlapping runs always.
    #[test]
    fn sequential_runs_get_their_own_peak_and_overlapping_ones_are_labelled() {
        let first = RunPeak::start();
        let big = touch(96);
        let (peak_first, scope_first) = first.read();
        drop(big);
        drop(first);
        let second = RunPeak::start();
        let small = touch(4);
        let (peak_second, scope_second) = second.read();
        drop(small);
        if cfg!(target_os = "linux") && reset_peak() {
            assert_ne!(scope_first, PeakScope::Process);
        }
        if scope_first == PeakScope::Run && scope_second == PeakScope::Run {
            // The second run allocated far less; its peak must not carry the first run's 96 MiB.
            assert!(
                peak_second < peak_first - 48.0,
                "second run's peak {peak_second:.1} MiB still includes the first's {peak_first:.1} MiB"
            );
        }
        // A run that starts while another is in flight, and the one it overlapped, are both labelled.
        let third = RunPeak::start();
        assert_eq!(third.read().1, PeakScope::Overlapping);
        drop(third);
        assert_eq!(second.read().1, PeakScope::Overlapping);
    }
}
