//! Locations: `local.part@domain`, as in later Gale.
//!
//! The local part is a list of dot-separated segments; a subscription to a location
//! covers every location below it at segment boundaries (`pub.tv@ofb.net` covers
//! `pub.tv.buffy@ofb.net` but not `pub.tvguide@ofb.net`). An empty local part
//! (`@ofb.net`) names the whole domain. Domains are compared case-insensitively and
//! kept in lower case. `_gale.*` local parts are reserved for the protocol.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

use crate::limits::{MAX_DOMAIN_LABEL, MAX_LOCATION_LEN, MAX_SEGMENTS};

/// A validated location in canonical form. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    text: Arc<str>,
    at: usize,
}

/// Why a string is not a valid location.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LocationError {
    #[error("empty location")]
    Empty,
    #[error("location is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("location {0:?} has no '@domain' (write it as name@example.org)")]
    MissingDomain(String),
    #[error("location {0:?} has more than one '@'")]
    MultipleAt(String),
    #[error(
        "location {0:?} has an empty segment (two dots in a row, or a dot at the start or end)"
    )]
    EmptySegment(String),
    #[error("location {0:?} has more than {max} segments", max = MAX_SEGMENTS)]
    TooManySegments(String),
    #[error("location {loc:?} contains {ch:?}, which is not allowed in a location")]
    BadChar { loc: String, ch: char },
    #[error("location {loc:?} has an invalid domain: {why}")]
    BadDomain { loc: String, why: &'static str },
    #[error("location {0:?} is in the reserved _gale namespace but is not one of _gale.notice, _gale.query, _gale.key or _gale.server")]
    UnknownReserved(String),
    #[error("location {0:?} is not in canonical form (lower-case domain, no trailing dot)")]
    NotCanonical(String),
}

/// The reserved `_gale.*` locations and what they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// `_gale.notice.<who>`: presence notices.
    Notice,
    /// `_gale.query.<key>`: key queries, pings and receipt requests.
    Query,
    /// `_gale.key.<key>`: key answers.
    Key,
    /// `_gale.server`: server error reports.
    Server,
    /// `_gale` itself (covers all of the above for a domain).
    Root,
}

fn bad_local_char(c: char) -> bool {
    c.is_control() || c.is_whitespace() || matches!(c, '@' | ':' | '/' | '\\' | '"' | '<' | '>')
}

fn check_domain(loc: &str, domain: &str) -> Result<(), LocationError> {
    let bad = |why| LocationError::BadDomain {
        loc: loc.to_string(),
        why,
    };
    if domain.is_empty() {
        return Err(bad("it is empty"));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label"));
        }
        if label.len() > MAX_DOMAIN_LABEL {
            return Err(bad("a label is longer than 63 bytes"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("only letters, digits, '-' and '_' are allowed"));
        }
    }
    Ok(())
}

/// Validates `s` as a location in canonical form, without allocating (the server's
/// hot path). Returns the byte index of the `@`.
pub fn check_canonical(s: &str) -> Result<usize, LocationError> {
    let at = check_shape(s)?;
    let domain = &s[at + 1..];
    if domain.bytes().any(|b| b.is_ascii_uppercase()) || s.ends_with('.') {
        return Err(LocationError::NotCanonical(s.to_string()));
    }
    Ok(at)
}

fn check_shape(s: &str) -> Result<usize, LocationError> {
    if s.is_empty() {
        return Err(LocationError::Empty);
    }
    if s.len() > MAX_LOCATION_LEN {
        return Err(LocationError::TooLong {
            len: s.len(),
            max: MAX_LOCATION_LEN,
        });
    }
    let at = s
        .find('@')
        .ok_or_else(|| LocationError::MissingDomain(s.to_string()))?;
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if domain.contains('@') {
        return Err(LocationError::MultipleAt(s.to_string()));
    }
    if let Some(ch) = local.chars().find(|&c| bad_local_char(c)) {
        return Err(LocationError::BadChar {
            loc: s.to_string(),
            ch,
        });
    }
    if !local.is_empty() {
        let mut n = 0;
        for seg in local.split('.') {
            if seg.is_empty() {
                return Err(LocationError::EmptySegment(s.to_string()));
            }
            n += 1;
        }
        if n > MAX_SEGMENTS {
            return Err(LocationError::TooManySegments(s.to_string()));
        }
        if local == "_gale" || local.starts_with("_gale.") {
            let second = local.split('.').nth(1);
            if !matches!(second, None | Some("notice" | "query" | "key" | "server")) {
                return Err(LocationError::UnknownReserved(s.to_string()));
            }
        }
    }
    check_domain(s, domain)?;
    Ok(at)
}

