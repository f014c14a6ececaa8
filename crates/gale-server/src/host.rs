//! What the host allows: open descriptors (and what to tell clients when there
//! are none left), and sockets to listen on with a long backlog.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::task::Poll;

use gale_net::ServerAddr;
use gale_proto::frame::{ErrorCode, Frame};
use rustix::process::{getrlimit, setrlimit, Resource};
use tokio::net::{TcpListener, TcpSocket};

use crate::{Config, Router};

/// Descriptors kept for what is not a client connection: listeners, links, the
/// spare one, files, the runtime's own.
pub const RESERVED_DESCRIPTORS: u64 = 64;
/// Connection attempts the kernel may queue before galed accepts them (it caps
/// this at net.core.somaxconn).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Clients told at once that galed is out of descriptors, at most, before the
/// accept loop pauses.
pub const REFUSE_AT_ONCE: usize = 1024;

/// Out of descriptors: tells each client waiting in `listener`'s queue, up to
/// [`REFUSE_AT_ONCE`], ERROR 9 (Busy) and closes it, each in turn in the
/// descriptor `spare` gives up for it. True if every client waiting was told (the
/// queue is empty); false if the spare could not be used, or more are waiting.
pub async fn refuse_waiting(
    listener: &TcpListener,
    spare: &mut Option<std::fs::File>,
    router: &Router,
) -> bool {
    let bye = Frame::Error {
        code: ErrorCode::Busy,
        text: "server is out of file descriptors; try again later or another server".into(),
    }
    .to_bytes();
    for _ in 0..REFUSE_AT_ONCE {
        drop(spare.take());
        // Only a client already waiting: never wait for one here.
        let waiting = std::future::poll_fn(|cx| {
            Poll::Ready(match listener.poll_accept(cx) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            })
        })
        .await;
        let told = match waiting {
            Some(Ok((s, _))) => {
                router
                    .stats
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                let _ = s.try_write(&bye);
                // What the client sent already (its HELLO) is read, so that
                // closing sends the ERROR and an end, not a reset that may
                // overtake them.
                let _ = s.try_read(&mut [0u8; 1024]);
                drop(s);
                true
            }
            Some(Err(_)) => false,
            None => {
                *spare = std::fs::File::open("/dev/null").ok();
                return true;
            }
        };
        *spare = std::fs::File::open("/dev/null").ok();
        if !told {
            return false;
        }
    }
    false
}

/// Raises the soft limit on open descriptors to the hard limit, and lowers
/// `config.max_connections` to what the limit allows (one descriptor each, and
/// [`RESERVED_DESCRIPTORS`]). Returns what to log when something was lowered or
/// could not be raised.
pub fn fit_descriptors(config: &mut Config) -> Option<String> {
    let lim = getrlimit(Resource::Nofile);
    let mut note = None;
    let soft = match (lim.current, lim.maximum) {
        (Some(cur), Some(max)) if cur < max => {
            let raised = rustix::process::Rlimit {
                current: Some(max),
                maximum: Some(max),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => max,
                Err(e) => {
                    note = Some(format!(
                        "cannot raise the descriptor limit from {cur} to {max}: {e}"
                    ));
                    cur
                }
            }
        }
        (Some(cur), _) => cur,
        (None, _) => return None, // unlimited
    };
    let allowed = soft.saturating_sub(RESERVED_DESCRIPTORS).max(1) as usize;
    if config.max_connections > allowed {
        let msg = format!(
            "max_connections lowered from {} to {allowed}: this process may open {soft} \
             descriptors (raise it with ulimit -n, or LimitNOFILE= in the service unit)",
            config.max_connections
        );
        config.max_connections = allowed;
        note = Some(match note {
            Some(n) => format!("{n}; {msg}"),
            None => msg,
        });
    }
    note
}

/// Listens on `addr` (a name is resolved; its first address is used) with a
/// backlog of [`LISTEN_BACKLOG`].
pub async fn listen(addr: &ServerAddr) -> io::Result<TcpListener> {
    let sa: SocketAddr = tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for that name"))?;
    let sock = if sa.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(sa)?;
    sock.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_fits_the_descriptor_limit() {
        let mut cfg = Config {
            max_connections: usize::MAX,
            ..Config::default()
        };
        let note = fit_descriptors(&mut cfg).expect("lowered");
        let soft = getrlimit(Resource::Nofile).current.unwrap();
        assert_eq!(cfg.max_connections as u64, soft - RESERVED_DESCRIPTORS);
        assert!(note.contains("max_connections lowered"), "{note}");
    }
}
