//! `infra/template.yaml` evaluated the way CloudFormation would for one set of parameters:
//! conditions, `Fn::If` (with `AWS::NoValue` dropped), and, for the IAM tests, `Ref`,
//! `Fn::GetAtt`, `Fn::Sub` and `Fn::Join` resolved to the names and ARNs of test resources.
//! The template uses long-form intrinsics only, so it is plain YAML.

use std::collections::{BTreeMap, HashMap};

use serde_yaml::{Mapping, Value};

use crate::harness::workspace_root;

/// The template as written.
pub fn load() -> Value {
    let path = workspace_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
    serde_yaml::from_str(&text).expect("infra/template.yaml is plain YAML (long-form intrinsics)")
}

/// Parameter values: the given ones over the template's defaults.
pub fn parameters(t: &Value, given: &[(&str, &str)]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Some(params) = t["Parameters"].as_mapping() {
        for (k, p) in params {
            let name = k.as_str().unwrap_or_default().to_owned();
            let mut v = p["Default"].clone();
            if let Some((_, g)) = given.iter().find(|(n, _)| *n == name) {
                v = Value::String((*g).to_owned());
            }
            if p["Type"].as_str() == Some("CommaDelimitedList") {
                let list = match &v {
                    Value::String(s) if s.is_empty() => Vec::new(),
                    Value::String(s) => s
                        .split(',')
                        .map(|x| Value::String(x.trim().to_owned()))
                        .collect(),
                    Value::Sequence(s) => s.clone(),
                    _ => Vec::new(),
                };
                v = Value::Sequence(list);
            } else if let Value::Number(n) = &v {
                v = Value::String(n.to_string());
            }
            out.insert(name, v);
        }
    }
    out
}

/// Every condition of the template, evaluated.
pub fn conditions(t: &Value, params: &BTreeMap<String, Value>) -> BTreeMap<String, bool> {
    let defs = t["Conditions"].as_mapping().cloned().unwrap_or_default();
    let mut out = BTreeMap::new();
    for k in defs.keys() {
        let name = k.as_str().unwrap_or_default().to_owned();
        let v = eval_condition(&defs[k], &defs, params);
        out.insert(name, v);
    }
    out
}

