//! Mapping files: their TOML format, validated and compiled at load.
//!
//! Every error names the file and the line, because the people who edit mapping files are
//! not the people who read stack traces.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::transform::{Kind, Transform};
use super::value::PersonalKind;

/// A mapping file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    document: Spanned<DocumentSpec>,
    #[serde(default)]
    tables: BTreeMap<String, Spanned<BTreeMap<String, String>>>,
    #[serde(default, rename = "field")]
    fields: Vec<FieldSpec>,
    #[serde(default, rename = "list")]
    lists: Vec<ListSpec>,
    /// XML only: the prefixes this file's paths use, bound to namespace URIs. They need not
    /// match the document's own prefixes: elements are matched by URI and local name.
    #[serde(default)]
    namespaces: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentSpec {
    name: String,
    source: String,
    format: Spanned<String>,
    #[serde(default)]
    root: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldSpec {
    name: Spanned<String>,
    path: Spanned<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    transforms: Vec<Spanned<String>>,
    #[serde(default)]
    personal: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListSpec {
    name: Spanned<String>,
    path: Spanned<String>,
    #[serde(default, rename = "field")]
    fields: Vec<FieldSpec>,
}

/// A compiled field rule.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    /// JSON Pointer relative to the document root (or list item).
    pub path: String,
    /// `path`'s reference tokens, unescaped (JSON mappings), so that mapping a document does
    /// not parse the pointer again for every field of every document.
    pub tokens: Vec<String>,
    /// The document root's path followed by `path`: what a top-level fact's lineage names.
    /// Empty for a list's item fields, whose full path depends on the item's position.
    pub full_path: String,
    pub required: bool,
    /// `present`: the value is whether the path exists at all.
    pub presence: bool,
    pub transforms: Vec<Transform>,
    /// The chain's names as lineage records them (`present` for a presence field), shared by
    /// every fact the field maps.
    pub transform_names: Arc<[String]>,
    pub personal: Option<PersonalKind>,
}

/// A compiled list rule: the fields of each item of the array at `path`.
#[derive(Debug, Clone)]
pub struct List {
    pub name: String,
    pub path: String,
    /// As [`Field::tokens`] and [`Field::full_path`].
    pub tokens: Vec<String>,
    pub full_path: String,
    pub fields: Vec<Field>,
}

/// A compiled mapping file.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The file's name relative to the mappings directory, e.g. `approval/project.toml`.
    pub file: String,
    /// SHA-256 of the file's bytes: lineage names it, so a changed rule is visible.
    pub sha256: String,
    pub content: String,
    pub name: String,
    pub source: String,
    pub root: String,
    pub format: Format,
    /// XML: prefix → namespace URI, for the paths of this file.
    pub namespaces: BTreeMap<String, String>,
    pub fields: Vec<Field>,
    pub lists: Vec<List>,
}

/// What kind of document a mapping reads, and so how its paths are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Paths are JSON Pointers (RFC 6901).
    Json,
    /// Paths are `/prefix:local/…` steps from the document element, prefixes bound in the
    /// file's `[namespaces]`; an unprefixed step names an element in no namespace.
    Xml,
}

