//! Feedback: ACK (step 412), NAK (step 418), END (step 416) and DONE.

use super::{expect_len, WireError};
use crate::bytes::{be16, be32, put_be16, put_be32};

/// Most ranges one NAK carries; a client with more sends several.
pub const MAX_NAK_RANGES: usize = 128;

/// ACK flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckFlags(u16);

impl AckFlags {
    /// Sent out of turn because the client's free space runs low.
    pub const OUT_OF_TURN: AckFlags = AckFlags(1);
    const KNOWN: u16 = 0b1;
    /// No flags.
    pub const fn empty() -> Self {
        AckFlags(0)
    }
    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: AckFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// ACK: the designated acker acknowledges a window and reports its credit.
///
/// ```text
/// member u32 | window u32 | received_through u32 | credit_end u32 | missing u32
/// | flags u16 | reserved u16
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRepr {
    /// Who acknowledges.
    pub member: u32,
    /// The window acknowledged (sequence number / window size).
    pub window: u32,
    /// Every packet with a smaller sequence number has been received.
    pub received_through: u32,
    /// The client can hold every packet with a smaller sequence number: the
    /// appliance never sends at or past it (no buffer overrun).
    pub credit_end: u32,
    /// Packets the client knows it is missing.
    pub missing: u32,
    /// Out-of-turn and other flags.
    pub flags: AckFlags,
}

impl AckRepr {
    /// The body's exact length.
    pub const BODY_LEN: usize = 24;
    /// Parses an ACK body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        expect_len(body, Self::BODY_LEN)?;
        let flags = be16(body, 20..22);
        if flags & !AckFlags::KNOWN != 0 || be16(body, 22..24) != 0 {
            return Err(WireError::Reserved);
        }
        let received_through = be32(body, 8..12);
        let credit_end = be32(body, 12..16);
        if credit_end < received_through {
            return Err(WireError::BadField);
        }
        Ok(AckRepr {
            member: be32(body, 0..4),
            window: be32(body, 4..8),
            received_through,
            credit_end,
            missing: be32(body, 16..20),
            flags: AckFlags(flags),
        })
    }
    /// Body length when emitted.
    pub const fn body_len(&self) -> usize {
        Self::BODY_LEN
    }
    /// Writes the body.
    pub fn emit(&self, body: &mut [u8]) {
        put_be32(body, 0..4, self.member);
        put_be32(body, 4..8, self.window);
        put_be32(body, 8..12, self.received_through);
        put_be32(body, 12..16, self.credit_end);
        put_be32(body, 16..20, self.missing);
        put_be16(body, 20..22, self.flags.bits());
        put_be16(body, 22..24, 0);
    }
}

/// A validated list of NAK ranges, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NakRanges<'a> {
    bytes: &'a [u8],
}

impl<'a> NakRanges<'a> {
    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.bytes.len() / 8
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The ranges as `(first seq, count)`.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.bytes
            .chunks_exact(8)
            .map(|c| (be32(c, 0..4), be32(c, 4..8)))
    }
}

/// NAK: the packets a member still needs (step 418).
///
/// ```text
/// member u32 | count u16 | reserved u16 | count × (first u32, len u32)
/// ```
///
/// Ranges are non-empty, ascending and do not overlap or touch; the parser rejects
/// any other shape, so the planner never sees a degenerate list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NakRepr<'a> {
    /// Who asks.
    pub member: u32,
    /// What it asks for.
    pub ranges: NakRanges<'a>,
}

impl<'a> NakRepr<'a> {
    /// Bytes before the ranges.
    pub const FIXED_LEN: usize = 8;

