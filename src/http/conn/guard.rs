//! Calls into user code (a handler, a body reader, a stream's ready
//! callback) so that a panic there costs one request, not the worker: the
//! connection answers `500` (or drops the callback) and the loop goes on.
//!
//! Unwinding through the connection is safe to catch: user code gets only
//! the request, the response it fills in and its own state, and the
//! connection's state is not touched until the call returns, so no
//! invariant of the loop's can be left half-changed.

use std::panic::{self, AssertUnwindSafe};

use crate::http::answer::Ready;

/// Runs `f`; `None` if it panicked.
#[inline]
pub(super) fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    panic::catch_unwind(AssertUnwindSafe(f)).ok()
}

/// Runs a stream's ready callback on the loop; a panic in it is logged.
pub(super) fn run_ready(f: Ready) {
    if guarded(f).is_none() {
        log::error!("a stream's ready callback panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_said() {
        assert_eq!(guarded(|| 7), Some(7));
        assert_eq!(guarded(|| -> u8 { panic!("a handler's bug") }), None);
        run_ready(Box::new(|| panic!("a callback's bug")));
    }
}
