//! The cluster's metrics as data ([`Metrics`], read through
//! [`super::Ctl::metrics`]) and in the Prometheus text exposition format
//! 0.0.4 ([`Metrics::to_prometheus`]), which the master's metrics listener
//! serves.
//!
//! Every per-worker value comes from a counters page a worker writes, and a
//! worker may be compromised: the values are summed with wrapping
//! arithmetic, the histogram made cumulative with saturating arithmetic
//! (so its buckets never decrease and `_count` is its `+Inf` bucket), and
//! everything is printed as an integer or a finite float, so a page full of
//! garbage yields wrong numbers but never a panic or invalid exposition.
//! Series of one worker carry its `slot` label, never its pid.

use std::fmt::Write;
use std::time::{Duration, Instant};

use super::slot::{Cause, Proc, ProcState, Slot};
use crate::ipc::{Histogram, Snapshot, LATENCY_BUCKETS, SHEDDING_LOOP, SHEDDING_POOL};

/// The cluster's metrics at one moment.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Time since the master started.
    pub uptime: Duration,
    /// At least one worker is ready, the cluster is not shutting down and
    /// not overloaded (what `GET /ready` answers).
    pub ready: bool,
    /// The cluster is shutting down.
    pub draining: bool,
    /// The workers have shed work for overload long enough that `/ready`
    /// says 503 ([`crate::Admission`]; the hysteresis is in the metrics
    /// listener's documentation).
    pub overloaded: bool,
    /// Workers replaced since the master started, by cause.
    pub restarts: Restarts,
    /// Per slot.
    pub slots: Vec<SlotMetrics>,
}

/// Workers replaced, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restarts {
    /// Died without being asked to (and were replaced).
    pub crash: u64,
    /// Replaced by a rolling reload.
    pub reload: u64,
    /// Killed by the watchdog: their loop stopped turning.
    pub watchdog: u64,
    /// Recycled after their quota of requests.
    pub recycle: u64,
    /// Recycled past the memory ceiling.
    pub memory: u64,
}

impl Restarts {
    /// Counts one restart for `cause`.
    pub(super) fn count(&mut self, cause: Cause) {
        let c = match cause {
            Cause::Crash => &mut self.crash,
            Cause::Reload => &mut self.reload,
            Cause::Watchdog => &mut self.watchdog,
            Cause::Recycle => &mut self.recycle,
            Cause::Memory => &mut self.memory,
        };
        *c = c.saturating_add(1);
    }

    /// `(label, count)` for each cause.
    fn labelled(&self) -> [(&'static str, u64); 5] {
        [
            ("crash", self.crash),
            ("reload", self.reload),
            ("watchdog", self.watchdog),
            ("recycle", self.recycle),
            ("memory", self.memory),
        ]
    }
}

/// Where a slot's current worker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Forked, not ready yet.
    Starting,
    /// Serving.
    Ready,
    /// Asked to drain.
    Draining,
    /// No worker (waiting for a respawn, or disconnected).
    Stopped,
}

impl WorkerState {
    /// Every state, in the order the metrics list them.
    const ALL: [WorkerState; 4] =
        [WorkerState::Starting, WorkerState::Ready, WorkerState::Draining, WorkerState::Stopped];

    /// The state's label.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
            WorkerState::Stopped => "stopped",
        }
    }

    /// The state of a live worker.
    pub(super) fn of(p: &Proc) -> WorkerState {
        if p.stopping {
            WorkerState::Draining
        } else if p.state == ProcState::Ready {
            WorkerState::Ready
        } else {
            WorkerState::Starting
        }
    }
}

/// One slot's metrics.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SlotMetrics {
    /// The slot.
    pub slot: usize,
    /// Its current worker's state.
    pub state: WorkerState,
    /// Its current worker's process id, if it has one.
    pub pid: Option<i32>,
    /// Its workers besides the current one that are still draining.
    pub retiring: usize,
    /// Its counters: totals over every worker it had.
    pub counters: Snapshot,
    /// Time since the master last saw its current worker's loop turn, when
    /// the master watches (a worker timeout, recycling, the systemd
    /// watchdog, or the metrics listener is configured).
    pub last_turn: Option<Duration>,
}

