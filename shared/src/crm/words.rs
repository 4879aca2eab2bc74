//! What a tool's name or description says it does, read as words. Servers name tools every
//! way (`bitrix24_create_lead`, `createLead`, `crm_add`, `b24Tool1`) and describe them in
//! English or Russian, so names are split into lower-case tokens and matched on word stems.
//! Words only nominate a tool; the input schema decides whether it can really do the job
//! (see [`super::args`]).

/// Lower-case tokens of a tool name or text (`bitrix24_create_lead` -> `bitrix24, create, lead`;
/// `createLead` -> `create, lead`).
pub fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && prev_lower && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = c.is_lowercase();
            cur.extend(c.to_lowercase());
        } else {
            prev_lower = false;
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether any token is one of `stems` or starts with it.
pub fn has_any(tokens: &[String], stems: &[&str]) -> bool {
    tokens
        .iter()
        .any(|t| stems.iter().any(|s| t == s || t.starts_with(s)))
}

/// Whether any token is exactly one of `words`.
pub fn has_word(tokens: &[String], words: &[&str]) -> bool {
    tokens.iter().any(|t| words.contains(&t.as_str()))
}

pub const LEAD: &[&str] = &["lead", "лид"];
pub const CREATE: &[&str] = &["create", "add", "созда", "добав"];
pub const UPDATE: &[&str] = &["update", "edit", "modify", "change", "обнов", "измен"];
pub const GET: &[&str] = &["get", "read", "fetch", "show", "details", "получ"];
pub const LIST: &[&str] = &["list", "search", "find", "query", "спис", "поиск", "найти"];
pub const DELETE: &[&str] = &["delete", "remove", "удал"];
pub const COMMENT: &[&str] = &["comment", "timeline", "коммент"];
pub const DUPLICATE: &[&str] = &["duplicate", "findbycomm", "dupl", "дубл"];
pub const PHONE: &[&str] = &["phone", "телеф"];
pub const STATUS: &[&str] = &["status", "source", "stage", "статус", "источник"];
pub const FIELD: &[&str] = &["field", "fields", "поле", "поля"];
pub const USERFIELD: &[&str] = &["userfield", "userfields"];
/// Tools that read or sum up rather than act on one record: never bound to an operation, even
/// when their description mentions leads ("daily summary: new leads, deals won").
pub const REPORT: &[&str] = &[
    "report",
    "summary",
    "summar",
    "analytic",
    "statistic",
    "stats",
    "dashboard",
    "metric",
    "kpi",
    "funnel",
    "отчет",
    "отчёт",
    "сводк",
    "аналит",
    "статист",
    "воронк",
];
pub const OTHER_ENTITIES: &[&str] = &[
    "deal",
    "contact",
    "company",
    "task",
    "invoice",
    "quote",
    "product",
    "user",
    "calendar",
    "сделк",
    "контакт",
    "компан",
    "задач",
];

/// The verb a text names, in the order they are tested (a "find duplicates" tool is a search).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Update,
    Get,
    List,
    Delete,
}

/// The first verb among the tokens, by position (`get_lead_list` -> Get? no: `list` wins over a
/// leading `get` because "get list" reads as listing).
pub fn verb(t: &[String]) -> Option<Verb> {
    if has_any(t, LIST) {
        return Some(Verb::List);
    }
    if has_any(t, DELETE) {
        return Some(Verb::Delete);
    }
    if has_any(t, CREATE) {
        return Some(Verb::Create);
    }
    if has_any(t, UPDATE) {
        return Some(Verb::Update);
    }
    if has_any(t, GET) {
        return Some(Verb::Get);
    }
    None
}

