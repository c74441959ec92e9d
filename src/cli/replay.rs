//! Replaying held failures with the mapping and policy files in force: one (`replay ID`) or many
//! at once (`--all`, `--category C`, `--step S`). Each item shows the difference between the
//! record as it stands and what the replay would commit, field by field and decision by
//! decision (personal data masked on both sides); applied, every item that now maps is committed
//! in one transaction, audited as one operator action that names every item.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;

use crate::rebuild::Rebuilder;
use crate::record::Draft;
use crate::record::diff::{Change, diff};
use crate::store::{FailureRow, SourceKey, Store};

/// Which held failures to replay.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub id: Option<i64>,
    pub all: bool,
    pub category: Option<String>,
    pub step: Option<String>,
}

impl Selection {
    fn takes(&self, f: &FailureRow) -> bool {
        self.id.is_none_or(|id| f.id == id)
            && self.category.as_ref().is_none_or(|c| &f.category == c)
            && self.step.as_ref().is_none_or(|s| &f.step == s)
    }
}

/// What replaying one failure would do (or did).
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub failure: i64,
    pub source: String,
    pub key: Option<String>,
    pub step: String,
    /// `create`, `update`, `unchanged`, `still_failing` or `not_replayable`.
    pub outcome: String,
    pub record: Option<String>,
    /// Why it still fails (the new reason), or why it cannot be replayed here.
    pub reason: Option<String>,
    pub changes: Vec<Change>,
}

/// A record's content as shown to people: personal data masked by its lineage.
fn masked(content: &str, lineage: &str) -> anyhow::Result<Value> {
    let mut value: Value = serde_json::from_str(content)?;
    let (lineage, _) = crate::mapping::lineage::from_json(lineage)?;
    crate::mask::record_json(&mut value, &lineage);
    Ok(value)
}

/// A held item version that now maps: its key, document and draft, ready to commit.
type Replayable = (SourceKey, String, Draft);

/// What replaying `f` would do, and the draft to commit when it now maps.
fn plan(store: &Store, rebuilder: &Rebuilder, f: &FailureRow) -> anyhow::Result<(Item, Option<Replayable>)> {
    let mut item = Item {
        failure: f.id,
        source: f.source.clone(),
        key: f.key.clone(),
        step: f.step.clone(),
        outcome: "not_replayable".into(),
        record: None,
        reason: None,
        changes: Vec::new(),
    };
    if !matches!(f.step.as_str(), "map" | "assemble" | "decide") {
        item.reason = Some(match f.step.as_str() {
            "detail" => "needs the platform again: gateway failures replay ID --refetch".into(),
            other => format!("a {other} failure is not replayed from its document"),
        });
        return Ok((item, None));
    }
    let (Some(key), Some(version), Some(sha)) = (&f.key, f.version, &f.document_sha256) else {
        item.reason = Some("names no item version and document".into());
        return Ok((item, None));
    };
    let source_key = SourceKey {
        source: f.source.clone(),
        key: key.clone(),
        version,
    };
    let draft = match super::events::draft_from_document(store, rebuilder, &source_key, sha) {
        Ok(d) => d,
        Err(e) => {
            item.outcome = "still_failing".into();
            item.reason = Some(e.to_string());
            return Ok((item, None));
        }
    };
    let existing = store.existing(&draft.id)?;
    let actions = store.actions(&draft.id)?;
    let candidate = match rebuilder.candidate(draft.clone(), existing.as_ref(), &actions, Utc::now()) {
        Ok(c) => c,
        Err(e) => {
            item.outcome = "still_failing".into();
            item.reason = Some(e.to_string());
            return Ok((item, None));
        }
    };
    item.record = Some(candidate.id.clone());
    let after = masked(&candidate.content_json, &candidate.lineage_json)?;
    let current = store.record_versions(&candidate.id)?;
    let before = match current.last() {
        Some(v) => masked(&v.content.to_string(), &v.lineage)?,
        None => Value::Null,
    };
    item.outcome = match current.last() {
        None => "create",
        Some(v) if v.content_sha256 == candidate.content_sha256 => "unchanged",
        Some(_) => "update",
    }
    .into();
    // A record not stored yet: every field it would have.
    item.changes = diff(&before, &after);
    Ok((item, Some((source_key, sha.clone(), draft))))
}

