//! Big-endian field reader and writer used by the frame and fragment codecs.
//!
//! Inside a frame every byte has already arrived, so running out of bytes here
//! means the frame is malformed, never "need more".

use bytes::{BufMut, Bytes};

use crate::frame::FrameError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.remaining() < n {
            return Err(FrameError::Malformed(format!(
                "{} truncated: needed {} more bytes at offset {}, only {} left",
                self.what,
                n,
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A `u16` length followed by that many bytes of UTF-8.
    pub(crate) fn str16(&mut self, max: usize) -> Result<&'a str, FrameError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(FrameError::Malformed(format!(
                "{}: text of {len} bytes exceeds the limit of {max}",
                self.what
            )));
        }
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map_err(|e| FrameError::Malformed(format!("{}: text is not UTF-8: {e}", self.what)))
    }

    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        if self.remaining() != 0 {
            return Err(FrameError::Malformed(format!(
                "{}: {} unexpected trailing bytes",
                self.what,
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// Why a value cannot be encoded: a count or a length over the protocol's limit
/// (which the receiver would refuse, or which would not even fit its field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {what}: {got} is over the limit of {max}")]
pub struct EncodeError {
    pub what: &'static str,
    pub got: usize,
    pub max: usize,
}

/// `Ok` if `got <= max`, else the error for `what`.
pub(crate) fn check(what: &'static str, got: usize, max: usize) -> Result<(), EncodeError> {
    if got > max {
        return Err(EncodeError { what, got, max });
    }
    Ok(())
}

/// Writes `s` as a `str16`, refusing text over `max` bytes.
pub(crate) fn put_str16(
    out: &mut impl BufMut,
    s: &str,
    what: &'static str,
    max: usize,
) -> Result<(), EncodeError> {
    check(what, s.len(), max.min(u16::MAX as usize))?;
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
    Ok(())
}

pub(crate) fn copy(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}
