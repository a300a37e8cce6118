//! The three patch formats of the Kubernetes API: JSON patch (RFC 6902), JSON merge patch
//! (RFC 7386) and strategic merge patch, whose list merge keys follow the Go types'
//! `patchMergeKey` / `patchStrategy` tags of the resources the emulator serves.

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` removes, everything else replaces.
pub(crate) fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            out.remove(key);
        } else {
            let merged = merge_patch(out.get(key).unwrap_or(&Value::Null), value);
            out.insert(key.clone(), merged);
        }
    }
    Value::Object(out)
}

/// RFC 6902. Errors are worded like the `json-patch` library the API server uses.
pub(crate) fn json_patch(target: &Value, patch: &Value) -> Result<Value, String> {
    let ops = patch
        .as_array()
        .ok_or("json patch must be an array of operations")?;
    let mut doc = target.clone();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation is missing \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("operation {name} is missing \"path\""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {name} at {path} is missing \"value\""))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {name} at {path} is missing \"from\""))
        };
        match name {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path).map_err(|_| {
                    format!("replace operation does not apply: doc is missing key: {path}")
                })?;
                add(&mut doc, path, value()?)?;
            }
            "move" => {
                let moved = remove(&mut doc, from()?)?;
                add(&mut doc, path, moved)?;
            }
            "copy" => {
                let copied = doc.pointer(&pointer(from()?)?).cloned().ok_or_else(|| {
                    format!("copy operation does not apply: doc is missing from path: {path}")
                })?;
                add(&mut doc, path, copied)?;
            }
            "test" => {
                let expected = value()?;
                if doc.pointer(&pointer(path)?) != Some(&expected) {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(doc)
}

/// Checks a JSON pointer's syntax; `""` is the whole document.
fn pointer(path: &str) -> Result<String, String> {
    if path.is_empty() || path.starts_with('/') {
        Ok(path.to_owned())
    } else {
        Err(format!("invalid JSON pointer: {path:?}"))
    }
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let path = pointer(path)?;
    let at = path
        .rfind('/')
        .ok_or("cannot operate on the whole document")?;
    let last = path[at + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..at].to_owned(), last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("add operation does not apply: doc is missing path: \"{path}\"");
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>().map_err(|_| missing())?
            };
            if index > items.len() {
                return Err(format!(
                    "add operation does not apply: index out of bounds: {path}"
                ));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: \"{path}\"");
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(map) => map.remove(&last).ok_or_else(missing),
        Value::Array(items) => {
            let index = last.parse::<usize>().map_err(|_| missing())?;
            if index >= items.len() {
                return Err(missing());
            }
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

/// How a list field merges in a strategic merge patch.
enum ListStrategy {
    /// Items are objects matched by this key.
    MergeByKey(&'static str),
    /// A list of scalars merged as a set (`finalizers`).
    MergePrimitives,
    Replace,
}

/// The `patchMergeKey`/`patchStrategy` tags of the fields the emulator's types have.
fn list_strategy(field: &str) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::MergeByKey("name"),
        "ports" => ListStrategy::MergeByKey("containerPort"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "hostAliases" => ListStrategy::MergeByKey("ip"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        "conditions" => ListStrategy::MergeByKey("type"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "finalizers" => ListStrategy::MergePrimitives,
        _ => ListStrategy::Replace,
    }
}

/// Applies a strategic merge patch: maps merge like a merge patch, lists with a merge key merge
/// item by item, and the directives `$patch` (`replace`, `delete`, `merge`), `$retainKeys`,
/// `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` are honoured.
pub(crate) fn strategic_merge_patch(target: &Value, patch: &Value) -> Result<Value, String> {
    match patch {
        Value::Object(_) => merge_map(target, patch),
        _ => Err("strategic merge patch must be a JSON object".to_owned()),
    }
}

fn merge_map(target: &Value, patch: &Value) -> Result<Value, String> {
    let Value::Object(patch) = patch else {
        return Ok(patch.clone());
    };
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            return Ok(strip_directives(&Value::Object(replaced)));
        }
        Some("delete") => return Ok(Value::Null),
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other}")),
    }
    let mut out = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            out.remove(key);
            continue;
        }
        let current = out.get(key).cloned().unwrap_or(Value::Null);
        let merged = match value {
            Value::Object(_) => merge_map(&current, value)?,
            Value::Array(items) => merge_list(key, &current, items)?,
            scalar => scalar.clone(),
        };
        if merged.is_null() {
            out.remove(key);
        } else {
            out.insert(key.clone(), merged);
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Some(remove)) = (out.get_mut(field), value.as_array())
        {
            list.retain(|item| !remove.contains(item));
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Some(order)) = (out.get_mut(field), value.as_array())
        {
            reorder(field, list, order);
        }
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        out.retain(|key, _| keep.iter().any(|k| k.as_str() == Some(key)));
    }
    Ok(Value::Object(out))
}

fn merge_list(field: &str, current: &Value, items: &[Value]) -> Result<Value, String> {
    let current = current.as_array().cloned().unwrap_or_default();
    match list_strategy(field) {
        ListStrategy::Replace => Ok(Value::Array(
            items
                .iter()
                .filter(|item| item.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        )),
        ListStrategy::MergePrimitives => {
            let mut out = current;
            for item in items {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListStrategy::MergeByKey(merge_key) => {
            if items
                .iter()
                .any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(Value::Array(
                    items
                        .iter()
                        .filter(|item| item.get("$patch").is_none())
                        .map(strip_directives)
                        .collect(),
                ));
            }
            let mut out = current;
            for item in items {
                let key = item.get(merge_key).ok_or_else(|| {
                    format!("map: {item} does not contain declared merge key: {merge_key}")
                })?;
                let position = out.iter().position(|x| x.get(merge_key) == Some(key));
                let deleting = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, deleting) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => out[i] = merge_map(&out[i], item)?,
                    (None, false) => out.push(merge_map(&Value::Null, item)?),
                }
            }
            Ok(Value::Array(out))
        }
    }
}

/// Orders `list` like `$setElementOrder`: listed items first, in that order; the rest after.
fn reorder(field: &str, list: &mut Vec<Value>, order: &[Value]) {
    let key_of = |item: &Value| match list_strategy(field) {
        ListStrategy::MergeByKey(key) => item.get(key).cloned(),
        _ => Some(item.clone()),
    };
    let mut rest = std::mem::take(list);
    for wanted in order {
        let wanted = key_of(wanted);
        if let Some(i) = rest.iter().position(|item| key_of(item) == wanted) {
            list.push(rest.remove(i));
        }
    }
    list.extend(rest);
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let patch = json!({"a": "z", "c": {"f": null}, "l": [3]});
        assert_eq!(
            merge_patch(&target, &patch),
            json!({"a": "z", "c": {"d": "e"}, "l": [3]})
        );
    }

    #[test]
    fn json_patch_operations() {
        let target =
            json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}, "metadata": {}});
        let patch = json!([
            {"op": "replace", "path": "/spec/containers/0/image", "value": "x:2"},
            {"op": "add", "path": "/spec/containers/-", "value": {"name": "b"}},
            {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}},
            {"op": "test", "path": "/metadata/annotations/a~1b", "value": "c"},
            {"op": "copy", "from": "/spec/containers/0", "path": "/first"},
            {"op": "move", "from": "/first", "path": "/moved"},
            {"op": "remove", "path": "/spec/containers/1"},
        ]);
        assert_eq!(
            json_patch(&target, &patch).unwrap(),
            json!({
                "spec": {"containers": [{"name": "a", "image": "x:2"}]},
                "metadata": {"annotations": {"a/b": "c"}},
                "moved": {"name": "a", "image": "x:2"},
            })
        );
        let failing = json!([{"op": "test", "path": "/metadata", "value": 1}]);
        assert!(json_patch(&target, &failing).is_err());
        let missing = json!([{"op": "replace", "path": "/nope/x", "value": 1}]);
        assert!(json_patch(&target, &missing).is_err());
    }

    #[test]
    fn strategic_merge_patch_merges_containers_by_name() {
        let target = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "sidecar", "image": "side:1"},
        ], "tolerations": [{"key": "a"}]}}}});
        // What `kubectl set image deploy/x web=web:2` sends.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{"image": "web:2", "name": "web", "env": [{"name": "B", "value": "2"}]}],
            "tolerations": [{"key": "b"}],
        }}}});
        assert_eq!(
            strategic_merge_patch(&target, &patch).unwrap(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "side:1"},
            ], "tolerations": [{"key": "b"}]}}}})
        );
    }

    #[test]
    fn strategic_merge_patch_directives() {
        let target = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"containers": [
            {"name": "a", "image": "a"}, {"name": "b", "image": "b"},
        ], "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({
            "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {
                "containers": [{"name": "a", "$patch": "delete"}],
                "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            },
        });
        assert_eq!(
            strategic_merge_patch(&target, &patch).unwrap(),
            json!({"metadata": {"finalizers": ["b", "c"]}, "spec": {
                "containers": [{"name": "b", "image": "b"}],
                "strategy": {"type": "Recreate"},
            }})
        );
        let replace = json!({"spec": {"$patch": "replace", "x": 1}});
        assert_eq!(
            strategic_merge_patch(&target, &replace).unwrap()["spec"],
            json!({"x": 1})
        );
    }
}
