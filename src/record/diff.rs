//! What differs between two versions of a record, leaf by leaf: shown before a replay or a
//! remap commits anything, so that an operator sees what a mapping or policy change does.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::mapping::Lineage;

/// One field or decision that differs between two versions of a record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// The leaves of a JSON value by dotted path (`decisions.category.id`, `approvals[0].title`).
fn leaves(value: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(v, &p, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, &format!("{path}[{i}]"), out);
            }
        }
        other => {
            out.insert(path.to_string(), other.clone());
        }
    }
}

/// Every leaf that differs between two records, in path order. Equal subtrees are passed
/// over whole: a remap diffs every record it changes, most of which differ in a field or two.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk(before, after, &mut String::new(), &mut out);
    out
}

fn walk(a: &Value, b: &Value, path: &mut String, out: &mut Vec<Change>) {
    if a == b {
        return;
    }
    let at = path.len();
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if !x.is_empty() && !y.is_empty() => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    path,
                    out,
                );
                path.truncate(at);
            }
        }
        (Value::Array(x), Value::Array(y)) if !x.is_empty() && !y.is_empty() => {
            for i in 0..x.len().max(y.len()) {
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(path, "[{i}]");
                walk(
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                    path,
                    out,
                );
                path.truncate(at);
            }
        }
        // A value against nothing (or a container against a scalar): each leaf on either side.
        _ => {
            let (mut x, mut y) = (BTreeMap::new(), BTreeMap::new());
            leaves(a, path, &mut x);
            leaves(b, path, &mut y);
            let mut fields: Vec<&String> = x.keys().chain(y.keys()).collect();
            fields.sort();
            fields.dedup();
            for f in fields {
                let (p, q) = (x.get(f).unwrap_or(&Value::Null), y.get(f).unwrap_or(&Value::Null));
                if p != q {
                    out.push(Change {
                        field: f.clone(),
                        before: p.clone(),
                        after: q.clone(),
                    });
                }
            }
        }
    }
}

/// The lineage entry a changed leaf belongs to: its own field, or the fact it is part of
/// (`project.kind.label` is part of the fact `project.kind`).
pub fn lineage_of<'a>(field: &str, lineage: &'a BTreeMap<String, Lineage>) -> Option<&'a Lineage> {
    let mut at = field;
    loop {
        if let Some(l) = lineage.get(at) {
            return Some(l);
        }
        let cut = at.rfind(['.', '['])?;
        at = &at[..cut];
    }
}

/// Masks the personal values of `changes` by the lineage of the record they belong to (a
/// field's index in a list is the lineage's too: `contacts[1].phone`).
pub fn mask(changes: &mut [Change], lineage: &BTreeMap<String, Lineage>) {
    for c in changes {
        if let Some(kind) = lineage_of(&c.field, lineage).and_then(|l| l.personal) {
            for v in [&mut c.before, &mut c.after] {
                if let Some(text) = v.as_str() {
                    *v = Value::from(crate::mask::mask(kind, text));
                }
            }
        }
    }
}

/// A field path with its list indexes taken out (`approvals[2].title` → `approvals[].title`),
/// for counting a change once whatever item it is in.
pub fn general(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut skipping = false;
    for ch in field.chars() {
        match ch {
            '[' => {
                skipping = true;
                out.push_str("[]");
            }
            ']' => skipping = false,
            c if !skipping => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_differing_leaves_are_changes_and_list_indexes_generalise() {
        let a = json!({"water": {"dn": 100}, "approvals": [{"title": "a"}], "x": 1});
        let b = json!({"water": {"dn": 150}, "approvals": [{"title": "a"}, {"title": "b"}], "x": 1});
        let changes = diff(&a, &b);
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["approvals[1].title", "water.dn"]);
        assert_eq!(changes[0].before, Value::Null);
        let whole = diff(&json!({"a": {"b": 1, "c": [1, 2]}}), &json!({"a": null}));
        let fields: Vec<&str> = whole.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["a.b", "a.c[0]", "a.c[1]"]);
        assert_eq!(
            general("approvals[12].items[3].title"),
            "approvals[].items[].title"
        );
    }
}
