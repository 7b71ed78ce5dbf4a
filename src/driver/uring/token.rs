//! The user data of io_uring submissions: what an operation was and, for a
//! connection's operations, which slab slot and which occupant of it.

use crate::driver::slab::Key;

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
/// | bits  | 63..56 | 55..32           | 31..0      |
/// |-------|--------|------------------|------------|
/// | field | [`Op`] | slot generation  | slab slot  |
///
/// The lower 56 bits are the connection's packed slab [`Key`]: the
/// generation (24 bits, wrapping) changes each time a slot is freed, so a
/// completion or cancel aimed at a slot's previous connection can never
/// touch the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token(pub(super) u64);

impl Token {
    /// The token of operation `op` on connection `key`.
    pub(super) fn new(op: Op, key: Key) -> Token {
        Token(((op as u64) << 56) | key.pack())
    }

    /// A token of an operation that belongs to no connection.
    pub(super) fn of(op: Op) -> Token {
        Token((op as u64) << 56)
    }

    pub(super) fn op(self) -> Option<Op> {
        Op::from_u8((self.0 >> 56) as u8)
    }

    /// The connection the operation belongs to.
    pub(super) fn key(self) -> Key {
        Key::unpack(self.0 & ((1 << 56) - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let key = Key { idx: 123_456, gen: (1 << 24) - 1 };
        for op in [
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Cancel,
            Op::Wake,
            Op::Timer,
            Op::Probe,
            Op::Inbox,
            Op::SpliceIn,
            Op::PollOut,
            Op::SpliceOut,
        ] {
            let t = Token::new(op, key);
            assert_eq!(t.op(), Some(op));
            assert_eq!(t.key(), key);
        }
        assert_eq!(Token(0).op(), None);
    }
}
