//! Key patterns, as memtier_benchmark has them (plus zipf).

use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution, Normal, Zipf};

use crate::Args;

/// How a command picks its keys in `[key_minimum, key_maximum]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// R: uniform.
    Random,
    /// S: every client walks the whole range in order, wrapping.
    Sequential,
    /// G: normal around the median (default the middle) with a standard deviation
    /// (default a sixth of the range), clamped to the range.
    Gaussian,
    /// P: the range is split between all clients; each walks its own part in order.
    Parallel,
    /// Z: zipf over the range (rank 1 = key_minimum), exponent --key-zipf-exp.
    Zipf,
}

/// One client's key generator for one command.
pub enum KeyGen {
    Random { lo: u64, hi: u64 },
    Walk { lo: u64, hi: u64, next: u64 },
    Gaussian { lo: u64, hi: u64, dist: Normal<f64> },
    Zipf { lo: u64, dist: Zipf<f64> },
}

impl KeyGen {
    pub fn new(p: Pattern, a: &Args, client: u64, clients: u64) -> anyhow::Result<KeyGen> {
        let (lo, hi) = (a.key_minimum, a.key_maximum);
        let range = hi - lo + 1;
        Ok(match p {
            Pattern::Random => KeyGen::Random { lo, hi },
            Pattern::Sequential => KeyGen::Walk { lo, hi, next: lo },
            Pattern::Parallel => {
                let per = (range / clients.max(1)).max(1);
                let start = (lo + client * per).min(hi);
                let end = if client + 1 == clients {
                    hi
                } else {
                    (start + per - 1).min(hi)
                };
                KeyGen::Walk {
                    lo: start,
                    hi: end,
                    next: start,
                }
            }
            Pattern::Gaussian => {
                let median = a.key_median.unwrap_or((lo as f64 + hi as f64) / 2.0);
                let sd = a
                    .key_stddev
                    .unwrap_or(range as f64 / 6.0)
                    .max(f64::MIN_POSITIVE);
                KeyGen::Gaussian {
                    lo,
                    hi,
                    dist: Normal::new(median, sd)
                        .map_err(|e| anyhow::anyhow!("bad gaussian parameters: {e}"))?,
                }
            }
            Pattern::Zipf => KeyGen::Zipf {
                lo,
                dist: Zipf::new(range, a.key_zipf_exp)
                    .map_err(|e| anyhow::anyhow!("bad --key-zipf-exp: {e}"))?,
            },
        })
    }

    /// The next key number.
    pub fn next(&mut self, rng: &mut SmallRng) -> u64 {
        match self {
            KeyGen::Random { lo, hi } => rng.gen_range(*lo..=*hi),
            KeyGen::Walk { lo, hi, next } => {
                let k = *next;
                *next = if k >= *hi { *lo } else { k + 1 };
                k
            }
            KeyGen::Gaussian { lo, hi, dist } => {
                let v = dist.sample(rng).round();
                (v.max(*lo as f64).min(*hi as f64)) as u64
            }
            KeyGen::Zipf { lo, dist } => *lo + dist.sample(rng) as u64 - 1,
        }
    }
}
