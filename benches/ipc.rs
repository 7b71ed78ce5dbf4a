//! Messaging between two forked processes: forkring's shared-memory ring
//! beside a Unix socketpair (one `write` per message) and beside the floors
//! no design beats, all measured in one run:
//!
//! - one-way throughput of 64-byte messages (messages per second), beside
//!   a bare ring of 64-byte slots (one cache line a message: the floor);
//! - round trip with the receiver busy-polling, beside a bare shared-memory
//!   spin ping-pong (the cache-line floor) and beside the ring's frame
//!   format with no ring around it (what a 64-byte message in a 72-byte
//!   frame costs by itself);
//! - round trip with the receiver asleep on its eventfd, beside a bare
//!   eventfd ping-pong (the wake-up floor), both with blocking reads and
//!   with the ring's own way to sleep (`poll`, then `read`).
//!
//! Criterion measures each with `iter_custom` (the peer process is forked
//! once per benchmark and kept), then a summary table prints the same
//! measurements, medians of a few fixed-size runs, with the ratios
//! (`summary one-way`, `summary busy` or `summary asleep` runs one part).
//! The two processes are pinned to CPUs 0 and 1 when there are two.
//!
//! To see where one case spends its time, name it as a criterion filter
//! (no summary then) and record both processes:
//! `perf record -e cpu-clock -g target/release/deps/ipc-* --bench 'busy/ring'`.
//! On a virtual machine the cost of moving a line between the two CPUs
//! changes with where the host places them (the spin floor's round trip
//! has been seen at 0.1 us and at 0.4 us on one machine within a minute):
//! compare a case with its floor from the same run, never across runs.

use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use forkring::internals::ipc::{Channel, ChannelOptions, Region, Ring, RingOptions, SendError, Shm, WakeFd};

/// Message size throughout.
const SIZE: usize = 64;

/// Pins the calling thread to `cpu`, if the machine has it.
fn pin(cpu: usize) {
    // SAFETY: `cpu_set_t` is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below the set's capacity (the caller checks it
    // against `cpus()`), and `set` is a live local.
    unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPUs online (not the affinity mask, which pinning narrows).
fn cpus() -> usize {
    // SAFETY: `sysconf` has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
}

/// The forked peer of a benchmark, killed and reaped on drop.
struct Peer(libc::pid_t);

impl Peer {
    /// Forks a child that pins itself to CPU 1 and runs `f` forever.
    fn spawn(f: impl FnOnce()) -> Peer {
        // SAFETY: criterion runs benchmarks on this one thread; the child
        // runs only `f` (no locks taken) and `_exit`s.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                if cpus() > 1 {
                    pin(1);
                }
                f();
                // SAFETY: ends the child without running the parent's state.
                unsafe { libc::_exit(0) }
            }
            pid => Peer(pid),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: our own, not yet reaped child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// Shared words in their own cache lines, for progress counters and spins.
struct Words(Shm);

impl Words {
    fn new() -> Words {
        Words(Shm::anonymous(4096).unwrap())
    }
    /// Word `i`, alone on its 128-byte line.
    fn get(&self, i: usize) -> &AtomicU64 {
        assert!(i < 32);
        let page = self.0.region(Region { offset: 0, len: 4096 }).unwrap();
        // SAFETY: in bounds, aligned, zeroed, accessed only atomically; the
        // mapping lives as long as `self`.
        unsafe { &*page.as_ptr().cast::<AtomicU64>().add(i * 16) }
    }
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live two-element array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: just created, owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: plain fcntl on an open descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
}

fn write_all(fd: RawFd, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reads from a live slice.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        if n > 0 {
            done += n as usize;
        } else if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
            panic!("write: {}", std::io::Error::last_os_error());
        }
    }
}

/// Reads exactly `buf.len()` bytes, spinning on `EAGAIN` if non-blocking.
fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writes into a live slice.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n > 0 {
            done += n as usize;
        } else if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
            return false;
        }
    }
    true
}

