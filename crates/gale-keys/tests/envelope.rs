//! Signed and encrypted payloads: round trips, tampering, re-addressing.

mod common;

use common::*;
use gale_keys::envelope::{open, seal, sign, SignedParts, SIGNER_KEY};
use gale_keys::{EnvelopeError, SecretKey, SigState};
use gale_proto::fragment::kind;
use gale_proto::{MessageId, Payload, Value};

fn id(n: u8) -> MessageId {
    MessageId([n; 16])
}

#[test]
fn signed_round_trip_and_hops_not_covered() {
    let alice = key("alice@ofb.net", 1);
    let to = [loc("pub.tv@ofb.net"), loc("bob@ofb.net")];
    let p = sign(id(1), &to, &body("hi"), &alice).unwrap();
    assert!(matches!(
        p,
        Payload::Sealed {
            kind: kind::SIGNED,
            ..
        }
    ));
    let mut m = message(id(1), &to, &p);
    m.hops = 5;
    let o = open(&m, &[], &lookup_in(vec![alice.public().clone()])).unwrap();
    assert_eq!(o.signature, SigState::Valid);
    assert_eq!(o.fragments, body("hi"));
    assert!(!o.encrypted);
    assert_eq!(o.signer, Some((name("alice@ofb.net"), alice.id())));
    assert_eq!(o.signer_key.as_ref(), Some(alice.public()));
}

#[test]
fn signer_unknown_or_other_key() {
    let alice = key("alice@ofb.net", 1);
    let impostor = key("alice@ofb.net", 2);
    let to = [loc("pub@ofb.net")];
    let m = message(id(1), &to, &sign(id(1), &to, &body("hi"), &alice).unwrap());
    let o = open(&m, &[], &lookup_in(vec![])).unwrap();
    assert_eq!(o.signature, SigState::UnknownKey);
    // A lookup that answers with a different key for the name is not believed.
    let o = open(&m, &[], &|_, _| Some(impostor.public().clone())).unwrap();
    assert_eq!(o.signature, SigState::UnknownKey);
}

#[test]
fn a_signer_key_carried_in_the_message_checks_the_signature() {
    let alice = key("alice@ofb.net", 1);
    let bob = key("bob@ofb.net", 4);
    let to = [loc("bob@ofb.net")];
    let mut f = body("hi");
    f.push(SIGNER_KEY, Value::Data(alice.public().encode().into()));
    let inner = sign(id(1), &to, &f, &alice).unwrap();
    let m = message(
        id(1),
        &to,
        &seal(id(1), &to, &inner, &[bob.public()]).unwrap(),
    );
    // Bob knows nothing of alice: her key travelled inside the encryption.
    let o = open(&m, &[&bob], &lookup_in(vec![])).unwrap();
    assert_eq!(o.signature, SigState::Valid);
    assert!(o.key_from_message);
    assert_eq!(o.signer_key.unwrap().id(), alice.id());
    assert!(
        o.fragments.get(SIGNER_KEY).is_none(),
        "taken out of the fragments"
    );
    assert_eq!(o.fragments.text("message.body"), Some("hi"));
    // A key the lookup knows wins, and is not reported as carried.
    let o = open(&m, &[&bob], &lookup_in(vec![alice.public().clone()])).unwrap();
    assert_eq!(o.signature, SigState::Valid);
    assert!(!o.key_from_message);

    // Another key under alice's name, carried by mallory's message: the signature
    // checks against it only if it is the key named in the signature (then it is
    // mallory's own "alice" key, which trust must judge); a carried key for a
    // different id is ignored.
    let impostor = key("alice@ofb.net", 2);
    let mut f = body("hi");
    f.push(SIGNER_KEY, Value::Data(impostor.public().encode().into()));
    let m = message(id(2), &to, &sign(id(2), &to, &f, &alice).unwrap());
    let o = open(&m, &[], &lookup_in(vec![])).unwrap();
    assert_eq!(o.signature, SigState::UnknownKey);
    assert!(!o.key_from_message);
}

#[test]
fn forged_signature_is_invalid() {
    let alice = key("alice@ofb.net", 1);
    let mallory = key("mallory@ofb.net", 3);
    let to = [loc("pub@ofb.net")];
    // Mallory signs, then relabels the payload as alice's (name and id).
    let Payload::Sealed { raw, .. } = sign(id(1), &to, &body("hi"), &mallory).unwrap() else {
        panic!()
    };
    let n = "mallory@ofb.net".len();
    let mut forged = vec![kind::SIGNED];
    forged.extend_from_slice(&("alice@ofb.net".len() as u16).to_be_bytes());
    forged.extend_from_slice(b"alice@ofb.net");
    forged.extend_from_slice(&alice.id().0);
    forged.extend_from_slice(&raw[2 + n + 8..]);
    let m = with_payload(&message(id(1), &to, &Payload::Plain(body(""))), forged);
    let o = open(&m, &[], &lookup_in(vec![alice.public().clone()])).unwrap();
    assert_eq!(o.signature, SigState::Invalid);
}

