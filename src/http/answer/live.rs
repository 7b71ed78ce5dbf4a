//! Whether a deferred request is still waited on: one word a connection
//! shares with the responders of its deferred requests, read by
//! [`super::Responder::is_live`] on any thread, so that work for a request
//! nobody waits on any more (its connection closed, it was answered `504`
//! at its deadline) is skipped rather than done.
//!
//! The word holds the number of the deferred request the connection waits
//! on, 0 when none (numbers start at 1). It is made the first time the
//! connection defers (one allocation per connection that ever defers, none
//! per request) and kept in the connection's busy part; the connection
//! lends it to the response for the handler's call, so that taking the
//! responder sets it at once.
//!
//! Only the worker's loop writes it: the handler, when it takes the
//! responder ([`Live::set`]), and the connection, when the request stops
//! waiting ([`Live::clear`]: answered, timed out, or the connection
//! released). Any thread reads it.
//!
//! Ordering: `Relaxed` on both sides, because the word publishes nothing
//! but itself. The one guarantee that matters, that a responder never
//! reads a value older than its own request's number, comes from how a
//! responder reaches another thread: the handler's store is sequenced
//! before the responder is handed over (a channel send, a thread spawn, a
//! mutex), which synchronises with the receiving side, so by coherence a
//! load there returns that store or a later one. A later one is a clear
//! (or a later request's number) and means the request no longer waits.
//! What a load may miss is a clear made an instant before: the reader then
//! does work (or posts a completion) for a request that just stopped
//! waiting, and the connection drops that completion as stale, as it
//! drops every completion whose number it no longer waits on.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The number of the deferred request a connection waits on, shared.
#[derive(Clone)]
pub(crate) struct Live(Arc<AtomicU64>);

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Live").field(&self.0.load(Ordering::Relaxed)).finish()
    }
}

impl Live {
    /// A word that says no request waits.
    pub(crate) fn new() -> Live {
        Live(Arc::new(AtomicU64::new(0)))
    }

    /// The connection waits on request `seq` (on the loop only).
    pub(crate) fn set(&self, seq: u64) {
        debug_assert!(seq != 0, "request numbers start at 1");
        self.0.store(seq, Ordering::Relaxed);
    }

    /// The connection waits on no request (on the loop only).
    pub(crate) fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Whether the connection waits on request `seq` (any thread).
    pub(crate) fn is(&self, seq: u64) -> bool {
        self.0.load(Ordering::Relaxed) == seq
    }
}
