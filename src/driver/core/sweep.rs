//! The sweep for expired deadlines, written once for both backends: its
//! cadence (how often, and how soon after the earliest deadline). Where it
//! stops: the deadlines themselves are the protocol state's
//! ([`crate::http::Conn::deadline`]).

use super::Core;
use crate::config::Config;
use crate::http::DRAIN_IDLE_GRACE_MS;

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
    pub(crate) fn sweep_unfinished(&mut self) {
        self.next_sweep = self.sh.now_ms();
    }

    /// A sweep went over `slots` slab slots and found `next_expiry` the
    /// earliest deadline still ahead: the next sweep comes then, so that a
    /// connection is closed when its time is up rather than up to a sweep
    /// period late, but no sooner than [`SWEEP_SLOTS_PER_MS`] allows and no
    /// later than the sweep period.
    pub(crate) fn sweep_finished(&mut self, next_expiry: u64, slots: u32) {
        let now = self.sh.now_ms();
        if self.next_sweep <= now {
            return; // unfinished: at once
        }
        let floor = now + 1 + u64::from(slots) / SWEEP_SLOTS_PER_MS;
        self.next_sweep = self.next_sweep.min(next_expiry.max(floor));
    }
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
