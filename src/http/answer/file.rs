//! File response bodies: what to answer for a file given the request's
//! `Range` and conditional fields (pure functions, tested with plain
//! values), and the file part of a connection's output, which the driver
//! sends without copying (`splice` on io_uring, `sendfile` on epoll).

use std::fs::File;
use std::io;
use std::time::UNIX_EPOCH;

use crate::http::date::parse_http_date;

/// A file to send as a response body.
#[derive(Debug)]
pub(crate) struct FileBody {
    /// The open file.
    pub(crate) file: File,
    /// Its length when the response was made.
    pub(crate) total: u64,
    /// Its modification time, in seconds since the epoch.
    pub(crate) mtime: Option<u64>,
}

impl FileBody {
    /// Reads the length and the modification time of `file`, which must be
    /// a regular file.
    pub(crate) fn new(file: File) -> io::Result<FileBody> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
        Ok(FileBody { file, total: meta.len(), mtime })
    }
}

/// What to answer for a file body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `200` with the whole file.
    Whole,
    /// `206` with bytes `start..start + len`.
    Part { start: u64, len: u64 },
    /// `304`: the client's copy is current.
    NotModified,
    /// `412`: the file changed after the date of `If-Unmodified-Since`.
    PreconditionFailed,
    /// `416`: no byte of the range is in the file.
    Unsatisfiable,
}

/// Decides the answer for a `total`-byte file last modified at `mtime`
/// (seconds) to a GET or HEAD with these `Range`, `If-Range`,
/// `If-Unmodified-Since` and `If-Modified-Since` fields, in RFC 9110's
/// order (§13.2.2; §13.1.3, §13.1.4, §13.1.5, §14.2). A date in any of
/// HTTP's three forms counts; one that does not parse is ignored.
pub(crate) fn plan(
    range: Option<&[u8]>,
    if_range: Option<&[u8]>,
    if_unmodified_since: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
    total: u64,
    mtime: Option<u64>,
) -> Plan {
    if let (Some(ius), Some(mtime)) = (if_unmodified_since, mtime) {
        if parse_http_date(ius).is_some_and(|since| mtime > since) {
            return Plan::PreconditionFailed;
        }
    }
    if let (Some(ims), Some(mtime)) = (if_modified_since, mtime) {
        if parse_http_date(ims).is_some_and(|since| mtime <= since) {
            return Plan::NotModified;
        }
    }
    let Some(range) = range else { return Plan::Whole };
    // A validator that does not match the file (or that cannot be
    // compared: an entity tag, since none is sent) means the whole file.
    if let Some(v) = if_range {
        let current = mtime.zip(parse_http_date(v)).is_some_and(|(m, d)| m == d);
        if !current {
            return Plan::Whole;
        }
    }
    match parse_range(range, total) {
        Some(Ok((start, len))) => Plan::Part { start, len },
        Some(Err(())) => Plan::Unsatisfiable,
        None => Plan::Whole,
    }
}

/// One byte range of a `total`-byte representation: `Some(Ok((start,
/// len)))`; `Some(Err(()))` when the field is valid but no range overlaps
/// the file; `None` when it is to be ignored (not `bytes=`, malformed, or
/// more than one range, which is answered with the whole file).
pub(crate) fn parse_range(field: &[u8], total: u64) -> Option<Result<(u64, u64), ()>> {
    let field = std::str::from_utf8(field).ok()?.trim();
    let (unit, set) = field.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let set = set.trim();
    if set.contains(',') {
        return None;
    }
    let (first, last) = set.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // A suffix: the last N bytes.
        if !digits(last) {
            return None;
        }
        let n: u64 = last.parse().ok()?;
        if n == 0 || total == 0 {
            return Some(Err(()));
        }
        let n = n.min(total);
        return Some(Ok((total - n, n)));
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return None;
    }
    let start: u64 = first.parse().ok()?;
    let end = if last.is_empty() { u64::MAX } else { last.parse().ok()? };
    if end < start {
        return None;
    }
    if start >= total {
        return Some(Err(()));
    }
    let end = end.min(total - 1);
    Some(Ok((start, end - start + 1)))
}

