//! The entries the loop submits, each built in one place: its opcode, its
//! flags and the [`Token`] in its user data. Building an entry is safe;
//! the promise about the memory it points to is made where it is pushed
//! ([`super::submit::Io::push`]).

use std::os::fd::RawFd;
use std::ptr;

use io_uring::opcode;
use io_uring::squeue::{Entry, Flags};
use io_uring::types::{Fd, Timespec};

use super::setup::BUF_GROUP;
use super::token::{Op, Token};
use crate::driver::slab::Key;

/// A connection's multishot recv, drawing from the provided buffers.
#[inline]
pub(super) fn recv(fd: RawFd, key: Key) -> Entry {
    opcode::RecvMulti::new(Fd(fd), BUF_GROUP).build().user_data(Token::new(Op::Recv, key).0)
}

/// A send of `bytes` (at most 4 GiB of them) on a connection, never
/// raising `SIGPIPE`; with `more`, the kernel holds the last bytes back
/// (`MSG_MORE`) for what follows them.
#[inline]
pub(super) fn send(fd: RawFd, bytes: &[u8], more: bool, key: Key) -> Entry {
    opcode::Send::new(Fd(fd), bytes.as_ptr(), bytes.len().min(u32::MAX as usize) as u32)
        .flags(libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 })
        .build()
        .user_data(Token::new(Op::Send, key).0)
}

/// A splice of `len` bytes of `file` from `offset` into a pipe's write
/// end.
#[inline]
pub(super) fn splice_in(file: RawFd, offset: u64, pipe: RawFd, len: u32, key: Key) -> Entry {
    opcode::Splice::new(Fd(file), offset as i64, Fd(pipe), -1, len).build().user_data(Token::new(Op::SpliceIn, key).0)
}

/// A poll for room in a connection's socket, linked to the entry pushed
/// after it (a [`splice_out`]), which runs only once the poll fires.
#[inline]
pub(super) fn poll_out(fd: RawFd, key: Key) -> Entry {
    opcode::PollAdd::new(Fd(fd), libc::POLLOUT as u32)
        .build()
        .flags(Flags::IO_LINK)
        .user_data(Token::new(Op::PollOut, key).0)
}

/// A splice of `len` bytes from a pipe's read end into a connection's
/// socket.
#[inline]
pub(super) fn splice_out(pipe: RawFd, fd: RawFd, len: u32, key: Key) -> Entry {
    opcode::Splice::new(Fd(pipe), -1, Fd(fd), -1, len).build().user_data(Token::new(Op::SpliceOut, key).0)
}

/// A close of a connection's socket.
#[inline]
pub(super) fn close(fd: RawFd, key: Key) -> Entry {
    opcode::Close::new(Fd(fd)).build().user_data(Token::new(Op::Close, key).0)
}

/// An accept of close-on-exec connections on listener `index` (`listener`)
/// that asks for no peer address: multishot, or one connection only.
#[inline]
pub(super) fn accept(listener: RawFd, index: usize, multishot: bool) -> Entry {
    let entry = if multishot {
        opcode::AcceptMulti::new(Fd(listener)).flags(libc::SOCK_CLOEXEC).build()
    } else {
        opcode::Accept::new(Fd(listener), ptr::null_mut(), ptr::null_mut()).flags(libc::SOCK_CLOEXEC).build()
    };
    entry.user_data(Token::accept(index).0)
}

/// A multishot poll for input on one of the loop's eventfds, as `op`.
#[inline]
pub(super) fn poll_in(fd: RawFd, op: Op) -> Entry {
    opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32).multi(true).build().user_data(Token::of(op).0)
}

/// The loop's timeout, lasting what `ts` holds when the kernel takes the
/// submission.
#[inline]
pub(super) fn timeout(ts: &Timespec) -> Entry {
    opcode::Timeout::new(ts as *const Timespec).build().user_data(Token::of(Op::Timer).0)
}

/// A cancel of the operation submitted as `target`, posting no completion
/// when it succeeds.
#[inline]
pub(super) fn cancel(target: Token) -> Entry {
    opcode::AsyncCancel::new(target.0).build().flags(Flags::SKIP_SUCCESS).user_data(target.with_op(Op::Cancel).0)
}
