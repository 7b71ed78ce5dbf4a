//! Steering a reuseport group: which of its sockets takes each new
//! connection.
//!
//! Without a program the kernel hashes each new handshake over every
//! socket of a `SO_REUSEPORT` group, including one whose worker is about
//! to close it; a handshake still in flight on a socket when it closes is
//! reset (unless `net.ipv4.tcp_migrate_req` is on). With the classic BPF
//! program of [`attach`], the group picks among the sockets that stay
//! only, so a departing socket stops receiving new handshakes *before* it
//! closes, and its worker accepts what it already holds.
//!
//! The program indexes the group's sockets by position, and the positions
//! are the kernel's: a socket joins at the end of the group when it starts
//! listening, and a socket that leaves (its last descriptor closed) is
//! replaced in its position by the last one. [`Group`] mirrors that order.
//! An index the group does not have makes the kernel fall back to its
//! hash over every socket, so a stale mirror costs evenness, never a
//! connection to a socket that left.
//!
//! Where it stops: which sockets stay and when one leaves is the master's
//! decision; this file only turns the answer into a program and keeps the
//! positions.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SO_ATTACH_REUSEPORT_CBPF` (`asm-generic/socket.h`; sparc numbers it
/// apart).
#[cfg(not(target_arch = "sparc64"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
#[cfg(target_arch = "sparc64")]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x35;

// Classic BPF opcodes (`linux/bpf_common.h`).
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_MOD: u16 = 0x90;
const BPF_K: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_RET: u16 = 0x06;
const BPF_A: u16 = 0x10;

/// The most positions a program may choose among: the kernel accepts
/// 4,096 instructions, and a program with holes takes two per position.
pub const MAX_POSITIONS: usize = 2000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

