//! The human-readable display of messages, in the spirit of Gale's default gsub
//! formatter: a rule, a `To:` header, the body wrapped to the terminal, and a
//! right-aligned footer with sender and time. Presence notices take one line,
//! marked when they are not signed by the person they announce.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Local, SecondsFormat, TimeZone, Utc};
use gale_proto::fragment::names;
use gale_proto::{Fragments, Payload, Timestamp};
use textwrap::core::display_width;
use thiserror::Error;

use gale_client::{Delivery, Unreadable, Verify};
use gale_security::people::status::idle_text;
use gale_security::people::{kind, Status};

/// Environment variable with a strftime format for message times.
pub const TIME_FORMAT_ENV: &str = "GALE_TIME_FORMAT";
/// Gale's default time format.
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// Environment variable overriding the terminal width.
pub const COLUMNS_ENV: &str = "GALE_COLUMNS";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad time format {0:?} (see strftime(3), e.g. \"%Y-%m-%d %H:%M:%S\")")]
pub struct BadTimeFormat(pub String);

/// A validated strftime format, shown in local time or UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat {
    format: String,
    utc: bool,
}

impl Default for TimeFormat {
    fn default() -> Self {
        TimeFormat {
            format: DEFAULT_TIME_FORMAT.into(),
            utc: false,
        }
    }
}

impl TimeFormat {
    /// Checks `format` now, so that rendering cannot fail later.
    pub fn new(format: &str, utc: bool) -> Result<TimeFormat, BadTimeFormat> {
        if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
            return Err(BadTimeFormat(format.to_string()));
        }
        Ok(TimeFormat {
            format: format.to_string(),
            utc,
        })
    }

    pub fn render(&self, ts: Timestamp) -> String {
        let Some(t) = DateTime::<Utc>::from_timestamp(ts.secs, ts.nanos) else {
            return format!("@{}", ts.secs);
        };
        let mut out = String::new();
        let ok = if self.utc {
            write!(out, "{}", t.format(&self.format))
        } else {
            write!(
                out,
                "{}",
                Local.from_utc_datetime(&t.naive_utc()).format(&self.format)
            )
        };
        if ok.is_err() {
            // Validated in `new`; a locale-specific item could still fail.
            return t.to_rfc3339_opts(SecondsFormat::Secs, true);
        }
        out
    }
}

/// RFC 3339 in UTC, for JSON and hooks; `None` if out of chrono's range.
pub fn rfc3339(ts: Timestamp) -> Option<String> {
    DateTime::<Utc>::from_timestamp(ts.secs, ts.nanos)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The message time: its `id.time`, else the time in its id.
pub fn message_time(d: &Delivery) -> Timestamp {
    d.fragments()
        .and_then(|f| f.time(names::ID_TIME))
        .unwrap_or_else(|| {
            let ms = d.message.id.timestamp_ms();
            Timestamp {
                secs: (ms / 1000) as i64,
                nanos: (ms % 1000) as u32 * 1_000_000,
            }
        })
}

/// How to display.
#[derive(Debug, Clone)]
pub struct Style {
    pub width: usize,
    pub color: bool,
    pub time: TimeFormat,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            width: 80,
            color: false,
            time: TimeFormat::default(),
        }
    }
}

const BOLD: &str = "\x1b[1m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

/// Makes text safe for a terminal: control characters become `^X` (so a message
/// cannot move the cursor or change colours) and tabs expand to 8-column stops.
pub fn sanitize(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut col = 0;
    for c in line.chars() {
        match c {
            '\t' => {
                let n = 8 - col % 8;
                out.extend(std::iter::repeat_n(' ', n));
                col += n;
            }
            c if (c as u32) < 0x20 || c == '\x7f' => {
                out.push('^');
                out.push(((c as u8) ^ 0x40) as char);
                col += 2;
            }
            c if c.is_control() => {
                out.push('?');
                col += 1;
            }
            c => {
                out.push(c);
                col += display_width(c.encode_utf8(&mut [0; 4]));
            }
        }
    }
    out
}

/// Wraps one body line to `width`, repeating its quote prefix (leading spaces,
/// `>` and `|`) on every continuation line, as Gale's "Wacky Quoting Proposal" did.
pub fn wrap_line(line: &str, width: usize, out: &mut Vec<String>) {
    if display_width(line) <= width {
        out.push(line.to_string());
        return;
    }
    let split = line
        .find(|c: char| !matches!(c, ' ' | '>' | '|'))
        .unwrap_or(line.len());
    let (prefix, rest) = line.split_at(split);
    let avail = width.saturating_sub(display_width(prefix)).max(10);
    let opts = textwrap::Options::new(avail).break_words(false);
    for piece in textwrap::wrap(rest, opts) {
        out.push(format!("{prefix}{piece}"));
    }
}

