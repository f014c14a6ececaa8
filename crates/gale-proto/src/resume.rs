//! RESUME and RESUMED (protocol version 2): a reconnecting client says where it
//! stopped, and the server says what it replayed, or what it could not.
//!
//! Both bodies have a fixed size; the layout is in `docs/protocol.md` §4.13.

use bytes::BufMut;

use crate::frame::FrameError;
use crate::id::MessageId;
use crate::wire::Reader;

/// Length of a RESUME body.
pub const RESUME_LEN: usize = 8 + 8 + 1 + 16;
/// Length of a RESUMED body.
pub const RESUMED_LEN: usize = 8 + 8 + 1 + 8 + 1 + 8 + 8 + 8;

/// Where a client stopped on a server: sent before its SUBSCRIBE on a new
/// connection. An `epoch` of 0 means "nothing to resume" (a first connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resume {
    /// The epoch of the server the client was last connected to (from its
    /// RESUMED), or 0.
    pub epoch: u64,
    /// The `position` of that server's last RESUMED to this client.
    pub position: u64,
    /// The last message the client received after that RESUMED, if any.
    pub last_id: Option<MessageId>,
}

/// What the server could do with a RESUME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to resume (epoch 0): the client starts live.
    Fresh,
    /// Everything after the client's position that matches its subscriptions
    /// was replayed: nothing was missed.
    Complete,
    /// The epoch is not this server's: it restarted, or the client was on
    /// another server. What was published meanwhile is lost (count unknown).
    UnknownEpoch,
    /// The client's position is older than what the server still holds (the
    /// window passed): some messages were lost; what is still held was replayed.
    WindowPassed,
}

impl Outcome {
    pub fn to_u8(self) -> u8 {
        match self {
            Outcome::Fresh => 0,
            Outcome::Complete => 1,
            Outcome::UnknownEpoch => 2,
            Outcome::WindowPassed => 3,
        }
    }

    pub fn from_u8(b: u8) -> Option<Outcome> {
        Some(match b {
            0 => Outcome::Fresh,
            1 => Outcome::Complete,
            2 => Outcome::UnknownEpoch,
            3 => Outcome::WindowPassed,
            _ => return None,
        })
    }

    /// True for the outcomes that mean messages were missed.
    pub fn is_gap(self) -> bool {
        matches!(self, Outcome::UnknownEpoch | Outcome::WindowPassed)
    }
}

/// The server's answer to RESUME, sent after the replayed DELIVERs and before any
/// live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// This server process's epoch: random, fixed until it restarts.
    pub epoch: u64,
    /// Where this connection went live; the client sends it back in its next
    /// RESUME when it has received no message since.
    pub position: u64,
    pub outcome: Outcome,
    /// DELIVER frames replayed just before this frame.
    pub replayed: u64,
    /// Messages the client would have received and the server no longer holds,
    /// when it knows how many.
    pub lost: Option<u64>,
    /// Milliseconds since the Unix epoch: when the missed messages reached the
    /// server, first and last, as far as it knows; 0 when it does not.
    pub from_ms: u64,
    pub to_ms: u64,
}

impl Resume {
    pub(crate) fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(self.epoch);
        out.put_u64(self.position);
        out.put_u8(u8::from(self.last_id.is_some()));
        out.put_slice(&self.last_id.unwrap_or_default().0);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Resume, FrameError> {
        let epoch = r.u64()?;
        let position = r.u64()?;
        let flags = r.u8()?;
        if flags & !1 != 0 {
            return Err(FrameError::Malformed(format!("RESUME flags {flags:#04x}")));
        }
        let id = MessageId(r.take(16)?.try_into().expect("16 bytes"));
        // One encoding per value: no id means sixteen zero bytes.
        if flags & 1 == 0 && id != MessageId::default() {
            return Err(FrameError::Malformed(
                "RESUME without has_id carries a non-zero last_id".into(),
            ));
        }
        Ok(Resume {
            epoch,
            position,
            last_id: (flags & 1 == 1).then_some(id),
        })
    }
}

impl Resumed {
    pub(crate) fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(self.epoch);
        out.put_u64(self.position);
        out.put_u8(self.outcome.to_u8());
        out.put_u64(self.replayed);
        out.put_u8(u8::from(self.lost.is_some()));
        out.put_u64(self.lost.unwrap_or(0));
        out.put_u64(self.from_ms);
        out.put_u64(self.to_ms);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Resumed, FrameError> {
        let epoch = r.u64()?;
        let position = r.u64()?;
        let o = r.u8()?;
        let outcome = Outcome::from_u8(o)
            .ok_or_else(|| FrameError::Malformed(format!("RESUMED outcome {o}")))?;
        let replayed = r.u64()?;
        let flags = r.u8()?;
        if flags & !1 != 0 {
            return Err(FrameError::Malformed(format!("RESUMED flags {flags:#04x}")));
        }
        let lost = r.u64()?;
        if flags & 1 == 0 && lost != 0 {
            return Err(FrameError::Malformed(
                "RESUMED without lost_known carries a non-zero lost".into(),
            ));
        }
        Ok(Resumed {
            epoch,
            position,
            outcome,
            replayed,
            lost: (flags & 1 == 1).then_some(lost),
            from_ms: r.u64()?,
            to_ms: r.u64()?,
        })
    }
}
