//! Which mapped paths found anything in a pass: a path that matched nothing in every project
//! document of a pass is almost always a mistake in the mapping file (`/JZMJ_NOPE` turns every
//! record provisional without a single failure), so it is reported once, with file and line.

use std::collections::BTreeMap;

use crate::mapping::{Lineage, Mapping};

/// Fewer documents than this say nothing about a path: a small pass may simply have no project
/// at the stage where a field appears.
const MIN_DOCUMENTS: u64 = 20;

/// Per field: its path and whether any document of the pass had a value there.
#[derive(Debug, Default)]
pub(super) struct Coverage {
    documents: u64,
    fields: BTreeMap<String, (String, bool)>,
}

impl Coverage {
    /// Counts one mapped document by its fields' lineage.
    pub(super) fn observe(&mut self, lineage: &BTreeMap<String, Lineage>) {
        self.documents += 1;
        for (name, l) in lineage {
            // List items (`approvals[0].…`) exist only when the list has items.
            if name.contains('[') {
                continue;
            }
            // Looked up before inserting: the name is copied once per pass, not per document.
            match self.fields.get_mut(name) {
                Some(entry) => entry.1 |= l.raw.is_some(),
                None => {
                    self.fields
                        .insert(name.clone(), (l.path.clone(), l.raw.is_some()));
                }
            }
        }
    }

    /// One warning per field whose path matched nothing in a pass of enough documents.
    pub(super) fn warnings(&self, mapping: &Mapping) -> Vec<String> {
        if self.documents < MIN_DOCUMENTS {
            return Vec::new();
        }
        self.fields
            .iter()
            .filter(|(_, (_, found))| !found)
            .map(|(name, (path, _))| {
                let relative = path.strip_prefix(mapping.root.as_str()).unwrap_or(path);
                let line = mapping
                    .content
                    .lines()
                    .position(|l| l.contains(&format!("\"{relative}\"")))
                    .map_or(1, |i| i + 1);
                format!(
                    "{}:{line}: the path {relative} of {name} matched nothing in any of the {} project documents of this pass; check the mapping",
                    mapping.file, self.documents
                )
            })
            .collect()
    }
}
