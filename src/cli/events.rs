//! `gateway record event|reassign` and `gateway deadlines`: operator actions and the watch.

use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use rust_decimal::Decimal;
use shuiwu_wire::{format_human, human_from_stored, parse_time};

use super::table;
use crate::app::PROJECT_MAPPING;
use crate::deadlines::{self, DeadlineState};
use crate::mapping::MappingSet;
use crate::policy::Rules;
use crate::rebuild::Rebuilder;
use crate::record::{Assembled, Draft};
use crate::stages::{self, Action, PauseReason};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventKind {
    Accepted,
    SurveyDone,
    Connected,
    Paused,
    Resumed,
    Rejected,
    Withdrawn,
    /// The applicant commits to deliver missing items before connection (容缺受理).
    Commitment,
}

#[derive(Debug, Subcommand)]
pub enum RecordCommand {
    /// Record a stage event (an audited operator action) and re-evaluate the record.
    Event {
        id: String,
        kind: EventKind,
        /// Who did it (kept with the action).
        #[arg(long)]
        by: String,
        /// When, Beijing time "yyyy-MM-dd HH:mm:ss"; default now.
        #[arg(long)]
        at: Option<String>,
        /// survey-done: the measured external pipe length in metres.
        #[arg(long)]
        pipe_length: Option<String>,
        /// paused: why the clock stops.
        #[arg(long, value_enum)]
        pause_reason: Option<PauseReason>,
        /// rejected, withdrawn: why.
        #[arg(long)]
        reason: Option<String>,
        /// commitment: the items committed, comma-separated (e.g. site_plan,plumbing_design).
        #[arg(long)]
        items: Option<String>,
        /// Let accepted or connected through although materials are owed; the reason is kept.
        #[arg(long)]
        override_reason: Option<String>,
    },
    /// Give the record another customer manager (an audited operator action).
    Reassign {
        id: String,
        #[arg(long)]
        manager: String,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
}

fn action_of(
    kind: EventKind,
    pipe: Option<String>,
    pause: Option<PauseReason>,
    reason: Option<String>,
    items: Option<String>,
) -> anyhow::Result<Action> {
    let need_reason = |what: &str| {
        reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .with_context(|| format!("{what} needs --reason"))
    };
    Ok(match kind {
        EventKind::Accepted => Action::Accepted,
        EventKind::SurveyDone => {
            let text = pipe.context("survey-done needs --pipe-length (metres, measured on site)")?;
            let m = Decimal::from_str(text.trim())
                .with_context(|| format!("{text:?} is not a length in metres"))?;
            Action::SurveyDone { external_pipe_m: m }
        }
        EventKind::Connected => Action::Connected,
        EventKind::Paused => Action::Paused {
            reason: pause.context("paused needs --pause-reason")?,
        },
        EventKind::Resumed => Action::Resumed,
        EventKind::Rejected => Action::Rejected {
            reason: need_reason("rejected")?,
        },
        EventKind::Withdrawn => Action::Withdrawn {
            reason: need_reason("withdrawn")?,
        },
        EventKind::Commitment => {
            let items: Vec<String> = items
                .context("commitment needs --items")?
                .split(',')
                .map(|i| i.trim().to_string())
                .filter(|i| !i.is_empty())
                .collect();
            let known = crate::materials::ITEMS;
            if let Some(bad) = items.iter().find(|i| !known.contains(&i.as_str())) {
                bail!("unknown item {bad:?} (known: {})", known.join(", "));
            }
            if items.is_empty() {
                bail!("commitment needs at least one item");
            }
            Action::Commitment { items }
        }
    })
}

/// The mapping and rules in force, as the operator commands apply them.
pub(super) fn rebuilder(dir: Option<&Path>) -> anyhow::Result<Rebuilder> {
    let mappings = MappingSet::load(dir)?;
    let rules = Rules::load(dir).map_err(anyhow::Error::msg)?;
    Rebuilder::from_set(&mappings, std::sync::Arc::new(rules))
        .with_context(|| format!("no mapping file defines {PROJECT_MAPPING:?}"))
}

/// Maps a stored document (of `key`: a project, or one power-side application) afresh, with
/// the mapping files in force now.
pub(super) fn draft_from_document(
    store: &Store,
    rebuilder: &Rebuilder,
    key: &crate::store::SourceKey,
    sha: &str,
) -> anyhow::Result<Draft> {
    let (bytes, _) = store
        .document(sha)?
        .with_context(|| format!("the raw document {sha} is missing"))?;
    let today = shuiwu_wire::beijing_today();
    match rebuilder.assemble_stored(&key.source, &key.key, key.version, &bytes, sha, today) {
        Ok(Assembled::Record(draft)) => Ok(*draft),
        Ok(Assembled::Skip(reason)) => bail!("the document is now skipped: {reason}"),
        Err(e) => bail!("the document still does not map: {e}"),
    }
}

/// `gateway failures dismiss ID`: out of the queue with a reason (audited).
pub fn dismiss(store: &Store, id: i64, by: &str, reason: &str) -> anyhow::Result<ExitCode> {
    if reason.trim().is_empty() || by.trim().is_empty() {
        bail!("dismissing needs --by and --reason");
    }
    store.resolve_failure(id, by, reason, None, &[], Utc::now())?;
    outln!("failure {id} dismissed by {by}: {reason}");
    Ok(ExitCode::SUCCESS)
}

pub fn record(store: &Store, dir: Option<&Path>, command: RecordCommand) -> anyhow::Result<ExitCode> {
    let now = Utc::now();
    let (id, action, at, by, override_reason) = match command {
        RecordCommand::Event {
            id,
            kind,
            by,
            at,
            pipe_length,
            pause_reason,
            reason,
            items,
            override_reason,
        } => {
            let at = match at {
                Some(t) => parse_time(&t).with_context(|| {
                    format!("--at {t:?} is neither RFC 3339 nor yyyy-MM-dd HH:mm:ss (Beijing time)")
                })?,
                None => now,
            };
            (
                id,
                action_of(kind, pipe_length, pause_reason, reason, items)?,
                at,
                by,
                override_reason,
            )
        }
        RecordCommand::Reassign {
            id,
            manager,
            by,
            reason,
        } => (id, Action::ManagerReassigned { manager, reason }, now, by, None),
    };
    if by.trim().is_empty() {
        bail!("--by must name who acts");
    }
    let rebuilder = rebuilder(dir)?;
    // The action is judged and the record rebuilt inside one transaction, against the record
    // as it is at that moment (a sync may be committing a new version of it right now).
    let (action_id, version) = store.record_stage_event(
        &id,
        crate::store::NewAction {
            action: &action,
            at,
            by: &by,
            override_reason: override_reason.as_deref(),
        },
        now,
        &rebuilder,
    )?;
    outln!(
        "recorded action {action_id}: {} by {by} at {} on {id}; the record is at version {version}",
        action.name(),
        format_human(at)
    );
    let versions = store.record_versions(&id)?;
    if let Some(v) = versions.last() {
        let d = &v.content["decisions"];
        outln!(
            "category {}; stages {}",
            d["category"]["id"]
                .as_str()
                .or(d["category"]["state"].as_str())
                .unwrap_or("?"),
            v.content["progress"]["stages"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration like `90m`, `36h` or `2d`.
fn duration(text: &str) -> anyhow::Result<chrono::Duration> {
    let t = text.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = n
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 90m, 36h or 2d"))?;
    Ok(match unit {
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => bail!("{text:?} is not a duration like 90m, 36h or 2d"),
    })
}

pub fn deadlines(
    store: &Store,
    dir: Option<&Path>,
    state: Option<&str>,
    due_within: Option<&str>,
    json: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<ExitCode> {
    let rules = Rules::load(dir).map_err(anyhow::Error::msg)?;
    let within = due_within.map(duration).transpose()?;
    let rows: Vec<_> = deadlines::current(store, &rules, now)?
        .into_iter()
        .filter(|d| match state {
            Some("warning") => d.state == DeadlineState::Warning,
            Some("overdue") => d.state == DeadlineState::Overdue,
            _ => true,
        })
        .filter(|d| {
            within.is_none_or(|w| {
                d.due_at
                    .as_deref()
                    .and_then(parse_time)
                    .is_some_and(|due| due <= now + w)
            })
        })
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    table::print(
        &[
            "record",
            "stage",
            "days",
            "due (Beijing)",
            "left (working h)",
            "state",
            "manager",
            "alert raised",
        ],
        &rows
            .iter()
            .map(|d| {
                vec![
                    d.record_id.clone(),
                    d.stage.clone(),
                    d.working_days.map_or("-".into(), |n| n.to_string()),
                    d.due_at
                        .clone()
                        .unwrap_or_else(|| d.note.clone().unwrap_or_default()),
                    d.working_secs_left
                        .map_or("-".into(), |s| format!("{:.1}", s as f64 / 3600.0)),
                    format!("{:?}", d.state).to_lowercase(),
                    d.customer_manager.clone().unwrap_or_default(),
                    d.alert_raised_at
                        .as_deref()
                        .map_or(String::new(), human_from_stored),
                ]
            })
            .collect::<Vec<_>>(),
    );
    outln!("{} running stages shown", rows.len());
    Ok(ExitCode::SUCCESS)
}

/// `gateway notice ID`: the record's one-time notice, and what is owed now.
pub fn notice(store: &Store, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let notice = store.notice(id)?;
    let latest = store.latest_materials(id)?;
    // Nothing to tell yet is not an answer a script may take for "nothing missing".
    let checked = if latest.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    let committed = stages::committed(&store.actions(id)?);
    let missing: Vec<crate::materials::CheckItem> = latest
        .as_ref()
        .map(|(_, _, c)| c.missing().cloned().collect())
        .unwrap_or_default();
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "id": id,
                "notice": notice.as_ref().map(|(at, text)| serde_json::json!({"issued_at": at, "text": text})),
                "checklist": latest.as_ref().map(|(v, at, c)| serde_json::json!({"record_version": v, "checked_at": at, "checklist": c})),
                "missing_now": missing,
                "licence_lineage": store
                    .latest_materials_lineage(id)?
                    .and_then(|l| crate::mapping::lineage::from_json(&l).ok())
                    .map(|(fields, _)| fields),
                "committed": committed,
            }))?
        );
        return Ok(checked);
    }
    match (&notice, &latest) {
        (Some((at, text)), _) => {
            outln!("{text}");
            outln!("(issued {})", human_from_stored(at));
        }
        (None, Some((_, at, c))) if c.zero_materials => {
            outln!(
                "{id}: every required item was fetched (zero materials, checked {at}); no notice was needed"
            );
        }
        (None, Some(_)) => outln!("{id}: no notice issued"),
        (None, None) => {
            outln!("{id}: materials not checked yet (configure [licences] and run a sync)");
            return Ok(checked);
        }
    }
    if !missing.is_empty() {
        outln!("\nmissing now:");
        for m in &missing {
            let owed = if committed.contains(&m.item) {
                " — committed (容缺), owed before connection"
            } else {
                ""
            };
            outln!("  {} {}{}", m.item, m.label, owed);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `gateway failures replay ID --refetch`: fetches a held project's detail from the platform
/// again, as a pass would, and commits the record it now gives (audited).
pub async fn refetch(cfg: &crate::config::Config, id: i64, by: &str) -> anyhow::Result<ExitCode> {
    let gateway = crate::app::Gateway::open(cfg, std::sync::Arc::new(shuiwu_wire::SystemClock))?;
    // From async code the store is reached on the blocking pool, as everywhere else.
    let store = crate::store::AsyncStore::new(gateway.store.clone());
    let failure = store
        .call(move |s| s.failure(id))
        .await?
        .with_context(|| format!("no failure {id}"))?;
    if failure.state != "held" {
        bail!("failure {id} is {}, not held", failure.state);
    }
    let (Some(key), Some(version)) = (&failure.key, failure.version) else {
        bail!("failure {id} names no project version");
    };
    let (item, raw) = gateway
        .syncer
        .refetch(key, version)
        .await
        .map_err(|why| anyhow::anyhow!("not done: {why}"))?;
    let documents: Vec<(String, shuiwu_wire::RawDocument)> = raw
        .into_iter()
        .map(|r| (crate::store::sha256_hex(&r.bytes), r))
        .collect();
    match item {
        crate::store::Item::Record {
            key,
            document_sha256,
            draft,
            ..
        } => {
            let record_id = draft.id.clone();
            let (by, rebuilder, replayed) = (by.to_string(), gateway.syncer.rebuilder().clone(), key.clone());
            let applied = store
                .call(move |s| {
                    s.resolve_failure(
                        id,
                        &by,
                        "refetched from the platform",
                        Some((&replayed, &document_sha256, *draft, &rebuilder)),
                        &documents,
                        Utc::now(),
                    )
                })
                .await?;
            outln!(
                "failure {id} replayed: {} {} (BBH {})",
                applied.map_or("?", |a| a.as_str()),
                record_id,
                key.version
            );
        }
        crate::store::Item::Skipped { reason, .. } => {
            bail!("the project is now skipped ({reason}); dismiss the failure instead")
        }
        crate::store::Item::Held(h) => bail!("still failing: {}", h.reason),
        // `refetch` returns what `handle` gives, a draft; only the sync's pipeline turns drafts
        // into versions decided ahead. Said plainly rather than assumed.
        crate::store::Item::Prepared { .. } => {
            bail!("the refetch gave a version decided ahead instead of a draft; nothing was changed")
        }
    }
    Ok(ExitCode::SUCCESS)
}
