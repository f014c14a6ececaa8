//! The same firehose against NATS and Redis, when their servers are installed
//! (`nats-server`, `redis-server` on PATH; Debian packages nats-server and
//! redis-server), so that galed's figures can be compared in one run on one
//! machine. Same shape as `fanout`: one publisher writing 64 KiB batches of
//! 128-byte messages as fast as its socket allows, subscribers reading as fast as
//! they can, delivered rate measured at the subscribers, loss = what never came.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::raw::median;
use crate::scenarios::Setup;

const BODY: usize = 128;
const PUB_WRITE: usize = 64 * 1024;

/// A server process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

fn wait_listening(port: u16) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < end, "server on port {port} never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// What a protocol needs to be driven by the common firehose.
trait Anchor: Sync {
    /// Bytes a subscriber sends after connecting, and what it waits for before the
    /// subscription is in force.
    fn subscribe(&self) -> (Vec<u8>, &'static [u8]);
    /// One publish of `BODY` bytes.
    fn publish(&self) -> Vec<u8>;
    /// Counts the messages among the whole records at the front of `buf`;
    /// returns (bytes consumed, messages).
    fn scan(&self, buf: &[u8]) -> (usize, u64);
    /// Bytes a fresh connection must send first (a handshake).
    fn hello(&self) -> Vec<u8> {
        Vec::new()
    }
}

struct Nats;

impl Anchor for Nats {
    fn hello(&self) -> Vec<u8> {
        b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n".to_vec()
    }
    fn subscribe(&self) -> (Vec<u8>, &'static [u8]) {
        (b"SUB bench 1\r\nPING\r\n".to_vec(), b"PONG\r\n")
    }
    fn publish(&self) -> Vec<u8> {
        let mut v = format!("PUB bench {BODY}\r\n").into_bytes();
        v.extend(std::iter::repeat_n(b'x', BODY));
        v.extend_from_slice(b"\r\n");
        v
    }
    fn scan(&self, buf: &[u8]) -> (usize, u64) {
        let (mut at, mut n) = (0, 0);
        while let Some(eol) = find_crlf(&buf[at..]) {
            let line = &buf[at..at + eol];
            if line.starts_with(b"MSG ") {
                let len = trailing_number(line);
                let end = at + eol + 2 + len + 2;
                if end > buf.len() {
                    break;
                }
                n += 1;
                at = end;
            } else {
                at += eol + 2;
            }
        }
        (at, n)
    }
}

struct Redis;

impl Anchor for Redis {
    fn subscribe(&self) -> (Vec<u8>, &'static [u8]) {
        (
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n".to_vec(),
            b"subscribe\r\n",
        )
    }
    fn publish(&self) -> Vec<u8> {
        let mut v = format!("*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n${BODY}\r\n").into_bytes();
        v.extend(std::iter::repeat_n(b'x', BODY));
        v.extend_from_slice(b"\r\n");
        v
    }
    fn scan(&self, buf: &[u8]) -> (usize, u64) {
        // Pushes are arrays of bulk strings: *3 $7 message $5 bench $128 <body>.
        let (mut at, mut n) = (0, 0);
        while let Some((len, first)) = resp_array(&buf[at..]) {
            if first == Some(b"message".as_slice()) {
                n += 1;
            }
            at += len;
        }
        (at, n)
    }
}

/// Where the first "\r\n" starts (records here never hold a lone '\n').
fn find_crlf(b: &[u8]) -> Option<usize> {
    let nl = b.iter().position(|&c| c == b'\n')?;
    (nl > 0 && b[nl - 1] == b'\r').then(|| nl - 1)
}

/// The decimal number at the end of `line`.
fn trailing_number(line: &[u8]) -> usize {
    let digits = line.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    line[line.len() - digits..]
        .iter()
        .fold(0, |n, d| n * 10 + usize::from(d - b'0'))
}

/// One RESP array of bulk strings (or a simple line) at the front of `b`:
/// (its length, its first element).
fn resp_array(b: &[u8]) -> Option<(usize, Option<&[u8]>)> {
    let eol = find_crlf(b)?;
    if b.first() != Some(&b'*') {
        return Some((eol + 2, None)); // +PONG, :N and the like
    }
    let count = trailing_number(&b[1..eol]);
    let mut at = eol + 2;
    let mut first = None;
    for _ in 0..count {
        let rest = &b[at..];
        let e = find_crlf(rest)?;
        let elem = match rest.first()? {
            b'$' => {
                let len = trailing_number(&rest[1..e]);
                let start = at + e + 2;
                if start + len + 2 > b.len() {
                    return None;
                }
                at = start + len + 2;
                &b[start..start + len]
            }
            _ => {
                at += e + 2;
                &rest[1..e]
            }
        };
        first.get_or_insert(elem);
    }
    Some((at, first))
}

fn connect(a: &dyn Anchor, addr: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(&a.hello())?;
    Ok(s)
}

/// Subscribes and reads until the server confirms it.
fn subscribe(a: &dyn Anchor, s: &mut TcpStream) -> Result<()> {
    let (ask, answer) = a.subscribe();
    s.write_all(&ask)?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    while !got.windows(answer.len()).any(|w| w == answer) {
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "closed before the barrier's answer");
        got.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

type Counted = (u64, Option<Instant>, Option<Instant>);

fn count(a: &dyn Anchor, mut s: TcpStream, want: u64) -> Result<Counted> {
    let (mut got, mut first, mut last) = (0u64, None, None);
    let mut buf = vec![0u8; 1 << 20];
    let mut have = 0;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    while got < want {
        let n = match s.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        first.get_or_insert(now);
        last = Some(now);
        have += n;
        let (used, k) = a.scan(&buf[..have]);
        got += k;
        buf.copy_within(used..have, 0);
        have -= used;
        if have == buf.len() {
            bail!("a record larger than the read buffer");
        }
    }
    Ok((got, first, last))
}

fn firehose(
    a: &dyn Anchor,
    publish_to: SocketAddr,
    subscribe_at: SocketAddr,
    subs: usize,
    n: u64,
) -> Result<(f64, u64)> {
    let mut conns = Vec::new();
    for _ in 0..subs {
        let mut s = connect(a, subscribe_at)?;
        subscribe(a, &mut s)?;
        conns.push(s);
    }
    // Subscriptions propagate between NATS servers asynchronously.
    if publish_to != subscribe_at {
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::scope(|sc| -> Result<(f64, u64)> {
        let readers: Vec<_> = conns
            .into_iter()
            .map(|s| sc.spawn(move || count(a, s, n)))
            .collect();
        let mut p = connect(a, publish_to)?;
        // Drain the publisher's replies (Redis answers every PUBLISH).
        let mut drain = p.try_clone()?;
        sc.spawn(move || {
            let mut b = vec![0u8; 1 << 16];
            while matches!(drain.read(&mut b), Ok(k) if k > 0) {}
        });
        let one = a.publish();
        let per = (PUB_WRITE / one.len()).max(1) as u64;
        let batch: Vec<u8> = one.repeat(per as usize);
        let mut sent = 0;
        while sent < n {
            let k = per.min(n - sent);
            p.write_all(&batch[..k as usize * one.len()])?;
            sent += k;
        }
        let (mut got, mut first, mut last) = (0, None::<Instant>, None::<Instant>);
        for r in readers {
            let (g, f, l) = r.join().expect("reader")?;
            got += g;
            first = first.into_iter().chain(f).min();
            last = last.into_iter().chain(l).max();
        }
        let _ = p.shutdown(std::net::Shutdown::Both);
        let secs = match (first, last) {
            (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
            _ => bail!("no deliveries"),
        };
        Ok((got as f64 / secs, n * subs as u64 - got))
    })
}

fn nats_servers(count: usize) -> Result<(Vec<Server>, Vec<SocketAddr>)> {
    let ports: Vec<(u16, u16)> = (0..count)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let mut servers = Vec::new();
    for (i, (port, cport)) in ports.iter().enumerate() {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        if count > 1 {
            cmd.args([
                "--cluster_name",
                "bench",
                "--cluster",
                &format!("nats://127.0.0.1:{cport}"),
            ]);
            if i > 0 {
                cmd.args(["--routes", &format!("nats://127.0.0.1:{}", ports[i - 1].1)]);
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nats-server")?;
        servers.push(Server(child));
        wait_listening(*port)?;
    }
    if count > 1 {
        std::thread::sleep(Duration::from_millis(1000)); // routes connect
    }
    let addrs = ports
        .iter()
        .map(|(p, _)| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    Ok((servers, addrs))
}

fn redis_server() -> Result<(Server, SocketAddr)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("redis-server")?;
    wait_listening(port)?;
    Ok((Server(child), SocketAddr::from(([127, 0, 0, 1], port))))
}

fn report(name: &str, runs: &[(f64, u64)], want: u64) {
    let rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let mut losses: Vec<f64> = runs
        .iter()
        .map(|r| r.1 as f64 * 100.0 / want as f64)
        .collect();
    println!(
        "{name}: median {:.0} deliveries/s (each: {:?}), median loss {:.2}%",
        median(&mut rates.clone()),
        rates.iter().map(|r| *r as u64).collect::<Vec<_>>(),
        median(&mut losses),
    );
}

/// Runs the firehose against NATS (1->1, 1->16, two servers) and Redis (1->1,
/// 1->16), each only if its server is installed.
pub fn run(cfg: &Setup) -> Result<()> {
    let n = cfg.messages;
    if on_path("nats-server") {
        for (subs, servers) in [(1, 1), (16, 1), (1, 2)] {
            let mut runs = Vec::new();
            for _ in 0..cfg.runs {
                let (_s, addrs) = nats_servers(servers)?;
                runs.push(firehose(
                    &Nats,
                    addrs[0],
                    *addrs.last().expect("one"),
                    subs,
                    n,
                )?);
            }
            report(
                &format!("NATS fanout 1->{subs} across {servers} server(s)"),
                &runs,
                n * subs as u64,
            );
        }
    } else {
        println!("anchors: nats-server is not installed (Debian package nats-server); skipped");
    }
    if on_path("redis-server") {
        for subs in [1, 16] {
            let mut runs = Vec::new();
            for _ in 0..cfg.runs {
                let (_s, addr) = redis_server()?;
                runs.push(firehose(&Redis, addr, addr, subs, n)?);
            }
            report(&format!("Redis fanout 1->{subs}"), &runs, n * subs as u64);
        }
    } else {
        println!("anchors: redis-server is not installed (Debian package redis-server); skipped");
    }
    Ok(())
}
