//! The mapping engine: declarative files in `mappings/` turn a raw document into typed facts,
//! each with its lineage.
//!
//! The files are embedded in the binary as defaults; a directory named in the configuration
//! overrides them file by file (same relative name) and may add new ones. The format is
//! described in `mappings/README.md`.

pub mod lineage;
mod spec;
mod transform;
mod value;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use shuiwu_licences::xml::Element;
pub use spec::{Field, Format, List, Mapping, SpecError, compile};
pub use transform::{Context, Transform, diameter};
pub use value::{Code, Fact, Facts, Lineage, PersonalKind, Value};

/// A field that could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub path: String,
    pub raw: Option<String>,
    pub reason: String,
}

/// A document that does not satisfy its mapping: every failing field, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} (in {mapping})", describe(.errors))]
pub struct MapError {
    pub mapping: String,
    pub errors: Vec<FieldError>,
}

fn describe(errors: &[FieldError]) -> String {
    let mut parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.reason))
        .collect();
    if parts.len() > 3 {
        let more = parts.len() - 3;
        parts.truncate(3);
        parts.push(format!("and {more} more"));
    }
    parts.join("; ")
}

/// Loading the mapping set failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Read(#[from] crate::datafiles::ReadError),
    #[error("mapping {name:?} is defined by both {first} and {second}")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
}

/// All mapping files in force, by mapping name.
#[derive(Debug, Clone)]
pub struct MappingSet {
    by_name: BTreeMap<String, Arc<Mapping>>,
}

impl MappingSet {
    /// The embedded defaults, overridden file by file from `dir` when given.
    pub fn load(dir: Option<&Path>) -> Result<MappingSet, LoadError> {
        let files = crate::datafiles::load(dir)?;
        let mut by_name: BTreeMap<String, Arc<Mapping>> = BTreeMap::new();
        let mappings = files.into_iter().filter(|(file, _)| {
            !crate::datafiles::NOT_FIELD_MAPPINGS
                .iter()
                .any(|p| file.starts_with(p))
        });
        for (file, content) in mappings {
            let mapping = compile(&file, &content)?;
            if let Some(first) = by_name.get(&mapping.name) {
                return Err(LoadError::Duplicate {
                    name: mapping.name.clone(),
                    first: first.file.clone(),
                    second: file,
                });
            }
            by_name.insert(mapping.name.clone(), Arc::new(mapping));
        }
        Ok(MappingSet { by_name })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Mapping>> {
        self.by_name.get(name).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Mapping>> {
        self.by_name.values()
    }
}

/// A parsed document to map.
#[derive(Debug, Clone, Copy)]
pub enum Document<'a> {
    Json(&'a serde_json::Value),
    /// A JSON document whose mapped object sits at a pointer known only when it is read (one
    /// item of a listing page, the `application` of a webhook event): the pointer replaces the
    /// mapping's `root`, and every lineage path starts with it, so that a value traces to its
    /// place in the bytes the platform sent.
    JsonAt(&'a serde_json::Value, &'a str),
    Xml(&'a Element),
}

/// A value found at a path.
#[derive(Debug, Clone, Copy)]
enum Node<'a> {
    Json(&'a serde_json::Value),
    Xml(&'a Element),
}

/// The value at a pointer's reference tokens, as [`serde_json::Value::pointer`] finds it
/// (an array index is decimal digits without a leading zero or sign).
fn json_at<'v>(start: &'v serde_json::Value, tokens: &[String]) -> Option<&'v serde_json::Value> {
    tokens.iter().try_fold(start, |at, token| match at {
        serde_json::Value::Object(map) => map.get(token.as_str()),
        serde_json::Value::Array(items) => {
            let plain = !token.is_empty()
                && token.bytes().all(|b| b.is_ascii_digit())
                && (token == "0" || !token.starts_with('0'));
            plain
                .then(|| token.parse::<usize>().ok())
                .flatten()
                .and_then(|i| items.get(i))
        }
        _ => None,
    })
}

/// The `(namespace URI, local name)` steps of an XML path.
fn xml_steps<'m>(mapping: &'m Mapping, path: &'m str) -> Vec<(Option<&'m str>, &'m str)> {
    path.split('/')
        .skip(1)
        .map(|step| match step.split_once(':') {
            Some((prefix, local)) => (mapping.namespaces.get(prefix).map(String::as_str), local),
            None => (None, step),
        })
        .collect()
}

fn xml_matches(e: &Element, (ns, local): (Option<&str>, &str)) -> bool {
    e.ns.as_deref() == ns && e.local == local
}

/// Descends from `start` along `steps`.
fn xml_find<'e>(start: &'e Element, steps: &[(Option<&str>, &str)]) -> Option<&'e Element> {
    steps.iter().try_fold(start, |at, step| {
        at.children.iter().find(|c| xml_matches(c, *step))
    })
}

