//! A worker slot's channel: a ring each way, an eventfd each way, and the
//! slot's counters, in one shared mapping the master makes before it forks
//! the slot's first worker and keeps for the life of the slot.
//!
//! ```text
//!   master                                   worker
//!   MasterEnd.tx ── to_worker ring ──────►  WorkerEnd.rx   sleeps on worker eventfd
//!   MasterEnd.rx ◄────── to_master ring ──  WorkerEnd.tx   (master sleeps on master eventfd)
//!                         counters  ◄─────  written by the worker, read by the master
//! ```
//!
//! Respawn: when the slot's worker has died (been reaped), the master calls
//! [`Channel::reset`] and forks the replacement, which takes its end with
//! [`Channel::worker`]. Each worker process of a slot needs its own
//! channel while two of them run at once (a rolling reload forks the new
//! worker before the old one has drained).
//!
//! Isolation: a process forked after the channel was made inherits its
//! mapping unless [`Channel::set_inherited`] said otherwise. The master
//! keeps every channel out of each fork but the one of the worker it forks,
//! so a worker, which may be compromised, maps no other slot's channel.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::counters::{Counter, Counters};
use super::ring::{Consumer, Producer, RecvError, Ring, SendError};
use super::shm::{Layout, Region, Shm};
use super::wake::WakeFd;
use crate::config::ChannelOptions;

/// "FRKCHAN1": marks an initialised channel mapping.
const MAGIC: u64 = u64::from_le_bytes(*b"FRKCHAN1");

/// Where the parts of a channel sit in its mapping, at its start (so a
/// re-executed worker finds them).
#[repr(C, align(128))]
struct Meta {
    /// [`MAGIC`].
    magic: AtomicU64,
    /// Offset and length of the master→worker ring.
    to_worker: [AtomicU64; 2],
    /// Offset and length of the worker→master ring.
    to_master: [AtomicU64; 2],
    /// Offset of the counters.
    counters: AtomicU64,
}

/// A slot's channel, owned by the master. It holds the master's end; the
/// worker's end is taken in the forked worker with [`Channel::worker`].
pub struct Channel {
    /// Master to worker.
    to_worker: Ring,
    /// Worker to master.
    to_master: Ring,
    /// The eventfd the worker sleeps on.
    worker_wake: Arc<WakeFd>,
    /// The eventfd the master sleeps on (for this slot).
    master_wake: Arc<WakeFd>,
    /// The slot's counters.
    counters: CountersRef,
    /// The master's end.
    master: MasterEnd,
}

impl Channel {
    /// Maps and formats a channel, creates its eventfds, and claims the
    /// master's end. Make it before forking the worker.
    pub fn new(opts: ChannelOptions) -> io::Result<Channel> {
        opts.to_worker.validate()?;
        opts.to_master.validate()?;
        let mut layout = Layout::new();
        let meta = layout.push(std::mem::size_of::<Meta>(), 128);
        let to_worker = layout.push(opts.to_worker.region_len(), 128);
        let to_master = layout.push(opts.to_master.region_len(), 128);
        let counters = layout.push(std::mem::size_of::<Counters>(), 128);
        let shm = Arc::new(Shm::new(layout.size())?);
        let meta_ptr = shm.region(meta)?.cast::<Meta>();
        let m = Meta {
            magic: AtomicU64::new(0),
            to_worker: [AtomicU64::new(to_worker.offset as u64), AtomicU64::new(to_worker.len as u64)],
            to_master: [AtomicU64::new(to_master.offset as u64), AtomicU64::new(to_master.len as u64)],
            counters: AtomicU64::new(counters.offset as u64),
        };
        // SAFETY: a fresh mapping, page-aligned, large enough; unused so far.
        unsafe { meta_ptr.as_ptr().write(m) };
        let counters = CountersRef::init(shm.clone(), counters)?;
        // SAFETY: the mapping was made above; the layout gives each ring
        // its own bytes, and no one else has the mapping yet.
        let to_worker = unsafe { Ring::init(shm.clone(), to_worker, opts.to_worker)? };
        // SAFETY: as above.
        let to_master = unsafe { Ring::init(shm.clone(), to_master, opts.to_master)? };
        // SAFETY: written just above; lives as long as `shm`.
        let meta = unsafe { meta_ptr.as_ref() };
        // `Release`: an attacher that reads the magic sees the layout.
        meta.magic.store(MAGIC, Ordering::Release);
        let worker_wake = Arc::new(WakeFd::new()?);
        let master_wake = Arc::new(WakeFd::new()?);
        let master = MasterEnd::claim(&to_worker, &to_master, &worker_wake, &master_wake)?;
        Ok(Channel { to_worker, to_master, worker_wake, master_wake, counters, master })
    }