    /// Parses a NAK body.
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < Self::FIXED_LEN {
            return Err(WireError::Truncated);
        }
        if be16(body, 6..8) != 0 {
            return Err(WireError::Reserved);
        }
        let n = usize::from(be16(body, 4..6));
        if n == 0 || n > MAX_NAK_RANGES {
            return Err(WireError::BadField);
        }
        expect_len(body, Self::FIXED_LEN + 8 * n)?;
        let ranges = NakRanges {
            bytes: &body[Self::FIXED_LEN..],
        };
        let mut next_allowed: u64 = 0;
        for (first, len) in ranges.iter() {
            let end = u64::from(first) + u64::from(len);
            if len == 0 || u64::from(first) < next_allowed || end > u64::from(u32::MAX) {
                return Err(WireError::BadField);
            }
            next_allowed = end + 1;
        }
        Ok(NakRepr {
            member: be32(body, 0..4),
            ranges,
        })
    }

    /// Body length for `n` ranges.
    pub const fn body_len_for(n: usize) -> usize {
        Self::FIXED_LEN + 8 * n
    }

    /// Writes a NAK body from `ranges` (at most [`MAX_NAK_RANGES`] are taken); returns
    /// the body length written. The caller keeps ranges ascending and disjoint.
    pub fn emit_from(member: u32, ranges: &[(u32, u32)], body: &mut [u8]) -> usize {
        let n = ranges.len().min(MAX_NAK_RANGES);
        put_be32(body, 0..4, member);
        put_be16(body, 4..6, n as u16);
        put_be16(body, 6..8, 0);
        for (i, &(first, len)) in ranges[..n].iter().enumerate() {
            let at = Self::FIXED_LEN + 8 * i;
            put_be32(body, at..at + 4, first);
            put_be32(body, at + 4..at + 8, len);
        }
        Self::body_len_for(n)
    }

    /// Body length when emitted.
    pub fn body_len(&self) -> usize {
        Self::FIXED_LEN + self.ranges.bytes.len()
    }
    /// Writes the body.
    pub fn emit(&self, body: &mut [u8]) {
        put_be32(body, 0..4, self.member);
        put_be16(body, 4..6, self.ranges.len() as u16);
        put_be16(body, 6..8, 0);
        body[Self::FIXED_LEN..self.body_len()].copy_from_slice(self.ranges.bytes);
    }
}

/// END: the appliance has sent every packet once (step 416); repeated until every
/// member is done or evicted.
///
/// ```text
/// total_packets u32 | members u32 | round u32
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRepr {
    /// Packets in the stream.
    pub total_packets: u32,
    /// Members still counted.
    pub members: u32,
    /// Which repetition this is, from 0.
    pub round: u32,
}

impl EndRepr {
    /// The body's exact length.
    pub const BODY_LEN: usize = 12;
    /// Parses an END body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        expect_len(body, Self::BODY_LEN)?;
        Ok(EndRepr {
            total_packets: be32(body, 0..4),
            members: be32(body, 4..8),
            round: be32(body, 8..12),
        })
    }
    /// Body length when emitted.
    pub const fn body_len(&self) -> usize {
        Self::BODY_LEN
    }
    /// Writes the body.
    pub fn emit(&self, body: &mut [u8]) {
        put_be32(body, 0..4, self.total_packets);
        put_be32(body, 4..8, self.members);
        put_be32(body, 8..12, self.round);
    }
}

/// DONE: a member has every packet and every block verified (step 418, "all
/// received").
///
/// ```text
/// member u32 | packets u32
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoneRepr {
    /// Who is done.
    pub member: u32,
    /// Packets it holds (the whole stream).
    pub packets: u32,
}

impl DoneRepr {
    /// The body's exact length.
    pub const BODY_LEN: usize = 8;
    /// Parses a DONE body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        expect_len(body, Self::BODY_LEN)?;
        Ok(DoneRepr {
            member: be32(body, 0..4),
            packets: be32(body, 4..8),
        })
    }
    /// Body length when emitted.
    pub const fn body_len(&self) -> usize {
        Self::BODY_LEN
    }
    /// Writes the body.
    pub fn emit(&self, body: &mut [u8]) {
        put_be32(body, 0..4, self.member);
        put_be32(body, 4..8, self.packets);
    }
}

/// DONE_ACK: the appliance counted a member's DONE; the member may exit.
///
/// ```text
/// member u32 | reserved u32
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoneAckRepr {
    /// Whose DONE was counted.
    pub member: u32,
}

impl DoneAckRepr {
    /// The body's exact length.
    pub const BODY_LEN: usize = 8;
    /// Parses a DONE_ACK body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        expect_len(body, Self::BODY_LEN)?;
        if be32(body, 4..8) != 0 {
            return Err(WireError::Reserved);
        }
        Ok(DoneAckRepr {
            member: be32(body, 0..4),
        })
    }
    /// Body length when emitted.
    pub const fn body_len(&self) -> usize {
        Self::BODY_LEN
    }
    /// Writes the body.
    pub fn emit(&self, body: &mut [u8]) {
        put_be32(body, 0..4, self.member);
        put_be32(body, 4..8, 0);
    }
}
