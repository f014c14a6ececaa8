//! Key names: which location a key speaks for, and who signs it.
//!
//! A key is named like the locations it controls:
//! - `egnor@ofb.net`: one location (a person);
//! - `pub.*@ofb.net`: a wildcard, controlling every location below `pub@ofb.net`;
//!   `*` may only be the whole last segment of the local part;
//! - `ofb.net`, `net`: a bare domain, the key that signs the keys of that domain.
//!
//! A key's signer follows from its name, as in Gale ([`KeyName::parent`]):
//! `a.b.c@dom` → `a.b@dom`, `a@dom` → `dom`, `x.y.z` → `y.z`, and a single label has
//! no parent: it can only be trusted by installing it as an anchor. There is no
//! global ROOT key.
//!
//! Validation reuses [`gale_proto::Location`]'s rules (characters, lengths, lower-case
//! domains), so every key name is also a valid location once `*` is read as a segment.

use std::fmt;
use std::str::FromStr;

use gale_proto::{Location, LocationError};
use thiserror::Error;

/// A validated key name in canonical form (domain in lower case).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(String);

/// Why a string is not a valid key name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("key name {name:?} is not valid: {source}")]
    Invalid {
        name: String,
        #[source]
        source: LocationError,
    },
    #[error("key name {0:?}: '*' may only stand as the whole last segment before '@', as in pub.*@example.org")]
    BadWildcard(String),
    #[error("key name is empty; give a location such as you@example.org, or a domain such as example.org")]
    Empty,
}

impl KeyName {
    /// Parses a key name leniently (trims white space, lower-cases the domain, reads
    /// `@example.org` as the domain key `example.org`).
    pub fn parse(s: &str) -> Result<KeyName, NameError> {
        let s = s.trim();
        if s.is_empty() || s == "@" {
            return Err(NameError::Empty);
        }
        let invalid = |source| NameError::Invalid {
            name: s.to_string(),
            source,
        };
        match s.find('@') {
            Some(0) | None => {
                let domain = s.trim_start_matches('@');
                let loc = Location::parse(&format!("@{domain}")).map_err(invalid)?;
                Ok(KeyName(loc.domain().to_string()))
            }
            Some(_) => {
                let loc = Location::parse(s).map_err(invalid)?;
                let segs: Vec<&str> = loc.local().split('.').collect();
                let last = segs.len() - 1;
                for (i, seg) in segs.iter().enumerate() {
                    if seg.contains('*') && (i != last || *seg != "*") {
                        return Err(NameError::BadWildcard(s.to_string()));
                    }
                }
                Ok(KeyName(loc.as_str().to_string()))
            }
        }
    }

    /// The key name that controls exactly `loc` (`@ofb.net` → `ofb.net`).
    pub fn for_location(loc: &Location) -> KeyName {
        if loc.local().is_empty() {
            KeyName(loc.domain().to_string())
        } else {
            KeyName(loc.as_str().to_string())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part (the whole name for a domain key).
    pub fn domain(&self) -> &str {
        match self.0.find('@') {
            Some(at) => &self.0[at + 1..],
            None => &self.0,
        }
    }

    /// The local part, or `None` for a domain key.
    pub fn local(&self) -> Option<&str> {
        self.0.find('@').map(|at| &self.0[..at])
    }

    /// True for `…*@domain` names.
    pub fn is_wildcard(&self) -> bool {
        self.local().is_some_and(|l| l == "*" || l.ends_with(".*"))
    }

    /// True for a domain key with a single label (`net`): it has no parent.
    pub fn is_top_level(&self) -> bool {
        self.local().is_none() && !self.0.contains('.')
    }

    /// The name of the key that signs this one, by Gale's rule; `None` for a single
    /// label.
    pub fn parent(&self) -> Option<KeyName> {
        match self.local() {
            Some(local) => Some(match local.rfind('.') {
                Some(dot) => KeyName(format!("{}@{}", &local[..dot], self.domain())),
                None => KeyName(self.domain().to_string()),
            }),
            None => self
                .0
                .find('.')
                .map(|dot| KeyName(self.0[dot + 1..].to_string())),
        }
    }

    /// The key names that may control `loc`, most general first: `*@dom`,
    /// `a.*@dom`, `a.b.*@dom`, ..., and last the exact name. A wildcard never stands
    /// for the location it ends at (`a.*@dom` controls `a.b@dom`, not `a@dom`).
    pub fn candidates(loc: &Location) -> Vec<KeyName> {
        let mut out = Vec::new();
        if !loc.local().is_empty() {
            let segs: Vec<&str> = loc.local().split('.').collect();
            for i in 0..segs.len() {
                let prefix = segs[..i]
                    .iter()
                    .map(|s| format!("{s}."))
                    .collect::<String>();
                out.push(KeyName(format!("{prefix}*@{}", loc.domain())));
            }
        }
        out.push(KeyName::for_location(loc));
        out
    }

    /// The file-name form of this name (without extension): bytes outside
    /// `[A-Za-z0-9._@+-]` become `%XX` (upper-case hex), so `*` is `%2A`, `%` is
    /// `%25` and no name can contain `/` or start with `.`.
    pub fn file_stem(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// Reverses [`KeyName::file_stem`]; `None` if `stem` is not one.
    pub fn from_file_stem(stem: &str) -> Option<KeyName> {
        let mut bytes = Vec::with_capacity(stem.len());
        let mut it = stem.bytes();
        while let Some(b) = it.next() {
            if b == b'%' {
                bytes.push(crate::hex::byte(it.next()?, it.next()?)?);
            } else {
                bytes.push(b);
            }
        }
        let name = KeyName::parse(&String::from_utf8(bytes).ok()?).ok()?;
        (name.file_stem() == stem).then_some(name)
    }
}

impl FromStr for KeyName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyName::parse(s)
    }
}

impl TryFrom<&str> for KeyName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        KeyName::parse(s)
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> KeyName {
        KeyName::parse(s).unwrap()
    }

