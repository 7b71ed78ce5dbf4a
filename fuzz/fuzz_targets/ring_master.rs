//! Fuzzes the master's side of a worker's shared channel: the worker may be
//! compromised and write anything into the mapping, so the master's reads
//! (the worker→master ring's frames, the master→worker ring's `head` and
//! `waiting`, the counters) must never panic, hang, hand out a message
//! larger than the ring allows, or report anything but "corrupt" for
//! garbage.
//!
//! Input layout: one byte of options (bits 0–1: how many honest messages the
//! "worker" sends first, bit 2: garbage over the whole mapping instead of
//! the rings only), then the bytes written over the mapping (repeated to
//! cover it).
#![no_main]

use forkring::internals::ipc::{Channel, ChannelOptions, Region, RingOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&opts, garbage)) = data.split_first() else { return };
    if garbage.is_empty() {
        return;
    }
    let ring = RingOptions::with_capacity(4096);
    let max = ring.max_message;
    let mut ch = Channel::new(ChannelOptions::new(ring, ring)).expect("channel");
    let mut worker = ch.worker().expect("worker end");
    for i in 0..(opts & 3) {
        let _ = worker.send(&[i; 40]);
    }
    // The "worker" writes its garbage: over everything, or from the start
    // of the first ring on (the master's own layout words stay intact).
    let shm = ch.to_master().shm().clone();
    let start = if opts & 4 != 0 { 0 } else { 128 };
    let len = shm.len() - start;
    let base = shm.region(Region { offset: 0, len: shm.len() }).expect("region");
    for (i, b) in garbage.iter().cycle().take(len).enumerate() {
        // SAFETY: in bounds of the mapping; this process is the only one
        // touching it, and only through this loop for now.
        unsafe { base.as_ptr().add(start + i).write_volatile(*b) };
    }
    let end = ch.master();
    let mut got = 0usize;
    for _ in 0..4 {
        end.after_wake();
        match end.recv_owned(1000, |m| {
            assert!(m.len() <= max, "a message of {} bytes from a ring that allows {max}", m.len());
            got += 1;
        }) {
            Ok(_) => {}
            Err(_) => assert!(end.is_corrupt(), "an error must leave the end marked corrupt"),
        }
        let _ = end.prepare_sleep();
        let _ = end.send(b"to the worker");
    }
    // A ring of 4096 bytes holds at most 4096 / 16 frames per pass.
    assert!(got <= 4 * 4096 / 16, "{got} messages out of a 4 KiB ring");
    let _ = ch.counters().snapshot() + ch.counters().snapshot();
});