fn eval_condition(c: &Value, defs: &Mapping, params: &BTreeMap<String, Value>) -> bool {
    let operand = |v: &Value| -> Value {
        match v.get("Ref").and_then(Value::as_str) {
            Some(r) => params.get(r).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    if let Some(args) = c.get("Fn::Equals").and_then(Value::as_sequence) {
        return operand(&args[0]) == operand(&args[1]);
    }
    if let Some(args) = c.get("Fn::Not").and_then(Value::as_sequence) {
        return !eval_condition(&args[0], defs, params);
    }
    if let Some(args) = c.get("Fn::And").and_then(Value::as_sequence) {
        return args.iter().all(|a| eval_condition(a, defs, params));
    }
    if let Some(args) = c.get("Fn::Or").and_then(Value::as_sequence) {
        return args.iter().any(|a| eval_condition(a, defs, params));
    }
    if let Some(name) = c.get("Condition").and_then(Value::as_str) {
        return eval_condition(&defs[name], defs, params);
    }
    panic!("unsupported condition {c:?}")
}

fn is_no_value(v: &Value) -> bool {
    v.get("Ref").and_then(Value::as_str) == Some("AWS::NoValue")
}

/// `v` with every `Fn::If` replaced by its chosen branch and `AWS::NoValue` removed from maps
/// and lists; `None` when `v` itself is `AWS::NoValue`. Resources whose `Condition` is false
/// are dropped too, as CloudFormation does.
pub fn select(v: &Value, conds: &BTreeMap<String, bool>) -> Option<Value> {
    if is_no_value(v) {
        return None;
    }
    match v {
        Value::Mapping(m) => {
            if m.len() == 1
                && let Some(args) = m.get("Fn::If").and_then(Value::as_sequence)
            {
                let name = args[0].as_str().expect("Fn::If names a condition");
                let on = *conds
                    .get(name)
                    .unwrap_or_else(|| panic!("unknown condition {name}"));
                return select(&args[if on { 1 } else { 2 }], conds);
            }
            let mut out = Mapping::new();
            for (k, x) in m {
                if let Some(c) = x.get("Condition").and_then(Value::as_str)
                    && x.get("Type").is_some()
                    && !conds.get(c).copied().unwrap_or(true)
                {
                    continue;
                }
                if let Some(x) = select(x, conds) {
                    out.insert(k.clone(), x);
                }
            }
            Some(Value::Mapping(out))
        }
        Value::Sequence(s) => Some(Value::Sequence(
            s.iter().filter_map(|x| select(x, conds)).collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The template for one set of parameters, conditions applied.
pub fn template_for(given: &[(&str, &str)]) -> Value {
    let t = load();
    let params = parameters(&t, given);
    let conds = conditions(&t, &params);
    select(&t, &conds).expect("the template is not AWS::NoValue")
}

/// What `Ref` and `Fn::GetAtt .Arn` of a resource give in a test stack.
#[derive(Clone, Debug)]
pub struct Physical {
    pub reference: String,
    pub arn: String,
}

/// Resolves intrinsics to strings for one test stack.
pub struct Resolver {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub stack_name: String,
    pub params: BTreeMap<String, Value>,
    pub resources: HashMap<String, Physical>,
}

impl Resolver {
    fn pseudo(&self, name: &str) -> Option<String> {
        Some(match name {
            "AWS::Partition" => self.partition.clone(),
            "AWS::Region" => self.region.clone(),
            "AWS::AccountId" => self.account.clone(),
            "AWS::StackName" => self.stack_name.clone(),
            "AWS::URLSuffix" => "amazonaws.com".to_owned(),
            _ => return None,
        })
    }

    fn reference(&self, name: &str) -> Value {
        if let Some(p) = self.pseudo(name) {
            return Value::String(p);
        }
        if let Some(p) = self.params.get(name) {
            return p.clone();
        }
        let r = self
            .resources
            .get(name)
            .unwrap_or_else(|| panic!("Ref {name}: no such parameter or test resource"));
        Value::String(r.reference.clone())
    }

    fn get_att(&self, id: &str, attr: &str) -> Value {
        let r = self
            .resources
            .get(id)
            .unwrap_or_else(|| panic!("GetAtt {id}: no such test resource"));
        assert_eq!(attr, "Arn", "GetAtt {id}.{attr}: only Arn is resolved");
        Value::String(r.arn.clone())
    }

    fn sub(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let end = rest[i..].find('}').expect("closing } in Fn::Sub") + i;
            let name = &rest[i + 2..end];
            let v = match name.split_once('.') {
                Some((id, attr)) => self.get_att(id, attr),
                None => self.reference(name),
            };
            out.push_str(v.as_str().expect("a string in Fn::Sub"));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Every intrinsic in `v` (already [`select`]ed) replaced by its value.
    pub fn resolve(&self, v: &Value) -> Value {
        match v {
            Value::Mapping(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                match k.as_str() {
                    Some("Ref") => self.reference(arg.as_str().expect("Ref names a string")),
                    Some("Fn::GetAtt") => {
                        let (id, attr) = match arg {
                            Value::Sequence(s) => (
                                s[0].as_str().unwrap_or_default().to_owned(),
                                s[1].as_str().unwrap_or_default().to_owned(),
                            ),
                            Value::String(s) => {
                                let (a, b) = s.split_once('.').expect("Id.Attr");
                                (a.to_owned(), b.to_owned())
                            }
                            _ => panic!("GetAtt {arg:?}"),
                        };
                        self.get_att(&id, &attr)
                    }
                    Some("Fn::Sub") => {
                        Value::String(self.sub(arg.as_str().expect("short Fn::Sub")))
                    }
                    Some("Fn::Join") => {
                        let args = arg.as_sequence().expect("Fn::Join [sep, list]");
                        let sep = args[0].as_str().unwrap_or_default();
                        let list = match self.resolve(&args[1]) {
                            Value::Sequence(s) => s,
                            other => vec![other],
                        };
                        Value::String(
                            list.iter()
                                .map(|x| x.as_str().unwrap_or_default().to_owned())
                                .collect::<Vec<_>>()
                                .join(sep),
                        )
                    }
                    _ => Value::Mapping(
                        m.iter()
                            .map(|(k, x)| (k.clone(), self.resolve(x)))
                            .collect(),
                    ),
                }
            }
            Value::Mapping(m) => Value::Mapping(
                m.iter()
                    .map(|(k, x)| (k.clone(), self.resolve(x)))
                    .collect(),
            ),
            Value::Sequence(s) => Value::Sequence(s.iter().map(|x| self.resolve(x)).collect()),
            other => other.clone(),
        }
    }
}
