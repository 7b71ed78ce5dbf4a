//! Master↔worker messaging through shared memory, and per-worker counters.
//!
//! What this module is for: moving byte messages between the master and one
//! worker process without a system call per message, with honest
//! backpressure, and without letting a worker that dies mid-write show the
//! other side a torn message. It knows nothing of HTTP or of the cluster's
//! slot table; the master decides when to reset a slot's [`Channel`] and
//! which worker a message is for.
//!
//! Pieces, bottom up:
//!
//! - [`Shm`]: one `MAP_SHARED` mapping (a sealed memfd, so it can also be
//!   handed to a re-executed worker), made by the master before it forks;
//!   [`Layout`] places regions in it.
//! - [`Ring`]: a single-producer single-consumer ring of byte messages in a
//!   region of a mapping, used through one [`Producer`] and one [`Consumer`].
//!   The frame's length word, written last, is the commit; the consumer
//!   publishes its `head` once per batch; a full ring answers
//!   [`SendError::Full`] at once.
//! - [`WakeFd`]: the eventfd a consumer sleeps on. The producer writes it
//!   only when the consumer said it is going to sleep (an odd number in the
//!   ring's `waiting` word), once per sleep, so a busy consumer costs the
//!   producer no system call.
//! - [`Channel`]: a slot's two rings (master→worker, worker→master), their
//!   two eventfds and the slot's [`Counters`], all in one mapping; the master
//!   holds the [`MasterEnd`], the forked worker takes the [`WorkerEnd`].
//! - [`Counters`]: per-worker totals the worker bumps without system calls
//!   and the master reads at any time as a [`Snapshot`].
//!
//! # Fork and threads
//!
//! Everything here is made in the master before it forks, and the child
//! inherits a copy of every object. Objects of this module have no side
//! effects when dropped beyond unmapping and closing in the process that
//! drops them, so a child may drop what it inherited. A child must not *use*
//! an inherited [`MasterEnd`], [`Producer`] or [`Consumer`] that the parent
//! keeps using: a ring has exactly one producer and one consumer, in any
//! processes, per generation.
//!
//! # Model checking
//!
//! The ring's index and wake-up protocols are model-checked with `loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib ipc::
//! ```
//!
//! Under `cfg(loom)` (in test builds) the ring's atomics come from `loom` and
//! its data area is modelled by cells that `loom` checks for races.

mod channel;
mod counters;
mod ring;
mod shm;
mod wake;

pub use crate::config::{ChannelOptions, RingOptions};
pub use channel::{Channel, ChannelFds, Duplex, MasterEnd, WorkerEnd};
pub use counters::{
    Counter, Counters, Histogram, SharedCounters, Snapshot, LATENCY_BOUNDS_US, LATENCY_BUCKETS, SHEDDING_LOOP,
    SHEDDING_POOL,
};
pub use ring::{ClaimError, Consumer, Producer, RecvError, Ring, SendError};
pub use shm::{page_size, Layout, Region, Shm};
pub use wake::WakeFd;

/// The atomics the ring protocol uses: `std`'s, or `loom`'s when the ring is
/// being model-checked.
mod sync {
    #[cfg(all(loom, test))]
    pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
    #[cfg(not(all(loom, test)))]
    pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
}
