//! The event loop's admission ([`crate::Admission`]): how late its turns
//! run, measured once a turn and fed to CoDel; with a loop target, what
//! each path's handler costs ([`Costs`]), the queue of heavy requests a
//! turn answers after its cheap ones, and the refusal of what would start
//! a target late.
//!
//! Where it stops: the per-worker state ([`super::WorkerState`]) owns one
//! and keeps the counters; a connection parks its request and resumes it
//! ([`super::Conn::unpark`]); the drivers end each turn with the parked
//! requests.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::admit::{Codel, Costs};
use crate::config::Admission;

/// A loop's wait that came back sooner than this found input waiting: a
/// wait that finds it returns within a system call's few microseconds,
/// one that slept takes at least a wake-up (tens of microseconds on the
/// machines measured). For drivers that cannot say
/// ([`WorkerState::input_pending`]).
const SLEPT: Duration = Duration::from_micros(20);

/// The loop's admission state ([`Admission`]): how late its turns run,
/// measured once a turn, and whether it sheds.
///
/// A turn's input waited, at most, for the turn before it: what arrived
/// as that turn started was read only once it ended. But only if input
/// was waiting when it ended: a loop that found nothing and slept had no
/// queue at all, and what woke it waited for nothing (CoDel's empty
/// queue). So the wait sampled at each turn is the previous turn's length
/// when the loop did not sleep before this one, and 0 when it did; a loop
/// that idles between handlers as long as its target is then never shed,
/// however long each handler runs.
#[derive(Debug)]
pub(super) struct LoopAdmission {
    /// CoDel's state, fed the length of each turn.
    codel: Codel,
    /// [`Admission::loop_target`]: while shedding, handlers are called
    /// only this long into a turn.
    target: Duration,
    /// How long the previous turn worked (from its start to its end,
    /// before the loop waited): input that arrived at its start waited
    /// that long to be read.
    turn_us: u64,
    /// When the previous turn ended (the loop then waited).
    turn_end: Instant,
    /// Whether input was known to wait as the previous turn ended (the
    /// driver's word, [`super::WorkerState::input_pending`]): `None` when the
    /// driver cannot tell, and a wait that returned within [`SLEPT`] is
    /// taken to have found input waiting.
    pending: Option<bool>,
    /// The turn's start, microseconds on CoDel's clock.
    now_us: u64,
    /// This turn calls handlers only for its first `target`: the loop
    /// sheds, or shed less than an interval ago (a turn short enough to
    /// end the shedding is followed by one that works off everything
    /// queued meanwhile, unless the cap stays on until the overload is
    /// over: [`Codel::limited_until`]).
    limited: bool,
    /// What each path's handler costs the loop, when there is a target.
    costs: Option<Box<Costs>>,
    /// The loop's queue of heavy requests: the connections whose request,
    /// its handler known to be heavy, waits for the end of a turn
    /// ([`LoopAdmission::park`]), oldest first, each with the start of the
    /// turn that read it and what its handler costs (µs, [`Costs`]).
    parked: VecDeque<(u64, Instant, u32)>,
    /// When the request about to be admitted joined the loop's queue: the
    /// turn's start, or the turn that parked it.
    since: Instant,
    /// Parked requests resumed this turn.
    resumed: u32,
    /// Work (µs) that will run before the request about to be admitted
    /// could start: a parked request refused before the one ahead of it
    /// runs ([`LoopAdmission::next_parked`]).
    ahead: u64,
}

/// A parked connection to resume ([`LoopAdmission::next_parked`]).
#[derive(Clone, Copy, Debug)]
pub struct Parked {
    /// The connection's token.
    pub token: u64,
    /// Whether its request's handler will run (false: it will be refused):
    /// the answers framed so far should leave first.
    pub runs: bool,
}

/// What the loop's admission said of a request ([`LoopAdmission::admit`]).
#[must_use]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Admit {
    /// Handled, and not timed (no loop target).
    Free,
    /// Handled, and its handler timed from this instant.
    Timed(Instant),
    /// Refused: answer `503` without calling the handler.
    Refused,
}

impl LoopAdmission {
    /// The state of `admission` (on): without a target the loop is
    /// measured (the gauge), never shed.
    pub(super) fn new(admission: &Admission) -> LoopAdmission {
        LoopAdmission {
            codel: Codel::new(admission.loop_target.unwrap_or(Duration::MAX), admission.interval),
            target: admission.loop_target.unwrap_or(Duration::MAX),
            turn_us: 0,
            turn_end: Instant::now(),
            pending: None,
            now_us: 0,
            limited: false,
            costs: admission.loop_target.map(|_| Box::new(Costs::new())),
            parked: VecDeque::new(),
            since: Instant::now(),
            resumed: 0,
            ahead: 0,
        }
    }

    /// A turn starts at `now`, `now_us` on CoDel's clock: samples how long
    /// its input waited.
    pub(super) fn start_turn(&mut self, now: Instant, now_us: u64) {
        // The loop slept unless the driver said input waited or, when it
        // cannot tell, its wait came back at once.
        let waited = self.pending.take().unwrap_or_else(|| now.saturating_duration_since(self.turn_end) < SLEPT);
        // Heavy requests parked since an earlier turn waited that long.
        let parked_us =
            self.parked.front().map_or(0, |&(_, at, _)| now.saturating_duration_since(at).as_micros() as u64);
        self.codel.sample(now_us, parked_us.max(if waited { self.turn_us } else { 0 }));
        self.now_us = now_us;
        self.limited = now_us < self.codel.limited_until();
        self.since = now;
        self.resumed = 0;
    }