/// Parses, validates and compiles one mapping file.
pub fn compile(file: &str, content: &str) -> Result<Mapping, SpecError> {
    let err = |span: Option<std::ops::Range<usize>>, message: String| SpecError {
        file: file.to_string(),
        line: span.map_or(1, |s| crate::datafiles::line_of(content, s.start)),
        message,
    };
    let spec: FileSpec = toml::from_str(content).map_err(|e| err(e.span(), e.message().to_string()))?;

    let doc_span = spec.document.span();
    let document = spec.document.into_inner();
    let format = match document.format.get_ref().as_str() {
        "json" => Format::Json,
        "xml" => Format::Xml,
        other => {
            return Err(err(
                Some(document.format.span()),
                format!("format {other:?} is not supported (\"json\" or \"xml\")"),
            ));
        }
    };
    let namespaces = spec.namespaces.clone();
    let check_pointer = |p: &str| check_path(format, &namespaces, p);
    if document.name.trim().is_empty() || document.source.trim().is_empty() {
        return Err(err(
            Some(doc_span),
            "document.name and document.source must not be empty".into(),
        ));
    }
    let root = match &document.root {
        Some(r) => {
            check_pointer(r.get_ref()).map_err(|m| err(Some(r.span()), m))?;
            r.get_ref().clone()
        }
        None => String::new(),
    };

    let mut tables = BTreeMap::new();
    for (name, table) in spec.tables {
        if table.get_ref().is_empty() {
            return Err(err(Some(table.span()), format!("code table {name} is empty")));
        }
        tables.insert(name, Arc::new(table.into_inner()));
    }

    let mut names = BTreeSet::new();
    let mut fields = Vec::new();
    for f in spec.fields {
        let mut field = compile_field(f, &tables, &mut names, &err, &check_pointer)?;
        field.full_path = format!("{root}{}", field.path);
        fields.push(field);
    }
    let mut lists = Vec::new();
    for l in spec.lists {
        check_pointer(l.path.get_ref()).map_err(|m| err(Some(l.path.span()), m))?;
        if !names.insert(l.name.get_ref().clone()) {
            return Err(err(
                Some(l.name.span()),
                format!("name {:?} is used twice", l.name.get_ref()),
            ));
        }
        let mut item_names = BTreeSet::new();
        let mut item_fields = Vec::new();
        for f in l.fields {
            item_fields.push(compile_field(f, &tables, &mut item_names, &err, &check_pointer)?);
        }
        if item_fields.is_empty() {
            return Err(err(Some(l.name.span()), "a list needs at least one field".into()));
        }
        lists.push(List {
            name: l.name.into_inner(),
            tokens: pointer_tokens(l.path.get_ref()),
            full_path: format!("{root}{}", l.path.get_ref()),
            path: l.path.into_inner(),
            fields: item_fields,
        });
    }
    if fields.is_empty() && lists.is_empty() {
        return Err(err(Some(doc_span), "the file maps no field".into()));
    }

    Ok(Mapping {
        file: file.to_string(),
        sha256: hex::encode(Sha256::digest(content.as_bytes())),
        content: content.to_string(),
        name: document.name,
        source: document.source,
        root,
        format,
        namespaces,
        fields,
        lists,
    })
}

fn compile_field(
    f: FieldSpec,
    tables: &BTreeMap<String, Arc<BTreeMap<String, String>>>,
    names: &mut BTreeSet<String>,
    err: &impl Fn(Option<std::ops::Range<usize>>, String) -> SpecError,
    check_pointer: &impl Fn(&str) -> Result<(), String>,
) -> Result<Field, SpecError> {
    let name = f.name.get_ref().clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(err(
            Some(f.name.span()),
            format!("field name {name:?} must be letters, digits, '_' and '.'"),
        ));
    }
    if !names.insert(name.clone()) {
        return Err(err(Some(f.name.span()), format!("name {name:?} is used twice")));
    }
    check_pointer(f.path.get_ref()).map_err(|m| err(Some(f.path.span()), m))?;
    let personal = match &f.personal {
        None => None,
        Some(p) => Some(match p.get_ref().as_str() {
            "name" => PersonalKind::Name,
            "phone" => PersonalKind::Phone,
            "id_number" => PersonalKind::IdNumber,
            other => {
                return Err(err(
                    Some(p.span()),
                    format!("personal {other:?} is not one of name, phone, id_number"),
                ));
            }
        }),
    };
    let presence = f.transforms.first().is_some_and(|t| t.get_ref() == "present");
    if presence {
        if f.transforms.len() != 1 {
            return Err(err(
                Some(f.transforms[0].span()),
                "\"present\" stands alone: it maps whether the path exists".into(),
            ));
        }
        return Ok(Field {
            name,
            tokens: pointer_tokens(f.path.get_ref()),
            full_path: String::new(),
            path: f.path.into_inner(),
            required: f.required,
            presence,
            transforms: vec![],
            transform_names: Arc::from(["present".to_string()]),
            personal,
        });
    }
    let mut kind = Kind::Text;
    let mut transforms = Vec::new();
    for t in &f.transforms {
        let transform = Transform::parse(t.get_ref(), tables).map_err(|m| err(Some(t.span()), m))?;
        let (input, output) = transform.signature();
        if input != kind {
            return Err(err(
                Some(t.span()),
                format!(
                    "transform {:?} takes {input:?} but the chain gives {kind:?} here",
                    t.get_ref()
                ),
            ));
        }
        kind = output;
        transforms.push(transform);
    }
    Ok(Field {
        name,
        tokens: pointer_tokens(f.path.get_ref()),
        full_path: String::new(),
        path: f.path.into_inner(),
        required: f.required,
        presence,
        transform_names: transforms.iter().map(Transform::name).collect(),
        transforms,
        personal,
    })
}

