//! Per-core cost of Gale's end-to-end crypto, next to the bare primitives.
//!
//! Run: `cargo run --release -p gale-keys --example crypto_bench [SECONDS_PER_ITEM]`
//! (default 2). Each figure is the best of 8 rounds, to resist noise from other
//! processes.
//!
//! Targets (docs/security.md): a signed message costs within 25 % of one ed25519
//! signature; a message signed and encrypted to one recipient within 25 % of one
//! x25519 agreement plus one signature; receiving signed messages at 20,000/s or
//! more per core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey, Verifier};
use gale_keys::envelope::{open, seal, sign, verify_batch, SignedParts};
use gale_keys::{KeyName, KeyTemplate, PublicKey, SecretKey};
use gale_proto::{Fragments, Location, Message, MessageId, Payload, Timestamp, Value};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

/// Operations per second of `f`: the best of several short rounds within `secs`
/// seconds, so that other processes on a shared machine disturb the figure less.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    for _ in 0..50 {
        f();
    }
    const ROUNDS: u32 = 8;
    let budget = Duration::from_secs_f64(secs / f64::from(ROUNDS));
    let mut best = 0.0f64;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget {
            for _ in 0..16 {
                f();
            }
            n += 16;
        }
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn key(name: &str, seed: u8) -> SecretKey {
    let t = KeyTemplate::new(KeyName::parse(name).unwrap(), Timestamp::now());
    SecretKey::from_seeds(t, &[seed; 32], Some(&[seed ^ 0x55; 32]))
}

fn report(what: &str, per_sec: f64) {
    println!("{what:<44} {per_sec:>10.0} /s  {:>8.1} µs", 1e6 / per_sec);
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let alice = key("alice@ofb.net", 1);
    let bob = key("bob@ofb.net", 2);
    let others: Vec<SecretKey> = (10..19).map(|i| key(&format!("u{i}@ofb.net"), i)).collect();
    let to = vec![Location::parse("pub.tv.buffy@ofb.net").unwrap()];
    let id = MessageId::generate();
    let mut body = Fragments::new();
    body.push_text(
        "message.body",
        "Buffy is on in ten minutes, who is coming over?\n",
    );
    body.push_text("message.sender", "Alice");
    body.push("id.time", Value::Time(Timestamp::now()));
    let mut inner_bytes = bytes::BytesMut::new();
    body.encode(&mut inner_bytes).unwrap();
    println!(
        "message: {} bytes of fragments, 1 location; {secs} s per item (best of 8 rounds), one thread\n",
        inner_bytes.len()
    );

    // Bare primitives.
    let sk = SigningKey::from_bytes(&[7; 32]);
    let vk = sk.verifying_key();
    let msg = vec![0xAB; 100 + inner_bytes.len()];
    let sig = sk.sign(&msg);
    let ed_sign = rate(secs, || {
        black_box(sk.sign(black_box(&msg)));
    });
    report("ed25519 sign (bare)", ed_sign);
    let ed_verify = rate(secs, || {
        black_box(vk.verify_strict(black_box(&msg), &sig)).unwrap();
    });
    report("ed25519 verify_strict (bare)", ed_verify);
    let ed_verify_lax = rate(secs, || {
        black_box(vk.verify(black_box(&msg), &sig)).unwrap();
    });
    report(
        "ed25519 verify, not strict (bare, for scale)",
        ed_verify_lax,
    );
    let xs = StaticSecret::from([9; 32]);
    let xp = XPublic::from(&StaticSecret::from([3; 32]));
    let x_agree = rate(secs, || {
        black_box(xs.diffie_hellman(black_box(&xp)));
    });
    report("x25519 agreement (bare)", x_agree);

    // Ours.
    let g_sign = rate(secs, || {
        black_box(sign(id, &to, &body, &alice).unwrap());
    });
    report("sign().unwrap() a message", g_sign);
    let signed = sign(id, &to, &body, &alice).unwrap();
    let msg_signed = Message {
        id,
        hops: 0,
        to: to.clone(),
        payload: signed.encode().unwrap(),
    };
    let alice_pub = alice.public().clone();
    let lookup = |_: &KeyName, _| Some(alice_pub.clone());
    let g_open_signed = rate(secs, || {
        black_box(open(&msg_signed, &[], &lookup)).unwrap();
    });
    report("open() a signed message", g_open_signed);

    let g_seal1 = rate(secs, || {
        black_box(seal(id, &to, &signed, &[bob.public()])).unwrap();
    });
    report("seal() a signed payload to 1", g_seal1);
    let mut ten: Vec<&PublicKey> = others.iter().map(|k| k.public()).collect();
    ten.push(bob.public());
    let g_seal10 = rate(secs, || {
        black_box(seal(id, &to, &signed, &ten)).unwrap();
    });
    report("seal() a signed payload to 10", g_seal10);
    let g_sign_seal1 = rate(secs, || {
        let s = sign(id, &to, &body, &alice).unwrap();
        black_box(seal(id, &to, &s, &[bob.public()])).unwrap();
    });
    report(
        "sign().unwrap() + seal() to 1 (sender's whole cost)",
        g_sign_seal1,
    );

    let sealed1 = Message {
        id,
        hops: 0,
        to: to.clone(),
        payload: seal(id, &to, &signed, &[bob.public()])
            .unwrap()
            .encode()
            .unwrap(),
    };
    let g_open_sealed1 = rate(secs, || {
        black_box(open(&sealed1, &[&bob], &lookup)).unwrap();
    });
    report("open() sealed to 1, signed inside", g_open_sealed1);
    let sealed10 = Message {
        payload: seal(id, &to, &signed, &ten).unwrap().encode().unwrap(),
        ..sealed1.clone()
    };
    let g_open_sealed10 = rate(secs, || {
        black_box(open(&sealed10, &[&bob], &lookup)).unwrap();
    });
    report("open() sealed to 10 (ours last), signed", g_open_sealed10);

    // Batch verification of 64 signed messages from 8 senders.
    let senders: Vec<SecretKey> = (20..28).map(|i| key(&format!("s{i}@ofb.net"), i)).collect();
    let mut parts = Vec::new();
    let mut keys = Vec::new();
    for i in 0..64 {
        let s = &senders[i % senders.len()];
        let mid = MessageId::generate();
        let m = Message {
            id: mid,
            hops: 0,
            to: to.clone(),
            payload: sign(mid, &to, &body, s).unwrap().encode().unwrap(),
        };
        let Payload::Sealed { raw, .. } = Payload::decode(&m.payload).unwrap() else {
            unreachable!()
        };
        parts.push(SignedParts::parse(&m, &raw).unwrap());
        keys.push(s.public());
    }
    let batch = 64.0
        * rate(secs, || {
            assert!(verify_batch(black_box(&parts), &keys));
        });
    report("verify_batch, per message (batches of 64)", batch);

    println!();
    println!(
        "signed message vs one signature:          {:+.1} % (target within 25 %)",
        (ed_sign / g_sign - 1.0) * 100.0
    );
    let base = 1.0 / (1.0 / x_agree + 1.0 / ed_sign);
    println!(
        "sign+seal to 1 vs x25519 + one signature: {:+.1} % (target within 25 %)",
        (base / g_sign_seal1 - 1.0) * 100.0
    );
    println!(
        "receiving signed messages:                {:.0} /s per core (target >= 20,000)",
        g_open_signed
    );
    println!(
        "open() signed vs bare verify_strict:      {:+.1} %",
        (ed_verify / g_open_signed - 1.0) * 100.0
    );
}
