//! The secret-token type: the only way a Bitrix24 MCP token exists in memory as plaintext.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const REDACTED: &str = "***";

/// A plaintext MCP connection token. Debug, Display and Serialize print `***`, so a token cannot
/// reach a log line, an error or a response by accident; the bytes are zeroed on drop.
/// [`SecretToken::expose`] is called only where the token is sent (the `Authorization` header)
/// or encrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(Zeroizing<String>);

impl SecretToken {
    pub fn new(token: String) -> Self {
        Self(Zeroizing::new(token))
    }

    /// The plaintext. Keep the borrow short and never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in characters, for validation messages that must not show the value.
    pub fn char_len(&self) -> usize {
        self.0.chars().count()
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretToken({REDACTED})")
    }
}

impl fmt::Display for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for SecretToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for SecretToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretToken::new)
    }
}

impl From<String> for SecretToken {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_token() {
        let raw = "b24-super-secret-token-value";
        let t = SecretToken::new(raw.to_owned());
        let printed = [
            format!("{t}"),
            format!("{t:?}"),
            format!("{t:#?}"),
            serde_json::to_string(&t).unwrap(),
            format!("{:?}", Some(&t)),
            format!("{:?}", vec![t.clone()]),
        ];
        for p in printed {
            assert!(!p.contains(raw), "token leaked in {p:?}");
            assert!(p.contains("***"), "redaction marker missing in {p:?}");
        }
        assert_eq!(t.expose(), raw);
        assert_eq!(t.char_len(), raw.len());
    }

    #[test]
    fn deserializes_the_plaintext_for_request_bodies() {
        #[derive(Deserialize, Debug)]
        struct Body {
            token: SecretToken,
        }
        let b: Body = serde_json::from_str(r#"{"token":"abcdefghijk"}"#).unwrap();
        assert_eq!(b.token.expose(), "abcdefghijk");
        assert!(!format!("{b:?}").contains("abcdefghijk"));
    }
}
