//! The io_uring driver: one ring per worker, every socket operation a
//! submission, one `io_uring_enter` per loop turn.
//!
//! What runs on the ring:
//!
//! - one multishot accept on the listener, cancelled while the worker is at
//!   `max_connections`, backing off after errors such as `EMFILE`, and
//!   cancelled for good when draining: once its last completion is in (the
//!   connections it still brings are served), what is queued on the
//!   listener is accepted directly and the listener closed;
//! - per connection, one multishot recv drawing from a provided-buffer ring
//!   (so an idle connection holds no receive buffer), and at most one send
//!   covering every response framed so far;
//! - a multishot poll on the control eventfd, and a timer that wakes the
//!   sweep for expired deadlines.
//!
//! Every submission carries a [`Token`] in its user data: the operation, and
//! for connection operations the slab slot and that slot's generation, so a
//! completion that arrives for an earlier occupant of a slot is recognised.
//! A slot is freed only when its connection has no recv and no send left in
//! the kernel; a connection being closed first has its operations cancelled.
//!
//! Where this module stops: HTTP is `http::Conn`'s business; the driver only
//! moves bytes, enforces deadlines and output limits, and closes sockets.

use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types::{self, CancelBuilder, SubmitArgs, Timespec};
use io_uring::{CompletionQueue, IoUring, Probe, SubmissionQueue, Submitter};

use super::{Control, LINGER_MS};
use crate::http::{Conn, Handler, Shared, DRAIN_IDLE_GRACE_MS, OUTPUT_HIGH_WATER};
use crate::server::Config;

/// Submission queue entries. Sends and recv re-arms of one turn rarely
/// exceed it; when they do, the queue is flushed mid-turn.
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries: large, so that a burst of multishot
/// completions does not overflow into the kernel's slower backlog list.
const CQ_ENTRIES: u32 = 4 * SQ_ENTRIES;
/// Receive buffers in the provided-buffer ring (a power of two, at most
/// 32768). Buffers go back to the ring as soon as a completion is parsed,
/// so the count bounds how many receives can complete between two turns,
/// not how many connections can be open.
const RECV_BUF_COUNT: u16 = 4096;
/// Size of one receive buffer. Small requests touch only its first page;
/// large bodies arrive in fewer completions than with 4 KiB.
const RECV_BUF_SIZE: usize = 8 * 1024;
/// The buffer group of the receive buffers.
const BUF_GROUP: u16 = 0;
/// How long accepting pauses after an error such as `EMFILE`.
const ACCEPT_BACKOFF_MS: u64 = 100;
/// Below this many free connection slots, connections are accepted one
/// submission at a time: a multishot accept takes every connection queued
/// in the backlog at once, which could overshoot `max_connections`.
const ACCEPT_MULTISHOT_HEADROOM: usize = 256;
/// How long the worker waits for cancelled operations when it exits.
const EXIT_WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Setup

/// An io_uring instance with its provided-buffer ring, built and checked in
/// the worker process.
pub(crate) struct Ring {
    /// The ring. Declared before `bufs`: it must be torn down before the
    /// buffer memory it writes into is unmapped.
    uring: IoUring,
    /// The receive buffers registered as group [`BUF_GROUP`].
    bufs: BufRing,
    /// The setup flags that the kernel accepted.
    flags: &'static str,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("flags", &self.flags).finish_non_exhaustive()
    }
}

