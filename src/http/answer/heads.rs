//! Response heads framed before, kept per worker so that an answer that
//! repeats itself costs one copy to frame.
//!
//! Most servers answer most requests with a few heads: the same status,
//! the same fields a handler set, the same body length, and a `Date` that
//! changes once a second. Framing such a head field by field costs a dozen
//! small copies and a number's formatting per response; [`Heads`] keeps
//! the bytes of the last few heads with what decided them ([`Shape`]), and
//! one that matches is copied whole, its `Date` rewritten in place when
//! the second has changed since.
//!
//! Where it stops: what a head holds, and its validity, is
//! [`super::Response`]'s; this only remembers its bytes.

use crate::http::date::DateCache;

/// Heads kept. A worker whose answers have more shapes than this frames
/// the others field by field (a miss costs that and one copy).
const SLOTS: usize = 8;

/// Fields (as framed) longer than this are not kept: their heads are rare
/// and would pin memory.
const MAX_FIELDS: usize = 512;

/// How a head ends the connection's side of the exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Connection {
    /// No `Connection` field.
    Open,
    /// `Connection: close`.
    Close,
    /// `Connection: keep-alive` (an HTTP/1.0 client that asked for it).
    KeepAlive,
}

/// Everything a head's bytes depend on but the date.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape<'a> {
    /// A valid final status (200–599).
    pub(crate) status: u16,
    /// The body's `Content-Length`.
    pub(crate) length: u64,
    /// The `Connection` field.
    pub(crate) connection: Connection,
    /// The handler's fields, framed (`Name: value\r\n` each).
    pub(crate) fields: &'a [u8],
}

/// One head kept: its shape and its bytes.
#[derive(Debug)]
struct Slot {
    status: u16,
    length: u64,
    connection: Connection,
    fields: Vec<u8>,
    /// The framed head, final empty line included.
    head: Vec<u8>,
    /// Where in `head` the date is (always found: every head has one).
    date_at: Option<usize>,
    /// The second whose date `head` holds.
    secs: u64,
}

impl Slot {
    fn is(&self, shape: &Shape<'_>) -> bool {
        self.status == shape.status
            && self.length == shape.length
            && self.connection == shape.connection
            && self.fields == shape.fields
    }
}

/// The heads a worker framed last; see the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct Heads {
    slots: Vec<Slot>,
    /// The slot that matched last: tried first.
    last: usize,
    /// The slot replaced next, once all are in use.
    next: usize,
}

impl Heads {
    /// Appends the head of `shape` to `out`: a copy of the one kept, or
    /// framed by `put` (which appends it, given the date) and kept.
    #[inline]
    pub(crate) fn frame(
        &mut self,
        out: &mut Vec<u8>,
        shape: &Shape<'_>,
        date: &DateCache,
        put: impl FnOnce(&mut Vec<u8>, &[u8]),
    ) {
        let at = match self.slots.get(self.last) {
            Some(s) if s.is(shape) => self.last,
            _ => match self.slots.iter().position(|s| s.is(shape)) {
                Some(i) => i,
                None if shape.fields.len() > MAX_FIELDS => return put(out, date.get()),
                None => self.keep(shape, date, put),
            },
        };
        self.last = at;
        let slot = &mut self.slots[at];
        if slot.secs != date.secs() {
            if let Some(at) = slot.date_at {
                slot.head[at..at + date.get().len()].copy_from_slice(date.get());
            }
            slot.secs = date.secs();
        }
        out.extend_from_slice(&slot.head);
    }

