//! CPU time and memory of a process, from `/proc/PID/stat` and `/proc/PID/status` (Linux
//! proc(5)).
//!
//! The report uses it for the server under test (`--server-pid`) and for the harness itself:
//! CPU seconds are `utime + stime` (fields 14 and 15 of `stat`, in clock ticks), memory is
//! `VmRSS` (now) and `VmHWM` (the peak since the process started) from `status`.
//!
//! # Tricky parts
//! - Field 2 of `stat` is the command name in parentheses and may itself contain spaces and
//!   parentheses, so fields are counted from the *last* `)`.
//! - `VmHWM` is the peak over the process's whole life, not over the run; the report also
//!   gives the largest `VmRSS` sampled during the run, which is.

use std::path::PathBuf;

use serde::Serialize;

/// Why a process could not be sampled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    /// The proc file could not be read (most often: the process is gone).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The proc file did not have the expected shape.
    #[error("unexpected format of {0}")]
    Format(PathBuf),
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

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on every Linux in practice).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Reads `pid`'s counters now.
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(&stat_path).map_err(|source| ProcError::Read {
        path: stat_path.clone(),
        source,
    })?;
    let ticks = parse_stat_ticks(&stat).ok_or(ProcError::Format(stat_path))?;
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&status_path).map_err(|source| ProcError::Read {
        path: status_path.clone(),
        source,
    })?;
    Ok(ProcSample {
        cpu_secs: ticks as f64 / clock_ticks(),
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (state), so field N is `fields[N - 3]`.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   123 kB` line of `/proc/PID/status`, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What a process used over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// CPU seconds spent during the run.
    pub cpu_secs: f64,
    /// Largest RSS sampled during the run, KiB.
    pub peak_rss_kib: u64,
    /// The process's lifetime peak RSS at the last sample, KiB.
    pub hwm_kib: u64,
    /// Samples taken.
    pub samples: u64,
    /// Whether the process could still be sampled at the end.
    pub alive_at_end: bool,
}

/// Samples one process over a run.
#[derive(Debug, Clone)]
pub struct Watcher {
    pid: u32,
    first: Option<ProcSample>,
    last: Option<ProcSample>,
    peak_rss_kib: u64,
    samples: u64,
    alive: bool,
}

impl Watcher {
    /// Starts watching `pid` with a first sample.
    pub fn start(pid: u32) -> Result<Watcher, ProcError> {
        let first = sample(pid)?;
        Ok(Watcher {
            pid,
            first: Some(first),
            last: Some(first),
            peak_rss_kib: first.rss_kib,
            samples: 1,
            alive: true,
        })
    }

    /// The watched process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Takes a sample; returns it, or `None` when the process is gone.
    pub fn sample(&mut self) -> Option<ProcSample> {
        match sample(self.pid) {
            Ok(s) => {
                self.peak_rss_kib = self.peak_rss_kib.max(s.rss_kib);
                self.last = Some(s);
                self.samples += 1;
                self.alive = true;
                Some(s)
            }
            Err(_) => {
                self.alive = false;
                None
            }
        }
    }

    /// The last successful sample.
    pub fn last(&self) -> Option<ProcSample> {
        self.last
    }

    /// Totals from the first to the last sample.
    pub fn usage(&self) -> Usage {
        let (first, last) = match (self.first, self.last) {
            (Some(f), Some(l)) => (f, l),
            _ => return Usage::default(),
        };
        Usage {
            cpu_secs: (last.cpu_secs - first.cpu_secs).max(0.0),
            peak_rss_kib: self.peak_rss_kib,
            hwm_kib: last.hwm_kib,
            samples: self.samples,
            alive_at_end: self.alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let stat = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    3 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tcorecast\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn samples_this_process() {
        let mut w = Watcher::start(std::process::id()).unwrap();
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
    fn missing_process_is_an_error() {
        // PIDs are below 2^22 on Linux.
        assert!(matches!(sample(u32::MAX), Err(ProcError::Read { .. })));
    }
}
