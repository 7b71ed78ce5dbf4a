//! The policy both backends share, written once: the per-worker protocol
//! state, the drain state machine, and the steps both loops take in the
//! same way. A backend keeps only how it submits work and learns of
//! readiness; what it does about a connection or the listener, and when,
//! is decided here.
//!
//! Its rooms: [`accept`](mod@accept) (accept errors and back-off, taking in what is
//! queued when draining starts), [`close`] (the close decision, lingering,
//! the upgrade hand-over), [`sweep`](mod@sweep) (closing what timed out,
//! and how often to look), [`deferred`] (delivering the completions other
//! threads posted), [`parked`] (answering, at the end of a turn, the
//! heavy requests its cheap ones went before) and [`backend`] (what those shared steps see of a
//! backend). This file holds the state they share and the drain.
//!
//! # The drain state machine
//!
//! ```text
//!   serving ──(SIGTERM, lifeline hang-up, unusable listener)──► draining
//!   draining ──(no connection left, listener closed)──► done: Ok, or the
//!                                                       listener's error
//!   draining ──(drain timeout)──► done (connections left are closed)
//! ```
//!
//! Entering the drain stops accepting; once the backend has no accept left
//! in the kernel it hands the listener to [`Core::close_listener`], which
//! takes in what is queued and closes it. Idle connections expire after
//! [`crate::http::DRAIN_IDLE_GRACE_MS`], once their last response has left
//! the backend and the kernel (see [`sweep()`]); the sweep runs every
//! [`DRAIN_SWEEP_MS`](sweep::DRAIN_SWEEP_MS) while draining (and every
//! [`Core::sweep_interval_ms`] otherwise), so a
//! deadline is enforced at most that late on either backend.

mod accept;
mod backend;
mod close;
mod deferred;
mod parked;
mod sweep;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use super::link::Link;
use super::timers;
use crate::config::Config;
use crate::http::{Completion, Completions, WorkerState};

use accept::drain_listener;
use sweep::sweep_interval_ms;

pub(crate) use accept::{accept, AcceptError, ACCEPT_BACKOFF_MS};
pub(crate) use backend::{Backend, Connection, Phase};
pub(crate) use close::{after_output, hand_over, last_output, linger, After};
pub(crate) use deferred::complete_deferred;
pub(crate) use parked::resume_parked;
pub(crate) use sweep::sweep;

/// Where a worker's loop is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Accepting and serving.
    Serving,
    /// Not accepting; serving what is left until `until` (in
    /// [`WorkerState::now_ms`] time).
    Draining {
        /// When the drain gives up on the connections left.
        until: u64,
    },
}

/// The state and policy shared by both backends.
pub(crate) struct Core<'a> {
    /// Limits, timeouts, the connection cap and the backlog.
    pub(crate) config: &'a Config,
    /// The drain flag, the wake-up eventfd and the messages from the master.
    pub(crate) link: &'a Link,
    /// Per-worker protocol state shared by every connection.
    pub(crate) sh: WorkerState,
    /// The worker's copies of its listening sockets (one per address it
    /// serves), each until draining closes it; a listener's index is the
    /// one the backend names it by.
    pub(crate) listeners: Vec<Option<OwnedFd>>,
    /// Serving or draining.
    state: State,
    /// No accept before this time (after running out of resources).
    accept_paused_until: u64,
    /// The last accept failed for lack of resources (logged once per run).
    accept_failing: bool,
    /// The error the worker exits with once drained (an unusable listener).
    failure: Option<io::Error>,
    /// When the next deadline sweep is due.
    next_sweep: u64,
    /// The sweep period while serving.
    sweep_ms: u64,
    /// Completed deferred responses taken this turn (kept empty between
    /// turns, for its capacity).
    batch: Vec<Completion>,
}

