//! The access log's client addresses, read once per connection: the
//! driver owns the sockets, so it asks the kernel (`getpeername`), and the
//! protocol core, which writes the log's lines, asks it through
//! [`PeerNames`].

use std::os::fd::RawFd;

use crate::http::PeerNames;
use crate::sys::{peer_name, SockName};

/// Client addresses as text by socket number, each with the token of the
/// connection it was read for (a socket number is reused, a token is not).
#[derive(Debug, Default)]
pub(crate) struct PeerCache {
    /// Indexed by socket number.
    by_socket: Vec<(u64, Box<str>)>,
}

impl PeerNames for PeerCache {
    /// The client's address for the connection (`socket`, `token`) as the
    /// access log writes it: an IP address, `unix:`, or `-` when unknown.
    /// Asks the kernel once per connection.
    fn name(&mut self, socket: RawFd, token: u64) -> &str {
        let Ok(i) = usize::try_from(socket) else { return "-" };
        if !self.by_socket.get(i).is_some_and(|(t, _)| *t == token) {
            let text: Box<str> = match peer_name(socket) {
                Some(SockName::Ip(a)) => a.ip().to_string().into(),
                Some(SockName::Unix(_)) => "unix:".into(),
                None => "-".into(),
            };
            if i >= self.by_socket.len() {
                self.by_socket.resize(i + 1, (u64::MAX, Box::from("")));
            }
            self.by_socket[i] = (token, text);
        }
        &self.by_socket[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn names_are_read_once_per_connection_and_by_family() {
        let mut names = PeerCache::default();
        assert_eq!(names.name(-1, 1), "-", "no socket");
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(names.name(a.as_raw_fd(), 1), "unix:");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = client.as_raw_fd();
        assert_eq!(names.name(fd, 2), "127.0.0.1");
        // The same socket number now holds a Unix socket: under the old
        // token the cached name stands, a new token asks anew.
        // SAFETY: both descriptors are open and owned by this test; `fd`
        // stays owned by `client`, which closes it.
        assert_eq!(unsafe { libc::dup2(a.as_raw_fd(), fd) }, fd);
        assert_eq!(names.name(fd, 2), "127.0.0.1");
        assert_eq!(names.name(fd, 3), "unix:");
    }
}