/// A setup step that failed, with the kernel's error kept as the source so
/// that [`is_refusal`] can look at its errno.
#[derive(Debug)]
struct SetupError {
    /// What was being set up.
    what: &'static str,
    /// The error the kernel returned.
    source: io::Error,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn setup_error(what: &'static str, source: io::Error) -> io::Error {
    io::Error::new(source.kind(), SetupError { what, source })
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Builds the worker's ring: the fastest setup flags the kernel accepts,
/// then the provided-buffer ring, then a check that multishot receive works.
pub(crate) fn setup(_config: &Config) -> io::Result<Ring> {
    let (uring, flags) = build_ring()?;
    check_opcodes(&uring)?;
    let bufs = BufRing::new(RECV_BUF_COUNT, RECV_BUF_SIZE).map_err(|e| setup_error("receive buffers", e))?;
    // SAFETY: the buffer ring's memory stays mapped until `bufs` drops, and
    // `Ring` drops `uring` first.
    unsafe { uring.submitter().register_buf_ring_with_flags(bufs.ring_addr(), bufs.count, BUF_GROUP, 0) }
        .map_err(|e| setup_error("register provided-buffer ring", e))?;
    let mut ring = Ring { uring, bufs, flags };
    probe_multishot_recv(&mut ring).map_err(|e| setup_error("multishot recv", e))?;
    Ok(ring)
}

/// Tries the setup flags from fastest to plainest; returns the ring and the
/// flags that worked, or the last error.
fn build_ring() -> io::Result<(IoUring, &'static str)> {
    const TIERS: [&str; 3] =
        ["single_issuer+defer_taskrun+coop_taskrun+submit_all", "coop_taskrun+submit_all", "plain"];
    let mut last = None;
    for (tier, name) in TIERS.into_iter().enumerate() {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(CQ_ENTRIES);
        match tier {
            0 => {
                builder.setup_single_issuer().setup_defer_taskrun().setup_coop_taskrun().setup_submit_all();
            }
            1 => {
                builder.setup_coop_taskrun().setup_submit_all();
            }
            _ => {}
        }
        match builder.build(SQ_ENTRIES) {
            Ok(ring) => return Ok((ring, name)),
            Err(e) => {
                log::debug!("io_uring setup with {name} failed: {e}");
                last = Some(e);
            }
        }
    }
    Err(setup_error("io_uring_setup", last.unwrap_or_else(|| errno(libc::ENOSYS))))
}

/// Checks that the kernel knows every opcode the loop submits.
fn check_opcodes(uring: &IoUring) -> io::Result<()> {
    let mut probe = Probe::new();
    uring.submitter().register_probe(&mut probe).map_err(|e| setup_error("probe opcodes", e))?;
    let needed = [
        opcode::AcceptMulti::CODE,
        opcode::RecvMulti::CODE,
        opcode::Send::CODE,
        opcode::AsyncCancel::CODE,
        opcode::PollAdd::CODE,
        opcode::Timeout::CODE,
    ];
    if needed.iter().all(|&op| probe.is_supported(op)) {
        Ok(())
    } else {
        Err(setup_error("probe opcodes", errno(libc::EOPNOTSUPP)))
    }
}

/// Runs one multishot recv with a provided buffer on a socket pair: the
/// probe opcode list cannot tell whether multishot and buffer selection are
/// supported (Linux 6.0), and the loop must not discover it mid-flight.
/// Multishot accept (5.19) is older, so it is implied.
fn probe_multishot_recv(ring: &mut Ring) -> io::Result<()> {
    let mut fds = [0; 2];
    syscall!(socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()))?;
    // SAFETY: `socketpair` just returned these descriptors and nothing else
    // owns them.
    let (ours, peer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    syscall!(write(peer.as_raw_fd(), b"x".as_ptr().cast(), 1))?;

    let recv_token = Token::new(Op::Probe, 0, 0).0;
    let cancel_token = Token::new(Op::Probe, 1, 0).0;
    let recv = opcode::RecvMulti::new(types::Fd(ours.as_raw_fd()), BUF_GROUP).build().user_data(recv_token);
    // SAFETY: the recv writes only into provided buffers, which stay mapped
    // as long as the ring; `ours` stays open until the recv has ended below.
    unsafe { ring.uring.submission().push(&recv) }.map_err(|_| errno(libc::EBUSY))?;

    let first = wait_for(&mut ring.uring, |c| c.user_data() == recv_token)?;
    if let Some(bid) = cqueue::buffer_select(first.flags()) {
        ring.bufs.put(bid);
        ring.bufs.publish();
    }
    let result = if first.result() < 0 {
        Err(errno(-first.result()))
    } else if first.result() != 1 || cqueue::buffer_select(first.flags()).is_none() || !cqueue::more(first.flags()) {
        Err(errno(libc::EOPNOTSUPP))
    } else {
        Ok(())
    };
    if cqueue::more(first.flags()) {
        let cancel = opcode::AsyncCancel::new(recv_token).build().user_data(cancel_token);
        // SAFETY: a cancel refers to no memory.
        unsafe { ring.uring.submission().push(&cancel) }.map_err(|_| errno(libc::EBUSY))?;
        let (mut recv_done, mut cancel_done) = (false, false);
        while !(recv_done && cancel_done) {
            let c = wait_for(&mut ring.uring, |c| c.user_data() == recv_token || c.user_data() == cancel_token)?;
            if let Some(bid) = cqueue::buffer_select(c.flags()) {
                ring.bufs.put(bid);
                ring.bufs.publish();
            }
            if c.user_data() == cancel_token {
                cancel_done = true;
            } else if !cqueue::more(c.flags()) {
                recv_done = true;
            }
        }
    }
    drop((ours, peer));
    result
}

/// Submits what is queued and waits (at most a second per completion) for
/// a completion that `want` accepts; other completions are dropped.
fn wait_for(uring: &mut IoUring, want: impl Fn(&cqueue::Entry) -> bool) -> io::Result<cqueue::Entry> {
    let timeout = Timespec::new().sec(1);
    loop {
        let args = SubmitArgs::new().timespec(&timeout);
        match uring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {
                if uring.completion().is_empty() {
                    return Err(errno(libc::EOPNOTSUPP));
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        if let Some(c) = uring.completion().find(&want) {
            return Ok(c);
        }
    }
}

/// Whether a setup error means "io_uring is not available here" (seccomp,
/// `kernel.io_uring_disabled`, an old kernel, gVisor), so that `auto` runs
/// epoll instead.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    let code = e.raw_os_error().or_else(|| {
        let inner = e.get_ref()?.downcast_ref::<SetupError>()?;
        inner.source.raw_os_error()
    });
    matches!(code, Some(libc::EPERM | libc::ENOSYS | libc::EINVAL | libc::ENOMEM | libc::EOPNOTSUPP))
}

impl Ring {
    /// The setup that succeeded, for the log.
    pub(crate) fn describe(&self) -> String {
        let p = self.uring.params();
        format!(
            "{}, sq {} cq {}, {} x {} KiB receive buffers",
            self.flags,
            p.sq_entries(),
            p.cq_entries(),
            self.bufs.count,
            self.bufs.size / 1024
        )
    }

