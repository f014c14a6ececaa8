//! Ordered subscription lists with `-` exclusions, and the reference matcher.
//!
//! A list is read in order and the *latest* entry that covers a location decides:
//! `pub@ofb.net - pub.spam@ofb.net` takes everything under `pub` but `pub.spam`, and
//! `pub@ofb.net - pub.spam@ofb.net pub.spam.good@ofb.net` takes `pub.spam.good` back.
//! [`SubscriptionList::accepts`] is the plain linear definition; the server uses the
//! trie in [`crate::trie`], which property tests check against this one.

use std::fmt;

use crate::location::{Location, LocationError};

/// One entry of a subscription list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubEntry {
    pub positive: bool,
    pub location: Location,
}

impl SubEntry {
    pub fn include(location: Location) -> Self {
        SubEntry {
            positive: true,
            location,
        }
    }
    pub fn exclude(location: Location) -> Self {
        SubEntry {
            positive: false,
            location,
        }
    }
}

impl fmt::Display for SubEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.positive {
            f.write_str("-")?;
        }
        write!(f, "{}", self.location)
    }
}

/// An ordered subscription list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionList {
    pub entries: Vec<SubEntry>,
}

/// A problem with a command-line subscription list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscriptionArgError {
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error("a '-' must be followed by the location to exclude")]
    TrailingDash,
}

impl SubscriptionList {
    pub fn new(entries: Vec<SubEntry>) -> Self {
        SubscriptionList { entries }
    }

    /// Parses gsub-style arguments: `a@x - b@x c@x` includes `a`, excludes `b`,
    /// includes `c`. A standalone `-` makes only the next location an exclusion.
    /// `default_domain` completes locations written without `@domain`.
    pub fn from_args<S: AsRef<str>>(
        args: &[S],
        default_domain: &str,
    ) -> Result<Self, SubscriptionArgError> {
        let mut entries = Vec::new();
        let mut negate = false;
        for a in args {
            let a = a.as_ref();
            if a == "-" {
                negate = true;
                continue;
            }
            let location = Location::parse_with_default(a, default_domain)?;
            entries.push(SubEntry {
                positive: !negate,
                location,
            });
            negate = false;
        }
        if negate {
            return Err(SubscriptionArgError::TrailingDash);
        }
        Ok(SubscriptionList { entries })
    }

    /// The reference matcher: the latest entry that covers `loc` decides.
    pub fn accepts(&self, loc: &Location) -> bool {
        self.entries
            .iter()
            .rev()
            .find(|e| e.location.covers(loc))
            .is_some_and(|e| e.positive)
    }

    /// True if the list accepts any of `locs` (a message addressed to several
    /// locations is delivered if any one of them is wanted).
    pub fn accepts_any<'a>(&self, locs: impl IntoIterator<Item = &'a Location>) -> bool {
        locs.into_iter().any(|l| self.accepts(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Location {
        Location::parse(s).unwrap()
    }

    #[test]
    fn latest_entry_wins() {
        let list = SubscriptionList::from_args(
            &[
                "pub@ofb.net",
                "-",
                "pub.spam@ofb.net",
                "pub.spam.good@ofb.net",
            ],
            "ofb.net",
        )
        .unwrap();
        assert!(list.accepts(&loc("pub.tv@ofb.net")));
        assert!(!list.accepts(&loc("pub.spam@ofb.net")));
        assert!(!list.accepts(&loc("pub.spam.eggs@ofb.net")));
        assert!(list.accepts(&loc("pub.spam.good.x@ofb.net")));
        assert!(!list.accepts(&loc("other@ofb.net")));
    }

    #[test]
    fn dash_applies_to_next_only_and_default_domain() {
        let list = SubscriptionList::from_args(&["a", "-", "a.b", "a.b.c"], "x.org").unwrap();
        let rendered: Vec<String> = list.entries.iter().map(|e| e.to_string()).collect();
        assert_eq!(rendered, ["a@x.org", "-a.b@x.org", "a.b.c@x.org"]);
        assert_eq!(
            SubscriptionList::from_args(&["a", "-"], "x.org"),
            Err(SubscriptionArgError::TrailingDash)
        );
    }

    #[test]
    fn exclusion_before_inclusion_is_overridden() {
        let list = SubscriptionList::from_args(&["-", "pub.spam", "pub"], "x.org").unwrap();
        assert!(list.accepts(&loc("pub.spam@x.org")));
    }
}
