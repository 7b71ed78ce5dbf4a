//! File bodies: a connection's file goes to its socket through a pipe, by
//! reference, never through user space: a splice from the file into the
//! pipe, then a poll for room in the socket linked to a splice from the
//! pipe into it, one step at a time. Here are the next step and what the
//! splices' completions change. Where it stops: which bytes of which file
//! come next is the protocol state's ([`crate::http::Conn::file_chunk`]);
//! when to take the next step is [`super::reconcile`]'s.

use std::io;
use std::os::fd::AsRawFd;

use super::conn::{Connection, Pipe, Splice};
use super::setup::errno;
use super::sqe;
use super::submit::Io;
use super::Driver;
use crate::driver::core::Phase;
use crate::driver::slab::Key;
use crate::http::Handler;

/// Moves a connection's file body on by one step: file to pipe when the
/// pipe is empty, else a poll for room in the socket linked to a splice of
/// the pipe into it. The pipe's capacity bounds the bytes in flight;
/// splices run in the kernel's workers, never on the loop.
pub(super) fn splice_file(io: &mut Io<'_>, key: Key, c: &mut Connection) -> io::Result<()> {
    let Some((file, offset, remaining)) = c.http.file_chunk() else { return Ok(()) };
    let file = file.as_raw_fd();
    if c.pipe.is_none() {
        c.pipe = Some(Box::new(Pipe::new()?));
    }
    let pipe = c.pipe.as_ref().expect("made above");
    if pipe.filled == 0 {
        let len = remaining.min(u64::from(pipe.capacity)) as u32;
        let splice = sqe::splice_in(file, offset, pipe.write.as_raw_fd(), len, key);
        // SAFETY: a splice refers to no user memory; the file and the
        // pipe stay open while it is in the kernel (the slot is not
        // freed while `splice` is set).
        unsafe { io.push(splice) }?;
    } else {
        // Both entries must reach the kernel in one submission for the
        // link to hold.
        io.reserve(2)?;
        let poll = sqe::poll_out(c.fd.as_raw_fd(), key);
        let splice = sqe::splice_out(pipe.read.as_raw_fd(), c.fd.as_raw_fd(), pipe.filled, key);
        // SAFETY: a poll and a splice refer to no user memory; the
        // socket and the pipe stay open while they are in the kernel.
        unsafe {
            io.push(poll)?;
            io.push(splice)?;
        }
    }
    c.splice = if pipe.filled == 0 { Splice::In } else { Splice::Out };
    Ok(())
}

impl<H: Handler> Driver<'_, '_, H> {
    /// File bytes reached the pipe: they go on to the socket next.
    pub(super) fn on_splice_in(&mut self, key: Key, res: i32) {
        let Some(c) = self.conns.get_mut(key) else { return };
        c.splice = Splice::Off;
        match res {
            n if n > 0 => {
                if let Some(p) = &mut c.pipe {
                    p.filled = n as u32;
                }
            }
            0 => {
                log::warn!("a file body ended early (the file shrank); closing the connection");
                c.http.file_failed(&mut self.core.sh);
            }
            e if e == -libc::ECANCELED => {}
            e => {
                log::warn!("splice from a file: {}; closing the connection", errno(-e));
                c.http.file_failed(&mut self.core.sh);
                self.close(key);
                return;
            }
        }
        self.mark(key);
    }

    /// Piped file bytes reached the socket.
    pub(super) fn on_splice_out(&mut self, key: Key, res: i32) {
        let Some(c) = self.conns.get_mut(key) else { return };
        c.splice = Splice::Off;
        if res > 0 {
            if let Some(p) = &mut c.pipe {
                p.filled = p.filled.saturating_sub(res as u32);
            }
            self.core.sh.count_bytes(0, res as usize);
            c.http.file_sent(res as u64, &mut self.core.sh);
            self.mark(key);
            return;
        }
        if res == -libc::EAGAIN || res == -libc::EINTR {
            self.mark(key);
            return;
        }
        if res != -libc::ECANCELED || c.phase == Phase::Open {
            log::debug!("splice to a socket: {}", errno(-res));
        }
        // Marked first: a connection already closing (its client reset it
        // while this splice waited for room) is freed by the reconcile
        // now that nothing of it is in the kernel; `close` alone would
        // leave it, and its socket, to nobody.
        self.mark(key);
        self.close(key);
    }
}
