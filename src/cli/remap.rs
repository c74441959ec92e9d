//! `gateway remap`: every stored record's current document mapped again with the mapping and
//! policy files in force, without fetching. The dry run shows what would change, field by
//! field and decision by decision, with examples (personal data masked); applied, the changed
//! records get new versions in batches, one transaction each, under a remap run that a kill
//! leaves resumable: run the same command again and it goes on after the last batch
//! committed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::Utc;
use serde_json::json;

use std::sync::Arc;

use crate::mapping::MappingSet;
use crate::policy::{PolicySet, Rules};
use crate::rebuild::Rebuilder;
use crate::remap::{Examined, Summary, examine};
use crate::store::lock::WriterLock;
use crate::store::{BatchCounts, RemapSelection, Remapped, Store};

/// Records read, examined and committed at once: a kill loses at most one batch's work,
/// which the resumed run does again.
pub const DEFAULT_BATCH: usize = 1000;

/// What `gateway remap` was asked.
#[derive(Debug, Clone)]
pub struct Request {
    pub selection: RemapSelection,
    pub dry_run: bool,
    pub by: String,
    pub batch: usize,
    pub json: bool,
}

/// The mapping and policy files in force, loaded (and checked) as the daemon loads them.
fn load_rules(mappings_dir: Option<&Path>) -> anyhow::Result<(MappingSet, PolicySet, Rebuilder)> {
    let mappings = MappingSet::load(mappings_dir).context("loading mapping files")?;
    let policies = PolicySet::load(mappings_dir).context("loading the policy")?;
    let calendar = crate::calendar::Calendar::load(mappings_dir).context("loading holiday calendars")?;
    let rules = Arc::new(Rules {
        policies: policies.clone(),
        calendar,
    });
    let rebuilder = Rebuilder::from_set(&mappings, rules)
        .with_context(|| format!("no mapping file defines {:?}", crate::app::PROJECT_MAPPING))?;
    Ok((mappings, policies, rebuilder))
}

/// Runs a remap (or its dry run) and returns what it found.
pub fn run(
    store: &Store,
    db: &Path,
    mappings_dir: Option<&Path>,
    request: &Request,
    mut progress: impl FnMut(&Summary),
) -> anyhow::Result<(Summary, Option<crate::store::RemapRun>, bool, serde_json::Value)> {
    if !request.dry_run && request.by.trim().is_empty() {
        bail!("--by must name who remaps (not needed for --dry-run)");
    }
    let (mappings, policies, rebuilder) = load_rules(mappings_dir)?;
    let rules = crate::remap::rules_json(&mappings, &policies);
    let now = Utc::now();
    let today = crate::worktime::date_of(now);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Two remaps at once would commit each other's batches twice over; the sync may run.
    let _lock = if request.dry_run {
        None
    } else {
        Some(WriterLock::acquire_job(
            db,
            "remap",
            &shuiwu_wire::format_beijing(now),
        )?)
    };
    let (mut run, resumed) = if request.dry_run {
        (None, false)
    } else {
        // The files the new versions' lineage names are kept, as a sync keeps its own.
        store.save_rules(&mappings, &policies, now)?;
        let (run, resumed) = store.begin_remap(&request.by, &request.selection, &rules, now)?;
        (Some(run), resumed)
    };
    let after = run.as_ref().and_then(|r| r.last_record_id.clone());
    let size = request.batch.max(1);
    let mut summary = Summary::default();
    let run_id = run.as_ref().map(|r| r.id);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        // Batches are committed in order on a thread of their own while the next ones are
        // read and examined; at most one waits for it.
        let (to_commit, batches) = std::sync::mpsc::sync_channel::<(Vec<Remapped>, String, BatchCounts)>(1);
        let committer = run_id.map(|id| {
            let rebuilder = &rebuilder;
            scope.spawn(move || -> anyhow::Result<()> {
                for (versions, last, read) in batches {
                    store
                        .commit_remap(id, versions, &last, read, rebuilder, Utc::now())
                        .with_context(|| format!("committing remap {id} after {last}"))?;
                }
                Ok(())
            })
        });
        let mut batch = store.remap_batch(&request.selection, after.as_deref(), size)?;
        while let Some(last) = batch.last().map(|r| r.id.clone()) {
            // The next batch is read while this one is examined: it holds only later records,
            // which this one's commit does not touch.
            let from = last.clone();
            let selection = &request.selection;
            let next = scope.spawn(move || store.remap_batch(selection, Some(&from), size));
            let found: Vec<Examined> =
                examine(&rebuilder, std::mem::take(&mut batch), today, Utc::now(), workers);
            for e in &found {
                summary.add(e, request.json);
            }
            if committer.is_some() {
                let read = BatchCounts {
                    examined: found.len() as i64,
                    changed: 0,
                    failed: found
                        .iter()
                        .filter(|e| matches!(e.finding, crate::remap::Finding::Failing(_)))
                        .count() as i64,
                };
                let versions = found.into_iter().filter_map(Examined::into_remapped).collect();
                if to_commit.send((versions, last, read)).is_err() {
                    // The committer stopped on an error, which its join below returns.
                    break;
                }
            }
            progress(&summary);
            batch = next
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        }
        drop(to_commit);
        match committer {
            Some(c) => c.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        }
    })?;
    if let Some(r) = &run {
        run = Some(store.finish_remap(r.id, Utc::now())?);
    }
    Ok((summary, run, resumed, rules))
}

