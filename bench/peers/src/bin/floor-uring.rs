//! The io_uring floor: the least work a server can do to answer
//! forkring's `GET /` on this kernel the way forkring's io_uring driver
//! does it, so that forkring's figures can be read as a ratio to it.
//!
//! Per worker process: one ring with the setup flags forkring's driver
//! picks (`single_issuer`, `defer_taskrun`, `coop_taskrun`, `taskrun_flag`,
//! `submit_all`; the same queue sizes), a provided-buffer ring of the same
//! shape (256 × 8 KiB consumed incrementally where the kernel allows it,
//! 4096 × 8 KiB consumed whole otherwise), the ring's descriptor
//! registered, one multishot accept, one multishot receive per connection,
//! at most one send per connection in flight carrying every answer owed so
//! far (pipelined requests of one receive leave in one send), and a close
//! through the ring with the receive cancelled in the same submission; one
//! `io_uring_enter` per turn. Requests are counted, not parsed, and answered
//! from a static buffer ([`forkring_bench_peers::floor`]).
//!
//! What it leaves out (the work forkring's figure includes and this one
//! does not): parsing, routing, a handler, per-connection output buffers,
//! timers and deadlines, the master's messages, the eventfd polls, metrics,
//! draining. It serves `GET /`-like requests only: no bodies, so not the
//! `post` or static workloads.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};

use forkring_bench_peers::floor::{self, Heads, Owed};
use forkring_bench_peers::{args, ready};
use io_uring::squeue::Entry;
use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, IoUring, SubmissionQueue, Submitter};

const NAME: &str = "floor-uring";

/// Queue sizes as forkring's driver's.
const SQ_ENTRIES: u32 = 4096;
const CQ_ENTRIES: u32 = 4 * SQ_ENTRIES;
/// The provided buffers, as forkring's driver's.
const INC_BUF_COUNT: u16 = 256;
const WHOLE_BUF_COUNT: u16 = 4096;
const BUF_SIZE: usize = 8 * 1024;
/// `IOU_PBUF_RING_INC` (Linux 6.12; not exported by the `io-uring` crate).
const IOU_PBUF_RING_INC: u16 = 2;
const BUF_GROUP: u16 = 0;

/// What a submission is; with the connection's descriptor and generation,
/// its user data ([`token`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    /// A close, or the cancel of a receive before it: nothing to do when
    /// they complete.
    Close = 4,
}

/// User data: the operation in the top byte, the connection's generation in
/// the next 24 bits, its descriptor in the low 32.
fn token(op: Op, fd: RawFd, gen: u32) -> u64 {
    (op as u64) << 56 | u64::from(gen & 0xff_ffff) << 32 | u64::from(fd as u32)
}

/// The parts of a [`token`].
fn untoken(ud: u64) -> (Option<Op>, RawFd, u32) {
    let op = match ud >> 56 {
        1 => Some(Op::Accept),
        2 => Some(Op::Recv),
        3 => Some(Op::Send),
        4 => Some(Op::Close),
        _ => None,
    };
    (op, ud as u32 as RawFd, (ud >> 32) as u32 & 0xff_ffff)
}

/// The entries the loop submits, each built in one place.
mod sqe {
    use super::*;

    pub fn accept(listener: RawFd) -> Entry {
        opcode::AcceptMulti::new(Fd(listener)).flags(libc::SOCK_CLOEXEC).build().user_data(token(Op::Accept, 0, 0))
    }

    pub fn recv(fd: RawFd, gen: u32) -> Entry {
        opcode::RecvMulti::new(Fd(fd), BUF_GROUP).build().user_data(token(Op::Recv, fd, gen))
    }

    /// With `last`, the kernel holds the bytes back (`MSG_MORE`) for the
    /// close, so that the FIN leaves with them, as forkring does.
    pub fn send(fd: RawFd, gen: u32, bytes: &'static [u8], last: bool) -> Entry {
        let flags = libc::MSG_NOSIGNAL | if last { libc::MSG_MORE } else { 0 };
        opcode::Send::new(Fd(fd), bytes.as_ptr(), bytes.len() as u32).flags(flags).build().user_data(token(
            Op::Send,
            fd,
            gen,
        ))
    }

    pub fn cancel_recv(fd: RawFd, gen: u32) -> Entry {
        opcode::AsyncCancel::new(token(Op::Recv, fd, gen)).build().user_data(token(Op::Close, fd, gen))
    }

    pub fn close(fd: RawFd, gen: u32) -> Entry {
        opcode::Close::new(Fd(fd)).build().user_data(token(Op::Close, fd, gen))
    }
}

/// A connection, found by its descriptor.
#[derive(Default)]
struct Conn {
    /// Bumped at every accept that reuses the descriptor, so completions of
    /// an earlier connection on it are recognised.
    gen: u32,
    /// Open (accepted and not yet given to a close).
    open: bool,
    /// Its multishot receive is in the kernel.
    recv: bool,
    /// A send is in the kernel.
    sending: bool,
    /// The peer has ended its side, or the connection failed.
    gone: bool,
    /// Request heads counted so far.
    heads: Heads,
    /// Answers not yet handed to a send.
    owed: Owed,
}

