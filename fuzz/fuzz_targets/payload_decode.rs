//! Payload::decode on arbitrary bytes. Every payload it accepts, plain or sealed,
//! re-encodes to exactly the input: unknown fragment types and unknown kinds are
//! kept byte for byte, and known types have one encoding each.
#![no_main]

use gale_proto::Payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = Payload::decode(data) else {
        return;
    };
    let again = payload.encode().expect("a decoded payload re-encodes");
    assert_eq!(&again[..], data, "{payload:?}");
    assert_eq!(Payload::decode(&again).as_ref(), Ok(&payload));
});