    /// Serves `listener` until the worker has drained.
    pub(crate) fn run<H: Handler>(
        mut self,
        config: &Config,
        listener: OwnedFd,
        handler: &mut H,
        ctl: &Control,
    ) -> io::Result<()> {
        let Ring { uring, bufs, .. } = &mut self;
        let (mut submitter, sq, mut cq) = uring.split();
        // Saves a descriptor lookup per enter (Linux 5.18); optional.
        if let Err(e) = submitter.register_ring_fd() {
            log::debug!("io_uring: ring fd not registered: {e}");
        }
        let io = Io { submitter, sq, bufs, inflight: 0 };
        let mut driver = Driver::new(config, listener, handler, ctl, io);
        let result = driver.serve(&mut cq);
        driver.finish(&mut cq);
        result
        // `self` drops here: the ring first, then the buffer memory.
    }
}

// ---------------------------------------------------------------------------
// Provided-buffer ring

/// One entry of a provided-buffer ring, laid out as the kernel's
/// `struct io_uring_buf`. The `resv` field of entry 0 is the ring's tail,
/// written by [`BufRing::publish`] only, so entries are written field by
/// field and never as a whole.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(mem::size_of::<RawBuf>() == mem::size_of::<types::BufRingEntry>());

/// Receive buffers lent to the kernel through a provided-buffer ring: the
/// kernel takes one per receive completion, the loop gives it back once the
/// bytes are parsed.
struct BufRing {
    /// The ring of `count` entries (page-aligned, shared with the kernel).
    entries: *mut RawBuf,
    /// The ring's tail, inside entry 0.
    tail_ptr: *const AtomicU16,
    /// `count` buffers of `size` bytes, back to back.
    data: *mut u8,
    /// Number of buffers (and ring entries), a power of two.
    count: u16,
    /// Bytes per buffer.
    size: usize,
    /// Next tail to publish: entries before it are (or will be) the kernel's.
    tail: u16,
    /// Set when the kernel may still write into the buffers at drop: the
    /// memory is then left mapped.
    leak: bool,
}

impl BufRing {
    fn new(count: u16, size: usize) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two() && count <= 32768);
        let entries = map_anon(count as usize * mem::size_of::<RawBuf>())?.cast::<RawBuf>();
        let data = match map_anon(count as usize * size) {
            Ok(d) => d,
            Err(e) => {
                // SAFETY: `entries` was mapped above with this length and is
                // not used again.
                unsafe { libc::munmap(entries.cast(), count as usize * mem::size_of::<RawBuf>()) };
                return Err(e);
            }
        };
        // SAFETY: `entries` points to a live, page-aligned mapping, so the
        // tail (a u16 inside entry 0) is in bounds and aligned; AtomicU16
        // has the layout of u16.
        let tail_ptr = unsafe { types::BufRingEntry::tail(entries.cast::<types::BufRingEntry>()) }.cast::<AtomicU16>();
        let mut ring = BufRing { entries, tail_ptr, data, count, size, tail: 0, leak: false };
        for bid in 0..count {
            ring.put(bid);
        }
        ring.publish();
        Ok(ring)
    }

    fn ring_addr(&self) -> u64 {
        self.entries as u64
    }

    /// The first `len` bytes of buffer `bid`.
    ///
    /// # Safety
    ///
    /// The kernel must have handed buffer `bid` to the loop in a completion
    /// (so it is not in the ring) and the loop must not have put it back.
    unsafe fn get(&self, bid: u16, len: usize) -> &[u8] {
        debug_assert!(bid < self.count && len <= self.size);
        let len = len.min(self.size);
        // SAFETY: `bid < count` so the range lies inside `data`; the caller
        // guarantees the kernel is done writing it and will not write it
        // again before `put`.
        unsafe { std::slice::from_raw_parts(self.data.add((bid as usize % self.count as usize) * self.size), len) }
    }

    /// Gives buffer `bid` back to the kernel (visible after `publish`).
    fn put(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let bid = bid & (self.count - 1);
        let slot = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `slot < count`, inside the ring mapping. The entry lies
        // beyond the published tail, so the kernel does not read it until
        // the next publish; `resv` (entry 0's tail) is not touched.
        unsafe {
            let e = self.entries.add(slot);
            ptr::addr_of_mut!((*e).addr).write(self.data.add(bid as usize * self.size) as u64);
            ptr::addr_of_mut!((*e).len).write(self.size as u32);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every buffer put back so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: `tail_ptr` points into the live ring mapping (see `new`).
        // Release orders the entry writes of `put` before the new tail,
        // pairing with the kernel's acquire load of the tail.
        unsafe { (*self.tail_ptr).store(self.tail, Ordering::Release) };
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: both mappings were made in `new` with these lengths; the
        // ring that used them has been dropped (field order of `Ring`), and
        // nothing else points into them.
        unsafe {
            libc::munmap(self.entries.cast(), self.count as usize * mem::size_of::<RawBuf>());
            libc::munmap(self.data.cast(), self.count as usize * self.size);
        }
    }
}

/// A private anonymous read-write mapping of `len` bytes.
fn map_anon(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh anonymous mapping touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

// ---------------------------------------------------------------------------
// Tokens

/// What a submission was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    /// The multishot accept on the listener.
    Accept = 1,
    /// A connection's multishot recv.
    Recv,
    /// A connection's send.
    Send,
    /// A cancel request; its completion carries nothing the loop needs.
    Cancel,
    /// The multishot poll on the control eventfd.
    Wake,
    /// The sweep timer.
    Timer,
    /// Operations of the setup probe.
    Probe,
    /// The multishot poll on the eventfd of the ring from the master.
    Inbox,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Cancel,
            5 => Op::Wake,
            6 => Op::Timer,
            7 => Op::Probe,
            8 => Op::Inbox,
            _ => return None,
        })
    }
}

