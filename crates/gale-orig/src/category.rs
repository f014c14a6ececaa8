//! Categories (the original's addresses) and our locations, both ways, and the
//! original's subscription expressions (wire.md §4.2–4.5, §6).
//!
//! A location `a.b.c@dom` is the category `@dom/user/a/b/c/`: each local-part
//! segment followed by `/`, so a category that is a prefix of another covers it at
//! segment boundaries, as our locations do. The whole domain `@dom` is
//! `@dom/user/` (and `@dom/` in a subscription). Categories that are not of the
//! `@dom/user/…/` form (key service under `@dom/auth/`, categories without a
//! domain) have no location and do not cross into our network.
//!
//! **Matching.** The original matches the raw text by prefix, and for each message
//! the *latest* subscription entry that is a prefix of *any* of its categories
//! decides, so a negative entry vetoes a message that also has categories the
//! subscriber wants. Ours decides per location and delivers if any location is
//! accepted. [`Expression::accepts`] is the original's rule; galed's gateway applies
//! it to what it delivers to original clients, after subscribing on their behalf
//! to locations that cover their expression ([`Expression::covering`]).

use gale_proto::{Location, SubEntry};

/// The local part's place in a category.
const USER: &str = "/user/";

/// One category of a puff's routing or an entry of a subscription, with its flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub positive: bool,
    /// The text without its flag, `@host` already turned into `@host/`.
    pub base: String,
}

impl Category {
    /// One `:`-separated item: an optional `+` or `-`, then the base.
    pub fn parse(item: &str) -> Category {
        let (positive, base) = match item.as_bytes().first() {
            Some(b'+') => (true, &item[1..]),
            Some(b'-') => (false, &item[1..]),
            _ => (true, item),
        };
        let mut base = base.to_string();
        if base.starts_with('@') && !base.contains('/') {
            base.push('/');
        }
        Category { positive, base }
    }

    /// The text galed sends on delivery: the base without a flag, a base that
    /// itself starts with `+` or `-` protected by a `+`.
    pub fn delivered(&self) -> String {
        if self.base.starts_with(['+', '-']) {
            format!("+{}", self.base)
        } else {
            self.base.clone()
        }
    }

    /// The original's test: is this (subscription) entry a prefix of `cat`? The
    /// empty base (the root, `+`) matches only categories without a domain.
    pub fn is_prefix_of(&self, cat: &str) -> bool {
        if self.base.is_empty() {
            !cat.starts_with('@')
        } else {
            cat.starts_with(&self.base)
        }
    }
}

/// A routing or subscription text: categories separated by `:`.
pub fn split(text: &str) -> Vec<Category> {
    text.split(':')
        .filter(|s| !s.is_empty())
        .map(Category::parse)
        .collect()
}

/// Joins categories as galed delivers them.
pub fn routing(cats: &[String]) -> String {
    cats.join(":")
}

/// The category of a location: `pub.test@example.org` → `@example.org/user/pub/test/`.
pub fn category(loc: &Location) -> String {
    let mut out = format!("@{}{USER}", escape_domain(loc.domain()));
    for seg in loc.segments() {
        out.push_str(&escape_local(seg));
        out.push('/');
    }
    out
}

/// The category for a subscription entry: as [`category`], except that a whole
/// domain is `@dom/` (everything there, key traffic included).
pub fn sub_category(loc: &Location) -> String {
    if loc.local().is_empty() {
        format!("@{}/", escape_domain(loc.domain()))
    } else {
        category(loc)
    }
}

// Our locations never hold `:` or `/`, but a category may: the original escapes.
fn escape_domain(d: &str) -> String {
    d.replace(':', "@.").replace('/', "@|")
}

fn escape_local(s: &str) -> String {
    s.replace(':', "..").replace('/', ".|")
}

fn unescape_domain(d: &str) -> String {
    d.replace("@.", ":").replace("@|", "/").replace('@', "")
}

fn unescape_local(s: &str) -> String {
    s.replace("..", ":").replace(".|", "/").replace('.', "")
}