/// Replays the selected held failures (or, in a dry run, says what replaying them would do):
/// the items and a summary. What `gateway failures replay` and the admin API both do.
pub fn run(
    store: &Store,
    rebuilder: &Rebuilder,
    selection: &Selection,
    by: &str,
    dry_run: bool,
) -> anyhow::Result<(Vec<Item>, Value)> {
    if !dry_run && by.trim().is_empty() {
        bail!("--by must name who replays");
    }
    let held: Vec<FailureRow> = match selection.id {
        Some(id) => {
            let Some(f) = store.failure(id)? else {
                bail!("no failure {id} (see `gateway failures list`)");
            };
            if f.state != "held" {
                bail!("failure {id} is {}, not held", f.state);
            }
            vec![f]
        }
        None if !selection.all && selection.category.is_none() && selection.step.is_none() => {
            bail!("name a failure, or --all, --category or --step")
        }
        None => store
            .failures(Some("held"), usize::MAX >> 1)?
            .into_iter()
            .filter(|f| selection.takes(f))
            .collect(),
    };
    let mut items = Vec::with_capacity(held.len());
    let mut to_commit = Vec::new();
    for f in &held {
        let (item, draft) = plan(store, rebuilder, f)?;
        if let Some((key, sha, draft)) = draft {
            to_commit.push((f.id, key, sha, draft));
        }
        items.push(item);
    }
    if !dry_run && !to_commit.is_empty() {
        let applied = match (selection.id, to_commit.pop()) {
            // One failure: audited as the replay of that failure.
            (Some(id), Some((_, key, sha, draft))) if to_commit.is_empty() => {
                let a = store.resolve_failure(
                    id,
                    by,
                    "replayed with the rules in force",
                    Some((&key, &sha, draft, rebuilder)),
                    &[],
                    Utc::now(),
                )?;
                vec![(id, a.ok_or_else(|| "not replayed".to_string()))]
            }
            (_, last) => {
                to_commit.extend(last);
                store.replay_failures(to_commit, by, rebuilder, Utc::now())?
            }
        };
        for (id, outcome) in applied {
            if let Some(item) = items.iter_mut().find(|i| i.failure == id) {
                match outcome {
                    Ok(a) => item.outcome = a.as_str().to_string(),
                    Err(why) => {
                        item.outcome = "still_failing".into();
                        item.reason = Some(why);
                    }
                }
            }
        }
    }
    let count = |o: &[&str]| items.iter().filter(|i| o.contains(&i.outcome.as_str())).count();
    let summary = serde_json::json!({
        "selected": items.len(),
        "replayed": if dry_run { 0 } else { items.len() - count(&["still_failing", "not_replayable"]) },
        "would_change": count(&["create", "update"]),
        "unchanged": count(&["unchanged"]),
        "still_failing": count(&["still_failing"]),
        "not_replayable": count(&["not_replayable"]),
        "dry_run": dry_run,
    });
    Ok((items, summary))
}

/// `gateway failures replay ID | --all | --category C | --step S [--dry-run]`.
pub fn replay(
    store: &Store,
    dir: Option<&Path>,
    selection: &Selection,
    by: &str,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let rebuilder = super::events::rebuilder(dir)?;
    let (items, summary) = run(store, &rebuilder, selection, by, dry_run)?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"summary": summary, "items": items}))?
        );
    } else {
        print_items(&items, dry_run, &summary);
    }
    // One failure that does not replay is an error, as for any command on one item; a bulk
    // replay that left some held says so with exit 3 (done, not everything).
    let failing = items
        .iter()
        .find(|i| matches!(i.outcome.as_str(), "still_failing" | "not_replayable"));
    if let Some(f) = failing {
        if selection.id.is_some() {
            bail!(
                "failure {} {}: {}",
                f.failure,
                if f.outcome == "still_failing" {
                    "still does not map"
                } else {
                    "is not replayed from its document"
                },
                f.reason.as_deref().unwrap_or("-")
            );
        }
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_items(items: &[Item], dry_run: bool, summary: &Value) {
    const SHOWN: usize = 12;
    for i in items {
        let record = i.record.as_deref().unwrap_or("-");
        let what = match (dry_run, i.outcome.as_str()) {
            (_, "still_failing") => "still fails".to_string(),
            (_, "not_replayable") => "cannot be replayed here".to_string(),
            (true, "create") => format!("now maps; replaying it would create the record {record}"),
            (true, "update") => format!(
                "now maps; replaying it would make a new version of {record} ({} changes)",
                i.changes.len()
            ),
            (true, _) => format!("now maps; replaying it would leave {record} unchanged"),
            (false, applied) => format!("replayed: {applied} {record}"),
        };
        outln!("failure {} ({} {}): {what}", i.failure, i.source, i.step);
        if let Some(r) = &i.reason {
            outln!("  {r}");
        }
        for c in i.changes.iter().take(SHOWN) {
            outln!("  {}: {} → {}", c.field, c.before, c.after);
        }
        if i.changes.len() > SHOWN {
            outln!("  … and {} more (--json for all)", i.changes.len() - SHOWN);
        }
    }
    outln!(
        "{}{} selected: {} replayed, {} would change a record, {} unchanged, {} still failing, {} not replayable here",
        if dry_run { "dry run: " } else { "" },
        summary["selected"],
        summary["replayed"],
        summary["would_change"],
        summary["unchanged"],
        summary["still_failing"],
        summary["not_replayable"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_names_each_changed_leaf() {
        let before = serde_json::json!({"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": null});
        let after = serde_json::json!({"a": 1, "b": {"c": "y", "d": [1]}, "f": true});
        let fields: Vec<String> = diff(&before, &after).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["b.c", "b.d[1]", "f"]);
    }
}
