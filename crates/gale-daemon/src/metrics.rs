//! `/metrics`: galed's state in the Prometheus text format, served over HTTP
//! (`--metrics ADDR` or `metrics = "ADDR"`).
//!
//! Every scrape takes one [`Status`] snapshot, the very report `galed --status`
//! prints, and encodes it ([`encode`]), so that the two never disagree. To add a
//! metric, add a field to `Status` and one line to [`encode`].
//!
//! Why these crates: `prometheus` (TiKV's client, the most used in Rust) writes
//! the classic text format 0.0.4, which every Prometheus and `promtool check
//! metrics` read (`prometheus-client` writes OpenMetrics only, whose counter
//! names promtool 2.42, Debian 12's, rejects); galed only uses its data model
//! and encoder, not its global registry. hyper, the HTTP/1 of the Rust
//! ecosystem, serves it with a few lines of glue (`hyper-util` joins it to
//! tokio), rather than a hand-written HTTP parser facing the network.

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, Result};
use gale_net::ServerAddr;
use gale_server::status::Status;
use gale_server::Router;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::view::configured_links;

/// The content type of the text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` and serves `/metrics` until `shutdown`.
pub async fn start(
    addr: &str,
    router: Arc<Router>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>> {
    let a = ServerAddr::parse_listen(addr)?;
    let listener = TcpListener::bind((a.host.as_str(), a.port))
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    // A stable line on stderr, as for the Gale listeners.
    eprintln!(
        "galed: metrics on http://{}/metrics",
        listener.local_addr()?
    );
    Ok(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => match a {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!("metrics: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let router = router.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let router = router.clone();
                    // Off the runtime's threads: a scrape walks every client, and
                    // resolves the configured links' host names (blocking).
                    async move {
                        let (method, path) = (req.method().clone(), req.uri().path().to_string());
                        let reply =
                            tokio::task::spawn_blocking(move || answer(&method, &path, &router))
                                .await
                                .unwrap_or_else(|e| {
                                    plain(
                                        StatusCode::INTERNAL_SERVER_ERROR,
                                        format!("scrape failed: {e}\n"),
                                    )
                                });
                        Ok::<_, Infallible>(reply)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    r = conn => if let Err(e) = r {
                        tracing::debug!("metrics: connection: {e}");
                    }
                }
            });
        }
    }))
}

fn reply(code: StatusCode, ty: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", ty)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn plain(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    reply(code, "text/plain; charset=utf-8", body)
}

fn answer(method: &hyper::Method, path: &str, router: &Router) -> Response<Full<Bytes>> {
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".into());
    }
    match path {
        "/metrics" => {
            let mut body = Vec::new();
            let families = families(&Status::collect(router));
            match TextEncoder::new().encode(&families, &mut body) {
                Ok(()) => reply(
                    StatusCode::OK,
                    CONTENT_TYPE,
                    String::from_utf8_lossy(&body).into_owned(),
                ),
                Err(e) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode the metrics: {e}\n"),
                ),
            }
        }
        "/" => reply(
            StatusCode::OK,
            "text/html",
            "<html><body><a href=\"/metrics\">galed metrics</a></body></html>\n".into(),
        ),
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: galed serves /metrics\n".into(),
        ),
    }
}

/// The metric families being built, for [`families`].
struct Out(Vec<MetricFamily>);

type Labels = Vec<(&'static str, String)>;

impl Out {
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.family(name, help, MetricType::COUNTER, &[(Vec::new(), v)]);
    }

    fn gauge(&mut self, name: &str, help: &str, v: u64) {
        self.family(name, help, MetricType::GAUGE, &[(Vec::new(), v)]);
    }

    /// One metric per row, each with its labels. A family without rows (no
    /// links, say) is left out, as the text format wants.
    fn family(&mut self, name: &str, help: &str, ty: MetricType, rows: &[(Labels, u64)]) {
        if rows.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(ty);
        for (labels, v) in rows {
            let mut m = Metric::from_label(
                labels
                    .iter()
                    .map(|(k, v)| {
                        let mut l = LabelPair::default();
                        l.set_name(k.to_string());
                        l.set_value(v.clone());
                        l
                    })
                    .collect(),
            );
            // Counts are exact in a f64 up to 2^53.
            match ty {
                MetricType::COUNTER => {
                    let mut c = Counter::default();
                    c.set_value(*v as f64);
                    m.set_counter(c);
                }
                _ => {
                    let mut g = Gauge::default();
                    g.set_value(*v as f64);
                    m.set_gauge(g);
                }
            }
            f.mut_metric().push(m);
        }
        self.0.push(f);
    }
}

