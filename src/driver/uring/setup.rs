//! Building a worker's ring: the fastest setup flags the kernel accepts,
//! a probe of every opcode the loop submits, the provided-buffer ring, and
//! a live check that multishot receive with provided buffers works, so
//! that `auto` falls back to epoll at start and never mid-flight.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::cqueue;
use io_uring::opcode;
use io_uring::types::{self, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe};

use super::bufring::BufRing;
use super::token::{Op, Token};
use crate::config::Config;
use crate::driver::slab::Key;
use crate::sys::kernel_release;

/// Submission queue entries. Sends and recv re-arms of one turn rarely
/// exceed it; when they do, the queue is flushed mid-turn.
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries: large, so that a burst of multishot
/// completions does not overflow into the kernel's slower backlog list.
const CQ_ENTRIES: u32 = 4 * SQ_ENTRIES;
/// Receive buffers consumed whole (kernels before 6.12): a power of two,
/// at most 32768. Buffers go back to the ring as soon as a completion is
/// parsed, so the count bounds how many receives can complete between two
/// turns, not how many connections can be open.
const WHOLE_BUF_COUNT: u16 = 4096;
/// Size of one buffer consumed whole. Small requests touch only its first
/// page; large bodies arrive in fewer completions than with 4 KiB.
const WHOLE_BUF_SIZE: usize = 8 * 1024;
/// Receive buffers consumed incrementally: each completion takes only the
/// bytes it received, so these bound the bytes that can arrive between two
/// loop turns (2 MiB; beyond it a receive ends with `ENOBUFS` and is armed
/// again on the next turn), and the memory the worker ever touches for
/// receiving, whatever the number of connections or requests.
const INC_BUF_COUNT: u16 = 256;
/// Size of one buffer consumed incrementally. A completion takes at most
/// one buffer (what is left of the one at the ring's head), and the kernel
/// completes at most 32 receives of one connection in a row, so this also
/// bounds what one connection can deliver in a turn (256 KiB), for
/// example while its handler has paused its body.
const INC_BUF_SIZE: usize = 8 * 1024;
/// `IOU_PBUF_RING_INC` (not exported by the `io-uring` crate).
const IOU_PBUF_RING_INC: u16 = 2;
/// The buffer group of the receive buffers.
pub(super) const BUF_GROUP: u16 = 0;

