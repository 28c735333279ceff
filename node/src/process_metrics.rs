//! Process metrics under the names every Prometheus client library exports
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, …), read
//! from `/proc/self` (the `procfs` crate) at each scrape.
//!
//! Why not the prometheus crate's `ProcessCollector`: it exports CPU time as an *integer*
//! counter, `(utime + stime) / CLK_TCK` truncated to whole seconds, so a node using a third of
//! a core showed `rate(process_cpu_seconds_total[1m]) = 0` for minutes and the dashboards' CPU
//! panels stayed flat. Here CPU time is the kernel's clock ticks over the tick rate, a
//! fractional number of seconds at the kernel's resolution (10 ms at 100 Hz).
//!
//! Reading `/proc` is the I/O part ([`ProcessSample::read`]); turning a sample into metric
//! families is pure ([`ProcessSample::families`]) and unit tested.

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};

use crate::metrics::names;

/// One reading of `/proc/self`, in the units the kernel gives.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, usually 100).
    pub ticks_per_second: u64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Threads in the process.
    pub threads: u64,
    /// Open file descriptors (None where `/proc/self/fd` cannot be listed).
    pub open_fds: Option<u64>,
    /// The soft limit on open files (None when unlimited or unreadable).
    pub max_fds: Option<u64>,
}

impl ProcessSample {
    /// Reads `/proc/self`; None on a system without it.
    pub fn read() -> Option<ProcessSample> {
        let process = procfs::process::Process::myself().ok()?;
        let stat = process.stat().ok()?;
        let max_fds =
            process
                .limits()
                .ok()
                .and_then(|limits| match limits.max_open_files.soft_limit {
                    procfs::process::LimitValue::Value(max) => Some(max),
                    procfs::process::LimitValue::Unlimited => None,
                });
        Some(ProcessSample {
            cpu_ticks: stat.utime + stat.stime,
            ticks_per_second: procfs::ticks_per_second(),
            resident_bytes: stat.rss.saturating_mul(procfs::page_size()),
            virtual_bytes: stat.vsize,
            threads: u64::try_from(stat.num_threads).unwrap_or(0),
            open_fds: process.fd_count().ok().map(|n| n as u64),
            max_fds,
        })
    }

    /// CPU time in seconds, with the fraction the ticks give.
    pub fn cpu_seconds(&self) -> f64 {
        if self.ticks_per_second == 0 {
            return 0.0;
        }
        self.cpu_ticks as f64 / self.ticks_per_second as f64
    }

    /// The metric families of this sample; `start_time` is the process's start, in seconds
    /// since the Unix epoch, when known.
    pub fn families(&self, start_time: Option<f64>) -> Vec<MetricFamily> {
        let mut families = vec![
            counter(names::PROCESS_CPU_SECONDS, CPU_HELP, self.cpu_seconds()),
            gauge(
                names::PROCESS_RESIDENT_MEMORY,
                RESIDENT_HELP,
                self.resident_bytes as f64,
            ),
            gauge(
                names::PROCESS_VIRTUAL_MEMORY,
                VIRTUAL_HELP,
                self.virtual_bytes as f64,
            ),
            gauge(names::PROCESS_THREADS, THREADS_HELP, self.threads as f64),
        ];
        if let Some(open) = self.open_fds {
            families.push(gauge(names::PROCESS_OPEN_FDS, OPEN_FDS_HELP, open as f64));
        }
        if let Some(max) = self.max_fds {
            families.push(gauge(names::PROCESS_MAX_FDS, MAX_FDS_HELP, max as f64));
        }
        if let Some(start) = start_time {
            families.push(gauge(names::PROCESS_START_TIME, START_HELP, start));
        }
        families
    }
}

const CPU_HELP: &str = "Total user and system CPU time spent in seconds.";
const RESIDENT_HELP: &str = "Resident memory size in bytes.";
const VIRTUAL_HELP: &str = "Virtual memory size in bytes.";
const THREADS_HELP: &str = "Number of OS threads in the process.";
const OPEN_FDS_HELP: &str = "Number of open file descriptors.";
const MAX_FDS_HELP: &str = "Maximum number of open file descriptors.";
const START_HELP: &str = "Start time of the process since unix epoch in seconds.";

/// When this process started, in seconds since the Unix epoch: its start in ticks after
/// boot, plus the boot time. Read once: it never changes.
fn start_time() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let boot = procfs::boot_time_secs().ok()?;
    let ticks = procfs::ticks_per_second();
    (ticks > 0).then(|| boot as f64 + stat.starttime as f64 / ticks as f64)
}

fn family(name: &str, help: &str, kind: MetricType, metric: Metric) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(vec![metric]);
    family
}

