//! Model checks of the ring's protocols under every interleaving `loom`
//! explores (`RUSTFLAGS="--cfg loom" cargo test --release --lib ipc::`).

use super::*;
use loom::sync::{Condvar, Mutex};
use loom::thread;

/// A ring whose header sits in a mapping made once per test process (a
/// model iteration makes fresh `loom` atomics in it; the data area is
/// modelled on the heap anyway), so iterations cost no system call.
fn pair(cap: usize, max: usize) -> (Producer, Consumer) {
    static SHM: std::sync::OnceLock<Arc<Shm>> = std::sync::OnceLock::new();
    let shm = SHM.get_or_init(|| Arc::new(Shm::anonymous(4096).unwrap())).clone();
    let opts = RingOptions { capacity: cap, max_message: max };
    // SAFETY: under loom each model run makes its rings afresh; the
    // previous run's endpoints are gone.
    let r = unsafe { Ring::init(shm, Region { offset: 0, len: opts.region_len() }, opts) }.unwrap();
    (r.producer().unwrap(), r.consumer().unwrap())
}

fn msg(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 16 + j) as u8).collect()
}

/// Index and commit protocol: in a 64-byte ring, three 24-byte frames
/// (16-byte messages, the most it takes) make the producer see `Full`,
/// then write a padding marker and wrap to offset 0. The consumer gets
/// each message whole and in order, and `loom` finds no racing access to
/// any slot.
#[test]
fn index_protocol() {
    loom::model(|| {
        let (mut p, mut c) = pair(64, 16);
        let t = thread::spawn(move || {
            for i in 0..3 {
                let m = msg(i, 16);
                loop {
                    match p.try_send(&m) {
                        Ok(()) => break,
                        Err(SendError::Full) => thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
        let mut i = 0;
        while i < 3 {
            let n = c
                .recv_batch(|m| {
                    assert_eq!(m, msg(i, 16).as_slice());
                    i += 1;
                })
                .unwrap();
            if n == 0 {
                thread::yield_now();
            }
        }
        t.join().unwrap();
        assert!(c.is_empty());
    });
}

/// Mixed sizes, including an empty message, with a wrap that pads only
/// 8 bytes.
#[test]
fn index_protocol_mixed_sizes() {
    let sizes = [0usize, 8, 16, 3];
    loom::model(move || {
        let (mut p, mut c) = pair(64, 16);
        let t = thread::spawn(move || {
            for (i, &len) in sizes.iter().enumerate() {
                while p.try_send(&msg(i, len)) == Err(SendError::Full) {
                    thread::yield_now();
                }
            }
        });
        let mut i = 0;
        while i < sizes.len() {
            let n = c
                .recv_batch(|m| {
                    assert_eq!(m, msg(i, sizes[i]).as_slice());
                    i += 1;
                })
                .unwrap();
            if n == 0 {
                thread::yield_now();
            }
        }
        t.join().unwrap();
    });
}

/// A model eventfd: a counter under a lock.
struct EventFd {
    count: Mutex<u64>,
    cv: Condvar,
}

impl EventFd {
    fn write(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_one();
    }

    fn read_blocking(&self) {
        let mut n = self.count.lock().unwrap();
        while *n == 0 {
            n = self.cv.wait(n).unwrap();
        }
        *n = 0;
    }
}

/// Wake-up protocol: the consumer sleeps whenever it finds the ring
/// empty; the producer writes the eventfd only if `should_wake`. A lost
/// wake-up leaves the consumer blocked forever, which `loom` reports as a
/// deadlock.
#[test]
fn no_lost_wakeup() {
    loom::model(|| {
        let (mut p, mut c) = pair(64, 8);
        let efd = std::sync::Arc::new(EventFd { count: Mutex::new(0), cv: Condvar::new() });
        let efd2 = efd.clone();
        let t = thread::spawn(move || {
            for i in 0..2u8 {
                p.try_send(&[i]).unwrap();
                if p.should_wake() {
                    efd2.write();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            c.recv_batch(|m| got.push(m[0])).unwrap();
            if got.len() < 2 && c.prepare_sleep() {
                efd.read_blocking();
                c.after_wake();
            }
        }
        assert_eq!(got, [0, 1]);
        t.join().unwrap();
    });
}

/// The producer's `Full` answer is honest: once the consumer has
/// released space, a retry succeeds (no message lost, none doubled).
#[test]
fn full_then_release() {
    loom::model(|| {
        let (mut p, mut c) = pair(64, 16);
        // Two 24-byte frames leave 16 bytes: a third does not fit.
        p.try_send(&[1; 16]).unwrap();
        p.try_send(&[2; 16]).unwrap();
        assert_eq!(p.try_send(&[3; 16]), Err(SendError::Full));
        let t = thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < 3 {
                if c.recv_batch(|m| seen.push(m[0])).unwrap() == 0 {
                    thread::yield_now();
                }
            }
            assert_eq!(seen, [1, 2, 3]);
        });
        while p.try_send(&[3; 16]) == Err(SendError::Full) {
            thread::yield_now();
        }
        t.join().unwrap();
    });
}