    /// The master's end.
    pub fn master(&mut self) -> &mut MasterEnd {
        &mut self.master
    }

    /// Claims the worker's end: call it once in the worker process, after
    /// fork (and after every [`Channel::reset`], in the new worker).
    pub fn worker(&self) -> io::Result<WorkerEnd> {
        WorkerEnd::claim(&self.to_worker, &self.to_master, &self.worker_wake, &self.master_wake, self.counters.clone())
    }

    /// Prepares the channel for a new worker in the slot: empties both
    /// rings, reopens them, bumps the generation, zeroes the counters'
    /// gauges (totals are kept), drains stale wake-ups, and renews the
    /// master's end (whose unread messages from the dead worker are
    /// dropped). Call it after the old worker was reaped, before forking the
    /// new one.
    ///
    /// # Safety
    ///
    /// As for [`Ring::reset`]: no thread or process other than the caller
    /// uses, or will use, the channel's old worker end.
    pub unsafe fn reset(&mut self) -> io::Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            self.to_worker.reset();
            self.to_master.reset();
        }
        self.counters.reset_gauges();
        self.worker_wake.drain()?;
        self.master_wake.drain()?;
        self.master = MasterEnd::claim(&self.to_worker, &self.to_master, &self.worker_wake, &self.master_wake)?;
        Ok(())
    }

    /// Whether a process forked from now on inherits the channel's mapping
    /// (see [`Shm::set_inherited`]); a new channel is inherited. A child
    /// that does not inherit it must not use the channel at all.
    pub fn set_inherited(&self, inherited: bool) -> io::Result<()> {
        self.to_worker.shm().set_inherited(inherited)
    }

    /// Closes both directions: sends from either end then return
    /// [`SendError::Closed`] (for a worker that is draining or dead).
    /// Messages already in the rings stay readable. [`Channel::reset`]
    /// reopens.
    pub fn close(&self) {
        self.to_worker.close();
        self.to_master.close();
    }

    /// Resets so far (the same for both rings).
    pub fn generation(&self) -> u64 {
        self.to_worker.generation()
    }

    /// The slot's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The master→worker ring.
    pub fn to_worker(&self) -> &Ring {
        &self.to_worker
    }

    /// The worker→master ring.
    pub fn to_master(&self) -> &Ring {
        &self.to_master
    }

    /// The descriptors a re-executed worker needs for
    /// [`WorkerEnd::from_fds`] (clear close-on-exec on them in the child).
    /// `None` if the mapping is anonymous (no memfd on this kernel).
    pub fn fds(&self) -> Option<ChannelFds<'_>> {
        Some(ChannelFds {
            shm: self.to_worker.shm().fd()?,
            worker_wake: self.worker_wake.fd(),
            master_wake: self.master_wake.fd(),
        })
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("to_worker", &self.to_worker)
            .field("to_master", &self.to_master)
            .field("worker_wake", &self.worker_wake)
            .field("master_wake", &self.master_wake)
            .finish()
    }
}

/// The descriptors behind a [`Channel`].
#[derive(Clone, Copy, Debug)]
pub struct ChannelFds<'a> {
    /// The sealed memfd of the mapping.
    pub shm: BorrowedFd<'a>,
    /// The eventfd the worker sleeps on.
    pub worker_wake: BorrowedFd<'a>,
    /// The eventfd the master sleeps on.
    pub master_wake: BorrowedFd<'a>,
}

/// One side of a channel: a producer into one ring, a consumer of the other,
/// and the eventfd this side sleeps on. [`MasterEnd`] and [`WorkerEnd`]
/// dereference to it.
///
/// Sending: [`Duplex::send`] commits and wakes the peer if it sleeps;
/// [`Duplex::try_send`] only commits, for a batch followed by one
/// [`Duplex::wake_if_waiting`]. Receiving: [`Duplex::recv_batch`] drains.
/// Sleeping (in an event loop): when a turn found no work, call
/// [`Duplex::prepare_sleep`]; if it returns true, wait on [`Duplex::fd`]
/// along with everything else; after waking call [`Duplex::after_wake`] and
/// drain.
pub struct Duplex {
    /// Into the peer's ring.
    tx: Producer,
    /// Out of the peer's ring.
    rx: Consumer,
    /// The worker's counters, on the worker's side only.
    counters: Option<CountersRef>,
}

