//! Phone numbers as Telegram and chats hand them to us, and the spellings we search Bitrix24
//! with. Bitrix24's duplicate search compares numbers in a way its docs do not state,
//! so one number is searched under several spellings in one call.

use phonenumber::{Mode, PhoneNumber, country};

/// Bitrix24's `crm.duplicate.findbycomm` takes at most 20 values.
pub const MAX_SPELLINGS: usize = 20;

/// A customer's phone: parsed to E.164, or kept as the text we got (a phone that
/// does not parse is stored on the lead, never dropped, and not searched by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phone {
    Parsed {
        e164: String,
        region: Option<String>,
    },
    Unparsed {
        text: String,
    },
}

/// A number without '+' is first read as international (Telegram shares contacts
/// as `998901234567`), else in `default_region` when set. Spaces, dashes, dots and parentheses
/// are ignored; an extension (`#4048`, `ext 12`) is dropped because duplicate search ignores it.
pub fn parse_phone(raw: &str, default_region: Option<&str>) -> Phone {
    let text = raw.trim();
    let unparsed = || Phone::Unparsed {
        text: text.to_owned(),
    };
    let Some(compact) = compact(text) else {
        return unparsed();
    };
    let digits = compact.trim_start_matches('+');
    if digits.len() < 5 || digits.len() > 17 {
        return unparsed();
    }
    let found = if compact.starts_with('+') {
        valid(None, &compact)
    } else {
        valid(None, &format!("+{digits}")).or_else(|| {
            let region: country::Id = default_region?.trim().to_ascii_uppercase().parse().ok()?;
            valid(Some(region), digits)
        })
    };
    match found {
        Some(n) => Phone::Parsed {
            e164: n.format().mode(Mode::E164).to_string(),
            region: n.country().id().map(|id| id.as_ref().to_owned()),
        },
        None => unparsed(),
    }
}

/// Spellings of one number to search with, E.164 first, distinct, at most 20: E.164 with and
/// without '+', the national significant number, the national dialling form (with the trunk
/// prefix where the country has one, e.g. Russia's 8), and the international and national
/// formatted forms as a person would type them into the CRM.
pub fn search_spellings(e164: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !s.is_empty() && !out.contains(&s) && out.len() < MAX_SPELLINGS {
            out.push(s);
        }
    };
    let Some(n) = valid(None, e164).or_else(|| phonenumber::parse(None, e164).ok()) else {
        push(e164.trim().to_owned());
        push(only_digits(e164));
        return out;
    };
    let e164 = n.format().mode(Mode::E164).to_string();
    let international = n.format().mode(Mode::International).to_string();
    let national = n.format().mode(Mode::National).to_string();
    let nsn = n.national().to_string();
    push(e164.clone());
    push(e164.trim_start_matches('+').to_owned());
    push(nsn.clone());
    push(only_digits(&national));
    push(international.clone());
    push(national.clone());
    // "+7 916 123 45 67": the international form with spaces only.
    push(international.replace('-', " "));
    push(format!("+{} {}", n.code().value(), nsn));
    out
}

/// Whether a phone value stored on a lead is one of these spellings, digits compared (so
/// `+998 (90) 123-45-67` is `998901234567`). A search may return leads that only look alike,
/// or, on a server that ignores its filter, any lead at all: a lead is adopted only when one of
/// its numbers really is the customer's.
pub fn is_spelling_of(value: &str, spellings: &[String]) -> bool {
    let digits = only_digits(value);
    !digits.is_empty() && spellings.iter().any(|s| only_digits(s) == digits)
}

/// The text with separators removed, or None when something other than digits (and one leading
/// '+') remains. The extension is cut first.
fn compact(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let cut = ["#", "ext", "доб", ";ext="]
        .iter()
        .filter_map(|m| lower.find(m))
        .min()
        .unwrap_or(lower.len());
    let head = &lower[..cut];
    let mut out = String::with_capacity(head.len());
    for c in head.chars() {
        match c {
            '0'..='9' => out.push(c),
            // A '+' only before any digit (after an opening parenthesis or spaces at most).
            '+' if out.is_empty() => out.push('+'),
            ' ' | '-' | '.' | '(' | ')' | '\u{a0}' | '\t' => {}
            _ => return None,
        }
    }
    out.chars().any(|c| c.is_ascii_digit()).then_some(out)
}

