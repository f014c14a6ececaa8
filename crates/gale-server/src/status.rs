//! The operator's view: a plain-text report of connections, subscriptions, queue
//! depths and counters. galed logs it on SIGUSR1.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::router::Router;

/// The state as JSON, for `galed --status` (STATUS frame) and other tools.
pub fn json(router: &Router) -> String {
    let s = &router.stats;
    let links: Vec<serde_json::Value> = router
        .fed
        .lock()
        .views()
        .into_iter()
        .map(|(v, outbox, st)| {
            let (qf, qb) = outbox.depth();
            serde_json::json!({
                "id": v.id, "peer": v.peer, "addr": v.addr, "dialed": v.dialed,
                "state": "up", "up_secs": v.up_secs,
                "interest_received": v.interest_received,
                "interest_advertised": v.interest_advertised,
                "queued_frames": qf, "queued_bytes": qb,
                "messages_in": st.messages_in.load(Ordering::Relaxed),
                "bytes_in": st.bytes_in.load(Ordering::Relaxed),
                "duplicates_in": st.duplicates_in.load(Ordering::Relaxed),
                "interest_updates_in": st.interest_updates_in.load(Ordering::Relaxed),
                "lost_upstream": st.lost_upstream.load(Ordering::Relaxed),
                "frames_out": outbox.stats.frames_out.load(Ordering::Relaxed),
                "bytes_out": outbox.stats.bytes_out.load(Ordering::Relaxed),
                "dropped": outbox.stats.dropped.load(Ordering::Relaxed),
                "holds": outbox.stats.holds.load(Ordering::Relaxed),
                "held_ms": outbox.stats.held_ns.load(Ordering::Relaxed) / 1_000_000,
            })
        })
        .collect();
    let clients: Vec<serde_json::Value> = router
        .connections()
        .into_iter()
        .map(|(id, c)| {
            let (qf, qb) = c.outbox.depth();
            serde_json::json!({
                "id": id, "peer": c.peer.to_string(), "agent": c.agent,
                "up_secs": c.since.elapsed().as_secs(),
                "subscriptions": c.subscriptions.load(Ordering::Relaxed),
                "published": c.published.load(Ordering::Relaxed),
                "queued_frames": qf, "queued_bytes": qb,
                "frames_out": c.outbox.stats.frames_out.load(Ordering::Relaxed),
                "bytes_out": c.outbox.stats.bytes_out.load(Ordering::Relaxed),
                "dropped": c.outbox.stats.dropped.load(Ordering::Relaxed),
                "holds": c.outbox.stats.holds.load(Ordering::Relaxed),
                "held_ms": c.outbox.stats.held_ns.load(Ordering::Relaxed) / 1_000_000,
            })
        })
        .collect();
    serde_json::json!({
        "name": router.config.name,
        "up_secs": router.started.elapsed().as_secs(),
        "configured_links": router.config.links,
        "subscriptions": router.subscription_count(),
        "published": s.published.load(Ordering::Relaxed),
        "delivered": s.delivered.load(Ordering::Relaxed),
        "wills_published": s.wills_published.load(Ordering::Relaxed),
        "duplicates_dropped": s.duplicates_dropped.load(Ordering::Relaxed),
        "hop_limit_dropped": s.hop_limit_dropped.load(Ordering::Relaxed),
        "protocol_errors": s.protocol_errors.load(Ordering::Relaxed),
        "connections_total": s.connections_total.load(Ordering::Relaxed),
        "links": links,
        "clients": clients,
    })
    .to_string()
}

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
