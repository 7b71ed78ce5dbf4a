//! Overload a balancer can see: whether the workers shed work
//! ([`crate::Admission`]) often enough that `GET /ready` should say `503`,
//! so that a load balancer sends new connections to other hosts.
//!
//! Shedding comes and goes within milliseconds (a pool sheds until its
//! queue drains, then admits again), and a health check that followed it
//! would flap. So the master samples at its supervision tick whether the
//! workers shed since the last tick, and [`Overload`] holds a hysteresis:
//! the host turns *not ready* once its workers shed during at least
//! [`NOT_READY_AFTER`] of the last [`WINDOW`] (a standing overload, not a
//! burst), and *ready* again only once they shed nothing for
//! [`READY_AFTER`]. A balancer checking every 2 s and marking a host down
//! after 2 failures (HAProxy's `inter 2s fall 2`) then takes an overloaded
//! host out after about 3 to 5 s and back once it has been quiet for
//! 5 s plus its own `rise`; a host that sheds only in short bursts stays
//! in.
//!
//! "The workers shed" means at least half of the serving workers refused
//! work since the last tick (their shed totals grew; a worker's "shedding
//! now" gauge is not used, since a queue that no work reaches keeps its
//! last state until work comes): with `SO_REUSEPORT`
//! each worker takes its share of the connections, and one worker shedding
//! among many is the kernel's hash being uneven, not the host being full.
//!
//! Where it stops: the machine is fed times and samples and reads no
//! clock; the master feeds it ([`super::Master`]'s tick) and `/ready` asks
//! it ([`super::scrape`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window over which shedding is measured.
pub(crate) const WINDOW: Duration = Duration::from_secs(2);
/// Shedding during this much of [`WINDOW`] makes the host not ready.
pub(crate) const NOT_READY_AFTER: Duration = Duration::from_secs(1);
/// No shedding for this long makes it ready again.
pub(crate) const READY_AFTER: Duration = Duration::from_secs(5);
/// The longest gap between two samples counted as shedding time: a
/// master that did not tick for a while does not count the whole gap.
const MAX_GAP: Duration = Duration::from_millis(250);

/// The hysteresis between the workers' shedding and `/ready`.
#[derive(Debug, Default)]
pub(crate) struct Overload {
    /// The samples of the last [`WINDOW`]: when, and how long before it
    /// (since the previous sample, at most [`MAX_GAP`]) the workers shed.
    samples: VecDeque<(Instant, Duration)>,
    /// When the last sample was taken.
    last: Option<Instant>,
    /// When the workers last shed.
    last_shed: Option<Instant>,
    /// `/ready` says 503 for overload.
    overloaded: bool,
    /// Per slot: the shed totals seen at the last sample.
    seen: Vec<u64>,
}

impl Overload {
    /// Takes a sample at `now`: `slots` is, per slot whose worker serves,
    /// its shed total (pool and loop, any value: a worker writes it).
    /// Returns whether the host is overloaded now.
    pub(crate) fn observe(&mut self, now: Instant, slots: &[Option<u64>]) -> bool {
        self.seen.resize(slots.len(), 0);
        let (mut serving, mut shedding) = (0usize, 0usize);
        for (seen, s) in self.seen.iter_mut().zip(slots) {
            let Some(total) = *s else { continue };
            serving += 1;
            // A total that went down is a new worker's page or garbage:
            // only growth counts.
            if total > *seen {
                shedding += 1;
            }
            *seen = total;
        }
        let shed = serving > 0 && shedding * 2 >= serving;
        self.sample(now, shed)
    }

    /// Takes one sample at `now`: whether the workers shed since the last.
    pub(crate) fn sample(&mut self, now: Instant, shed: bool) -> bool {
        let gap = self.last.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)).min(MAX_GAP);
        self.last = Some(now);
        self.samples.push_back((now, if shed { gap } else { Duration::ZERO }));
        while self.samples.front().is_some_and(|&(t, _)| now.saturating_duration_since(t) > WINDOW) {
            self.samples.pop_front();
        }
        if shed {
            self.last_shed = Some(now);
        }
        let shed_for: Duration = self.samples.iter().map(|&(_, d)| d).sum();
        if !self.overloaded && shed_for >= NOT_READY_AFTER {
            log::warn!("overload: the workers shed work for {shed_for:?} of the last {WINDOW:?}; /ready says 503");
            self.overloaded = true;
        } else if self.overloaded && self.last_shed.is_some_and(|t| now.saturating_duration_since(t) >= READY_AFTER) {
            log::warn!("overload: no work shed for {READY_AFTER:?}; /ready says 200 again");
            self.overloaded = false;
            self.samples.clear();
        }
        self.overloaded
    }

    /// Whether `/ready` says 503 for overload.
    pub(crate) fn overloaded(&self) -> bool {
        self.overloaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn short_bursts_of_shedding_keep_the_host_ready() {
        let t0 = Instant::now();
        let mut o = Overload::default();
        // Shedding at one tick in three, for a minute: at most 0.7 s of
        // any 2 s.
        for i in 0..600u64 {
            assert!(!o.sample(ms(t0, i * 100), i % 3 == 0), "tick {i}");
        }
    }

    #[test]
    fn a_standing_overload_turns_not_ready_after_a_second_and_ready_five_seconds_after_it_ends() {
        let t0 = Instant::now();
        let mut o = Overload::default();
        let mut turned = None;
        for i in 0..=30u64 {
            if o.sample(ms(t0, i * 100), true) && turned.is_none() {
                turned = Some(i);
            }
        }
        assert_eq!(turned, Some(10), "1 s of shedding, counted from the first gap");
        // Shedding at most every other tick still holds it (no flapping).
        for i in 31..=60u64 {
            assert!(o.sample(ms(t0, i * 100), i % 2 == 0), "tick {i}");
        }
        // Quiet from 6.1 s: still not ready until 5 s after the last shed.
        for i in 61..110u64 {
            assert!(o.sample(ms(t0, i * 100), false), "tick {i}");
        }
        assert!(!o.sample(ms(t0, 110 * 100), false), "ready 5 s after the last shed");
        assert!(!o.overloaded());
        // A new overload needs a whole second again.
        for i in 111..=115u64 {
            assert!(!o.sample(ms(t0, i * 100), true), "tick {i}");
        }
    }

    #[test]
    fn a_master_that_did_not_tick_does_not_count_the_gap() {
        let t0 = Instant::now();
        let mut o = Overload::default();
        assert!(!o.sample(t0, true));
        assert!(!o.sample(ms(t0, 1900), true), "one sample after a long gap counts 250 ms");
    }

    #[test]
    fn half_the_serving_workers_shedding_is_the_host_shedding() {
        let t0 = Instant::now();
        let mut o = Overload::default();
        // Slot 0 sheds (its total grows), slot 1 not, slot 2 has no worker.
        let mut shed = 0;
        for i in 0..=12u64 {
            shed += 5;
            o.observe(ms(t0, i * 100), &[Some(shed), Some(7), None]);
        }
        assert!(o.overloaded(), "one of two serving workers");
        let mut o = Overload::default();
        for i in 0..=30u64 {
            o.observe(ms(t0, i * 100), &[Some(i), Some(0), Some(0)]);
        }
        assert!(!o.overloaded(), "one of three");
        // A total going down (a new worker's page) is not shedding.
        let mut o = Overload::default();
        for i in 0..=30u64 {
            o.observe(ms(t0, i * 100), &[Some(1000 - i)]);
        }
        assert!(!o.overloaded());
    }
}
