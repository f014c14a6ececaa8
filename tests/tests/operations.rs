//! Running galed as an operator does: the example configurations pass
//! --check-config, logs as JSON or without timestamps under systemd, SIGHUP
//! changes links and limits without dropping clients, /metrics agrees with
//! --status during real traffic, and --status reads as tables.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use gale_tests::*;
use std::process::Command;

/// The workspace's top directory.
fn top() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn the_example_configurations_pass_check_config() {
    for f in ["galed-leaf.toml", "galed-hub.toml", "galed.toml"] {
        let path = top().join("contrib").join(f);
        let out = galed(&["--check-config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{f}: {out:?}");
        let said = text(&out.stdout);
        assert!(said.contains("is valid: listens on"), "{said}");
    }
    let leaf = text(
        &galed(&[
            "--check-config",
            top().join("contrib/galed-leaf.toml").to_str().unwrap(),
        ])
        .stdout,
    );
    assert!(
        leaf.contains("links to hub1.example.org:11512,hub2.example.org:11512"),
        "{leaf}"
    );
}

#[test]
fn check_config_refuses_a_bad_file_with_the_reason_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    for (content, reason) in [
        ("max_conections = 5\n", "unknown field `max_conections`"),
        ("links = [\"hub:port\"]\n", "links"),
        (
            "metrics = \"127.0.0.1\"\n",
            "metrics = \"127.0.0.1\" is not valid: no port",
        ),
        (
            "client_queue_bytes = 10\n",
            "client_queue_bytes = 10 is out of range",
        ),
        ("listen = [\n", "is not valid"),
    ] {
        std::fs::write(&bad, content).unwrap();
        let out = galed(&["--check-config", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{content}: {out:?}");
        let err = text(&out.stderr);
        assert!(err.contains(reason), "{content}: {err}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    let out = galed(&[
        "--check-config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("cannot read config file"),
        "{out:?}"
    );
}

/// A link to a port nobody listens on makes galed log a warning at once.
const DEAD_LINK: &str = "127.0.0.1:1";

#[test]
fn logs_are_json_lines_on_request() {
    let g = Galed::start(&["--log-format", "json", "--link", DEAD_LINK]);
    let line = g.stderr.wait_for("cannot link");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(v["level"], "WARN", "{line}");
    assert!(v["timestamp"].is_string(), "{line}");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot link"),
        "{line}"
    );
}

#[test]
fn under_systemd_log_lines_carry_no_timestamp() {
    for var in ["INVOCATION_ID", "JOURNAL_STREAM"] {
        let g = Galed::start_with("127.0.0.1:0", &["--link", DEAD_LINK], |c| {
            c.env(var, "1");
        });
        let line = g.stderr.wait_for("cannot link");
        assert!(line.trim_start().starts_with("WARN"), "{var}: {line}");
        let g = Galed::start_with(
            "127.0.0.1:0",
            &["--log-format", "json", "--link", DEAD_LINK],
            |c| {
                c.env(var, "1");
            },
        );
        let line = g.stderr.wait_for("cannot link");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("timestamp").is_none(), "{var}: {line}");
    }
    // Elsewhere, lines start with the time.
    let g = Galed::start_with("127.0.0.1:0", &["--link", DEAD_LINK], |c| {
        c.env_remove("INVOCATION_ID").env_remove("JOURNAL_STREAM");
    });
    let line = g.stderr.wait_for("cannot link");
    assert!(line.starts_with("20"), "{line}");
}

/// `GET /metrics` from `addr`: the body.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    // hyper sends a fixed Content-Length here, so the body is whole.
    body.to_string()
}

/// The value of the sample `name` (with its labels, as written) in `metrics`.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

fn metrics_addr(g: &Galed) -> String {
    let line = g.stderr.wait_for("galed: metrics on http://");
    line.rsplit("http://")
        .next()
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string()
}