/// The verb one value of an `action`/`operation` enum stands for (`add`, `crm.lead.add`,
/// `lead_get`). A value that names anything besides the lead and the verb (`contact_add`,
/// `userfield_add`, `productrows_set`) acts on something else and stands for nothing here.
pub fn action_verb(value: &str) -> Option<Verb> {
    let t = tokens(value);
    let (last, rest) = t.split_last()?;
    if !rest
        .iter()
        .all(|w| matches!(w.as_str(), "crm" | "lead" | "leads" | "item"))
    {
        return None;
    }
    let one = std::slice::from_ref(last);
    if has_word(one, &["add", "create", "new"]) {
        Some(Verb::Create)
    } else if has_word(one, &["update", "edit", "modify"]) {
        Some(Verb::Update)
    } else if has_word(one, &["get", "read", "fetch", "show"]) {
        Some(Verb::Get)
    } else if has_word(one, &["list", "search", "find", "query"]) {
        Some(Verb::List)
    } else if has_word(one, &["delete", "remove"]) {
        Some(Verb::Delete)
    } else {
        None
    }
}

/// Words in tool names that say nothing about what the tool does.
const VENDOR: &[&str] = &[
    "bitrix24", "bitrix", "b24", "bx24", "crm", "mcp", "tool", "tools", "api", "rest",
];

/// A name that says at most a verb (`b24Tool1`, `crm_create`, `run`): only then may the
/// description tell what the tool acts on.
pub fn is_opaque(name: &[String]) -> bool {
    name.iter().all(|w| {
        // `b24tool1` is `b24` + `tool` + `1`: vendor words glued together are still vendor words
        let mut rest = w.as_str();
        loop {
            rest = rest.trim_end_matches(|c: char| c.is_ascii_digit());
            match VENDOR.iter().find(|v| rest.starts_with(**v)) {
                Some(v) => rest = &rest[v.len()..],
                None => break,
            }
        }
        rest.is_empty() || verb(&[rest.to_owned()]).is_some()
    })
}

/// The first sentence of a description: what the tool does, before its notes on arguments.
pub fn first_sentence(text: &str) -> &str {
    let end = text
        .char_indices()
        .find(|(i, c)| {
            matches!(c, '.' | '\n' | '!' | '?')
                && text[i + c.len_utf8()..]
                    .chars()
                    .next()
                    .is_none_or(char::is_whitespace)
        })
        .map_or(text.len(), |(i, _)| i);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_tokens() {
        assert_eq!(
            tokens("bitrix24_create_lead"),
            ["bitrix24", "create", "lead"]
        );
        assert_eq!(tokens("createLead"), ["create", "lead"]);
        assert_eq!(tokens("Создать лид"), ["создать", "лид"]);
    }

    #[test]
    fn verbs_of_names_and_actions() {
        for (name, want) in [
            ("bitrix24_list_leads", Some(Verb::List)),
            ("bitrix24_find_duplicates", Some(Verb::List)),
            ("crm_add", Some(Verb::Create)),
            ("update_lead", Some(Verb::Update)),
            ("getLead", Some(Verb::Get)),
            ("Создать лид", Some(Verb::Create)),
            ("lead_summary", None),
        ] {
            assert_eq!(verb(&tokens(name)), want, "{name}");
        }
        for (value, want) in [
            ("add", Some(Verb::Create)),
            ("crm.lead.add", Some(Verb::Create)),
            ("get", Some(Verb::Get)),
            ("list", Some(Verb::List)),
            ("update", Some(Verb::Update)),
            ("delete", Some(Verb::Delete)),
            ("fields", None),
            ("contact_add", None),
            ("userfield_add", None),
            ("productrows_set", None),
            ("lead_get", Some(Verb::Get)),
        ] {
            assert_eq!(action_verb(value), want, "{value}");
        }
        for (name, opaque) in [
            ("b24Tool1", true),
            ("crm_create", true),
            ("bitrix24_check_crm_settings", false),
            ("get_daily_summary", false),
        ] {
            assert_eq!(is_opaque(&tokens(name)), opaque, "{name}");
        }
    }

    #[test]
    fn first_sentence_stops_at_the_first_full_stop() {
        assert_eq!(
            first_sentence("Create a lead (crm.lead.add). fields uses names"),
            "Create a lead (crm.lead.add)"
        );
        assert_eq!(first_sentence("Список лидов"), "Список лидов");
    }
}