/// Maps one parsed document. `document_sha256` is the hash of the raw bytes it was parsed
/// from; it goes into every fact's lineage.
pub fn apply(
    mapping: &Mapping,
    document: Document<'_>,
    document_sha256: &str,
    ctx: &Context,
) -> Result<Facts, MapError> {
    let mut m = Mapper {
        document: document_sha256.into(),
        file: mapping.file.as_str().into(),
        file_sha256: mapping.sha256.as_str().into(),
        no_transforms: Arc::from([]),
        ctx,
        facts: Facts::default(),
        errors: Vec::new(),
    };
    match document {
        Document::Json(doc) => m.json(mapping, doc, None),
        Document::JsonAt(doc, at) => m.json(mapping, doc, Some(at)),
        Document::Xml(doc) => {
            // The root path's first step is the document element itself.
            let steps = xml_steps(mapping, &mapping.root);
            let root = match steps.split_first() {
                Some((first, rest)) if xml_matches(doc, *first) => xml_find(doc, rest),
                Some(_) => None,
                None => Some(doc),
            };
            for field in &mapping.fields {
                let found = root.and_then(|r| xml_find(r, &xml_steps(mapping, &field.path)));
                m.field(
                    field,
                    field.name.clone(),
                    field.full_path.clone(),
                    found.map(Node::Xml),
                );
            }
            for list in &mapping.lists {
                let list_path = &list.full_path;
                let steps = xml_steps(mapping, &list.path);
                let items: Vec<&Element> = match (root, steps.split_last()) {
                    (Some(r), Some((item, parent))) => xml_find(r, parent)
                        .map(|p| p.children.iter().filter(|c| xml_matches(c, *item)).collect())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                m.facts.list_lengths.insert(list.name.clone(), items.len());
                for (i, item) in items.iter().enumerate() {
                    for field in &list.fields {
                        let name = format!("{}[{i}].{}", list.name, field.name);
                        // XPath-style, 1-based position among the list's items.
                        let path = format!("{list_path}[{}]{}", i + 1, field.path);
                        let found = xml_find(item, &xml_steps(mapping, &field.path));
                        m.field(field, name, path, found.map(Node::Xml));
                    }
                }
            }
        }
    }
    if m.errors.is_empty() {
        Ok(m.facts)
    } else {
        Err(MapError {
            mapping: mapping.file.clone(),
            errors: m.errors,
        })
    }
}

/// One document being mapped: what every field needs, and what they produce.
struct Mapper<'a> {
    /// The document's hash and the mapping file's name and hash, shared by every fact's
    /// lineage.
    document: Arc<str>,
    file: Arc<str>,
    file_sha256: Arc<str>,
    /// The lineage of a value that was not there: nothing applied.
    no_transforms: Arc<[String]>,
    ctx: &'a Context,
    facts: Facts,
    errors: Vec<FieldError>,
}

