//! Building outgoing messages from what gsend was told.

use gale_proto::fragment::names;
use gale_proto::limits::MAX_SHORT_TEXT;
use gale_proto::{EncodeError, Fragments, Location, Message, Payload, Timestamp, Value};
use thiserror::Error;

/// Environment variable with the sender's display name (`message.sender`).
pub const NAME_ENV: &str = "GALE_NAME";

/// What goes into a message besides its locations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compose {
    pub body: Option<String>,
    /// Display name (`message.sender`); unauthenticated text.
    pub sender: Option<String>,
    pub keywords: Vec<String>,
    /// Extra text fragments, `(name, value)`, in order.
    pub extra: Vec<(String, String)>,
    /// Agent (`id.class`), e.g. `gsend/0.1.0`.
    pub class: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ComposeError {
    #[error("bad fragment {0:?}: write NAME=VALUE")]
    NoEquals(String),
    #[error("bad fragment name {0:?}: use letters, digits, '.', '_' and '-'")]
    BadName(String),
    #[error("bad keyword {0:?}: write /word, without spaces")]
    BadKeyword(String),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SHORT_TEXT
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-/".contains(c))
}

/// Parses gsend's `-t NAME=VALUE`.
pub fn parse_text_fragment(arg: &str) -> Result<(String, String), ComposeError> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| ComposeError::NoEquals(arg.to_string()))?;
    if !valid_name(name) {
        return Err(ComposeError::BadName(name.to_string()));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Parses a `/keyword` argument into the keyword.
pub fn parse_keyword(arg: &str) -> Result<String, ComposeError> {
    let kw = arg.strip_prefix('/').unwrap_or(arg);
    if kw.is_empty()
        || kw.len() > MAX_SHORT_TEXT
        || kw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ComposeError::BadKeyword(arg.to_string()));
    }
    Ok(kw.to_string())
}

/// `$GALE_NAME`, if set and not empty.
pub fn sender_from_env() -> Option<String> {
    std::env::var(NAME_ENV)
        .ok()
        .filter(|n| !n.trim().is_empty())
}

impl Compose {
    /// The fragments, stamped with `time` (`id.time`).
    pub fn fragments(&self, time: Timestamp) -> Fragments {
        let mut f = Fragments::new();
        if let Some(body) = &self.body {
            f.push_text(names::MESSAGE_BODY, body.as_str());
        }
        if let Some(sender) = &self.sender {
            f.push_text(names::MESSAGE_SENDER, sender.as_str());
        }
        f.push(names::ID_TIME, Value::Time(time));
        if let Some(class) = &self.class {
            f.push_text(names::ID_CLASS, class.as_str());
        }
        for k in &self.keywords {
            f.push_text(names::MESSAGE_KEYWORD, k.as_str());
        }
        for (name, value) in &self.extra {
            f.push_text(name.as_str(), value.as_str());
        }
        f
    }

    /// A new message (fresh id, time now) to `to`, with a plain payload; or why
    /// its fragments cannot be encoded.
    pub fn message(&self, to: Vec<Location>) -> Result<Message, EncodeError> {
        self.message_at(to, Timestamp::now())
    }

    pub fn message_at(&self, to: Vec<Location>, time: Timestamp) -> Result<Message, EncodeError> {
        Ok(Message::new(
            to,
            Payload::Plain(self.fragments(time)).encode()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_fragments_in_order() {
        let c = Compose {
            body: Some("hi\n".into()),
            sender: Some("Dan".into()),
            keywords: vec!["a".into(), "b".into()],
            extra: vec![("x.y".into(), "1".into())],
            class: Some("gsend/0.1.0".into()),
        };
        let t = Timestamp { secs: 5, nanos: 0 };
        let m = c
            .message_at(vec![Location::parse("a@x.org").unwrap()], t)
            .unwrap();
        assert_eq!(m.hops, 0);
        let Payload::Plain(f) = Payload::decode(&m.payload).unwrap() else {
            panic!("plain")
        };
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "message.body",
                "message.sender",
                "id.time",
                "id.class",
                "message.keyword",
                "message.keyword",
                "x.y"
            ]
        );
        assert_eq!(f.time("id.time"), Some(t));
        assert_eq!(f.texts("message.keyword").collect::<Vec<_>>(), ["a", "b"]);
        let anon = Compose::default().fragments(t);
        assert_eq!(anon.0.len(), 1, "only id.time");
    }

    #[test]
    fn parses_arguments() {
        assert_eq!(
            parse_text_fragment("message.subject=a=b").unwrap(),
            ("message.subject".into(), "a=b".into())
        );
        assert_eq!(parse_text_fragment("x=").unwrap(), ("x".into(), "".into()));
        assert!(matches!(
            parse_text_fragment("nope"),
            Err(ComposeError::NoEquals(_))
        ));
        assert!(matches!(
            parse_text_fragment("=v"),
            Err(ComposeError::BadName(_))
        ));
        assert!(matches!(
            parse_text_fragment("a b=v"),
            Err(ComposeError::BadName(_))
        ));
        assert_eq!(parse_keyword("/spoilers").unwrap(), "spoilers");
        assert!(parse_keyword("/").is_err());
        assert!(parse_keyword("/a b").is_err());
    }
}
