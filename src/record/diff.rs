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

/// Every leaf that differs between two records, in path order.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves(before, "", &mut a);
    leaves(after, "", &mut b);
    let mut fields: Vec<&String> = a.keys().chain(b.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter_map(|f| {
            let (x, y) = (a.get(f).unwrap_or(&Value::Null), b.get(f).unwrap_or(&Value::Null));
            (x != y).then(|| Change {
                field: f.clone(),
                before: x.clone(),
                after: y.clone(),
            })
        })
        .collect()
}

/// Masks the personal values of `changes` by the lineage of the record they belong to (a
/// field's index in a list is the lineage's too: `contacts[1].phone`).
pub fn mask(changes: &mut [Change], lineage: &BTreeMap<String, Lineage>) {
    for c in changes {
        if let Some(kind) = lineage.get(&c.field).and_then(|l| l.personal) {
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
        assert_eq!(
            general("approvals[12].items[3].title"),
            "approvals[].items[].title"
        );
    }
}
