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

/// Makes a panic on a shard thread (one named `prefix` and its number) end the process,
/// after the usual report (message, place, backtrace). Left alone, the thread would end
/// with its executor: its connections would hang and its keys or sessions be unreachable
/// while the process still looked alive. A panic is a bug; what follows it is what Redis
/// does on one: the process exits (with SIGABRT), and whatever supervises it restarts it
/// (the server reloads its data from its log). Other threads keep the default behaviour.
pub fn exit_on_shard_panic(prefix: &'static str) {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("");
        let shard = name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        if shard {
            eprintln!(
                "{name}: a shard thread panicked (a bug, please report it): exiting, as its \
                 connections cannot be served any more"
            );
            std::process::abort();
        }
    }));
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