fn eventfd_blocking() -> OwnedFd {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: just created, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn efd_write(fd: RawFd) {
    let one = 1u64;
    // SAFETY: 8 bytes from a live local.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn efd_read(fd: RawFd) -> bool {
    let mut v = 0u64;
    // SAFETY: 8 bytes into a live local.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) == 8 }
}

/// One measurement: a peer process and what the benchmark process does.
trait Scenario {
    /// Runs `iters` messages (one-way) or round trips; returns the time.
    fn run(&mut self, iters: u64) -> Duration;
}

/// Ring, one way: this process produces, the peer busy-polls and counts.
struct RingOneWay {
    tx: forkring::internals::ipc::Producer,
    words: Words,
    sent: u64,
    /// Check for a sleeping consumer after every message (`send`) instead
    /// of once per burst (`try_send`, then `wake_if_waiting`).
    per_message_check: bool,
    _peer: Peer,
}

impl RingOneWay {
    fn new(per_message_check: bool) -> RingOneWay {
        let ring = Ring::new(RingOptions::default()).unwrap();
        let (tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        let words = Words::new();
        let counter = words.get(0) as *const AtomicU64 as usize;
        let peer = Peer::spawn(move || {
            // SAFETY: the word lives in a shared mapping this child inherited
            // and never unmaps.
            let consumed = unsafe { &*(counter as *const AtomicU64) };
            let (mut n, mut acc) = (0u64, 0u64);
            loop {
                let got = rx.recv_batch(|m| acc ^= u64::from_le_bytes(m[..8].try_into().unwrap())).unwrap_or(0);
                if got > 0 {
                    n += got as u64;
                    consumed.store(n, Ordering::Release);
                } else {
                    std::hint::spin_loop();
                }
                black_box(acc);
            }
        });
        RingOneWay { tx, words, sent: 0, per_message_check, _peer: peer }
    }
}

impl Scenario for RingOneWay {
    fn run(&mut self, iters: u64) -> Duration {
        let mut msg = [7u8; SIZE];
        let start = Instant::now();
        for i in 0..iters {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            loop {
                let r = if self.per_message_check { self.tx.send(&msg) } else { self.tx.try_send(&msg) };
                match r {
                    Ok(()) => break,
                    Err(SendError::Full) => {
                        self.tx.wake_if_waiting();
                        std::hint::spin_loop();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        self.tx.wake_if_waiting();
        self.sent += iters;
        while self.words.get(0).load(Ordering::Acquire) < self.sent {
            std::hint::spin_loop();
        }
        start.elapsed()
    }
}

/// The one-way floor: a ring of 64-byte slots, one cache line per message
/// and nothing else (no header, no validation, no wake-up check). The
/// producer publishes its index after every message and loads the
/// consumer's only when its cached copy says the ring is full; the consumer
/// loads the producer's index when it has read up to its cached copy, and
/// publishes its own once per batch.
struct StreamFloor {
    words: Words,
    slots: Shm,
    sent: u64,
    /// The consumer's index as last loaded.
    head_cache: u64,
    _peer: Peer,
}

/// Slots in [`StreamFloor`]: 1 MiB, as the ring's default capacity.
const FLOOR_SLOTS: u64 = (1 << 20) / SIZE as u64;

impl StreamFloor {
    fn new() -> StreamFloor {
        let words = Words::new();
        let slots = Shm::anonymous((FLOOR_SLOTS as usize) * SIZE).unwrap();
        let base = words.get(0) as *const AtomicU64 as usize;
        let data = slots.region(Region { offset: 0, len: FLOOR_SLOTS as usize * SIZE }).unwrap().as_ptr() as usize;
        let peer = Peer::spawn(move || {
            // SAFETY: words 0 (producer's index), 1 (consumer's index) and 2
            // (messages consumed) of a shared mapping this child inherited;
            // the slots likewise.
            let (tail, head, consumed) = unsafe {
                (
                    &*(base as *const AtomicU64),
                    &*((base + 128) as *const AtomicU64),
                    &*((base + 256) as *const AtomicU64),
                )
            };
            let (mut pos, mut acc) = (0u64, 0u64);
            loop {
                let end = tail.load(Ordering::Acquire);
                if end == pos {
                    std::hint::spin_loop();
                    continue;
                }
                while pos < end {
                    let at = (pos % FLOOR_SLOTS) as usize * SIZE;
                    // SAFETY: a slot the producer published and will not
                    // write before `head` passes it; the ring's consumer in
                    // `RingOneWay` reads the same first 8 bytes.
                    acc ^= unsafe { ((data + at) as *const u64).read() };
                    pos += 1;
                }
                head.store(pos, Ordering::Release);
                consumed.store(pos, Ordering::Release);
                black_box(acc);
            }
        });
        StreamFloor { words, slots, sent: 0, head_cache: 0, _peer: peer }
    }
}

impl Scenario for StreamFloor {
    fn run(&mut self, iters: u64) -> Duration {
        let (tail, head) = (self.words.get(0), self.words.get(1));
        let data = self.slots.region(Region { offset: 0, len: FLOOR_SLOTS as usize * SIZE }).unwrap().as_ptr();
        let mut msg = [7u8; SIZE];
        let start = Instant::now();
        for i in self.sent..self.sent + iters {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            while i - self.head_cache >= FLOOR_SLOTS {
                self.head_cache = head.load(Ordering::Acquire);
                std::hint::spin_loop();
            }
            // SAFETY: a free slot (checked against the consumer's index).
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), data.add((i % FLOOR_SLOTS) as usize * SIZE), SIZE) };
            tail.store(i + 1, Ordering::Release);
        }
        self.sent += iters;
        while self.words.get(2).load(Ordering::Acquire) < self.sent {
            std::hint::spin_loop();
        }
        start.elapsed()
    }
}

/// Socketpair, one way: one `write` per message; the peer reads in bulk.
struct SockOneWay {
    fd: OwnedFd,
    words: Words,
    sent: u64,
    _peer: Peer,
}

impl SockOneWay {
    fn new() -> SockOneWay {
        let (a, b) = socketpair();
        let words = Words::new();
        let counter = words.get(0) as *const AtomicU64 as usize;
        let peer = Peer::spawn(move || {
            // SAFETY: as in `RingOneWay::new`.
            let consumed = unsafe { &*(counter as *const AtomicU64) };
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                // SAFETY: writes into a live buffer.
                let n = unsafe { libc::read(b.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    return;
                }
                total += n as u64;
                consumed.store(total, Ordering::Release);
            }
        });
        SockOneWay { fd: a, words, sent: 0, _peer: peer }
    }
}

impl Scenario for SockOneWay {
    fn run(&mut self, iters: u64) -> Duration {
        let msg = [7u8; SIZE];
        let start = Instant::now();
        for _ in 0..iters {
            write_all(self.fd.as_raw_fd(), &msg);
        }
        self.sent += iters * SIZE as u64;
        while self.words.get(0).load(Ordering::Acquire) < self.sent {
            std::hint::spin_loop();
        }
        start.elapsed()
    }
}

/// Ring round trip through a channel; the peer echoes, and this side reads
/// as the master reads a worker (`recv_into`: copied out whole). `sleep`:
/// both sides sleep on their eventfds while waiting (else they busy-poll).
struct RingRtt {
    ch: Channel,
    sleep: bool,
    _peer: Peer,
}

impl RingRtt {
    fn new(sleep: bool) -> RingRtt {
        let ch = Channel::new(ChannelOptions::default()).unwrap();
        let mut w = ch.worker().unwrap();
        let peer = Peer::spawn(move || loop {
            let (tx, rx) = w.split();
            let n = rx.recv_batch(|m| while tx.try_send(m) == Err(SendError::Full) {}).unwrap_or(0);
            if n > 0 {
                tx.wake_if_waiting();
            } else if sleep {
                let _ = rx.wait(None);
            } else {
                std::hint::spin_loop();
            }
        });
        RingRtt { ch, sleep, _peer: peer }
    }
}

impl Scenario for RingRtt {
    fn run(&mut self, iters: u64) -> Duration {
        let m = self.ch.master();
        let mut msg = [7u8; SIZE];
        let start = Instant::now();
        // The master's own way to read a worker: each answer copied out of
        // shared memory into buffers kept from turn to turn.
        let (mut bytes, mut ends) = (Vec::with_capacity(1 << 16), Vec::with_capacity(1024));
        for i in 0..iters {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            m.send(&msg).unwrap();
            let mut got = false;
            while !got {
                bytes.clear();
                ends.clear();
                m.recv_into(1024, &mut bytes, &mut ends).unwrap();
                got = ends.len() == 1 && bytes[..8] == i.to_le_bytes();
                if !got {
                    if self.sleep {
                        m.wait(None).unwrap();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        start.elapsed()
    }
}

/// Socketpair round trip; the peer echoes. `spin`: non-blocking reads
/// retried on `EAGAIN` (a busy receiver), else blocking reads.
struct SockRtt {
    fd: OwnedFd,
    _peer: Peer,
}

impl SockRtt {
    fn new(spin: bool) -> SockRtt {
        let (a, b) = socketpair();
        if spin {
            set_nonblocking(a.as_raw_fd());
            set_nonblocking(b.as_raw_fd());
        }
        let peer = Peer::spawn(move || {
            let mut buf = [0u8; SIZE];
            while read_exact(b.as_raw_fd(), &mut buf) {
                write_all(b.as_raw_fd(), &buf);
            }
        });
        SockRtt { fd: a, _peer: peer }
    }
}

impl Scenario for SockRtt {
    fn run(&mut self, iters: u64) -> Duration {
        let mut buf = [7u8; SIZE];
        let start = Instant::now();
        for _ in 0..iters {
            write_all(self.fd.as_raw_fd(), &buf);
            assert!(read_exact(self.fd.as_raw_fd(), &mut buf));
        }
        start.elapsed()
    }
}

/// The cache-line floor: two words in shared memory, each side spins on one
/// and writes the other.
struct SpinFloor {
    words: Words,
    _peer: Peer,
}

impl SpinFloor {
    fn new() -> SpinFloor {
        let words = Words::new();
        let base = words.get(0) as *const AtomicU64 as usize;
        let peer = Peer::spawn(move || {
            // SAFETY: as in `RingOneWay::new`; words 0 and 16 are lines 0 and 1.
            let (ping, pong) = unsafe { (&*(base as *const AtomicU64), &*((base + 128) as *const AtomicU64)) };
            let mut last = 0;
            loop {
                let v = ping.load(Ordering::Acquire);
                if v != last {
                    last = v;
                    pong.store(v, Ordering::Release);
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        SpinFloor { words, _peer: peer }
    }
}

impl Scenario for SpinFloor {
    fn run(&mut self, iters: u64) -> Duration {
        let (ping, pong) = (self.words.get(0), self.words.get(1));
        let base = ping.load(Ordering::Relaxed);
        let start = Instant::now();
        for i in base + 1..=base + iters {
            ping.store(i, Ordering::Release);
            while pong.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
        }
        start.elapsed()
    }
}

/// The busy round trip with the ring's frame format and nothing else: a
/// 64-byte message behind an 8-byte header word, 72 bytes a frame, frames
/// one after another in 1 MiB each way; each side spins on the header word
/// of the next frame, and the peer copies the payload into its answer. No
/// validation, no indices, no wake-up check: what the frames themselves
/// cost beside the one-word spin floor.
struct FrameFloor {
    /// Master to peer, then peer to master, 1 MiB each.
    area: Shm,
    sent: u64,
    _peer: Peer,
}

/// Bytes of a [`FrameFloor`] frame.
const FRAME: usize = 8 + SIZE;
/// Frames in 1 MiB.
const FRAMES: u64 = (1 << 20) / FRAME as u64;

/// The frame of message `i` (counted from 1) in the direction at `base`:
/// its header word and its payload.
fn frame_at(base: usize, i: u64) -> (&'static AtomicU64, *mut u8) {
    let at = base + (i % FRAMES) as usize * FRAME;
    // SAFETY: `at` is 8-aligned inside a 1 MiB half of a shared mapping that
    // lives as long as the process that uses it (the bench's scenario or its
    // peer); the word is accessed only atomically.
    (unsafe { &*(at as *const AtomicU64) }, (at + 8) as *mut u8)
}

impl FrameFloor {
    fn new() -> FrameFloor {
        let area = Shm::anonymous(2 << 20).unwrap();
        let base = area.region(Region { offset: 0, len: 2 << 20 }).unwrap().as_ptr() as usize;
        let peer = Peer::spawn(move || {
            let mut i = 1u64;
            loop {
                let (word, payload) = frame_at(base, i);
                if word.load(Ordering::Acquire) != i {
                    std::hint::spin_loop();
                    continue;
                }
                let (answer, out) = frame_at(base + (1 << 20), i);
                // SAFETY: the committed payload of frame `i` and the free
                // payload of answer `i`, in different halves.
                unsafe { std::ptr::copy_nonoverlapping(payload, out, black_box(SIZE)) };
                answer.store(i, Ordering::Release);
                i += 1;
            }
        });
        FrameFloor { area, sent: 0, _peer: peer }
    }
}

impl Scenario for FrameFloor {
    fn run(&mut self, iters: u64) -> Duration {
        let base = self.area.region(Region { offset: 0, len: 2 << 20 }).unwrap().as_ptr() as usize;
        let mut msg = [7u8; SIZE];
        let start = Instant::now();
        for i in self.sent + 1..=self.sent + iters {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            let (word, payload) = frame_at(base, i);
            // SAFETY: frame `i`'s payload, free until its header is stored.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), payload, SIZE) };
            word.store(i, Ordering::Release);
            let (answer, back) = frame_at(base + (1 << 20), i);
            while answer.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            // Copied out whole, as the ring's master copies an answer.
            // SAFETY: the committed payload of answer `i`.
            unsafe { std::ptr::copy_nonoverlapping(back, msg.as_mut_ptr(), black_box(SIZE)) };
            assert_eq!(msg[..8], i.to_le_bytes());
        }
        self.sent += iters;
        start.elapsed()
    }
}

/// The wake-up floor: two blocking eventfds, each side sleeps in `read`.
struct EventfdFloor {
    ping: OwnedFd,
    pong: OwnedFd,
    _peer: Peer,
}

impl EventfdFloor {
    fn new() -> EventfdFloor {
        let (ping, pong) = (eventfd_blocking(), eventfd_blocking());
        let (pi, po) = (ping.as_raw_fd(), pong.as_raw_fd());
        let peer = Peer::spawn(move || {
            while efd_read(pi) {
                efd_write(po);
            }
        });
        EventfdFloor { ping, pong, _peer: peer }
    }
}

impl Scenario for EventfdFloor {
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            efd_write(self.ping.as_raw_fd());
            efd_read(self.pong.as_raw_fd());
        }
        start.elapsed()
    }
}

/// The wake-up floor as the ring sleeps: non-blocking eventfds, each side
/// waits in `poll` and then reads ([`WakeFd::wait`]).
struct EventfdPollFloor {
    ping: Arc<WakeFd>,
    pong: Arc<WakeFd>,
    _peer: Peer,
}

impl EventfdPollFloor {
    fn new() -> EventfdPollFloor {
        let (ping, pong) = (Arc::new(WakeFd::new().unwrap()), Arc::new(WakeFd::new().unwrap()));
        let (pi, po) = (ping.clone(), pong.clone());
        let peer = Peer::spawn(move || {
            while pi.wait(None).unwrap_or(false) {
                po.wake();
            }
        });
        EventfdPollFloor { ping, pong, _peer: peer }
    }
}

impl Scenario for EventfdPollFloor {
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.ping.wake();
            self.pong.wait(None).unwrap();
        }
        start.elapsed()
    }
}

fn bench_one<S: Scenario>(c: &mut Criterion, group: &str, name: &str, elements: bool, mut s: S) {
    let mut g = c.benchmark_group(group);
    if elements {
        g.throughput(Throughput::Elements(1));
    }
    g.bench_function(name, |b| b.iter_custom(|iters| s.run(iters)));
    g.finish();
}

fn criterion_benches(c: &mut Criterion) {
    let one_way = "ipc one-way 64 B";
    bench_one(c, one_way, "ring try_send", true, RingOneWay::new(false));
    bench_one(c, one_way, "ring send", true, RingOneWay::new(true));
    bench_one(c, one_way, "floor: 64-byte slots", true, StreamFloor::new());
    bench_one(c, one_way, "socketpair", true, SockOneWay::new());
    let busy = "ipc round trip, receiver busy";
    bench_one(c, busy, "ring", false, RingRtt::new(false));
    bench_one(c, busy, "socketpair EAGAIN spin", false, SockRtt::new(true));
    bench_one(c, busy, "shm spin floor", false, SpinFloor::new());
    bench_one(c, busy, "frame floor", false, FrameFloor::new());
    let asleep = "ipc round trip, receiver asleep";
    bench_one(c, asleep, "ring eventfd wake", false, RingRtt::new(true));
    bench_one(c, asleep, "socketpair blocking", false, SockRtt::new(false));
    bench_one(c, asleep, "eventfd floor", false, EventfdFloor::new());
    bench_one(c, asleep, "eventfd floor, poll then read", false, EventfdPollFloor::new());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    targets = criterion_benches
}

/// Time per item over `runs` runs of `iters` items, after a warm-up:
/// (median, best). On a shared machine the best run is the one least
/// disturbed by other processes.
fn per_item<S: Scenario>(mut s: S, iters: u64, runs: usize) -> (f64, f64) {
    s.run(iters / 4);
    let mut t: Vec<f64> = (0..runs).map(|_| s.run(iters).as_secs_f64() / iters as f64).collect();
    t.sort_by(f64::total_cmp);
    (t[runs / 2], t[0])
}

/// Like [`per_item`] for several scenarios at once, run in turns (A, B, C,
/// A, B, C, ...) so that background load falls on all of them alike. Only
/// for scenarios whose peers sleep while idle.
fn interleaved(scenarios: &mut [&mut dyn Scenario], iters: u64, runs: usize) -> Vec<(f64, f64)> {
    for s in scenarios.iter_mut() {
        s.run(iters / 4);
    }
    let mut t = vec![Vec::new(); scenarios.len()];
    for _ in 0..runs {
        for (s, t) in scenarios.iter_mut().zip(&mut t) {
            t.push(s.run(iters).as_secs_f64() / iters as f64);
        }
    }
    t.into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            (t[runs / 2], t[0])
        })
        .collect()
}

/// One row: median and best, scaled.
fn row(what: &str, (median, best): (f64, f64), scale: f64, unit: &str) {
    println!("  {what:<42} {:>9.3} {unit}   (best {:.3})", median * scale, best * scale);
}

/// Messages per second from (median, best) seconds per message.
fn rate((median, best): (f64, f64)) -> (f64, f64) {
    (1.0 / median, 1.0 / best)
}

/// Which parts of the summary to run: all, or those named after `summary`
/// on the command line (`one-way`, `busy`, `asleep`).
struct Parts(Vec<String>);

impl Parts {
    fn from_args() -> Parts {
        let args: Vec<String> = std::env::args().skip_while(|a| a != "summary").skip(1).collect();
        Parts(args.into_iter().filter(|a| !a.starts_with('-')).collect())
    }
    fn wants(&self, part: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p == part)
    }
}

fn summary(parts: &Parts) {
    let runs = 7;
    let ratio = |a: (f64, f64), b: (f64, f64)| (a.0 / b.0, a.1 / b.1);
    println!();
    println!("forkring ipc: 64-byte messages between two processes (median of {runs} runs, and best)");
    if parts.wants("one-way") {
        let ring_try = rate(per_item(RingOneWay::new(false), 10_000_000, runs));
        let ring_send = rate(per_item(RingOneWay::new(true), 5_000_000, runs));
        let floor = rate(per_item(StreamFloor::new(), 10_000_000, runs));
        let sock = rate(per_item(SockOneWay::new(), 500_000, runs));
        println!();
        println!("one-way throughput");
        row("ring, try_send + one wake check per burst", ring_try, 1e-6, "M msg/s");
        row("ring, send (wake-up check per message)", ring_send, 1e-6, "M msg/s");
        row("floor: 64-byte slots, index per message", floor, 1e-6, "M msg/s");
        row("socketpair, one write per message", sock, 1e-6, "M msg/s");
        let (m, b) = ratio(ring_try, sock);
        let (ms, bs) = ratio(ring_send, sock);
        println!(
            "  ring / socketpair: {m:.1}x (best {b:.1}x); with send: {ms:.1}x (best {bs:.1}x)   goal: >= 60 M msg/s"
        );
        let (fm, fb) = ratio(ring_try, floor);
        let (fsm, fsb) = ratio(ring_send, floor);
        println!("  ring / floor: {fm:.2} (best {fb:.2}); with send: {fsm:.2} (best {fsb:.2})");
    }
    if parts.wants("busy") {
        let ring_busy = per_item(RingRtt::new(false), 300_000, runs);
        let sock_busy = per_item(SockRtt::new(true), 30_000, runs);
        let spin = per_item(SpinFloor::new(), 300_000, runs);
        let frames = per_item(FrameFloor::new(), 300_000, runs);
        println!();
        println!("round trip, receiver busy-polling");
        row("ring", ring_busy, 1e6, "us");
        row("socketpair, read spinning on EAGAIN", sock_busy, 1e6, "us");
        row("floor: shared-memory spin ping-pong", spin, 1e6, "us");
        row("the ring's 72-byte frames alone", frames, 1e6, "us");
        let (m, b) = ratio(ring_busy, spin);
        let (sm, sb) = ratio(sock_busy, ring_busy);
        println!(
            "  ring / floor: {m:.2}x (best {b:.2}x); socketpair / ring: {sm:.1}x (best {sb:.1}x)   goal: ring <= 1.2x the floor"
        );
        let (fm, fb) = ratio(frames, spin);
        let (rm, rb) = ratio(ring_busy, frames);
        println!("  frames alone / floor: {fm:.2}x (best {fb:.2}x); ring / frames alone: {rm:.2}x (best {rb:.2}x)");
    }
    if parts.wants("asleep") {
        let sleeping = interleaved(
            &mut [
                &mut RingRtt::new(true),
                &mut SockRtt::new(false),
                &mut EventfdFloor::new(),
                &mut EventfdPollFloor::new(),
            ],
            3_000,
            2 * runs + 1,
        );
        let (ring_sleep, sock_sleep, efd, efd_poll) = (sleeping[0], sleeping[1], sleeping[2], sleeping[3]);
        println!();
        println!("round trip, receiver asleep (eventfd wake-up; the four measured in turns, {} runs)", 2 * runs + 1);
        row("ring", ring_sleep, 1e6, "us");
        row("socketpair, blocking read", sock_sleep, 1e6, "us");
        row("floor: eventfd ping-pong, blocking read", efd, 1e6, "us");
        row("floor: eventfd ping-pong, poll then read", efd_poll, 1e6, "us");
        let (m, b) = ratio(ring_sleep, efd);
        let (pm, pb) = ratio(ring_sleep, efd_poll);
        let (sm, sb) = ratio(sock_sleep, efd);
        println!(
            "  ring / floor: {m:.3} ({:+.1}%, best {b:.3}); ring / poll floor: {pm:.3} ({:+.1}%, best {pb:.3})",
            (m - 1.0) * 100.0,
            (pm - 1.0) * 100.0
        );
        println!("  socketpair / floor: {sm:.3} (best {sb:.3})   goal: ring within 10% of the floor");
    }
}

fn main() {
    if cpus() > 1 {
        pin(0);
    }
    // `cargo bench --bench ipc -- summary` skips criterion and prints only
    // the table.
    let summary_only = std::env::args().any(|a| a == "summary");
    if !summary_only {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    // A criterion filter (`cargo bench --bench ipc -- 'busy/ring'`) runs
    // only what it names, without the summary.
    let filtered = std::env::args().skip(1).any(|a| !a.starts_with('-'));
    if summary_only || !filtered {
        summary(&Parts::from_args());
    }
}
