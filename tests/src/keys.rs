//! Keys for end-to-end tests: a domain that signs its users' keys, handing
//! public keys from one user to another, a running gdomain, and raw key queries.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{bin, Lines, User};

/// The owner of the domain key `example.org`, who signs the users' keys.
pub struct Domain {
    pub admin: User,
    /// The domain's public key, in a file.
    pub public: PathBuf,
}

/// A new domain key for `example.org`.
pub fn domain() -> Domain {
    let admin = User::new("admin@example.org");
    admin.gkey_ok(&["gen", "example.org"], b"");
    let public = admin.gale_dir().join("example.org.gpub");
    std::fs::write(&public, admin.gkey_ok(&["export", "example.org"], b"")).unwrap();
    Domain { admin, public }
}

impl Domain {
    /// A user whose key the domain has signed.
    pub fn member(&self, id: &str) -> User {
        let u = User::new(id);
        u.gkey_ok(&["gen", id], b"");
        self.sign(&u);
        u
    }

    /// Has the domain sign `u`'s current key, and installs the signed key.
    pub fn sign(&self, u: &User) {
        let public = u.gkey_ok(&["export", &u.id], b"");
        let signed = self.admin.gkey_ok(&["sign"], &public);
        u.gkey_ok(&["import"], &signed);
    }

    /// Makes the domain key one of `u`'s trust anchors.
    pub fn trusted_by(&self, u: &User) {
        u.gkey_ok(&["trust", self.public.to_str().unwrap()], b"");
    }
}

/// Gives `to` a copy of `from`'s public key (as if fetched earlier).
pub fn introduce(from: &User, to: &User) {
    let public = from.gkey_ok(&["export", &from.id], b"");
    to.gkey_ok(&["import"], &public);
}

/// A running gdomain for example.org, killed on drop.
pub struct Gdomain(Child);

impl Drop for Gdomain {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts gdomain for example.org as `admin`, and waits until it listens.
pub fn gdomain(admin: &User, server: &str) -> Gdomain {
    let mut cmd = Command::new(bin("gdomain"));
    let mut child = admin
        .env(&mut cmd)
        .args(["-s", server, "example.org"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gdomain");
    let stderr = Lines::spawn_reader(child.stderr.take().expect("piped"));
    stderr.wait_for("gdomain: listening on");
    std::mem::forget(stderr);
    Gdomain(child)
}

/// The location key queries for `user@example.org` go to.
pub fn query_location(user: &str) -> String {
    format!("_gale.query.{user}")
}

/// A key query for `name` (`alice@example.org`), as clients send it
/// (docs/security.md §12.2): unsigned, with `question.key`.
pub fn key_query(name: &str) -> gale_proto::Message {
    let mut f = gale_proto::Fragments::new();
    f.push_text("question.key", name);
    let to = vec![gale_proto::Location::parse(&query_location(name)).unwrap()];
    gale_proto::Message::new(to, gale_proto::Payload::Plain(f).encode().unwrap())
}