/// Body text lines (CRLF or LF), trailing blank lines dropped, wrapped.
pub fn wrap_body(body: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in body.trim_end_matches(['\n', '\r']).split('\n') {
        wrap_line(&sanitize(line.trim_end_matches('\r')), width, &mut out);
    }
    out
}

/// Who the footer says sent it: the verified signer; `*unverified* name` for a
/// signer that cannot be traced to a trust anchor; never a forger's claim.
fn sender_label(d: &Delivery) -> String {
    match &d.verify {
        Verify::Anonymous => "*anonymous*".into(),
        Verify::Verified { from } => sanitize(from.as_str()),
        Verify::Unverified { from: Some(n), .. } => {
            format!("*unverified* {}", sanitize(n.as_str()))
        }
        Verify::Unverified { from: None, .. } => "*unverified*".into(),
        Verify::Forged { .. } => "*forged*".into(),
    }
}

/// The loud line shown above a forged message's body.
pub fn forged_line(d: &Delivery) -> Option<String> {
    match &d.verify {
        Verify::Forged {
            claimed: Some(n), ..
        } => Some(format!(
            "*** FORGED: bad signature claiming to be from {} ***",
            sanitize(n.as_str())
        )),
        Verify::Forged { claimed: None, why } => Some(format!("*** FORGED: {} ***", sanitize(why))),
        _ => None,
    }
}

/// The loud line shown above the first message signed by a new key for a name
/// that had another.
fn key_changed_line(d: &Delivery) -> Option<String> {
    let c = d.key_changed.as_ref()?;
    let old: Vec<String> = c.old.iter().map(|i| i.to_string()).collect();
    Some(format!(
        "*** KEY CHANGED: {} now signs with key {} (it was {}); check it with them: gkey show {} ***",
        sanitize(c.name.as_str()),
        c.new,
        old.join(", "),
        sanitize(c.name.as_str())
    ))
}

/// Who a presence notice is about, by its location (`_gale.notice.egnor@ofb.net`
/// is about `egnor@ofb.net`).
fn notice_subjects(d: &Delivery) -> Vec<String> {
    d.message
        .to
        .iter()
        .map(|l| match l.local().strip_prefix("_gale.notice.") {
            Some(user) => format!("{user}@{}", l.domain()),
            None => l.as_str().to_string(),
        })
        .collect()
}

/// A mark for a presence notice not signed by the person it announces: anyone
/// can publish a notice, so only a signature tells who did.
fn presence_mark(d: &Delivery, subjects: &[String]) -> Option<String> {
    let by_subject = |n: &gale_keys::KeyName| subjects.iter().any(|s| s == n.as_str());
    match &d.verify {
        Verify::Verified { from } if by_subject(from) => None,
        Verify::Verified { from } => Some(format!("[announced by {}]", sanitize(from.as_str()))),
        Verify::Unverified { from: Some(n), .. } if by_subject(n) => Some("[*unverified*]".into()),
        Verify::Unverified { from: Some(n), .. } => {
            Some(format!("[*unverified* {}]", sanitize(n.as_str())))
        }
        Verify::Unverified { from: None, .. } => Some("[*unverified*]".into()),
        Verify::Anonymous => Some("[*unsigned*]".into()),
        Verify::Forged { .. } => Some("[*FORGED*]".into()),
    }
}

/// One line for an encrypted message that cannot be shown, or `None`.
fn unreadable_line(d: &Delivery, style: &Style) -> Option<String> {
    let locs: Vec<&str> = d.message.to.iter().map(|l| l.as_str()).collect();
    let locs = sanitize(&locs.join(" "));
    Some(match d.unreadable.as_ref()? {
        Unreadable::NotForYou => format!("* encrypted message to {locs} (not for you)"),
        Unreadable::Tampered => style.paint(
            BOLD,
            &format!("*** TAMPERED: an encrypted message to {locs} was altered in transit; it cannot be shown ***"),
        ),
        Unreadable::Malformed(e) => {
            format!("* unreadable message to {locs}: {}", sanitize(e))
        }
    })
}

/// The `To:` header: locations, `/keywords`, `re "subject"`.
pub fn header(d: &Delivery, style: &Style) -> String {
    let locs: Vec<&str> = d.message.to.iter().map(|l| l.as_str()).collect();
    let mut h = format!("To: {}", style.paint(CYAN, &sanitize(&locs.join(" "))));
    if let Some(f) = d.fragments() {
        for kw in f.texts(names::MESSAGE_KEYWORD) {
            h.push_str(&format!(" /{}", sanitize(kw)));
        }
        if let Some(s) = f.text(names::MESSAGE_SUBJECT) {
            h.push_str(&format!(" re \"{}\"", sanitize(s)));
        }
    }
    if d.encrypted {
        h.push_str(" (private)");
    }
    h
}

