//! Remapping stored records: each record's current raw document mapped again and the record
//! decided again with the mapping and policy files in force, without fetching anything. What
//! would change is found here, outside any transaction and on every core; the store commits
//! it (`store/remap.rs`), rebuilding in its transaction any record that changed meanwhile.
//!
//! A record is changed only when its content is: a new mapping file that maps every value as
//! before gives no new version, as a new upstream version that changes nothing gives none.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::mapping::MappingSet;
use crate::policy::{ManagerDecision, PolicySet};

use crate::rebuild::Rebuilder;
use crate::record::diff::{self, Change};
use crate::record::{Assembled, Candidate};
use crate::store::{RemapInput, Remapped};

/// The mapping and policy files in force, by file, with their hashes: stored with a remap
/// run (a stopped run resumes only with the same files) and printed with its result.
pub fn rules_json(mappings: &MappingSet, policies: &PolicySet) -> Value {
    json!({
        "mappings": mappings.all().map(|m| json!({"file": m.file, "sha256": m.sha256})).collect::<Vec<_>>(),
        "policies": policies.versions().iter().map(|p| json!({"file": p.file, "version": p.version, "sha256": p.sha256})).collect::<Vec<_>>(),
    })
}

/// What a remap finds for one record.
pub enum Finding {
    Unchanged,
    /// A new version, with what differs from the stored one (personal values masked).
    Changed {
        candidate: Box<Candidate>,
        changes: Vec<Change>,
    },
    /// The stored document no longer gives this record: the record is left as it is.
    Failing(String),
}

/// One record examined.
pub struct Examined {
    pub id: String,
    pub read_version: i64,
    pub read_last_action: i64,
    pub finding: Finding,
}

impl Examined {
    /// The version to commit, when there is one.
    pub fn into_remapped(self) -> Option<Remapped> {
        match self.finding {
            Finding::Changed { candidate, .. } => Some(Remapped {
                id: self.id,
                read_version: self.read_version,
                read_last_action: self.read_last_action,
                candidate: *candidate,
            }),
            Finding::Unchanged | Finding::Failing(_) => None,
        }
    }
}

