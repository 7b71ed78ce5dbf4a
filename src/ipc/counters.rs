//! Per-worker counters in shared memory.
//!
//! One worker writes its slot's counters (plain load and store of each
//! atomic: no locked instruction, no system call); the master reads them at
//! any time. They live in the slot's shared mapping, which outlives the
//! worker, so they are cumulative per slot across respawns. A snapshot reads
//! each counter atomically but not all of them at one instant.
//!
//! Beside the counters the page holds a request-latency histogram (one
//! count per bucket, not cumulative, and the sum in microseconds) and a
//! heartbeat the worker's loop bumps once per turn, which the master's
//! watchdog reads. Everything here is written by a worker that may be
//! compromised: readers treat every value as arbitrary (wrapping and
//! saturating arithmetic, no value used as an index or a length).

use std::fmt;
use std::io;
use std::ops::{Add, AddAssign};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::shm::Shm;

/// One counter of [`Counters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Counter {
    /// Requests parsed and handed to the handler.
    Requests,
    /// Responses with a 1xx status.
    Responses1xx,
    /// Responses with a 2xx status.
    Responses2xx,
    /// Responses with a 3xx status.
    Responses3xx,
    /// Responses with a 4xx status.
    Responses4xx,
    /// Responses with a 5xx status.
    Responses5xx,
    /// Bytes received from clients.
    BytesIn,
    /// Bytes sent to clients.
    BytesOut,
    /// Connections open now (a gauge).
    OpenConnections,
    /// Connections accepted.
    Accepts,
    /// Requests rejected as malformed.
    ParseErrors,
    /// Messages the worker sent to the master.
    RingSent,
    /// Messages the worker received from the master.
    RingReceived,
    /// Worker sends refused with `Full`.
    RingFull,
    /// Upgraded connections held now, against
    /// [`crate::Limits::max_upgraded`] (a gauge, updated from any of the
    /// worker's threads with [`Counters::add_shared`]).
    UpgradedConnections,
    /// Bytes of request bodies the worker's connections hold now, against
    /// its body budget (a gauge).
    BodyBytes,
    /// Jobs queued for the worker's blocking pool and not yet taken by a
    /// thread (a gauge).
    PoolQueued,
    /// Threads of the worker's blocking pool running a job (a gauge).
    PoolBusy,
    /// Deferred responses the worker waits on now, against
    /// [`crate::Limits::max_deferred`] (a gauge).
    DeferredInFlight,
    /// Work for the blocking pool refused while the pool shed
    /// ([`crate::Admission`]), from any of the worker's threads.
    ShedPool,
    /// Requests answered `503` before their handler while the loop shed.
    ShedLoop,
    /// The shortest wait of a pool job for a thread over the last
    /// interval, in microseconds (a gauge).
    PoolWaitUs,
    /// The shortest lateness of the loop's turns over the last interval,
    /// in microseconds (a gauge).
    LoopWaitUs,
    /// Which queues shed now: 1 the pool, 2 the loop (a gauge).
    Shedding,
    /// Jobs the blocking pool admits at once, queued or running: threads
    /// plus queue (a gauge; 0 until the pool starts).
    PoolLimit,
}

/// How many counters there are.
const N: usize = Counter::PoolLimit as usize + 1;

/// [`Counter::Shedding`]'s bit for the pool.
pub const SHEDDING_POOL: u64 = 1;
/// [`Counter::Shedding`]'s bit for the loop.
pub const SHEDDING_LOOP: u64 = 2;

/// Upper bounds of the latency histogram's buckets, in microseconds (the
/// last bucket, past the last bound, is `+Inf`).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Buckets of the latency histogram: one per bound and `+Inf`.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// A slot's counters, placed in shared memory: cache-line-aligned blocks
/// of `AtomicU64`s with a single writer (the worker).
#[repr(C, align(128))]
pub struct Counters {
    /// Indexed by [`Counter`].
    v: [AtomicU64; N],
    /// Requests answered per latency bucket (not cumulative), by
    /// [`LATENCY_BOUNDS_US`].
    latency: [AtomicU64; LATENCY_BUCKETS],
    /// Sum of the latencies counted in `latency`, in microseconds.
    latency_sum_us: AtomicU64,
    /// Bumped once per turn of the worker's event loop (on its own cache
    /// line: the master reads it often).
    heartbeat: Heartbeat,
}

