//! CPU time and memory of the server's processes (and of the harness), read from `/proc`
//! with the `procfs` crate.
//!
//! The report uses it for the server under test (`--server-pid`, one process or several:
//! `pidof corecast` may name more than one) and for the harness itself: CPU seconds are
//! `utime + stime` of `/proc/PID/stat`, memory is `VmRSS` (now) and `VmHWM` (the peak since
//! the process started) of `/proc/PID/status`. Several processes are summed.
//!
//! # Tricky parts
//! - `VmHWM` is the peak over the process's whole life, not over the run; the report also
//!   gives the largest `VmRSS` sampled during the run, which is. With several processes the
//!   peak is of the summed RSS at one sample, and `VmHWM` is the sum of the processes' peaks
//!   (an upper bound: they need not have peaked at once).
//! - A process that exits during the run keeps the CPU time it had used at its last sample
//!   and stops counting towards RSS; the run's usage says it was gone at the end.

use procfs::process::{Process, Stat, Status};
use procfs::FromRead as _;
use serde::Serialize;

/// Why a process could not be sampled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    /// The process's proc files could not be read (most often: the process is gone).
    #[error("reading /proc/{pid}: {source}")]
    Read {
        /// The process.
        pid: u32,
        /// What procfs said.
        source: procfs::ProcError,
    },
    /// No process was named.
    #[error("no process to watch")]
    NoProcess,
}

/// One reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started, KiB.
    pub hwm_kib: u64,
}

impl ProcSample {
    /// The sum of two readings (of two processes).
    fn plus(self, other: ProcSample) -> ProcSample {
        ProcSample {
            cpu_secs: self.cpu_secs + other.cpu_secs,
            rss_kib: self.rss_kib + other.rss_kib,
            hwm_kib: self.hwm_kib + other.hwm_kib,
        }
    }
}

/// Reads `pid`'s counters now.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let read = |source| ProcError::Read { pid, source };
    // A pid above i32::MAX names no process; -1 is refused by procfs like any absent one.
    let process = Process::new(i32::try_from(pid).unwrap_or(-1)).map_err(read)?;
    let stat = process.stat().map_err(read)?;
    let status = process.status().map_err(read)?;
    Ok(from_stat_status(&stat, &status))
}

/// A reading from parsed `stat` and `status`.
fn from_stat_status(stat: &Stat, status: &Status) -> ProcSample {
    ProcSample {
        cpu_secs: (stat.utime + stat.stime) as f64 / procfs::ticks_per_second().max(1) as f64,
        rss_kib: status.vmrss.unwrap_or(0),
        hwm_kib: status.vmhwm.unwrap_or(0),
    }
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let stat = Stat::from_read(stat.as_bytes()).ok()?;
    Some(stat.utime + stat.stime)
}

/// `VmRSS` and `VmHWM`, KiB, from the text of `/proc/PID/status` (`None` where absent, as
/// for kernel threads).
pub fn parse_status_kib(status: &str) -> Option<(Option<u64>, Option<u64>)> {
    let status = Status::from_read(status.as_bytes()).ok()?;
    Some((status.vmrss, status.vmhwm))
}

/// What the watched processes used over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// CPU seconds spent during the run.
    pub cpu_secs: f64,
    /// Largest RSS sampled during the run, KiB.
    pub peak_rss_kib: u64,
    /// The processes' lifetime peak RSS at the last sample, KiB.
    pub hwm_kib: u64,
    /// Samples taken.
    pub samples: u64,
    /// Whether every process could still be sampled at the end.
    pub alive_at_end: bool,
}

/// One watched process.
#[derive(Debug, Clone)]
struct Watched {
    pid: u32,
    first: ProcSample,
    last: ProcSample,
    alive: bool,
}

/// Samples one process, or several summed, over a run.
#[derive(Debug, Clone)]
pub struct Watcher {
    watched: Vec<Watched>,
    peak_rss_kib: u64,
    samples: u64,
}

impl Watcher {
    /// Starts watching `pids` with a first sample of each; every one must exist.
    pub fn start(pids: &[u32]) -> Result<Watcher, ProcError> {
        if pids.is_empty() {
            return Err(ProcError::NoProcess);
        }
        let mut watched = Vec::with_capacity(pids.len());
        for &pid in pids {
            let first = sample(pid)?;
            watched.push(Watched {
                pid,
                first,
                last: first,
                alive: true,
            });
        }
        let mut watcher = Watcher {
            watched,
            peak_rss_kib: 0,
            samples: 1,
        };
        watcher.peak_rss_kib = watcher.current().rss_kib;
        Ok(watcher)
    }

