//! Owning the listen addresses: the start-up check that no other node (and no other program)
//! serves them, and the listeners' sockets themselves.
//!
//! Every core binds every address with `SO_REUSEPORT` (the kernel spreads connections across
//! cores), which would just as quietly let a second node join the port and take half of its
//! connections. So before the cores bind, the node takes, for each address:
//! 1. the port's **start-up lock**, held until the cores listen: an abstract Unix socket named
//!    `corecast-starting:<port>`. Two nodes that start together on one port (on any of its
//!    addresses) take turns, so the second one's check sees the first one's listeners;
//! 2. the address's **claim**, held for the life of the process: an abstract Unix socket named
//!    `corecast:<ip>:<port>`. A second node on the same address finds the name taken and says
//!    so, however its start-up interleaves with the first one's;
//! 3. a **probe**: a bind with `SO_REUSEADDR` and without `SO_REUSEPORT`, dropped at once. It
//!    fails while anything listens there (another program, or a node on an overlapping address
//!    such as `0.0.0.0`), but not for sockets left in `TIME_WAIT`.
//!
//! Abstract Unix socket names (Linux) live in the network namespace, as ports do, and vanish
//! when the process's last descriptor for them closes, so a node killed with SIGKILL leaves
//! nothing behind (no stale lock file to clean up).
//!
//! # Restarting at once
//! A node stopped with SIGTERM leaves its accepted connections in `TIME_WAIT` (or orphaned in
//! `FIN_WAIT2`) for up to a minute. An accepted socket inherits `SO_REUSEADDR` from its
//! listener, and the kernel lets a `SO_REUSEADDR` bind pass such sockets only when they have
//! the flag too. glommio's `TcpListener::bind` sets `SO_REUSEPORT` only, so [`bind_listener`]
//! binds with both and hands the socket to glommio.
//!
//! # Several addresses per listener
//! A listen field may stand for several addresses (`:1935` is `0.0.0.0:1935` and
//! `[::]:1935`; see `config::Listen`). Each is claimed, probed and bound on its own, and every
//! IPv6 socket is `IPV6_V6ONLY`, so the IPv4 and IPv6 wildcards are two listeners that do not
//! clash. [`usable`] leaves out the IPv6 half of such a form on a host without IPv6.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;

use crate::config::Listen;

/// How long a node waits for another node that is starting on the same port.
const STARTING_WAIT: Duration = Duration::from_secs(10);
/// Pause between tries for a start-up lock.
const STARTING_POLL: Duration = Duration::from_millis(20);
/// The accept backlog of every listener.
const BACKLOG: i32 = 1024;