/// Examines a batch of records, split over `workers` threads; the findings come back in the
/// batch's order. `today` is the mapping's day, `now` decides what a rebuild decides now.
pub fn examine(
    rebuilder: &Rebuilder,
    batch: Vec<RemapInput>,
    today: NaiveDate,
    now: DateTime<Utc>,
    workers: usize,
) -> Vec<Examined> {
    let workers = workers.clamp(1, batch.len().max(1));
    if workers == 1 {
        return batch
            .into_iter()
            .map(|r| examine_one(rebuilder, r, today, now))
            .collect();
    }
    let chunk = batch.len().div_ceil(workers);
    let mut chunks: Vec<Vec<RemapInput>> = Vec::with_capacity(workers);
    let mut rest = batch.into_iter();
    loop {
        let part: Vec<RemapInput> = rest.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        chunks.push(part);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|part| {
                scope.spawn(move || {
                    part.into_iter()
                        .map(|r| examine_one(rebuilder, r, today, now))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(found) => found,
                // A panic in a worker is a bug; it is carried on to the caller's thread as
                // it would have been without the workers.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// The customer manager a stored record's content names, read without building the rest.
fn manager_of(content: &str) -> Option<ManagerDecision> {
    #[derive(serde::Deserialize)]
    struct Content {
        decisions: Option<Decisions>,
    }
    #[derive(serde::Deserialize)]
    struct Decisions {
        customer_manager: Option<ManagerDecision>,
    }
    serde_json::from_str::<Content>(content)
        .ok()?
        .decisions?
        .customer_manager
}

fn examine_one(rebuilder: &Rebuilder, mut r: RemapInput, today: NaiveDate, now: DateTime<Utc>) -> Examined {
    let read_last_action = r.last_action();
    r.existing.manager = manager_of(&r.content);
    let finding = find(rebuilder, &r, today, now);
    Examined {
        id: r.id,
        read_version: r.version,
        read_last_action,
        finding,
    }
}

fn find(rebuilder: &Rebuilder, r: &RemapInput, today: NaiveDate, now: DateTime<Utc>) -> Finding {
    let s = &r.source;
    let draft =
        match rebuilder.assemble_stored(&s.source, &s.key, s.version, &r.bytes, &r.document_sha256, today) {
            Ok(Assembled::Record(d)) => *d,
            Ok(Assembled::Skip(why)) => {
                return Finding::Failing(format!("its document is now skipped: {why}"));
            }
            Err(e) => return Finding::Failing(format!("its document no longer maps: {e}")),
        };
    if draft.id != r.id {
        return Finding::Failing(format!("its document now gives record {}", draft.id));
    }
    let decided = match rebuilder.decided(draft, Some(&r.existing), &r.actions, now) {
        Ok(c) => c,
        Err(e) => return Finding::Failing(e.to_string()),
    };
    if decided.content_sha256 == r.content_sha256 {
        return Finding::Unchanged;
    }
    let candidate = decided.seal();
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let mut changes = diff::diff(&parse(&r.content), &parse(&candidate.content_json));
    diff::mask(&mut changes, &candidate.lineage);
    // A personal field the new mapping no longer gives is masked by the lineage it had.
    if changes
        .iter()
        .any(|c| is_fact(&c.field) && diff::lineage_of(&c.field, &candidate.lineage).is_none())
        && let Ok((old, _)) = crate::mapping::lineage::from_json(&r.lineage)
    {
        diff::mask(&mut changes, &old);
    }
    Finding::Changed {
        candidate: Box::new(candidate),
        changes,
    }
}

/// Whether a record field comes from a document (the rest is decided or recorded here).
fn is_fact(field: &str) -> bool {
    !["decisions", "progress", "survey", "source"].iter().any(|p| {
        field
            .strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

/// What kind of part of a record a field is: a fact mapped from a document, a decision of the
/// policy, or derived from both (progress, due times).
fn kind_of(field: &str) -> &'static str {
    if field.starts_with("decisions") {
        "decision"
    } else if is_fact(field) {
        "field"
    } else {
        "derived"
    }
}

/// One example of a change, as shown in a remap's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub record: String,
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// How many records a field (list indexes taken out) changes in, with a few examples.
#[derive(Debug, Clone, Serialize)]
pub struct FieldSummary {
    pub kind: &'static str,
    pub records: u64,
    pub examples: Vec<Example>,
}

/// One record a remap changes (or would change).
#[derive(Debug, Clone, Serialize)]
pub struct RecordChanges {
    pub record: String,
    pub version: i64,
    pub changes: Vec<Change>,
}

/// A record the remap leaves as it is because its document no longer gives it.
#[derive(Debug, Clone, Serialize)]
pub struct Failing {
    pub record: String,
    pub reason: String,
}

/// What a remap found (dry run) or did, over every batch.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub examined: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub failing: u64,
    /// By field, in path order.
    pub fields: BTreeMap<String, FieldSummary>,
    /// Every failing record (the text output shows the first few).
    pub failures: Vec<Failing>,
    /// Every changed record with its changes, kept when asked for (`--json`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RecordChanges>,
}

/// Examples kept per field.
const EXAMPLES: usize = 3;

impl Summary {
    /// Counts one examined record; `keep` keeps its changes whole.
    pub fn add(&mut self, e: &Examined, keep: bool) {
        self.examined += 1;
        match &e.finding {
            Finding::Unchanged => self.unchanged += 1,
            Finding::Failing(reason) => {
                self.failing += 1;
                self.failures.push(Failing {
                    record: e.id.clone(),
                    reason: reason.clone(),
                });
            }
            Finding::Changed { changes, .. } => {
                self.changed += 1;
                let mut seen: Vec<String> = Vec::new();
                for c in changes {
                    let general = diff::general(&c.field);
                    let entry = self
                        .fields
                        .entry(general.clone())
                        .or_insert_with(|| FieldSummary {
                            kind: kind_of(&c.field),
                            records: 0,
                            examples: Vec::new(),
                        });
                    if !seen.contains(&general) {
                        entry.records += 1;
                        seen.push(general);
                    }
                    if entry.examples.len() < EXAMPLES && entry.examples.iter().all(|x| x.record != e.id) {
                        entry.examples.push(Example {
                            record: e.id.clone(),
                            field: c.field.clone(),
                            before: c.before.clone(),
                            after: c.after.clone(),
                        });
                    }
                }
                if keep {
                    self.records.push(RecordChanges {
                        record: e.id.clone(),
                        version: e.read_version,
                        changes: changes.clone(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_told_from_decisions_and_derived_parts() {
        assert_eq!(kind_of("water.diameter_dn"), "field");
        assert_eq!(kind_of("approvals[0].title"), "field");
        assert_eq!(kind_of("decisions.category.id"), "decision");
        assert_eq!(kind_of("progress.stages[0].due"), "derived");
        assert_eq!(kind_of("sourced.x"), "field");
    }
}
