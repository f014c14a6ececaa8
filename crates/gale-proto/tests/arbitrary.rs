//! Decoders on arbitrary input: the stable-toolchain stand-in for the cargo-fuzz
//! targets in `fuzz/` (which need nightly). Each property here is the one the matching
//! fuzz target asserts: no panic, and whatever is accepted re-encodes exactly.

use bytes::{Bytes, BytesMut};
use gale_proto::limits::{MAX_LOCATION_LEN, MAX_SEGMENTS, MIN_MAX_FRAME};
use gale_proto::location::check_canonical;
use gale_proto::{Frame, Location, Message, MessageView, Payload};
use proptest::prelude::*;

/// A message header that is valid up to the locations, so that random tails reach
/// the location and payload checks instead of failing on the first bytes.
fn header_then(tail: &[u8], count: u8) -> Vec<u8> {
    let mut v = vec![0x42; 16];
    v.extend_from_slice(&[0, 0, count]);
    v.extend_from_slice(tail);
    v
}

fn check_message(data: &[u8]) {
    let Ok(view) = MessageView::parse(data) else {
        return;
    };
    let locs: Vec<&str> = view.locations().collect();
    assert_eq!(locs.len(), view.count as usize);
    let msg = Message::decode(&Bytes::copy_from_slice(data)).expect("parse accepted it");
    assert_eq!(msg.to.iter().map(|l| l.as_str()).collect::<Vec<_>>(), locs);
    let mut out = BytesMut::new();
    msg.encode(&mut out).unwrap();
    assert_eq!(&out[..], data);
}

fn check_location(s: &str) {
    if let Ok(loc) = Location::parse(s) {
        let text = loc.as_str();
        assert!(text.len() <= MAX_LOCATION_LEN);
        assert!(loc.segments().count() <= MAX_SEGMENTS);
        assert_eq!(check_canonical(text), Ok(loc.local().len()));
        assert_eq!(Location::from_canonical(text).as_ref(), Ok(&loc));
        assert_eq!(Location::parse(text).as_ref(), Ok(&loc));
        assert!(loc.covers(&loc));
    }
    if check_canonical(s).is_ok() {
        let loc = Location::from_canonical(s).expect("check_canonical accepted it");
        assert_eq!(Location::parse(s).as_ref(), Ok(&loc));
    }
}

/// Location-shaped text: mostly location characters, with some that are not.
fn locationish() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._@ \\-:/é\\x00]{0,40}"
}

proptest! {
    #[test]
    fn message_view_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..128)) {
        check_message(&data);
    }

    #[test]
    fn message_view_after_valid_prefix(
        count in 0u8..4,
        locs in prop::collection::vec(locationish(), 0..4),
        tail in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut body = Vec::new();
        for l in &locs {
            body.extend_from_slice(&(l.len() as u16).to_be_bytes());
            body.extend_from_slice(l.as_bytes());
        }
        body.extend_from_slice(&tail);
        check_message(&header_then(&body, count));
    }

    #[test]
    fn location_arbitrary_strings(s in any::<String>()) {
        check_location(&s);
    }

    #[test]
    fn location_shaped_strings(s in locationish()) {
        check_location(&s);
    }

    #[test]
    fn payload_reencodes_exactly(data in prop::collection::vec(any::<u8>(), 0..96)) {
        if let Ok(p) = Payload::decode(&data) {
            prop_assert_eq!(&p.encode().unwrap()[..], &data[..]);
        }
    }

    #[test]
    fn frames_reencode_exactly(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&data[..]);
        loop {
            let before = buf.len();
            match Frame::decode(&mut buf, MIN_MAX_FRAME) {
                Ok(Some(f)) => {
                    let consumed = &data[data.len() - before..data.len() - buf.len()];
                    prop_assert!(consumed.ends_with(&f.to_bytes()), "{:?}", f);
                }
                _ => break,
            }
        }
    }
}
