//! Masking of personal data (PIPL): contact names, phone numbers, identity numbers.
//!
//! Every command output and export goes through here; the store keeps the values because the
//! connection needs them. The formats are those of `contracts/ids.md`: `张*`, `138****0000`,
//! `5301**********1234`.

use std::collections::BTreeMap;

use crate::mapping::{Lineage, MappingSet, PersonalKind};

/// `张三` → `张*`, `欧阳娜娜` → `欧***`: the first character and one star for each other.
pub fn name(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

/// `13800000000` → `138****0000`; anything shorter than 8 characters is masked whole.
pub fn phone(text: &str) -> String {
    keep_ends(text, 3, 4)
}

/// `530102199001011234` → `5301**********1234`; anything shorter than 9 is masked whole.
pub fn id_number(text: &str) -> String {
    keep_ends(text, 4, 4)
}

/// Keeps `head` and `tail` characters and stars the rest; text too short to hide anything
/// between them is starred whole.
fn keep_ends(text: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    if n <= head + tail {
        return "*".repeat(n);
    }
    chars[..head]
        .iter()
        .chain(std::iter::repeat_n(&'*', n - head - tail))
        .chain(&chars[n - tail..])
        .collect()
}

pub fn mask(kind: PersonalKind, text: &str) -> String {
    match kind {
        PersonalKind::Name => name(text),
        PersonalKind::Phone => phone(text),
        PersonalKind::IdNumber => id_number(text),
    }
}

/// Masks, in a record's JSON, every field whose lineage marks it personal. Field names are
/// dotted paths into the JSON (`contact.phone`, `items[0].name`).
pub fn record_json(content: &mut serde_json::Value, lineage: &BTreeMap<String, Lineage>) {
    for (field, l) in lineage {
        let Some(kind) = l.personal else { continue };
        if let Some(slot) = slot(content, field)
            && let Some(text) = slot.as_str()
        {
            *slot = serde_json::Value::from(mask(kind, text));
        }
    }
}

/// Masks, in a raw JSON document, every value that some mapping marks personal, wherever the
/// mapping's paths find it (list items included). Used where a raw document is shown. A
/// mapping of the power side's application resource is applied wherever the document holds
/// one: the whole answer, a webhook event's `application`, each item of a listing page.
pub fn raw_document(document: &mut serde_json::Value, mappings: &MappingSet) {
    for m in mappings.all() {
        let mut roots = vec![m.root.clone()];
        if m.source == "power" && m.root.is_empty() {
            roots.push("/application".into());
            let items = document["items"].as_array().map_or(0, Vec::len);
            roots.extend((0..items).map(|i| format!("/items/{i}")));
        }
        for root in &roots {
            mask_under(document, m, root);
        }
    }
}

fn mask_under(document: &mut serde_json::Value, m: &crate::mapping::Mapping, root: &str) {
    for f in m.fields.iter().filter(|f| f.personal.is_some()) {
        let pointer = format!("{root}{}", f.path);
        mask_at(document, &pointer, f.personal);
    }
    for list in &m.lists {
        let Some(items) = document
            .pointer(&format!("{root}{}", list.path))
            .and_then(|v| v.as_array())
        else {
            continue;
        };
        let n = items.len();
        for f in list.fields.iter().filter(|f| f.personal.is_some()) {
            for i in 0..n {
                let pointer = format!("{root}{}/{i}{}", list.path, f.path);
                mask_at(document, &pointer, f.personal);
            }
        }
    }
}

fn mask_at(document: &mut serde_json::Value, pointer: &str, kind: Option<PersonalKind>) {
    if let (Some(kind), Some(slot)) = (kind, document.pointer_mut(pointer)) {
        let text = match &*slot {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => return,
            other => other.to_string(),
        };
        *slot = serde_json::Value::from(mask(kind, &text));
    }
}

/// The steps of a dotted field path: `items[0].name` → (`items`, 0), (`name`, none).
fn steps(field: &str) -> impl Iterator<Item = (&str, Option<usize>)> {
    field.split('.').map(|part| match part.split_once('[') {
        Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
        None => (part, None),
    })
}

/// The JSON value at a dotted field path, to change it.
pub fn slot<'a>(content: &'a mut serde_json::Value, field: &str) -> Option<&'a mut serde_json::Value> {
    let mut at = content;
    for (key, index) in steps(field) {
        at = at.get_mut(key)?;
        if let Some(i) = index {
            at = at.get_mut(i)?;
        }
    }
    Some(at)
}

/// The JSON value at a dotted field path, to read it.
pub fn value_at<'a>(content: &'a serde_json::Value, field: &str) -> Option<&'a serde_json::Value> {
    let mut at = content;
    for (key, index) in steps(field) {
        at = at.get(key)?;
        if let Some(i) = index {
            at = at.get(i)?;
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_of_the_contract() {
        assert_eq!(name("张三"), "张*");
        assert_eq!(name("欧阳娜娜"), "欧***");
        assert_eq!(phone("13800000000"), "138****0000");
        assert_eq!(id_number("530102199001011234"), "5301**********1234");
        assert_eq!(phone("110"), "***");
        assert_eq!(phone("1234567"), "*******");
        assert_eq!(id_number("12345678"), "********");
    }

    #[test]
    fn every_application_of_a_power_side_document_is_masked() {
        let mappings = MappingSet::load(None).unwrap();
        let app = |id: &str| {
            serde_json::json!({"applicationId": id, "applicant": {"kind": "PERSON", "name": "李四",
                "creditCode": "110105194912310021", "contactPhone": "13800000000"}})
        };
        let mut page = serde_json::json!({"items": [app("A"), app("B")], "nextCursor": null});
        raw_document(&mut page, &mappings);
        let mut event = serde_json::json!({"eventId": "evt_1", "application": app("C")});
        raw_document(&mut event, &mappings);
        let text = format!("{page}{event}");
        for secret in ["李四", "110105194912310021", "13800000000"] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert!(text.contains("1101**********0021"), "{text}");
    }
}