#[test]
fn readdressed_or_renumbered_signed_message_fails() {
    let alice = key("alice@ofb.net", 1);
    let look = lookup_in(vec![alice.public().clone()]);
    let to = [loc("bob@ofb.net")];
    let m = message(id(1), &to, &sign(id(1), &to, &body("hi"), &alice).unwrap());
    let mut moved = m.clone();
    moved.to = vec![loc("carol@ofb.net")];
    assert_eq!(
        open(&moved, &[], &look).unwrap().signature,
        SigState::Invalid
    );
    let mut added = m.clone();
    added.to.push(loc("carol@ofb.net"));
    assert_eq!(
        open(&added, &[], &look).unwrap().signature,
        SigState::Invalid
    );
    let mut renumbered = m.clone();
    renumbered.id = id(2);
    assert_eq!(
        open(&renumbered, &[], &look).unwrap().signature,
        SigState::Invalid
    );
}

#[test]
fn sealed_to_one_and_to_several() {
    let alice = key("alice@ofb.net", 1);
    let bob = key("bob@ofb.net", 2);
    let carol = key("carol@ofb.net", 3);
    let eve = key("eve@ofb.net", 4);
    let look = lookup_in(vec![alice.public().clone()]);
    let to = [loc("bob@ofb.net")];
    let inner = sign(id(1), &to, &body("secret"), &alice).unwrap();

    let one = seal(id(1), &to, &inner, &[bob.public()]).unwrap();
    let m = message(id(1), &to, &one);
    let o = open(&m, &[&bob], &look).unwrap();
    assert!(o.encrypted);
    assert_eq!(o.signature, SigState::Valid);
    assert_eq!(o.fragments, body("secret"));
    assert!(matches!(
        open(&m, &[&eve], &look),
        Err(EnvelopeError::NotARecipient)
    ));
    assert!(matches!(
        open(&m, &[], &look),
        Err(EnvelopeError::NotARecipient)
    ));

    let several = seal(
        id(1),
        &to,
        &inner,
        &[alice.public(), bob.public(), carol.public()],
    )
    .unwrap();
    let m = message(id(1), &to, &several);
    for who in [&alice, &bob, &carol] {
        let o = open(&m, &[&eve, who], &look).unwrap();
        assert_eq!((o.encrypted, o.signature), (true, SigState::Valid));
        assert_eq!(o.fragments, body("secret"));
    }
    assert!(matches!(
        open(&m, &[&eve], &look),
        Err(EnvelopeError::NotARecipient)
    ));
}

#[test]
fn sealed_leaks_no_names() {
    let bob = key("bob@ofb.net", 2);
    let to = [loc("bob@ofb.net")];
    let inner = sign(id(1), &to, &body("x"), &key("alice@ofb.net", 1)).unwrap();
    let Payload::Sealed { raw, .. } = seal(id(1), &to, &inner, &[bob.public()]).unwrap() else {
        panic!()
    };
    let hay = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(!hay(b"alice") && !hay(b"bob") && !hay(b"ofb.net"));
    assert!(!hay(&bob.id().0));
}

#[test]
fn anonymous_encrypted() {
    let bob = key("bob@ofb.net", 2);
    let to = [loc("bob@ofb.net")];
    let m = message(
        id(1),
        &to,
        &seal(id(1), &to, &Payload::Plain(body("anon")), &[bob.public()]).unwrap(),
    );
    let o = open(&m, &[&bob], &lookup_in(vec![])).unwrap();
    assert_eq!(
        (o.encrypted, o.signature, o.signer),
        (true, SigState::None, None)
    );
    assert_eq!(o.fragments, body("anon"));
}

#[test]
fn readdressed_sealed_message_is_tampered() {
    let bob = key("bob@ofb.net", 2);
    let to = [loc("bob@ofb.net")];
    let m = message(
        id(1),
        &to,
        &seal(id(1), &to, &Payload::Plain(body("x")), &[bob.public()]).unwrap(),
    );
    let mut moved = m.clone();
    moved.to = vec![loc("carol@ofb.net")];
    assert!(matches!(
        open(&moved, &[&bob], &lookup_in(vec![])),
        Err(EnvelopeError::Tampered)
    ));
    let mut renumbered = m;
    renumbered.id = id(9);
    assert!(matches!(
        open(&renumbered, &[&bob], &lookup_in(vec![])),
        Err(EnvelopeError::Tampered)
    ));
}

#[test]
fn seal_refuses_bad_recipient_lists() {
    let to = [loc("g@ofb.net")];
    let inner = Payload::Plain(body("x"));
    assert!(matches!(
        seal(id(1), &to, &inner, &[]),
        Err(EnvelopeError::NoRecipients)
    ));
    let g = group("g@ofb.net", 5, &["a@ofb.net"]);
    assert!(matches!(
        seal(id(1), &to, &inner, &[g.public()]),
        Err(EnvelopeError::NoEncryptionKey(_))
    ));
}

