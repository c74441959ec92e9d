//! The stored form of a record's lineage.
//!
//! In memory every field has a full [`Lineage`]. Stored, the fields are grouped by the
//! (document, mapping) they came from, so the two 64-character hashes and the file name are
//! written once per group instead of once per field: a record's lineage shrinks about threefold
//! and the store's write volume with it. The conversion is lossless both ways.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::value::{Lineage, PersonalKind};
use crate::policy::DecisionTrace;

/// A record's lineage as stored: the facts' sources, and how each policy decision was reached.
#[derive(Serialize, Deserialize)]
struct Stored {
    sources: Vec<Group>,
    #[serde(default)]
    decisions: Vec<DecisionGroup>,
}

/// Decision traces grouped by the policy file that produced them.
#[derive(Serialize, Deserialize)]
struct DecisionGroup {
    policy_version: String,
    policy_file: String,
    policy_sha256: String,
    rules: BTreeMap<String, RuleTrace>,
}

#[derive(Serialize, Deserialize)]
struct RuleTrace {
    rule: String,
    inputs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Group {
    document: String,
    mapping: String,
    mapping_sha256: String,
    fields: BTreeMap<String, FieldLineage>,
}

#[derive(Serialize, Deserialize)]
struct FieldLineage {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    transforms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    personal: Option<PersonalKind>,
}

/// [`Stored`] as written: borrowed from the record's lineage, so that writing it copies no
/// string (the same JSON as [`Stored`] reads back).
#[derive(Serialize)]
struct StoredRef<'a> {
    sources: Vec<GroupRef<'a>>,
    decisions: Vec<DecisionGroupRef<'a>>,
}

#[derive(Serialize)]
struct GroupRef<'a> {
    document: &'a str,
    mapping: &'a str,
    mapping_sha256: &'a str,
    fields: SortedMap<'a, FieldLineageRef<'a>>,
}

/// Entries already in key order, written as a JSON object (as a `BTreeMap` of them would be,
/// without building one).
struct SortedMap<'a, V>(Vec<(&'a str, V)>);

impl<V: Serialize> Serialize for SortedMap<'_, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct FieldLineageRef<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    transforms: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    personal: Option<PersonalKind>,
}

#[derive(Serialize)]
struct DecisionGroupRef<'a> {
    policy_version: &'a str,
    policy_file: &'a str,
    policy_sha256: &'a str,
    rules: BTreeMap<&'a str, RuleTraceRef<'a>>,
}

#[derive(Serialize)]
struct RuleTraceRef<'a> {
    rule: &'a str,
    inputs: &'a BTreeMap<String, String>,
}