    /// The watched processes.
    pub fn pids(&self) -> Vec<u32> {
        self.watched.iter().map(|w| w.pid).collect()
    }

    /// The sum of the last samples: CPU of every process, RSS of the live ones.
    fn current(&self) -> ProcSample {
        self.watched
            .iter()
            .map(|w| ProcSample {
                rss_kib: if w.alive { w.last.rss_kib } else { 0 },
                ..w.last
            })
            .fold(ProcSample::default(), ProcSample::plus)
    }

    /// Takes a sample of every process; returns their sum, or `None` when all are gone.
    pub fn sample(&mut self) -> Option<ProcSample> {
        for w in &mut self.watched {
            match sample(w.pid) {
                Ok(s) => {
                    w.last = s;
                    w.alive = true;
                }
                Err(_) => w.alive = false,
            }
        }
        if !self.watched.iter().any(|w| w.alive) {
            return None;
        }
        self.samples += 1;
        let now = self.current();
        self.peak_rss_kib = self.peak_rss_kib.max(now.rss_kib);
        Some(now)
    }

    /// The sum of the last successful samples.
    pub fn last(&self) -> Option<ProcSample> {
        Some(self.current())
    }

    /// Totals from the first to the last sample.
    pub fn usage(&self) -> Usage {
        let first = self
            .watched
            .iter()
            .map(|w| w.first)
            .fold(ProcSample::default(), ProcSample::plus);
        let last = self.current();
        Usage {
            cpu_secs: (last.cpu_secs - first.cpu_secs).max(0.0),
            peak_rss_kib: self.peak_rss_kib,
            hwm_kib: self.watched.iter().map(|w| w.last.hwm_kib).sum(),
            samples: self.samples,
            alive_at_end: self.watched.iter().all(|w| w.alive),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        // A whole line, as the kernel writes it: procfs refuses a line cut short.
        let stat = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    3 0 100 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 \
                    0 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    /// A whole `/proc/PID/status` with the given memory lines.
    fn status_text(memory: &str) -> String {
        format!(
            "Name:\tcorecast\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nNgid:\t0\n\
             Pid:\t42\nPPid:\t1\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
             FDSize:\t64\nGroups:\t\n{memory}Threads:\t3\nSigQ:\t0/127360\n\
             SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
             SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\n\
             SigCgt:\t0000000180000000\nCapInh:\t0000000000000000\n\
             CapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n"
        )
    }

    #[test]
    fn status_fields() {
        let status = status_text("VmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n");
        let (rss, hwm) = parse_status_kib(&status).unwrap();
        assert_eq!(hwm, Some(20480));
        assert_eq!(rss, Some(10240));
        // A kernel thread has no memory lines.
        assert_eq!(parse_status_kib(&status_text("")), Some((None, None)));
        assert_eq!(parse_status_kib("Name:\tx\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let mut w = Watcher::start(&[std::process::id()]).unwrap();
        // Burn a little CPU so the second sample can differ.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let s = w.sample().unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.hwm_kib >= s.rss_kib);
        let u = w.usage();
        assert!(u.cpu_secs >= 0.0);
        assert!(u.alive_at_end);
        assert_eq!(u.samples, 2);
    }

    #[test]
    fn several_processes_are_summed() {
        let me = std::process::id();
        let mut one = Watcher::start(&[me]).unwrap();
        // The same process twice: every figure doubles (near enough: RSS moves a little).
        let mut two = Watcher::start(&[me, me]).unwrap();
        let (a, b) = (one.sample().unwrap(), two.sample().unwrap());
        assert_eq!(two.pids(), vec![me, me]);
        assert!(b.rss_kib > a.rss_kib * 3 / 2, "{a:?} {b:?}");
        assert!(b.cpu_secs >= a.cpu_secs * 2.0 - 0.1, "{a:?} {b:?}");
        assert!(two.usage().peak_rss_kib >= b.rss_kib);
        assert!(matches!(Watcher::start(&[]), Err(ProcError::NoProcess)));
        assert!(Watcher::start(&[me, u32::MAX]).is_err());
    }

    #[test]
    fn a_process_that_exits_keeps_its_cpu_and_leaves_rss() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let mut w = Watcher::start(&[me, child.id()]).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let s = w.sample().unwrap();
        assert!(s.rss_kib > 0);
        let u = w.usage();
        assert!(!u.alive_at_end);
        assert!(u.cpu_secs >= 0.0);
    }

    #[test]
    fn missing_process_is_an_error() {
        // PIDs are below 2^22 on Linux.
        assert!(matches!(sample(u32::MAX), Err(ProcError::Read { .. })));
    }
}
