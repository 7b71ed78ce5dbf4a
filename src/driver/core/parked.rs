//! The end of a turn, written once for both backends: the requests parked
//! while the turn's input was handled (their handlers known to be heavy,
//! [`crate::http::WorkerState::parks`]) are answered once the cheap ones
//! are, at most a loop target's worth a turn, so that a fast route's
//! request waits for one heavy handler at most, never for all that
//! arrived with it. The backend has sent (or submitted) the cheap answers
//! first; each parked connection is then resumed and served as a
//! completion's would be. Where it stops: what is parked and when is
//! the protocol state's; the admission of what runs here (the loop's turn
//! cap) is [`crate::http::WorkerState`]'s.

use super::backend::{Backend, Connection};
use crate::driver::slab::Key;

/// Resumes the connections parked, oldest first, as many as the turn
/// takes ([`crate::http::WorkerState::next_parked`]; a connection closed
/// since, or no longer taking completions, is skipped), and has the
/// backend serve each.
pub(crate) fn resume_parked<'a, B: Backend<'a>>(b: &mut B) {
    while let Some(parked) = b.parts().0.sh.next_parked() {
        let key = Key::unpack(parked.token);
        if !b.parts().1.get_mut(key).is_some_and(|c| c.takes_completions()) {
            continue;
        }
        if parked.runs {
            // Before the unpark: the io_uring loop's reconciling resumes
            // what an unparked connection holds.
            b.send_framed();
        }
        let (core, conns, handler) = b.parts();
        let Some(c) = conns.get_mut(key) else { continue };
        c.http_mut().unpark();
        c.http_mut().resume(&mut core.sh, handler);
        b.serve(key);
    }
}
