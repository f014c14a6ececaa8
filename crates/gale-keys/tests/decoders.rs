//! Decoders of outside input never panic, whatever the bytes.

mod common;

use common::*;
use gale_keys::envelope::open;
use gale_keys::{PublicKey, SecretKey};
use gale_proto::MessageId;
use proptest::prelude::*;

proptest! {
    #[test]
    fn key_decoders_never_panic(tail in prop::collection::vec(any::<u8>(), 0..200), secret: bool) {
        let mut b = if secret { b"GALESEC\x01".to_vec() } else { b"GALEKEY\x01".to_vec() };
        b.extend_from_slice(&tail);
        let _ = PublicKey::decode(&b);
        let _ = SecretKey::decode(&b);
    }

    #[test]
    fn mutated_keys_never_panic(i in 0usize..400, x in 1u8..=255) {
        let mut b = signed(&key("egnor@ofb.net", 2), &key("ofb.net", 1)).encode();
        let n = b.len();
        b[i % n] ^= x;
        let _ = PublicKey::decode(&b);
    }

    #[test]
    fn open_never_panics(kind in 0u8..4, tail in prop::collection::vec(any::<u8>(), 0..300)) {
        let bob = key("bob@ofb.net", 2);
        let mut p = vec![kind];
        p.extend_from_slice(&tail);
        let m = message(MessageId([1; 16]), &[loc("bob@ofb.net")], &gale_proto::Payload::Plain(body("")));
        let _ = open(&with_payload(&m, p), &[&bob], &lookup_in(vec![bob.public().clone()]));
    }
}