/// `gateway remap`.
pub fn remap(
    store: &Store,
    db: &Path,
    mappings_dir: Option<&Path>,
    request: &Request,
) -> anyhow::Result<ExitCode> {
    let (summary, run, resumed, rules) = run(store, db, mappings_dir, request, |_| {})?;
    if request.json {
        let out = json!({
            "dry_run": request.dry_run,
            "remap": run,
            "resumed": resumed,
            "rules": rules,
            "summary": summary,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print(&summary, run.as_ref(), resumed, request.dry_run);
    Ok(ExitCode::SUCCESS)
}

/// Failing records listed in the text output.
const FAILING_SHOWN: usize = 10;

fn print(summary: &Summary, run: Option<&crate::store::RemapRun>, resumed: bool, dry_run: bool) {
    if let Some(r) = run
        && resumed
    {
        outln!("remap {} resumed (started {} by {})", r.id, r.started_at, r.by);
    }
    let verb = if dry_run { "would change" } else { "changed" };
    outln!(
        "{}{} records examined: {} {verb}, {} unchanged, {} no longer map (left as they are)",
        if dry_run { "dry run: " } else { "" },
        summary.examined,
        summary.changed,
        summary.unchanged,
        summary.failing
    );
    for kind in ["field", "decision", "derived"] {
        let fields: Vec<_> = summary.fields.iter().filter(|(_, f)| f.kind == kind).collect();
        if fields.is_empty() {
            continue;
        }
        outln!(
            "{}",
            match kind {
                "field" => "fields:",
                "decision" => "decisions:",
                _ => "derived (stages, due times):",
            }
        );
        for (name, f) in fields {
            outln!("  {name}: {} records", f.records);
            for x in &f.examples {
                outln!("    e.g. {} {}: {} → {}", x.record, x.field, x.before, x.after);
            }
        }
    }
    for f in summary.failures.iter().take(FAILING_SHOWN) {
        outln!("no longer maps: {}: {}", f.record, f.reason);
    }
    if summary.failures.len() > FAILING_SHOWN {
        outln!(
            "… and {} more (--json for all)",
            summary.failures.len() - FAILING_SHOWN
        );
    }
    if let Some(r) = run {
        outln!(
            "remap {}: {} new versions committed, audited as {}",
            r.id,
            r.changed,
            r.by
        );
    } else if summary.changed > 0 {
        outln!("nothing was changed; run without --dry-run (and with --by NAME) to commit");
    }
}