/// A galed serving metrics, linked to `hub` and to a link that is down, that
/// carries `n` messages from gsend --lines to a gsub; `check` sees a scrape
/// taken every `every` messages while they flow. Returns the galed and the
/// metrics address.
fn traffic_with_metrics(
    hub: &Galed,
    n: u32,
    every: u32,
    mut check: impl FnMut(&str),
) -> (Galed, String) {
    let g = Galed::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--link",
        &hub.server(),
        "--link",
        DEAD_LINK,
    ]);
    let addr = metrics_addr(&g);
    let sub = Gsub::start(&g.server(), &["pub.metrics@example.org"]);
    let mut sender = gsend_spawn(&g.server(), &["--lines", "pub.metrics@example.org"]);
    let mut stdin = sender.stdin.take().unwrap();
    for i in 0..n {
        writeln!(stdin, "line {i}").unwrap();
        if i % every == 0 {
            check(&scrape(&addr));
        }
    }
    drop(stdin);
    for i in 0..n {
        assert_eq!(sub.body(), format!("line {i}"));
    }
    assert!(sender.wait().unwrap().success());
    (g, addr)
}

#[test]
fn metrics_agree_with_status_during_traffic() {
    let hub = Galed::start(&[]);
    // Every scrape is whole and well-formed.
    let (g, addr) = traffic_with_metrics(&hub, 50, 10, |m| {
        assert!(
            m.ends_with('\n') && m.contains("# TYPE gale_messages_published_total counter"),
            "{m}"
        );
    });
    wait_until("the link to the hub", || g.links_up() == 1);
    let m = scrape(&addr);
    let s = g.status();
    assert_eq!(
        sample(&m, "gale_messages_published_total"),
        s["published"].as_u64().unwrap()
    );
    assert!(sample(&m, "gale_messages_published_total") >= 50);
    assert_eq!(
        sample(&m, "gale_messages_delivered_total"),
        s["delivered"].as_u64().unwrap()
    );
    assert_eq!(
        sample(&m, "gale_subscriptions"),
        s["subscriptions"].as_u64().unwrap()
    );
    assert_eq!(sample(&m, "gale_links_configured"), 2);
    assert_eq!(sample(&m, "gale_links_up"), 1);
    assert_eq!(
        sample(
            &m,
            &format!("gale_link_configured_up{{link=\"{DEAD_LINK}\"}}")
        ),
        0
    );
    assert_eq!(
        sample(
            &m,
            &format!("gale_link_configured_up{{link=\"{}\"}}", hub.server())
        ),
        1
    );
    assert_eq!(
        sample(&m, "gale_messages_dropped_total{reason=\"duplicate\"}"),
        0
    );
    assert!(
        m.contains("# TYPE gale_link_interest_received gauge"),
        "{m}"
    );
    assert!(m.contains("gale_connections "), "{m}");
    // Anything but /metrics is refused plainly.
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
}