/// Reads the metrics of `slots`.
pub(super) fn collect(slots: &[Slot], info: &Cluster, watching: bool) -> Metrics {
    let now = Instant::now();
    let slots: Vec<SlotMetrics> = slots
        .iter()
        .enumerate()
        .map(|(slot, s)| SlotMetrics {
            slot,
            state: s.current.as_ref().map_or(WorkerState::Stopped, WorkerState::of),
            pid: s.current.as_ref().map(|p| p.pid),
            retiring: s.retiring.len(),
            counters: s.counters(),
            last_turn: s
                .current
                .as_ref()
                .filter(|p| watching && p.state == ProcState::Ready)
                .map(|p| now.saturating_duration_since(p.beat_at)),
        })
        .collect();
    let ready = !info.draining && !info.overloaded && slots.iter().any(|s| s.state == WorkerState::Ready);
    Metrics {
        uptime: now.saturating_duration_since(info.started),
        ready,
        draining: info.draining,
        overloaded: info.overloaded,
        restarts: info.restarts,
        slots,
    }
}

/// What the metrics need of the master besides its slots.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cluster {
    /// When the master started.
    pub(super) started: Instant,
    /// Restarts so far.
    pub(super) restarts: Restarts,
    /// Shutting down.
    pub(super) draining: bool,
    /// The workers shed for overload (`/ready` says 503).
    pub(super) overloaded: bool,
}

/// Seconds, for the exposition: always a finite decimal.
fn seconds_us(us: u64) -> f64 {
    us as f64 / 1e6
}