fn valid(region: Option<country::Id>, s: &str) -> Option<PhoneNumber> {
    phonenumber::parse(region, s)
        .ok()
        .filter(PhoneNumber::is_valid)
}

fn only_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(e164: &str, region: &str) -> Phone {
        Phone::Parsed {
            e164: e164.into(),
            region: Some(region.into()),
        }
    }

    #[test]
    fn parses_the_ways_phones_arrive() {
        let rows: Vec<(&str, Option<&str>, Phone, &str)> = vec![
            (
                "998901234567",
                None,
                parsed("+998901234567", "UZ"),
                "Telegram contact, no plus",
            ),
            (
                "+998 90 123-45-67",
                None,
                parsed("+998901234567", "UZ"),
                "international with separators",
            ),
            (
                "+7 (916) 123-45-67",
                None,
                parsed("+79161234567", "RU"),
                "russian with parens",
            ),
            (
                "79161234567",
                None,
                parsed("+79161234567", "RU"),
                "russian without plus",
            ),
            (
                "8 916 123 45 67",
                Some("RU"),
                parsed("+79161234567", "RU"),
                "national with trunk 8 in region RU",
            ),
            (
                "90 123 45 67",
                Some("uz"),
                parsed("+998901234567", "UZ"),
                "national in region, lower-case code",
            ),
            (
                "030 123456",
                Some("DE"),
                parsed("+4930123456", "DE"),
                "german national with trunk 0",
            ),
            (
                "+7 916 123-45-67#4048",
                None,
                parsed("+79161234567", "RU"),
                "extension after #",
            ),
            (
                "+1 650-253-0000 ext. 12",
                None,
                parsed("+16502530000", "US"),
                "extension after ext",
            ),
            (
                "+998.90.123.45.67",
                None,
                parsed("+998901234567", "UZ"),
                "dots",
            ),
        ];
        for (raw, region, want, why) in rows {
            assert_eq!(parse_phone(raw, region), want, "{why}: {raw:?}");
        }
    }

    #[test]
    fn garbage_is_kept_as_text() {
        let rows: Vec<(&str, Option<&str>, &str)> = vec![
            ("call me maybe", None, "words"),
            ("", None, "empty"),
            ("12", None, "too short"),
            ("90 123 45 67", None, "national without a region"),
            ("+99 999 999", None, "no such country"),
            ("+7 916 12a 45 67", None, "letter inside"),
            ("1234567890123456789012", Some("RU"), "too long"),
            ("90 123 45 67", Some("Uzbekistan"), "bad region code"),
        ];
        for (raw, region, why) in rows {
            assert_eq!(
                parse_phone(raw, region),
                Phone::Unparsed {
                    text: raw.trim().to_owned()
                },
                "{why}: {raw:?}"
            );
        }
    }

    #[test]
    fn spellings_cover_the_forms_bitrix24_may_store() {
        let rows: Vec<(&str, Vec<&str>, &str)> = vec![
            (
                "+998901234567",
                vec![
                    "+998901234567",
                    "998901234567",
                    "901234567",
                    "+998 90 123 45 67",
                ],
                "UZ, no trunk prefix",
            ),
            (
                "+79161234567",
                vec![
                    "+79161234567",
                    "79161234567",
                    "9161234567",
                    "89161234567",
                    "+7 916 123-45-67",
                    "8 (916) 123-45-67",
                ],
                "RU, trunk 8",
            ),
            (
                "+4930123456",
                vec!["+4930123456", "4930123456", "30123456", "030123456"],
                "DE, trunk 0",
            ),
        ];
        for (e164, must, why) in rows {
            let s = search_spellings(e164);
            assert_eq!(s[0], e164, "{why}: E.164 first");
            assert!(s.len() <= MAX_SPELLINGS, "{why}: {s:?}");
            let mut dedup = s.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), s.len(), "{why}: duplicates in {s:?}");
            for m in must {
                assert!(s.iter().any(|x| x == m), "{why}: {m:?} missing from {s:?}");
            }
        }
    }

    #[test]
    fn spellings_of_an_unparsable_value_are_still_bounded() {
        let s = search_spellings("+0 12");
        assert!(!s.is_empty() && s.len() <= 2, "{s:?}");
    }
}
