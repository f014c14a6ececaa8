//! The galed routing core, as a library the `galed` binary wraps.
//!
//! Module map:
//! - [`config`]: [`Config`], its defaults and the TOML config file.
//! - [`outbox`]: the bounded outgoing queue of each connection and link, its
//!   writer, and its hold budget: how long it may hold publishers back before it
//!   drops (and reports) instead.
//! - [`flow`]: a reader's side of that: flushing what it routed, and waiting for
//!   room in full outboxes.
//! - [`router`]: shared routing state: the subscription trie and the live connections.
//! - [`session`]: what connections and links share: negotiating the handshake,
//!   the read loop (keepalive, flushing, holding), closing, INTEREST framing.
//! - [`connection`]: one client connection: frame dispatch, subscriptions, will.
//! - [`interest`]: aggregating and diffing the interest advertised over one link.
//! - [`coarse`]: keeping that within the limit the peer announced (coarser
//!   entries, or everything).
//! - [`federation`]: the live links and split-horizon interest propagation.
//! - [`live`]: the limits a reload (SIGHUP) may change while galed runs.
//! - [`dials`]: the configured links being dialled, which a reload may change.
//! - [`link`]: dialling links (alternates, back-off) and serving them.
//! - [`resume`]: the resume window: recently routed messages, replayed to
//!   clients that reconnect, and the gaps it cannot fill.
//! - [`inbox`]: durable inboxes in the embedded store: storing what their
//!   owners' devices miss, and sending it back in order.
//! - [`orig`]: the gateway for clients of the original Gale protocol, which
//!   galed tells from ours by their first bytes.
//! - [`orig_link`]: a link to a galed of the original Gale, bridged to an
//!   ordinary link of ours.
//! - [`seen_ids`]: the recent-message-id cache that stops duplicates and cycles.
//! - [`status`]: the operator's view of the server's state (text and JSON).
//!
//! [`run`] serves listeners until a shutdown token fires; it is all `main` calls.

#![forbid(unsafe_code)]

pub mod coarse;
pub mod config;
pub mod connection;
pub mod dials;
pub mod federation;
pub mod flow;
pub mod host;
pub mod inbox;
pub mod interest;
pub mod link;
pub mod live;
pub mod logs;
pub mod memory;
pub mod orig;
pub mod orig_link;
pub mod outbox;
pub mod resume;
pub mod router;
pub mod seen_ids;
pub mod session;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use router::Router;

/// How long the accept loop pauses after a failed accept: doubling from the least
/// to the most while accepts keep failing.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// How long shutdown waits for connections to flush and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Serves `listeners` until `shutdown` is cancelled, then closes every connection
/// (telling each client the server is shutting down) and returns.
pub async fn run(listeners: Vec<TcpListener>, config: Config, shutdown: CancellationToken) {
    let router = Arc::new(Router::open(config));
    serve(listeners, router, shutdown).await
}

/// As [`run`], with a router the caller keeps (to read its status, say).
pub async fn serve(listeners: Vec<TcpListener>, router: Arc<Router>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    router
        .dials
        .start(&router, tracker.clone(), shutdown.clone());
    // Links to original galeds are bridged to this galed's own listener.
    let own = listeners
        .iter()
        .find_map(|l| l.local_addr().ok())
        .map(|mut a| {
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            a
        });
    for spec in &router.config.orig_links {
        match (link::parse_link(spec), own) {
            (Ok(alts), Some(own)) => {
                tracker.spawn(orig_link::dial_loop(
                    router.clone(),
                    alts,
                    own,
                    shutdown.clone(),
                ));
            }
            (Err(e), _) => tracing::error!("{e}"),
            (_, None) => tracing::error!("a link to an original galed needs a listener"),
        }
    }
    tracker.spawn(expire_loop(router.clone(), shutdown.clone()));
    for listener in listeners {
        tracker.spawn(accept_loop(
            listener,
            router.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    shutdown.cancelled().await;
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    // What the store has queued is committed before galed exits.
    router.inboxes.flush();
}

/// Lets go of the resume window's frames as they age, even when no message comes
/// to push them out.
async fn expire_loop(router: Arc<Router>, shutdown: CancellationToken) {
    let every = Duration::from_secs(router.config.resume_window_secs.clamp(1, 10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {
                router.window.lock().expire(resume::now_ms());
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // One descriptor held in reserve: when accepting fails for lack of
    // descriptors, it is given up for a moment for each client waiting in the
    // backlog, so that they are told (ERROR 9) instead of left hanging until
    // their timeouts.
    let mut spare = std::fs::File::open("/dev/null").ok();
    let mut pause = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                pause = Duration::ZERO;
                tracker.spawn(connection::serve(
                    router.clone(),
                    stream,
                    peer,
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                let out_of_fds = e.raw_os_error().is_some_and(|n| {
                    n == rustix::io::Errno::MFILE.raw_os_error()
                        || n == rustix::io::Errno::NFILE.raw_os_error()
                });
                // Every client waiting is told at once, not one per back-off step
                // (which left a queue of them hanging for seconds).
                let all_told =
                    out_of_fds && host::refuse_waiting(&listener, &mut spare, &router).await;
                router.accept_failures.note(|n| {
                    tracing::warn!(
                        "accepting connections failed {n} times: {e}{}",
                        if out_of_fds {
                            "; refusing clients until descriptors are free (raise the \
                             limit: ulimit -n, or LimitNOFILE= in the service unit)"
                        } else {
                            ""
                        }
                    )
                });
                // Back off instead of spinning: 10 ms doubling to 1 s; only the
                // least when every client waiting was told (the next accept waits
                // for a new one, so there is no spinning to fear).
                pause = if all_told {
                    ACCEPT_PAUSE_MIN
                } else {
                    (pause * 2).clamp(ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX)
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}