/// The location of a category, if it has one: `@dom/user/a/b/` → `a.b@dom`
/// (`@dom/user/` → `@dom`). A domain is lower-cased; anything our location rules
/// refuse (a `:` or `/` that was escaped, too many segments) has none.
pub fn location(cat: &str) -> Option<Location> {
    let rest = cat.strip_prefix('@')?;
    let slash = rest.find('/')?;
    let domain = unescape_domain(&rest[..slash]).to_ascii_lowercase();
    let path = rest[slash..].strip_prefix(USER)?;
    if !(path.is_empty() || path.ends_with('/')) {
        return None;
    }
    let segs: Vec<String> = path
        .split_terminator('/')
        .map(unescape_local)
        .collect::<Vec<_>>();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    Location::from_canonical(&format!("{}@{domain}", segs.join("."))).ok()
}

/// The smallest of our locations that covers every category with a location
/// that `base` is a prefix of; `None` when there are none (a base without a
/// domain, or one under `@dom/` outside `user/`).
pub fn covering(base: &str) -> Option<Location> {
    let rest = base.strip_prefix('@')?;
    let (dom, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let domain = unescape_domain(dom).to_ascii_lowercase();
    let whole = || Location::from_canonical(&format!("@{domain}")).ok();
    let Some(local) = path.strip_prefix(USER) else {
        // `@dom/`, `@dom/us`: all of the domain's user categories, and more.
        return if USER.starts_with(path) {
            whole()
        } else {
            None
        };
    };
    // Only whole segments (each followed by `/`) narrow it; a partial last one
    // (`pub/te`) is matched by prefix, which its parent covers.
    let mut segs: Vec<String> = local.split('/').map(unescape_local).collect();
    segs.pop();
    segs.truncate(gale_proto::limits::MAX_SEGMENTS);
    while !segs.is_empty() {
        if segs.iter().all(|s| !s.is_empty()) {
            if let Ok(l) = Location::from_canonical(&format!("{}@{domain}", segs.join("."))) {
                return Some(l);
            }
        }
        segs.pop();
    }
    whole()
}

/// An original subscription expression (a `gimme`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expression {
    pub entries: Vec<Category>,
}

impl Expression {
    pub fn parse(text: &str) -> Expression {
        Expression {
            entries: split(text),
        }
    }

    /// The original's rule (wire.md §4.2): among every pair of (a category of the
    /// message, an entry that is a prefix of it), the latest entry wins, and
    /// between categories that hit that entry the last one; the message is
    /// delivered iff both that entry and that category are positive.
    pub fn accepts(&self, cats: &[Category]) -> bool {
        let mut best: Option<(usize, bool)> = None;
        for c in cats {
            for (i, e) in self.entries.iter().enumerate().rev() {
                if best.is_some_and(|(b, _)| i < b) {
                    break;
                }
                if e.is_prefix_of(&c.base) {
                    best = Some((i, e.positive && c.positive));
                    break;
                }
            }
        }
        best.is_some_and(|(_, ok)| ok)
    }