/// An io_uring instance with its provided-buffer ring, built and checked in
/// the worker process.
pub(crate) struct Ring {
    /// The ring. Declared before `bufs`: it must be torn down before the
    /// buffer memory it writes into is unmapped.
    pub(super) uring: IoUring,
    /// The receive buffers registered as group [`BUF_GROUP`].
    pub(super) bufs: BufRing,
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
    what: String,
    /// The kernel that step needs ("" where no version is at stake). The
    /// loop as a whole needs Linux 6.0 (multishot receive into a
    /// provided-buffer ring came last; the README lists each feature).
    needs: &'static str,
    /// The error the kernel returned.
    source: io::Error,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)?;
        if self.needs.is_empty() {
            return Ok(());
        }
        write!(f, " (needs {}; this kernel is {}", self.needs, kernel_release())?;
        if matches!(self.source.raw_os_error(), Some(libc::EPERM)) {
            // A recent kernel refuses too where the administrator said so.
            f.write_str(", and io_uring may be turned off by sysctl kernel.io_uring_disabled or a seccomp filter")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn setup_error(what: impl Into<String>, needs: &'static str, source: io::Error) -> io::Error {
    io::Error::new(source.kind(), SetupError { what: what.into(), needs, source })
}

pub(super) fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Builds the worker's ring: the fastest setup flags the kernel accepts,
/// then the provided-buffer ring, then a check that multishot receive works.
pub(crate) fn setup(_config: &Config) -> io::Result<Ring> {
    let (uring, flags) = build_ring()?;
    check_opcodes(&uring)?;
    let bufs = register_bufs(&uring)?;
    let mut ring = Ring { uring, bufs, flags };
    probe_multishot_recv(&mut ring)
        .map_err(|e| setup_error("multishot recv with provided buffers", "Linux 6.0 or newer", e))?;
    Ok(ring)
}

/// Registers the receive buffers as group [`BUF_GROUP`]: consumed
/// incrementally where the kernel accepts it, whole otherwise.
fn register_bufs(uring: &IoUring) -> io::Result<BufRing> {
    let mut inc = BufRing::new(INC_BUF_COUNT, INC_BUF_SIZE).map_err(|e| setup_error("receive buffers", "", e))?;
    // SAFETY: the buffer ring's memory stays mapped until the `BufRing`
    // drops, and `Ring` drops `uring` first; a ring the kernel refused is
    // dropped without ever having been shared.
    match unsafe {
        uring.submitter().register_buf_ring_with_flags(inc.ring_addr(), inc.count, BUF_GROUP, IOU_PBUF_RING_INC)
    } {
        Ok(()) => {
            inc.incremental = true;
            return Ok(inc);
        }
        // Kernels before 6.12 do not know the flag.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => drop(inc),
        Err(e) => return Err(setup_error("register provided-buffer ring", "Linux 5.19 or newer", e)),
    }
    let whole = BufRing::new(WHOLE_BUF_COUNT, WHOLE_BUF_SIZE).map_err(|e| setup_error("receive buffers", "", e))?;
    // SAFETY: as above.
    unsafe { uring.submitter().register_buf_ring_with_flags(whole.ring_addr(), whole.count, BUF_GROUP, 0) }
        .map_err(|e| setup_error("register provided-buffer ring", "Linux 5.19 or newer", e))?;
    Ok(whole)
}

/// Tries the setup flags from fastest to plainest; returns the ring and the
/// flags that worked, or the last error.
fn build_ring() -> io::Result<(IoUring, &'static str)> {
    // `taskrun_flag` has the kernel say in the ring when completions wait
    // as task work. With `defer_taskrun` that work runs only in an enter
    // that asks for events, and a turn that must not block (a message from
    // the master already waiting) submits without asking unless the flag
    // says so: without it, a steady flow of messages kept every socket's
    // completions waiting until the inbox ran dry.
    const TIERS: [&str; 3] = [
        "single_issuer+defer_taskrun+coop_taskrun+taskrun_flag+submit_all",
        "coop_taskrun+taskrun_flag+submit_all",
        "plain",
    ];
    let mut last = None;
    for (tier, name) in TIERS.into_iter().enumerate() {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(CQ_ENTRIES);
        match tier {
            0 => {
                builder
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_coop_taskrun()
                    .setup_taskrun_flag()
                    .setup_submit_all();
            }
            1 => {
                builder.setup_coop_taskrun().setup_taskrun_flag().setup_submit_all();
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
    Err(setup_error(
        "io_uring_setup",
        "Linux 6.0 or newer for the io_uring backend",
        last.unwrap_or_else(|| errno(libc::ENOSYS)),
    ))
}

/// Checks that the kernel knows every opcode the loop submits, and names
/// those it lacks with the kernel that brought them.
fn check_opcodes(uring: &IoUring) -> io::Result<()> {
    let mut probe = Probe::new();
    uring
        .submitter()
        .register_probe(&mut probe)
        .map_err(|e| setup_error("probe opcodes (IORING_REGISTER_PROBE)", "Linux 5.6 or newer", e))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT", "5.5"),
        (opcode::RecvMulti::CODE, "IORING_OP_RECV", "5.6"),
        (opcode::Send::CODE, "IORING_OP_SEND", "5.6"),
        (opcode::Close::CODE, "IORING_OP_CLOSE", "5.6"),
        (opcode::Splice::CODE, "IORING_OP_SPLICE", "5.7"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL", "5.5"),
        (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD", "5.1"),
        (opcode::Timeout::CODE, "IORING_OP_TIMEOUT", "5.4"),
    ];
    let missing: Vec<String> = needed
        .iter()
        .filter(|(op, _, _)| !probe.is_supported(*op))
        .map(|(_, name, since)| format!("{name} (Linux {since})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(setup_error(
            format!("opcodes missing: {}", missing.join(", ")),
            "Linux 5.7 or newer",
            errno(libc::EOPNOTSUPP),
        ))
    }
}

/// Runs one multishot recv with a provided buffer on a socket pair: the
/// probe opcode list cannot tell whether multishot and buffer selection are
/// supported (Linux 6.0), and the loop must not discover it mid-flight.
/// Multishot accept (5.19) is older, so it is implied.
fn probe_multishot_recv(ring: &mut Ring) -> io::Result<()> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, peer) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
    nix::unistd::write(&peer, b"x")?;

    let recv_token = Token::new(Op::Probe, Key::new(0, 0)).0;
    let cancel_token = Token::new(Op::Probe, Key::new(1, 0)).0;
    let recv = opcode::RecvMulti::new(types::Fd(ours.as_raw_fd()), BUF_GROUP).build().user_data(recv_token);
    // SAFETY: the recv writes only into provided buffers, which stay mapped
    // as long as the ring; `ours` stays open until the recv has ended below.
    unsafe { ring.uring.submission().push(&recv) }.map_err(|_| errno(libc::EBUSY))?;

    let first = wait_for(&mut ring.uring, |c| c.user_data() == recv_token)?;
    if let Some(bid) = cqueue::buffer_select(first.flags()) {
        // SAFETY: this completion's own buffer, length and flag.
        let _ = unsafe { ring.bufs.received(bid, first.result().max(0) as usize, cqueue::buffer_more(first.flags())) };
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
                // SAFETY: this completion's own buffer, length and flag.
                let _ = unsafe { ring.bufs.received(bid, c.result().max(0) as usize, cqueue::buffer_more(c.flags())) };
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
            "{}, sq {} cq {}, {} x {} KiB receive buffers consumed {}",
            self.flags,
            p.sq_entries(),
            p.cq_entries(),
            self.bufs.count,
            self.bufs.size / 1024,
            if self.bufs.incremental { "incrementally" } else { "whole" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_feature_the_kernel_it_needs_and_this_kernel() {
        let e = setup_error("multishot recv with provided buffers", "Linux 6.0 or newer", errno(libc::EOPNOTSUPP));
        assert!(is_refusal(&e));
        let text = e.to_string();
        assert!(text.starts_with("multishot recv with provided buffers: "), "{text}");
        assert!(text.contains(&format!("(needs Linux 6.0 or newer; this kernel is {})", kernel_release())), "{text}");
        let e = setup_error("io_uring_setup", "Linux 6.0 or newer for the io_uring backend", errno(libc::EPERM));
        assert!(is_refusal(&e));
        assert!(e.to_string().contains("kernel.io_uring_disabled"), "{e}");
        let e = setup_error("receive buffers", "", errno(libc::ENOMEM));
        assert_eq!(e.to_string(), format!("receive buffers: {}", errno(libc::ENOMEM)));
    }
}