/// The program that sends each new connection to one of `positions` (group
/// positions), at random and evenly.
///
/// The random number is the kernel's (`SKF_AD_RANDOM`), drawn once per
/// handshake; a handshake's later packets find its request socket without
/// asking the program again. When the positions are `0..n` (the group
/// without a departing socket at its end, the usual case) the program is
/// three instructions; otherwise it maps `random mod n` through a chain of
/// comparisons, one pair per position.
///
/// # Panics
/// When `positions` is empty or longer than [`MAX_POSITIONS`].
pub fn program(positions: &[u32]) -> Vec<libc::sock_filter> {
    assert!(!positions.is_empty() && positions.len() <= MAX_POSITIONS, "{} positions", positions.len());
    let n = positions.len() as u32;
    let random = (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32;
    let mut p = vec![stmt(BPF_LD | BPF_W | BPF_ABS, random), stmt(BPF_ALU | BPF_MOD | BPF_K, n)];
    if positions.iter().enumerate().all(|(i, &pos)| pos == i as u32) {
        p.push(stmt(BPF_RET | BPF_A, 0));
        return p;
    }
    let (last, rest) = positions.split_last().expect("not empty");
    for (i, &pos) in rest.iter().enumerate() {
        // Equal: fall through to the return below; otherwise skip it.
        p.push(libc::sock_filter { code: BPF_JMP | BPF_JEQ | BPF_K, jt: 0, jf: 1, k: i as u32 });
        p.push(stmt(BPF_RET | BPF_K, pos));
    }
    p.push(stmt(BPF_RET | BPF_K, *last));
    p
}

/// Attaches [`program`]`(positions)` to the reuseport group of `socket`
/// (any socket of the group), replacing the group's program.
pub fn attach(socket: BorrowedFd<'_>, positions: &[u32]) -> io::Result<()> {
    let mut filter = program(positions);
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: `prog` points at `filter`, `len` instructions long, which
    // outlives the call; the kernel copies the program before returning.
    syscall!(setsockopt(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        SO_ATTACH_REUSEPORT_CBPF,
        (&prog as *const libc::sock_fprog).cast(),
        std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
    ))
    .map(drop)
}

/// Whether `net.ipv4.tcp_migrate_req` is on in this network namespace:
/// then a closing socket's queued and in-flight connections move to
/// another socket of its group instead of being reset.
pub fn migration_on() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

/// The sockets of one reuseport group in the kernel's order, each named by
/// its owner's key (the master's slot index).
#[derive(Debug, Default)]
pub struct Group {
    /// The key of the socket at each position.
    order: Vec<usize>,
}

impl Group {
    /// A group whose sockets started listening in the order of `keys`.
    pub fn new(keys: impl IntoIterator<Item = usize>) -> Group {
        Group { order: keys.into_iter().collect() }
    }

    /// Socket `key` started listening: it takes the last position.
    pub fn joined(&mut self, key: usize) {
        self.order.push(key);
    }

    /// Socket `key` left the group (its last descriptor closed): the last
    /// socket takes its position.
    pub fn left(&mut self, key: usize) {
        if let Some(i) = self.order.iter().position(|&k| k == key) {
            self.order.swap_remove(i);
        }
    }

    /// The positions of the sockets for which `stays` holds.
    pub fn positions(&self, stays: impl Fn(usize) -> bool) -> Vec<u32> {
        self.order.iter().enumerate().filter(|&(_, &k)| stays(k)).map(|(i, _)| i as u32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn a_group_without_holes_gets_the_three_instruction_program() {
        let p = program(&[0, 1, 2]);
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].k, 3);
        assert_eq!(p[2].code, BPF_RET | BPF_A);
    }

    #[test]
    fn a_group_with_holes_maps_each_draw_to_a_position() {
        let p = program(&[0, 2, 5]);
        // ld, mod, (jeq, ret) × 2, ret.
        assert_eq!(p.len(), 7);
        assert_eq!(p[1].k, 3);
        assert_eq!((p[2].k, p[3].k), (0, 0));
        assert_eq!((p[4].k, p[5].k), (1, 2));
        assert_eq!(p[6].k, 5);
    }

    #[test]
    fn the_mirror_moves_the_last_socket_into_a_leaving_ones_position() {
        let mut g = Group::new(0..4);
        g.left(1);
        assert_eq!(g.order, [0, 3, 2]);
        g.joined(7);
        assert_eq!(g.positions(|k| k != 2), [0, 1, 3]);
        g.left(9);
        assert_eq!(g.order.len(), 4);
    }

    /// Sockets bound with `SO_REUSEPORT` on one loopback port, in order.
    fn group_of(n: usize) -> (SocketAddr, Vec<TcpListener>) {
        let first = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let fd = crate::listen::bind_addr(first, true, 1024).unwrap();
        let addr = match crate::listen::local_addr(&fd).unwrap() {
            crate::config::ListenAddr::Tcp(a) => a,
            other => panic!("{other}"),
        };
        let mut all = vec![TcpListener::from(fd)];
        for _ in 1..n {
            all.push(TcpListener::from(crate::listen::bind_addr(addr, true, 1024).unwrap()));
        }
        (addr, all)
    }

    /// Connects `n` times and counts what each listener accepted.
    fn spread(addr: SocketAddr, listeners: &[TcpListener], n: usize) -> Vec<usize> {
        let clients: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let counts = listeners.iter().map(|l| std::iter::from_fn(|| l.accept().ok()).count()).collect();
        drop(clients);
        counts
    }

    #[test]
    fn a_socket_left_out_of_the_program_gets_no_new_connection() {
        let (addr, listeners) = group_of(4);
        attach(listeners[0].as_fd(), &[0, 1, 3]).unwrap();
        let counts = spread(addr, &listeners, 600);
        assert_eq!(counts[2], 0, "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 600, "{counts:?}");
        // Even: each of the three is far from empty.
        assert!(counts.iter().enumerate().all(|(i, &c)| i == 2 || c > 100), "{counts:?}");
    }

    #[test]
    fn a_socket_that_leaves_hands_its_position_to_the_last() {
        let (addr, mut listeners) = group_of(3);
        let mut g = Group::new(0..3);
        // Socket 0 leaves: socket 2 takes position 0.
        drop(listeners.remove(0));
        g.left(0);
        attach(listeners[1].as_fd(), &g.positions(|k| k == 2)).unwrap();
        let counts = spread(addr, &listeners, 200);
        assert_eq!(counts, [0, 200]);
    }
}
