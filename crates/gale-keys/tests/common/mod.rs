//! Helpers shared by the integration tests: deterministic keys and messages.
#![allow(dead_code)]

use bytes::Bytes;
use gale_keys::{KeyName, KeyStore, KeyTemplate, PublicKey, SecretKey};
use gale_proto::{Fragments, Location, Message, MessageId, Payload, Timestamp, Value};

/// 2026-01-01T00:00:00Z, the creation time of every test key.
pub const CREATED: Timestamp = Timestamp {
    secs: 1_767_225_600,
    nanos: 0,
};

pub fn name(s: &str) -> KeyName {
    KeyName::parse(s).unwrap()
}

pub fn loc(s: &str) -> Location {
    Location::parse(s).unwrap()
}

/// A key with secrets derived from `seed`, and an encryption key.
pub fn key(n: &str, seed: u8) -> SecretKey {
    template_key(KeyTemplate::new(name(n), CREATED), seed)
}

pub fn template_key(t: KeyTemplate, seed: u8) -> SecretKey {
    let enc = t.encryption;
    let x = [seed.wrapping_add(0x80); 32];
    SecretKey::from_seeds(t, &[seed; 32], enc.then_some(&x))
}

/// A group key (no encryption key) with these members.
pub fn group(n: &str, seed: u8, members: &[&str]) -> SecretKey {
    let mut t = KeyTemplate::new(name(n), CREATED);
    t.encryption = false;
    t.members = members.iter().map(|m| m.to_string()).collect();
    template_key(t, seed)
}

/// `child`'s public key signed by `parent`.
pub fn signed(child: &SecretKey, parent: &SecretKey) -> PublicKey {
    let mut p = child.public().clone();
    parent.sign_key(&mut p).unwrap();
    p
}

pub fn body(text: &str) -> Fragments {
    let mut f = Fragments::new();
    f.push_text("message.body", text);
    f.push("id.time", Value::Time(CREATED));
    f
}

pub fn message(id: MessageId, to: &[Location], payload: &Payload) -> Message {
    Message {
        id,
        hops: 0,
        to: to.to_vec(),
        payload: payload.encode().unwrap(),
    }
}

pub fn with_payload(m: &Message, payload: Vec<u8>) -> Message {
    Message {
        payload: Bytes::from(payload),
        ..m.clone()
    }
}

pub fn temp_store() -> (tempfile::TempDir, KeyStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::new(dir.path().join("user"), Some(dir.path().join("sys")));
    (dir, store)
}

/// A lookup over a fixed set of public keys.
pub fn lookup_in(keys: Vec<PublicKey>) -> impl Fn(&KeyName, gale_keys::KeyId) -> Option<PublicKey> {
    move |n, id| keys.iter().find(|k| &k.name == n && k.id() == id).cloned()
}