impl Metrics {
    /// The metrics in the Prometheus text exposition format 0.0.4 (serve
    /// it with `Content-Type: text/plain; version=0.0.4`).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096 + self.slots.len() * 4096);
        self.write_prometheus(&mut out);
        out
    }

    /// Appends the metrics to `out` in the text exposition format 0.0.4.
    pub fn write_prometheus(&self, out: &mut String) {
        // `write!` to a String cannot fail.
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(out, "forkring_uptime_seconds", "gauge", "Time since the master started.");
        let _ = writeln!(out, "forkring_uptime_seconds {:.3}", self.uptime.as_secs_f64());
        head(
            out,
            "forkring_ready",
            "gauge",
            "1 while at least one worker is ready and the cluster is neither draining nor overloaded.",
        );
        let _ = writeln!(out, "forkring_ready {}", u8::from(self.ready));
        head(out, "forkring_draining", "gauge", "1 while the cluster shuts down.");
        let _ = writeln!(out, "forkring_draining {}", u8::from(self.draining));
        head(out, "forkring_overloaded", "gauge", "1 while the workers shed work long enough that /ready says 503.");
        let _ = writeln!(out, "forkring_overloaded {}", u8::from(self.overloaded));
        head(out, "forkring_worker_restarts_total", "counter", "Workers replaced, by cause.");
        for (cause, n) in self.restarts.labelled() {
            let _ = writeln!(out, "forkring_worker_restarts_total{{cause=\"{cause}\"}} {n}");
        }
        head(out, "forkring_workers", "gauge", "Worker processes, by state (draining includes replaced workers).");
        for state in WorkerState::ALL {
            let mut n = self.slots.iter().filter(|s| s.state == state).count();
            if state == WorkerState::Draining {
                n += self.slots.iter().map(|s| s.retiring).sum::<usize>();
            }
            let _ = writeln!(out, "forkring_workers{{state=\"{}\"}} {n}", state.as_str());
        }
        head(out, "forkring_worker_state", "gauge", "State of each slot's current worker (1 for its state).");
        for s in &self.slots {
            for state in WorkerState::ALL {
                let on = u8::from(s.state == state);
                let _ = writeln!(out, "forkring_worker_state{{slot=\"{}\",state=\"{}\"}} {on}", s.slot, state.as_str());
            }
        }
        if self.slots.iter().any(|s| s.last_turn.is_some()) {
            head(
                out,
                "forkring_worker_last_turn_seconds",
                "gauge",
                "Time since the master last saw the worker's event loop turn.",
            );
            for s in &self.slots {
                if let Some(t) = s.last_turn {
                    let _ = writeln!(
                        out,
                        "forkring_worker_last_turn_seconds{{slot=\"{}\"}} {:.3}",
                        s.slot,
                        t.as_secs_f64()
                    );
                }
            }
        }
        let per_slot = |out: &mut String, name: &str, kind: &str, help: &str, value: fn(&Snapshot) -> u64| {
            head(out, name, kind, help);
            for s in &self.slots {
                let _ = writeln!(out, "{name}{{slot=\"{}\"}} {}", s.slot, value(&s.counters));
            }
        };
        per_slot(out, "forkring_requests_total", "counter", "Requests handed to the handler.", |c| c.requests);
        head(out, "forkring_responses_total", "counter", "Responses, by status class.");
        for s in &self.slots {
            for (i, n) in s.counters.responses.iter().enumerate() {
                let _ = writeln!(out, "forkring_responses_total{{slot=\"{}\",class=\"{}xx\"}} {n}", s.slot, i + 1);
            }
        }
        per_slot(out, "forkring_received_bytes_total", "counter", "Bytes received from clients.", |c| c.bytes_in);
        per_slot(out, "forkring_sent_bytes_total", "counter", "Bytes sent to clients.", |c| c.bytes_out);
        per_slot(out, "forkring_open_connections", "gauge", "Client connections open.", |c| c.open_connections);
        per_slot(
            out,
            "forkring_upgraded_connections",
            "gauge",
            "Connections handed over after an upgrade and still held.",
            |c| c.upgraded_connections,
        );
        per_slot(
            out,
            "forkring_body_bytes",
            "gauge",
            "Bytes of request bodies held, against the worker's body budget.",
            |c| c.body_bytes,
        );
        per_slot(out, "forkring_accepts_total", "counter", "Client connections accepted.", |c| c.accepts);
        per_slot(out, "forkring_parse_errors_total", "counter", "Requests rejected as malformed.", |c| c.parse_errors);
        head(out, "forkring_ring_messages_total", "counter", "Messages through the shared-memory rings, by direction.");
        for s in &self.slots {
            let c = &s.counters;
            let _ = writeln!(
                out,
                "forkring_ring_messages_total{{slot=\"{}\",direction=\"to_master\"}} {}",
                s.slot, c.ring_sent
            );
            let _ = writeln!(
                out,
                "forkring_ring_messages_total{{slot=\"{}\",direction=\"to_worker\"}} {}",
                s.slot, c.ring_received
            );
        }
        per_slot(out, "forkring_ring_full_total", "counter", "Worker sends refused because the ring was full.", |c| {
            c.ring_full
        });
        per_slot(out, "forkring_pool_queued", "gauge", "Jobs waiting for a thread of the blocking pool.", |c| {
            c.pool_queued
        });
        per_slot(out, "forkring_pool_busy", "gauge", "Threads of the blocking pool running a job.", |c| c.pool_busy);
        per_slot(
            out,
            "forkring_deferred_in_flight",
            "gauge",
            "Deferred responses waited on, against the worker's cap.",
            |c| c.deferred_in_flight,
        );
        head(out, "forkring_shed_total", "counter", "Work refused at once with 503 because its queue stood, by queue.");
        for s in &self.slots {
            let c = &s.counters;
            let _ = writeln!(out, "forkring_shed_total{{slot=\"{}\",cause=\"pool\"}} {}", s.slot, c.shed_pool);
            let _ = writeln!(out, "forkring_shed_total{{slot=\"{}\",cause=\"loop\"}} {}", s.slot, c.shed_loop);
        }
        head(out, "forkring_shedding", "gauge", "1 while the queue sheds new work, by queue.");
        for s in &self.slots {
            let bits = s.counters.shedding;
            for (queue, bit) in [("pool", SHEDDING_POOL), ("loop", SHEDDING_LOOP)] {
                let on = u8::from(bits & bit != 0);
                let _ = writeln!(out, "forkring_shedding{{slot=\"{}\",queue=\"{queue}\"}} {on}", s.slot);
            }
        }
        head(
            out,
            "forkring_queue_min_wait_seconds",
            "gauge",
            "Shortest wait before work started over the last admission interval, by queue.",
        );
        for s in &self.slots {
            let c = &s.counters;
            let _ = writeln!(
                out,
                "forkring_queue_min_wait_seconds{{slot=\"{}\",queue=\"pool\"}} {}",
                s.slot,
                seconds_us(c.pool_wait_us)
            );
            let _ = writeln!(
                out,
                "forkring_queue_min_wait_seconds{{slot=\"{}\",queue=\"loop\"}} {}",
                s.slot,
                seconds_us(c.loop_wait_us)
            );
        }
        per_slot(
            out,
            "forkring_pool_limit",
            "gauge",
            "Jobs the blocking pool admits at once, running or queued (0 before it starts).",
            |c| c.pool_limit,
        );
        head(
            out,
            "forkring_request_duration_seconds",
            "histogram",
            "Time from the event-loop turn that took a request in to the end of the turn that answered it.",
        );
        for s in &self.slots {
            write_histogram(out, "forkring_request_duration_seconds", s.slot, &s.counters.latency);
        }
    }
}

