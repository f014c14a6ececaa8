//! A `tokio_util` codec for [`Frame`]s, used by clients.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{EncodeError, Frame, FrameError};
use crate::limits::DEFAULT_MAX_FRAME;

/// Error from the codec: I/O or a bad frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Frames with a maximum size, enforced on both encode and decode.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    pub max_frame: u32,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(Frame::decode(src, self.max_frame)?)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;
    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&item, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;
    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        item.encode(dst)?;
        let len = dst.len() - start - 4;
        if len > self.max_frame as usize {
            dst.truncate(start);
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame as usize,
            }
            .into());
        }
        Ok(())
    }
}