/// Why the node cannot own a listen address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// Another Corecast node claimed the address.
    #[error("cannot listen on {addr} ({name}): another corecast node serves it")]
    OtherNode {
        /// The config field.
        name: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// Another node kept the port's start-up lock for too long.
    #[error("cannot listen on {addr} ({name}): another corecast node has been starting on port {port} for {STARTING_WAIT:?}", port = addr.port())]
    Starting {
        /// The config field.
        name: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// Something else listens on the address.
    #[error("cannot listen on {addr} ({name}): {error}; is another program listening there?")]
    InUse {
        /// The config field.
        name: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What the kernel said.
        error: io::Error,
    },
    /// Binding the address failed otherwise (not an address of this host, a privileged port).
    #[error("cannot listen on {addr} ({name}): {error}")]
    Bind {
        /// The config field.
        name: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What the kernel said (in the message, so not a `source` printed twice).
        error: io::Error,
    },
    /// The abstract socket for a lock or claim could not be made (not a taken name).
    #[error("cannot claim {addr} ({name}): {error}")]
    Claim {
        /// The config field.
        name: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What the kernel said (in the message, so not a `source` printed twice).
        error: io::Error,
    },
}

/// The node's claims on its addresses; held for the life of the process.
#[derive(Debug)]
pub struct Claims(#[allow(dead_code)] Vec<UnixDatagram>);

/// The start-up locks of the node's ports; dropped once every core listens.
#[derive(Debug)]
pub struct StartupLocks(#[allow(dead_code)] Vec<UnixDatagram>);

/// Takes the start-up locks, claims and probes of `addrs` (named as in the config); port 0
/// (any free port) needs none. Call before the cores bind, and drop the locks once they do.
pub fn claim(addrs: &[(&'static str, SocketAddr)]) -> Result<(Claims, StartupLocks), PortError> {
    let mut locks = Vec::new();
    let mut claims = Vec::new();
    let mut ports_locked = Vec::new();
    for &(name, addr) in addrs.iter().filter(|(_, addr)| addr.port() != 0) {
        if !ports_locked.contains(&addr.port()) {
            locks.push(starting_lock(name, addr)?);
            ports_locked.push(addr.port());
        }
        let claim = match bind_name(&format!("corecast:{addr}")) {
            Ok(socket) => socket,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(PortError::OtherNode { name, addr })
            }
            Err(error) => return Err(PortError::Claim { name, addr, error }),
        };
        claims.push(claim);
        probe(addr).map_err(|error| match error.kind() {
            io::ErrorKind::AddrInUse => PortError::InUse { name, addr, error },
            _ => PortError::Bind { name, addr, error },
        })?;
    }
    Ok((Claims(claims), StartupLocks(locks)))
}

/// The port's start-up lock; waits (bounded) while another node holds it.
fn starting_lock(name: &'static str, addr: SocketAddr) -> Result<UnixDatagram, PortError> {
    let deadline = Instant::now() + STARTING_WAIT;
    loop {
        match bind_name(&format!("corecast-starting:{}", addr.port())) {
            Ok(socket) => return Ok(socket),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if Instant::now() >= deadline {
                    return Err(PortError::Starting { name, addr });
                }
                std::thread::sleep(STARTING_POLL);
            }
            Err(error) => return Err(PortError::Claim { name, addr, error }),
        }
    }
}

/// Binds the abstract Unix socket name `name` (EADDRINUSE while any process holds it).
fn bind_name(name: &str) -> io::Result<UnixDatagram> {
    UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes())?)
}

/// The addresses of `listen` (the field `name`) this host can bind: an IPv6 address the
/// written form only implied (`:1935`, `localhost:1935`) is left out, with a log line, when
/// the host has no IPv6 (no IPv6 sockets, or no such address, as `::1` when IPv6 is
/// disabled). Any other failure is left for [`claim`] to report.
pub fn usable(name: &'static str, listen: &Listen) -> Vec<SocketAddr> {
    let mut addrs = Vec::with_capacity(listen.addrs().len());
    for &addr in listen.addrs() {
        if listen.is_optional(addr) {
            if let Err(error) = probe(addr) {
                if is_unavailable(&error) {
                    warn!(field = name, %addr, %error, "IPv6 is unavailable; listening on IPv4 only");
                    continue;
                }
            }
        }
        addrs.push(addr);
    }
    addrs
}

/// True for the errors of a host without (this) IPv6 address.
fn is_unavailable(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::AddrNotAvailable
        || error.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

/// A TCP socket for `addr`; an IPv6 one is `IPV6_V6ONLY` (see the module doc).
fn tcp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Fails while something listens on `addr`; passes over `TIME_WAIT` (see the module doc).
fn probe(addr: SocketAddr) -> io::Result<()> {
    let socket = tcp_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// One core's listener on `addr`: `SO_REUSEADDR` and `SO_REUSEPORT`, then glommio's.
/// Call on the core's executor (the listener belongs to its reactor).
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let fd = socket.into_raw_fd();
    BOUND.with_borrow_mut(|bound| {
        bound.retain(|(a, _)| *a != addr);
        bound.push((addr, fd));
    });
    // SAFETY: `fd` is a bound, listening TCP socket that nothing else owns: `into_raw_fd`
    // gave up socket2's ownership, and glommio's listener takes it over (and closes it).
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

thread_local! {
    /// The listeners this thread (core) bound, by address: glommio 0.9's `TcpListener` does
    /// not give its descriptor, and the HTTP listener's batched accept needs it.
    static BOUND: std::cell::RefCell<Vec<(SocketAddr, RawFd)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The descriptor of `listener`, bound on this thread by [`bind_listener`]; None when it was
/// not, or the descriptor recorded is no longer a socket listening on its address (checked,
/// so a closed listener's number reused by another descriptor is never taken for it).
pub fn listener_fd(listener: &TcpListener) -> Option<RawFd> {
    let addr = listener.local_addr().ok()?;
    let fd =
        BOUND.with_borrow(|bound| bound.iter().find(|(a, _)| *a == addr).map(|(_, fd)| *fd))?;
    // SAFETY: only inspected (two `getsockopt`/`getsockname` calls) while `listener`, which
    // holds the descriptor where the record is current, is borrowed.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&borrowed);
    let listening =
        socket.is_listener().ok()? && socket.local_addr().ok()?.as_socket() == Some(addr);
    listening.then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_port() -> SocketAddr {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    }

    #[test]
    fn a_claimed_address_cannot_be_claimed_twice() {
        let addr = loopback_port();
        let (claims, locks) = claim(&[("rtmp.listen", addr)]).expect("first claim");
        drop(locks);
        let second = claim(&[("rtmp.listen", addr)]);
        assert!(
            matches!(second, Err(PortError::OtherNode { .. })),
            "{second:?}"
        );
        drop(claims);
        assert!(claim(&[("rtmp.listen", addr)]).is_ok(), "free again");
    }

    #[test]
    fn an_address_another_program_listens_on_is_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let result = claim(&[("http.listen", addr)]);
        let Err(e) = result else {
            panic!("claimed a port another socket listens on");
        };
        assert!(matches!(e, PortError::InUse { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot listen on"), "{e}");
        assert!(e.to_string().contains("http.listen"), "{e}");
    }

    #[test]
    fn every_address_of_a_listen_field_is_claimed() {
        let port = loopback_port().port();
        let localhost: Listen = format!("localhost:{port}").parse().expect("parses");
        let addrs: Vec<_> = usable("rtmp.listen", &localhost)
            .into_iter()
            .map(|addr| ("rtmp.listen", addr))
            .collect();
        assert_eq!(addrs[0].1, SocketAddr::from(([127, 0, 0, 1], port)));
        let (claims, _locks) = claim(&addrs).expect("claimed");
        assert_eq!(claims.0.len(), addrs.len(), "one claim per address");
    }

    #[test]
    fn only_implied_ipv6_addresses_are_left_out() {
        // A written IPv6 address is kept whatever the host has: binding it reports the error.
        let written: Listen = "[::1]:1935".parse().expect("parses");
        assert_eq!(usable("rtmp.listen", &written), written.addrs());
        let unavailable = io::Error::from_raw_os_error(libc::EAFNOSUPPORT);
        assert!(is_unavailable(&unavailable));
        let in_use = io::Error::from(io::ErrorKind::AddrInUse);
        assert!(!is_unavailable(&in_use));
    }

    #[test]
    fn port_zero_needs_no_claim() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (first, _locks) = claim(&[("http.listen", any)]).expect("first");
        let (second, _locks) = claim(&[("http.listen", any)]).expect("second");
        assert!(first.0.is_empty() && second.0.is_empty());
    }
}
