//! The node's resident memory, read from `/proc`, for the tests that bound what an attack or
//! a stalled client may cost.

/// The resident set size of process `pid`, in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .expect("VmRSS of the node")
}

/// What one attack may add to a node's RSS: generous for a debug build on a busy machine,
/// and far below what the attacks cost before they were bounded (hundreds of MB). The node's
/// allocator (mimalloc) commits memory in 2 MiB steps, so small costs show as 2 MiB multiples:
/// the reply attack measured +10 MiB (with a 512 KiB queue bound), the others +0 to +2.5 MiB.
pub const ATTACK_GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// Asserts that process `pid`'s RSS grew by less than `bound_kib` since `before` (KiB).
pub fn assert_growth_bounded(pid: u32, before: u64, bound_kib: u64, what: &str) {
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    eprintln!("{what}: RSS +{grown} KiB");
    assert!(
        grown < bound_kib,
        "{what}: RSS grew by {grown} KiB ({before} -> {after} KiB)"
    );
}
