//! The shared-memory rings across real processes: each test forks a child
//! that runs one end of a ring (or channel) while the test process runs the
//! other.
//!
//! The test harness is multithreaded, so a child keeps to what is safe after
//! `fork()` in such a process: no locks (no printing), no allocation in its
//! loops, and `_exit` when done; it reports through its exit code. Messages
//! carry a sequence number, a writer tag and an FNV-1a hash of the rest, so
//! the reader checks every byte. Every wait is bounded; a child still
//! running at the end of a test is killed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use forkring::internals::ipc::{Channel, ChannelOptions, Counter, Region, Ring, RingOptions, SendError, Shm};

/// The tests spin on two cores: run one at a time so that each has them.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A forked child process, killed and reaped on drop if still running.
struct Child {
    pid: libc::pid_t,
    reaped: bool,
}

/// Runs `f` in a forked child that exits with `f`'s return value (101 if it
/// panics).
fn fork(f: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child runs only `f`, which keeps to async-signal-safe
    // work and memory it owns, then `_exit`s without running destructors
    // or the harness.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(code) }
        }
        pid => Child { pid, reaped: false },
    }
}

impl Child {
    /// Waits for the child to exit and returns its exit code; fails the test
    /// if it was killed or takes longer than `timeout`.
    fn wait(mut self, timeout: Duration) -> i32 {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: our own child; `status` is a live local.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                assert!(libc::WIFEXITED(status), "child ended by signal {}", libc::WTERMSIG(status));
                return libc::WEXITSTATUS(status);
            }
            assert!(start.elapsed() < timeout, "child did not finish within {timeout:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILLs the child and reaps it.
    fn kill9(mut self) {
        // SAFETY: our own, not yet reaped child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        self.reaped = true;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own, not yet reaped child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// A few shared words for tests to signal through, besides the ring.
struct Ctl(Shm);

impl Ctl {
    fn new() -> Ctl {
        Ctl(Shm::anonymous(4096).unwrap())
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < 32);
        let page = self.0.region(Region { offset: 0, len: 4096 }).unwrap();
        // SAFETY: in bounds (one page), aligned, zero-initialised, accessed
        // only atomically.
        unsafe { &*page.as_ptr().cast::<AtomicU64>().add(i * 8) }
    }
}

/// Waits a little longer each time: spins, then yields, then sleeps.
struct Backoff(u32);

impl Backoff {
    fn new() -> Backoff {
        Backoff(0)
    }
    fn snooze(&mut self) {
        self.0 += 1;
        if self.0 < 64 {
            std::hint::spin_loop();
        } else if self.0 < 256 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    fn reset(&mut self) {
        self.0 = 0;
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A number that looks random, from `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Smallest checksummed message: sequence, tag, hash.
const MIN: usize = 20;

/// The length of message `seq`: 0 now and then, otherwise `MIN..=max`.
fn len_of(seq: u64, max: usize) -> usize {
    let r = mix(seq);
    if r % 97 == 0 {
        0
    } else {
        MIN + (r >> 8) as usize % (max - MIN + 1)
    }
}

/// Writes message `seq` of writer `tag` into `buf` (its whole length).
fn fill(buf: &mut [u8], seq: u64, tag: u32) {
    if buf.is_empty() {
        return;
    }
    let n = buf.len();
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..12].copy_from_slice(&tag.to_le_bytes());
    for (i, b) in buf[12..n - 8].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add((i as u8).wrapping_mul(13));
    }
    let h = fnv(&buf[..n - 8]);
    buf[n - 8..].copy_from_slice(&h.to_le_bytes());
}

/// Checks a message: `Some((seq, tag))` if whole, `None` if torn or corrupt.
/// An empty message has no header: `Some((u64::MAX, 0))`.
fn check(m: &[u8]) -> Option<(u64, u32)> {
    if m.is_empty() {
        return Some((u64::MAX, 0));
    }
    if m.len() < MIN {
        return None;
    }
    let n = m.len();
    let h = u64::from_le_bytes(m[n - 8..].try_into().unwrap());
    if fnv(&m[..n - 8]) != h {
        return None;
    }
    Some((u64::from_le_bytes(m[..8].try_into().unwrap()), u32::from_le_bytes(m[8..12].try_into().unwrap())))
}

/// Sends messages `from..to` of writer `tag` with `len_of(seq, max)` bytes,
/// written in place; retries on `Full`. Returns 0, or an exit code saying
/// what went wrong.
fn produce(p: &mut forkring::internals::ipc::Producer, from: u64, to: u64, tag: u32, max: usize) -> i32 {
    let mut backoff = Backoff::new();
    let mut seq = from;
    while seq < to {
        let len = len_of(seq, max);
        match p.try_send_with(len, |b| fill(b, seq, tag)) {
            Ok(()) => {
                seq += 1;
                backoff.reset();
            }
            Err(SendError::Full) => {
                p.wake_if_waiting();
                backoff.snooze();
            }
            Err(_) => return 2,
        }
    }
    p.wake_if_waiting();
    0
}

/// Reads messages `from..to`, checking each; panics when none arrives for
/// `timeout` (the producer is stuck, or lost one). A slow machine only
/// makes it take longer: the bound is on a stall, not on the whole run.
fn consume(c: &mut forkring::internals::ipc::Consumer, from: u64, to: u64, tag: u32, max: usize, timeout: Duration) {
    let mut progress = Instant::now();
    let mut backoff = Backoff::new();
    let mut seq = from;
    while seq < to {
        let n = c
            .recv_batch(|m| {
                assert_eq!(m.len(), len_of(seq, max), "message {seq}: wrong length");
                match check(m) {
                    Some((_, _)) if m.is_empty() => {}
                    Some((s, t)) => assert_eq!((s, t), (seq, tag), "message out of order"),
                    None => panic!("message {seq}: torn or corrupt"),
                }
                seq += 1;
            })
            .unwrap();
        if n == 0 {
            assert!(progress.elapsed() < timeout, "stuck at message {seq} of {to}: none for {timeout:?}");
            backoff.snooze();
        } else {
            progress = Instant::now();
            backoff.reset();
        }
    }
}

#[test]
fn small_messages_arrive_in_order() {
    let _g = serial();
    let ring = Ring::new(RingOptions::with_capacity(64 << 10)).unwrap();
    let (mut p, mut c) = (ring.producer().unwrap(), ring.consumer().unwrap());
    const N: u64 = 500_000;
    let child = fork(move || {
        let mut backoff = Backoff::new();
        for seq in 0..N {
            while p.try_send(&seq.to_le_bytes()).is_err() {
                backoff.snooze();
            }
            backoff.reset();
        }
        0
    });
    // The bound is on a stall (no message for 30 s), not on the whole run.
    let (mut start, mut next, mut backoff) = (Instant::now(), 0u64, Backoff::new());
    while next < N {
        let n = c
            .recv_batch(|m| {
                assert_eq!(m, next.to_le_bytes(), "out of order");
                next += 1;
            })
            .unwrap();
        if n == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "stuck at {next}: none for 30 s");
            backoff.snooze();
        } else {
            start = Instant::now();
        }
    }
    assert_eq!(child.wait(Duration::from_secs(10)), 0);
    assert!(c.is_empty());
}

#[test]
fn messages_of_varied_sizes_survive_every_wrap_around() {
    let _g = serial();
    // A 1 KiB ring with messages up to 496 bytes wraps every few messages,
    // with every amount of padding.
    let opts = RingOptions::with_capacity(1024);
    let ring = Ring::new(opts).unwrap();
    let (mut p, mut c) = (ring.producer().unwrap(), ring.consumer().unwrap());
    const N: u64 = 200_000;
    let child = fork(move || produce(&mut p, 0, N, 7, opts.max_message));
    consume(&mut c, 0, N, 7, opts.max_message, Duration::from_secs(60));
    assert_eq!(child.wait(Duration::from_secs(10)), 0);
}

#[test]
fn full_ring_returns_full_then_succeeds_after_drain() {
    let _g = serial();
    let ring = Ring::new(RingOptions::with_capacity(4096)).unwrap();
    let (mut p, mut c) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let ctl = Arc::new(Ctl::new());
    let ctl2 = ctl.clone();
    // The child consumes only when told, then expects word 1 messages.
    let child = fork(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while ctl2.word(0).load(Ordering::Acquire) == 0 {
            if Instant::now() > deadline {
                return 3;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let want = ctl2.word(1).load(Ordering::Acquire);
        let mut got = 0u64;
        while got < want {
            let r = c.recv_batch(|m| {
                if m != got.to_le_bytes().repeat(8) {
                    got = u64::MAX - 1;
                }
                got += 1;
            });
            if r.is_err() || got == u64::MAX || Instant::now() > deadline {
                return 4;
            }
        }
        0
    });
    let mut sent = 0u64;
    while p.try_send(&sent.to_le_bytes().repeat(8)).is_ok() {
        sent += 1;
    }
    // Backpressure: `Full` at once, every time, nothing blocks.
    for _ in 0..1000 {
        assert_eq!(p.try_send(&sent.to_le_bytes().repeat(8)), Err(SendError::Full));
    }
    assert_eq!(sent as usize, (4096 - 8) / 72, "a 4 KiB ring holds this many 64-byte messages");
    ctl.word(1).store(sent + 1, Ordering::Release);
    ctl.word(0).store(1, Ordering::Release);
    let start = Instant::now();
    while p.try_send(&sent.to_le_bytes().repeat(8)) == Err(SendError::Full) {
        assert!(start.elapsed() < Duration::from_secs(10), "never drained");
        std::thread::yield_now();
    }
    assert_eq!(child.wait(Duration::from_secs(20)), 0);
}

#[test]
fn maximum_size_messages_pass_whole() {
    let _g = serial();
    let opts = RingOptions::new(256 << 10, RingOptions::largest_message(256 << 10));
    let ring = Ring::new(opts).unwrap();
    let (mut p, mut c) = (ring.producer().unwrap(), ring.consumer().unwrap());
    const N: u64 = 3000;
    let max = opts.max_message;
    let child = fork(move || {
        // One byte over the limit is refused, whatever the ring's state.
        if p.try_send_with(max + 1, |_| ()) != Err(SendError::TooLarge) {
            return 5;
        }
        let mut backoff = Backoff::new();
        for seq in 0..N {
            // Alternate the largest message with a small one, so the largest
            // lands at every offset.
            let len = if seq % 2 == 0 { max } else { MIN + (seq as usize % 200) };
            loop {
                match p.try_send_with(len, |b| fill(b, seq, 1)) {
                    Ok(()) => break,
                    Err(SendError::Full) => backoff.snooze(),
                    Err(_) => return 2,
                }
            }
            backoff.reset();
        }
        0
    });
    // The bound is on a stall (no message for 30 s), not on the whole run.
    let (mut start, mut seq, mut largest) = (Instant::now(), 0u64, 0usize);
    while seq < N {
        let n = c
            .recv_batch(|m| {
                assert_eq!(check(m), Some((seq, 1)), "message {seq}");
                largest = largest.max(m.len());
                seq += 1;
            })
            .unwrap();
        if n == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "stuck at {seq}: none for 30 s");
            std::thread::yield_now();
        } else {
            start = Instant::now();
        }
    }
    assert_eq!(largest, max);
    assert_eq!(child.wait(Duration::from_secs(10)), 0);
}

#[test]
fn both_directions_carry_messages_at_once() {
    let _g = serial();
    let opts = RingOptions::with_capacity(16 << 10);
    let mut ch = Channel::new(ChannelOptions::new(opts, opts)).unwrap();
    let mut w = ch.worker().unwrap();
    const N: u64 = 300_000;
    let max = 300;
    // Each side streams its own sequence while reading the other's, never
    // blocking: a `Full` ring just means "read for a while".
    fn run(
        end: &mut forkring::internals::ipc::Duplex,
        tag: u32,
        peer: u32,
        max: usize,
        stall: Duration,
    ) -> Result<(), String> {
        let (mut sent, mut got) = (0u64, 0u64);
        let mut bad = None;
        // The bound is on a stall (neither side moving for `stall`), not on
        // the whole run.
        let (mut moved, mut last) = (Instant::now(), (0u64, 0u64));
        while sent < N || got < N {
            while sent < N && end.try_send_with(len_of(sent, max), |b| fill(b, sent, tag)).is_ok() {
                sent += 1;
            }
            end.wake_if_waiting();
            end.recv_batch(|m| {
                let want_len = len_of(got, max);
                let ok = m.len() == want_len && (m.is_empty() || check(m) == Some((got, peer)));
                if !ok && bad.is_none() {
                    bad = Some(got);
                }
                got += 1;
            })
            .map_err(|e| e.to_string())?;
            if let Some(seq) = bad {
                return Err(format!("side {tag}: bad message {seq}"));
            }
            if (sent, got) != last {
                (moved, last) = (Instant::now(), (sent, got));
            } else if moved.elapsed() > stall {
                return Err(format!("side {tag}: stalled at sent={sent} got={got}"));
            }
        }
        Ok(())
    }
    let stall = Duration::from_secs(30);
    let child = fork(move || match run(&mut w, 2, 1, max, stall) {
        Ok(()) => 0,
        Err(_) => 6,
    });
    run(ch.master(), 1, 2, max, stall).unwrap();
    assert_eq!(child.wait(Duration::from_secs(60)), 0);
    let s = ch.counters().snapshot();
    assert_eq!((s.ring_sent, s.ring_received), (N, N));
}

#[test]
fn two_million_checksummed_messages_arrive_intact() {
    let _g = serial();
    let opts = RingOptions::default();
    let ring = Ring::new(opts).unwrap();
    let (mut p, mut c) = (ring.producer().unwrap(), ring.consumer().unwrap());
    const N: u64 = 2_000_000;
    let max = 100;
    let start = Instant::now();
    let child = fork(move || produce(&mut p, 0, N, 9, max));
    consume(&mut c, 0, N, 9, max, Duration::from_secs(60));
    assert_eq!(child.wait(Duration::from_secs(10)), 0);
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{N} checksummed messages (0 or 20..=100 bytes) in {secs:.2} s: {:.1} M/s", N as f64 / secs / 1e6);
}

#[test]
fn writer_killed_mid_stream_never_shows_a_torn_message() {
    let _g = serial();
    let opts = RingOptions::new(256 << 10, 60_000);
    let ring = Ring::new(opts).unwrap();
    let ctl = Arc::new(Ctl::new());
    let mut c = ring.consumer().unwrap();
    let (mut mid_write, mut total) = (0, 0u64);
    const ROUNDS: u32 = 25;
    for round in 0..ROUNDS {
        let mut p = ring.producer().unwrap();
        ctl.word(0).store(0, Ordering::Relaxed);
        let ctl2 = ctl.clone();
        // The writer streams large messages forever; word 0 is 1 while it is
        // inside a send (reserving, filling, committing).
        let writer = fork(move || {
            let mut seq = 0u64;
            loop {
                let len = len_of(seq, 60_000);
                ctl2.word(0).store(1, Ordering::Relaxed);
                let r = p.try_send_with(len, |b| fill(b, seq, round));
                ctl2.word(0).store(0, Ordering::Relaxed);
                match r {
                    Ok(()) => seq += 1,
                    Err(SendError::Full) => std::hint::spin_loop(),
                    Err(_) => return 2,
                }
            }
        });
        // Read for a while (a different while each round), then kill it.
        let until = Instant::now() + Duration::from_micros(500 + (mix(round as u64) % 10_000));
        let mut seq = 0u64;
        let mut read = |c: &mut forkring::internals::ipc::Consumer| {
            c.recv_batch(|m| {
                assert_eq!(m.len(), len_of(seq, 60_000), "round {round}: message {seq} has a wrong length");
                if !m.is_empty() {
                    assert_eq!(check(m), Some((seq, round)), "round {round}: message {seq} torn or corrupt");
                }
                seq += 1;
            })
            .unwrap()
        };
        while Instant::now() < until {
            read(&mut c);
        }
        writer.kill9();
        if ctl.word(0).load(Ordering::Relaxed) == 1 {
            mid_write += 1;
        }
        // What the dead writer committed is all there, whole; what it was
        // writing is not visible at all.
        while read(&mut c) > 0 {}
        assert!(c.is_empty());
        total += seq;
        // Respawn: the master resets the ring and the next writer starts a
        // new generation.
        // SAFETY: the endpoints are this test's own and idle.
        unsafe { ring.reset() };
        assert_eq!(ring.generation(), round as u64 + 1);
        c = ring.consumer().unwrap();
    }
    eprintln!("{ROUNDS} writers killed, {mid_write} of them inside a send; {total} messages checked");
    assert!(mid_write > 0, "no writer was killed inside a send");
    // After all that, a writer that lives delivers everything.
    let mut p = ring.producer().unwrap();
    let child = fork(move || produce(&mut p, 0, 20_000, 99, 60_000));
    consume(&mut c, 0, 20_000, 99, 60_000, Duration::from_secs(30));
    assert_eq!(child.wait(Duration::from_secs(10)), 0);
}

#[test]
fn wakeups_are_never_lost() {
    let _g = serial();
    let mut ch = Channel::new(ChannelOptions::default()).unwrap();
    let mut w = ch.worker().unwrap();
    const ROUNDS: u64 = 4000;
    // The worker sleeps on its eventfd whenever its ring is empty and
    // answers each burst with one ack. A lost wake-up shows as a timeout.
    let child = fork(move || {
        let mut acked = 0u64;
        loop {
            let mut last = None;
            if w.recv_batch(|m| last = Some(u64::from_le_bytes(m.try_into().unwrap_or([0; 8])))).is_err() {
                return 2;
            }
            if let Some(seq) = last {
                if seq == u64::MAX {
                    return 0;
                }
                acked += 1;
                if w.send(&seq.to_le_bytes()).is_err() {
                    return 4;
                }
                continue;
            }
            match w.wait(Some(Duration::from_secs(5))) {
                Ok(true) => {}
                Ok(false) => return if acked == 0 { 5 } else { 3 },
                Err(_) => return 6,
            }
        }
    });
    let m = ch.master();
    let mut seq = 0u64;
    for round in 0..ROUNDS {
        let r = mix(round);
        // Sometimes pause so the worker is asleep, sometimes not so it is
        // still spinning down or between its check and its sleep.
        match r % 4 {
            0 => std::thread::sleep(Duration::from_micros(r % 300)),
            1 => {
                for _ in 0..(r % 2000) {
                    std::hint::spin_loop();
                }
            }
            _ => {}
        }
        let burst = 1 + r % 8;
        for _ in 0..burst {
            m.try_send(&seq.to_le_bytes()).unwrap();
            seq += 1;
        }
        m.wake_if_waiting();
        // Sleep until the ack of the burst's last message arrives.
        let mut acked = false;
        while !acked {
            m.recv_batch(|a| acked |= a == (seq - 1).to_le_bytes()).unwrap();
            if !acked {
                assert!(m.wait(Some(Duration::from_secs(5))).unwrap(), "round {round}: lost wake-up (master)");
            }
        }
    }
    m.send(&u64::MAX.to_le_bytes()).unwrap();
    let code = child.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "worker failed (3 = lost wake-up)");
    let wakes = ch.master().producer().wakes();
    eprintln!("{ROUNDS} rounds, {seq} messages, {wakes} eventfd writes by the master");
    assert!(wakes <= ROUNDS + 1, "more than one wake-up per burst");
    assert!(wakes > 0);
}

#[test]
fn a_busy_consumer_costs_the_producer_no_syscall_per_message() {
    let _g = serial();
    let mut ch = Channel::new(ChannelOptions::default()).unwrap();
    let mut w = ch.worker().unwrap();
    let ctl = Arc::new(Ctl::new());
    let ctl2 = ctl.clone();
    const N: u64 = 200_000;
    // A busy worker: it polls its ring and never announces a sleep.
    let child = fork(move || {
        let mut got = 0u64;
        ctl2.word(0).store(1, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(30);
        while got < N {
            match w.recv_batch(|_| got += 1) {
                Ok(_) if Instant::now() < deadline => {}
                _ => return 2,
            }
        }
        0
    });
    let start = Instant::now();
    while ctl.word(0).load(Ordering::Acquire) == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the worker did not start within 10 s");
        std::thread::yield_now();
    }
    let m = ch.master();
    let mut backoff = Backoff::new();
    // The bound is on a stall (a full ring for 30 s: the worker stopped
    // reading), not on the whole run.
    for seq in 0..N {
        // `send` checks for a sleeper after every message.
        let mut full_since = None;
        while m.send(&seq.to_le_bytes()) == Err(SendError::Full) {
            let since = *full_since.get_or_insert_with(Instant::now);
            assert!(since.elapsed() < Duration::from_secs(30), "stuck at message {seq}: the ring full for 30 s");
            backoff.snooze();
        }
    }
    assert_eq!(child.wait(Duration::from_secs(30)), 0);
    assert_eq!(ch.master().producer().wakes(), 0, "the master wrote the eventfd of a busy worker");
}

#[test]
fn counters_survive_respawn_and_close_refuses_sends() {
    let _g = serial();
    let opts = RingOptions::with_capacity(4096);
    let mut ch = Channel::new(ChannelOptions::new(opts, opts)).unwrap();
    for generation in 0..3u64 {
        let mut w = ch.worker().unwrap();
        let child = fork(move || {
            let c = w.counters();
            for i in 0..1000u16 {
                c.inc(Counter::Requests);
                c.response(100 + (i % 5) * 100);
                c.add(Counter::BytesIn, 10);
                c.connection_opened();
            }
            c.connection_closed();
            // Send until the master closes the channel: every message either
            // lands or is refused with `Full`; then `Closed` ends it.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match w.send(b"hi") {
                    Ok(()) | Err(SendError::Full) => {}
                    Err(SendError::Closed) => return 0,
                    Err(_) => return 2,
                }
                if Instant::now() > deadline {
                    return 3;
                }
                std::thread::yield_now();
            }
        });
        let start = Instant::now();
        let mut got = 0;
        while got < 100 {
            got += ch.master().recv_batch(|m| assert_eq!(m, b"hi")).unwrap();
            assert!(start.elapsed() < Duration::from_secs(10));
        }
        ch.close();
        assert_eq!(ch.master().send(b"to a draining worker"), Err(SendError::Closed));
        assert_eq!(child.wait(Duration::from_secs(10)), 0);
        let s = ch.counters().snapshot();
        let g = generation + 1;
        assert_eq!(s.requests, 1000 * g);
        assert_eq!(s.responses, [200 * g; 5]);
        assert_eq!((s.bytes_in, s.accepts, s.open_connections), (10_000 * g, 1000 * g, 999));
        assert!(s.ring_sent >= 100 * g);
        // SAFETY: the worker end is this test's own and idle.
        unsafe { ch.reset() }.unwrap();
        assert_eq!(ch.counters().snapshot().open_connections, 0, "gauges restart with the worker");
    }
}
