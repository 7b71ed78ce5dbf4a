//! Watching the workers from outside: the hung-worker watchdog (a worker's
//! loop bumps a heartbeat in its counters page every turn; one whose
//! heartbeat stands still for the worker timeout is killed and replaced),
//! recycling (a worker past its quota of requests, or past the memory
//! ceiling, is replaced through the rolling-reload path), systemd's
//! watchdog and status lines, and the metrics the master serves.
//!
//! All of it runs on a periodic tick of the master loop
//! ([`Master::supervise`]); what it reads of a worker (its heartbeat and
//! request count) is written by that worker, so it is only compared, never
//! trusted: a worker that lies about its heartbeat or its requests can only
//! get itself killed or recycled, or not.

use std::time::{Duration, Instant};

use super::metrics::{self, Cluster, Metrics};
use super::sd_notify::{self, notify};
use super::slot::{Cause, ProcState};
use super::{Master, Phase};
use crate::ipc::Counter;

/// Longest period of the supervision tick.
const TICK: Duration = Duration::from_millis(100);
/// How often worker memory is read from `/proc`.
const RSS_EVERY: Duration = Duration::from_secs(1);

impl Master<'_> {
    /// Whether anything needs the periodic tick.
    pub(super) fn supervising(&self) -> bool {
        self.config.worker_timeout.is_some()
            || self.config.recycle.enabled()
            || self.sd_watchdog.is_some()
            || self.scrape.is_some()
    }

    /// The tick's period: [`TICK`], or an eighth of the worker timeout when
    /// that is shorter, so a hung worker is found at most an eighth late.
    pub(super) fn tick_period(&self) -> Duration {
        match self.config.worker_timeout {
            Some(t) => TICK.min(t / 8).max(Duration::from_millis(5)),
            None => TICK,
        }
    }

    /// When the loop must wake next for the tick and the scrape deadlines.
    pub(super) fn supervise_due(&self) -> Option<Instant> {
        let mut next = None::<Instant>;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if self.supervising() {
            consider(self.next_tick);
        }
        if let Some(t) = self.scrape.as_ref().and_then(|s| s.next_deadline()) {
            consider(t);
        }
        next
    }

    /// Runs the periodic checks that are due; the loop calls it every turn.
    pub(super) fn supervise(&mut self, now: Instant) {
        self.scrape_expire(now);
        self.update_status();
        if !self.supervising() || now < self.next_tick {
            return;
        }
        self.next_tick = now + self.tick_period();
        self.read_heartbeats(now);
        self.observe_overload(now);
        if self.phase == Phase::Running {
            self.check_quotas();
            if self.config.recycle.max_rss.is_some() && now >= self.next_rss {
                self.next_rss = now + RSS_EVERY;
                self.check_rss();
            }
        }
        self.systemd_watchdog(now);
    }

    /// Reads every ready worker's heartbeat; kills those whose loop has
    /// not turned for the worker timeout.
    fn read_heartbeats(&mut self, now: Instant) {
        let timeout = self.config.worker_timeout;
        for s in &mut self.slots {
            let channels = &s.channels;
            for p in s.current.iter_mut().chain(s.retiring.iter_mut()) {
                if p.state != ProcState::Ready || p.evicted || p.ended_for == Some(Cause::Watchdog) {
                    continue;
                }
                let beat = channels[p.channel].ch.counters().heartbeat();
                if beat != p.beat {
                    p.beat = beat;
                    p.beat_at = now;
                    continue;
                }
                let Some(timeout) = timeout else { continue };
                let still = now.saturating_duration_since(p.beat_at);
                if still >= timeout {
                    // The interval without a turn, from the worker's start.
                    let from = p.beat_at.saturating_duration_since(p.forked_at);
                    let to = now.saturating_duration_since(p.forked_at);
                    log::error!(
                        "watchdog: worker {} (pid {}): its event loop has not turned for {still:.1?} \
                         (from {from:.1?} to {to:.1?} after it was forked; timeout {timeout:?}); killing it",
                        p.id,
                        p.pid
                    );
                    p.ended_for = Some(Cause::Watchdog);
                    Self::signal(p, libc::SIGKILL);
                }
            }
        }
    }

    /// Samples whether the serving workers shed work, for `/ready`'s
    /// hysteresis ([`super::overload`]).
    fn observe_overload(&mut self, now: Instant) {
        let slots: Vec<Option<u64>> = self
            .slots
            .iter()
            .map(|s| {
                let serving = s.current.as_ref().is_some_and(|p| p.state == ProcState::Ready && !p.stopping);
                serving.then(|| {
                    let c = s.counters();
                    c.shed_pool.wrapping_add(c.shed_loop)
                })
            })
            .collect();
        self.overload.observe(now, &slots);
    }

    /// Queues for replacement the workers that served their quota.
    fn check_quotas(&mut self) {
        let mut due = Vec::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(p) = &s.current else { continue };
            let Some(quota) = p.quota else { continue };
            if p.state != ProcState::Ready || p.stopping || s.replace_for.is_some() {
                continue;
            }
            let served = s.channels[p.channel].ch.counters().get(Counter::Requests).wrapping_sub(p.requests_base);
            if served >= quota {
                log::info!("worker {} (pid {}) served {served} requests (quota {quota}); replacing it", p.id, p.pid);
                due.push(slot);
            }
        }
        for slot in due {
            self.replace(slot, Cause::Recycle);
        }
    }

    /// Queues for replacement the workers past the memory ceiling.
    fn check_rss(&mut self) {
        let Some(max) = self.config.recycle.max_rss else { return };
        let page = crate::ipc::page_size() as u64;
        let mut due = Vec::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(p) = &s.current else { continue };
            if p.state != ProcState::Ready || p.stopping || s.replace_for.is_some() {
                continue;
            }
            // The pid is a child this master has not reaped: it cannot have
            // been reused.
            let Some(pages) = statm_resident(p.pid) else { continue };
            let rss = pages.saturating_mul(page);
            if rss > max {
                log::info!(
                    "worker {} (pid {}) uses {} MiB of memory (ceiling {} MiB); replacing it",
                    p.id,
                    p.pid,
                    rss >> 20,
                    max >> 20
                );
                due.push(slot);
            }
        }
        for slot in due {
            self.replace(slot, Cause::Memory);
        }
    }

    /// Replaces `slot`'s worker through the rolling-reload path: its
    /// replacement is forked now (or after the slot being replaced), and it
    /// drains once that one is ready.
    pub(super) fn replace(&mut self, slot: usize, cause: Cause) {
        if self.phase != Phase::Running || slot >= self.slots.len() {
            return;
        }
        self.slots[slot].replace_for = Some(cause);
        if self.reloading != Some(slot) && !self.reload_queue.contains(&slot) {
            self.reload_queue.push_back(slot);
        }
        if self.reloading.is_none() {
            self.next_reload();
        }
    }

    /// Sends systemd `WATCHDOG=1` while the workers are healthy: at least
    /// one is ready and its loop turned within the watchdog interval (or
    /// the cluster is shutting down, which has its own bound).
    fn systemd_watchdog(&mut self, now: Instant) {
        let Some(interval) = self.sd_watchdog else { return };
        if now < self.sd_watchdog_next {
            return;
        }
        let healthy = self.phase != Phase::Running
            || self.slots.iter().any(|s| {
                // A worker being replaced still serves until its successor
                // is ready.
                s.procs().any(|p| {
                    p.state == ProcState::Ready && !p.stopping && now.saturating_duration_since(p.beat_at) < interval
                })
            });
        if healthy {
            notify("WATCHDOG=1");
            self.sd_watchdog_next = now + interval / 2;
        } else {
            // Not now: look again at the next tick.
            log::debug!("systemd watchdog: no healthy worker; not pinging");
        }
    }

    /// Sends `STATUS=` to systemd when what it says changed.
    fn update_status(&mut self) {
        if !sd_notify::enabled() {
            return;
        }
        let ready = self
            .slots
            .iter()
            .filter(|s| s.current.as_ref().is_some_and(|p| p.state == ProcState::Ready && !p.stopping))
            .count();
        let draining: usize = self.slots.iter().map(|s| s.procs().filter(|p| p.stopping).count()).sum();
        let what = match self.phase {
            Phase::Running if self.upgrade.is_some() => "upgrading",
            Phase::Running if self.reloading.is_some() || !self.reload_queue.is_empty() => "replacing workers",
            Phase::Running => "serving",
            Phase::Stopping(_) => "shutting down",
            Phase::Quitting => "stopping",
        };
        let status = format!("STATUS={what}: {ready} of {} workers ready, {draining} draining", self.slots.len());
        if status != self.status_sent {
            notify(&status);
            self.status_sent = status;
        }
    }

    /// What the metrics need besides the slots.
    pub(super) fn cluster(&self) -> Cluster {
        Cluster {
            started: self.started,
            restarts: self.restarts,
            draining: self.phase != Phase::Running,
            overloaded: self.overload.overloaded(),
        }
    }

    /// The cluster's metrics now.
    pub(super) fn metrics(&self) -> Metrics {
        metrics::collect(&self.slots, &self.cluster(), self.supervising())
    }

    /// What `GET /ready` answers: a worker is ready, the cluster is not
    /// draining, and its workers do not shed work for overload
    /// ([`super::overload`]).
    pub(super) fn metrics_cluster_ready(&self) -> bool {
        self.phase == Phase::Running
            && !self.overload.overloaded()
            && self.slots.iter().any(|s| s.current.as_ref().is_some_and(|p| p.state == ProcState::Ready && !p.stopping))
    }
}

/// Resident pages of process `pid`, from `/proc/<pid>/statm`.
fn statm_resident(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}
