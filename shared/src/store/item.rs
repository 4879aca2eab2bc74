//! AttributeValue mapping helpers: the only place that knows how values sit in a DynamoDB item,
//! so the rest of the store reads typed fields and a missing or mistyped attribute is
//! [`StoreError::Corrupt`] rather than a panic or a silent default.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::error::StoreError;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Fixed-width UTC timestamps (nanoseconds, `Z`): used inside sort keys, where lexical order must
/// equal time order, and for stored times so they round-trip exactly.
const FIXED: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

pub(crate) fn fmt_time(t: OffsetDateTime) -> Result<String, StoreError> {
    t.to_offset(time::UtcOffset::UTC)
        .format(FIXED)
        .map_err(|e| StoreError::corrupt(format!("time {t} cannot be formatted: {e}")))
}

/// Epoch seconds for the TTL attribute `expires_at`.
pub(crate) fn epoch(t: OffsetDateTime) -> AttributeValue {
    AttributeValue::N(t.unix_timestamp().to_string())
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn b(v: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(v))
}

pub(crate) fn time_av(t: OffsetDateTime) -> Result<AttributeValue, StoreError> {
    fmt_time(t).map(AttributeValue::S)
}

pub(crate) fn json_av(v: &serde_json::Value) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

/// The key of one item of one tenant.
pub(crate) fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// Typed reads from one item; `what` names the item kind in corruption messages.
pub(crate) struct Reader<'a> {
    pub item: &'a Item,
    pub what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(item: &'a Item, what: &'static str) -> Self {
        Self { item, what }
    }

    fn bad(&self, attr: &str, why: &str) -> StoreError {
        StoreError::corrupt(format!("{} attribute {attr}: {why}", self.what))
    }

    pub fn opt_s(&self, attr: &str) -> Result<Option<&'a str>, StoreError> {
        match self.item.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.as_str())),
            Some(_) => Err(self.bad(attr, "not a string")),
        }
    }

    pub fn s(&self, attr: &str) -> Result<&'a str, StoreError> {
        self.opt_s(attr)?.ok_or_else(|| self.bad(attr, "missing"))
    }

    pub fn opt_n<T: std::str::FromStr>(&self, attr: &str) -> Result<Option<T>, StoreError> {
        match self.item.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse()
                .map(Some)
                .map_err(|_| self.bad(attr, "not a number of the expected kind")),
            Some(_) => Err(self.bad(attr, "not a number")),
        }
    }

    pub fn n<T: std::str::FromStr>(&self, attr: &str) -> Result<T, StoreError> {
        self.opt_n(attr)?.ok_or_else(|| self.bad(attr, "missing"))
    }

    pub fn opt_b(&self, attr: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.item.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::B(v)) => Ok(Some(v.as_ref().to_vec())),
            Some(_) => Err(self.bad(attr, "not binary")),
        }
    }

    pub fn opt_time(&self, attr: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        self.opt_s(attr)?
            .map(|v| {
                OffsetDateTime::parse(v, &Rfc3339)
                    .map_err(|_| self.bad(attr, "not an RFC3339 time"))
            })
            .transpose()
    }

    pub fn time(&self, attr: &str) -> Result<OffsetDateTime, StoreError> {
        self.opt_time(attr)?
            .ok_or_else(|| self.bad(attr, "missing"))
    }

    pub fn opt_json(&self, attr: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.opt_s(attr)?
            .map(|v| serde_json::from_str(v).map_err(|_| self.bad(attr, "not JSON")))
            .transpose()
    }

    pub fn json(&self, attr: &str) -> Result<serde_json::Value, StoreError> {
        self.opt_json(attr)?
            .ok_or_else(|| self.bad(attr, "missing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn fixed_time_is_sortable_and_round_trips() {
        let early = datetime!(2025-01-02 03:04:05.5 +05:00);
        let late = datetime!(2025-01-01 23:04:05.75 UTC);
        let (a, b) = (fmt_time(early).unwrap(), fmt_time(late).unwrap());
        assert_eq!(a, "2025-01-01T22:04:05.500000000Z");
        assert_eq!(a.len(), b.len(), "fixed width");
        assert!(a < b, "lexical order is time order across offsets");
        assert_eq!(OffsetDateTime::parse(&a, &Rfc3339).unwrap(), early);
    }

    #[test]
    fn reader_reports_missing_and_mistyped_attributes() {
        let item = HashMap::from([
            ("a".to_owned(), s("x")),
            ("n".to_owned(), n(7)),
            ("t".to_owned(), s("yesterday")),
        ]);
        let r = Reader::new(&item, "thing");
        assert_eq!(r.s("a").unwrap(), "x");
        assert_eq!(r.n::<u64>("n").unwrap(), 7);
        assert!(matches!(r.s("missing"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(r.s("n"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(r.n::<u64>("a"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(r.time("t"), Err(StoreError::Corrupt { .. })));
        assert_eq!(r.opt_s("missing").unwrap(), None);
    }
}
