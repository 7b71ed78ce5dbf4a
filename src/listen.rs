//! Binding listening sockets.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::sys::context;

/// Resolves `addr` (`host:port`) to one socket address.
pub fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| context(e, format_args!("resolve {addr}")))?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address")))
}

/// Binds a non-blocking, close-on-exec TCP listener on `sa`.
///
/// `SO_REUSEADDR` is always set, `SO_REUSEPORT` when `reuseport`, and
/// `TCP_NODELAY`, which accepted sockets inherit, so responses leave at once.
pub fn bind_addr(sa: SocketAddr, reuseport: bool, backlog: i32) -> io::Result<OwnedFd> {
    let domain = if sa.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let raw = syscall!(socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0))
        .map_err(|e| context(e, "socket"))?;
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuseport {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    setsockopt(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if sa.is_ipv6() {
        setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (storage, len) = sockaddr(&sa);
    syscall!(bind(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len))
        .map_err(|e| context(e, format_args!("bind {sa}")))?;
    syscall!(listen(fd.as_raw_fd(), backlog)).map_err(|e| context(e, format_args!("listen {sa}")))?;
    Ok(fd)
}

/// Checks that nothing listens on `sa` by binding it without
/// `SO_REUSEPORT`, and returns the address bound (the port picked, for port
/// 0). The probe socket is closed before returning.
pub fn probe_addr(sa: SocketAddr) -> io::Result<SocketAddr> {
    let domain = if sa.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let raw = syscall!(socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)).map_err(|e| context(e, "socket"))?;
    // SAFETY: `socket` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if sa.is_ipv6() {
        setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (storage, len) = sockaddr(&sa);
    syscall!(bind(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len))
        .map_err(|e| context(e, format_args!("bind {sa}")))?;
    local_addr(&fd)
}

/// The address a socket is bound to.
pub fn local_addr(fd: &impl AsRawFd) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    syscall!(getsockname(fd.as_raw_fd(), (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len))?;
    from_sockaddr(&storage).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))
}

fn setsockopt(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, val: libc::c_int) -> io::Result<()> {
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&val as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t
    ))
    .map(|_| ())
    .map_err(|e| context(e, format_args!("setsockopt({level}, {name})")))
}

fn sockaddr(sa: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match sa {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sockets passed by systemd socket activation (`LISTEN_PID` equal to this
/// process, `LISTEN_FDS` descriptors from 3 on), made non-blocking and
/// close-on-exec. The variables are removed so children do not see them.
pub fn inherited() -> io::Result<Option<Vec<OwnedFd>>> {
    let pid = std::env::var("LISTEN_PID").ok().and_then(|v| v.parse::<u32>().ok());
    let n = std::env::var("LISTEN_FDS").ok().and_then(|v| v.parse::<i32>().ok());
    let (Some(pid), Some(n)) = (pid, n) else { return Ok(None) };
    if pid != std::process::id() || n <= 0 {
        return Ok(None);
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    const FIRST: RawFd = 3;
    let mut fds = Vec::new();
    for fd in FIRST..FIRST + n {
        let flags = syscall!(fcntl(fd, libc::F_GETFL)).map_err(|e| context(e, format_args!("LISTEN_FDS: fd {fd}")))?;
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
        syscall!(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC))?;
        // SAFETY: systemd handed this descriptor to this process (LISTEN_PID
        // matched) and nothing else in it owns the descriptor.
        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(Some(fds))
}