    /// Frames the head of `shape` into a slot (a new one, or the next to
    /// be replaced) and says which.
    #[cold]
    fn keep(&mut self, shape: &Shape<'_>, date: &DateCache, put: impl FnOnce(&mut Vec<u8>, &[u8])) -> usize {
        let at = if self.slots.len() < SLOTS {
            self.slots.push(Slot {
                status: 0,
                length: 0,
                connection: Connection::Open,
                fields: Vec::new(),
                head: Vec::new(),
                date_at: None,
                secs: 0,
            });
            self.slots.len() - 1
        } else {
            let at = self.next;
            self.next = (self.next + 1) % SLOTS;
            at
        };
        let slot = &mut self.slots[at];
        slot.status = shape.status;
        slot.length = shape.length;
        slot.connection = shape.connection;
        slot.fields.clear();
        slot.fields.extend_from_slice(shape.fields);
        slot.head.clear();
        put(&mut slot.head, date.get());
        // The date is the value of the head's first field.
        const DATE: &[u8] = b"\r\nDate: ";
        slot.date_at = slot.head.windows(DATE.len()).position(|w| w == DATE).map(|i| i + DATE.len());
        debug_assert!(slot.date_at.is_some(), "a head without its date");
        slot.secs = date.secs();
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(shape: Shape<'_>) -> impl FnOnce(&mut Vec<u8>, &[u8]) + '_ {
        move |out: &mut Vec<u8>, date: &[u8]| {
            out.extend_from_slice(format!("HTTP/1.1 {} Some Reason\r\nDate: ", shape.status).as_bytes());
            out.extend_from_slice(date);
            out.extend_from_slice(format!("\r\nContent-Length: {}\r\n", shape.length).as_bytes());
            if shape.connection == Connection::Close {
                out.extend_from_slice(b"Connection: close\r\n");
            }
            out.extend_from_slice(shape.fields);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn shape(status: u16, length: u64, fields: &[u8]) -> Shape<'_> {
        Shape { status, length, connection: Connection::Open, fields }
    }

    #[test]
    fn a_kept_head_is_copied_and_its_date_follows_the_clock() {
        let mut heads = Heads::default();
        let mut date = DateCache::new();
        let a = shape(200, 5, b"X-A: 1\r\n");
        let mut out = Vec::new();
        heads.frame(&mut out, &a, &date, put(a));
        let mut again = Vec::new();
        heads.frame(&mut again, &a, &date, |_: &mut Vec<u8>, _: &[u8]| panic!("framed again"));
        assert_eq!(out, again);
        date.set_secs(784_111_777);
        let mut later = Vec::new();
        heads.frame(&mut later, &a, &date, |_: &mut Vec<u8>, _: &[u8]| panic!("framed again"));
        let mut fresh = Vec::new();
        put(a)(&mut fresh, date.get());
        assert_eq!(String::from_utf8(later).unwrap(), String::from_utf8(fresh).unwrap());
    }

    #[test]
    fn every_part_of_the_shape_tells_heads_apart() {
        let mut heads = Heads::default();
        let date = DateCache::new();
        let shapes = [
            shape(200, 5, b"X-A: 1\r\n"),
            shape(404, 5, b"X-A: 1\r\n"),
            shape(200, 6, b"X-A: 1\r\n"),
            shape(200, 5, b"X-A: 2\r\n"),
            Shape { connection: Connection::Close, ..shape(200, 5, b"X-A: 1\r\n") },
        ];
        for _ in 0..2 {
            for s in &shapes {
                let mut out = Vec::new();
                heads.frame(&mut out, s, &date, put(*s));
                let mut fresh = Vec::new();
                put(*s)(&mut fresh, date.get());
                assert_eq!(out, fresh);
            }
        }
        assert_eq!(heads.slots.len(), shapes.len(), "each kept once");
    }

    #[test]
    fn the_oldest_slot_makes_room_and_large_fields_are_not_kept() {
        let mut heads = Heads::default();
        let date = DateCache::new();
        for len in 0..(SLOTS as u64 * 3) {
            let s = shape(200, len, b"");
            let mut out = Vec::new();
            heads.frame(&mut out, &s, &date, put(s));
            let mut fresh = Vec::new();
            put(s)(&mut fresh, date.get());
            assert_eq!(out, fresh);
        }
        assert_eq!(heads.slots.len(), SLOTS);
        let big = vec![b'x'; MAX_FIELDS + 1];
        let s = shape(200, 1, &big);
        let mut out = Vec::new();
        heads.frame(&mut out, &s, &date, put(s));
        assert!(out.ends_with(b"xx\r\n") && heads.slots.iter().all(|k| k.fields.len() <= MAX_FIELDS));
    }
}
