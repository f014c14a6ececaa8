//! The control socket of a running gsub: `$GALE_DIR/run/gsub.<pid>.sock` (the
//! directory made 0700), through which `gsub --set-presence` changes its
//! presence without a restart. One socket per gsub, so several gsubs of one
//! person each keep their own presence.
//!
//! The protocol is one line each way (UTF-8, `\n`-terminated, at most
//! [`MAX_LINE`] bytes): `presence <device|*> <STATE>`, `away <device|*> <TEXT>`
//! (an empty TEXT ends the away message) or `status <device|*>`; the answer is
//! `ok <device> <presence>`, `skip` (another device was named) or
//! `error <why>`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The directory of control sockets, under `GALE_DIR`.
pub const RUN_DIR: &str = "run";
/// Longest request or answer line.
pub const MAX_LINE: usize = 4096;
/// How long either side waits for the other's line.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest socket path the kernel takes (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What a request asks of the gsub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Presence(String),
    /// `None`: no longer away.
    Away(Option<String>),
    Status,
}

/// A parsed request: the device it is for (`None`: all) and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub device: Option<String>,
    pub command: Command,
}

impl Request {
    /// The request's line, without the newline.
    pub fn line(&self) -> String {
        let dev = self.device.as_deref().unwrap_or("*");
        match &self.command {
            Command::Presence(s) => format!("presence {dev} {s}"),
            Command::Away(t) => format!("away {dev} {}", t.as_deref().unwrap_or("")),
            Command::Status => format!("status {dev}"),
        }
    }

    pub fn parse(line: &str) -> Result<Request, String> {
        let mut parts = line.splitn(3, ' ');
        let verb = parts.next().unwrap_or("");
        let device = match parts.next() {
            Some("*") => None,
            Some(d) if !d.is_empty() => Some(d.to_string()),
            _ => return Err("no device (write * for all)".into()),
        };
        let arg = parts.next().unwrap_or("").trim();
        let command = match verb {
            "presence" if valid_state(arg) => Command::Presence(arg.to_string()),
            "presence" => return Err(format!("bad presence {arg:?}: {STATE_RULE}")),
            "away" if arg.is_empty() => Command::Away(None),
            "away" => Command::Away(Some(arg.replace("\\n", "\n"))),
            "status" => Command::Status,
            _ => return Err(format!("unknown request {verb:?}")),
        };
        Ok(Request { device, command })
    }
}

/// What a presence state may be.
pub const STATE_RULE: &str =
    "a presence is one word of letters, digits, '.', '/', '_' or '-', e.g. in.present or out.to.lunch";

/// True if `s` is a presence state ([`STATE_RULE`]).
pub fn valid_state(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.chars().all(|c| c.is_alphanumeric() || "./_-".contains(c))
}

/// A request received, with where to send its answer line.
#[derive(Debug)]
pub struct Incoming {
    pub request: Request,
    pub reply: oneshot::Sender<String>,
}