/// The file part of a connection's output, sent after the bytes framed
/// before it.
#[derive(Debug)]
pub(crate) struct FileOut {
    /// The file.
    pub(crate) file: File,
    /// Where the next byte comes from.
    pub(crate) offset: u64,
    /// Bytes still to send.
    pub(crate) remaining: u64,
    /// The connection closes after it.
    pub(crate) close: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s: &str| parse_range(s.as_bytes(), 1000);
        assert_eq!(r("bytes=0-99"), Some(Ok((0, 100))));
        assert_eq!(r("bytes=900-"), Some(Ok((900, 100))));
        assert_eq!(r("bytes=-100"), Some(Ok((900, 100))));
        assert_eq!(r("bytes=-5000"), Some(Ok((0, 1000))));
        assert_eq!(r("bytes=990-5000"), Some(Ok((990, 10))));
        assert_eq!(r("Bytes = 5-5"), Some(Ok((5, 1))));
        assert_eq!(r("bytes=1000-"), Some(Err(())));
        assert_eq!(r("bytes=-0"), Some(Err(())));
        assert_eq!(r("bytes=5-1"), None);
        assert_eq!(r("bytes=0-1,5-9"), None);
        assert_eq!(r("items=0-1"), None);
        assert_eq!(r("bytes=x-1"), None);
        assert_eq!(r("bytes=-"), None);
        assert_eq!(r("bytes=+1-2"), None);
        assert_eq!(r("bytes=99999999999999999999-"), None);
        assert_eq!(parse_range(b"bytes=0-", 0), Some(Err(())));
    }

    #[test]
    fn plans() {
        let date = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let t = 784_111_777;
        assert_eq!(plan(None, None, None, None, 10, Some(t)), Plan::Whole);
        // If-Unmodified-Since: 412 when the file is newer, first of all.
        assert_eq!(plan(None, None, Some(date), None, 10, Some(t + 1)), Plan::PreconditionFailed);
        assert_eq!(plan(Some(b"bytes=2-3"), None, Some(date), Some(date), 10, Some(t + 1)), Plan::PreconditionFailed);
        assert_eq!(plan(None, None, Some(date), None, 10, Some(t)), Plan::Whole);
        assert_eq!(plan(None, None, Some(b"garbage"), None, 10, Some(t + 1)), Plan::Whole);
        assert_eq!(
            plan(None, None, Some(b"Sun Nov  6 08:49:37 1994"), None, 10, Some(t + 1)),
            Plan::PreconditionFailed
        );
        assert_eq!(plan(None, None, Some(b"Sunday, 06-Nov-94 08:49:37 GMT"), None, 10, Some(t)), Plan::Whole);
        assert_eq!(plan(None, None, None, Some(date), 10, Some(t)), Plan::NotModified);
        assert_eq!(plan(None, None, None, Some(date), 10, Some(t + 1)), Plan::Whole);
        assert_eq!(plan(None, None, None, Some(b"garbage"), 10, Some(t)), Plan::Whole);
        assert_eq!(plan(Some(b"bytes=2-3"), None, None, None, 10, Some(t)), Plan::Part { start: 2, len: 2 });
        assert_eq!(plan(Some(b"bytes=20-"), None, None, None, 10, Some(t)), Plan::Unsatisfiable);
        assert_eq!(plan(Some(b"bytes=2-3"), Some(date), None, None, 10, Some(t)), Plan::Part { start: 2, len: 2 });
        assert_eq!(plan(Some(b"bytes=2-3"), Some(date), None, None, 10, Some(t + 5)), Plan::Whole);
        assert_eq!(plan(Some(b"bytes=2-3"), Some(b"\"etag\""), None, None, 10, Some(t)), Plan::Whole);
    }
}