/// The heartbeat word, alone on its cache line.
#[repr(C, align(128))]
#[derive(Default)]
struct Heartbeat(AtomicU64);

impl Default for Counters {
    fn default() -> Self {
        Counters {
            v: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
            heartbeat: Heartbeat::default(),
        }
    }
}

/// The bucket of a latency of `us` microseconds.
#[inline]
fn bucket_of(us: u64) -> usize {
    // Most requests fall in the first buckets: a scan from the bottom ends
    // early for them.
    LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len())
}

impl Counters {
    /// Adds `n` to `c`. Only one thread of the slot's worker calls this
    /// (its event loop): the read-add-store is not atomic as a whole, and
    /// needs not be with one writer. See [`Counters::add_shared`] otherwise.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let v = &self.v[c as usize];
        // `Relaxed`: a counter orders nothing; the master reads each value
        // whole (atomic load), never torn.
        v.store(v.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds `n` to `c` with a locked add, for a worker that updates its
    /// counters from more than one thread (an offload pool). Do not mix it
    /// with [`Counters::add`] on the same counter from another thread.
    #[inline]
    pub fn add_shared(&self, c: Counter, n: u64) {
        // `Relaxed`: as in `add`; the read-modify-write is what makes
        // concurrent adds safe.
        self.v[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to `c`.
    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Counts a response by its status class (statuses outside 100..=599
    /// count as 5xx).
    #[inline]
    pub fn response(&self, status: u16) {
        let c = match status {
            100..=199 => Counter::Responses1xx,
            200..=299 => Counter::Responses2xx,
            300..=399 => Counter::Responses3xx,
            400..=499 => Counter::Responses4xx,
            _ => Counter::Responses5xx,
        };
        self.inc(c);
    }

    /// Sets the gauge `c` to `v`. One writer, as [`Counters::add`].
    #[inline]
    pub fn set(&self, c: Counter, v: u64) {
        // `Relaxed`: as in `add`.
        self.v[c as usize].store(v, Ordering::Relaxed);
    }

    /// Counts an accepted connection: one more accept, one more open.
    #[inline]
    pub fn connection_opened(&self) {
        self.inc(Counter::Accepts);
        self.inc(Counter::OpenConnections);
    }

    /// Counts a closed connection.
    #[inline]
    pub fn connection_closed(&self) {
        self.add(Counter::OpenConnections, u64::MAX); // wrapping: minus one
    }

    /// Counts `n` requests answered `us` microseconds after they were taken
    /// in. One writer, as [`Counters::add`].
    #[inline]
    pub fn observe_latency(&self, us: u64, n: u64) {
        let b = &self.latency[bucket_of(us)];
        b.store(b.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        let s = &self.latency_sum_us;
        s.store(s.load(Ordering::Relaxed).wrapping_add(us.wrapping_mul(n)), Ordering::Relaxed);
    }

    /// Says the worker's loop turned. One writer, as [`Counters::add`].
    #[inline]
    pub fn beat(&self) {
        let h = &self.heartbeat.0;
        h.store(h.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// The heartbeat: any value; only whether it changed means anything.
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat.0.load(Ordering::Relaxed)
    }

    /// The value of one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.v[c as usize].load(Ordering::Relaxed)
    }

    /// Zeroes the gauges (open and upgraded connections, body bytes held,
    /// the blocking pool's queue and busy threads, deferred responses in
    /// flight): the master calls this
    /// when a slot's worker has died, before forking its replacement, since
    /// the dead worker's connections and threads died with it. Totals are
    /// kept.
    pub fn reset_gauges(&self) {
        for c in [
            Counter::OpenConnections,
            Counter::UpgradedConnections,
            Counter::BodyBytes,
            Counter::PoolQueued,
            Counter::PoolBusy,
            Counter::DeferredInFlight,
            Counter::PoolWaitUs,
            Counter::LoopWaitUs,
            Counter::Shedding,
            Counter::PoolLimit,
        ] {
            self.v[c as usize].store(0, Ordering::Relaxed);
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        let g = |c| self.get(c);
        Snapshot {
            requests: g(Counter::Requests),
            responses: [
                g(Counter::Responses1xx),
                g(Counter::Responses2xx),
                g(Counter::Responses3xx),
                g(Counter::Responses4xx),
                g(Counter::Responses5xx),
            ],
            bytes_in: g(Counter::BytesIn),
            bytes_out: g(Counter::BytesOut),
            open_connections: g(Counter::OpenConnections),
            accepts: g(Counter::Accepts),
            parse_errors: g(Counter::ParseErrors),
            ring_sent: g(Counter::RingSent),
            ring_received: g(Counter::RingReceived),
            ring_full: g(Counter::RingFull),
            upgraded_connections: g(Counter::UpgradedConnections),
            body_bytes: g(Counter::BodyBytes),
            pool_queued: g(Counter::PoolQueued),
            pool_busy: g(Counter::PoolBusy),
            deferred_in_flight: g(Counter::DeferredInFlight),
            shed_pool: g(Counter::ShedPool),
            shed_loop: g(Counter::ShedLoop),
            pool_wait_us: g(Counter::PoolWaitUs),
            loop_wait_us: g(Counter::LoopWaitUs),
            shedding: g(Counter::Shedding),
            pool_limit: g(Counter::PoolLimit),
            latency: Histogram {
                buckets: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
                sum_us: self.latency_sum_us.load(Ordering::Relaxed),
            },
        }
    }
}

/// A request-latency histogram: how many requests were answered within
/// each bound of [`Histogram::BOUNDS_US`] (per bucket, not cumulative; the
/// last bucket is past the last bound), and the sum of their latencies.
///
/// The latency of a request is the time from the start of the event-loop
/// turn that took it in to the end of the turn that produced its response
/// (for a deferred response, the turn its completion arrived in): the
/// server's share of the request, measured with one clock read per turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Histogram {
    /// Requests per bucket.
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of the latencies, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Upper bounds of the buckets in microseconds (the last bucket is
    /// `+Inf`).
    pub const BOUNDS_US: [u64; 16] = LATENCY_BOUNDS_US;

    /// The cumulative counts (requests at or under each bound, then all):
    /// non-decreasing whatever the buckets hold (saturating).
    pub fn cumulative(&self) -> [u64; LATENCY_BUCKETS] {
        let mut acc = 0u64;
        self.buckets.map(|b| {
            acc = acc.saturating_add(b);
            acc
        })
    }

    /// Requests counted: the last cumulative count.
    pub fn count(&self) -> u64 {
        self.cumulative()[LATENCY_BUCKETS - 1]
    }
}

impl AddAssign for Histogram {
    /// Wrapping, as [`Snapshot`]'s sum.
    fn add_assign(&mut self, o: Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a = a.wrapping_add(b);
        }
        self.sum_us = self.sum_us.wrapping_add(o.sum_us);
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// Counter values read at one time; add them up over workers with `+` or
/// `.sum()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Requests parsed and handed to the handler.
    pub requests: u64,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    /// Bytes received from clients.
    pub bytes_in: u64,
    /// Bytes sent to clients.
    pub bytes_out: u64,
    /// Connections open (a gauge).
    pub open_connections: u64,
    /// Connections accepted.
    pub accepts: u64,
    /// Requests rejected as malformed.
    pub parse_errors: u64,
    /// Messages sent by the worker to the master.
    pub ring_sent: u64,
    /// Messages received by the worker from the master.
    pub ring_received: u64,
    /// Worker sends refused with `Full`.
    pub ring_full: u64,
    /// Upgraded connections held (a gauge).
    pub upgraded_connections: u64,
    /// Bytes of request bodies held now, against the worker's body budget
    /// (a gauge).
    pub body_bytes: u64,
    /// Jobs queued for the blocking pool, not yet taken by a thread (a
    /// gauge).
    pub pool_queued: u64,
    /// Threads of the blocking pool running a job (a gauge).
    pub pool_busy: u64,
    /// Deferred responses waited on now (a gauge).
    pub deferred_in_flight: u64,
    /// Work for the blocking pool refused while the pool shed.
    pub shed_pool: u64,
    /// Requests answered `503` before their handler while the loop shed.
    pub shed_loop: u64,
    /// The shortest wait of a pool job over the last interval, in
    /// microseconds (a gauge).
    pub pool_wait_us: u64,
    /// The shortest lateness of the loop's turns over the last interval,
    /// in microseconds (a gauge).
    pub loop_wait_us: u64,
    /// Which queues shed now: bit 1 the pool, bit 2 the loop (a gauge;
    /// summed over workers it means nothing, per worker it does).
    pub shedding: u64,
    /// Jobs the blocking pool admits at once, queued or running (a gauge).
    pub pool_limit: u64,
    /// Request latencies.
    pub latency: Histogram,
}

impl Add for Snapshot {
    type Output = Snapshot;
    fn add(mut self, o: Snapshot) -> Snapshot {
        self += o;
        self
    }
}

impl AddAssign for Snapshot {
    /// Wrapping: the values come from memory a worker writes, and a
    /// damaged counter must not take the master down.
    fn add_assign(&mut self, o: Snapshot) {
        self.requests = self.requests.wrapping_add(o.requests);
        for (a, b) in self.responses.iter_mut().zip(o.responses) {
            *a = a.wrapping_add(b);
        }
        self.bytes_in = self.bytes_in.wrapping_add(o.bytes_in);
        self.bytes_out = self.bytes_out.wrapping_add(o.bytes_out);
        self.open_connections = self.open_connections.wrapping_add(o.open_connections);
        self.accepts = self.accepts.wrapping_add(o.accepts);
        self.parse_errors = self.parse_errors.wrapping_add(o.parse_errors);
        self.ring_sent = self.ring_sent.wrapping_add(o.ring_sent);
        self.ring_received = self.ring_received.wrapping_add(o.ring_received);
        self.ring_full = self.ring_full.wrapping_add(o.ring_full);
        self.upgraded_connections = self.upgraded_connections.wrapping_add(o.upgraded_connections);
        self.body_bytes = self.body_bytes.wrapping_add(o.body_bytes);
        self.pool_queued = self.pool_queued.wrapping_add(o.pool_queued);
        self.pool_busy = self.pool_busy.wrapping_add(o.pool_busy);
        self.deferred_in_flight = self.deferred_in_flight.wrapping_add(o.deferred_in_flight);
        self.shed_pool = self.shed_pool.wrapping_add(o.shed_pool);
        self.shed_loop = self.shed_loop.wrapping_add(o.shed_loop);
        self.pool_wait_us = self.pool_wait_us.wrapping_add(o.pool_wait_us);
        self.loop_wait_us = self.loop_wait_us.wrapping_add(o.loop_wait_us);
        self.shedding |= o.shedding;
        self.pool_limit = self.pool_limit.wrapping_add(o.pool_limit);
        self.latency += o.latency;
    }
}

impl std::iter::Sum for Snapshot {
    fn sum<I: Iterator<Item = Snapshot>>(iter: I) -> Snapshot {
        iter.fold(Snapshot::default(), Add::add)
    }
}

/// [`Counters`] in a shared page of their own (a [`super::Channel`] carries
/// one already).
#[derive(Clone)]
pub struct SharedCounters {
    /// The mapping.
    shm: Arc<Shm>,
}

impl SharedCounters {
    /// Maps a zeroed page of counters; make it before forking the worker.
    pub fn new() -> io::Result<SharedCounters> {
        let shm = Arc::new(Shm::new(std::mem::size_of::<Counters>())?);
        // SAFETY: the mapping is page-aligned and at least a page long, and
        // nothing else uses it yet.
        unsafe { shm.as_ptr().cast::<Counters>().write(Counters::default()) };
        Ok(SharedCounters { shm })
    }
}

impl std::ops::Deref for SharedCounters {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        // SAFETY: `new` placed a `Counters` at the start of the mapping,
        // which `self.shm` keeps mapped; it is only accessed through atomics.
        unsafe { &*self.shm.as_ptr().cast::<Counters>() }
    }
}

impl fmt::Debug for SharedCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedCounters").field(&self.snapshot()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sums() {
        let c = SharedCounters::new().unwrap();
        c.inc(Counter::Requests);
        c.response(204);
        c.response(404);
        c.response(999);
        c.add(Counter::BytesIn, 100);
        c.add_shared(Counter::BytesOut, 7);
        c.connection_opened();
        c.connection_opened();
        c.connection_closed();
        c.add_shared(Counter::UpgradedConnections, 2);
        c.add_shared(Counter::UpgradedConnections, u64::MAX);
        c.set(Counter::BodyBytes, 300);
        let s = c.snapshot();
        assert_eq!(s.upgraded_connections, 1);
        assert_eq!(s.requests, 1);
        assert_eq!(s.responses, [0, 1, 0, 1, 1]);
        assert_eq!((s.bytes_in, s.bytes_out, s.accepts, s.open_connections), (100, 7, 2, 1));
        assert_eq!(s.body_bytes, 300);
        let total: Snapshot = [s, s].into_iter().sum();
        assert_eq!(total.accepts, 4);
        assert_eq!(total, s + s);
        c.add_shared(Counter::PoolQueued, 2);
        c.add_shared(Counter::PoolBusy, 1);
        c.add_shared(Counter::PoolQueued, u64::MAX);
        assert_eq!((c.snapshot().pool_queued, c.snapshot().pool_busy), (1, 1));
        c.set(Counter::DeferredInFlight, 3);
        assert_eq!(c.snapshot().deferred_in_flight, 3);
        c.add_shared(Counter::ShedPool, 2);
        c.inc(Counter::ShedLoop);
        c.set(Counter::Shedding, SHEDDING_POOL | SHEDDING_LOOP);
        c.set(Counter::PoolWaitUs, 7000);
        let s = c.snapshot();
        assert_eq!((s.shed_pool, s.shed_loop, s.shedding, s.pool_wait_us), (2, 1, 3, 7000));
        c.reset_gauges();
        assert_eq!((c.snapshot().shedding, c.snapshot().pool_wait_us, c.snapshot().shed_pool), (0, 0, 2));
        assert_eq!(c.snapshot().deferred_in_flight, 0);
        assert_eq!(c.snapshot().open_connections, 0);
        assert_eq!(c.snapshot().upgraded_connections, 0);
        assert_eq!(c.snapshot().body_bytes, 0);
        assert_eq!((c.snapshot().pool_queued, c.snapshot().pool_busy), (0, 0));
        assert_eq!(c.snapshot().accepts, 2);
    }

    #[test]
    fn latency_buckets_and_heartbeat() {
        let c = SharedCounters::new().unwrap();
        c.observe_latency(0, 1);
        c.observe_latency(100, 2);
        c.observe_latency(101, 1);
        c.observe_latency(u64::MAX, 1);
        let h = c.snapshot().latency;
        assert_eq!(h.buckets[0], 3);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[LATENCY_BUCKETS - 1], 1);
        assert_eq!(h.count(), 5);
        let cum = h.cumulative();
        assert!(cum.windows(2).all(|w| w[0] <= w[1]));
        // Garbage saturates instead of wrapping back down.
        let g = Histogram { buckets: [u64::MAX / 2 + 1; LATENCY_BUCKETS], ..Default::default() };
        assert!(g.cumulative().windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(g.count(), u64::MAX);
        let before = c.heartbeat();
        c.beat();
        assert_ne!(c.heartbeat(), before);
    }
}
