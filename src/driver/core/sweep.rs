//! The sweep for expired deadlines, written once for both backends: its
//! cadence (how often, and how soon after the earliest deadline) and the
//! pass over the connection table that closes what timed out. Where it
//! stops: the deadlines themselves are the protocol state's
//! ([`crate::http::Conn::deadline`]); how a connection is closed or served
//! again is the backend's ([`Backend`]).

use std::os::fd::RawFd;

use super::backend::{Backend, Connection, Phase};
use super::Core;
use crate::config::Config;
use crate::http::{WorkerState, DRAIN_IDLE_GRACE_MS};

/// Most connections one sweep closes for their deadline. When a thousand
/// slow clients time out together, closing them all in one turn holds
/// every other connection's requests for the whole batch; in slices of
/// this many the loop serves between them.
pub(crate) const SWEEP_CLOSE_BUDGET: usize = 64;

/// Slab slots one millisecond between two sweeps pays for. A sweep comes
/// when the earliest deadline falls due (see [`Core::sweep_finished`]), but
/// never sooner than a millisecond plus one per this many slots after the
/// last one: a sweep is a pass over the slab, so even while deadlines fall
/// due every millisecond the loop passes over at most this many slots a
/// millisecond (with a thousand connections a sweep then comes at most
/// 5 ms after a deadline, with ten thousand at most 40 ms).
pub(crate) const SWEEP_SLOTS_PER_MS: u64 = 256;

/// The sweep period while draining: a quarter of the idle grace, so idle
/// connections leave within a quarter grace of it.
pub(crate) const DRAIN_SWEEP_MS: u64 = if DRAIN_IDLE_GRACE_MS / 4 > 5 { DRAIN_IDLE_GRACE_MS / 4 } else { 5 };

/// The longest time between two sweeps for expired deadlines while
/// serving: a tenth of the shortest timeout, between 5 ms and 250 ms. A
/// sweep also comes sooner, when the earliest deadline falls due (see
/// [`Core::sweep_finished`]). A sweep is a pass over the slab. The sweep
/// also wakes an idle loop, whose turn is its heartbeat: with a worker
/// timeout, at least four beats fall within it.
pub(crate) fn sweep_interval_ms(config: &Config) -> u64 {
    let t = config.timeouts.header.min(config.timeouts.idle).as_millis() as u64;
    let every = (t / 10).clamp(5, 250);
    match config.worker_timeout {
        Some(w) => every.min((w.as_millis() as u64 / 4).max(5)),
        None => every,
    }
}

impl Core<'_> {
    /// The current sweep period: [`DRAIN_SWEEP_MS`] while draining, a
    /// tenth of the shortest timeout (5 to 250 ms) otherwise.
    pub(crate) fn sweep_interval_ms(&self) -> u64 {
        if self.draining() {
            DRAIN_SWEEP_MS.min(self.sweep_ms)
        } else {
            self.sweep_ms
        }
    }

    /// Whether a sweep is due now; if so, the next one is scheduled.
    pub(crate) fn sweep_due(&mut self) -> bool {
        let now = self.sh.now_ms();
        if now < self.next_sweep {
            return false;
        }
        self.next_sweep = now + self.sweep_interval_ms();
        true
    }

    /// A sweep stopped at [`SWEEP_CLOSE_BUDGET`] closes: the next turn
    /// sweeps again, at once.
    fn sweep_unfinished(&mut self) {
        self.next_sweep = self.sh.now_ms();
    }

    /// A sweep went over `slots` slab slots and found `next_expiry` the
    /// earliest deadline still ahead: the next sweep comes then, so that a
    /// connection is closed when its time is up rather than up to a sweep
    /// period late, but no sooner than [`SWEEP_SLOTS_PER_MS`] allows and no
    /// later than the sweep period.
    fn sweep_finished(&mut self, next_expiry: u64, slots: u32) {
        let now = self.sh.now_ms();
        if self.next_sweep <= now {
            return; // unfinished: at once
        }
        let floor = now + 1 + u64::from(slots) / SWEEP_SLOTS_PER_MS;
        self.next_sweep = self.next_sweep.min(next_expiry.max(floor));
    }
}

/// Goes over the connection table once ([`Core::sweep_due`] says when) and
/// ends every wait that is over: a lingering connection whose time is up
/// is closed; an open one whose deadline passed is closed too, unless its
/// protocol state answers instead (a deferred request gets its `504`), in
/// which case the backend serves it again. A connection already closing
/// has nothing to wait for. At most [`SWEEP_CLOSE_BUDGET`] connections
/// close per sweep; the next one then comes at once.
pub(crate) fn sweep<'a, B: Backend<'a>>(b: &mut B) {
    let (core, conns, _) = b.parts();
    let now = core.sh.now_ms();
    let slots = conns.capacity();
    let mut closes = 0;
    let mut next = u64::MAX;
    for idx in 0..slots {
        let (core, conns, _) = b.parts();
        if closes == SWEEP_CLOSE_BUDGET {
            core.sweep_unfinished();
            break;
        }
        let Some((key, c)) = conns.at(idx) else { continue };
        let expiry = match c.phase() {
            Phase::Open => c.http().deadline(),
            Phase::Linger { until } => until,
            Phase::Closing => continue,
        };
        if expiry > now {
            next = next.min(expiry);
            continue;
        }
        let closed = if timed_out(c, &mut core.sh) {
            b.close(key);
            true
        } else {
            b.serve(key)
        };
        if closed {
            log::debug!("connection {idx}: timed out");
            closes += 1;
        }
    }
    b.parts().0.sweep_finished(next, slots);
}

/// Whether a connection whose wait is over closes now: one lingering; a
/// stream with output stuck in the kernel (a client that stopped reading
/// closes like any other); or one whose protocol state gives up
/// ([`crate::http::Conn::on_deadline`], which answers a deferred request
/// `504` instead). A draining idle connection whose last response has not
/// all reached the client yet stays ([`unacked`]).
fn timed_out<C: Connection>(c: &mut C, sh: &mut WorkerState) -> bool {
    if matches!(c.phase(), Phase::Linger { .. }) || (c.output_taken() && c.http().is_streaming()) {
        return true;
    }
    if sh.draining() && c.http().is_idle() && (c.output_taken() || unacked(c.socket())) {
        c.http_mut().await_delivery(sh);
        return false;
    }
    c.http_mut().on_deadline(sh)
}

/// Whether bytes sent on `socket` have not all reached the peer.
///
/// A draining worker gives an idle keep-alive connection
/// [`DRAIN_IDLE_GRACE_MS`] for a request that may be on its way; its
/// client sends that request only once it has the last response whole.
/// The grace runs from the connection's last send, but the last of that
/// response may then still be in the backend's send (io_uring) or in the
/// kernel (up to a socket buffer, megabytes), which a slow link takes far
/// longer than the grace to carry: closing at the grace would close under
/// the request the client sends once it has them. So the grace starts
/// again while any is on its way, bounded by the drain's timeout. One
/// `ioctl`, only for a draining connection whose grace has run out.
fn unacked(socket: RawFd) -> bool {
    crate::sys::unacked(socket).is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sweep_cadence_follows_the_timeouts_and_the_drain() {
        let mut config = Config::default();
        assert_eq!(sweep_interval_ms(&config), 250);
        config.timeouts.header = Duration::from_millis(400);
        assert_eq!(sweep_interval_ms(&config), 40);
        config.timeouts.idle = Duration::from_millis(20);
        assert_eq!(sweep_interval_ms(&config), 5);
        assert_eq!(DRAIN_SWEEP_MS, 50);
    }
}
