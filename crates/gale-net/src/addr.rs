//! Server addresses: `host[:port]` and lists `host[:port],host[:port]`, with IPv6
//! hosts in brackets; Gale's port when none is given. One syntax for clients'
//! `-s`, galed's `--listen`, `--link` and `--status`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Gale's TCP port, since 1999.
pub const DEFAULT_PORT: u16 = 11512;

/// One server address: a host name or IP address and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// A host name or an IP address (IPv6 without the brackets).
    pub host: String,
    pub port: u16,
}

/// Why a server list could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServerAddrError {
    #[error("the server list is empty (write host[:port], several separated by commas)")]
    EmptyList,
    #[error("empty entry in server list {0:?} (write host[:port],host[:port])")]
    EmptyEntry(String),
    #[error("server {entry:?}: bad port {port:?} (a number from 1 to 65535)")]
    BadPort { entry: String, port: String },
    #[error("server {0:?}: an IPv6 address goes in brackets, like [::1]:11512")]
    BareIpv6(String),
    #[error("server {0:?}: missing ']' after an IPv6 address")]
    UnclosedBracket(String),
    #[error("server {0:?}: host name is empty")]
    EmptyHost(String),
    #[error(
        "server {0:?}: host contains white space or other characters not allowed in a host name"
    )]
    BadHost(String),
}

impl FromStr for ServerAddr {
    type Err = ServerAddrError;

    fn from_str(entry: &str) -> Result<ServerAddr, ServerAddrError> {
        parse_entry(entry, false)
    }
}

/// Parses one `host[:port]`; port 0 ("any free port") only for `listen`.
fn parse_entry(entry: &str, listen: bool) -> Result<ServerAddr, ServerAddrError> {
    let e = entry.trim();
    if e.is_empty() {
        return Err(ServerAddrError::EmptyEntry(entry.to_string()));
    }
    let (host, port) = if let Some(rest) = e.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err(ServerAddrError::UnclosedBracket(e.to_string()));
        };
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(ServerAddrError::BadHost(e.to_string())),
        };
        (&rest[..close], port)
    } else {
        match e.matches(':').count() {
            0 => (e, None),
            1 => {
                let (h, p) = e.split_once(':').expect("one colon");
                (h, Some(p))
            }
            _ => return Err(ServerAddrError::BareIpv6(e.to_string())),
        }
    };
    if host.is_empty() {
        return Err(ServerAddrError::EmptyHost(e.to_string()));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/[]@,".contains(c))
    {
        return Err(ServerAddrError::BadHost(e.to_string()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 || listen => n,
            _ => {
                return Err(ServerAddrError::BadPort {
                    entry: e.to_string(),
                    port: p.to_string(),
                })
            }
        },
    };
    Ok(ServerAddr {
        host: host.to_string(),
        port,
    })
}

impl ServerAddr {
    /// Parses `host[:port]`, Gale's port when none is given.
    pub fn parse(entry: &str) -> Result<ServerAddr, ServerAddrError> {
        entry.parse()
    }

    /// Parses an address to listen on: as [`parse`](Self::parse), and port 0
    /// means any free port.
    pub fn parse_listen(entry: &str) -> Result<ServerAddr, ServerAddrError> {
        parse_entry(entry, true)
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses a comma-separated server list.
pub fn parse_server_list(list: &str) -> Result<Vec<ServerAddr>, ServerAddrError> {
    if list.trim().is_empty() {
        return Err(ServerAddrError::EmptyList);
    }
    list.split(',')
        .map(|e| {
            if e.trim().is_empty() {
                Err(ServerAddrError::EmptyEntry(list.to_string()))
            } else {
                e.parse()
            }
        })
        .collect()
}

/// Renders a list as `a:1, b:2` for messages.
pub fn display_list(servers: &[ServerAddr]) -> String {
    servers
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(host: &str, port: u16) -> ServerAddr {
        ServerAddr {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_lists() {
        assert_eq!(
            parse_server_list("a.example.org, b:99,[::1],[fe80::1]:7,10.0.0.1:1").unwrap(),
            [
                sa("a.example.org", DEFAULT_PORT),
                sa("b", 99),
                sa("::1", DEFAULT_PORT),
                sa("fe80::1", 7),
                sa("10.0.0.1", 1)
            ]
        );
        assert_eq!(sa("::1", 5).to_string(), "[::1]:5");
        assert_eq!(sa("h", 5).to_string(), "h:5");
    }

    #[test]
    fn rejects_bad_entries() {
        use ServerAddrError::*;
        let err = |s: &str| parse_server_list(s).unwrap_err();
        assert_eq!(err(""), EmptyList);
        assert!(matches!(err("a,,b"), EmptyEntry(_)));
        assert!(matches!(err("a,"), EmptyEntry(_)));
        assert!(matches!(err("a:0"), BadPort { .. }));
        assert!(matches!(err("a:x"), BadPort { .. }));
        assert!(matches!(err("a:70000"), BadPort { .. }));
        assert!(matches!(err("a:"), BadPort { .. }));
        assert!(matches!(err("::1"), BareIpv6(_)));
        assert!(matches!(err("[::1"), UnclosedBracket(_)));
        assert!(matches!(err(":5"), EmptyHost(_)));
        assert!(matches!(err("[]:5"), EmptyHost(_)));
        assert!(matches!(err("a b"), BadHost(_)));
        assert!(matches!(err("[::1]x"), BadHost(_)));
        assert!(err("a:x").to_string().contains("bad port \"x\""));
        assert_eq!(
            ServerAddr::parse_listen("0.0.0.0:0").unwrap(),
            sa("0.0.0.0", 0)
        );
        assert_eq!(
            ServerAddr::parse_listen("[::]").unwrap().to_string(),
            "[::]:11512"
        );
    }
}