/// One slot's histogram series: cumulative buckets (`+Inf` last), `_sum`
/// and `_count`.
fn write_histogram(out: &mut String, name: &str, slot: usize, h: &Histogram) {
    let cumulative = h.cumulative();
    for (i, n) in cumulative.iter().enumerate() {
        if i + 1 < LATENCY_BUCKETS {
            let le = seconds_us(Histogram::BOUNDS_US[i]);
            let _ = writeln!(out, "{name}_bucket{{slot=\"{slot}\",le=\"{le}\"}} {n}");
        } else {
            let _ = writeln!(out, "{name}_bucket{{slot=\"{slot}\",le=\"+Inf\"}} {n}");
        }
    }
    let _ = writeln!(out, "{name}_sum{{slot=\"{slot}\"}} {}", seconds_us(h.sum_us));
    let _ = writeln!(out, "{name}_count{{slot=\"{slot}\"}} {}", cumulative[LATENCY_BUCKETS - 1]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_counters_still_make_valid_exposition() {
        let counters = Snapshot {
            requests: u64::MAX,
            open_connections: u64::MAX,
            latency: Histogram { buckets: [u64::MAX - 3; LATENCY_BUCKETS], sum_us: u64::MAX },
            ..Default::default()
        };
        let m = Metrics {
            uptime: Duration::from_millis(1500),
            ready: true,
            draining: false,
            overloaded: false,
            restarts: Restarts::default(),
            slots: vec![SlotMetrics {
                slot: 3,
                state: WorkerState::Ready,
                pid: Some(42),
                retiring: 1,
                counters,
                last_turn: Some(Duration::from_millis(20)),
            }],
        };
        let text = m.to_prometheus();
        let mut last = 0u64;
        for line in text.lines().filter(|l| l.starts_with("forkring_request_duration_seconds_bucket")) {
            let v: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v >= last, "{line}");
            last = v;
        }
        assert!(text.contains("forkring_request_duration_seconds_count{slot=\"3\"} 18446744073709551615"));
        assert!(text.contains("le=\"0.0001\""), "{text}");
        assert!(text.contains("le=\"+Inf\""));
        assert!(text.contains("forkring_workers{state=\"draining\"} 1"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok_and(f64::is_finite), "{line}");
            assert!(!v.contains('e'), "{line}");
        }
    }
}
