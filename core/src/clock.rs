//! A cheap clock for measuring short durations (command and request latencies).

use std::time::Instant;

/// Ticks of the processor's time-stamp counter per microsecond, when it runs at a constant
/// rate on every core (Linux's `constant_tsc` and `nonstop_tsc`); 0 where it does not, and
/// time is then read from the monotonic clock. Durations (INFO commandstats, SLOWLOG, the
/// proxy's latency histograms) are read once per command or batch: the counter costs a few
/// nanoseconds where the clock call costs tens, a few percent of a pipelined GET.
static TSC_PER_US: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Calibrates the clock now (at start, before any shard runs) rather than on first use.
pub fn init_clock() {
    tsc_per_us();
}

fn tsc_per_us() -> u64 {
    *TSC_PER_US.get_or_init(calibrate_tsc)
}

/// Measures the counter against the monotonic clock over 20 ms (once, at start).
pub fn calibrate_tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let line = flags.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        let has = |f: &str| line.split_whitespace().any(|w| w == f);
        if !(has("constant_tsc") && has("nonstop_tsc")) {
            return 0;
        }
        // SAFETY: RDTSC has no preconditions on x86_64.
        let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
        let (t0, c0) = (Instant::now(), tsc());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (t1, c1) = (Instant::now(), tsc());
        let us = t1.duration_since(t0).as_micros() as u64;
        if us == 0 || c1 <= c0 {
            return 0;
        }
        (c1 - c0) / us
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// A timestamp for measuring durations: see [`ticks_to_us`].
#[inline]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if tsc_per_us() != 0 {
        // SAFETY: RDTSC has no preconditions on x86_64.
        return unsafe { core::arch::x86_64::_rdtsc() };
    }
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Microseconds between two [`ticks`] readings (0 if the second is not later).
#[inline]
pub fn ticks_to_us(from: u64, to: u64) -> u64 {
    let d = to.saturating_sub(from);
    match tsc_per_us() {
        0 => d / 1000,
        per_us => d / per_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_measure_elapsed_time() {
        init_clock();
        let t0 = ticks();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let us = ticks_to_us(t0, ticks());
        assert!((25_000..2_000_000).contains(&us), "{us} µs");
        assert_eq!(ticks_to_us(ticks(), t0), 0);
    }
}
