//! Reading message text from gsend's standard input: a whole body (ended by EOF,
//! or on a terminal also by a line holding only "."), or one line at a time with
//! a cap on line length so that memory stays bounded whatever the input.

use std::io::{self, BufRead};

/// Longest line `gsend --lines` puts in one message; longer lines are split.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads a body until EOF; when `dot_ends` (a person typing), a line holding only
/// "." also ends it and is not part of the body. Invalid UTF-8 is replaced.
pub fn read_body(input: &mut impl BufRead, dot_ends: bool) -> io::Result<String> {
    let mut body = Vec::new();
    if !dot_ends {
        input.read_to_end(&mut body)?;
        return Ok(String::from_utf8_lossy(&body).into_owned());
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
    Ok(String::from_utf8_lossy(&body).into_owned())
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
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_until_eof_or_dot() {
        let mut pipe = &b"a\n.\nb\n"[..];
        assert_eq!(read_body(&mut pipe, false).unwrap(), "a\n.\nb\n");
        let mut tty = &b"a\r\n.\r\nb\n"[..];
        assert_eq!(read_body(&mut tty, true).unwrap(), "a\r\n");
        let mut tty = &b"a\n.."[..];
        assert_eq!(read_body(&mut tty, true).unwrap(), "a\n..");
        let mut bad = &b"\xff\n"[..];
        assert_eq!(read_body(&mut bad, false).unwrap(), "\u{fffd}\n");
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
