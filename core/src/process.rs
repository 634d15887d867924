//! This process's own figures for INFO (server and proxy alike).

/// Resident set size (bytes), from /proc.
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// CPU time used so far (system, user), in seconds.
pub fn cpu_times() -> (f64, f64) {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time of the child processes that ended and were waited for (system, user), in
/// seconds (a server's forked snapshot writers).
pub fn children_cpu_times() -> (f64, f64) {
    rusage(libc::RUSAGE_CHILDREN)
}

fn rusage(who: libc::c_int) -> (f64, f64) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes into the struct it is given.
    if unsafe { libc::getrusage(who, ru.as_mut_ptr()) } != 0 {
        return (0.0, 0.0);
    }
    // SAFETY: zeroed, then filled by getrusage.
    let ru = unsafe { ru.assume_init() };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_stime), t(ru.ru_utime))
}

#[cfg(test)]
mod tests {
    #[test]
    fn figures_of_a_running_process() {
        assert!(super::rss_bytes() > 0);
        let (sys, user) = super::cpu_times();
        assert!(sys >= 0.0 && user >= 0.0);
        let (sys, user) = super::children_cpu_times();
        assert!(sys >= 0.0 && user >= 0.0);
    }
}