/// The stored JSON of a record's lineage.
pub fn to_json(lineage: &BTreeMap<String, Lineage>, decisions: &BTreeMap<String, DecisionTrace>) -> String {
    type Key<'a> = (&'a str, &'a str, &'a str);
    // Nearly every field of a record shares one document and one mapping, whose names are the
    // same `Arc`s: a group is found by pointer first, and there are one or two of them. The
    // fields come in name order and stay in it within their group.
    let mut groups: Vec<(&Lineage, Vec<(&str, FieldLineageRef<'_>)>)> = Vec::with_capacity(2);
    for (name, l) in lineage {
        let same = |g: &Lineage| {
            (Arc::ptr_eq(&g.document, &l.document) || g.document == l.document)
                && (Arc::ptr_eq(&g.mapping, &l.mapping) || g.mapping == l.mapping)
                && (Arc::ptr_eq(&g.mapping_sha256, &l.mapping_sha256) || g.mapping_sha256 == l.mapping_sha256)
        };
        let field = FieldLineageRef {
            path: &l.path,
            raw: l.raw.as_deref(),
            transforms: &l.transforms,
            personal: l.personal,
        };
        match groups.iter_mut().find(|(g, _)| same(g)) {
            Some((_, fields)) => fields.push((name, field)),
            None => {
                let mut fields = Vec::with_capacity(lineage.len());
                fields.push((name.as_str(), field));
                groups.push((l, fields));
            }
        }
    }
    let key = |l: &Lineage| -> (Arc<str>, Arc<str>, Arc<str>) {
        (l.document.clone(), l.mapping.clone(), l.mapping_sha256.clone())
    };
    groups.sort_by_cached_key(|(l, _)| key(l));
    let sources = groups
        .into_iter()
        .map(|(l, fields)| GroupRef {
            document: &l.document,
            mapping: &l.mapping,
            mapping_sha256: &l.mapping_sha256,
            fields: SortedMap(fields),
        })
        .collect();
    let mut by_policy: BTreeMap<Key<'_>, BTreeMap<&str, RuleTraceRef<'_>>> = BTreeMap::new();
    for (name, t) in decisions {
        by_policy
            .entry((&t.policy_version, &t.policy_file, &t.policy_sha256))
            .or_default()
            .insert(
                name,
                RuleTraceRef {
                    rule: &t.rule,
                    inputs: &t.inputs,
                },
            );
    }
    let decisions = by_policy
        .into_iter()
        .map(
            |((policy_version, policy_file, policy_sha256), rules)| DecisionGroupRef {
                policy_version,
                policy_file,
                policy_sha256,
                rules,
            },
        )
        .collect();
    // A record's lineage is several kilobytes: one buffer of that size instead of growing
    // one from nothing. Strings and maps of strings always serialise, as UTF-8.
    let mut buffer = Vec::with_capacity(8192);
    serde_json::to_writer(&mut buffer, &StoredRef { sources, decisions })
        .ok()
        .and_then(|()| String::from_utf8(buffer).ok())
        .unwrap_or_default()
}

/// Field lineage and decision traces, read back from storage.
pub type Restored = (BTreeMap<String, Lineage>, BTreeMap<String, DecisionTrace>);

/// Reads stored lineage back into one [`Lineage`] per field and the decision traces. Also
/// reads the first stored form, a bare list of source groups without decisions.
pub fn from_json(text: &str) -> Result<Restored, serde_json::Error> {
    let stored: Stored = match serde_json::from_str::<Vec<Group>>(text) {
        Ok(sources) => Stored {
            sources,
            decisions: Vec::new(),
        },
        Err(_) => serde_json::from_str(text)?,
    };
    let mut out = BTreeMap::new();
    for g in stored.sources {
        let (document, mapping, mapping_sha256): (Arc<str>, Arc<str>, Arc<str>) =
            (g.document.into(), g.mapping.into(), g.mapping_sha256.into());
        for (name, f) in g.fields {
            out.insert(
                name,
                Lineage {
                    document: document.clone(),
                    path: f.path,
                    raw: f.raw,
                    transforms: f.transforms.into(),
                    mapping: mapping.clone(),
                    mapping_sha256: mapping_sha256.clone(),
                    personal: f.personal,
                },
            );
        }
    }
    let mut decisions = BTreeMap::new();
    for g in stored.decisions {
        for (name, r) in g.rules {
            decisions.insert(
                name,
                DecisionTrace {
                    policy_version: g.policy_version.clone(),
                    policy_file: g.policy_file.clone(),
                    policy_sha256: g.policy_sha256.clone(),
                    rule: r.rule,
                    inputs: r.inputs,
                },
            );
        }
    }
    Ok((out, decisions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let l = |doc: &str, raw: Option<&str>, personal| Lineage {
            document: doc.into(),
            path: "/data/X".into(),
            raw: raw.map(str::to_string),
            transforms: Arc::from(["trim".to_string()]),
            mapping: "a.toml".into(),
            mapping_sha256: "m".into(),
            personal,
        };
        let lineage = BTreeMap::from([
            ("a".to_string(), l("d1", Some("1"), None)),
            ("b".to_string(), l("d1", None, Some(PersonalKind::Phone))),
            ("c".to_string(), l("d2", Some("x"), None)),
        ]);
        let t = |rule: &str| DecisionTrace {
            policy_version: "2022".into(),
            policy_file: "policy/2022.toml".into(),
            policy_sha256: "p".repeat(64),
            rule: rule.into(),
            inputs: BTreeMap::from([("x".to_string(), "1".to_string())]),
        };
        let decisions = BTreeMap::from([
            ("decisions.a".to_string(), t("a")),
            ("decisions.b".to_string(), t("b")),
        ]);
        let text = to_json(&lineage, &decisions);
        assert_eq!(text.matches("\"d1\"").count(), 1);
        assert_eq!(
            text.matches(&"p".repeat(64)).count(),
            1,
            "one policy hash per group"
        );
        assert_eq!(from_json(&text).unwrap(), (lineage, decisions));
    }
}