/// The user data of a submission:
///
/// | bits  | 63..56 | 55..32           | 31..0      |
/// |-------|--------|------------------|------------|
/// | field | [`Op`] | slot generation  | slab slot  |
///
/// The generation (24 bits, wrapping) changes each time a slot is freed, so
/// a completion or cancel aimed at a slot's previous connection can never
/// touch the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token(u64);

const GEN_MASK: u32 = (1 << 24) - 1;

impl Token {
    fn new(op: Op, slot: u32, gen: u32) -> Token {
        Token(((op as u64) << 56) | (((gen & GEN_MASK) as u64) << 32) | slot as u64)
    }

    fn op(self) -> Option<Op> {
        Op::from_u8((self.0 >> 56) as u8)
    }

    fn gen(self) -> u32 {
        (self.0 >> 32) as u32 & GEN_MASK
    }

    fn slot(self) -> u32 {
        self.0 as u32
    }
}

// ---------------------------------------------------------------------------
// Connections

/// The state of a connection's multishot recv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    /// Not in the kernel.
    Off,
    /// In the kernel, delivering data.
    Armed,
    /// A cancel was submitted; the final completion has not arrived.
    Cancelling,
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Serving requests.
    Open,
    /// The last response is out and the write side shut down; input is read
    /// and dropped until EOF or `until` (in `Shared::now_ms` time), so that
    /// the client reads that response instead of a reset.
    Linger { until: u64 },
    /// Its operations are being cancelled; the slot is freed when none is
    /// left in the kernel.
    Closing,
}

/// Output handed to the kernel: the bytes stay in `buf`, which does not move
/// or change while a send is in flight.
#[derive(Debug)]
struct Outgoing {
    /// Every response taken from the `Conn` for this send.
    buf: Vec<u8>,
    /// Bytes of `buf` the kernel has sent.
    written: usize,
}

impl Outgoing {
    fn remaining(&self) -> usize {
        self.buf.len() - self.written
    }
}

/// One connection: its socket, protocol state and operations in flight.
#[derive(Debug)]
struct Connection {
    /// The accepted socket; closed when the slot is freed.
    fd: OwnedFd,
    /// The protocol state machine.
    http: Conn,
    /// The multishot recv.
    recv: Recv,
    /// Output taken for sending, until all of it is sent.
    out: Option<Outgoing>,
    /// A send of `out` is in the kernel.
    sending: bool,
    /// Phase of life.
    phase: Phase,
    /// The peer has shut down its side (or the connection failed).
    peer_eof: bool,
    /// The core has been told of the EOF (`Conn::on_eof`).
    eof_seen: bool,
    /// In the loop's dirty list.
    queued: bool,
}

impl Connection {
    /// Whether an operation of this connection is in the kernel.
    fn busy(&self) -> bool {
        self.recv != Recv::Off || self.sending
    }

    /// Output bytes not yet sent, taken or not.
    fn unsent(&self) -> usize {
        self.http.output_len() + self.out.as_ref().map_or(0, Outgoing::remaining)
    }
}

/// A slab slot.
#[derive(Debug)]
struct Slot {
    /// Incremented (mod 2^24) whenever the slot is freed.
    gen: u32,
    /// The occupant.
    conn: Option<Connection>,
}

/// Connections indexed by slot; slots are reused, newest-freed first.
#[derive(Debug, Default)]
struct Slab {
    slots: Vec<Slot>,
    /// Free slot indices.
    free: Vec<u32>,
    /// Occupied slots.
    live: usize,
}

impl Slab {
    fn insert(&mut self, conn: Connection) -> u32 {
        self.live += 1;
        if let Some(idx) = self.free.pop() {
            self.slots[idx as usize].conn = Some(conn);
            idx
        } else {
            self.slots.push(Slot { gen: 0, conn: Some(conn) });
            (self.slots.len() - 1) as u32
        }
    }

    /// The connection at `idx`, with its generation.
    fn at(&mut self, idx: u32) -> Option<(u32, &mut Connection)> {
        let slot = self.slots.get_mut(idx as usize)?;
        let gen = slot.gen;
        slot.conn.as_mut().map(|c| (gen, c))
    }

    /// The connection a completion refers to, if it is still the same one.
    fn by_token(&mut self, token: Token) -> Option<&mut Connection> {
        let slot = self.slots.get_mut(token.slot() as usize)?;
        if slot.gen != token.gen() {
            return None;
        }
        slot.conn.as_mut()
    }

    fn remove(&mut self, idx: u32) -> Option<Connection> {
        let slot = self.slots.get_mut(idx as usize)?;
        let conn = slot.conn.take()?;
        slot.gen = slot.gen.wrapping_add(1) & GEN_MASK;
        self.free.push(idx);
        self.live -= 1;
        Some(conn)
    }
}

// ---------------------------------------------------------------------------
// The loop

/// The submission side of the ring, and the count of operations whose final
/// completion has not arrived.
struct Io<'r> {
    submitter: Submitter<'r>,
    sq: SubmissionQueue<'r>,
    bufs: &'r mut BufRing,
    /// Submissions whose last completion (one without `F_MORE`) is pending.
    inflight: usize,
}

