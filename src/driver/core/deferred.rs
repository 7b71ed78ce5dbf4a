//! The deferred hand-off, written once for both backends: the completions
//! other threads posted since the last turn (deferred answers, a stream's
//! writer, a paused body's resume) are taken in one batch and each is
//! delivered to its connection's protocol state; a connection that has
//! output again is the backend's to send ([`Backend::serve`]). Where it
//! stops: the mailbox and its wake-up are [`crate::http`]'s; sending is the
//! backend's.

use std::mem;

use super::backend::{Backend, Connection};
use crate::driver::slab::Key;

/// Delivers every completion taken this turn to its connection (the
/// connection's slab key travels in the completion's token, and a key is
/// never issued twice; one closed since, or no longer taking completions,
/// is skipped), and has the
/// backend serve each connection the completion gave output.
pub(crate) fn complete_deferred<'a, B: Backend<'a>>(b: &mut B) {
    let (core, _, _) = b.parts();
    // The batch keeps its capacity from turn to turn: no allocation.
    let mut batch = mem::take(&mut core.batch);
    core.sh.take_completions(&mut batch);
    for done in batch.drain(..) {
        let key = Key::unpack(done.token());
        let (core, conns, handler) = b.parts();
        let Some(c) = conns.get_mut(key) else { continue };
        if c.takes_completions() && c.http_mut().complete(done, &mut core.sh, handler) {
            b.serve(key);
        }
    }
    b.parts().0.batch = batch;
}
