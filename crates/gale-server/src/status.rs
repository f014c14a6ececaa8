//! The operator's view: a plain-text report of connections, subscriptions, queue
//! depths and counters. galed logs it on SIGUSR1.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::router::Router;

/// Renders the server's state as text, one connection per line.
pub fn report(router: &Router) -> String {
    let s = &router.stats;
    let conns = router.connections();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "galed {} up {:?}: {} connections ({} total, {} refused), {} subscriptions, \
         {} published, {} delivered, {} wills, {} protocol errors",
        router.config.name,
        router.started.elapsed(),
        conns.len(),
        s.connections_total.load(Ordering::Relaxed),
        s.refused_connections.load(Ordering::Relaxed),
        router.subscription_count(),
        s.published.load(Ordering::Relaxed),
        s.delivered.load(Ordering::Relaxed),
        s.wills_published.load(Ordering::Relaxed),
        s.protocol_errors.load(Ordering::Relaxed),
    );
    for (id, c) in conns {
        let (qf, qb) = c.outbox.depth();
        let st = &c.outbox.stats;
        let _ = writeln!(
            out,
            "  conn {id} {} agent={:?} age={:?} subs={} published={} sent={} frames/{} bytes \
             queued={qf} frames/{qb} bytes dropped={}",
            c.peer,
            c.agent,
            c.since.elapsed(),
            c.subscriptions.load(Ordering::Relaxed),
            c.published.load(Ordering::Relaxed),
            st.frames_out.load(Ordering::Relaxed),
            st.bytes_out.load(Ordering::Relaxed),
            st.dropped.load(Ordering::Relaxed),
        );
    }
    out
}
