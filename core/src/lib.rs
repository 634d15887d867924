//! rcodis-core: what every rcodis process shares.
//!
//! ```text
//!  resp/    frames, decoders (reply: check-then-parse; request: multibulk + inline), encoder
//!  cmd/     the command table (generated from Redis 7.0.15) + Codis SLOTS*, key extraction
//!  slot     NUM_SLOTS = 1024, slot_of(key) with Codis's {hashtag} rule
//!  num      Redis's number parsing rules (string2ll), INFO's human byte counts
//!  process  this process's RSS and CPU times (INFO)
//!  rate     INFO's instantaneous rates (16 samples of ~100 ms, as Redis)
//!  topology groups, slots, proxies, epoch; JSON on the wire; diff and validation
//!  coord/   Coordinator trait: etcd (etcd://) and the embedded file store (file://)
//!  net      listening sockets shared by a process's shards (SO_REUSEPORT + SO_REUSEADDR)
//! ```
//!
//! The data-plane crates (server, proxy) use `resp`, `cmd` and `slot` on their hot paths; the
//! control plane (proxy control thread, ctl, dashboard) uses `topology` and `coord` on tokio.

pub mod clock;
pub mod cmd;
pub mod coord;
pub mod net;
pub mod num;
pub mod process;
pub mod rate;
pub mod resp;
pub mod slot;
pub mod topology;

pub use slot::{slot_of, Slot, NUM_SLOTS};
