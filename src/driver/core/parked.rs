//! The end of a turn, written once for both backends: the requests parked
//! while the turn's input was handled (their handlers known to be heavy,
//! [`crate::http::WorkerState::parks`]) are answered once the cheap ones
//! are, so that a fast route's request never waits for a heavy handler
//! that arrived in the same turn. The backend has sent (or submitted) the
//! cheap answers first; each parked connection is then resumed and served
//! as a completion's would be. Where it stops: what is parked and when is
//! the protocol state's; the admission of what runs here (the loop's turn
//! cap) is [`crate::http::WorkerState`]'s.

use std::mem;

use super::backend::{Backend, Connection};
use crate::driver::slab::Key;

/// Resumes every connection parked this turn (a connection closed since,
/// or no longer taking completions, is skipped), in the order they were
/// parked, and has the backend serve each.
pub(crate) fn resume_parked<'a, B: Backend<'a>>(b: &mut B) {
    let (core, _, _) = b.parts();
    let mut parked = mem::take(&mut core.parked);
    core.sh.take_parked(&mut parked);
    for &token in &parked {
        let key = Key::unpack(token);
        let (core, conns, handler) = b.parts();
        let Some(c) = conns.get_mut(key) else { continue };
        let http = c.http_mut();
        http.unpark();
        if !c.takes_completions() {
            continue;
        }
        c.http_mut().resume(&mut core.sh, handler);
        b.serve(key);
    }
    parked.clear();
    b.parts().0.parked = parked;
}