impl Location {
    /// Parses a location leniently: surrounding white space is trimmed, one trailing
    /// dot on the domain is dropped (an absolute DNS name) and the domain is
    /// lower-cased. A dot at either end of the local part is refused: `pub.@x.org`
    /// is as likely a cut-off `pub.tv@x.org` as `pub@x.org` (Gale dropped it).
    pub fn parse(s: &str) -> Result<Location, LocationError> {
        let s = s.trim();
        let Some(at) = s.find('@') else {
            return Err(if s.is_empty() {
                LocationError::Empty
            } else {
                LocationError::MissingDomain(s.to_string())
            });
        };
        let local = &s[..at];
        let domain = s[at + 1..].strip_suffix('.').unwrap_or(&s[at + 1..]);
        let domain = domain.to_ascii_lowercase();
        let canon = format!("{local}@{domain}");
        let at = check_canonical(&canon)?;
        Ok(Location {
            text: canon.into(),
            at,
        })
    }

    /// Accepts only the canonical form, as required on the wire.
    pub fn from_canonical(s: &str) -> Result<Location, LocationError> {
        let at = check_canonical(s)?;
        Ok(Location { text: s.into(), at })
    }

    /// Parses `s`, appending `@default_domain` when it has no domain (Gale's rule).
    /// An empty `s` is refused, not taken as the whole default domain: that is
    /// written `@domain`, never by accident (an unset shell variable).
    pub fn parse_with_default(s: &str, default_domain: &str) -> Result<Location, LocationError> {
        if s.trim().is_empty() {
            return Err(LocationError::Empty);
        }
        if s.contains('@') {
            Location::parse(s)
        } else {
            Location::parse(&format!("{}@{default_domain}", s.trim()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The part before the `@` (empty for a whole-domain location).
    pub fn local(&self) -> &str {
        &self.text[..self.at]
    }

    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }

    /// The whole-domain location (`@domain`) this one lies under, or `None` if this
    /// already is one.
    pub fn domain_location(&self) -> Option<Location> {
        if self.local().is_empty() {
            return None;
        }
        Location::from_canonical(&format!("@{}", self.domain())).ok()
    }

    /// The local part's segments, outermost first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        let local = self.local();
        local.split('.').filter(move |_| !local.is_empty())
    }

    /// True if a subscription to `self` covers `other`: same domain, and `self`'s local
    /// part is `other`'s or a whole-segment prefix of it.
    pub fn covers(&self, other: &Location) -> bool {
        if self.domain() != other.domain() {
            return false;
        }
        let (mine, theirs) = (self.local(), other.local());
        mine.is_empty()
            || theirs == mine
            || (theirs.len() > mine.len()
                && theirs.starts_with(mine)
                && theirs.as_bytes()[mine.len()] == b'.')
    }

    /// Which reserved `_gale` location this is, if any.
    pub fn reserved(&self) -> Option<Reserved> {
        let mut segs = self.segments();
        if segs.next() != Some("_gale") {
            return None;
        }
        Some(match segs.next() {
            None => Reserved::Root,
            Some("notice") => Reserved::Notice,
            Some("query") => Reserved::Query,
            Some("key") => Reserved::Key,
            Some("server") => Reserved::Server,
            Some(_) => unreachable!("rejected by validation"),
        })
    }
}

impl FromStr for Location {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Location::parse(s)
    }
}

impl TryFrom<&str> for Location {
    type Error = LocationError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Location::parse(s)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({})", &self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Location {
        Location::parse(s).unwrap()
    }