/// The metrics of one status snapshot. Names start with `gale_`; counters end
/// in `_total`.
pub fn families(s: &Status) -> Vec<MetricFamily> {
    use MetricType::{COUNTER as Counter, GAUGE as Gauge};
    let mut o = Out(Vec::new());
    o.gauge("gale_up_seconds", "Seconds since galed started", s.up_secs);
    o.gauge(
        "gale_connections",
        "Client connections open now",
        s.connections as u64,
    );
    o.gauge(
        "gale_connections_max",
        "The connection limit in force",
        s.max_connections as u64,
    );
    o.counter(
        "gale_connections_accepted_total",
        "Connections accepted since start",
        s.connections_total,
    );
    o.counter(
        "gale_connections_refused_total",
        "Connections refused at the connection limit or memory budget",
        s.refused_connections,
    );
    o.counter(
        "gale_protocol_errors_total",
        "Connections closed for breaking the protocol",
        s.protocol_errors,
    );
    o.gauge(
        "gale_subscriptions",
        "Subscription entries held, clients' and links' together",
        s.subscriptions as u64,
    );
    o.gauge(
        "gale_subscriptions_max",
        "Most subscription entries galed holds (max_subscriptions)",
        s.max_subscriptions as u64,
    );
    o.gauge(
        "gale_memory_used_bytes",
        "Bytes of the memory budget in use",
        s.memory_used as u64,
    );
    o.gauge(
        "gale_memory_limit_bytes",
        "The memory budget",
        s.memory_limit as u64,
    );
    o.counter(
        "gale_messages_published_total",
        "Messages routed (wills included)",
        s.published,
    );
    o.counter(
        "gale_messages_delivered_total",
        "Deliveries queued for clients and links",
        s.delivered,
    );
    o.counter(
        "gale_wills_published_total",
        "Wills published for clients that vanished",
        s.wills_published,
    );
    let link_dropped: u64 = s.links.iter().map(|l| l.dropped).sum();
    let reasons = [
        ("duplicate", s.duplicates_dropped),
        ("hop_limit", s.hop_limit_dropped),
        ("client_queue", s.client_dropped),
        ("link_queue", link_dropped),
    ];
    let rows: Vec<(Labels, u64)> = reasons
        .iter()
        .map(|(r, v)| (vec![("reason", r.to_string())], *v))
        .collect();
    o.family(
        "gale_messages_dropped_total",
        "Messages dropped, by reason (link_queue: links up now only)",
        Counter,
        &rows,
    );
    // Clients' queues.
    let queued: u64 = s.clients.iter().map(|c| c.queued_bytes as u64).sum();
    let queued_frames: u64 = s.clients.iter().map(|c| c.queued_frames as u64).sum();
    let deepest = s
        .clients
        .iter()
        .map(|c| c.queued_bytes as u64)
        .max()
        .unwrap_or(0);
    o.gauge(
        "gale_client_queued_bytes",
        "Bytes queued for all clients, not yet written",
        queued,
    );
    o.gauge(
        "gale_client_queued_frames",
        "Frames queued for all clients, not yet written",
        queued_frames,
    );
    o.gauge(
        "gale_client_queue_deepest_bytes",
        "Bytes queued for the client with the deepest queue",
        deepest,
    );
    o.gauge(
        "gale_clients_omitted",
        "Clients left out of the report (queue figures cover the rest)",
        s.clients_omitted as u64,
    );
    // Links.
    let configured = configured_links(s);
    o.gauge(
        "gale_links_configured",
        "Links in the configuration",
        configured.len() as u64,
    );
    o.gauge(
        "gale_links_up",
        "Links up now (dialled or accepted)",
        s.links.len() as u64,
    );
    let rows: Vec<(Labels, u64)> = configured
        .iter()
        .map(|(spec, up)| (vec![("link", spec.clone())], u64::from(up.is_some())))
        .collect();
    o.family(
        "gale_link_configured_up",
        "1 if the configured link is up, 0 if it is down",
        Gauge,
        &rows,
    );
    let per_link = |f: &dyn Fn(&gale_server::status::LinkStatus) -> u64| -> Vec<(Labels, u64)> {
        s.links
            .iter()
            .map(|l| {
                (
                    vec![("peer", l.peer.clone()), ("addr", l.addr.clone())],
                    f(l),
                )
            })
            .collect()
    };
    o.family(
        "gale_link_up_seconds",
        "Seconds the link has been up",
        Gauge,
        &per_link(&|l| l.up_secs),
    );
    o.family(
        "gale_link_messages_in_total",
        "Messages received over the link",
        Counter,
        &per_link(&|l| l.messages_in),
    );
    o.family(
        "gale_link_bytes_in_total",
        "Bytes received over the link",
        Counter,
        &per_link(&|l| l.bytes_in),
    );
    o.family(
        "gale_link_frames_out_total",
        "Frames sent over the link",
        Counter,
        &per_link(&|l| l.frames_out),
    );
    o.family(
        "gale_link_bytes_out_total",
        "Bytes sent over the link",
        Counter,
        &per_link(&|l| l.bytes_out),
    );
    o.family(
        "gale_link_duplicates_in_total",
        "Duplicate messages received over the link",
        Counter,
        &per_link(&|l| l.duplicates_in),
    );
    o.family(
        "gale_link_dropped_total",
        "Messages dropped for the peer here",
        Counter,
        &per_link(&|l| l.dropped),
    );
    o.family(
        "gale_link_lost_upstream_total",
        "Messages the peer reported it dropped on their way here",
        Counter,
        &per_link(&|l| l.lost_upstream),
    );
    o.family(
        "gale_link_queued_bytes",
        "Bytes queued for the peer, not yet written",
        Gauge,
        &per_link(&|l| l.queued_bytes as u64),
    );
    o.family(
        "gale_link_queued_frames",
        "Frames queued for the peer, not yet written",
        Gauge,
        &per_link(&|l| l.queued_frames as u64),
    );
    o.family(
        "gale_link_interest_received",
        "Locations the peer wants from this server",
        Gauge,
        &per_link(&|l| l.interest_received as u64),
    );
    o.family(
        "gale_link_interest_advertised",
        "Locations this server told the peer it wants",
        Gauge,
        &per_link(&|l| l.interest_advertised as u64),
    );
    o.family(
        "gale_link_holds_total",
        "Times publishers waited for room in the link's queue",
        Counter,
        &per_link(&|l| l.holds),
    );
    // The resume window.
    let w = &s.resume_window;
    o.gauge(
        "gale_resume_window_messages",
        "Messages held for clients that resume",
        w.entries as u64,
    );
    o.gauge(
        "gale_resume_window_bytes",
        "Bytes the resume window holds",
        w.bytes as u64,
    );
    o.counter("gale_resumes_total", "Resumes answered", w.resumed);
    o.counter(
        "gale_resume_gaps_total",
        "Resumes answered with a gap",
        w.gaps,
    );
    // Inboxes and their store.
    let ib = &s.inboxes;
    o.gauge(
        "gale_inboxes_enabled",
        "1 when inboxes are kept",
        u64::from(ib.enabled),
    );
    o.gauge("gale_inboxes", "Inboxes registered", ib.count);
    o.gauge(
        "gale_inbox_messages",
        "Messages held in all inboxes",
        ib.messages,
    );
    o.gauge(
        "gale_inbox_bytes",
        "Payload bytes held in all inboxes",
        ib.bytes,
    );
    o.gauge(
        "gale_inbox_oldest_seconds",
        "Age of the oldest message held",
        ib.oldest_secs.unwrap_or(0),
    );
    o.gauge(
        "gale_inbox_store_file_bytes",
        "Size of the inbox store file",
        ib.file_bytes,
    );
    o.gauge(
        "gale_inbox_store_pending",
        "Messages queued for the next commit",
        ib.pending,
    );
    o.counter(
        "gale_inbox_store_commits_total",
        "Store commits",
        ib.commits,
    );
    o.counter(
        "gale_inbox_store_errors_total",
        "Store commits that failed",
        ib.errors,
    );
    o.counter(
        "gale_inbox_stored_total",
        "Messages stored in inboxes",
        ib.stored,
    );
    o.counter(
        "gale_inbox_sent_total",
        "Stored messages sent to devices",
        ib.sent,
    );
    o.counter(
        "gale_inbox_dropped_limit_total",
        "Stored messages dropped at an inbox or store limit",
        ib.dropped_limit,
    );
    o.counter(
        "gale_inbox_dropped_age_total",
        "Stored messages dropped for their age",
        ib.dropped_age,
    );
    o.counter(
        "gale_inbox_dropped_behind_total",
        "Messages not stored because the store was behind its disk",
        ib.dropped_overload,
    );
    o.counter(
        "gale_inbox_dropped_failed_total",
        "Stored messages lost in failed commits",
        ib.dropped_failed,
    );
    o.counter(
        "gale_inbox_refused_total",
        "Requests to open an inbox that were refused",
        ib.refused,
    );
    o.0
}