impl<'a> Core<'a> {
    /// The shared state of a loop that serves `listeners`.
    pub(crate) fn new(config: &'a Config, link: &'a Link, listeners: Vec<OwnedFd>) -> Core<'a> {
        let mut sh = WorkerState::new(config.limits, config.timeouts);
        sh.set_admission(&config.admission);
        if let Some(c) = link.counters() {
            sh.set_counters(c);
        }
        if let Some(log) = link.take_access_log() {
            sh.set_access_log(log, Box::<super::peers::PeerCache>::default());
        }
        if let Some(spawner) = link.spawner() {
            sh.set_spawner(spawner);
        }
        // Responders, on any thread, wake the loop through its eventfd.
        sh.set_completions(Arc::new(Completions::new(super::link::wake_loop)));
        sh.tick();
        let sweep_ms = sweep_interval_ms(config);
        let next_sweep = sh.now_ms() + sweep_ms;
        Core {
            config,
            link,
            sh,
            listeners: listeners.into_iter().map(Some).collect(),
            state: State::Serving,
            accept_paused_until: 0,
            accept_failing: false,
            failure: None,
            next_sweep,
            sweep_ms,
            batch: Vec::new(),
        }
    }

    /// The next time the loop must wake up by itself: the next sweep, the
    /// end of an accept pause, the end of the drain, or the next worker
    /// timer.
    pub(crate) fn next_wake(&self) -> u64 {
        let mut t = self.next_sweep;
        if let Some(due) = timers::next_due() {
            // Rounded up: waking a millisecond early would find it not due.
            let wait = due.saturating_duration_since(Instant::now());
            t = t.min(self.sh.now_ms() + wait.as_micros().div_ceil(1000) as u64);
        }
        if let State::Draining { until } = self.state {
            t = t.min(until);
        }
        if self.accept_paused_until > self.sh.now_ms() {
            t = t.min(self.accept_paused_until);
        }
        t
    }

    /// Runs the worker timers that are due; the loop calls it once a turn.
    pub(crate) fn run_timers(&self) {
        if timers::next_due().is_some_and(|due| due <= Instant::now()) {
            timers::run_due(Instant::now());
        }
    }

    /// Whether the loop is draining.
    pub(crate) fn draining(&self) -> bool {
        matches!(self.state, State::Draining { .. })
    }

    /// Enters the drain (once), with `live` connections open: stops
    /// accepting, marks the protocol state as draining, and moves the sweep
    /// to [`DRAIN_SWEEP_MS`](sweep::DRAIN_SWEEP_MS). Returns false when
    /// already draining; when it returns true the backend takes its
    /// listener out of its readiness set, serves what
    /// [`Core::close_listener`] returns, and calls
    /// [`crate::http::Conn::start_drain`] on every connection.
    pub(crate) fn start_drain(&mut self, live: usize) -> bool {
        if self.draining() {
            return false;
        }
        log::info!("draining: {live} connections open");
        let now = self.sh.now_ms();
        self.state = State::Draining { until: now.saturating_add(self.config.timeouts.drain.as_millis() as u64) };
        self.sh.set_draining();
        self.next_sweep = self.next_sweep.min(now + self.sweep_interval_ms());
        true
    }

    /// Whether the drain is over with `live` connections left: `None`
    /// while it goes on, else what the loop returns.
    pub(crate) fn drain_result(&mut self, live: usize) -> Option<io::Result<()>> {
        let State::Draining { until } = self.state else { return None };
        if live == 0 && self.listeners.iter().all(Option::is_none) {
            log::info!("drained");
        } else if self.sh.now_ms() >= until {
            log::warn!("drain timeout: closing {live} connections");
        } else {
            return None;
        }
        Some(self.failure.take().map_or(Ok(()), Err))
    }

    /// Once draining, with no accept of the backend's left in the kernel
    /// on listener `index`: takes every connection queued on it and closes
    /// it. The backend serves what is returned like its other connections.
    pub(crate) fn close_listener(&mut self, index: usize) -> Vec<OwnedFd> {
        debug_assert!(self.draining());
        match self.listeners.get_mut(index).and_then(Option::take) {
            Some(listener) => drain_listener(self.config.backlog, listener),
            None => Vec::new(),
        }
    }
}
