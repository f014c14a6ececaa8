//! The original Gale protocol's decoders (gale-orig) on arbitrary bytes: frames,
//! then each puff's routing and content through the mapping to our messages and
//! back, the display decoder, and the subscription rule. Nothing may panic, and a
//! puff's content must come back byte for byte.
#![no_main]

use bytes::BytesMut;
use gale_orig::convert::{describe, from_puff, to_puff};
use gale_orig::wire::{Decoder, OrigFrame};
use gale_orig::{category, fragment, Expression};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut dec = Decoder::new();
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(OrigFrame::Puff { routing, content }))
            | Ok(Some(OrigFrame::Will { routing, content })) => {
                let _ = fragment::decode(&content);
                let _ = describe(&content);
                if let Ok(m) = from_puff(&routing, &content) {
                    if let Ok((_, back)) = to_puff(&m) {
                        assert_eq!(back, content, "an original content changed on the way");
                    }
                }
                let e = Expression::parse(&routing);
                let _ = e.covering();
                let _ = e.accepts(&category::split(&routing));
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {}
        }
    }
});
