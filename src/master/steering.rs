//! Scaling down without a reset in reuseport mode.
//!
//! Each slot has its own socket in one `SO_REUSEPORT` group per TCP address
//! served (each group steered on its own, by the same rule). When a slot
//! leaves (scale down), its sockets must stop receiving new handshakes
//! before anything closes it: a handshake still in flight on a socket when
//! its last descriptor closes is reset by the kernel. So the master, which
//! holds every slot's socket, keeps a program on the group
//! ([`crate::listen::steer`]) that picks among the sockets of the slots
//! that stay. A slot leaves in three steps:
//!
//! ```text
//!   TTOU ─► the program leaves the slot's socket out; its worker serves on
//!      ─► STEER_GRACE later: the master drops its copy and drains the
//!         worker, which accepts what is queued and closes its copy
//!      ─► the worker is reaped: the socket has left the group, whose
//!         positions shift, and the program is written again
//! ```
//!
//! During the grace the worker accepts the handshakes that were already in
//! flight on its socket when the program changed. Where
//! `net.ipv4.tcp_migrate_req` is on, the kernel moves a closing socket's
//! connections to the others itself and no program is attached. Where the
//! program cannot be attached, the start-up log says so once, and
//! `--balance shared` (one socket, no group) is the alternative.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::config::ListenAddr;
use crate::listen::steer::{self, Group};

use super::Master;

/// How long a departing slot's worker keeps serving after the program left
/// its socket out: handshakes under way on it then complete within a
/// round trip, so this covers round trips up to a quarter of a second.
pub(super) const STEER_GRACE: Duration = Duration::from_millis(250);

/// The group of the slots' own sockets on one address, when the master
/// steers it.
#[derive(Debug)]
pub(super) struct Steering {
    /// Slot indices in the kernel's order of the group.
    group: Group,
}

impl Steering {
    /// Steering for the sockets on `addr` the master bound itself (or
    /// took from the master it replaces), in slot order, or `None` (said
    /// once in the log) where the kernel migrates requests itself or
    /// refuses the program.
    pub(super) fn start(addr: &ListenAddr, sockets: &[impl AsFd]) -> Option<Steering> {
        if steer::migration_on() {
            log::info!(
                "reuseport: net.ipv4.tcp_migrate_req is on, so a departing worker's queued connections move to the others"
            );
            return None;
        }
        let positions: Vec<u32> = (0..sockets.len() as u32).collect();
        if sockets.len() > steer::MAX_POSITIONS {
            log::warn!("reuseport: {} sockets on {addr} are too many to steer; scaling down may reset handshakes in flight (--balance shared avoids it)", sockets.len());
            return None;
        }
        match sockets.first().map(|s| steer::attach(s.as_fd(), &positions)) {
            Some(Ok(())) => {
                log::info!(
                    "reuseport: steering new connections on {addr} among the live workers (a scale-down drains without resets)"
                );
                Some(Steering { group: Group::new(0..sockets.len()) })
            }
            Some(Err(e)) => {
                log::warn!("reuseport: cannot attach a steering program on {addr} ({e}); scaling down may reset handshakes in flight (--balance shared avoids it)");
                None
            }
            None => None,
        }
    }
}

impl Master<'_> {
    /// Writes each steered group's program again: every slot's socket but
    /// those of slots being removed.
    fn steer(&mut self) {
        for k in 0..self.listeners.len() {
            let Some(st) = &self.listeners[k].steering else { continue };
            let positions = st.group.positions(|s| self.slots.get(s).is_some_and(|s| !s.removing));
            // Any socket of the group will do; a live slot's is held here.
            let socket =
                self.slots.iter().filter(|s| !s.removing).find_map(|s| s.listeners.get(k).and_then(Option::as_ref));
            let Some(socket) = socket else { continue };
            if positions.is_empty() {
                continue;
            }
            if let Err(e) = steer::attach(socket.as_fd(), &positions) {
                log::warn!("reuseport: steering program on {}: {e}", self.listeners[k].addr);
            }
        }
    }

    /// A new slot's sockets joined their groups (at their ends).
    pub(super) fn steer_joined(&mut self, slot: usize) {
        for l in &mut self.listeners {
            if let Some(st) = &mut l.steering {
                st.group.joined(slot);
            }
        }
        self.steer();
    }

    /// Slot `slot` is leaving: new connections go to the others from now.
    /// Returns when its worker is to be drained: at once when nothing is
    /// steered, after [`STEER_GRACE`] otherwise.
    pub(super) fn steer_away(&mut self, slot: usize, now: Instant) -> Instant {
        debug_assert!(self.slots[slot].removing);
        if self.listeners.iter().all(|l| l.steering.is_none()) {
            return now;
        }
        self.steer();
        now + STEER_GRACE
    }

    /// Slot `slot`'s sockets have left their groups (their last
    /// descriptors closed): the positions after them shift.
    pub(super) fn steer_left(&mut self, slot: usize) {
        for l in &mut self.listeners {
            if let Some(st) = &mut l.steering {
                st.group.left(slot);
            }
        }
        self.steer();
    }
}