impl Mapper<'_> {
    /// Maps the value `found` at `path` (the full JSON Pointer) under the fact name `name`.
    /// Maps a JSON document from the mapping's root, or from `at` when given.
    fn json(&mut self, mapping: &Mapping, doc: &serde_json::Value, at: Option<&str>) {
        let root = doc.pointer(at.unwrap_or(&mapping.root));
        let full = |path: &str, full_path: &str| match at {
            Some(at) => format!("{at}{path}"),
            None => full_path.to_string(),
        };
        for field in &mapping.fields {
            self.field(
                field,
                field.name.clone(),
                full(&field.path, &field.full_path),
                root.and_then(|r| json_at(r, &field.tokens)).map(Node::Json),
            );
        }
        for list in &mapping.lists {
            let list_path = full(&list.path, &list.full_path);
            let items = match root.and_then(|r| json_at(r, &list.tokens)) {
                None | Some(serde_json::Value::Null) => &[][..],
                Some(serde_json::Value::Array(items)) => items.as_slice(),
                Some(other) => {
                    self.errors.push(FieldError {
                        field: list.name.clone(),
                        path: list_path.clone(),
                        raw: Some(raw_text(other)),
                        reason: "expected a list".into(),
                    });
                    &[][..]
                }
            };
            self.facts.list_lengths.insert(list.name.clone(), items.len());
            for (i, item) in items.iter().enumerate() {
                for field in &list.fields {
                    let name = format!("{}[{i}].{}", list.name, field.name);
                    let path = format!("{list_path}/{i}{}", field.path);
                    self.field(field, name, path, json_at(item, &field.tokens).map(Node::Json));
                }
            }
        }
    }

    fn field(&mut self, field: &Field, name: String, path: String, found: Option<Node<'_>>) {
        let found = found.filter(|n| !matches!(n, Node::Json(serde_json::Value::Null)));
        let raw = found.map(|n| match n {
            Node::Json(v) => raw_text(v),
            Node::Xml(e) => e.text.clone(),
        });
        let lineage = |raw: Option<String>, path: String, transforms: &Arc<[String]>| Lineage {
            document: self.document.clone(),
            path,
            raw,
            transforms: transforms.clone(),
            mapping: self.file.clone(),
            mapping_sha256: self.file_sha256.clone(),
            personal: field.personal,
        };
        if field.presence {
            let present = found.is_some();
            let lineage = lineage(raw, path, &field.transform_names);
            self.facts.fields.insert(
                name,
                Fact {
                    value: Some(Value::Bool(present)),
                    lineage,
                },
            );
            return;
        }
        let fail = |errors: &mut Vec<FieldError>,
                    name: String,
                    path: String,
                    raw: Option<String>,
                    reason: String| {
            errors.push(FieldError {
                field: name,
                path,
                // Personal values stay out of failure reasons and listings.
                raw: if field.personal.is_some() {
                    raw.map(|_| "(personal data)".to_string())
                } else {
                    raw
                },
                reason,
            });
        };
        let initial = match found {
            None | Some(Node::Json(serde_json::Value::Null)) => None,
            Some(Node::Xml(e)) if e.text.trim().is_empty() => None,
            Some(Node::Xml(e)) => Some(Value::Text(e.text.clone())),
            Some(Node::Json(serde_json::Value::String(s))) if s.trim().is_empty() => None,
            Some(Node::Json(serde_json::Value::String(s))) => Some(Value::Text(s.clone())),
            Some(Node::Json(serde_json::Value::Number(n))) => Some(Value::Text(n.to_string())),
            Some(Node::Json(serde_json::Value::Bool(b))) => {
                Some(Value::Text(if *b { "1" } else { "0" }.into()))
            }
            Some(Node::Json(other)) => {
                let reason = format!("expected a single value, found {}", kind_of(other));
                fail(&mut self.errors, name, path, raw, reason);
                return;
            }
        };
        let Some(mut value) = initial else {
            if field.required {
                fail(
                    &mut self.errors,
                    name,
                    path,
                    raw,
                    "required but absent or empty".into(),
                );
            } else {
                let lineage = lineage(raw, path, &self.no_transforms);
                self.facts.fields.insert(name, Fact { value: None, lineage });
            }
            return;
        };
        for t in &field.transforms {
            match t.apply(value, self.ctx) {
                Ok(v) => value = v,
                Err(reason) => {
                    let reason = format!("{}: {reason}", t.name());
                    fail(&mut self.errors, name, path, raw, reason);
                    return;
                }
            }
        }
        // Every transform of the chain was applied.
        let lineage = lineage(raw, path, &field.transform_names);
        self.facts.fields.insert(
            name,
            Fact {
                value: Some(value),
                lineage,
            },
        );
    }
}