/// The colour of the sender in the footer: green only for a verified signer (and
/// for an anonymous message, which claims nobody), yellow for one that cannot be
/// traced to an anchor, red for a forgery.
fn sender_colour(v: &Verify) -> &'static str {
    match v {
        Verify::Verified { .. } | Verify::Anonymous => GREEN,
        Verify::Unverified { .. } => YELLOW,
        Verify::Forged { .. } => RED,
    }
}

/// The right-aligned `-- sender (name) time --` footer.
pub fn footer(d: &Delivery, style: &Style) -> String {
    let mut who = sender_label(d);
    if let Some(name) = d.fragments().and_then(|f| f.text(names::MESSAGE_SENDER)) {
        who.push_str(&format!(" ({})", sanitize(name)));
    }
    let time = style.time.render(message_time(d));
    let plain = format!("-- {who} {time} --");
    let pad = style.width.saturating_sub(display_width(&plain));
    format!(
        "{}-- {} {time} --",
        " ".repeat(pad),
        style.paint(sender_colour(&d.verify), &who)
    )
}

/// A presence notice on one line: `* <time> <presence> <who> (name)`.
fn presence_line(d: &Delivery, f: &Fragments, presence: &str, style: &Style) -> String {
    let who = notice_subjects(d);
    let mut line = format!(
        "* {} {} {}",
        style.time.render(message_time(d)),
        sanitize(presence),
        sanitize(&who.join(" "))
    );
    line.push_str(&status_suffix(f));
    if let Some(mark) = presence_mark(d, &who) {
        line.push(' ');
        line.push_str(&style.paint(BOLD, &mark));
    }
    line
}

/// Whom a presence notice, receipt or ping is about: the person announced,
/// the one who received, or the one who pinged. `None` for other messages.
pub fn about(d: &Delivery) -> Option<String> {
    let f = d.fragments();
    match kind(&d.message.to, f) {
        "presence" => Some(notice_subjects(d).join(" ")),
        "receipt" => f?.text(names::ANSWER_RECEIPT).map(str::to_string),
        "ping" => d
            .verify
            .from()
            .or(d.verify.claimed_from())
            .map(|n| n.to_string()),
        _ => None,
    }
}

/// `(device)`, `idle 5m` and the sender's name, for a one-line display.
fn status_suffix(f: &Fragments) -> String {
    let mut out = String::new();
    if let Some(dev) = f.text(names::NOTICE_DEVICE) {
        out.push_str(&format!(" ({})", sanitize(dev)));
    }
    let idle = Status::from_fragments(f).and_then(|s| s.idle_secs(Timestamp::now()));
    if let Some(secs) = idle.filter(|&s| s >= 60) {
        out.push_str(&format!(" idle {}", idle_text(secs)));
    }
    if let Some(name) = f.text(names::MESSAGE_SENDER) {
        out.push_str(&format!(" \"{}\"", sanitize(name)));
    }
    out
}

/// A receipt, a ping's answer, or a ping, on one line, as Gale showed them:
/// `* 12:01 received: in.present bob@example.org (laptop)`.
fn people_line(d: &Delivery, f: &Fragments, kind: &str, style: &Style) -> String {
    let who = about(d).unwrap_or_default();
    let time = style.time.render(message_time(d));
    let mut line = match kind {
        "ping" => format!("* {time} ping from {}", sanitize(&who)),
        _ => format!(
            "* {time} received: {} {}",
            sanitize(f.text(names::NOTICE_PRESENCE).unwrap_or("?")),
            sanitize(&who)
        ),
    };
    line.push_str(&status_suffix(f));
    let signer_is = |n: &gale_keys::KeyName| n.as_str() == who;
    let mark = match &d.verify {
        Verify::Verified { from } if signer_is(from) => None,
        Verify::Unverified { from: Some(n), .. } if signer_is(n) => Some("[*unverified*]".into()),
        Verify::Forged { .. } => Some("[*FORGED*]".to_string()),
        Verify::Anonymous => Some("[*unsigned*]".to_string()),
        v => Some(format!(
            "[*FORGED*: signed by {}]",
            v.from().map(|n| sanitize(n.as_str())).unwrap_or_default()
        )),
    };
    if let Some(mark) = mark {
        line.push(' ');
        line.push_str(&style.paint(BOLD, &mark));
    }
    line
}

