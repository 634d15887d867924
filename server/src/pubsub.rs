//! Pub/sub across shards: each shard keeps the subscriptions of its own connections;
//! PUBLISH runs on every shard, which delivers to its local subscribers, and the counts are
//! summed. Messages reach a connection through an unbounded channel watched by its task; a
//! subscriber whose queued output passes the configured limit is disconnected.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;

use crate::out::Out;

/// How messages reach one subscribed connection.
#[derive(Debug, Clone)]
pub struct Sub {
    pub tx: futures::channel::mpsc::UnboundedSender<Bytes>,
    pub resp3: bool,
    /// Bytes queued and not yet written by the connection.
    pub queued: Arc<AtomicUsize>,
    /// Set when the subscriber exceeded its output limit (the connection closes).
    pub overflow: Arc<AtomicBool>,
}

/// Subscriptions of one shard's connections.
#[derive(Debug, Default)]
pub struct Registry {
    pub channels: HashMap<Bytes, HashMap<u64, Sub>>,
    pub patterns: HashMap<Bytes, HashMap<u64, Sub>>,
    pub shard_channels: HashMap<Bytes, HashMap<u64, Sub>>,
}

fn send(sub: &Sub, msg: Bytes, limit: usize) -> bool {
    let n = sub.queued.fetch_add(msg.len(), Ordering::AcqRel) + msg.len();
    if limit > 0 && n > limit {
        sub.overflow.store(true, Ordering::Release);
        return false;
    }
    sub.tx.unbounded_send(msg).is_ok()
}

fn message(
    kind: &str,
    pattern: Option<&[u8]>,
    channel: &[u8],
    payload: &[u8],
    resp3: bool,
) -> Bytes {
    let mut out = Out::new(resp3);
    let n = if pattern.is_some() { 4 } else { 3 };
    if resp3 {
        rcodis_core::resp::encode::write_aggregate_len(&mut out.buf, b'>', n);
    } else {
        out.array(n);
    }
    out.bulk(kind.as_bytes());
    if let Some(p) = pattern {
        out.bulk(p);
    }
    out.bulk(channel);
    out.bulk(payload);
    out.buf.freeze()
}

impl Registry {
    /// Delivers a message to this shard's subscribers; returns how many received it.
    pub fn publish(&self, channel: &[u8], payload: &[u8], sharded: bool, limit: usize) -> usize {
        let mut n = 0;
        let (map, kind) = if sharded {
            (&self.shard_channels, "smessage")
        } else {
            (&self.channels, "message")
        };
        if let Some(subs) = map.get(channel) {
            for sub in subs.values() {
                if send(sub, message(kind, None, channel, payload, sub.resp3), limit) {
                    n += 1;
                }
            }
        }
        if !sharded {
            for (pat, subs) in &self.patterns {
                if crate::glob::matches(pat, channel, false) {
                    for sub in subs.values() {
                        if send(
                            sub,
                            message("pmessage", Some(pat), channel, payload, sub.resp3),
                            limit,
                        ) {
                            n += 1;
                        }
                    }
                }
            }
        }
        n
    }

    /// Removes every subscription of a connection.
    pub fn remove_client(&mut self, id: u64) {
        for map in [
            &mut self.channels,
            &mut self.patterns,
            &mut self.shard_channels,
        ] {
            map.retain(|_, subs| {
                subs.remove(&id);
                !subs.is_empty()
            });
        }
    }
}

/// `[kind, channel, count]` confirmations of (un)subscribe.
pub fn confirmation(kind: &str, channel: Option<&[u8]>, count: usize, resp3: bool) -> BytesMut {
    let mut out = Out::new(resp3);
    if resp3 {
        rcodis_core::resp::encode::write_aggregate_len(&mut out.buf, b'>', 3);
    } else {
        out.array(3);
    }
    out.bulk(kind.as_bytes());
    match channel {
        Some(c) => out.bulk(c),
        None => out.null(),
    }
    out.int(count as i64);
    out.buf
}