/// A bound control socket; the file is removed on drop.
#[derive(Debug)]
pub struct ControlSocket {
    pub path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The socket directory of `gale_dir`, made (0700) if missing.
fn run_dir(gale_dir: &Path) -> io::Result<PathBuf> {
    let dir = gale_dir.join(RUN_DIR);
    std::fs::create_dir_all(&dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

impl ControlSocket {
    /// Binds this process's socket in `gale_dir` and starts accepting; requests
    /// come out of the receiver, one at a time. Must run inside a tokio runtime.
    pub fn bind(gale_dir: &Path) -> io::Result<(ControlSocket, mpsc::Receiver<Incoming>)> {
        let path = run_dir(gale_dir)?.join(format!("gsub.{}.sock", std::process::id()));
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::other(format!(
                "{} is too long for a Unix socket (at most {MAX_SOCKET_PATH} bytes): use a \
                 shorter GALE_DIR",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(accept(listener, tx));
        Ok((ControlSocket { path }, rx))
    }
}

async fn accept(listener: UnixListener, tx: mpsc::Sender<Incoming>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(IO_TIMEOUT, serve(stream, tx)).await;
        });
    }
}

/// Reads at most one line of `MAX_LINE` bytes.
async fn read_line(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> io::Result<String> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_LINE as u64))
        .read_line(&mut line)
        .await?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

async fn serve(mut stream: UnixStream, tx: mpsc::Sender<Incoming>) -> io::Result<()> {
    let line = read_line(&mut stream).await?;
    let answer = match Request::parse(&line) {
        Ok(request) => {
            let (reply, rx) = oneshot::channel();
            if tx.send(Incoming { request, reply }).await.is_err() {
                return Ok(());
            }
            rx.await.unwrap_or_else(|_| "error gsub is stopping".into())
        }
        Err(e) => format!("error {e}"),
    };
    stream.write_all(format!("{answer}\n").as_bytes()).await
}

/// Why no running gsub could be told.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no gsub of yours is running here (no socket in {0}): start gsub first")]
    NoneRunning(PathBuf),
    #[error("cannot read {0}: {1}")]
    Dir(PathBuf, #[source] io::Error),
}

/// Sends `request` to every gsub with a socket in `gale_dir`. Returns each one's
/// answer (`(socket, line)`); sockets nobody listens on any more are removed.
pub async fn send_all(
    gale_dir: &Path,
    request: &Request,
) -> Result<Vec<(PathBuf, String)>, ControlError> {
    let dir = gale_dir.join(RUN_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ControlError::NoneRunning(dir))
        }
        Err(e) => return Err(ControlError::Dir(dir, e)),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let is_sock = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("gsub.") && n.ends_with(".sock"));
        if !is_sock {
            continue;
        }
        match tokio::time::timeout(IO_TIMEOUT, ask(&path, request)).await {
            Ok(Ok(answer)) => out.push((path, answer)),
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) =>
            {
                // Left by a gsub that was killed: nobody will answer there again.
                let _ = std::fs::remove_file(&path);
            }
            Ok(Err(e)) => out.push((path, format!("error {e}"))),
            Err(_) => out.push((path, "error no answer within 2 s".into())),
        }
    }
    if out.is_empty() {
        return Err(ControlError::NoneRunning(dir));
    }
    Ok(out)
}

async fn ask(path: &Path, request: &Request) -> io::Result<String> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(format!("{}\n", request.line()).as_bytes())
        .await?;
    read_line(&mut s).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        for r in [
            Request {
                device: None,
                command: Command::Presence("out.to.lunch".into()),
            },
            Request {
                device: Some("laptop".into()),
                command: Command::Away(Some("gone fishing".into())),
            },
            Request {
                device: None,
                command: Command::Away(None),
            },
            Request {
                device: None,
                command: Command::Status,
            },
        ] {
            assert_eq!(Request::parse(&r.line()).unwrap(), r);
        }
        assert!(Request::parse("presence * in present").is_err());
        assert!(Request::parse("presence *").is_err());
        assert!(Request::parse("fly *").is_err());
        assert!(Request::parse("").is_err());
    }

    #[tokio::test]
    async fn a_request_reaches_the_socket_and_its_answer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, mut rx) = ControlSocket::bind(dir.path()).unwrap();
        // A socket left by a dead gsub is removed, not counted.
        let stale = dir.path().join(RUN_DIR).join("gsub.1.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        tokio::spawn(async move {
            let i = rx.recv().await.unwrap();
            assert_eq!(i.request.command, Command::Presence("out".into()));
            i.reply.send("ok laptop out".into()).unwrap();
        });
        let r = Request {
            device: None,
            command: Command::Presence("out".into()),
        };
        let answers = send_all(dir.path(), &r).await.unwrap();
        assert_eq!(answers, vec![(sock.path.clone(), "ok laptop out".into())]);
        assert!(!stale.exists());
        drop(sock);
        assert!(matches!(
            send_all(dir.path(), &r).await,
            Err(ControlError::NoneRunning(_))
        ));
    }
}