/// The whole display of one message, ending with a newline.
pub fn format_delivery(d: &Delivery, style: &Style) -> String {
    if let Some(f) = d.fragments() {
        if let k @ ("receipt" | "ping") = kind(&d.message.to, Some(f)) {
            return people_line(d, f, k, style) + "\n";
        }
        if let Some(p) = f.text(names::NOTICE_PRESENCE) {
            return presence_line(d, f, p, style) + "\n";
        }
    }
    if let Some(line) = unreadable_line(d, style) {
        return line + "\n";
    }
    let mut out = String::new();
    out.push_str(&style.paint(BOLD, &"-".repeat(style.width.max(1))));
    out.push('\n');
    out.push_str(&header(d, style));
    out.push('\n');
    for line in forged_line(d).into_iter().chain(key_changed_line(d)) {
        out.push_str(&style.paint(BOLD, &line));
        out.push('\n');
    }
    match &d.payload {
        Payload::Plain(f) => {
            if let Some(body) = f.text(names::MESSAGE_BODY) {
                for line in wrap_body(body, style.width) {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        Payload::Sealed { kind, .. } => {
            out.push_str(&format!(
                "[signed or encrypted message (payload kind {kind}); this gsub cannot open it yet]\n"
            ));
        }
    }
    out.push_str(&footer(d, style));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use gale_proto::{Location, Message, MessageId, Value};

    fn delivery(frags: Fragments) -> Delivery {
        let m = Message {
            id: MessageId([0; 16]),
            hops: 0,
            to: vec![Location::parse("pub.tv@ofb.net").unwrap()],
            payload: Payload::Plain(frags).encode().unwrap(),
        };
        Delivery::open(m).unwrap()
    }

    fn style(width: usize) -> Style {
        Style {
            width,
            color: false,
            time: TimeFormat::new(DEFAULT_TIME_FORMAT, true).unwrap(),
        }
    }

    #[test]
    fn wraps_and_keeps_quotes() {
        let body = "> quoted text that is long enough to wrap around\nshort\n\n\tx\n";
        assert_eq!(
            wrap_body(body, 20),
            [
                "> quoted text that",
                "> is long enough to",
                "> wrap around",
                "short",
                "",
                "        x"
            ]
        );
        // Words longer than the width are not cut (URLs stay whole).
        assert_eq!(
            wrap_body("aaaaaaaaaaaaaaaaaaaaaaaa b", 10),
            ["aaaaaaaaaaaaaaaaaaaaaaaa", "b"]
        );
    }

    #[test]
    fn control_characters_are_defused() {
        assert_eq!(sanitize("a\x1b[31mb\x07"), "a^[[31mb^G");
        assert_eq!(sanitize("\u{9b}x"), "?x");
    }

    #[test]
    fn whole_message() {
        let mut f = Fragments::new();
        f.push_text("message.body", "hello there\r\n");
        f.push_text("message.sender", "Dan Egnor");
        f.push_text("message.keyword", "tv");
        f.push_text("message.subject", "buffy");
        f.push(
            "id.time",
            Value::Time(Timestamp {
                secs: 1_795_253_200,
                nanos: 0,
            }),
        );
        let text = format_delivery(&delivery(f), &style(60));
        let want = format!(
            "{}\nTo: pub.tv@ofb.net /tv re \"buffy\"\nhello there\n{}-- *anonymous* (Dan Egnor) 2026-11-21 09:26:40 --\n",
            "-".repeat(60),
            " ".repeat(60 - 49)
        );
        assert_eq!(text, want);
    }

    #[test]
    fn footer_falls_back_to_id_time_and_colour_is_optional() {
        let d = delivery(Fragments::new());
        let mut s = style(10);
        let foot = footer(&d, &s);
        assert_eq!(foot, "-- *anonymous* 1970-01-01 00:00:00 --");
        s.color = true;
        assert!(footer(&d, &s).contains("\x1b[32m*anonymous*\x1b[0m"));
    }

    #[test]
    fn verified_and_unverified_footers_differ_in_colour() {
        let name = gale_keys::KeyName::parse("egnor@ofb.net").unwrap();
        let mut s = style(60);
        s.color = true;
        let colour = |v: Verify| {
            let mut d = delivery(Fragments::new());
            d.verify = v;
            let f = footer(&d, &s);
            let start = f.find('\x1b').expect("coloured");
            f[start..].split('m').next().unwrap().to_string()
        };
        let verified = colour(Verify::Verified { from: name.clone() });
        let unverified = colour(Verify::Unverified {
            from: Some(name),
            why: String::new(),
        });
        assert_ne!(verified, unverified);
        let forged = colour(Verify::Forged {
            claimed: None,
            why: String::new(),
        });
        assert_ne!(forged, verified);
    }

    #[test]
    fn receipts_and_pings_on_one_line() {
        let bob = gale_keys::KeyName::parse("bob@ofb.net").unwrap();
        let mut f = Fragments::new();
        f.push_text("notice.presence", "out.to.lunch");
        f.push_text("notice.device", "laptop");
        f.push_text("answer.receipt", "bob@ofb.net");
        f.push("id.time", Value::Time(Timestamp { secs: 0, nanos: 0 }));
        let mut d = delivery(f);
        d.verify = Verify::Verified { from: bob.clone() };
        assert_eq!(
            format_delivery(&d, &style(40)),
            "* 1970-01-01 00:00:00 received: out.to.lunch bob@ofb.net (laptop)\n"
        );
        // Signed by someone else than the person it names: a forgery.
        d.verify = Verify::Verified {
            from: gale_keys::KeyName::parse("mallory@ofb.net").unwrap(),
        };
        assert!(format_delivery(&d, &style(40)).contains("[*FORGED*: signed by mallory@ofb.net]"));

        let mut f = Fragments::new();
        f.push_text("question.receipt", "bob.receipt.1@ofb.net");
        f.push("id.time", Value::Time(Timestamp { secs: 0, nanos: 0 }));
        let mut d = delivery(f);
        d.message.to = vec![Location::parse("_gale.query.egnor@ofb.net").unwrap()];
        d.verify = Verify::Verified { from: bob };
        assert_eq!(
            format_delivery(&d, &style(40)),
            "* 1970-01-01 00:00:00 ping from bob@ofb.net\n"
        );
    }

    #[test]
    fn presence_and_sealed() {
        let mut f = Fragments::new();
        f.push_text("notice.presence", "in.present");
        f.push("id.time", Value::Time(Timestamp { secs: 0, nanos: 0 }));
        let mut d = delivery(f);
        d.message.to = vec![Location::parse("_gale.notice.egnor@ofb.net").unwrap()];
        // Unsigned: anyone could have sent it.
        assert_eq!(
            format_delivery(&d, &style(40)),
            "* 1970-01-01 00:00:00 in.present egnor@ofb.net [*unsigned*]\n"
        );
        let egnor = gale_keys::KeyName::parse("egnor@ofb.net").unwrap();
        let mut signed = d.clone();
        signed.verify = Verify::Verified {
            from: egnor.clone(),
        };
        assert_eq!(
            format_delivery(&signed, &style(40)),
            "* 1970-01-01 00:00:00 in.present egnor@ofb.net\n"
        );
        signed.verify = Verify::Verified {
            from: gale_keys::KeyName::parse("mallory@ofb.net").unwrap(),
        };
        assert!(format_delivery(&signed, &style(40)).contains("[announced by mallory@ofb.net]"));
        let sealed = Message {
            payload: Bytes::from_static(&[2, 1, 2]),
            ..d.message.clone()
        };
        let d = Delivery::open(sealed).unwrap();
        assert_eq!(d.verify.as_str(), "unverified");
        let text = format_delivery(&d, &style(40));
        assert!(text.contains("cannot open it yet"));
        assert!(text.contains("*unverified*"));
    }

    #[test]
    fn a_key_change_is_loud() {
        let mut f = Fragments::new();
        f.push_text("message.body", "hi");
        let mut d = delivery(f);
        let name = gale_keys::KeyName::parse("alice@ofb.net").unwrap();
        d.verify = Verify::Verified { from: name.clone() };
        d.key_changed = Some(Box::new(gale_keys::KeyChanged {
            name,
            old: vec![gale_keys::KeyId([1; 8])],
            new: gale_keys::KeyId([2; 8]),
        }));
        let text = format_delivery(&d, &style(40));
        assert!(
            text.contains("*** KEY CHANGED: alice@ofb.net now signs with key 0202020202020202 (it was 0101010101010101)"),
            "{text}"
        );
    }

    #[test]
    fn time_formats() {
        assert!(TimeFormat::new("%Y %Q", true).is_err());
        let t = TimeFormat::new("%H:%M", true).unwrap();
        assert_eq!(
            t.render(Timestamp {
                secs: 3600 + 120,
                nanos: 0
            }),
            "01:02"
        );
        assert_eq!(
            rfc3339(Timestamp {
                secs: 0,
                nanos: 5_000_000
            })
            .unwrap(),
            "1970-01-01T00:00:00.005Z"
        );
    }
}
