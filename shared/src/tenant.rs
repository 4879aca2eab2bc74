//! The tenant id: the one key every stored item and every operation is scoped by.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest tenant id we accept; ids are UUIDs in TeleAgent, the bound keeps keys small.
const MAX_LEN: usize = 128;

/// A validated tenant id. Only the JWT layer (from a verified claim) and the event layer (from a
/// validated event) build one, so no store call can be made with an arbitrary string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantIdError {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("tenant id may hold only letters, digits, '-', '_' and '.'")]
    BadCharacter,
}

impl TenantId {
    /// Parses a tenant id. `#`, `:` and other separators are refused because the id is embedded
    /// in DynamoDB keys (`TENANT#<id>`) and FIFO group ids (`<tenant>:<customer>`).
    pub fn parse(raw: &str) -> Result<Self, TenantIdError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(TenantIdError::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(TenantIdError::TooLong);
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(TenantIdError::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The partition key of every item of this tenant.
    pub fn partition_key(&self) -> String {
        format!("TENANT#{}", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        TenantId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_refuses_key_separators() {
        assert!(TenantId::parse("6f1c2e9a-3b7d-4c1e-9a2b-1d2e3f4a5b6c").is_ok());
        for (raw, why) in [
            ("", "empty"),
            ("   ", "blank"),
            ("a#b", "hash would forge a sort key"),
            ("a:b", "colon would forge a FIFO group"),
            ("a/b", "slash"),
            ("ä", "non-ascii"),
        ] {
            assert!(TenantId::parse(raw).is_err(), "{why}: {raw:?} accepted");
        }
        assert_eq!(
            TenantId::parse(&"x".repeat(129)),
            Err(TenantIdError::TooLong)
        );
        assert_eq!(
            TenantId::parse("t-1").unwrap().partition_key(),
            "TENANT#t-1"
        );
    }
}
