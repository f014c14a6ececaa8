//! Reading message text from gsend's standard input: a whole body (ended by EOF,
//! or on a terminal also by a line holding only "."), or one line at a time with
//! a cap on line length so that memory stays bounded whatever the input.
//!
//! A body is text: a whole body that is not UTF-8 is refused ([`text`]), where
//! a line of `--lines` is sent with the bad bytes replaced ([`Line::mended`]).

use std::fmt;
use std::io::{self, BufRead, Read};

use gale_proto::limits::DEFAULT_MAX_FRAME;

use tokio::sync::mpsc;

/// Longest line `gsend --lines` puts in one message; longer lines are split
/// (between characters: a piece may be up to 3 bytes longer to end one).
pub const MAX_LINE: usize = 64 * 1024;

/// Bytes read as a body that are not UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotText {
    /// Where the first bad byte is, counted from 0.
    pub offset: usize,
    pub byte: u8,
}

impl fmt::Display for NotText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "standard input is not UTF-8 text (byte {} is 0x{:02x}); a message body is \
             text: convert it first (e.g. with iconv), or encode binary data (e.g. base64)",
            self.offset, self.byte
        )
    }
}

impl std::error::Error for NotText {}

/// The body as text, or where it stops being UTF-8.
pub fn text(body: Vec<u8>) -> Result<String, NotText> {
    String::from_utf8(body).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        NotText {
            offset,
            byte: e.as_bytes()[offset],
        }
    })
}

/// Most bytes a body may have: a message is one frame, and no frame is larger
/// (the signature, names and times take some of it, so a body just under this
/// can still be refused as a message too large, after it is built).
pub const MAX_BODY: usize = DEFAULT_MAX_FRAME as usize;

/// A body larger than [`MAX_BODY`]: reading stopped there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong {
    pub max: usize,
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "standard input is longer than {} bytes ({} KiB), the most one message can \
             carry: send it in parts (split it, or --lines for text)",
            self.max,
            self.max / 1024
        )
    }
}

impl std::error::Error for TooLong {}

/// Reads a body until EOF, but never more than `max` + 1 bytes (enough to know
/// it is too long, whatever the input: see [`check_len`]); when `dot_ends` (a
/// person typing), a line holding only "." also ends it and is not part of the
/// body.
pub fn read_body(input: &mut impl BufRead, dot_ends: bool, max: usize) -> io::Result<Vec<u8>> {
    let mut input = input.take(max as u64 + 1);
    let mut body = Vec::new();
    if !dot_ends {
        input.read_to_end(&mut body)?;
        return Ok(body);
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let bare = line.strip_suffix(b"\n").unwrap_or(&line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare == b"." {
            break;
        }
        body.extend_from_slice(&line);
    }
    Ok(body)
}

/// A body read by [`read_body`] with this `max`, unless it is longer.
pub fn check_len(body: Vec<u8>, max: usize) -> Result<Vec<u8>, TooLong> {
    if body.len() > max {
        Err(TooLong { max })
    } else {
        Ok(body)
    }
}

/// How many bytes the UTF-8 character begun at the end of `buf` still lacks.
fn unfinished_char(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(4) {
        let b = buf[buf.len() - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let len: usize = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return len.saturating_sub(back);
    }
    0
}

/// Reads the next line, without its line ending, into `buf` (cleared first),
/// stopping after `cap` bytes (the rest of a longer line comes as the next
/// "line"). Returns false at EOF with nothing read.
pub fn read_line_capped(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<bool> {
    buf.clear();
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(any);
        }
        any = true;
        let room = cap.saturating_sub(buf.len());
        // One byte past the cap, so a line of exactly `cap` bytes keeps its newline.
        let window = &chunk[..chunk.len().min(room + 1)];
        if let Some(nl) = window.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&window[..nl]);
            input.consume(nl + 1);
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(true);
        }
        let n = chunk.len().min(room);
        buf.extend_from_slice(&chunk[..n]);
        input.consume(n);
        if buf.len() >= cap {
            finish_char(input, buf)?;
            return Ok(true);
        }
    }
}

