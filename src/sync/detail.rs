//! Turning one listed project's detail answer into an item to commit: a record draft, a skip
//! with its reason, a held failure with the raw document, or "not done yet".

use chrono::{DateTime, Duration, Utc};
use shuiwu_approval::{ApprovalError, Fetched, Summary};
use shuiwu_wire::{RawDocument, format_beijing};

use super::{Handled, SOURCE, Stop, SyncError, Syncer};
use crate::rebuild::DraftError;
use crate::record::Assembled;
use crate::store::{Held, Item, SourceKey, sha256_hex};

impl Syncer {
    /// Fetches one project's detail now and turns it into an item, as a pass would: for an
    /// operator replaying a held `detail` failure. `Err(reason)` when it is not done.
    pub async fn refetch(
        &self,
        xmdm: &str,
        listed_version: i64,
    ) -> Result<(Item, Option<RawDocument>), String> {
        let summary = Summary {
            xmdm: xmdm.to_string(),
            bbh: listed_version.max(0) as u64,
            gxsj: String::new(),
            zt: String::new(),
        };
        let result = self.client.project(xmdm).await;
        match self.handle(&summary, result, self.clock.now()).await {
            Ok(Handled::Item(item, raw)) => Ok((*item, raw)),
            Ok(Handled::Pending(reason)) => Err(reason),
            Err(Stop::Transient { reason, .. }) => Err(reason),
            Err(Stop::Fatal(e)) => Err(e.to_string()),
        }
    }