#[test]
fn status_prints_tables_and_json_on_request() {
    let hub = Galed::start(&[]);
    let g = Galed::start(&["--link", &hub.server(), "--link", DEAD_LINK]);
    wait_until("the link to the hub", || g.links_up() == 1);
    let _sub = Gsub::start(&g.server(), &["pub.status@example.org"]);
    let out = galed(&["--status", &g.server()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let t = text(&out.stdout);
    assert!(t.starts_with("galed "), "{t}");
    let down = t
        .lines()
        .find(|l| l.contains(DEAD_LINK))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(down.contains("DOWN"), "{t}");
    let up = t
        .lines()
        .find(|l| l.trim_start().starts_with(&hub.server()))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(up.contains(" up "), "{t}");
    assert!(
        t.contains("LINK") && t.contains("IN/S") && t.contains("OUT/S"),
        "{t}"
    );
    assert!(t.contains("Clients with the deepest queues"), "{t}");
    assert!(t.contains("Clients with the most drops"), "{t}");
    // --json: the report as before, one JSON object.
    let out = galed(&["--status", &g.server(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["configured_links"].as_array().unwrap().len(), 2);
    // --json alone is a usage error.
    assert_eq!(galed(&["--json"]).status.code(), Some(64));
}

#[test]
fn sighup_changes_links_and_limits_without_dropping_clients() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("galed.toml");
    std::fs::write(&conf, "max_connections = 50\n").unwrap();
    let hub = Galed::start(&[]);
    let mut g = Galed::start(&["--config", conf.to_str().unwrap()]);
    let sub = Gsub::start(&g.server(), &["pub.reload@example.org"]);
    let subs_before = g.status()["connections_total"].as_u64().unwrap();
    assert_eq!(g.status()["max_connections"], 50);

    // A new link and a new limit.
    std::fs::write(
        &conf,
        format!("max_connections = 60\nlinks = [\"{}\"]\n", hub.server()),
    )
    .unwrap();
    g.signal(Signal::HUP);
    let line = g.stderr.wait_for("SIGHUP: reloaded");
    assert!(
        line.contains(&format!("link added: {}", hub.server())),
        "{line}"
    );
    assert!(line.contains("max_connections: 50 -> 60"), "{line}");
    wait_until("the new link", || g.links_up() == 1);
    assert_eq!(g.status()["max_connections"], 60);
    // The client stayed: a message from the far side of the new link reaches it,
    // and it never reconnected.
    wait_until("the subscription to cross the link", || {
        hub.link(g.status()["name"].as_str().unwrap())
            .is_some_and(|l| l["interest_received"].as_u64() > Some(0))
    });
    send_ok(
        &hub.server(),
        &["pub.reload@example.org"],
        "over the new link",
    );
    assert_eq!(sub.body(), "over the new link");
    assert!(!sub.stderr.dump().contains("lost"), "{}", sub.stderr.dump());
    // Only the status queries connected meanwhile, no new gsub connection.
    assert_eq!(g.status()["connections"], 2, "gsub and this status query");

    // A bad file: logged, and nothing changes.
    std::fs::write(&conf, "max_connections = 0\n").unwrap();
    g.signal(Signal::HUP);
    let line = g.stderr.wait_for("SIGHUP: not reloaded");
    assert!(
        line.contains("max_connections = 0 is out of range"),
        "{line}"
    );
    assert!(line.contains("keeping the running configuration"), "{line}");
    assert_eq!(g.status()["max_connections"], 60);
    assert_eq!(g.links_up(), 1);

    // Removing the link closes it; the client is still there.
    std::fs::write(&conf, "max_connections = 60\n").unwrap();
    g.signal(Signal::HUP);
    let line = g.stderr.wait_for("SIGHUP: reloaded");
    assert!(line.contains("link removed"), "{line}");
    wait_until("the link to close", || g.links_up() == 0);
    send_ok(&g.server(), &["pub.reload@example.org"], "still here");
    assert_eq!(sub.body(), "still here");
    assert!(g.status()["connections_total"].as_u64().unwrap() > subs_before);
    g.signal(Signal::TERM);
    assert!(g.wait().success());
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    // systemd's side of Type=notify: a datagram socket named by NOTIFY_SOCKET.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification from galed");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut g = Galed::start_with("127.0.0.1:0", &[], |c| {
        c.env("NOTIFY_SOCKET", &path);
    });
    // READY=1 comes once galed listens (the harness saw the line first).
    assert!(next().contains("READY=1"));
    assert!(std::net::TcpStream::connect(g.addr).is_ok());
    g.signal(Signal::HUP);
    assert!(next().contains("RELOADING=1"));
    assert!(next().contains("READY=1"));
    g.signal(Signal::TERM);
    assert!(next().contains("STOPPING=1"));
    assert!(g.wait().success());
}

#[test]
#[ignore = "system suite: needs promtool (Debian package prometheus; run by .ci/system-tests)"]
fn the_metrics_pass_promtool_during_traffic() {
    let hub = Galed::start(&[]);
    traffic_with_metrics(&hub, 200, 40, |m| {
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus) must be installed");
        check.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{m}",
            text(&out.stdout),
            text(&out.stderr)
        );
    });
}
