//! The parsed request a handler sees: borrowed from the receive buffer, no
//! allocation.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// A complete request: head and whole body, borrowed from the connection's
/// buffer for the length of the handler's call (copy what must outlive it).
///
/// The runtime makes requests; a handler reads them:
///
/// ```
/// use forkring::{Request, Response, Version};
///
/// fn route(req: &Request<'_>, res: &mut Response) {
///     // `GET /search?q=rust HTTP/1.1`: path "/search", query "q=rust".
///     let query = req.query().unwrap_or("");
///     // Fields by name, case-insensitive, as bytes (they need not be UTF-8).
///     let agent = req.header("User-Agent").map(String::from_utf8_lossy);
///     // Where the client is: an IP address and port, or a Unix socket.
///     let peer = req.peer().map(|a| a.to_string()).unwrap_or_default();
///     if req.method() == "POST" {
///         // The whole body, de-chunked (see `Handler::on_head` for pieces).
///         res.body(req.body());
///         return;
///     }
///     if req.version() == Version::Http10 && !req.keep_alive() {
///         res.close();
///     }
///     res.body(format!("{query} from {peer} ({agent:?})\n"));
/// }
/// # let _ = route;
/// ```
pub struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    pub(crate) version: Version,
    pub(crate) headers: Headers<'a>,
    pub(crate) body: &'a [u8],
    pub(crate) keep_alive: bool,
    /// The connection's socket, for its addresses; -1 when there is none
    /// (the protocol core driven by byte slices).
    pub(crate) socket: RawFd,
}

impl<'a> Request<'a> {
    /// The method token, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request-target as sent, e.g. `/search?q=x`.
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The path of the target, without the query. For an absolute-form
    /// target (`http://host/p`) the scheme and authority are left out.
    #[inline]
    pub fn path(&self) -> &'a str {
        path_of(self.target)
    }

    /// The client's address (IPv4 or IPv6), asked of the kernel when called
    /// (one system call; nothing is paid when it is not); `None` when the
    /// connection has none to tell (or it is gone).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        crate::sys::peer_addr(self.socket)
    }

    /// The local address the client connected to, as [`Request::peer_addr`].
    pub fn local_addr(&self) -> Option<SocketAddr> {
        crate::sys::local_addr(self.socket)
    }

    /// The client's address, whatever the socket's family: IPv4, IPv6 or
    /// a Unix domain socket (see [`Addr`]). Asked of the kernel when
    /// called, as [`Request::peer_addr`].
    pub fn peer(&self) -> Option<Addr> {
        crate::sys::peer_name(self.socket).map(Addr::from_sys)
    }

    /// The local address the client connected to, as [`Request::peer`].
    pub fn local(&self) -> Option<Addr> {
        crate::sys::local_name(self.socket).map(Addr::from_sys)
    }

    /// The query after `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// All header fields, in the order received.
    pub fn headers(&self) -> Headers<'a> {
        self.headers
    }

    /// The first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.get(name)
    }

    /// The whole body (de-chunked), empty when there is none.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Whether the connection stays open after this request.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

/// The header fields of a request.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    pub(crate) fields: &'a [httparse::Header<'a>],
}

impl<'a> Headers<'a> {
    /// The first field named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.fields.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// Every field named `name` (case-insensitive), in order.
    pub fn get_all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.fields.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// Every field as `(name, value)`, in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.fields.iter().map(|h| (h.name, h.value))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there is no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.fields.iter().map(|h| (h.name, String::from_utf8_lossy(h.value)))).finish()
    }
}

/// The address of one end of a connection: IP, or a Unix domain socket
/// (by path, or unnamed: a client that did not bind its socket, which is
/// what a Unix client usually is).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// IPv4 or IPv6.
    Ip(SocketAddr),
    /// A Unix domain socket bound to this path.
    Unix(PathBuf),
    /// A Unix domain socket with no name (unbound, or in the abstract
    /// namespace).
    UnixUnnamed,
}

impl Addr {
    fn from_sys(a: crate::sys::SockName) -> Addr {
        match a {
            crate::sys::SockName::Ip(a) => Addr::Ip(a),
            crate::sys::SockName::Unix(Some(p)) => Addr::Unix(p),
            crate::sys::SockName::Unix(None) => Addr::UnixUnnamed,
        }
    }

    /// The IP address, if it is one.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Addr::Ip(a) => Some(*a),
            _ => None,
        }
    }
}

impl fmt::Display for Addr {
    /// `127.0.0.1:8080`, `[::1]:8080`, `unix:/run/app.sock`, or
    /// `unix:(unnamed)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Ip(a) => a.fmt(f),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::UnixUnnamed => f.write_str("unix:(unnamed)"),
        }
    }
}

/// The path of the request-target `t` ([`Request::path`]).
#[inline]
pub(crate) fn path_of(t: &str) -> &str {
    // Origin form (`/p?q`), nearly every request: inlined into the
    // handler, which may ask more than once.
    if t.starts_with('/') {
        return match t.as_bytes().iter().position(|&b| b == b'?') {
            Some(q) => &t[..q],
            None => t,
        };
    }
    path_of_other_form(t)
}

/// The path of a target not in origin form: absolute form
/// (`http://host/p?q`) without its scheme and authority, or the target
/// itself (asterisk and authority forms).
#[cold]
fn path_of_other_form(t: &str) -> &str {
    let t = match t.find("://") {
        Some(i) => {
            let rest = &t[i + 3..];
            // The authority ends at the first `/` or `?`.
            match rest.find(['/', '?']) {
                Some(j) if rest.as_bytes()[j] == b'/' => &rest[j..],
                _ => "/",
            }
        }
        None => t,
    };
    match t.bytes().position(|b| b == b'?') {
        Some(q) => &t[..q],
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(target: &str) -> &str {
        Request {
            method: "GET",
            target,
            version: Version::Http11,
            headers: Headers { fields: &[] },
            body: &[],
            keep_alive: true,
            socket: -1,
        }
        .path()
    }

    #[test]
    fn path_leaves_out_the_query_and_an_absolute_forms_authority() {
        assert_eq!(path_of("/"), "/");
        assert_eq!(path_of("/a/b?q=1?x"), "/a/b");
        assert_eq!(path_of("/a://b?c"), "/a://b");
        assert_eq!(path_of("/?"), "/");
        assert_eq!(path_of("http://host/p/q?x=1"), "/p/q");
        assert_eq!(path_of("http://host?x=/y"), "/");
        assert_eq!(path_of("http://host"), "/");
        assert_eq!(path_of("*"), "*");
    }
}
