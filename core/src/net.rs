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
