//! `galed --status [ADDR]`: a running galed's status, as JSON (`--json`, the
//! STATUS frame's text unchanged) or as tables a person reads at a glance: the
//! server, its links with their state and rates, and the clients with the
//! deepest queues and the most drops. Rates come from two reports one second
//! apart.

use std::fmt::Write;
use std::net::ToSocketAddrs;
use std::time::Duration;

use anyhow::{Context, Result};
use gale_net::{RawClient, ServerAddr};
use gale_server::status::{ClientStatus, LinkStatus, Status};

/// How long `galed --status` waits for each report, all told.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Between the two reports the rates are measured over.
const RATE_INTERVAL: Duration = Duration::from_secs(1);
/// Clients shown in each table.
const TOP_CLIENTS: usize = 10;

/// Asks the galed at `addr` for its status and prints it.
pub async fn print(addr: &str, json: bool) -> Result<()> {
    let addr = ServerAddr::parse(addr)?;
    let first = fetch(&addr).await?;
    if json {
        println!("{first}");
        return Ok(());
    }
    let before: Status = serde_json::from_str(&first)
        .with_context(|| format!("galed at {addr} sent a status this galed cannot read"))?;
    tokio::time::sleep(RATE_INTERVAL).await;
    let after: Status = serde_json::from_str(&fetch(&addr).await?)
        .with_context(|| format!("galed at {addr} sent a status this galed cannot read"))?;
    print!("{}", tables(&before, &after, RATE_INTERVAL));
    Ok(())
}

async fn fetch(addr: &ServerAddr) -> Result<String> {
    let ask = async {
        let mut c = RawClient::connect((addr.host.as_str(), addr.port), "galed --status")
            .await
            .with_context(|| format!("cannot talk to galed at {addr}"))?;
        c.status()
            .await
            .with_context(|| format!("galed at {addr} gave no status"))
    };
    tokio::time::timeout(STATUS_TIMEOUT, ask)
        .await
        .map_err(|_| {
            anyhow::anyhow!("no status from {addr} within {}s", STATUS_TIMEOUT.as_secs())
        })?
}

/// Each configured link (as written) with the link that is up for it, if any: a
/// dialled link whose address is one of the entry's alternates.
pub fn configured_links(s: &Status) -> Vec<(String, Option<&LinkStatus>)> {
    s.configured_links
        .iter()
        .map(|spec| {
            let alts: Vec<std::net::SocketAddr> = gale_net::parse_server_list(spec)
                .unwrap_or_default()
                .iter()
                .flat_map(|a| {
                    (a.host.trim_matches(['[', ']']), a.port)
                        .to_socket_addrs()
                        .map(|i| i.collect::<Vec<_>>())
                        .unwrap_or_default()
                })
                .collect();
            let up = s.links.iter().find(|l| {
                l.dialed
                    && l.addr
                        .parse::<std::net::SocketAddr>()
                        .is_ok_and(|a| alts.contains(&a))
            });
            (spec.clone(), up)
        })
        .collect()
}