/// The reference tokens of a JSON Pointer (RFC 6901), unescaped; the pointer was checked.
pub(crate) fn pointer_tokens(p: &str) -> Vec<String> {
    p.split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// A JSON Pointer (RFC 6901): empty, or `/`-separated tokens where `~` is only `~0` or `~1`.
/// Checks a path of the mapping's format.
fn check_path(format: Format, namespaces: &BTreeMap<String, String>, p: &str) -> Result<(), String> {
    match format {
        Format::Json => check_pointer(p),
        Format::Xml => {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(format!("path {p:?} must start with '/'"));
            }
            for step in p.split('/').skip(1) {
                let (prefix, local) = step.split_once(':').map_or((None, step), |(a, b)| (Some(a), b));
                if local.is_empty() || local.contains(['[', ']', '@', '*']) {
                    return Err(format!("path {p:?}: step {step:?} must be prefix:name or name"));
                }
                if let Some(prefix) = prefix
                    && !namespaces.contains_key(prefix)
                {
                    return Err(format!(
                        "path {p:?}: prefix {prefix:?} is not declared in [namespaces]"
                    ));
                }
            }
            Ok(())
        }
    }
}

fn check_pointer(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!(
            "path {p:?} is not a JSON Pointer (it must start with '/')"
        ));
    }
    let bad_tilde = p
        .match_indices('~')
        .any(|(i, _)| !matches!(p.as_bytes().get(i + 1), Some(b'0' | b'1')));
    if bad_tilde {
        return Err(format!(
            "path {p:?}: '~' must be written ~0 and '/' inside a name ~1"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[document]
name = "t"
source = "approval"
format = "json"
root = "/data"

[tables.T]
"1" = "one"

[[field]]
name = "a.b"
path = "/X"
transforms = ["trim", "code:T"]
"#;

    #[test]
    fn compiles_a_good_file() {
        let m = compile("t.toml", GOOD).unwrap();
        assert_eq!(m.fields.len(), 1);
        assert_eq!(m.root, "/data");
        assert_eq!(m.sha256.len(), 64);
    }

    fn error_of(text: &str) -> SpecError {
        compile("dir/bad.toml", text).unwrap_err()
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = error_of(&GOOD.replace("\"code:T\"", "\"code:NOPE\""));
        assert_eq!((e.file.as_str(), e.line), ("dir/bad.toml", 14), "{e}");
        assert!(e.message.contains("NOPE"));

        let e = error_of(&GOOD.replace("\"trim\", \"code:T\"", "\"decimal\", \"trim\""));
        assert_eq!(e.line, 14, "{e}");
        assert!(e.message.contains("takes Text"), "{e}");

        let e = error_of(&GOOD.replace("path = \"/X\"", "path = \"X\""));
        assert_eq!(e.line, 13, "{e}");

        let e = error_of(&GOOD.replace("transforms", "transfroms"));
        assert_eq!(e.line, 14, "{e}");

        let e = error_of(&format!("{GOOD}\n[[field]]\nname = \"a.b\"\npath = \"/Y\"\n"));
        assert_eq!(e.line, 17, "{e}");
        assert!(e.message.contains("twice"));

        let e = error_of(&GOOD.replace("format = \"json\"", "format = \"yaml\""));
        assert_eq!(e.line, 5);

        let e = error_of("[document\n");
        assert_eq!(e.line, 1);
        assert!(e.to_string().starts_with("dir/bad.toml:1: "));
    }
}