    /// Our subscription entries that cover every message this expression can
    /// accept (its positive entries' [`covering`] locations, each once). The
    /// gateway filters with [`accepts`](Self::accepts) on top.
    pub fn covering(&self) -> Vec<SubEntry> {
        let mut out: Vec<Location> = Vec::new();
        for e in self.entries.iter().filter(|e| e.positive) {
            if let Some(l) = covering(&e.base) {
                if !out.iter().any(|o| o.covers(&l)) {
                    out.retain(|o| !l.covers(o));
                    out.push(l);
                }
            }
        }
        out.into_iter().map(SubEntry::include).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loc(s: &str) -> Location {
        Location::from_canonical(s).unwrap()
    }

    fn cats(s: &str) -> Vec<Category> {
        split(s)
    }

    #[test]
    fn locations_and_categories_both_ways() {
        for (l, c) in [
            ("pub.test@example.org", "@example.org/user/pub/test/"),
            ("bob@example.org", "@example.org/user/bob/"),
            (
                "_gale.notice.bob@example.org",
                "@example.org/user/_gale/notice/bob/",
            ),
            ("@example.org", "@example.org/user/"),
        ] {
            assert_eq!(category(&loc(l)), c);
            assert_eq!(location(c), Some(loc(l)), "{c}");
        }
        assert_eq!(sub_category(&loc("@example.org")), "@example.org/");
        assert_eq!(location("@Example.ORG/user/a/"), Some(loc("a@example.org")));
        for none in [
            "@example.org/auth/key/bob",
            "@example.org/user/pub/te",
            "@example.org/user//x/",
            "@example.org/user/a..b/",
            "plain",
            "@",
        ] {
            assert_eq!(location(none), None, "{none}");
        }
    }

    #[test]
    fn covering_locations() {
        for (base, want) in [
            ("@example.org/user/pub/test/", Some("pub.test@example.org")),
            ("@example.org/user/pub/te", Some("pub@example.org")),
            ("@example.org/user/pu", Some("@example.org")),
            ("@example.org/", Some("@example.org")),
            ("@example.org", Some("@example.org")),
            ("@example.org/us", Some("@example.org")),
            ("@example.org/auth/", None),
            ("", None),
            ("foo", None),
        ] {
            assert_eq!(covering(base), want.map(loc), "{base}");
        }
    }

    /// wire.md §4.2–4.3's examples.
    #[test]
    fn latest_entry_wins_over_all_categories() {
        let a = Expression::parse("@d/user/pub/:-@d/user/pub/secret/");
        assert!(a.accepts(&cats("@d/user/pub/foo/")));
        assert!(!a.accepts(&cats("@d/user/pub/secret/")));
        assert!(!a.accepts(&cats("@d/user/pub/secret/x/")));
        assert!(!a.accepts(&cats("@d/user/pub/foo/:@d/user/pub/secret/")));
        let b = Expression::parse("@d/user/pub/secret/:-@d/user/pub/");
        assert!(!b.accepts(&cats("@d/user/pub/secret/")));
        assert!(!b.accepts(&cats("@d/user/pub/foo/")));
        // The root matches only categories without a domain; `@` alone nothing.
        assert!(Expression::parse("+").accepts(&cats("plain")));
        assert!(!Expression::parse("+").accepts(&cats("@d/user/x/")));
        assert!(!Expression::parse("@").accepts(&cats("@d/user/x/")));
        // A negative category in the routing is never delivered through.
        assert!(!Expression::parse("@d/").accepts(&cats("-@d/user/x/")));
        assert!(!Expression::parse("-").accepts(&cats("@d/user/x/")));
        // Raw prefixes, not segments.
        assert!(Expression::parse("@d/user/pub/te").accepts(&cats("@d/user/pub/tea/")));
    }

    #[test]
    fn delivered_routing_drops_flags() {
        let r: Vec<String> = cats("-@d/a/:@d/b/:+@x:+plus:++p")
            .iter()
            .map(Category::delivered)
            .collect();
        assert_eq!(routing(&r), "@d/a/:@d/b/:@x/:plus:++p");
    }

    #[test]
    fn covering_entries_are_aggregated() {
        let e =
            Expression::parse("@d/user/pub/a/:@d/user/pub/:-@d/user/pub/b/:@e/user/x/:@d/auth/:-");
        let got: Vec<String> = e
            .covering()
            .iter()
            .map(|s| s.location.as_str().to_string())
            .collect();
        assert_eq!(got, ["pub@d", "x@e"]);
    }

    proptest! {
        #[test]
        fn mapping_never_panics(s in "\\PC{0,60}") {
            let _ = location(&s);
            let _ = covering(&s);
            let e = Expression::parse(&s);
            let _ = e.covering();
            let _ = e.accepts(&split(&s));
        }

        #[test]
        fn every_location_round_trips(local in "[a-z_][a-z0-9]{0,5}(\\.[a-z0-9]{1,5}){0,3}", dom in "[a-z]{1,8}\\.org") {
            let l = loc(&format!("{local}@{dom}"));
            prop_assert_eq!(location(&category(&l)), Some(l.clone()));
            prop_assert_eq!(covering(&category(&l)), Some(l));
        }
    }
}
