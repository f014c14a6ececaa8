//! The key store on disk and the trust rules.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use gale_keys::envelope::{open, seal, sign};
use gale_keys::{Dir, KeyTemplate, Learned, Recipients, SigState, StoreError, Trust};
use gale_proto::{MessageId, Timestamp};

const NOW: Timestamp = Timestamp {
    secs: CREATED.secs + 1000,
    nanos: 0,
};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn secret_files_are_private_and_not_overwritten() {
    let (_t, store) = temp_store();
    let k = key("egnor@ofb.net", 1);
    let path = store.write_secret(&k, false).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let other = key("egnor@ofb.net", 2);
    let err = store.write_secret(&other, false).unwrap_err();
    assert!(matches!(err, StoreError::SecretExists { .. }));
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(
        store
            .secret(&name("egnor@ofb.net"))
            .unwrap()
            .unwrap()
            .0
            .id(),
        k.id()
    );
    store.write_secret(&other, true).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        store
            .secret(&name("egnor@ofb.net"))
            .unwrap()
            .unwrap()
            .0
            .id(),
        other.id()
    );
    // No temporary files left behind.
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn readable_secret_files_are_refused() {
    let (_t, store) = temp_store();
    let path = store.write_secret(&key("egnor@ofb.net", 1), false).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = store.secret(&name("egnor@ofb.net")).unwrap_err();
    assert!(matches!(err, StoreError::SecretReadable { .. }));
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn damaged_or_misnamed_key_files_are_errors_naming_the_file() {
    let (_t, store) = temp_store();
    let bob = key("bob@ofb.net", 2);
    let path = store.write_public(Dir::Local, bob.public(), false).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, &bytes).unwrap();
    // Damaged: an error naming the file, not "no key" (which would send in clear).
    let err = store.find(&name("bob@ofb.net")).unwrap_err();
    assert!(matches!(err, StoreError::Key { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("damaged"), "{err}");
    assert!(store.resolve(&loc("bob@ofb.net"), NOW).is_err());
    assert!(store.recipients(&loc("bob@ofb.net"), NOW).is_err());

    // alice's secret key file holding bob's key: never used as alice's key.
    let alice_file = store.secret_path(&name("alice@ofb.net"));
    let bob_secret = store.write_secret(&bob, false).unwrap();
    std::fs::rename(&bob_secret, &alice_file).unwrap();
    let err = store.secret(&name("alice@ofb.net")).unwrap_err();
    assert!(matches!(err, StoreError::WrongName { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("holds the key of bob@ofb.net, not of alice@ofb.net"),
        "{text}"
    );
    assert!(text.contains(&alice_file.display().to_string()), "{text}");
    assert!(store.secrets().is_err());

    // A public file named for carol holding bob's key.
    let carol_file = store.public_path(Dir::Cache, &name("carol@ofb.net"), false);
    std::fs::create_dir_all(carol_file.parent().unwrap()).unwrap();
    std::fs::write(&carol_file, bob.public().encode()).unwrap();
    let err = store.find(&name("carol@ofb.net")).unwrap_err();
    assert!(matches!(err, StoreError::WrongName { .. }), "{err:?}");
}

#[test]
fn an_unusable_key_directory_is_an_error() {
    // GALE_DIR is a file: nothing under it can be read, and that is not "no key".
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let store = gale_keys::KeyStore::new(&file, None);
    let err = store.find(&name("egnor@ofb.net")).unwrap_err();
    assert!(matches!(err, StoreError::Read { .. }), "{err:?}");
    assert!(store.own_key_names().is_err());
    assert!(store.secret(&name("egnor@ofb.net")).is_err());
}

#[test]
fn wildcard_names_are_escaped_on_disk() {
    let (_t, store) = temp_store();
    let k = key("pub.*@ofb.net", 1);
    let p = store.write_public(Dir::Local, k.public(), false).unwrap();
    assert!(p.ends_with("auth/local/pub.%2A@ofb.net.gpub"), "{p:?}");
    assert_eq!(store.find(&name("pub.*@ofb.net")).unwrap().len(), 1);
}

/// `net` is trusted; `ofb.net` is signed by `net`; `egnor@ofb.net` by `ofb.net`.
fn chain_store() -> (
    tempfile::TempDir,
    gale_keys::KeyStore,
    [gale_keys::SecretKey; 3],
) {
    let (t, store) = temp_store();
    let net = key("net", 1);
    let ofb = key("ofb.net", 2);
    let egnor = key("egnor@ofb.net", 3);
    store
        .write_public(Dir::Trusted, net.public(), false)
        .unwrap();
    store
        .write_public(Dir::Cache, &signed(&ofb, &net), false)
        .unwrap();
    (t, store, [net, ofb, egnor])
}

#[test]
fn chains_verify_to_an_anchor() {
    let (_t, store, [net, ofb, egnor]) = chain_store();
    let e = signed(&egnor, &ofb);
    let chain = store.verify_chain(&e, NOW);
    assert_eq!(
        chain.trust,
        Trust::Verified {
            anchor: name("net")
        }
    );
    let names: Vec<String> = chain.links.iter().map(|k| k.name.to_string()).collect();
    assert_eq!(names, ["egnor@ofb.net", "ofb.net", "net"]);
    assert!(store.verify(net.public(), NOW).is_verified());
    // Unsigned: unverified, with advice.
    match store.verify(egnor.public(), NOW) {
        Trust::Unverified { why } => assert!(why.contains("gkey sign"), "{why}"),
        t => panic!("{t:?}"),
    }
    // A top-level key that is not an anchor.
    assert!(matches!(
        store.verify(key("org", 9).public(), NOW),
        Trust::Unverified { .. }
    ));
}

#[test]
fn altered_or_wrongly_signed_chains_are_rejected() {
    let (_t, store, [_net, ofb, egnor]) = chain_store();
    let mut altered = signed(&egnor, &ofb);
    altered.owner = Some("Mallory".into());
    assert_eq!(
        store.verify(&altered, NOW),
        Trust::BadSignature {
            which: name("egnor@ofb.net")
        }
    );

    // Signed by an impostor's `ofb.net` key: that key has no chain to `net`.
    let fake_ofb = key("ofb.net", 7);
    store
        .write_public(Dir::Local, fake_ofb.public(), false)
        .unwrap();
    let e = signed(&egnor, &fake_ofb);
    assert!(matches!(store.verify(&e, NOW), Trust::Unverified { .. }));

    // A signature that claims the real `ofb.net` id but was made by another key.
    let mut forged = signed(&egnor, &fake_ofb);
    forged.signatures[0].signer_id = ofb.id();
    assert_eq!(
        store.verify(&forged, NOW),
        Trust::BadSignature {
            which: name("egnor@ofb.net")
        }
    );
}

#[test]
fn expiry_is_checked_along_the_chain() {
    let (_t, store) = temp_store();
    let net = key("net", 1);
    store
        .write_public(Dir::Trusted, net.public(), false)
        .unwrap();
    let mut t = KeyTemplate::new(name("ofb.net"), CREATED);
    t.expires = Some(Timestamp {
        secs: CREATED.secs + 500,
        nanos: 0,
    });
    let ofb = template_key(t, 2);
    store
        .write_public(Dir::Cache, &signed(&ofb, &net), false)
        .unwrap();
    let e = signed(&key("egnor@ofb.net", 3), &ofb);
    assert!(store.verify(&e, CREATED).is_verified());
    assert_eq!(
        store.verify(&e, NOW),
        Trust::Expired {
            which: name("ofb.net")
        }
    );
}

#[test]
fn key_changes_are_reported() {
    let (_t, store) = temp_store();
    let n = name("egnor@ofb.net");
    let (a, b) = (key("egnor@ofb.net", 1).id(), key("egnor@ofb.net", 2).id());
    assert_eq!(store.note_seen(&n, a).unwrap(), None);
    assert_eq!(store.note_seen(&n, a).unwrap(), None);
    let changed = store.note_seen(&n, b).unwrap().unwrap();
    assert_eq!((changed.old.clone(), changed.new), (vec![a], b));
    assert!(changed.to_string().contains("HAS CHANGED"));
    assert_eq!(store.note_seen(&n, b).unwrap(), None);
    assert_eq!(store.note_seen(&name("other@ofb.net"), b).unwrap(), None);
}

#[test]
fn a_verified_key_is_never_displaced_by_an_unverified_one() {
    let (_t, store, [_net, ofb, egnor]) = chain_store();
    let good = signed(&egnor, &ofb);
    let n = name("egnor@ofb.net");
    assert!(matches!(
        store.learn(&good, NOW).unwrap(),
        Learned::Stored(_)
    ));
    let stranger = key("egnor@ofb.net", 9);
    match store.learn(stranger.public(), NOW).unwrap() {
        Learned::Refused { kept } => assert_eq!(kept, good.id()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.lookup(&n, good.id()).unwrap().unwrap().id(),
        good.id()
    );
    assert!(store.lookup(&n, stranger.id()).unwrap().is_none());
    // The stranger's key is a mismatch for the name; the verified key is not.
    assert_eq!(
        store.verified_ids_besides(&n, stranger.id(), NOW).unwrap(),
        [good.id()]
    );
    assert!(store
        .verified_ids_besides(&n, good.id(), NOW)
        .unwrap()
        .is_empty());
    // A verified new key does replace it, and is reported as a change.
    let renewed = signed(&key("egnor@ofb.net", 10), &ofb);
    match store.learn(&renewed, NOW).unwrap() {
        Learned::Stored(done) => assert!(done.changed.is_some()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn resolve_prefers_the_most_general_verified_wildcard() {
    let (_t, store, [_net, ofb, _]) = chain_store();
    let exact = key("pub.tv@ofb.net", 4);
    let pubw = key("pub.*@ofb.net", 5);
    store
        .write_public(Dir::Cache, exact.public(), false)
        .unwrap(); // unsigned
    let l = loc("pub.tv@ofb.net");
    assert_eq!(store.resolve(&l, NOW).unwrap().unwrap().id(), exact.id());
    // pub.*@ofb.net's parent is pub@ofb.net; sign that one with ofb.net.
    let pub_key = key("pub@ofb.net", 6);
    store
        .write_public(Dir::Cache, &signed(&pub_key, &ofb), false)
        .unwrap();
    store
        .write_public(Dir::Cache, &signed(&pubw, &pub_key), false)
        .unwrap();
    assert_eq!(store.resolve(&l, NOW).unwrap().unwrap().id(), pubw.id());
    assert!(store
        .resolve(&loc("nobody@else.org"), NOW)
        .unwrap()
        .is_none());
}

#[test]
fn group_recipients_expand_members() {
    let (_t, store, [_net, ofb, _]) = chain_store();
    let alice = key("alice@ofb.net", 10);
    let bob = key("bob@ofb.net", 11);
    let eve = key("eve@ofb.net", 12);
    for k in [&alice, &bob, &eve] {
        store
            .write_public(Dir::Cache, &signed(k, &ofb), false)
            .unwrap();
    }
    let inner = group("inner@ofb.net", 13, &["bob@ofb.net", "friends@ofb.net"]);
    let friends = group("friends@ofb.net", 14, &["alice@ofb.net", "inner@ofb.net"]);
    let public = group("pub@ofb.net", 15, &["", "alice@ofb.net"]);
    for g in [&inner, &friends, &public] {
        store
            .write_public(Dir::Cache, &signed(g, &ofb), false)
            .unwrap();
    }

    let to = [loc("friends@ofb.net")];
    let Recipients::Private(keys) = store.recipients(&to[0], NOW).unwrap() else {
        panic!("friends is private")
    };
    let mut ids: Vec<_> = keys.iter().map(|k| k.id()).collect();
    ids.sort();
    let mut want = vec![alice.id(), bob.id()];
    want.sort();
    assert_eq!(ids, want);

    let id = MessageId([3; 16]);
    let refs: Vec<_> = keys.iter().collect();
    let sealed = seal(
        id,
        &to,
        &sign(id, &to, &body("party"), &alice).unwrap(),
        &refs,
    )
    .unwrap();
    let m = message(id, &to, &sealed);
    let look = |n: &gale_keys::KeyName, i| store.lookup(n, i).unwrap();
    for who in [&alice, &bob] {
        let o = open(&m, &[who], &look).unwrap();
        assert_eq!((o.encrypted, o.signature), (true, SigState::Valid));
        assert!(store
            .verify(o.signer_key.as_ref().unwrap(), NOW)
            .is_verified());
    }
    assert!(open(&m, &[&eve], &look).is_err());

    assert_eq!(
        store.recipients(&loc("pub@ofb.net"), NOW).unwrap(),
        Recipients::Public
    );
    assert_eq!(
        store.recipients(&loc("x@nowhere.org"), NOW).unwrap(),
        Recipients::NoKey
    );
    let Recipients::Private(one) = store.recipients(&loc("bob@ofb.net"), NOW).unwrap() else {
        panic!()
    };
    assert_eq!(one.len(), 1);

    let broken = group("broken@ofb.net", 16, &["ghost@ofb.net"]);
    store
        .write_public(Dir::Cache, &signed(&broken, &ofb), false)
        .unwrap();
    let err = store.recipients(&loc("broken@ofb.net"), NOW).unwrap_err();
    assert!(err.to_string().contains("ghost@ofb.net"), "{err}");
}

#[test]
fn signatures_merge_into_our_secret_key() {
    let (_t, store, [_net, ofb, egnor]) = chain_store();
    store.write_secret(&egnor, false).unwrap();
    let (mut mine, _) = store.secret(egnor.name()).unwrap().unwrap();
    // Holding the secret does not make an unsigned key trusted.
    assert!(matches!(
        store.verify(mine.public(), NOW),
        Trust::Unverified { .. }
    ));
    assert_eq!(mine.merge_signatures(&signed(&egnor, &ofb)).unwrap(), 1);
    store.write_secret(&mine, true).unwrap();
    let (back, _) = store.secret(egnor.name()).unwrap().unwrap();
    assert_eq!(back.public().signatures.len(), 1);
    // The merged key verifies through ofb.net and net.
    assert!(store.verify(back.public(), NOW).is_verified());
    assert!(mine
        .merge_signatures(&signed(&key("egnor@ofb.net", 9), &ofb))
        .is_err());
}