/// The provided-buffer ring: buffers lent to the kernel, given back as
/// soon as their bytes are counted.
struct BufRing {
    /// The ring of `count` entries, shared with the kernel.
    entries: *mut BufRingEntry,
    /// `count` buffers of [`BUF_SIZE`] bytes, back to back.
    data: *mut u8,
    /// Buffers and entries, a power of two.
    count: u16,
    /// The next tail to publish.
    tail: u16,
    /// Per buffer, the bytes earlier completions delivered into it
    /// (incremental consumption only).
    filled: Vec<u32>,
}

impl BufRing {
    fn new(count: u16) -> io::Result<BufRing> {
        let entries = map_anon(count as usize * std::mem::size_of::<BufRingEntry>())?.cast::<BufRingEntry>();
        let data = map_anon(count as usize * BUF_SIZE)?;
        let mut r = BufRing { entries, data, count, tail: 0, filled: vec![0; count as usize] };
        for bid in 0..count {
            r.put(bid);
        }
        r.publish();
        Ok(r)
    }

    /// The bytes a completion delivered into buffer `bid`; the buffer goes
    /// back (after `publish`) unless the kernel keeps filling it.
    ///
    /// # Safety
    ///
    /// `bid`, `len` and `more` come from the completion that delivered these
    /// bytes, and each completion is passed once.
    unsafe fn received(&mut self, bid: u16, len: usize, more: bool) -> &[u8] {
        let bid = bid & (self.count - 1);
        let start = self.filled[bid as usize] as usize;
        let len = len.min(BUF_SIZE - start);
        if more {
            self.filled[bid as usize] = (start + len) as u32;
        } else {
            self.put(bid);
        }
        // SAFETY: `start + len <= BUF_SIZE`, inside buffer `bid`, which the
        // kernel wrote before posting the completion; a buffer put back is
        // written again only after the next `publish`, after these bytes are
        // counted.
        unsafe { std::slice::from_raw_parts(self.data.add(bid as usize * BUF_SIZE + start), len) }
    }

    fn put(&mut self, bid: u16) {
        self.filled[bid as usize] = 0;
        let slot = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `slot < count`, inside the ring mapping, beyond the
        // published tail; entry 0's tail field is left alone by the setters.
        let e = unsafe { &mut *self.entries.add(slot) };
        // SAFETY: `bid < count`, so the buffer lies inside `data`.
        e.set_addr(unsafe { self.data.add(bid as usize * BUF_SIZE) } as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail lies in entry 0 of the live, page-aligned ring
        // mapping; Release orders the entries before it for the kernel's
        // acquire load.
        unsafe { (*BufRingEntry::tail(self.entries).cast::<AtomicU16>()).store(self.tail, Ordering::Release) };
    }
}

fn map_anon(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh anonymous mapping touches no existing memory. It is
    // never unmapped: the process ends with the worker.
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

fn build_ring() -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    b.setup_cqsize(CQ_ENTRIES)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_submit_all();
    b.build(SQ_ENTRIES)
}

/// Registers the provided buffers: incremental where the kernel accepts it.
fn register_bufs(ring: &IoUring) -> io::Result<BufRing> {
    let inc = BufRing::new(INC_BUF_COUNT)?;
    // SAFETY: the buffer memory is never unmapped.
    match unsafe {
        ring.submitter().register_buf_ring_with_flags(inc.entries as u64, inc.count, BUF_GROUP, IOU_PBUF_RING_INC)
    } {
        Ok(()) => return Ok(inc),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    let whole = BufRing::new(WHOLE_BUF_COUNT)?;
    // SAFETY: as above.
    unsafe { ring.submitter().register_buf_ring_with_flags(whole.entries as u64, whole.count, BUF_GROUP, 0) }?;
    Ok(whole)
}

/// A worker's loop state.
struct Worker<'r> {
    submitter: Submitter<'r>,
    sq: SubmissionQueue<'r>,
    /// The receive buffers.
    bufs: BufRing,
    /// The worker's own listening socket.
    listener: RawFd,
    /// Connections by descriptor.
    conns: Vec<Conn>,
}

impl Worker<'_> {
    /// Queues `e`, submitting what is queued first when the queue is full.
    ///
    /// # Safety
    ///
    /// Memory `e` points to stays valid until its completion.
    unsafe fn push(&mut self, e: Entry) -> io::Result<()> {
        // SAFETY: the caller's promise.
        while unsafe { self.sq.push(&e) }.is_err() {
            self.sq.sync();
            self.submitter.submit()?;
            self.sq.sync();
        }
        Ok(())
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        // SAFETY: refers to no memory.
        unsafe { self.push(sqe::accept(self.listener)) }
    }

