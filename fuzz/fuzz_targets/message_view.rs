//! MessageView::parse on arbitrary bytes. A header it accepts must decode into a
//! Message (whose decoder trusts parse's validation) that re-encodes byte for byte.
#![no_main]

use bytes::{Bytes, BytesMut};
use gale_proto::{Message, MessageView};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(view) = MessageView::parse(data) else {
        return;
    };
    let locs: Vec<&str> = view.locations().collect();
    assert_eq!(locs.len(), view.count as usize);
    assert!(
        view.payload_offset < data.len(),
        "payload kind byte present"
    );

    let body = Bytes::copy_from_slice(data);
    let msg = Message::decode(&body).expect("parse accepted it");
    assert_eq!(msg.id, view.id);
    assert_eq!(msg.hops, view.hops);
    assert_eq!(msg.to.iter().map(|l| l.as_str()).collect::<Vec<_>>(), locs);
    assert_eq!(&msg.payload[..], &data[view.payload_offset..]);
    let mut out = BytesMut::new();
    msg.encode(&mut out).expect("a parsed message re-encodes");
    assert_eq!(&out[..], data);
    assert_eq!(msg.encoded_len(), data.len());
});