fn raw_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Object(_) => "an object",
        serde_json::Value::Array(_) => "a list",
        _ => "a value",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn precompiled_pointers_find_what_json_pointer_finds() {
        let doc = serde_json::json!({
            "data": {"a/b": 1, "m~n": 2, "": 3, "list": [10, 11, {"x": [true]}], "0": "zero"},
            "01": "key"
        });
        let pointers = [
            "",
            "/data",
            "/data/a~1b",
            "/data/m~0n",
            "/data/",
            "/data/list/0",
            "/data/list/2/x/0",
            "/data/list/01",
            "/data/list/+1",
            "/data/list/-1",
            "/data/list/3",
            "/data/list/",
            "/data/0",
            "/01",
            "/data/list/1/deeper",
            "/nothing/here",
            "/data/list/99999999999999999999",
        ];
        for p in pointers {
            assert_eq!(
                json_at(&doc, &spec::pointer_tokens(p)),
                doc.pointer(p),
                "pointer {p:?}"
            );
        }
    }

    use super::*;
    use chrono::NaiveDate;
    use serde_json::json;

    fn ctx() -> Context {
        Context {
            today: NaiveDate::from_ymd_opt(2026, 11, 28).unwrap(),
        }
    }

    fn project() -> serde_json::Value {
        json!({"code": "0000", "data": {
            "XMDM": "2022-530112-47-01-587143", "XMMC": " 某项目 ", "XMLX": "01", "JSXZ": "1", "GCYT": "0201",
            "LXLX": "3", "XZQHDM": "530112", "JSDDXZQH": "530112", "JSDD": "昆明市西山区", "JZMJ": "8650.50",
            "JZGD": "", "SFSJWXP": "0", "SFJYDFX": "1", "JSDW": "昆明某科技有限公司", "JSDWDM": "91350100M000100Y43",
            "JSDWLXR": {"LXR": "张三", "LXDH": "13800000000"},
            "SZGYBZ": {"YS": {"JSKJ": "Φ40", "YSXZ": "生产", "YJRYSL": "25.0", "WXGDCD": "120"}},
            "SPJD": "2", "SPJG": [{"SXMC": "建设工程规划许可证核发", "PFWH": "1", "PFRQ": "2024-03-01", "ZZBH": "1", "ZZLXDM": "JSGCGHXKZ"}],
            "FJ": [], "ZT": "1", "BBH": 3, "GXSJ": "2024-03-05 14:22:10"}})
    }

    #[test]
    fn maps_the_embedded_project_file_with_lineage() {
        let set = MappingSet::load(None).unwrap();
        let m = set.get("approval.project").unwrap();
        let facts = apply(&m, Document::Json(&project()), "abc", &ctx()).unwrap();
        assert_eq!(facts.text("project.name").as_deref(), Some("某项目"));
        assert_eq!(facts.get("water.diameter_dn"), Some(&Value::Integer(40)));
        assert_eq!(facts.get("building.height_m"), None, "empty means not known");
        assert_eq!(facts.bool("power.requested"), Some(false));
        assert_eq!(facts.integer("source.version"), Some(3));
        assert_eq!(facts.list_len("approvals"), 1);
        let fact = &facts.fields["water.diameter_dn"];
        assert_eq!(fact.lineage.path, "/data/SZGYBZ/YS/JSKJ");
        assert_eq!(fact.lineage.raw.as_deref(), Some("Φ40"));
        assert_eq!(*fact.lineage.transforms, ["trim", "diameter"]);
        assert_eq!(&*fact.lineage.mapping, "approval/project.toml");
        assert_eq!(*fact.lineage.mapping_sha256, m.sha256);
        assert_eq!(
            facts.fields["approvals[0].licence_type"].lineage.path,
            "/data/SPJG/0/ZZLXDM"
        );
        assert_eq!(
            facts.fields["contact.phone"].lineage.personal,
            Some(PersonalKind::Phone)
        );
    }

    #[test]
    fn reports_every_failing_field() {
        let set = MappingSet::load(None).unwrap();
        let m = set.get("approval.project").unwrap();
        let mut doc = project();
        doc["data"]["JSDWDM"] = json!("91350100M000100Y44");
        doc["data"]["JZMJ"] = json!("-1");
        doc["data"]["GCYT"] = json!("0999");
        doc["data"]["JSDWLXR"] = json!({"LXR": {"x": 1}, "LXDH": "138"});
        let err = apply(&m, Document::Json(&doc), "abc", &ctx()).unwrap_err();
        let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "project.building_use",
                "builder.credit_code",
                "contact.name",
                "building.floor_area_m2"
            ]
        );
        assert!(err.errors[1].reason.contains("check character"), "{err}");
        assert_eq!(err.errors[2].raw.as_deref(), Some("(personal data)"));
    }

    #[test]
    fn a_directory_overrides_the_embedded_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("approval")).unwrap();
        let text = include_str!("../../mappings/approval/project.toml")
            .replace("\"0900\" = \"其他\"", "\"0900\" = \"其他\"\n\"0999\" = \"试验\"");
        std::fs::write(dir.path().join("approval/project.toml"), &text).unwrap();
        let set = MappingSet::load(Some(dir.path())).unwrap();
        let m = set.get("approval.project").unwrap();
        let mut doc = project();
        doc["data"]["GCYT"] = json!("0999");
        assert!(apply(&m, Document::Json(&doc), "abc", &ctx()).is_ok());

        std::fs::write(
            dir.path().join("approval/project.toml"),
            text.replace("code:GCYT", "code:GCYTX"),
        )
        .unwrap();
        let err = MappingSet::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.starts_with("approval/project.toml:"), "{err}");
        assert!(err.contains("GCYTX"), "{err}");
    }
}