impl Duplex {
    /// Sends one message and wakes the peer if it sleeps.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let r = self.tx.send(msg);
        self.count_send(r.map(|_| ()))?;
        Ok(())
    }

    /// Commits one message without waking the peer; follow a batch with
    /// [`Duplex::wake_if_waiting`].
    #[inline]
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let r = self.tx.try_send(msg);
        self.count_send(r)
    }

    /// Writes a message of `len` bytes in place (see
    /// [`Producer::try_send_with`]) without waking the peer.
    pub fn try_send_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Result<R, SendError> {
        let r = self.tx.try_send_with(len, fill);
        self.count_send(r.as_ref().map(|_| ()).map_err(|e| *e))?;
        r
    }

    #[inline]
    fn count_send(&self, r: Result<(), SendError>) -> Result<(), SendError> {
        if let Some(c) = &self.counters {
            match r {
                Ok(()) => c.inc(Counter::RingSent),
                Err(SendError::Full) => c.inc(Counter::RingFull),
                Err(_) => {}
            }
        }
        r
    }

    /// Wakes the peer if it sleeps and messages were committed since the
    /// last wake-up check. Returns whether it wrote the eventfd.
    #[inline]
    pub fn wake_if_waiting(&mut self) -> bool {
        self.tx.wake_if_waiting()
    }

    /// Hands every waiting message to `f` (see [`Consumer::recv_batch`]).
    pub fn recv_batch(&mut self, f: impl FnMut(&[u8])) -> Result<usize, RecvError> {
        self.recv_up_to(usize::MAX, f)
    }

    /// [`Duplex::recv_batch`], at most `max` messages.
    pub fn recv_up_to(&mut self, max: usize, f: impl FnMut(&[u8])) -> Result<usize, RecvError> {
        let n = self.rx.recv_up_to(max, f)?;
        if let Some(c) = &self.counters {
            c.add(Counter::RingReceived, n as u64);
        }
        Ok(n)
    }

    /// Reads at most `max` messages, each copied out of shared memory
    /// before `f` sees it (see [`Consumer::recv_owned`]).
    pub fn recv_owned(&mut self, max: usize, f: impl FnMut(Vec<u8>)) -> Result<usize, RecvError> {
        self.rx.recv_owned(max, f)
    }

    /// Reads at most `max` messages into one buffer (see
    /// [`Consumer::recv_into`]).
    pub fn recv_into(&mut self, max: usize, out: &mut Vec<u8>, ends: &mut Vec<usize>) -> Result<usize, RecvError> {
        self.rx.recv_into(max, out, ends)
    }

    /// Whether the peer damaged either ring (a bad frame, a reset it had
    /// no right to make, or impossible indices): nothing more can be sent
    /// or received on this end.
    pub fn is_corrupt(&self) -> bool {
        self.tx.is_corrupt() || self.rx.is_broken()
    }

    /// Reads one message into `buf`; returns whether there was one.
    pub fn try_recv(&mut self, buf: &mut Vec<u8>) -> Result<bool, RecvError> {
        buf.clear();
        Ok(self.recv_up_to(1, |m| buf.extend_from_slice(m))? == 1)
    }

    /// See [`Consumer::prepare_sleep`].
    pub fn prepare_sleep(&mut self) -> bool {
        self.rx.prepare_sleep()
    }

    /// See [`Consumer::after_wake`].
    pub fn after_wake(&mut self) {
        self.rx.after_wake()
    }

    /// Blocks until a message arrives or `timeout` passes (see
    /// [`Consumer::wait`]).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.rx.wait(timeout)
    }

    /// The eventfd this side sleeps on: readable when the peer woke it.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // Both ends are always made with their eventfds.
        self.rx.wake_fd().map(|n| n.fd()).expect("channel consumer has a wake-up eventfd")
    }

    /// Both halves at once, e.g. to answer messages from inside
    /// [`Consumer::recv_batch`]'s callback. Messages moved through the
    /// halves directly are not counted in the worker's counters.
    pub fn split(&mut self) -> (&mut Producer, &mut Consumer) {
        (&mut self.tx, &mut self.rx)
    }

    /// The producer half.
    pub fn producer(&mut self) -> &mut Producer {
        &mut self.tx
    }

    /// The consumer half.
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.rx
    }
}

