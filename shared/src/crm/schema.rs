//! Reading a tool's JSON Schema `inputSchema`: its properties, their types, enums and which are
//! required. Servers write schemas by hand or derive them (FastMCP from Python signatures, zod
//! in TypeScript), so a type may be a string, a list of types (`["object", "null"]`) or an
//! `anyOf` of alternatives; all are read.

use serde_json::Value;

/// One property of an input schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Prop {
    pub name: String,
    /// The JSON types it accepts (`object`, `string`, ...); empty when the schema does not say.
    pub types: Vec<String>,
    /// Allowed values, when the schema lists them (`enum`, or `const` alternatives).
    pub enum_values: Vec<Value>,
    pub description: String,
    pub required: bool,
}

impl Prop {
    pub fn accepts(&self, ty: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == ty)
    }

    /// Accepts an object (a `fields`, `filter` or `params` argument).
    pub fn is_object(&self) -> bool {
        self.accepts("object")
    }

    /// Accepts a number (integer or number).
    pub fn is_numeric(&self) -> bool {
        self.types
            .iter()
            .any(|t| matches!(t.as_str(), "integer" | "number"))
            && !self.types.iter().any(|t| t == "string")
    }

    /// The normalised name: lower case, letters and digits only (`lead_id` -> `leadid`).
    pub fn key(&self) -> String {
        norm(&self.name)
    }
}

/// Normalises a property or field name for matching: `SOURCE_ID`, `sourceId`, `source-id`
/// all become `sourceid`.
pub fn norm(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn types_of(schema: &Value, out: &mut Vec<String>, enums: &mut Vec<Value>) {
    match schema.get("type") {
        Some(Value::String(t)) => out.push(t.clone()),
        Some(Value::Array(ts)) => {
            out.extend(ts.iter().filter_map(Value::as_str).map(str::to_owned))
        }
        _ => {}
    }
    if let Some(Value::Array(e)) = schema.get("enum") {
        enums.extend(e.iter().cloned());
    }
    if let Some(c) = schema.get("const") {
        enums.push(c.clone());
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(alts)) = schema.get(key) {
            for alt in alts {
                types_of(alt, out, enums);
            }
        }
    }
}

/// The properties of an input schema, in the schema's order. `null` alternatives are dropped
/// from the types (an optional argument is not a null argument).
pub fn props(schema: &Value) -> Vec<Prop> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(p) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    p.iter()
        .map(|(name, s)| {
            let mut types = Vec::new();
            let mut enum_values = Vec::new();
            types_of(s, &mut types, &mut enum_values);
            types.retain(|t| t != "null");
            types.dedup();
            Prop {
                name: name.clone(),
                types,
                enum_values,
                description: s
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                required: required.contains(&name.as_str()),
            }
        })
        .collect()
}

/// The first property whose normalised name is one of `names` (given normalised).
pub fn find<'a>(props: &'a [Prop], names: &[&str]) -> Option<&'a Prop> {
    names
        .iter()
        .find_map(|n| props.iter().find(|p| p.key() == *n))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_plain_union_and_any_of_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "title": {"type": "string", "description": "Lead title"},
                "fields": {"anyOf": [{"type": "object"}, {"type": "null"}], "default": null},
                "entityTypeId": {"type": ["integer", "null"]},
                "action": {"type": "string", "enum": ["add", "get"]},
            },
            "required": ["title", "action"],
        });
        let p = props(&schema);
        assert_eq!(p.len(), 4);
        let title = find(&p, &["title"]).unwrap();
        assert!(title.required && title.accepts("string") && !title.is_object());
        let fields = find(&p, &["fields"]).unwrap();
        assert!(fields.is_object() && !fields.required);
        assert!(find(&p, &["entitytypeid"]).unwrap().is_numeric());
        assert_eq!(
            find(&p, &["action"]).unwrap().enum_values,
            vec![json!("add"), json!("get")]
        );
        assert_eq!(norm("SOURCE_ID"), "sourceid");
        assert_eq!(norm("sourceId"), "sourceid");
    }
}