    #[test]
    fn parses_and_canonicalises() {
        let l = loc(" pub.tv.buffy@OFB.net ");
        assert_eq!(l.as_str(), "pub.tv.buffy@ofb.net");
        assert_eq!(l.local(), "pub.tv.buffy");
        assert_eq!(l.domain(), "ofb.net");
        assert_eq!(l.segments().collect::<Vec<_>>(), ["pub", "tv", "buffy"]);
        assert_eq!(loc("egnor@ofb.net.").as_str(), "egnor@ofb.net");
        assert_eq!(loc("@ofb.net").segments().count(), 0);
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            ("", "empty location"),
            ("egnor", "has no '@domain'"),
            ("a@b@c", "more than one '@'"),
            ("a..b@x.org", "empty segment"),
            (".a@x.org", "empty segment"),
            ("a.@x.org", "a dot at the start or end"),
            ("a@x.org..", "empty label"),
            ("a b@x.org", "contains ' '"),
            ("a:b@x.org", "contains ':'"),
            ("a@", "invalid domain: it is empty"),
            ("a@x..org", "empty label"),
            ("a@-x.org", "starts or ends with '-'"),
            ("a@x!.org", "only letters, digits"),
            ("_gale.bogus@x.org", "reserved _gale namespace"),
        ];
        for (input, want) in cases {
            let err = Location::parse(input).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{input:?}: {err:?} should contain {want:?}"
            );
        }
        let long = format!("{}@x.org", "a".repeat(300));
        assert!(matches!(
            Location::parse(&long),
            Err(LocationError::TooLong { .. })
        ));
        let many = format!("{}@x.org", vec!["a"; 33].join("."));
        assert!(matches!(
            Location::parse(&many),
            Err(LocationError::TooManySegments(_))
        ));
    }

    #[test]
    fn canonical_is_strict() {
        assert!(check_canonical("a@x.org").is_ok());
        assert!(matches!(
            check_canonical("a@X.org"),
            Err(LocationError::NotCanonical(_))
        ));
    }

    #[test]
    fn covers_whole_segments_only() {
        let sub = loc("pub.tv@ofb.net");
        assert!(sub.covers(&loc("pub.tv@ofb.net")));
        assert!(sub.covers(&loc("pub.tv.buffy@ofb.net")));
        assert!(!sub.covers(&loc("pub.tvguide@ofb.net")));
        assert!(!sub.covers(&loc("pub@ofb.net")));
        assert!(!sub.covers(&loc("pub.tv@example.org")));
        assert!(loc("@ofb.net").covers(&loc("anything.at.all@ofb.net")));
    }

    #[test]
    fn reserved_namespace() {
        assert_eq!(
            loc("_gale.notice.egnor@ofb.net").reserved(),
            Some(Reserved::Notice)
        );
        assert_eq!(
            loc("_gale.query.egnor@ofb.net").reserved(),
            Some(Reserved::Query)
        );
        assert_eq!(
            loc("_gale.key.egnor@ofb.net").reserved(),
            Some(Reserved::Key)
        );
        assert_eq!(
            loc("_gale.server@ofb.net").reserved(),
            Some(Reserved::Server)
        );
        assert_eq!(loc("_gale@ofb.net").reserved(), Some(Reserved::Root));
        assert_eq!(loc("pub@ofb.net").reserved(), None);
        assert_eq!(loc("_galefan@ofb.net").reserved(), None);
    }

    #[test]
    fn default_domain() {
        let l = Location::parse_with_default("egnor", "ofb.net").unwrap();
        assert_eq!(l.as_str(), "egnor@ofb.net");
        let l = Location::parse_with_default("egnor@x.org", "ofb.net").unwrap();
        assert_eq!(l.as_str(), "egnor@x.org");
        // The whole domain only when asked for: never from an empty argument.
        for empty in ["", "  "] {
            assert_eq!(
                Location::parse_with_default(empty, "ofb.net"),
                Err(LocationError::Empty)
            );
        }
        assert_eq!(
            Location::parse_with_default("@ofb.net", "x.org")
                .unwrap()
                .as_str(),
            "@ofb.net"
        );
        assert!(matches!(
            Location::parse_with_default("pub.", "ofb.net"),
            Err(LocationError::EmptySegment(_))
        ));
    }
}
