//! The ring's unit tests: the protocol in one thread, against an oracle
//! that tracks positions the simple way, and with hostile peers.

use super::format::{frame_len, HEADER, MSG, PAD};
use super::*;
use std::collections::VecDeque;

fn ring(cap: usize, max: usize) -> (Producer, Consumer) {
    let r = Ring::new(RingOptions { capacity: cap, max_message: max }).unwrap();
    (r.producer().unwrap(), r.consumer().unwrap())
}

/// xorshift64: a seeded stream of pseudo-random numbers.
fn rng(mut s: u64) -> impl FnMut() -> u64 {
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i * 7) as u8).collect()
}

#[test]
fn impossible_head_from_a_hostile_consumer_marks_the_ring_corrupt() {
    // A consumer in another process writes `head`: one past the tail,
    // or more than a ring behind it, is corruption, never arithmetic
    // that overflows.
    for head in [u64::MAX, 1 << 40, 4096] {
        let (mut p, _c) = ring(256, 64);
        // Fill until the producer must look at `head`.
        while p.try_send(&[1; 40]).is_ok() {}
        p.ring().header().head.0.store(head, Ordering::Release);
        assert_eq!(p.try_send(&[2; 40]), Err(SendError::Closed), "head {head}");
        assert!(p.is_corrupt());
        assert_eq!(p.free_bytes(), 0);
        assert_eq!(p.try_send(b"x"), Err(SendError::Closed));
    }
}

#[test]
fn a_reset_or_garbage_under_the_consumer_breaks_it_for_good() {
    let (mut p, mut c) = ring(256, 64);
    p.try_send(b"one").unwrap();
    assert!(!c.is_broken());
    // A hostile producer bumps the generation.
    let ctrl = &c.ring().header().meta.0.ctrl;
    ctrl.store(ctrl.load(Ordering::Relaxed) + 2, Ordering::Relaxed);
    assert!(c.is_broken());
    assert_eq!(c.recv_owned(10, |_| panic!("read from a reset ring")), Err(RecvError::Reset));
    let (_p, mut c) = ring(256, 64);
    c.ring().buf.header(0).store(MSG | 10_000, Ordering::Release);
    assert!(matches!(c.recv_owned(10, |_| panic!("delivered a corrupt frame")), Err(RecvError::Corrupt { .. })));
    assert!(c.is_broken());
}

#[test]
fn owned_messages_are_copies() {
    let (mut p, mut c) = ring(256, 64);
    p.try_send(b"hello").unwrap();
    p.try_send(b"world").unwrap();
    let mut got = Vec::new();
    assert_eq!(c.recv_owned(1, |m| got.push(m)).unwrap(), 1);
    assert_eq!(c.recv_owned(10, |m| got.push(m)).unwrap(), 1);
    assert_eq!(got, [b"hello".to_vec(), b"world".to_vec()]);
}

#[test]
fn a_batch_is_copied_into_one_buffer_with_its_ends() {
    let (mut p, mut c) = ring(256, 64);
    for m in [&b"one"[..], b"", b"three"] {
        p.try_send(m).unwrap();
    }
    let (mut out, mut ends) = (b"old".to_vec(), Vec::new());
    out.clear();
    assert_eq!(c.recv_into(2, &mut out, &mut ends).unwrap(), 2);
    assert_eq!(c.recv_into(10, &mut out, &mut ends).unwrap(), 1);
    assert_eq!(out, b"onethree");
    assert_eq!(ends, [3, 3, 8]);
    assert_eq!(c.recv_into(10, &mut out, &mut ends).unwrap(), 0);
}

#[test]
fn options_are_checked() {
    assert!(RingOptions::default().validate().is_ok());
    assert!(RingOptions { capacity: 1000, max_message: 10 }.validate().is_err());
    assert!(RingOptions { capacity: 32, max_message: 0 }.validate().is_err());
    assert!(RingOptions { capacity: 1024, max_message: 512 }.validate().is_err());
    assert!(RingOptions { capacity: 1024, max_message: 496 }.validate().is_ok());
    assert_eq!(RingOptions::with_capacity(1000).capacity, 1024);
}