impl Io<'_> {
    /// Queues `entry`, flushing the queue to the kernel if it is full, and
    /// counts it in `inflight`.
    ///
    /// # Safety
    ///
    /// Any memory `entry` points to must stay valid and unmoved until the
    /// operation's final completion has been reaped.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.queue(&entry) }?;
        self.inflight += 1;
        Ok(())
    }

    /// Asks the kernel to cancel the operation submitted as `target`. A
    /// cancel that succeeds posts no completion (`CQE_SKIP_SUCCESS`); one
    /// that fails because the target already ended posts one that the loop
    /// ignores. Cancels are not counted in `inflight`: they refer to no
    /// memory.
    fn cancel(&mut self, target: Token) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target.0)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(Token::new(Op::Cancel, target.slot(), target.gen()).0);
        // SAFETY: a cancel refers to no memory.
        unsafe { self.queue(&entry) }
    }

    /// # Safety
    ///
    /// As for [`Io::push`].
    unsafe fn queue(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..8 {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.sq.push(entry) }.is_ok() {
                return Ok(());
            }
            self.flush()?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    /// Hands queued submissions (and returned buffers) to the kernel now.
    fn flush(&mut self) -> io::Result<()> {
        self.bufs.publish();
        self.sq.sync();
        let r = self.submitter.submit();
        self.sq.sync();
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// State of the multishot accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accept {
    Off,
    Armed,
    Cancelling,
}

struct Driver<'r, 'a, H> {
    io: Io<'r>,
    sh: Shared,
    handler: &'a mut H,
    ctl: &'a Control,
    /// Limits and the listen backlog, which bounds the accepts of a drain.
    config: &'a Config,
    /// The worker's copy of the listening socket, until draining closes it
    /// (after the accept's last completion: while an accept is in the
    /// kernel, it holds the socket open).
    listener: Option<OwnedFd>,
    max_connections: usize,
    drain_ms: u64,
    slab: Slab,
    /// Slots touched by this turn's completions, to reconcile before the
    /// next submit.
    dirty: Vec<u32>,
    accept: Accept,
    /// Accepting resumes at this time (after an error like `EMFILE`).
    accept_paused_until: u64,
    /// The last accept failed with a resource error (logged once per run
    /// of failures).
    accept_failing: bool,
    wake_armed: bool,
    timer_armed: bool,
    /// The sweep period, boxed so its address stays put. The kernel copies
    /// it when it takes the submission (no SQPOLL here), so changing it
    /// affects only timers submitted later.
    timer_ts: Box<Timespec>,
    sweep_due: bool,
    /// The poll on the ring-from-master eventfd is in the kernel.
    inbox_armed: bool,
    draining: bool,
    drain_deadline: u64,
    /// An error that ends the loop.
    fatal: Option<io::Error>,
}

impl<'r, 'a, H: Handler> Driver<'r, 'a, H> {
    fn new(config: &'a Config, listener: OwnedFd, handler: &'a mut H, ctl: &'a Control, io: Io<'r>) -> Self {
        let sweep = Duration::from_millis(super::sweep_interval_ms(config));
        let mut sh = Shared::new(config.limits, config.timeouts);
        if let Some(c) = ctl.counters() {
            sh.set_counters(c);
        }
        sh.tick();
        Driver {
            io,
            sh,
            handler,
            ctl,
            config,
            listener: Some(listener),
            max_connections: config.max_connections.max(1),
            drain_ms: config.timeouts.drain.as_millis() as u64,
            slab: Slab::default(),
            dirty: Vec::new(),
            accept: Accept::Off,
            accept_paused_until: 0,
            accept_failing: false,
            wake_armed: false,
            inbox_armed: false,
            timer_armed: false,
            timer_ts: Box::new(Timespec::from(sweep)),
            sweep_due: false,
            draining: false,
            drain_deadline: u64::MAX,
            fatal: None,
        }
    }

    fn serve(&mut self, cq: &mut CompletionQueue<'_>) -> io::Result<()> {
        if self.ctl.draining() {
            self.start_drain();
        }
        loop {
            self.arm_background();
            if self.draining && self.accept == Accept::Off {
                self.close_listener();
            }
            self.reconcile_all();
            self.reconcile_accept();
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            if self.draining {
                if self.slab.live == 0 && self.listener.is_none() {
                    return Ok(());
                }
                if self.sh.now_ms() >= self.drain_deadline {
                    log::warn!("drain timeout: closing {} connections", self.slab.live);
                    return Ok(());
                }
            }
            self.io.bufs.publish();
            self.io.sq.sync();
            // A message from the master already waiting means no sleep; one
            // that comes while the loop sleeps fires the inbox poll.
            let want = usize::from(self.ctl.may_sleep());
            match self.io.submitter.submit_and_wait(want) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {}
                Err(e) => return Err(e),
            }
            self.io.sq.sync();
            self.sh.tick();
            cq.sync();
            for cqe in cq.by_ref() {
                self.complete(cqe);
            }
            self.ctl.deliver(&mut *self.handler);
            if self.sweep_due {
                self.sweep();
            }
        }
    }

    /// Keeps the control poll and the sweep timer in the kernel.
    fn arm_background(&mut self) {
        if !self.wake_armed {
            let poll = opcode::PollAdd::new(types::Fd(self.ctl.wake_fd()), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(Token::new(Op::Wake, 0, 0).0);
            // SAFETY: a poll refers to no memory.
            let r = unsafe { self.io.push(poll) };
            self.check(r);
            self.wake_armed = true;
        }
        if let (false, Some(fd)) = (self.inbox_armed, self.ctl.inbox_fd()) {
            let poll = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(Token::new(Op::Inbox, 0, 0).0);
            // SAFETY: a poll refers to no memory.
            let r = unsafe { self.io.push(poll) };
            self.check(r);
            self.inbox_armed = true;
        }
        if !self.timer_armed {
            let timer = opcode::Timeout::new(&*self.timer_ts as *const Timespec)
                .build()
                .user_data(Token::new(Op::Timer, 0, 0).0);
            // SAFETY: the timespec is boxed and lives as long as the driver,
            // which outlives every submission (see `finish`).
            let r = unsafe { self.io.push(timer) };
            self.check(r);
            self.timer_armed = true;
        }
    }

    /// Records the error of a submission that could not be queued.
    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            self.fatal.get_or_insert(e);
        }
    }

    fn complete(&mut self, cqe: cqueue::Entry) {
        let (res, flags, token) = (cqe.result(), cqe.flags(), Token(cqe.user_data()));
        if !cqueue::more(flags) && token.op() != Some(Op::Cancel) {
            self.io.inflight = self.io.inflight.saturating_sub(1);
        }
        match token.op() {
            Some(Op::Recv) => self.on_recv(token, res, flags),
            Some(Op::Send) => self.on_send(token, res),
            Some(Op::Accept) => self.on_accept(res, flags),
            Some(Op::Wake) => self.on_wake(res, flags),
            Some(Op::Timer) => self.on_timer(res),
            Some(Op::Inbox) => {
                if !cqueue::more(flags) {
                    self.inbox_armed = false;
                }
                // The eventfd is level-triggered for poll: reset it; the
                // messages are delivered once per loop turn.
                if let Some(fd) = self.ctl.inbox_fd() {
                    let _ = crate::sys::eventfd_drain(fd);
                }
            }
            Some(Op::Cancel | Op::Probe) | None => {}
        }
    }

    fn on_recv(&mut self, token: Token, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let Some(c) = self.slab.by_token(token) else {
            if let Some(bid) = bid {
                self.io.bufs.put(bid);
            }
            return;
        };
        if !cqueue::more(flags) {
            c.recv = Recv::Off;
        }
        if res > 0 {
            self.sh.count_bytes(res as usize, 0);
            if let Some(bid) = bid {
                if c.phase == Phase::Open {
                    // SAFETY: the kernel filled `res` bytes of buffer `bid`
                    // and handed it over with this completion; it goes back
                    // to the ring only below, after the bytes are parsed.
                    let data = unsafe { self.io.bufs.get(bid, res as usize) };
                    c.http.on_read(data, &mut self.sh, &mut *self.handler);
                }
                self.io.bufs.put(bid);
            }
        } else {
            if let Some(bid) = bid {
                self.io.bufs.put(bid);
            }
            match -res {
                // The EOF is handed to the core by `reconcile`, after the
                // requests it holds back.
                0 => c.peer_eof = true,
                // Every buffer was in use: they are back now, and the
                // reconcile below re-arms the recv.
                libc::ENOBUFS | libc::ECANCELED => {}
                e => {
                    log::debug!("recv: {}", errno(e));
                    c.peer_eof = true;
                    let idx = token.slot();
                    self.mark(idx);
                    self.begin_close(idx);
                    return;
                }
            }
        }
        self.mark(token.slot());
    }

    fn on_send(&mut self, token: Token, res: i32) {
        let Some(c) = self.slab.by_token(token) else {
            debug_assert!(false, "send completion for a freed slot");
            return;
        };
        c.sending = false;
        let Some(out) = c.out.as_mut() else {
            return;
        };
        let mut failed = false;
        if res > 0 {
            self.sh.count_bytes(0, res as usize);
            out.written += res as usize;
            c.http.on_sent(&self.sh);
            if out.remaining() == 0 {
                let done = c.out.take().map(|o| o.buf).unwrap_or_default();
                self.sh.recycle(done);
            }
        } else {
            if let Some(o) = c.out.take() {
                self.sh.recycle(o.buf);
            }
            // A send of a non-empty buffer that moves nothing is a failure
            // too: retrying it would spin.
            if res != -libc::ECANCELED {
                log::debug!("send: {}", errno(-res));
                failed = true;
            }
        }
        let idx = token.slot();
        self.mark(idx);
        if failed {
            self.begin_close(idx);
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept = Accept::Off;
        }
        if res >= 0 {
            self.accept_failing = false;
            // SAFETY: the kernel just installed this descriptor for us and
            // nothing else owns it.
            self.add(unsafe { OwnedFd::from_raw_fd(res) });
            return;
        }
        match -res {
            libc::ECANCELED => {}
            // The peer gave up before the accept, or a signal: the next
            // connection is unaffected.
            e if super::accept_error_is_transient(e) => {
                log::debug!("accept: {}", errno(-res));
            }
            e => {
                if !self.accept_failing {
                    log::warn!("accept: {}; retrying every {ACCEPT_BACKOFF_MS} ms", errno(e));
                    self.accept_failing = true;
                } else {
                    log::debug!("accept: {}", errno(e));
                }
                self.accept_paused_until = self.sh.now_ms() + ACCEPT_BACKOFF_MS;
            }
        }
    }

    /// Takes in a connection just accepted (a draining worker drains it at
    /// once).
    fn add(&mut self, fd: OwnedFd) {
        self.sh.count_accept();
        let mut conn = Connection {
            fd,
            http: Conn::new(&self.sh),
            recv: Recv::Off,
            out: None,
            sending: false,
            phase: Phase::Open,
            peer_eof: false,
            eof_seen: false,
            queued: false,
        };
        if self.draining {
            conn.http.start_drain(&self.sh);
        }
        let idx = self.slab.insert(conn);
        self.mark(idx);
    }

    /// Once draining and with no accept left in the kernel: accepts what
    /// is queued on the listener and closes it.
    fn close_listener(&mut self) {
        debug_assert!(self.draining && self.accept == Accept::Off);
        if let Some(listener) = self.listener.take() {
            let config = self.config;
            super::drain_listener(config, listener, |fd| self.add(fd));
        }
    }

    fn on_wake(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.wake_armed = false;
        }
        if res < 0 && res != -libc::ECANCELED {
            self.fatal.get_or_insert(io::Error::other(format!("poll on the control eventfd: {}", errno(-res))));
            return;
        }
        self.ctl.ack();
        if self.ctl.draining() {
            self.start_drain();
        }
    }

    fn on_timer(&mut self, res: i32) {
        self.timer_armed = false;
        if res == -libc::ETIME || res >= 0 {
            self.sweep_due = true;
        } else if res != -libc::ECANCELED {
            self.fatal.get_or_insert(io::Error::other(format!("sweep timer: {}", errno(-res))));
        }
    }

    fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.sh.set_draining();
        self.drain_deadline = self.sh.now_ms().saturating_add(self.drain_ms);
        log::info!("draining: {} connections open", self.slab.live);
        for slot in &mut self.slab.slots {
            if let Some(c) = slot.conn.as_mut() {
                c.http.start_drain(&self.sh);
            }
        }
        // Idle connections now expire within a short grace: sweep at a
        // quarter of it until the drain ends.
        *self.timer_ts = Timespec::from(Duration::from_millis((DRAIN_IDLE_GRACE_MS / 4).max(5)));
        if self.timer_armed {
            let r = self.io.cancel(Token::new(Op::Timer, 0, 0));
            self.check(r);
        }
    }

    /// Closes connections whose deadline (or lingering time) has passed.
    fn sweep(&mut self) {
        self.sweep_due = false;
        let now = self.sh.now_ms();
        for idx in 0..self.slab.slots.len() as u32 {
            let expired = match self.slab.at(idx) {
                Some((_, c)) => match c.phase {
                    Phase::Open => c.http.deadline() <= now,
                    Phase::Linger { until } => until <= now,
                    Phase::Closing => false,
                },
                None => false,
            };
            if expired {
                log::debug!("connection timed out");
                self.begin_close(idx);
            }
        }
    }

    /// Queues slot `idx` for reconciling before the next submit.
    fn mark(&mut self, idx: u32) {
        if let Some((_, c)) = self.slab.at(idx) {
            if !c.queued {
                c.queued = true;
                self.dirty.push(idx);
            }
        }
    }

    fn reconcile_all(&mut self) {
        let mut dirty = mem::take(&mut self.dirty);
        for &idx in &dirty {
            self.reconcile(idx);
        }
        dirty.clear();
        // Reconciling queues nothing, so this keeps the list's allocation.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Brings one connection's operations in line with its state: send what
    /// is framed, close what is finished, read while output is below the
    /// high-water mark.
    fn reconcile(&mut self, idx: u32) {
        let now = self.sh.now_ms();
        let Some((gen, c)) = self.slab.at(idx) else {
            return;
        };
        c.queued = false;
        if c.phase == Phase::Closing {
            if !c.busy() {
                self.free(idx);
            }
            return;
        }
        if c.phase == Phase::Open {
            if !c.sending && c.out.is_none() && c.http.has_output() {
                c.out = Some(Outgoing { buf: c.http.take_output(), written: 0 });
            }
            if c.http.has_pending_input() {
                // Requests the core held back for lack of output room are
                // answered once the output has been taken (a no-op when
                // all it holds is an incomplete head).
                c.http.resume(&mut self.sh, &mut *self.handler);
                if !c.sending && c.out.is_none() && c.http.has_output() {
                    c.out = Some(Outgoing { buf: c.http.take_output(), written: 0 });
                }
            }
            if c.peer_eof && !c.eof_seen && (!c.http.has_pending_input() || c.http.output_len() < OUTPUT_HIGH_WATER) {
                // The peer's EOF reaches the core only once every complete
                // request it sent has been answered: what is left in the
                // core then is at most an incomplete head.
                c.eof_seen = true;
                c.http.on_eof(&mut self.sh);
            }
            if !c.sending {
                if let Some(out) = &c.out {
                    let rest = &out.buf[out.written..];
                    let send = opcode::Send::new(
                        types::Fd(c.fd.as_raw_fd()),
                        rest.as_ptr(),
                        rest.len().min(u32::MAX as usize) as u32,
                    )
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(Token::new(Op::Send, idx, gen).0);
                    // SAFETY: `out.buf` is owned by this connection, is not
                    // touched until the send's completion, and the slot is
                    // not freed while `sending` is set.
                    let r = unsafe { self.io.push(send) };
                    if let Err(e) = r {
                        self.fatal.get_or_insert(e);
                        return;
                    }
                    c.sending = true;
                }
            }
            if c.out.is_none() && !c.http.has_output() && c.http.is_closing() {
                if c.peer_eof {
                    self.begin_close(idx);
                    return;
                }
                // Lingering close: FIN after the last response, then drop
                // input until the client closes too.
                // SAFETY: shutdown on a socket this connection owns.
                if unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_WR) } == -1 {
                    self.begin_close(idx);
                    return;
                }
                c.phase = Phase::Linger { until: now + LINGER_MS };
            }
        }
        let want_recv = match c.phase {
            Phase::Open => !c.peer_eof && c.unsent() <= OUTPUT_HIGH_WATER,
            Phase::Linger { .. } => !c.peer_eof,
            Phase::Closing => false,
        };
        if let Phase::Linger { .. } = c.phase {
            if c.peer_eof {
                self.begin_close(idx);
                return;
            }
        }
        match (want_recv, c.recv) {
            (true, Recv::Off) => {
                let recv = opcode::RecvMulti::new(types::Fd(c.fd.as_raw_fd()), BUF_GROUP)
                    .build()
                    .user_data(Token::new(Op::Recv, idx, gen).0);
                // SAFETY: the recv writes only into provided buffers, which
                // stay mapped as long as the ring.
                match unsafe { self.io.push(recv) } {
                    Ok(()) => c.recv = Recv::Armed,
                    Err(e) => {
                        self.fatal.get_or_insert(e);
                    }
                }
            }
            (false, Recv::Armed) => match self.io.cancel(Token::new(Op::Recv, idx, gen)) {
                Ok(()) => c.recv = Recv::Cancelling,
                Err(e) => {
                    self.fatal.get_or_insert(e);
                }
            },
            _ => {}
        }
    }

    /// Starts closing slot `idx`: its operations are cancelled, and the slot
    /// is freed once none is left in the kernel.
    fn begin_close(&mut self, idx: u32) {
        let Some((gen, c)) = self.slab.at(idx) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        c.phase = Phase::Closing;
        let mut cancels = [None, None];
        if c.recv == Recv::Armed {
            c.recv = Recv::Cancelling;
            cancels[0] = Some(Token::new(Op::Recv, idx, gen));
        }
        if c.sending {
            cancels[1] = Some(Token::new(Op::Send, idx, gen));
        }
        let busy = c.busy();
        for target in cancels.into_iter().flatten() {
            let r = self.io.cancel(target);
            self.check(r);
        }
        if busy {
            self.mark(idx);
        } else {
            self.free(idx);
        }
    }

    /// Frees slot `idx`: nothing of it may be in the kernel any more.
    fn free(&mut self, idx: u32) {
        let Some(c) = self.slab.remove(idx) else {
            return;
        };
        debug_assert!(!c.busy());
        if let Some(out) = c.out {
            self.sh.recycle(out.buf);
        }
        c.http.release(&mut self.sh);
        self.sh.count_close();
        drop(c.fd);
    }

    fn reconcile_accept(&mut self) {
        let want =
            !self.draining && self.slab.live < self.max_connections && self.sh.now_ms() >= self.accept_paused_until;
        let token = Token::new(Op::Accept, 0, 0);
        match (want, self.accept) {
            (true, Accept::Off) => {
                let Some(listener) = &self.listener else { return };
                let fd = types::Fd(listener.as_raw_fd());
                let accept = if self.max_connections.saturating_sub(self.slab.live) > ACCEPT_MULTISHOT_HEADROOM {
                    opcode::AcceptMulti::new(fd).flags(libc::SOCK_CLOEXEC).build()
                } else {
                    opcode::Accept::new(fd, ptr::null_mut(), ptr::null_mut()).flags(libc::SOCK_CLOEXEC).build()
                };
                // SAFETY: an accept that asks for no peer address refers to
                // no memory.
                let r = unsafe { self.io.push(accept.user_data(token.0)) };
                if r.is_ok() {
                    self.accept = Accept::Armed;
                }
                self.check(r);
            }
            (false, Accept::Armed) => {
                let r = self.io.cancel(token);
                if r.is_ok() {
                    self.accept = Accept::Cancelling;
                }
                self.check(r);
            }
            _ => {}
        }
    }

    /// Cancels whatever is still in the kernel, waits (boundedly) for it to
    /// finish, and closes every connection left. If the kernel does not
    /// confirm, the memory it could still touch is leaked rather than freed.
    fn finish(&mut self, cq: &mut CompletionQueue<'_>) {
        if self.io.inflight > 0 {
            let _ = self.io.flush();
            if let Err(e) = self.io.submitter.register_sync_cancel(Some(Timespec::new().sec(1)), CancelBuilder::any()) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    log::debug!("io_uring: cancel on exit: {e}");
                }
            }
            let start = Instant::now();
            let wait = Timespec::new().nsec(10_000_000);
            while self.io.inflight > 0 && start.elapsed() < EXIT_WAIT {
                let args = SubmitArgs::new().timespec(&wait);
                match self.io.submitter.submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                    Err(_) => break,
                }
                cq.sync();
                for cqe in cq.by_ref() {
                    let token = Token(cqe.user_data());
                    if !cqueue::more(cqe.flags()) && token.op() != Some(Op::Cancel) {
                        self.io.inflight = self.io.inflight.saturating_sub(1);
                    }
                    if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                        self.io.bufs.put(bid);
                    }
                    if token.op() == Some(Op::Send) {
                        if let Some(c) = self.slab.by_token(token) {
                            c.sending = false;
                        }
                    }
                }
                cq.sync();
            }
        }
        let leak = self.io.inflight > 0;
        if leak {
            log::warn!("io_uring: {} operations still in the kernel at exit", self.io.inflight);
            self.io.bufs.leak = true;
        }
        for idx in 0..self.slab.slots.len() as u32 {
            let Some(c) = self.slab.remove(idx) else {
                continue;
            };
            match c.out {
                Some(out) if c.sending => mem::forget(out.buf),
                Some(out) => self.sh.recycle(out.buf),
                None => {}
            }
            c.http.release(&mut self.sh);
        }
    }
}
