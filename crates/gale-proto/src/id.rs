//! 128-bit message ids.
//!
//! Ids are laid out like UUIDv7: 48 bits of Unix milliseconds, then 80 random bits, so
//! they sort roughly by creation time and collide with negligible probability.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};

/// A message's unique id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh id: current time in milliseconds and 80 random bits.
    pub fn generate() -> MessageId {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0) as u64;
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        OsRng.fill_bytes(&mut b[6..]);
        MessageId(b)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Milliseconds since the Unix epoch at which the id was made.
    pub fn timestamp_ms(&self) -> u64 {
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(t)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Error parsing a message id from text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a message id is 32 hexadecimal digits")]
pub struct BadMessageId;

impl FromStr for MessageId {
    type Err = BadMessageId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.is_ascii() {
            return Err(BadMessageId);
        }
        let mut b = [0u8; 16];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| BadMessageId)?;
        }
        Ok(MessageId(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ordered_and_round_trips() {
        let a = MessageId::generate();
        let b = MessageId::generate();
        assert_ne!(a, b);
        assert!(b.timestamp_ms() >= a.timestamp_ms());
        assert_eq!(a.to_string().parse::<MessageId>(), Ok(a));
        assert_eq!("zz".parse::<MessageId>(), Err(BadMessageId));
    }
}