    fn arm_recv(&mut self, fd: RawFd) -> io::Result<()> {
        let c = &mut self.conns[fd as usize];
        c.recv = true;
        let e = sqe::recv(fd, c.gen);
        // SAFETY: the buffers it fills are the provided ones, never unmapped.
        unsafe { self.push(e) }
    }

    /// Sends what `fd` owes unless a send is already in the kernel; closes
    /// the connection when nothing is owed and it is done.
    fn flush(&mut self, fd: RawFd) -> io::Result<()> {
        let c = &mut self.conns[fd as usize];
        if c.sending || !c.open {
            return Ok(());
        }
        if c.owed.is_empty() {
            if c.gone || c.owed.closing() {
                return self.close(fd);
            }
            return Ok(());
        }
        let (bytes, last) = c.owed.next();
        c.sending = true;
        let e = sqe::send(fd, c.gen, bytes, last);
        // SAFETY: `bytes` is static.
        unsafe { self.push(e) }
    }

    /// Closes `fd` through the ring, cancelling its receive in the same
    /// submission. Its slot is reused at the next accept of the descriptor.
    fn close(&mut self, fd: RawFd) -> io::Result<()> {
        let c = &mut self.conns[fd as usize];
        c.open = false;
        let (recv, gen) = (c.recv, c.gen);
        if recv {
            // SAFETY: refers to no memory.
            unsafe { self.push(sqe::cancel_recv(fd, gen)) }?;
        }
        // SAFETY: refers to no memory.
        unsafe { self.push(sqe::close(fd, gen)) }
    }

    fn complete(&mut self, cqe: cqueue::Entry) -> io::Result<()> {
        let (op, fd, gen) = untoken(cqe.user_data());
        let (res, flags) = (cqe.result(), cqe.flags());
        match op {
            Some(Op::Accept) => {
                if res >= 0 {
                    let fd = res;
                    if self.conns.len() <= fd as usize {
                        self.conns.resize_with(fd as usize + 1, Conn::default);
                    }
                    let c = &mut self.conns[fd as usize];
                    *c = Conn { gen: c.gen.wrapping_add(1), open: true, ..Conn::default() };
                    self.arm_recv(fd)?;
                }
                // Ended (an error such as EMFILE, or the kernel's choice):
                // armed again at once; the floor has no back-off.
                if !cqueue::more(flags) {
                    self.arm_accept()?;
                }
            }
            Some(Op::Recv) => self.received(fd, gen, res, flags)?,
            Some(Op::Send) => {
                let c = &mut self.conns[fd as usize];
                c.sending = false;
                if res > 0 {
                    c.owed.sent(res as usize);
                } else {
                    c.gone = true;
                    c.owed = Owed::default();
                }
                self.flush(fd)?;
            }
            // Nothing to do: the slot was given up when the close went in.
            Some(Op::Close) | None => {}
        }
        Ok(())
    }

    fn received(&mut self, fd: RawFd, gen: u32, res: i32, flags: u32) -> io::Result<()> {
        let more = cqueue::more(flags);
        let c = &mut self.conns[fd as usize];
        let current = c.gen == gen && c.open;
        if let Some(bid) = cqueue::buffer_select(flags) {
            let len = res.max(0) as usize;
            // SAFETY: this completion delivered these bytes, once.
            let bytes = unsafe { self.bufs.received(bid, len, cqueue::buffer_more(flags)) };
            if current && res > 0 {
                let count = c.heads.count(bytes);
                c.owed.add(&count);
            }
        }
        if !current {
            return Ok(());
        }
        if !more {
            c.recv = false;
        }
        match res {
            // Out of buffers (they are back by the next enter) or a
            // multishot the kernel ended: armed again.
            r if (r > 0 || r == -libc::ENOBUFS) && !more => {
                if !c.owed.closing() {
                    self.arm_recv(fd)?;
                }
            }
            r if r > 0 => {}
            // End of input or an error: the peer is gone.
            _ => c.gone = true,
        }
        self.flush(fd)
    }
}

fn worker(id: usize, listener: TcpListener) -> io::Result<()> {
    let mut ring = build_ring()?;
    let bufs = register_bufs(&ring)?;
    let (mut submitter, sq, mut cq) = ring.split();
    submitter.register_ring_fd()?;
    let mut w = Worker { submitter, sq, bufs, listener: listener.as_raw_fd(), conns: Vec::new() };
    w.arm_accept()?;
    ready(NAME, id);
    loop {
        w.bufs.publish();
        w.sq.sync();
        match w.submitter.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        w.sq.sync();
        cq.sync();
        for cqe in &mut cq {
            w.complete(cqe)?;
        }
    }
}

fn main() {
    let a = args(NAME);
    // Built before forking, so that no worker builds it mid-measurement.
    let _ = floor::answers();
    floor::run_processes(NAME, a.listen, a.workers, worker)
}
