//! Files under one directory, served by URL path without ever leaving it:
//! what a static-file route needs, written once so that an embedding
//! program does not get path safety wrong.
//!
//! A URL path is decoded segment by segment; a segment that decodes to
//! `.` or `..`, or that holds an encoded `/`, a `\`, or a NUL byte, is
//! refused before the file system sees it. The rest is opened relative to
//! the directory with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`,
//! so the kernel itself refuses any resolution (a symbolic link included)
//! that would step outside it. Where `openat2` is missing (Linux before
//! 5.6, or refused by a seccomp filter) the path is walked one component
//! at a time with `O_NOFOLLOW`, so no symbolic link is followed at all.
//! Directories are not listed, and only regular files are served: the
//! type is looked at before the file is opened, so a FIFO or a device is
//! never opened (an open can block, or act, on those). Names that start
//! with a dot can be refused ([`StaticDir::dotfiles`]).

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::answer::Response;
use super::request::Request;

/// Why a path was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No such file, a directory, or not a regular file: `404`.
    NotFound,
    /// The path tries to leave the directory (`..`, an encoded `/`, a NUL
    /// byte, a symbolic link pointing outside) or may not be read: `403`.
    Forbidden,
}

impl Refusal {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::NotFound => 404,
            Refusal::Forbidden => 403,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotFound => "not found",
            Refusal::Forbidden => "forbidden",
        })
    }
}

impl std::error::Error for Refusal {}

/// Whether `openat2` was found missing (then every open canonicalises).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// A directory whose regular files are served by URL path. Open it once
/// (in the handler factory, so every worker holds its own descriptor) and
/// serve from it in the handler:
///
/// ```no_run
/// use forkring::files::StaticDir;
/// use forkring::{Request, Response, Server};
///
/// Server::builder().serve(|| {
///     let dir = StaticDir::new("/srv/www").expect("open /srv/www");
///     move |req: &Request<'_>, res: &mut Response| match req.path().strip_prefix("/files/") {
///         Some(rest) => dir.serve(req, rest, res),
///         None => {
///             res.status(404).body("Not Found\n");
///         }
///     }
/// })
/// # ;
/// ```
#[derive(Debug)]
pub struct StaticDir {
    /// The directory, opened `O_PATH`.
    root: OwnedFd,
    /// Its canonical path.
    root_path: PathBuf,
    /// Whether names starting with `.` are served.
    dotfiles: bool,
}

impl StaticDir {
    /// Opens the directory `dir`.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<StaticDir> {
        let root_path = std::fs::canonicalize(dir.as_ref())?;
        let raw = nix::fcntl::open(&root_path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        // SAFETY: `open` just returned this descriptor and nothing else
        // owns it.
        let root = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(StaticDir { root, root_path, dotfiles: true })
    }

    /// Whether a path with a segment starting with `.` (`.git/config`,
    /// `.env`) is served (`true`, the default) or answered `404` as if it
    /// did not exist. Refuse them where the directory may hold files
    /// meant to stay private.
    pub fn dotfiles(mut self, serve: bool) -> StaticDir {
        self.dotfiles = serve;
        self
    }

    /// The directory's canonical path.
    pub fn path(&self) -> &Path {
        &self.root_path
    }

