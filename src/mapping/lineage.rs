//! The stored form of a record's lineage.
//!
//! In memory every field has a full [`Lineage`]. Stored, the fields are grouped by the
//! (document, mapping) they came from, so the two 64-character hashes and the file name are
//! written once per group instead of once per field: a record's lineage shrinks about threefold
//! and the store's write volume with it. The conversion is lossless both ways.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::value::{Lineage, PersonalKind};

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

/// The stored JSON of a record's lineage.
pub fn to_json(lineage: &BTreeMap<String, Lineage>) -> String {
    let mut groups: BTreeMap<(&str, &str, &str), BTreeMap<String, FieldLineage>> = BTreeMap::new();
    for (name, l) in lineage {
        groups
            .entry((&l.document, &l.mapping, &l.mapping_sha256))
            .or_default()
            .insert(
                name.clone(),
                FieldLineage {
                    path: l.path.clone(),
                    raw: l.raw.clone(),
                    transforms: l.transforms.clone(),
                    personal: l.personal,
                },
            );
    }
    let groups: Vec<Group> = groups
        .into_iter()
        .map(|((document, mapping, mapping_sha256), fields)| Group {
            document: document.into(),
            mapping: mapping.into(),
            mapping_sha256: mapping_sha256.into(),
            fields,
        })
        .collect();
    // Strings and maps of strings always serialise.
    serde_json::to_string(&groups).unwrap_or_default()
}

/// Reads stored lineage back into one [`Lineage`] per field.
pub fn from_json(text: &str) -> Result<BTreeMap<String, Lineage>, serde_json::Error> {
    let groups: Vec<Group> = serde_json::from_str(text)?;
    let mut out = BTreeMap::new();
    for g in groups {
        for (name, f) in g.fields {
            out.insert(
                name,
                Lineage {
                    document: g.document.clone(),
                    path: f.path,
                    raw: f.raw,
                    transforms: f.transforms,
                    mapping: g.mapping.clone(),
                    mapping_sha256: g.mapping_sha256.clone(),
                    personal: f.personal,
                },
            );
        }
    }
    Ok(out)
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
            transforms: vec!["trim".into()],
            mapping: "a.toml".into(),
            mapping_sha256: "m".into(),
            personal,
        };
        let lineage = BTreeMap::from([
            ("a".to_string(), l("d1", Some("1"), None)),
            ("b".to_string(), l("d1", None, Some(PersonalKind::Phone))),
            ("c".to_string(), l("d2", Some("x"), None)),
        ]);
        let text = to_json(&lineage);
        assert_eq!(text.matches("\"d1\"").count(), 1);
        assert_eq!(from_json(&text).unwrap(), lineage);
    }
}