impl fmt::Debug for Duplex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Duplex").field("tx", &self.tx).field("rx", &self.rx).finish()
    }
}

/// The master's side of a slot's channel.
#[derive(Debug)]
pub struct MasterEnd {
    /// Producer into `to_worker`, consumer of `to_master`.
    io: Duplex,
}

impl MasterEnd {
    fn claim(
        to_worker: &Ring,
        to_master: &Ring,
        worker_wake: &Arc<WakeFd>,
        master_wake: &Arc<WakeFd>,
    ) -> io::Result<Self> {
        let tx = to_worker.producer()?.with_wake_fd(worker_wake.clone());
        let rx = to_master.consumer()?.with_wake_fd(master_wake.clone());
        Ok(MasterEnd { io: Duplex { tx, rx, counters: None } })
    }
}

impl Deref for MasterEnd {
    type Target = Duplex;
    fn deref(&self) -> &Duplex {
        &self.io
    }
}

impl DerefMut for MasterEnd {
    fn deref_mut(&mut self) -> &mut Duplex {
        &mut self.io
    }
}

/// The worker's side of its slot's channel. Its sends and receives are
/// counted in the slot's counters (`ring_sent`, `ring_full`,
/// `ring_received`).
#[derive(Debug)]
pub struct WorkerEnd {
    /// Producer into `to_master`, consumer of `to_worker`.
    io: Duplex,
    /// The ring generation it was claimed in.
    generation: u64,
}

impl WorkerEnd {
    fn claim(
        to_worker: &Ring,
        to_master: &Ring,
        worker_wake: &Arc<WakeFd>,
        master_wake: &Arc<WakeFd>,
        counters: CountersRef,
    ) -> io::Result<Self> {
        let rx = to_worker.consumer()?.with_wake_fd(worker_wake.clone());
        let tx = to_master.producer()?.with_wake_fd(master_wake.clone());
        Ok(WorkerEnd { io: Duplex { tx, rx, counters: Some(counters) }, generation: to_worker.generation() })
    }

    /// Claims the worker's end in a worker that re-executed the binary,
    /// from the descriptors of [`Channel::fds`] it inherited.
    pub fn from_fds(shm: OwnedFd, worker_wake: OwnedFd, master_wake: OwnedFd) -> io::Result<WorkerEnd> {
        let shm = Arc::new(Shm::from_fd(shm)?);
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a forkring channel mapping");
        if shm.len() < std::mem::size_of::<Meta>() {
            return Err(bad());
        }
        // SAFETY: the mapping is page-aligned and larger than `Meta`, whose
        // fields are atomics (any bit pattern is valid).
        let meta = unsafe { &*shm.as_ptr().cast::<Meta>() };
        if meta.magic.load(Ordering::Acquire) != MAGIC {
            return Err(bad());
        }
        let region = |r: &[AtomicU64; 2]| Region {
            offset: r[0].load(Ordering::Relaxed) as usize,
            len: r[1].load(Ordering::Relaxed) as usize,
        };
        let to_worker = Ring::attach(shm.clone(), region(&meta.to_worker))?;
        let to_master = Ring::attach(shm.clone(), region(&meta.to_master))?;
        let offset = meta.counters.load(Ordering::Relaxed) as usize;
        let counters = CountersRef::attach(shm.clone(), Region { offset, len: std::mem::size_of::<Counters>() })?;
        let worker_wake = Arc::new(WakeFd::from_fd(worker_wake));
        let master_wake = Arc::new(WakeFd::from_fd(master_wake));
        WorkerEnd::claim(&to_worker, &to_master, &worker_wake, &master_wake, counters)
    }

    /// The slot's counters, for the worker to update.
    pub fn counters(&self) -> &Counters {
        self.io.counters.as_deref().expect("worker end has counters")
    }

    /// The channel generation this worker runs in.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Deref for WorkerEnd {
    type Target = Duplex;
    fn deref(&self) -> &Duplex {
        &self.io
    }
}

impl DerefMut for WorkerEnd {
    fn deref_mut(&mut self) -> &mut Duplex {
        &mut self.io
    }
}

/// [`Counters`] inside a channel's mapping.
#[derive(Clone)]
struct CountersRef {
    /// Keeps the mapping alive.
    _shm: Arc<Shm>,
    /// The counters, inside the mapping.
    ptr: NonNull<Counters>,
}