fn counter(name: &str, help: &str, value: f64) -> MetricFamily {
    let mut counter = Counter::default();
    counter.set_value(value);
    let mut metric = Metric::default();
    metric.set_counter(counter);
    family(name, help, MetricType::COUNTER, metric)
}

fn gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    family(name, help, MetricType::GAUGE, Metric::from_gauge(gauge))
}

/// The collector registered with the node's registry.
pub struct ProcessCollector {
    descs: Vec<Desc>,
    /// Read at construction: a process's start time does not change.
    start_time: Option<f64>,
}

impl ProcessCollector {
    /// A collector for this process.
    pub fn new() -> ProcessCollector {
        let descs = [
            (names::PROCESS_CPU_SECONDS, CPU_HELP),
            (names::PROCESS_RESIDENT_MEMORY, RESIDENT_HELP),
            (names::PROCESS_VIRTUAL_MEMORY, VIRTUAL_HELP),
            (names::PROCESS_THREADS, THREADS_HELP),
            (names::PROCESS_OPEN_FDS, OPEN_FDS_HELP),
            (names::PROCESS_MAX_FDS, MAX_FDS_HELP),
            (names::PROCESS_START_TIME, START_HELP),
        ]
        .into_iter()
        .map(|(name, help)| {
            Desc::new(name.into(), help.into(), Vec::new(), HashMap::new())
                .expect("valid metric description")
        })
        .collect();
        ProcessCollector {
            descs,
            start_time: start_time(),
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        ProcessSample::read()
            .map(|sample| sample.families(self.start_time))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu_ticks: u64) -> ProcessSample {
        ProcessSample {
            cpu_ticks,
            ticks_per_second: 100,
            resident_bytes: 4096,
            virtual_bytes: 8192,
            threads: 3,
            open_fds: Some(12),
            max_fds: Some(1024),
        }
    }

    fn value(families: &[MetricFamily], name: &str) -> Option<f64> {
        let family = families.iter().find(|f| f.name() == name)?;
        let metric = family.get_metric().first()?;
        Some(match family.get_field_type() {
            MetricType::COUNTER => metric.get_counter().get_value(),
            _ => metric.get_gauge().get_value(),
        })
    }

    #[test]
    fn cpu_time_keeps_the_fraction_of_a_second() {
        assert_eq!(sample(150).cpu_seconds(), 1.5);
        assert_eq!(sample(7).cpu_seconds(), 0.07);
        assert_eq!(sample(0).cpu_seconds(), 0.0);
    }

    #[test]
    fn cpu_time_is_a_counter_and_memory_a_gauge() {
        let families = sample(250).families(Some(1_700_000_000.5));
        let cpu = families
            .iter()
            .find(|f| f.name() == names::PROCESS_CPU_SECONDS)
            .expect("cpu family");
        assert_eq!(cpu.get_field_type(), MetricType::COUNTER);
        assert_eq!(value(&families, names::PROCESS_CPU_SECONDS), Some(2.5));
        assert_eq!(
            value(&families, names::PROCESS_RESIDENT_MEMORY),
            Some(4096.0)
        );
        assert_eq!(value(&families, names::PROCESS_OPEN_FDS), Some(12.0));
        assert_eq!(value(&families, names::PROCESS_MAX_FDS), Some(1024.0));
        assert_eq!(
            value(&families, names::PROCESS_START_TIME),
            Some(1_700_000_000.5)
        );
    }

    #[test]
    fn what_cannot_be_read_is_left_out_not_exported_as_zero() {
        let mut s = sample(1);
        s.open_fds = None;
        s.max_fds = None;
        let families = s.families(None);
        assert_eq!(value(&families, names::PROCESS_OPEN_FDS), None);
        assert_eq!(value(&families, names::PROCESS_MAX_FDS), None);
        assert_eq!(value(&families, names::PROCESS_START_TIME), None);
        assert_eq!(value(&families, names::PROCESS_CPU_SECONDS), Some(0.01));
    }

    #[test]
    fn a_zero_tick_rate_does_not_divide_by_zero() {
        let mut s = sample(100);
        s.ticks_per_second = 0;
        assert_eq!(s.cpu_seconds(), 0.0);
    }

    #[test]
    fn this_process_reads_and_its_collector_describes_every_family_it_collects() {
        let collector = ProcessCollector::new();
        let described: Vec<&str> = collector
            .desc()
            .iter()
            .map(|d| d.fq_name.as_str())
            .collect();
        let collected = collector.collect();
        assert!(collected.len() >= 4, "a Linux /proc gives at least four");
        for family in &collected {
            assert!(described.contains(&family.name()), "{}", family.name());
        }
        assert!(collector.start_time.is_some_and(|t| t > 1_600_000_000.0));
    }
}
