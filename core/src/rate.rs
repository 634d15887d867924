//! Instantaneous rates for INFO (`instantaneous_ops_per_sec`, `instantaneous_input_kbps`,
//! ...), estimated as Redis does: a sample of a counter's rate every 100 ms or so, averaged
//! over the last 16 samples.

use std::time::Instant;

/// One counter's recent rate. The owner calls [`RateMeter::sample`] from a periodic task.
#[derive(Default, Clone)]
pub struct RateMeter {
    last: Option<(Instant, u64)>,
    rates: [u64; 16],
    next: usize,
}

impl RateMeter {
    /// Takes a sample of the counter's value `total` at `now`; samples closer than 100 ms to
    /// the previous one are skipped.
    pub fn sample(&mut self, now: Instant, total: u64) {
        let Some((t, n)) = self.last else {
            self.last = Some((now, total));
            return;
        };
        let ms = now.saturating_duration_since(t).as_millis() as u64;
        if ms < 100 {
            return;
        }
        self.rates[self.next] = total.saturating_sub(n) * 1000 / ms;
        self.next = (self.next + 1) % self.rates.len();
        self.last = Some((now, total));
    }

    /// The counter's increase per second, averaged over the last samples.
    pub fn per_sec(&self) -> u64 {
        self.rates.iter().sum::<u64>() / self.rates.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_last_samples() {
        let t = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut m = RateMeter::default();
        m.sample(t, 0);
        assert_eq!(m.per_sec(), 0);
        m.sample(t + ms(50), 999); // too soon: skipped
        for i in 1..=16u64 {
            m.sample(t + ms(100 * i), 1000 * i); // 1000 requests per 100 ms
        }
        assert_eq!(m.per_sec(), 10_000);
        for i in 17..=24u64 {
            m.sample(t + ms(100 * i), 16_000); // idle for 8 samples
        }
        assert_eq!(m.per_sec(), 5_000);
    }
}