    /// Whether the loop sheds now.
    pub(super) fn shedding(&self) -> bool {
        self.codel.shedding()
    }

    /// The loop's shortest wait over the last interval (µs).
    pub(super) fn min_wait_us(&self) -> u64 {
        self.codel.min_wait_us()
    }

    /// The loop's CoDel state, to put it where a test needs it.
    #[cfg(test)]
    pub(super) fn codel(&mut self) -> &mut Codel {
        &mut self.codel
    }

    /// Whether the request for `path` about to be handled is refused: while
    /// the loop sheds, and for an interval after, a request that would
    /// start a target or more after it was read, unless its path is known
    /// to be cheap ([`Costs`]). A refusal after the shedding ended keeps
    /// the cap on for an interval more: the overload goes on. With a loop
    /// target every handler is timed (two clock reads a request, only
    /// then): [`LoopAdmission::handled`] takes what this returns.
    #[inline]
    pub(super) fn admit(&mut self, path: &str) -> Admit {
        let Some(costs) = &self.costs else { return Admit::Free };
        let now = Instant::now();
        let ahead = Duration::from_micros(std::mem::take(&mut self.ahead));
        if !self.limited || now.saturating_duration_since(self.since) + ahead < self.target || costs.cheap(path) {
            return Admit::Timed(now);
        }
        self.codel.refused(self.now_us);
        Admit::Refused
    }

    /// The handler of the request for `path` that [`LoopAdmission::admit`]
    /// admitted has returned.
    #[inline]
    pub(super) fn handled(&mut self, path: &str, admit: Admit) {
        if let (Admit::Timed(start), Some(costs)) = (admit, &mut self.costs) {
            costs.record(path, start.elapsed().as_micros() as u64);
        }
    }

    /// Whether a request just parsed may be parked: the loop has a target
    /// (and so knows what its handlers cost).
    #[inline]
    pub(super) fn parking(&self) -> bool {
        self.costs.is_some()
    }

    /// Whether the request for `path` on connection `token`, read in the
    /// turn that started at `turn_at`, joins the loop's queue of heavy
    /// requests, to be answered at the end of a turn
    /// ([`LoopAdmission::next_parked`]): its handler is known to be heavy
    /// ([`Costs`]). A turn answers its cheap requests first, then at most
    /// a target's worth of heavy ones, so that a fast route's request
    /// waits for one heavy handler at most. Requests are never reordered
    /// on one connection: its later ones wait behind the parked one.
    pub(super) fn park(&mut self, path: &str, token: u64, turn_at: Instant) -> bool {
        let Some(cost) = self.costs.as_ref().and_then(|c| c.heavy(path)) else { return false };
        self.parked.push_back((token, turn_at, cost));
        true
    }

    /// The next parked connection to resume this turn
    /// ([`super::Conn::unpark`], then [`super::Conn::resume`]); drivers call
    /// it once the turn's input is handled, until it says `None`, and send
    /// what is framed before a request whose handler [`Parked::runs`].
    ///
    /// Oldest first, the turn resumes heavy requests until
    /// [`Admission::loop_target`] into it, at least one; the rest wait for
    /// the next turn, which then does not sleep
    /// ([`LoopAdmission::has_parked`]). While the loop sheds (and an
    /// interval after), a request that would start a target or more after
    /// it was read is refused at once, before the handler ahead of it
    /// runs: one that waited that long already, and one behind a handler
    /// (by its known cost) that would make it.
    pub(super) fn next_parked(&mut self, turn_at: Instant) -> Option<Parked> {
        self.since = turn_at;
        self.ahead = 0;
        let &(token, at, cost) = self.parked.front()?;
        let now = Instant::now();
        let target_us = self.target.as_micros() as u64;
        let waited = |at: Instant| now.saturating_duration_since(at).as_micros() as u64;
        let refused = self.limited && waited(at) >= target_us;
        if self.limited && !refused {
            // The front is answered now: a request behind it that would
            // then start a target after it was read is refused first, at
            // once, not after the front's handler.
            let late = self.parked.iter().skip(1).position(|&(_, at, _)| waited(at) + u64::from(cost) >= target_us);
            if let Some(i) = late {
                let (token, at, _) = self.parked.remove(i + 1).expect("found in the queue");
                self.since = at;
                self.ahead = u64::from(cost);
                return Some(Parked { token, runs: false });
            }
        }
        let spent = now.saturating_duration_since(turn_at) >= self.target;
        if spent && !refused && self.resumed > 0 {
            return None;
        }
        self.parked.pop_front();
        self.resumed += 1;
        self.since = at;
        Some(Parked { token, runs: !refused })
    }

    /// Whether heavy requests wait in the loop's queue: the loop must not
    /// sleep.
    #[inline]
    pub(super) fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The turn ended at `end`, having worked `turn_us`.
    #[inline]
    pub(super) fn end_turn(&mut self, end: Instant, turn_us: u64) {
        self.turn_us = turn_us;
        self.turn_end = end;
    }

    /// The driver's word on whether input waits as the turn ends.
    #[inline]
    pub(super) fn input_pending(&mut self, pending: bool) {
        self.pending = Some(pending);
    }
}