// SAFETY: the pointee is a block of atomics in a mapping kept alive by `_shm`.
unsafe impl Send for CountersRef {}
// SAFETY: as for `Send`; `&Counters` is `Sync`.
unsafe impl Sync for CountersRef {}

impl CountersRef {
    /// Places zeroed counters in `region`.
    fn init(shm: Arc<Shm>, region: Region) -> io::Result<CountersRef> {
        let r = CountersRef::attach(shm, region)?;
        // SAFETY: in bounds and aligned (checked by `attach`); the mapping
        // is new, so no one else uses it.
        unsafe { r.ptr.as_ptr().write(Counters::default()) };
        Ok(r)
    }

    /// The counters already in `region`.
    fn attach(shm: Arc<Shm>, region: Region) -> io::Result<CountersRef> {
        if region.len < std::mem::size_of::<Counters>() || region.offset % std::mem::align_of::<Counters>() != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "counters region too small or misaligned"));
        }
        let ptr = shm.region(region)?.cast::<Counters>();
        Ok(CountersRef { _shm: shm, ptr })
    }
}

impl Deref for CountersRef {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        // SAFETY: points at counters (atomics: every bit pattern is valid)
        // in a mapping `_shm` keeps alive.
        unsafe { self.ptr.as_ref() }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::RingOptions;

    fn small() -> ChannelOptions {
        ChannelOptions { to_worker: RingOptions::with_capacity(4096), to_master: RingOptions::with_capacity(4096) }
    }

    #[test]
    fn both_directions_in_process() {
        let mut ch = Channel::new(small()).unwrap();
        let mut w = ch.worker().unwrap();
        assert!(ch.worker().is_err(), "one worker end per generation");
        ch.master().send(b"config").unwrap();
        w.send(b"hello").unwrap();
        w.try_send(b"world").unwrap();
        let mut got = Vec::new();
        ch.master().recv_batch(|m| got.push(m.to_vec())).unwrap();
        assert_eq!(got, [b"hello".to_vec(), b"world".to_vec()]);
        let mut buf = Vec::new();
        assert!(w.try_recv(&mut buf).unwrap());
        assert_eq!(buf, b"config");
        let s = ch.counters().snapshot();
        assert_eq!((s.ring_sent, s.ring_received, s.ring_full), (2, 1, 0));
    }

    #[test]
    fn close_reset_and_counters_survive() {
        let mut ch = Channel::new(small()).unwrap();
        let mut w = ch.worker().unwrap();
        w.counters().inc(Counter::Requests);
        w.counters().connection_opened();
        ch.close();
        assert_eq!(ch.master().send(b"x"), Err(SendError::Closed));
        assert_eq!(w.send(b"x"), Err(SendError::Closed));
        // SAFETY: the endpoints are this test's own and idle.
        unsafe { ch.reset() }.unwrap();
        assert_eq!(ch.generation(), 1);
        assert_eq!(w.send(b"stale"), Err(SendError::Closed));
        assert_eq!(w.recv_batch(|_| ()), Err(RecvError::Reset));
        let mut w = ch.worker().unwrap();
        assert_eq!(w.generation(), 1);
        w.send(b"new").unwrap();
        assert_eq!(ch.master().recv_batch(|m| assert_eq!(m, b"new")).unwrap(), 1);
        let s = ch.counters().snapshot();
        assert_eq!((s.requests, s.accepts, s.open_connections), (1, 1, 0));
    }

    #[test]
    fn worker_end_from_fds() {
        let mut ch = Channel::new(small()).unwrap();
        let fds = ch.fds().expect("memfd available");
        let (a, b, c) = (
            fds.shm.try_clone_to_owned().unwrap(),
            fds.worker_wake.try_clone_to_owned().unwrap(),
            fds.master_wake.try_clone_to_owned().unwrap(),
        );
        let mut w = WorkerEnd::from_fds(a, b, c).unwrap();
        ch.master().send(b"via fds").unwrap();
        assert_eq!(w.recv_batch(|m| assert_eq!(m, b"via fds")).unwrap(), 1);
        w.counters().inc(Counter::ParseErrors);
        assert_eq!(ch.counters().snapshot().parse_errors, 1);
        // The wake-up crosses too: the worker sleeps, the master wakes it.
        assert!(w.prepare_sleep());
        ch.master().send(b"wake").unwrap();
        assert!(w.wait(Some(Duration::from_secs(5))).unwrap());
    }
}