    /// Turns one detail answer into an item to commit, or says why it is not done. `now` dates
    /// the mapping (the project-code check reads its year).
    pub(super) async fn handle(
        &self,
        summary: &Summary,
        result: Result<Fetched, ApprovalError>,
        now: DateTime<Utc>,
    ) -> Result<Handled, Stop> {
        let listed = SourceKey {
            source: SOURCE.into(),
            key: summary.xmdm.clone(),
            version: summary.bbh as i64,
        };
        let fetched = match result {
            Ok(f) => f,
            Err(ApprovalError::NotFound { raw }) => {
                let now = self.clock.now();
                let key = listed.clone();
                let attempts = self.store.call(move |s| s.listing_miss(&key, now)).await?;
                if attempts < self.cfg.not_found_limit {
                    return Ok(Handled::Pending(format!(
                        "detail answers 4040 (not visible yet?), attempt {attempts}"
                    )));
                }
                return Ok(held(
                    summary,
                    Hold {
                        version: listed.version,
                        step: "detail",
                        reason: format!("listed, but the detail call answered 4040 on {attempts} passes"),
                        category: Some("listed but never found (4040)".into()),
                        ..Hold::default()
                    },
                    Some(*raw),
                ));
            }
            Err(ApprovalError::OutsideServiceArea { raw }) => {
                let sha = sha256_hex(&raw.bytes);
                return Ok(Handled::Item(
                    Box::new(Item::Skipped {
                        key: listed,
                        document_sha256: Some(sha),
                        reason: "outside the account's service area (4030)".into(),
                    }),
                    Some(*raw),
                ));
            }
            Err(e @ (ApprovalError::BadSignature | ApprovalError::BadParameter { .. })) => {
                return Err(Stop::Fatal(SyncError::Refused(e)));
            }
            Err(e) if e.is_transient() => {
                // A project whose detail keeps failing would hold its window open for ever, and
                // every later window with it; after `not_found_limit` passes spread over at
                // least `stuck_after_hours` it is held instead (quota and maintenance gates,
                // which end the pass anyway, are not counted).
                let gated = matches!(
                    e,
                    ApprovalError::QuotaExhausted { .. } | ApprovalError::Maintenance { .. }
                );
                if gated {
                    return Ok(Handled::Pending(e.to_string()));
                }
                let now = self.clock.now();
                let key = listed.clone();
                let (attempts, since) = self.store.call(move |s| s.fetch_miss(&key, now)).await?;
                let lasting = now - since >= Duration::hours(self.cfg.stuck_after_hours as i64);
                if attempts < self.cfg.not_found_limit || !lasting {
                    return Ok(Handled::Pending(format!("{e} (attempt {attempts})")));
                }
                let hold = Hold {
                    version: listed.version,
                    step: "detail",
                    reason: format!(
                        "the detail call kept failing ({attempts} passes since {}): {e}",
                        format_beijing(since)
                    ),
                    category: Some(format!("detail kept failing: {}", e.kind())),
                    ..Hold::default()
                };
                return Ok(held(summary, hold, None));
            }
            Err(e) => {
                let category = Some(format!("detail refused: {}", e.kind()));
                let hold = Hold {
                    version: listed.version,
                    step: "detail",
                    reason: e.to_string(),
                    category,
                    ..Hold::default()
                };
                return Ok(held(summary, hold, None));
            }
        };
        let sha = sha256_hex(&fetched.raw.bytes);
        let data = fetched.data();
        if data.get("XMDM").and_then(|v| v.as_str()).map(str::trim) != Some(summary.xmdm.as_str()) {
            let hold = Hold {
                version: listed.version,
                step: "detail",
                field: Some("project.code"),
                reason: "the detail answered for another project code".into(),
                ..Hold::default()
            };
            return Ok(held(summary, hold, Some(fetched.raw)));
        }
        let detail_version = data
            .get("BBH")
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()));
        let Some(version) = detail_version else {
            let hold = Hold {
                version: listed.version,
                step: "map",
                field: Some("source.version"),
                reason: "the detail has no usable BBH".into(),
                ..Hold::default()
            };
            return Ok(held(summary, hold, Some(fetched.raw)));
        };
        if version < listed.version {
            return Ok(Handled::Pending(format!(
                "detail still shows BBH {version}, listing showed {}",
                listed.version
            )));
        }
        let today = crate::worktime::date_of(now);
        let key = SourceKey {
            source: SOURCE.into(),
            key: summary.xmdm.clone(),
            version,
        };
        // The record itself is rebuilt from this draft and its actions in the commit's
        // transaction (`crate::rebuild`).
        let item = match self.rebuilder.assemble(&fetched.body, &sha, today) {
            Ok(Assembled::Record(draft)) => Item::Record {
                key,
                document_sha256: sha,
                draft,
            },
            Ok(Assembled::Skip(reason)) => Item::Skipped {
                key,
                document_sha256: Some(sha),
                reason,
            },
            Err(DraftError::Map(e)) => {
                let field = e.errors.first().map(|f| f.field.clone());
                let hold = Hold {
                    version,
                    step: "map",
                    field: field.as_deref(),
                    reason: e.to_string(),
                    detail: serde_json::to_string(&e.errors).ok(),
                    ..Hold::default()
                };
                return Ok(held(summary, hold, Some(fetched.raw)));
            }
            Err(DraftError::Assemble(e)) => {
                let hold = Hold {
                    version,
                    step: "assemble",
                    field: Some(e.field()),
                    reason: e.to_string(),
                    ..Hold::default()
                };
                return Ok(held(summary, hold, Some(fetched.raw)));
            }
            // (The last two concern power-side documents only.)
            Err(e @ (DraftError::NotJson(_) | DraftError::NoPowerMapping | DraftError::NoApplication(_))) => {
                let hold = Hold {
                    version,
                    step: "map",
                    reason: e.to_string(),
                    ..Hold::default()
                };
                return Ok(held(summary, hold, Some(fetched.raw)));
            }
        };
        Ok(Handled::Item(Box::new(item), Some(fetched.raw)))
    }
}

/// What to hold a project version for.
#[derive(Default)]
struct Hold<'a> {
    version: i64,
    step: &'a str,
    field: Option<&'a str>,
    reason: String,
    /// Summary label; derived from the field and the failed check when not given.
    category: Option<String>,
    detail: Option<String>,
}

/// A held failure of one listed project, with the raw document it concerns, if any.
fn held(summary: &Summary, hold: Hold<'_>, raw: Option<RawDocument>) -> Handled {
    let category = hold.category.unwrap_or_else(|| {
        let check = detail_check(&hold.reason);
        format!("{}: {check}", hold.field.unwrap_or(hold.step))
    });
    Handled::Item(
        Box::new(Item::Held(Held {
            source: SOURCE.into(),
            key: Some(summary.xmdm.clone()),
            version: Some(hold.version),
            step: hold.step.into(),
            field: hold.field.map(str::to_string),
            category,
            reason: hold.reason,
            detail: hold.detail,
            document_sha256: raw.as_ref().map(|r| sha256_hex(&r.bytes)),
        })),
        raw,
    )
}

/// The check that failed, from a reason such as `water.diameter_dn: diameter: "DN四十" is not a
/// diameter`: the part naming the transform, without the value.
fn detail_check(reason: &str) -> String {
    let mut parts = reason.splitn(3, ": ");
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_field), Some(check), Some(_)) => check.to_string(),
        _ => reason.chars().take(60).collect(),
    }
}