    #[test]
    fn parents_follow_gale() {
        let p = |s: &str| n(s).parent().map(|k| k.to_string());
        assert_eq!(p("a.b.c@dom.org").as_deref(), Some("a.b@dom.org"));
        assert_eq!(p("egnor@ofb.net").as_deref(), Some("ofb.net"));
        assert_eq!(p("pub.*@ofb.net").as_deref(), Some("pub@ofb.net"));
        assert_eq!(p("*@ofb.net").as_deref(), Some("ofb.net"));
        assert_eq!(p("x.y.z").as_deref(), Some("y.z"));
        assert_eq!(p("ofb.net").as_deref(), Some("net"));
        assert_eq!(p("net"), None);
        assert!(n("net").is_top_level());
        assert!(!n("ofb.net").is_top_level());
    }

    #[test]
    fn parse_normalises_and_rejects() {
        assert_eq!(n(" Egnor@OFB.Net ").as_str(), "Egnor@ofb.net");
        assert_eq!(n("@ofb.net").as_str(), "ofb.net");
        assert_eq!(n("OFB.NET").as_str(), "ofb.net");
        assert!(n("pub.*@ofb.net").is_wildcard());
        assert!(n("*@ofb.net").is_wildcard());
        assert!(!n("pub@ofb.net").is_wildcard());
        for bad in [
            "",
            "a*@x.org",
            "*.a@x.org",
            "a.**@x.org",
            "a/b@x.org",
            "a@@x",
            "a..b@x",
        ] {
            assert!(KeyName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            KeyName::parse("a*@x.org"),
            Err(NameError::BadWildcard(_))
        ));
    }

    #[test]
    fn candidates_general_first() {
        let loc = Location::parse("pub.food.bitter@ofb.net").unwrap();
        let got: Vec<String> = KeyName::candidates(&loc)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "*@ofb.net",
                "pub.*@ofb.net",
                "pub.food.*@ofb.net",
                "pub.food.bitter@ofb.net"
            ]
        );
        let dom = Location::parse("@ofb.net").unwrap();
        assert_eq!(KeyName::candidates(&dom), vec![n("ofb.net")]);
    }

    #[test]
    fn file_stems_round_trip() {
        for s in [
            "pub.*@ofb.net",
            "ofb.net",
            "a%b@x.org",
            "ünï@x.org",
            "a+b_c-d@x.org",
        ] {
            let k = n(s);
            let stem = k.file_stem();
            assert!(!stem.contains('/') && !stem.contains('*') && !stem.starts_with('.'));
            assert_eq!(KeyName::from_file_stem(&stem), Some(k), "{s}");
        }
        assert_eq!(n("pub.*@ofb.net").file_stem(), "pub.%2A@ofb.net");
        assert_eq!(KeyName::from_file_stem("%zz"), None);
        assert_eq!(KeyName::from_file_stem("pub.*@ofb.net"), None);
    }
}
