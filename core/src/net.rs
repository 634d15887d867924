//! Listening sockets for thread-per-core servers.

use std::net::SocketAddr;

/// A listening socket every shard can open on the same address (SO_REUSEPORT) and that
/// binds even while connections of a previous process linger in TIME_WAIT (SO_REUSEADDR),
/// as Redis's listener does: a restarted server gets its port back at once.
pub fn shared_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Puts the calling thread under `SCHED_BATCH` (Linux): it no longer preempts the running
/// thread of its CPU when it wakes up, and runs when that thread blocks or its time slice
/// ends. For shards that share cores with each other (a proxy and its servers on one host):
/// a proxy waking a server, or a server answering the proxy, then finishes its own batch
/// first instead of being switched out for every message.
pub fn sched_batch_this_thread() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// [`sched_batch_this_thread`] for shard `shard`, saying in the log when the system refuses
/// (the shard then runs under the default policy).
pub fn sched_batch_or_warn(shard: usize) {
    if let Err(e) = sched_batch_this_thread() {
        tracing::warn!(shard, error = %e, "SCHED_BATCH refused; the shard runs under the default policy");
    }
}

#[cfg(test)]
mod sched_tests {
    #[test]
    fn sched_batch_applies_to_the_calling_thread_only() {
        let policy = || unsafe { libc::sched_getscheduler(0) };
        std::thread::spawn(move || {
            super::sched_batch_this_thread().unwrap();
            assert_eq!(policy(), libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
        assert_eq!(policy(), libc::SCHED_OTHER);
    }
}