/// The report as tables; rates per second between `before` and `after`.
pub fn tables(before: &Status, s: &Status, over: Duration) -> String {
    let secs = over.as_secs_f64().max(0.001);
    let rate = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs).round() as u64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "galed {}, up {}\n  connections {} (limit {}; {} accepted, {} refused)   \
         subscriptions {} of {}   memory {} of {}\n  messages {}/s published, {}/s \
         delivered   dropped: {} duplicates, {} hop limit, {} for clients\n  resume \
         window {} messages, {} resumes, {} with a gap",
        s.name,
        duration(s.up_secs),
        s.connections,
        s.max_connections,
        s.connections_total,
        s.refused_connections,
        s.subscriptions,
        s.max_subscriptions,
        bytes(s.memory_used as u64),
        bytes(s.memory_limit as u64),
        rate(before.published, s.published),
        rate(before.delivered, s.delivered),
        s.duplicates_dropped,
        s.hop_limit_dropped,
        s.client_dropped,
        s.resume_window.entries,
        s.resume_window.resumed,
        s.resume_window.gaps,
    );
    // Links: every configured one (up or down), then those others dialled to us.
    let mut rows = vec![row(&[
        "LINK",
        "PEER",
        "STATE",
        "UP",
        "IN/S",
        "OUT/S",
        "QUEUED",
        "DROPPED",
        "INTEREST IN/OUT",
    ])];
    let link_row = |spec: &str, l: &LinkStatus| {
        let b = before.links.iter().find(|x| x.id == l.id);
        let (mi, fo) = b.map_or((l.messages_in, l.frames_out), |b| {
            (b.messages_in, b.frames_out)
        });
        row(&[
            spec,
            &l.peer,
            "up",
            &duration(l.up_secs),
            &rate(mi, l.messages_in).to_string(),
            &rate(fo, l.frames_out).to_string(),
            &bytes(l.queued_bytes as u64),
            &l.dropped.to_string(),
            &format!(
                "{}{}/{} ({})",
                l.interest_received,
                if l.flooded { " (all)" } else { "" },
                l.interest_advertised,
                l.interest_mode
            ),
        ])
    };
    let configured = configured_links(s);
    for (spec, up) in &configured {
        match up {
            Some(l) => rows.push(link_row(spec, l)),
            None => rows.push(row(&[spec, "-", "DOWN", "-", "-", "-", "-", "-", "-"])),
        }
    }
    for l in &s.links {
        if !configured
            .iter()
            .any(|(_, u)| u.is_some_and(|u| u.id == l.id))
        {
            let spec = if l.dialed {
                l.addr.clone()
            } else {
                format!("from {}", l.addr)
            };
            rows.push(link_row(&spec, l));
        }
    }
    if rows.len() > 1 {
        let _ = writeln!(out, "\nLinks");
        out += &table(&rows);
    } else {
        let _ = writeln!(out, "\nLinks: none");
    }
    let client_table = |title: &str, key: fn(&ClientStatus) -> u64| {
        let mut cs: Vec<&ClientStatus> = s.clients.iter().filter(|c| key(c) > 0).collect();
        cs.sort_by_key(|c| std::cmp::Reverse(key(c)));
        if cs.is_empty() {
            return format!("\n{title}: none\n");
        }
        let mut rows = vec![row(&[
            "ID", "PEER", "AGENT", "UP", "SUBS", "QUEUED", "DROPPED", "HELD", "OUT/S",
        ])];
        for c in cs.into_iter().take(TOP_CLIENTS) {
            let b = before
                .clients
                .iter()
                .find(|x| x.id == c.id)
                .map_or(c.frames_out, |b| b.frames_out);
            rows.push(row(&[
                &c.id.to_string(),
                &c.peer,
                &c.agent,
                &duration(c.up_secs),
                &c.subscriptions.to_string(),
                &bytes(c.queued_bytes as u64),
                &c.dropped.to_string(),
                &format!("{}ms", c.held_ms),
                &rate(b, c.frames_out).to_string(),
            ]));
        }
        format!("\n{title}\n{}", table(&rows))
    };
    out += &client_table("Clients with the deepest queues", |c| c.queued_bytes as u64);
    out += &client_table("Clients with the most drops", |c| c.dropped);
    if s.clients_omitted > 0 {
        let _ = writeln!(
            out,
            "({} clients left out of the report)",
            s.clients_omitted
        );
    }
    out += &inboxes(s);
    out
}

/// The inboxes: the store at a glance, then the inboxes holding the most.
fn inboxes(s: &Status) -> String {
    let ib = &s.inboxes;
    let mut out = format!("\nInboxes: {}\n", ib.summary());
    if !ib.enabled {
        return out;
    }
    let mut list: Vec<_> = ib.list.iter().collect();
    list.sort_by_key(|i| std::cmp::Reverse(i.messages));
    let mut rows = vec![row(&["INBOX", "MESSAGES", "BYTES", "DEVICES (WAITING)"])];
    for i in list.iter().take(10) {
        let devices: Vec<String> = i
            .devices
            .iter()
            .map(|d| {
                format!(
                    "{}{} ({})",
                    d.name,
                    if d.live { "*" } else { "" },
                    d.waiting
                )
            })
            .collect();
        rows.push(row(&[
            &i.name,
            &i.messages.to_string(),
            &bytes(i.bytes),
            &devices.join(", "),
        ]));
    }
    if rows.len() > 1 {
        let _ = writeln!(out, "{}  (* connected)", table(&rows));
    }
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
    out
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1 << 10 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_at_a_glance() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3725), "1h02m");
        assert_eq!(duration(90_000), "1d01h");
    }

    #[test]
    fn a_table_lines_up_its_columns() {
        let t = table(&[row(&["A", "LONG"]), row(&["wide cell", "x"])]);
        assert_eq!(t, "  A          LONG\n  wide cell  x\n");
    }
}
