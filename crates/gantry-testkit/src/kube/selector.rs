//! Label and field selectors: the `labelSelector` and `fieldSelector` query parameters, and the
//! `LabelSelector` objects of Deployments and ReplicaSets.

use serde_json::{Map, Value};

use super::meta::str_at;
use super::resource::Resource;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = labels.get(&self.key).and_then(Value::as_str);
        let in_values = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            Op::Equals | Op::In => value.is_some_and(in_values),
            Op::NotEquals | Op::NotIn => !value.is_some_and(in_values),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::GreaterThan | Op::LessThan => {
                let (Some(value), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    value > bound
                } else {
                    value < bound
                }
            }
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax: `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(
                parse_requirement(part)
                    .ok_or_else(|| format!("unable to parse requirement: {part:?}"))?,
            );
        }
        Ok(LabelSelector { requirements })
    }

    /// A `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`). `None` when it is
    /// malformed.
    pub fn from_object(selector: &Value) -> Option<LabelSelector> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                requirements.push(Requirement {
                    key: key.clone(),
                    op: Op::Equals,
                    values: vec![value.as_str()?.to_owned()],
                });
            }
        }
        if let Some(expressions) = selector.get("matchExpressions").and_then(Value::as_array) {
            for expression in expressions {
                let values = expression
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|values| {
                        values
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match str_at(expression, "/operator")? {
                    "In" => Op::In,
                    "NotIn" => Op::NotIn,
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    _ => return None,
                };
                requirements.push(Requirement {
                    key: str_at(expression, "/key")?.to_owned(),
                    op,
                    values,
                });
            }
        }
        Some(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn matches_object(&self, object: &Value) -> bool {
        self.is_empty() || self.matches(&super::meta::labels_of(object))
    }

    /// The selector in query syntax, as `kubectl` prints it (`app=web,tier in (a,b)`).
    pub fn to_query(&self) -> String {
        let mut parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r.op {
                Op::Equals => format!("{}={}", r.key, r.values.join(",")),
                Op::NotEquals => format!("{}!={}", r.key, r.values.join(",")),
                Op::In => format!("{} in ({})", r.key, r.values.join(",")),
                Op::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::GreaterThan => format!("{}>{}", r.key, r.values.join(",")),
                Op::LessThan => format!("{}<{}", r.key, r.values.join(",")),
            })
            .collect();
        parts.sort();
        parts.join(",")
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

fn parse_requirement(part: &str) -> Option<Requirement> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return (!key.is_empty() && key.chars().all(is_key_char)).then(|| Requirement {
            key: key.to_owned(),
            op: Op::DoesNotExist,
            values: Vec::new(),
        });
    }
    let end = part.find(|c: char| !is_key_char(c)).unwrap_or(part.len());
    let (key, rest) = part.split_at(end);
    if key.is_empty() {
        return None;
    }
    let key = key.to_owned();
    let rest = rest.trim_start();
    let simple = |op: Op, value: &str| {
        let value = value.trim();
        value.chars().all(is_key_char).then(|| Requirement {
            key: key.clone(),
            op,
            values: vec![value.to_owned()],
        })
    };
    if rest.is_empty() {
        return Some(Requirement {
            key,
            op: Op::Exists,
            values: Vec::new(),
        });
    }
    if let Some(value) = rest.strip_prefix("!=") {
        return simple(Op::NotEquals, value);
    }
    if let Some(value) = rest.strip_prefix("==") {
        return simple(Op::Equals, value);
    }
    if let Some(value) = rest.strip_prefix('=') {
        return simple(Op::Equals, value);
    }
    if let Some(value) = rest.strip_prefix('>') {
        return simple(Op::GreaterThan, value);
    }
    if let Some(value) = rest.strip_prefix('<') {
        return simple(Op::LessThan, value);
    }
    let (op, set) = if let Some(set) = rest.strip_prefix("notin") {
        (Op::NotIn, set)
    } else {
        (Op::In, rest.strip_prefix("in")?)
    };
    let set = set.trim();
    let inner = set.strip_prefix('(')?.strip_suffix(')')?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    if values.iter().any(|v| !v.chars().all(is_key_char)) {
        return None;
    }
    Some(Requirement { key, op, values })
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, joined by commas.
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(text: &str, resource: Resource) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in split_unescaped(text, ',') {
            if part.trim().is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if field_value(resource, &Value::Null, field).is_none() {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), equal, unescape(value)));
        }
        Ok(FieldSelector { terms })
    }

    pub fn matches(&self, resource: Resource, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let actual = field_value(resource, object, field).unwrap_or_default();
            (actual == *value) == *equal
        })
    }
}

fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            if let Some(last) = parts.last_mut() {
                last.push('\\');
                last.push(c);
            }
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(String::new());
        } else if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in value.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// The value of a selectable field, `None` when the resource does not support selecting on it
/// (the set the API server supports for each resource).
fn field_value(resource: Resource, object: &Value, field: &str) -> Option<String> {
    let text = |pointer: &str| str_at(object, pointer).unwrap_or_default().to_owned();
    match field {
        "metadata.name" => return Some(text("/metadata/name")),
        "metadata.namespace" => return Some(text("/metadata/namespace")),
        _ => {}
    }
    let pointer = match (resource, field) {
        (Resource::Pod, "spec.nodeName") => "/spec/nodeName",
        (Resource::Pod, "spec.restartPolicy") => "/spec/restartPolicy",
        (Resource::Pod, "spec.schedulerName") => "/spec/schedulerName",
        (Resource::Pod, "spec.serviceAccountName") => "/spec/serviceAccountName",
        (Resource::Pod, "status.phase") => "/status/phase",
        (Resource::Pod, "status.podIP") => "/status/podIP",
        (Resource::Pod, "status.nominatedNodeName") => "/status/nominatedNodeName",
        (Resource::Namespace, "status.phase") => "/status/phase",
        (Resource::Event, "involvedObject.kind") => "/involvedObject/kind",
        (Resource::Event, "involvedObject.namespace") => "/involvedObject/namespace",
        (Resource::Event, "involvedObject.name") => "/involvedObject/name",
        (Resource::Event, "involvedObject.uid") => "/involvedObject/uid",
        (Resource::Event, "involvedObject.apiVersion") => "/involvedObject/apiVersion",
        (Resource::Event, "involvedObject.resourceVersion") => "/involvedObject/resourceVersion",
        (Resource::Event, "involvedObject.fieldPath") => "/involvedObject/fieldPath",
        (Resource::Event, "reason") => "/reason",
        (Resource::Event, "reportingComponent") => "/reportingComponent",
        (Resource::Event, "source") => "/source/component",
        (Resource::Event, "type") => "/type",
        (Resource::ReplicaSet, "status.replicas") => {
            return Some(
                object
                    .pointer("/status/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    .to_string(),
            );
        }
        _ => return None,
    };
    Some(text(pointer))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(selector: &str, labels: Value, expected: bool) {
        let parsed = LabelSelector::parse(selector).unwrap();
        let labels = labels.as_object().unwrap().clone();
        assert_eq!(
            parsed.matches(&labels),
            expected,
            "{selector} on {labels:?}"
        );
    }

    #[test]
    fn label_selectors() {
        let web = json!({"app": "web", "tier": "front"});
        check("", web.clone(), true);
        check("app=web", web.clone(), true);
        check("app==web", web.clone(), true);
        check("app=db", web.clone(), false);
        check("app!=db", web.clone(), true);
        check("missing!=x", web.clone(), true);
        check("app in (web, db)", web.clone(), true);
        check("app in (db)", web.clone(), false);
        check("app notin (db)", web.clone(), true);
        check("missing notin (db)", web.clone(), true);
        check("app", web.clone(), true);
        check("!app", web.clone(), false);
        check("!missing", web.clone(), true);
        check("app=web,tier in (front,back),!canary", web.clone(), true);
        check("app=web,tier=back", web, false);
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn label_selector_objects() {
        let selector = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
        }))
        .unwrap();
        assert_eq!(selector.to_query(), "app=web,tier notin (db)");
        assert!(selector.matches(json!({"app": "web"}).as_object().unwrap()));
    }

    #[test]
    fn field_selectors() {
        let event = json!({"metadata": {"name": "e"}, "involvedObject": {"name": "web", "uid": "u1"}, "type": "Warning"});
        let parse = |s| FieldSelector::parse(s, Resource::Event).unwrap();
        assert!(parse("involvedObject.name=web").matches(Resource::Event, &event));
        assert!(parse("involvedObject.uid=u1,type!=Normal").matches(Resource::Event, &event));
        assert!(!parse("involvedObject.name=db").matches(Resource::Event, &event));
        assert!(parse("metadata.name=e").matches(Resource::Event, &event));
        assert_eq!(
            FieldSelector::parse("spec.foo=1", Resource::Deployment).unwrap_err(),
            "field label not supported: spec.foo"
        );
    }
}