#[test]
fn endpoints_are_claimed_once_per_generation() {
    let r = Ring::new(RingOptions::with_capacity(4096)).unwrap();
    let _p = r.producer().unwrap();
    let _c = r.consumer().unwrap();
    assert_eq!(r.producer().unwrap_err(), ClaimError);
    assert_eq!(r.consumer().unwrap_err(), ClaimError);
    // SAFETY: the endpoints are this test's own and idle.
    unsafe { r.reset() };
    assert!(r.producer().is_ok() && r.consumer().is_ok());
}

/// Random sends and receives against an oracle that tracks positions
/// the simple way (a queue of frames with the padding before each):
/// order, contents, and `Full` exactly when the frame does not fit.
#[test]
fn oracle_random_ops() {
    for seed in 1..40u64 {
        let cap = 256 << (seed % 4);
        let max = RingOptions::largest_message(cap);
        let (mut p, mut c) = ring(cap, max);
        let mut next = rng(seed * 0x9e37_79b9);
        // (message, padding before it)
        let mut oracle: VecDeque<(Vec<u8>, usize)> = VecDeque::new();
        let (mut tail, mut head) = (0usize, 0usize);
        let mut seq = 0u64;
        for _ in 0..5000 {
            if next() % 3 != 0 {
                let len = (next() % (max as u64 + 1)) as usize;
                let msg = payload(seq, len);
                let off = tail % cap;
                let pad = if off + frame_len(len) > cap { cap - off } else { 0 };
                let fits = tail + pad + frame_len(len) + HEADER - head <= cap;
                match p.try_send(&msg) {
                    Ok(()) => {
                        assert!(fits, "seed {seed}: overfilled");
                        tail += pad + frame_len(len);
                        oracle.push_back((msg, pad));
                        seq += 1;
                    }
                    Err(SendError::Full) => assert!(!fits, "seed {seed}: spurious Full"),
                    Err(e) => panic!("seed {seed}: {e}"),
                }
            } else {
                let want = (next() % 4) as usize;
                let got = c
                    .recv_up_to(want, |m| {
                        let (msg, pad) = oracle.pop_front().unwrap();
                        assert_eq!(m, msg.as_slice());
                        head += pad + frame_len(msg.len());
                    })
                    .unwrap();
                assert!(got <= want);
                if got < want {
                    assert!(oracle.is_empty(), "seed {seed}: message missing");
                }
            }
        }
        c.recv_batch(|m| assert_eq!(m, oracle.pop_front().unwrap().0.as_slice())).unwrap();
        assert!(oracle.is_empty());
        assert!(c.is_empty());
    }
}

#[test]
fn full_then_drain_and_limits() {
    let (mut p, mut c) = ring(1024, 496);
    let msg = [7u8; 100];
    let mut sent = 0;
    while p.try_send(&msg).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, (1024 - 8) / frame_len(100));
    assert_eq!(p.try_send(&msg), Err(SendError::Full));
    assert_eq!(p.try_send(&[0; 497]), Err(SendError::TooLarge));
    let mut buf = Vec::new();
    assert!(c.try_recv(&mut buf).unwrap());
    assert_eq!(buf, msg);
    // The tail is 16 bytes from the end: the next frame needs those as
    // padding, itself, and the next header: one released frame is not
    // enough, two are.
    assert_eq!(p.try_send(&msg), Err(SendError::Full));
    assert!(c.try_recv(&mut buf).unwrap());
    p.try_send(&msg).unwrap();
    assert_eq!(c.recv_batch(|m| assert_eq!(m, msg)).unwrap(), sent - 1);
    assert!(!c.try_recv(&mut buf).unwrap());
    // An empty ring takes the largest message wherever its tail is.
    for _ in 0..20 {
        p.try_send(&[1; 496]).unwrap();
        p.try_send(&[2; 3]).unwrap();
        assert_eq!(c.recv_batch(|_| ()).unwrap(), 2);
    }
}