/// Takes the rest of a character cut by the cap, so that splitting a long line
/// never makes text that is not UTF-8.
fn finish_char(input: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut added = false;
    loop {
        let need = unfinished_char(buf);
        if need == 0 && !added {
            return Ok(());
        }
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if need == 0 {
            // The character ended the line: its newline is not an empty line.
            if chunk.first() == Some(&b'\n') {
                input.consume(1);
            }
            return Ok(());
        }
        let n = chunk
            .iter()
            .take(need)
            .take_while(|&&b| b & 0xC0 == 0x80)
            .count();
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        input.consume(n);
        added = true;
    }
}

/// One line of `--lines`, with its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    /// The line was not UTF-8: its bad bytes were replaced by U+FFFD.
    pub mended: bool,
}

impl Line {
    fn from_bytes(bytes: &[u8]) -> Line {
        let text = String::from_utf8_lossy(bytes);
        let mended = matches!(text, std::borrow::Cow::Owned(_));
        Line {
            text: text.into_owned() + "\n",
            mended,
        }
    }
}

/// Reads lines on a thread (stdin is blocking) into a small bounded channel, so at
/// most a few lines wait here while the client's queue is full.
pub fn spawn_line_reader() -> mpsc::Receiver<io::Result<Line>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        let mut buf = Vec::new();
        loop {
            let item = match read_line_capped(&mut input, &mut buf, MAX_LINE) {
                Ok(false) => return,
                Ok(true) => Ok(Line::from_bytes(&buf)),
                Err(e) => Err(e),
            };
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_until_eof_or_dot() {
        let mut pipe = &b"a\n.\nb\n"[..];
        assert_eq!(read_body(&mut pipe, false, 100).unwrap(), b"a\n.\nb\n");
        let mut tty = &b"a\r\n.\r\nb\n"[..];
        assert_eq!(read_body(&mut tty, true, 100).unwrap(), b"a\r\n");
        let mut tty = &b"a\n.."[..];
        assert_eq!(read_body(&mut tty, true, 100).unwrap(), b"a\n..");
    }

    /// Input that never ends: reading stops one byte past the limit, in either
    /// mode (a terminal's line has no end either).
    #[test]
    fn a_body_is_read_only_up_to_its_limit() {
        for dot_ends in [false, true] {
            let mut endless = io::BufReader::new(io::repeat(b'x'));
            let body = read_body(&mut endless, dot_ends, 1000).unwrap();
            assert_eq!(body.len(), 1001, "dot_ends {dot_ends}");
            let e = check_len(body, 1000).unwrap_err();
            assert!(e.to_string().contains("longer than 1000 bytes"), "{e}");
        }
        let mut exact = &[b'x'; 1000][..];
        let body = read_body(&mut exact, false, 1000).unwrap();
        assert_eq!(check_len(body, 1000).unwrap().len(), 1000);
    }

    #[test]
    fn a_body_is_text() {
        assert_eq!(text("é\n".into()).unwrap(), "é\n");
        let e = text(b"ok\n\xffno".to_vec()).unwrap_err();
        assert_eq!(
            e,
            NotText {
                offset: 3,
                byte: 0xff
            }
        );
        assert!(e.to_string().contains("byte 3 is 0xff"), "{e}");
        assert_eq!(Line::from_bytes(b"a\xffb").text, "a\u{fffd}b\n");
        assert!(Line::from_bytes(b"a\xffb").mended);
        assert!(!Line::from_bytes("é".as_bytes()).mended);
    }

    #[test]
    fn a_split_never_cuts_a_character() {
        // "aé€" is 1 + 2 + 3 bytes; a cap of 2 and 4 falls inside é and €.
        for cap in 1..=6 {
            let mut input = io::BufReader::with_capacity(64, "aé€\n".as_bytes());
            let mut buf = Vec::new();
            let mut pieces = Vec::new();
            while read_line_capped(&mut input, &mut buf, cap).unwrap() {
                pieces.push(String::from_utf8(buf.clone()).expect("whole characters"));
            }
            assert_eq!(pieces.concat(), "aé€", "cap {cap}");
            assert!(
                pieces.iter().all(|p| !p.is_empty()),
                "cap {cap}: {pieces:?}"
            );
        }
    }

    #[test]
    fn lines_are_capped() {
        let mut input = io::BufReader::with_capacity(4, &b"ab\r\n\nabcdefg\nabcde\nlast"[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while read_line_capped(&mut input, &mut buf, 5).unwrap() {
            got.push(String::from_utf8(buf.clone()).unwrap());
        }
        assert_eq!(got, ["ab", "", "abcde", "fg", "abcde", "last"]);
    }
}