/// Flips every byte of the payload, one at a time, in two ways; no flip may yield a
/// valid signature, nor (for encrypted payloads) a successful decryption.
fn flip_every_byte(
    m: &gale_proto::Message,
    secrets: &[&SecretKey],
    look: &dyn Fn(&gale_keys::KeyName, gale_keys::KeyId) -> Option<gale_keys::PublicKey>,
) {
    let original = open(m, secrets, look).unwrap();
    assert_eq!(original.signature, SigState::Valid);
    for i in 0..m.payload.len() {
        for mask in [0x01u8, 0xFF] {
            let mut p = m.payload.to_vec();
            p[i] ^= mask;
            match open(&with_payload(m, p), secrets, look) {
                Err(_) => {}
                Ok(o) => {
                    assert_ne!(
                        o.signature,
                        SigState::Valid,
                        "byte {i} ^ {mask:#x} still verifies"
                    );
                    assert!(
                        !(original.encrypted && o.encrypted),
                        "byte {i} ^ {mask:#x} still decrypts"
                    );
                }
            }
        }
    }
}

#[test]
fn flipping_any_byte_of_a_signed_payload_is_caught() {
    let alice = key("alice@ofb.net", 1);
    let to = [loc("pub.tv@ofb.net")];
    let m = message(
        id(1),
        &to,
        &sign(id(1), &to, &body("hello, world"), &alice).unwrap(),
    );
    flip_every_byte(&m, &[], &lookup_in(vec![alice.public().clone()]));
}

#[test]
fn flipping_any_byte_of_an_encrypted_payload_is_caught() {
    let alice = key("alice@ofb.net", 1);
    let bob = key("bob@ofb.net", 2);
    let carol = key("carol@ofb.net", 3);
    let to = [loc("bob@ofb.net")];
    let inner = sign(id(1), &to, &body("hello, bob"), &alice).unwrap();
    // Bob's stanza is second, so flips in carol's stanza are covered too.
    let m = message(
        id(1),
        &to,
        &seal(id(1), &to, &inner, &[carol.public(), bob.public()]).unwrap(),
    );
    flip_every_byte(&m, &[&bob], &lookup_in(vec![alice.public().clone()]));
}

#[test]
fn flipping_a_byte_of_another_recipients_stanza_is_tampering() {
    let bob = key("bob@ofb.net", 2);
    let carol = key("carol@ofb.net", 3);
    let to = [loc("bob@ofb.net")];
    let m = message(
        id(1),
        &to,
        &seal(
            id(1),
            &to,
            &Payload::Plain(body("x")),
            &[carol.public(), bob.public()],
        )
        .unwrap(),
    );
    let mut p = m.payload.to_vec();
    p[1 + 32 + 2 + 5] ^= 1; // inside carol's stanza
    assert!(matches!(
        open(&with_payload(&m, p), &[&bob], &lookup_in(vec![])),
        Err(EnvelopeError::Tampered)
    ));
}

#[test]
fn truncations_never_panic() {
    let alice = key("alice@ofb.net", 1);
    let bob = key("bob@ofb.net", 2);
    let to = [loc("bob@ofb.net")];
    let inner = sign(id(1), &to, &body("x"), &alice).unwrap();
    let m = message(
        id(1),
        &to,
        &seal(id(1), &to, &inner, &[bob.public()]).unwrap(),
    );
    for n in 0..m.payload.len() {
        let r = open(
            &with_payload(&m, m.payload[..n].to_vec()),
            &[&bob],
            &lookup_in(vec![]),
        );
        assert!(r.is_err() || r.unwrap().signature != SigState::Valid);
    }
    let m = message(id(1), &to, &inner);
    for n in 0..m.payload.len() {
        let r = open(
            &with_payload(&m, m.payload[..n].to_vec()),
            &[],
            &lookup_in(vec![alice.public().clone()]),
        );
        assert!(r.is_err() || r.unwrap().signature != SigState::Valid);
    }
}

#[test]
fn batch_verification() {
    let keys: Vec<SecretKey> = (1..=8).map(|i| key(&format!("u{i}@ofb.net"), i)).collect();
    let to = [loc("pub@ofb.net")];
    let mut parts = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let m = message(
            id(i as u8),
            &to,
            &sign(id(i as u8), &to, &body("b"), k).unwrap(),
        );
        let Payload::Sealed { raw, .. } = Payload::decode(&m.payload).unwrap() else {
            panic!()
        };
        parts.push(SignedParts::parse(&m, &raw).unwrap());
    }
    let pubs: Vec<_> = keys.iter().map(|k| k.public()).collect();
    assert!(gale_keys::envelope::verify_batch(&parts, &pubs));
    parts[3].signed[40] ^= 1;
    assert!(!gale_keys::envelope::verify_batch(&parts, &pubs));
}
