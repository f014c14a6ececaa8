//! Locations and subscriptions from command-line arguments, completed with
//! `$GALE_DOMAIN` when written without `@domain`.

use gale_proto::subscription::SubscriptionArgError;
use gale_proto::{Location, LocationError, SubscriptionList};
use thiserror::Error;

/// The domain for locations written without one.
pub const DOMAIN_ENV: &str = "GALE_DOMAIN";

#[derive(Debug, PartialEq, Eq, Error)]
pub enum ArgError {
    #[error("empty location (an unset shell variable?); a whole domain is written @{}", .0.as_deref().unwrap_or("example.org"))]
    Empty(Option<String>),
    #[error("location {0:?} has no @domain and GALE_DOMAIN is not set: write it as {0}@example.org, or set GALE_DOMAIN")]
    NoDomain(String),
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error(transparent)]
    Subscription(#[from] SubscriptionArgError),
}

/// `$GALE_DOMAIN`, if set and not empty.
pub fn domain_from_env() -> Option<String> {
    std::env::var(DOMAIN_ENV)
        .ok()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
}

/// Refuses empty arguments, and locations without `@domain` when there is no
/// default domain.
fn check_domains<S: AsRef<str>>(args: &[S], domain: Option<&str>) -> Result<(), ArgError> {
    if args.iter().any(|a| a.as_ref().trim().is_empty()) {
        return Err(ArgError::Empty(domain.map(String::from)));
    }
    if domain.is_none() {
        if let Some(a) = args
            .iter()
            .map(|a| a.as_ref())
            .find(|a| *a != "-" && !a.contains('@'))
        {
            return Err(ArgError::NoDomain(a.to_string()));
        }
    }
    Ok(())
}

/// Parses locations (gsend's recipients).
pub fn parse_locations<S: AsRef<str>>(
    args: &[S],
    domain: Option<&str>,
) -> Result<Vec<Location>, ArgError> {
    check_domains(args, domain)?;
    args.iter()
        .map(|a| {
            Ok(Location::parse_with_default(
                a.as_ref(),
                domain.unwrap_or(""),
            )?)
        })
        .collect()
}

/// Parses a gsub subscription list: `a - b c` takes `a` and `c` but not `b`.
pub fn parse_subscriptions<S: AsRef<str>>(
    args: &[S],
    domain: Option<&str>,
) -> Result<SubscriptionList, ArgError> {
    check_domains(args, domain)?;
    Ok(SubscriptionList::from_args(args, domain.unwrap_or(""))?)
}

/// Exit status of every program for a usage error (BSD's EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// The program's command line, or the exit status to end with: clap's message
/// is printed first; `--help` and `--version` end with 0, errors with
/// [`EXIT_USAGE`].
pub fn parse_args<A: clap::Parser>() -> Result<A, std::process::ExitCode> {
    A::try_parse().map_err(|e| {
        let _ = e.print();
        std::process::ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let l = parse_locations(&["pub.tv", "x@Y.org"], Some("ofb.net")).unwrap();
        assert_eq!(l[0].as_str(), "pub.tv@ofb.net");
        assert_eq!(l[1].as_str(), "x@y.org");
        let e = parse_locations(&["x@y.org", "pub.tv"], None).unwrap_err();
        assert_eq!(e, ArgError::NoDomain("pub.tv".into()));
        assert!(e.to_string().contains("set GALE_DOMAIN"));
        assert!(parse_locations(&["a..b@x.org"], None).is_err());
    }

    #[test]
    fn a_whole_domain_only_when_written() {
        let e = parse_locations(&["pub@x.org", ""], Some("ofb.net")).unwrap_err();
        assert_eq!(e, ArgError::Empty(Some("ofb.net".into())));
        assert!(e.to_string().contains("written @ofb.net"), "{e}");
        assert!(matches!(
            parse_locations(&[" "], None),
            Err(ArgError::Empty(None))
        ));
        assert!(matches!(
            parse_subscriptions(&["-", ""], Some("ofb.net")),
            Err(ArgError::Empty(_))
        ));
        assert!(parse_locations(&["pub."], Some("ofb.net")).is_err());
        assert_eq!(
            parse_subscriptions(&["@ofb.net"], None).unwrap().entries[0]
                .location
                .as_str(),
            "@ofb.net"
        );
    }

    #[test]
    fn subscriptions() {
        let s = parse_subscriptions(&["a@x.org", "-", "a.b@x.org"], None).unwrap();
        assert_eq!(s.entries.len(), 2);
        assert!(!s.entries[1].positive);
        assert!(matches!(
            parse_subscriptions(&["a", "-"], Some("x.org")),
            Err(ArgError::Subscription(_))
        ));
        assert!(matches!(
            parse_subscriptions(&["-", "a"], None),
            Err(ArgError::NoDomain(_))
        ));
    }
}
