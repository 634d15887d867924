//! Listening sockets for thread-per-core servers.

use std::net::SocketAddr;

/// A listening socket every shard can open on the same address (SO_REUSEPORT) and that
/// binds even while connections of a previous process linger in TIME_WAIT (SO_REUSEADDR),
/// as Redis's listener does: a restarted server gets its port back at once.
pub fn shared_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = reuse_port_socket(addr)?;
    s.listen(1024)?;
    Ok(s.into())
}

/// A TCP socket bound to `addr` with SO_REUSEADDR and SO_REUSEPORT (not listening).
fn reuse_port_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
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
    Ok(s)
}

/// Claims `addr`'s port for a process whose shards each open an SO_REUSEPORT listener on it
/// ([`shared_listener`]), and returns the port (the kernel's choice when `addr` asks for 0)
/// with a socket that holds it. A plain socket is bound first, which fails if anyone holds
/// the port (SO_REUSEPORT alone would let a second process share it; Redis refuses to start
/// instead). Then, until the returned socket is dropped (once the shards listen), a bound,
/// not listening SO_REUSEPORT socket keeps the port, so that an outgoing connection of
/// another process, which draws its local port from the same range, cannot take it in the
/// meantime.
pub fn claim_port(addr: SocketAddr) -> std::io::Result<(u16, socket2::Socket)> {
    let port = {
        let probe = std::net::TcpListener::bind(addr)?;
        probe.local_addr()?.port()
    };
    let hold = reuse_port_socket(SocketAddr::new(addr.ip(), port))?;
    Ok((port, hold))
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

/// The oldest kernel rcodis's data plane runs on: glommio needs io_uring (5.8), and its
/// streams wait with multishot polls (5.13).
pub const MIN_KERNEL: (u32, u32) = (5, 13);

/// Reads "major.minor" from a kernel release string such as `6.1.0-18-amd64`.
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-']);
    let major = it.next()?.parse().ok()?;
    let minor = it
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

/// Checks what the glommio data plane needs (a recent enough kernel, io_uring enabled, a
/// memlock limit of at least 512 KiB, raised when allowed) and says clearly what is missing;
/// `program` names the binary in the message.
pub fn check_data_plane_environment(program: &str) -> Result<(), String> {
    // uname only writes into `u`.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } == 0 {
        let release: String = u
            .release
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect();
        if let Some(v) = parse_kernel_release(&release) {
            if v < MIN_KERNEL {
                return Err(format!(
                    "kernel {release} is too old: {program} (glommio/io_uring, multishot polls) \
                     needs Linux {}.{} or newer",
                    MIN_KERNEL.0, MIN_KERNEL.1
                ));
            }
        }
    }
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // getrlimit only writes into `rl`.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    if r == 0 && rl.rlim_cur != libc::RLIM_INFINITY && rl.rlim_cur < 512 * 1024 {
        // Try to raise it (works as root or within the hard limit).
        let want = libc::rlimit {
            rlim_cur: 512 * 1024,
            rlim_max: rl.rlim_max.max(512 * 1024),
        };
        let raised = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &want) } == 0;
        if !raised {
            return Err(format!(
                "memlock limit is {} KiB; {program} (glommio/io_uring) needs at least 512 KiB. \
                 Raise it with `ulimit -l 512` (as root), LimitMEMLOCK= in a systemd unit, or \
                 /etc/security/limits.conf",
                rl.rlim_cur / 1024
            ));
        }
    }
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() != "0" {
            return Err(format!(
                "io_uring is disabled on this kernel (kernel.io_uring_disabled={}); {program} \
                 needs it: `sysctl -w kernel.io_uring_disabled=0`",
                v.trim()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel_release("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.13"), Some((5, 13)));
        assert_eq!(parse_kernel_release("5.4.0-rc1"), Some((5, 4)));
        assert_eq!(parse_kernel_release("4.19+"), Some((4, 19)));
        assert_eq!(parse_kernel_release("garbage"), None);
        assert!(parse_kernel_release("5.12.9").unwrap() < MIN_KERNEL);
        assert!(parse_kernel_release("5.13.0").unwrap() >= MIN_KERNEL);
    }

    #[test]
    fn this_machine_passes() {
        // Every test machine runs the data plane.
        check_data_plane_environment("test").unwrap();
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn a_claimed_port_admits_the_shards_then_stays_theirs() {
        let (port, hold) = claim_port("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(port, 0);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // The shards' listeners can open it while it is held.
        let a = shared_listener(addr).unwrap();
        let b = shared_listener(addr).unwrap();
        drop(hold);
        // Then it is theirs: nobody else can listen on it, and they take connections.
        assert!(std::net::TcpListener::bind(addr).is_err());
        assert!(claim_port(addr).is_err());
        let _c = std::net::TcpStream::connect(addr).unwrap();
        drop((a, b));
    }

    #[test]
    fn a_port_someone_listens_on_cannot_be_claimed() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        assert!(claim_port(addr).is_err());
    }
}
