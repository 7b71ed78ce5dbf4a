//! The user data of io_uring submissions: what an operation was and, for a
//! connection's operations, which slab slot and which occupant of it.

use crate::driver::slab::{Key, Slab, IDX_BITS};

/// What a submission was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
    /// The multishot accept on the listener.
    Accept = 1,
    /// A connection's multishot recv.
    Recv,
    /// A connection's send.
    Send,
    /// A cancel request; its completion carries nothing the loop needs.
    Cancel,
    /// The multishot poll on the control eventfd.
    Wake,
    /// The sweep timer.
    Timer,
    /// Operations of the setup probe.
    Probe,
    /// The multishot poll on the eventfd of the ring from the master.
    Inbox,
    /// A connection's close through the ring.
    Close,
    /// A splice of a file body into the connection's pipe.
    SpliceIn,
    /// The poll for room in the socket linked before a `SpliceOut`.
    PollOut,
    /// A splice from the connection's pipe into its socket.
    SpliceOut,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Cancel,
            5 => Op::Wake,
            6 => Op::Timer,
            7 => Op::Probe,
            8 => Op::Inbox,
            9 => Op::Close,
            10 => Op::SpliceIn,
            11 => Op::PollOut,
            12 => Op::SpliceOut,
            _ => return None,
        })
    }
}

/// The user data of a submission:
///
/// | bits  | 63..56 | 55..24                        | 23..0     |
/// |-------|--------|-------------------------------|-----------|
/// | field | [`Op`] | slot generation, low 32 bits  | slab slot |
///
/// The user data holds the operation beside the connection, so it keeps
/// only the low [`KERNEL_GEN_BITS`] bits of the slot's generation, not a
/// whole [`Key`]. That is enough here: a connection's slot is freed only
/// once none of its operations is left in the kernel, so a completion
/// always finds the occupant it was submitted for, and the generation is
/// a second check. The token that crosses threads (responders, streams,
/// resumes) is the whole key ([`Key::pack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token(pub(super) u64);

/// Bits of a slot's generation the user data keeps.
const KERNEL_GEN_BITS: u32 = 32;
/// Mask of the slot bits.
const SLOT_MASK: u64 = (1 << IDX_BITS) - 1;
/// Mask of the kept generation bits.
const GEN_MASK: u64 = (1 << KERNEL_GEN_BITS) - 1;
/// Where the operation starts.
const OP_SHIFT: u32 = IDX_BITS + KERNEL_GEN_BITS;
const _: () = assert!(OP_SHIFT == 56);

impl Token {
    /// The token of operation `op` on connection `key`.
    pub(super) fn new(op: Op, key: Key) -> Token {
        Token((op as u64) << OP_SHIFT | (key.gen() & GEN_MASK) << IDX_BITS | u64::from(key.idx()))
    }

    /// A token of an operation that belongs to no connection.
    pub(super) fn of(op: Op) -> Token {
        Token((op as u64) << OP_SHIFT)
    }

    /// The token of the accept on listener `index` (where a connection's
    /// slot would be).
    pub(super) fn accept(index: usize) -> Token {
        Token((Op::Accept as u64) << OP_SHIFT | index as u64 & SLOT_MASK)
    }

    /// The listener index of an accept's token.
    pub(super) fn listener(self) -> usize {
        (self.0 & SLOT_MASK) as usize
    }

    /// This token with operation `op` instead (a cancel names its target's
    /// connection).
    pub(super) fn with_op(self, op: Op) -> Token {
        Token((op as u64) << OP_SHIFT | self.0 & ((1 << OP_SHIFT) - 1))
    }

    pub(super) fn op(self) -> Option<Op> {
        Op::from_u8((self.0 >> OP_SHIFT) as u8)
    }

    /// The connection the operation belongs to, if it still holds its
    /// slot in `conns` (otherwise a key that matches no connection).
    #[inline]
    pub(super) fn key<T>(self, conns: &Slab<T>) -> Key {
        let idx = (self.0 & SLOT_MASK) as u32;
        conns.key_by_low_gen(idx, self.0 >> IDX_BITS & GEN_MASK, KERNEL_GEN_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let mut conns = Slab::default();
        let first = conns.insert(()).unwrap();
        conns.remove(first);
        // A generation wider than the user data keeps.
        conns.age(first.idx(), (1 << 33) + 5);
        let key = conns.insert(()).unwrap();
        for op in [
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Cancel,
            Op::Wake,
            Op::Timer,
            Op::Probe,
            Op::Inbox,
            Op::Close,
            Op::SpliceIn,
            Op::PollOut,
            Op::SpliceOut,
        ] {
            let t = Token::new(op, key);
            assert_eq!(t.op(), Some(op));
            assert_eq!(t.key(&conns), key);
            assert_eq!(t.with_op(Op::Cancel).op(), Some(Op::Cancel));
            assert_eq!(t.with_op(Op::Cancel).key(&conns), key);
        }
        assert_eq!(Token(0).op(), None);
        for i in [0, 1, 7] {
            assert_eq!(Token::accept(i).op(), Some(Op::Accept));
            assert_eq!(Token::accept(i).listener(), i);
        }
        // The slot's next occupant is not the one a token was made for.
        let stale = Token::new(Op::Recv, key);
        conns.remove(key);
        let next = conns.insert(()).unwrap();
        assert_eq!(next.idx(), key.idx());
        assert_eq!(conns.get_mut(stale.key(&conns)), None);
        assert_eq!(Token::new(Op::Recv, next).key(&conns), next);
    }
}