#[test]
fn in_place_and_empty_messages() {
    let (mut p, mut c) = ring(4096, 1000);
    p.try_send_with(5, |b| b.copy_from_slice(b"hello")).unwrap();
    p.try_send(b"").unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.try_send_with(3, |_| panic!("boom")).unwrap();
    }));
    assert!(r.is_err());
    let mut got = Vec::new();
    c.recv_batch(|m| got.push(m.to_vec())).unwrap();
    assert_eq!(got, vec![b"hello".to_vec(), vec![]]);
}

#[test]
fn close_and_reset() {
    let r = Ring::new(RingOptions::with_capacity(4096)).unwrap();
    let (mut p, mut c) = (r.producer().unwrap(), r.consumer().unwrap());
    p.try_send(b"a").unwrap();
    r.close();
    assert_eq!(p.try_send(b"b"), Err(SendError::Closed));
    assert_eq!(c.recv_batch(|m| assert_eq!(m, b"a")).unwrap(), 1);
    p.try_send(b"lost on reset").ok();
    // SAFETY: the endpoints are this test's own and idle.
    unsafe { r.reset() };
    assert_eq!(r.generation(), 1);
    assert_eq!(p.try_send(b"c"), Err(SendError::Closed));
    assert_eq!(c.recv_batch(|_| ()), Err(RecvError::Reset));
    let (mut p, mut c) = (r.producer().unwrap(), r.consumer().unwrap());
    p.try_send(b"d").unwrap();
    assert_eq!(c.recv_batch(|m| assert_eq!(m, b"d")).unwrap(), 1);
}

#[test]
fn corrupt_frames_poison_the_consumer() {
    let r = Ring::new(RingOptions::with_capacity(4096)).unwrap();
    let mut c = r.consumer().unwrap();
    r.buf.header(0).store(MSG | 5000, Ordering::Release);
    let e = c.recv_batch(|_| panic!("delivered a corrupt frame")).unwrap_err();
    assert_eq!(e, RecvError::Corrupt { position: 0, header: MSG | 5000 });
    assert_eq!(c.recv_batch(|_| ()), Err(e));
    r.buf.header(0).store(PAD | 8, Ordering::Release);
    let mut c2 = {
        // SAFETY: the endpoints are this test's own and idle.
        unsafe { r.reset() };
        r.buf.header(0).store(PAD | 8, Ordering::Release);
        r.consumer().unwrap()
    };
    assert!(matches!(c2.recv_batch(|_| ()), Err(RecvError::Corrupt { .. })));
}

#[test]
fn wake_protocol_single_thread() {
    let (mut p, mut c) = ring(4096, 100);
    assert!(!p.should_wake(), "nothing sent");
    assert!(c.prepare_sleep(), "empty ring");
    p.try_send(b"x").unwrap();
    assert!(p.should_wake());
    p.try_send(b"y").unwrap();
    assert!(!p.should_wake(), "one wake-up per sleep");
    c.after_wake();
    assert!(!c.prepare_sleep(), "messages are waiting");
    p.try_send(b"z").unwrap();
    assert!(!p.should_wake(), "consumer is awake");
    assert_eq!(c.recv_batch(|_| ()).unwrap(), 3);
    // Every sleep gets its own wake-up, even without `after_wake`.
    assert!(c.prepare_sleep());
    assert!(c.prepare_sleep());
    p.try_send(b"w").unwrap();
    assert!(p.should_wake());
    assert!(!c.prepare_sleep());
    p.try_send(b"v").unwrap();
    assert!(!p.should_wake(), "consumer is awake");
}
