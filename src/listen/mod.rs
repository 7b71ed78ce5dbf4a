//! Binding listening sockets, and steering a reuseport group ([`steer`]).

pub mod steer;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

use crate::config::{ConfigError, ListenAddr};
use crate::sys::context;

/// `e`, from binding a listen address, as a [`ConfigError`] when trying
/// again cannot help: an address that is not one, a file in a Unix
/// socket's way or a missing directory, a permission refused (a port below
/// 1024 without the capability). An address in use or not (yet) on this
/// host stays a plain error: a restart may find it free.
pub fn config_error(e: io::Error) -> io::Error {
    use io::ErrorKind::*;
    if ConfigError::is(&e) || !matches!(e.kind(), InvalidInput | AlreadyExists | PermissionDenied | NotFound) {
        return e;
    }
    ConfigError::io(e.to_string())
}

/// Resolves `addr` (`host:port`) to one socket address.
pub fn resolve(addr: &str) -> io::Result<SocketAddr> {
    // An address that does not resolve is a configuration error.
    addr.to_socket_addrs()
        .map_err(|e| ConfigError::io(format!("resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| ConfigError::io(format!("{addr}: no address")))
}

/// Binds a non-blocking, close-on-exec TCP listener on `sa`.
///
/// `SO_REUSEADDR` is always set, `SO_REUSEPORT` when `reuseport`, and
/// `TCP_NODELAY`, which accepted sockets inherit, so responses leave at once.
pub fn bind_addr(sa: SocketAddr, reuseport: bool, backlog: i32) -> io::Result<OwnedFd> {
    let fd = tcp_socket(sa, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC)?;
    if reuseport {
        set(&fd, sockopt::ReusePort, "SO_REUSEPORT")?;
    }
    set(&fd, sockopt::TcpNoDelay, "TCP_NODELAY")?;
    bind_to(&fd, sa)?;
    // Raw `listen`: nix's `Backlog` refuses values above its SOMAXCONN,
    // while the kernel clamps to `net.core.somaxconn`, which may be larger.
    // Plain integer arguments on the socket made above.
    syscall!(listen(fd.as_raw_fd(), backlog)).map_err(|e| context(e, format_args!("listen {sa}")))?;
    Ok(fd)
}

/// Checks that nothing listens on `sa` by binding it without
/// `SO_REUSEPORT`, and returns the address bound (the port picked, for port
/// 0). The probe socket is closed before returning.
pub fn probe_addr(sa: SocketAddr) -> io::Result<SocketAddr> {
    let fd = tcp_socket(sa, SockFlag::SOCK_CLOEXEC)?;
    bind_to(&fd, sa)?;
    match local_addr(&fd)? {
        ListenAddr::Tcp(a) => Ok(a),
        other => Err(io::Error::new(io::ErrorKind::InvalidData, format!("probe bound {other}"))),
    }
}

/// The address a socket is bound to.
pub fn local_addr(fd: &impl AsRawFd) -> io::Result<ListenAddr> {
    let addr: SockaddrStorage = socket::getsockname(fd.as_raw_fd()).map_err(|e| context(e.into(), "getsockname"))?;
    if let Some(a) = addr.as_sockaddr_in() {
        return Ok(ListenAddr::Tcp(SocketAddr::V4(std::net::SocketAddrV4::from(*a))));
    }
    if let Some(a) = addr.as_sockaddr_in6() {
        return Ok(ListenAddr::Tcp(SocketAddr::V6(std::net::SocketAddrV6::from(*a))));
    }
    if let Some(path) = addr.as_unix_addr().and_then(|u| u.path()) {
        return Ok(ListenAddr::Unix(path.to_path_buf()));
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))
}

/// The path of a `unix:` listen address.
pub fn unix_path(listen: &str) -> Option<&Path> {
    listen.strip_prefix("unix:").map(Path::new)
}

/// A Unix socket file this process made, to be removed when it is done
/// with it (and only if the file is still that socket).
#[derive(Debug)]
pub struct UnixSocketFile {
    /// Its path.
    path: PathBuf,
    /// Its device and inode, as bound.
    id: (u64, u64),
}

impl UnixSocketFile {
    /// A socket file another process made and hands over, by its device
    /// and inode as that process bound it.
    pub fn adopt(path: PathBuf, id: (u64, u64)) -> UnixSocketFile {
        UnixSocketFile { path, id }
    }

    /// Its device and inode, as bound.
    pub fn id(&self) -> (u64, u64) {
        self.id
    }

    /// Removes the file, unless another socket has taken the path since.
    pub fn remove(self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds a non-blocking, close-on-exec Unix stream listener at `path`.
///
/// A socket file left there by a server that is gone (connecting to it is
/// refused) is replaced; a live one, or anything that is not a socket, is
/// an error, and left alone. `mode` sets the file's permissions.
pub fn bind_unix(path: &Path, backlog: i32, mode: Option<u32>) -> io::Result<(OwnedFd, UnixSocketFile)> {
    let what = |e: io::Error, op: &str| context(e, format_args!("{op} unix:{}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("unix:{}: another server listens there", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("replacing the stale socket file {}", path.display());
                std::fs::remove_file(path).map_err(|e| what(e, "remove stale"))?;
            }
            Err(e) => return Err(what(e, "check")),
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("unix:{}: a file that is not a socket is in the way", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(what(e, "stat")),
    }
    let fd =
        socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| context(e.into(), "socket"))?;
    let addr = socket::UnixAddr::new(path).map_err(|e| what(e.into(), "address"))?;
    // The file gets its mode as it is made, through the umask: a chmod by
    // path afterwards would follow a link put there meanwhile. (The umask
    // is the process's: the master binds before it starts anything else.)
    let umask = mode.map(|m| nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(!m & 0o777)));
    let bound = socket::bind(fd.as_raw_fd(), &addr);
    if let Some(old) = umask {
        nix::sys::stat::umask(old);
    }
    bound.map_err(|e| what(e.into(), "bind"))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| what(e, "stat"))?;
    let file = UnixSocketFile { path: path.to_path_buf(), id: (meta.dev(), meta.ino()) };
    // Plain integer arguments on the socket made above.
    if let Err(e) = syscall!(listen(fd.as_raw_fd(), backlog)) {
        file.remove();
        return Err(what(e, "listen"));
    }
    Ok((fd, file))
}

/// A TCP socket for `sa`'s family with `SO_REUSEADDR` (and `IPV6_V6ONLY`
/// for IPv6, so `[::]` does not also take the IPv4 port).
fn tcp_socket(sa: SocketAddr, flags: SockFlag) -> io::Result<OwnedFd> {
    let family = if sa.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Stream, flags, None).map_err(|e| context(e.into(), "socket"))?;
    set(&fd, sockopt::ReuseAddr, "SO_REUSEADDR")?;
    if sa.is_ipv6() {
        set(&fd, sockopt::Ipv6V6Only, "IPV6_V6ONLY")?;
    }
    Ok(fd)
}

fn bind_to(fd: &OwnedFd, sa: SocketAddr) -> io::Result<()> {
    let addr = SockaddrStorage::from(sa);
    socket::bind(fd.as_raw_fd(), &addr).map_err(|e| context(e.into(), format_args!("bind {sa}")))
}

/// Turns a boolean socket option on.
fn set<O: socket::SetSockOpt<Val = bool>>(fd: &OwnedFd, opt: O, name: &str) -> io::Result<()> {
    socket::setsockopt(fd, opt, &true).map_err(|e| context(e.into(), format_args!("setsockopt({name})")))
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
        crate::sys::set_nonblocking(fd).map_err(|e| context(e, format_args!("LISTEN_FDS: fd {fd}")))?;
        crate::sys::set_cloexec(fd, true)?;
        // SAFETY: systemd handed this descriptor to this process (LISTEN_PID
        // matched) and nothing else in it owns the descriptor.
        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(Some(fds))
}