    /// Opens the regular file that the URL path `url_path` (percent-encoded,
    /// relative to the directory, without its query) names.
    pub fn open(&self, url_path: &str) -> Result<File, Refusal> {
        let rel = decode_path(url_path)?;
        if !self.dotfiles && rel.iter().any(|seg| seg.as_bytes().starts_with(b".")) {
            return Err(Refusal::NotFound);
        }
        // The type first, without following a final link (the open below
        // resolves links, beneath the directory): a FIFO or a device is
        // refused before anything opens it.
        match nix::sys::stat::fstatat(
            Some(self.root.as_raw_fd()),
            rel.as_path(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => {
                let kind = st.st_mode & libc::S_IFMT;
                if kind != libc::S_IFREG && kind != libc::S_IFLNK {
                    return Err(Refusal::NotFound);
                }
            }
            Err(e) => return Err(refusal(e)),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
        let raw = if NO_OPENAT2.load(Ordering::Relaxed) {
            self.open_walking(&rel, flags)?
        } else {
            let how =
                OpenHow::new().flags(flags).resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match nix::fcntl::openat2(self.root.as_raw_fd(), rel.as_path(), how) {
                Ok(fd) => fd,
                // Missing, or refused by a seccomp filter (which answers
                // EPERM for calls it does not know).
                Err(Errno::ENOSYS | Errno::EPERM) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    self.open_walking(&rel, flags)?
                }
                Err(e) => return Err(refusal(e)),
            }
        };
        // SAFETY: the open above just returned this descriptor and nothing
        // else owns it.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        // A link may name what is not a regular file; so may a file swapped
        // in since the look above (O_NONBLOCK kept that open from waiting).
        match file.metadata() {
            Ok(m) if m.is_file() => Ok(file),
            _ => Err(Refusal::NotFound),
        }
    }

    /// The fallback without `openat2`: each directory of `rel` is opened
    /// beneath the one before with `O_NOFOLLOW`, then the file the same
    /// way, so no symbolic link is followed and nothing outside the
    /// directory can be reached (the segments hold no `..`).
    fn open_walking(&self, rel: &Path, flags: OFlag) -> Result<i32, Refusal> {
        let mut dir: Option<OwnedFd> = None;
        let mut segments = rel.iter().peekable();
        while let Some(seg) = segments.next() {
            let at = dir.as_ref().unwrap_or(&self.root).as_raw_fd();
            if segments.peek().is_none() {
                return nix::fcntl::openat(Some(at), seg, flags | OFlag::O_NOFOLLOW, Mode::empty()).map_err(refusal);
            }
            let step = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let raw = nix::fcntl::openat(Some(at), seg, step, Mode::empty()).map_err(|e| match e {
                // A link, or a file where a directory should be.
                Errno::ENOTDIR => Refusal::NotFound,
                e => refusal(e),
            })?;
            // SAFETY: `openat` just returned this descriptor and nothing
            // else owns it.
            dir = Some(unsafe { OwnedFd::from_raw_fd(raw) });
        }
        Err(Refusal::NotFound)
    }

    /// Answers `req` with the file `url_path` names (see
    /// [`StaticDir::open`]): `GET` and `HEAD` only (`405` otherwise), with
    /// a `Content-Type` from the file's extension, `Range`,
    /// `If-Modified-Since` and `Last-Modified` (see [`Response::file`]);
    /// `404` or `403` for what [`StaticDir::open`] refuses.
    pub fn serve(&self, req: &Request<'_>, url_path: &str, res: &mut Response) {
        if req.method() != "GET" && req.method() != "HEAD" {
            res.status(405)
                .header("Allow", "GET, HEAD")
                .header("Content-Type", "text/plain")
                .body("Method Not Allowed\n");
            return;
        }
        let refused = match self.open(url_path) {
            Ok(file) => {
                res.header("Content-Type", content_type(url_path));
                match res.file(file) {
                    Ok(_) => return,
                    Err(_) => Refusal::NotFound,
                }
            }
            Err(r) => r,
        };
        let text = if refused == Refusal::Forbidden { "Forbidden\n" } else { "Not Found\n" };
        res.status(refused.status()).header("Content-Type", "text/plain").body(text);
    }
}

fn refusal(e: Errno) -> Refusal {
    match e {
        // Resolution stepped outside the directory, a link loop, no
        // permission.
        Errno::EXDEV | Errno::ELOOP | Errno::EACCES | Errno::EPERM => Refusal::Forbidden,
        _ => Refusal::NotFound,
    }
}

/// Decodes a percent-encoded URL path into a relative path of plain
/// segments, refusing what could name something outside the directory.
pub(crate) fn decode_path(url_path: &str) -> Result<PathBuf, Refusal> {
    let mut out = PathBuf::new();
    for raw in url_path.split('/') {
        if raw.is_empty() {
            continue;
        }
        let seg = percent_decode(raw.as_bytes()).ok_or(Refusal::NotFound)?;
        if seg == b"." || seg == b".." || seg.iter().any(|&b| b == b'/' || b == b'\\' || b == 0) {
            return Err(Refusal::Forbidden);
        }
        out.push(OsStr::from_bytes(&seg));
    }
    if out.as_os_str().is_empty() {
        // The directory itself: not listed.
        return Err(Refusal::NotFound);
    }
    Ok(out)
}

/// `%XX` decoding; `None` on a malformed escape.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let hi = hex(*s.get(i + 1)?)?;
            let lo = hex(*s.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A `Content-Type` for a file name, by its extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_and_escapes_refused() {
        assert_eq!(decode_path("a/b.txt"), Ok(PathBuf::from("a/b.txt")));
        assert_eq!(decode_path("a//b%20c"), Ok(PathBuf::from("a/b c")));
        for bad in [
            "..",
            "../etc/passwd",
            "a/../../b",
            "%2e%2e/x",
            "%2E%2E/x",
            ".%2e/x",
            "a%2f..%2f..%2fb",
            "a%2Fb",
            "a%00b",
            "a%5cb",
            "./x",
        ] {
            assert_eq!(decode_path(bad), Err(Refusal::Forbidden), "{bad}");
        }
        assert_eq!(decode_path(""), Err(Refusal::NotFound));
        assert_eq!(decode_path("/"), Err(Refusal::NotFound));
        assert_eq!(decode_path("%zz"), Err(Refusal::NotFound));
        assert_eq!(decode_path("a%2"), Err(Refusal::NotFound));
    }

    #[test]
    fn files_beneath_and_only_beneath() {
        let base = std::env::temp_dir().join(format!("forkring-static-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/in.txt"), b"in").unwrap();
        std::fs::write(base.join("secret"), b"secret").unwrap();
        let _ = std::os::unix::fs::symlink("../secret", root.join("out-link"));
        let _ = std::os::unix::fs::symlink("sub/in.txt", root.join("in-link"));
        let _ = std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link"));
        let dir = StaticDir::new(&root).unwrap();
        assert!(dir.open("sub/in.txt").is_ok());
        assert!(dir.open("in-link").is_ok(), "a link that stays inside is followed");
        assert_eq!(dir.open("out-link").err(), Some(Refusal::Forbidden));
        assert_eq!(dir.open("abs-link").err(), Some(Refusal::Forbidden));
        assert_eq!(dir.open("sub").err(), Some(Refusal::NotFound), "directories are not listed");
        assert_eq!(dir.open("nothing").err(), Some(Refusal::NotFound));
        assert_eq!(dir.open("..%2fsecret").err(), Some(Refusal::Forbidden));
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A directory with a file, a dotfile, a FIFO, a device node and links.
    fn odd_tree(name: &str) -> (PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!("forkring-static-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("sub/in.txt"), b"in").unwrap();
        std::fs::write(root.join(".env"), b"secret").unwrap();
        std::fs::write(root.join(".git/config"), b"secret").unwrap();
        std::fs::write(base.join("secret"), b"secret").unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        std::os::unix::fs::symlink("fifo", root.join("fifo-link")).unwrap();
        std::os::unix::fs::symlink("sub/in.txt", root.join("in-link")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("out-link")).unwrap();
        std::os::unix::fs::symlink("..", root.join("sub/up")).unwrap();
        (base, root)
    }

    #[test]
    fn a_fifo_is_refused_without_being_opened() {
        let (base, root) = odd_tree("fifo");
        let dir = StaticDir::new(&root).unwrap();
        // Opening a FIFO for reading without O_NONBLOCK would wait for a
        // writer; with it, the open succeeds. Neither happens: no open.
        assert_eq!(dir.open("fifo").err(), Some(Refusal::NotFound));
        // Through a link, the open (non-blocking) happens and the type
        // check after it refuses.
        assert_eq!(dir.open("fifo-link").err(), Some(Refusal::NotFound));
        // A device node, where one exists to look at.
        if Path::new("/dev/null").exists() {
            let null = StaticDir::new("/dev").unwrap();
            assert_eq!(null.open("null").err(), Some(Refusal::NotFound));
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn dotfiles_are_refused_when_asked() {
        let (base, root) = odd_tree("dot");
        let served = StaticDir::new(&root).unwrap();
        assert!(served.open(".env").is_ok());
        let refused = StaticDir::new(&root).unwrap().dotfiles(false);
        for p in [".env", ".git/config", "%2egit/config", "sub/%2e%2e/.env"] {
            assert!(refused.open(p).is_err(), "{p}");
        }
        assert_eq!(refused.open(".env").err(), Some(Refusal::NotFound));
        assert_eq!(refused.open("%2egit/config").err(), Some(Refusal::NotFound));
        assert!(refused.open("sub/in.txt").is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_walk_without_openat2_follows_no_link() {
        let (base, root) = odd_tree("walk");
        let dir = StaticDir::new(&root).unwrap();
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let ok = |p: &str| dir.open_walking(Path::new(p), flags).map(|fd| drop(unsafe_owned(fd)));
        assert_eq!(ok("sub/in.txt"), Ok(()));
        assert_eq!(ok(".env"), Ok(()));
        // Links are refused, whether they stay inside or not.
        assert_eq!(ok("in-link"), Err(Refusal::Forbidden));
        assert_eq!(ok("out-link"), Err(Refusal::Forbidden));
        assert_eq!(ok("sub/up/secret").err().map(Refusal::status), Some(404));
        assert_eq!(ok("nothing"), Err(Refusal::NotFound));
        assert_eq!(ok("sub/in.txt/x"), Err(Refusal::NotFound));
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// Takes ownership of a descriptor a test just opened.
    fn unsafe_owned(fd: i32) -> OwnedFd {
        // SAFETY: the caller just opened `fd` and nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
}
