//! Frame::decode on arbitrary bytes, with the smallest maximum frame a peer may
//! announce. Every frame it accepts must re-encode to exactly the bytes it consumed
//! (after any skipped optional frames): the encoding is canonical.
#![no_main]

use bytes::BytesMut;
use gale_proto::limits::MIN_MAX_FRAME;
use gale_proto::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match Frame::decode(&mut buf, MIN_MAX_FRAME) {
            Ok(Some(frame)) => {
                let consumed = &before[..before.len() - buf.len()];
                let again = frame.to_bytes();
                assert!(
                    consumed.ends_with(&again),
                    "{frame:?} re-encodes differently from the bytes it came from"
                );
                let mut again = BytesMut::from(&again[..]);
                assert_eq!(Frame::decode(&mut again, MIN_MAX_FRAME), Ok(Some(frame)));
                assert!(again.is_empty());
            }
            Ok(None) => {
                // "Need more bytes" must not consume anything but skipped optional
                // frames, which are whole frames.
                break;
            }
            Err(_) => break,
        }
    }
});
