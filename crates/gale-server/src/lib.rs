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
//! - [`federation`]: the live links and split-horizon interest propagation.
//! - [`link`]: dialling links (alternates, back-off) and serving them.
//! - [`seen_ids`]: the recent-message-id cache that stops duplicates and cycles.
//! - [`status`]: the operator's view of the server's state (text and JSON).
//!
//! [`run`] serves listeners until a shutdown token fires; it is all `main` calls.

#![forbid(unsafe_code)]

pub mod config;
pub mod connection;
pub mod federation;
pub mod flow;
pub mod interest;
pub mod link;
pub mod outbox;
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

/// How long shutdown waits for connections to flush and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Serves `listeners` until `shutdown` is cancelled, then closes every connection
/// (telling each client the server is shutting down) and returns.
pub async fn run(listeners: Vec<TcpListener>, config: Config, shutdown: CancellationToken) {
    let router = Arc::new(Router::new(config));
    serve(listeners, router, shutdown).await
}

/// As [`run`], with a router the caller keeps (to read its status, say).
pub async fn serve(listeners: Vec<TcpListener>, router: Arc<Router>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    for spec in &router.config.links {
        match link::parse_link(spec) {
            Ok(alts) => {
                tracker.spawn(link::dial_loop(router.clone(), alts, shutdown.clone()));
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
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
}

async fn accept_loop(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracker.spawn(connection::serve(
                    router.clone(),
                    stream,
                    peer,
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: say so, back off briefly, go on.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
