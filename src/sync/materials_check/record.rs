//! One record's zero-materials checklist: the licence items from its holder's answer, the
//! drawings from the approval platform's attachments, evaluated and stored with the notice.

use shuiwu_approval::ApprovalError;
use shuiwu_wire::RawDocument;

use super::licences::{HolderAnswer, HolderError};
use super::{Checked, Round};
use crate::materials::{self, AttachmentCheck};
use crate::store::{Held, sha256_hex};
use crate::sync::{SOURCE, SyncError, Syncer};

impl Syncer {
    /// One record's checklist; `SourceDown` when a platform could not answer now.
    pub(super) async fn check_materials(
        &self,
        round: &Round,
        id: &str,
        version: i64,
        content: &serde_json::Value,
    ) -> Result<Checked, SyncError> {
        let (run_id, cancel) = (round.run_id, &round.cancel);
        let d = &content["decisions"];
        let policy = self
            .rebuilder
            .rules
            .policies
            .versions()
            .iter()
            .find(|p| Some(p.version.as_str()) == d["policy_version"].as_str());
        let Some(policy) = policy else {
            return Ok(Checked::Later);
        };
        // A provisional record is checked for every category it may turn out to be.
        let categories: Vec<String> = match d["category"]["id"].as_str() {
            Some(c) => vec![c.to_string()],
            None => d["category"]["outcomes"]
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter_map(|x| x["category"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut required: Vec<String> = Vec::new();
        for c in &categories {
            for item in policy.materials.get(c).cloned().unwrap_or_default() {
                if !required.contains(&item) {
                    required.push(item);
                }
            }
        }
        let label = d["category"]["id"]
            .as_str()
            .or(d["category"]["state"].as_str())
            .unwrap_or("none")
            .to_string();
        // As the record's decisions say it: unknown while a provisional category leaves it open
        // (a record decided before the answer had three states stored a plain bool).
        let promised = match &d["zero_materials_promised"] {
            serde_json::Value::Bool(b) => Some(*b),
            v => v["value"].as_bool(),
        };
        // One day for the whole check: licence validity and the checklist's date agree.
        let today = crate::worktime::date_of(self.clock.now());
        let code = content["project"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let holder = content["builder"]["credit_code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut documents = Vec::new();

        let needs_licences = required.iter().any(|i| {
            matches!(
                i.as_str(),
                "identity" | "identity_card" | "right_to_build" | "premises_right"
            )
        });
        let (licences, licence_sha, licence_lineage) = if needs_licences {
            match self.holder_answer(round, &holder, &code, today).await {
                Ok(HolderAnswer::Read {
                    licences,
                    sha256,
                    lineage,
                }) => (licences, Some(sha256), Some(lineage)),
                Ok(HolderAnswer::Held) => return Ok(Checked::Later),
                Err(HolderError::Down(reason)) => return Ok(Checked::SourceDown(reason)),
                Err(HolderError::Fatal(e)) => return Err(e),
            }
        } else {
            (Vec::new(), None, None)
        };

        let mut attachments = Vec::new();
        for (item, kind) in [("site_plan", "ZPMT"), ("plumbing_design", "GPSJ")] {
            if !required.iter().any(|r| r == item) {
                continue;
            }
            let files = content["attachments"].as_array().cloned().unwrap_or_default();
            for f in files.iter().filter(|f| f["kind"]["code"].as_str() == Some(kind)) {
                let (Some(fjid), Some(sha)) = (f["id"].as_str(), f["sha256"].as_str()) else {
                    continue;
                };
                // An attachment stored before (same content, same SHA-256) is not downloaded
                // again: daily re-checks would spend the platform's quota on bytes we have.
                let known = sha.to_ascii_lowercase();
                let probe = known.clone();
                if self.store.call(move |s| s.has_document(&probe)).await? {
                    attachments.push(AttachmentCheck::Fetched {
                        id: fjid.into(),
                        kind: kind.into(),
                        document_sha256: known,
                    });
                    continue;
                }
                let fetched = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok(Checked::SourceDown("shutting down".into())),
                    r = self.client.attachment(fjid, sha, f["size_bytes"].as_u64()) => r,
                };
                match fetched {
                    Ok(raw) => {
                        let doc_sha = sha256_hex(&raw.bytes);
                        documents.push((doc_sha.clone(), raw));
                        attachments.push(AttachmentCheck::Fetched {
                            id: fjid.into(),
                            kind: kind.into(),
                            document_sha256: doc_sha,
                        });
                    }
                    Err(e @ ApprovalError::HashMismatch { .. }) => {
                        let held = attachment_failure(
                            &code,
                            content,
                            kind,
                            fjid,
                            "attachment content does not match its hash".into(),
                            &e,
                        );
                        self.hold_materials_failure(held, None, run_id).await?;
                        attachments.push(AttachmentCheck::Mismatch {
                            id: fjid.into(),
                            kind: kind.into(),
                        });
                    }
                    Err(e) if e.is_transient() => {
                        return Ok(Checked::SourceDown(format!("approval platform attachments: {e}")));
                    }
                    Err(e) => {
                        // Refused for good (over its announced size, an unknown code): held
                        // with the reason; the item counts as not found.
                        let category = format!("attachment refused: {}", e.kind());
                        let held = attachment_failure(&code, content, kind, fjid, category, &e);
                        self.hold_materials_failure(held, None, run_id).await?;
                    }
                }
            }
        }

        let checklist = materials::evaluate(
            &required,
            &code,
            &licences,
            licence_sha.as_deref(),
            &attachments,
            today,
            promised,
        );
        let missing: Vec<materials::CheckItem> = checklist.missing().cloned().collect();
        let notice_items = serde_json::to_string(&missing).unwrap_or_default();
        let text_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let about = match content["application"]["id"].as_str() {
            // A power-origin record: the application, and its applicant masked (a person).
            Some(application) => vec![
                ("供电侧报装申请", application.to_string()),
                (
                    "申请人",
                    crate::mask::name(content["builder"]["name"].as_str().unwrap_or_default()),
                ),
                ("用水地址", text_of(&content["site"]["address"])),
            ],
            None => vec![
                ("项目名称", text_of(&content["project"]["name"])),
                ("项目代码", code.clone()),
                ("建设单位", text_of(&content["builder"]["name"])),
            ],
        };
        let text = materials::notice_text(
            &about,
            d["customer_manager"]["manager"].as_str().unwrap_or("-"),
            &missing,
            today,
        );
        let notice = (!missing.is_empty()).then_some((notice_items, text));
        let now = self.clock.now();
        let id = id.to_string();
        let issued = self
            .store
            .call(move |s| {
                s.save_materials(
                    &id,
                    version,
                    &checklist,
                    &label,
                    &documents,
                    licence_lineage.as_deref(),
                    notice.as_ref().map(|(i, t)| (i.as_str(), t.as_str())),
                    Some(run_id),
                    now,
                )
            })
            .await?;
        Ok(Checked::Done {
            notice_issued: issued,
        })
    }

    /// Holds a failure of the materials check (with the document it concerns, if any). It is
    /// not tied to a project version: the check is tried again on a later pass.
    pub(super) async fn hold_materials_failure(
        &self,
        held: Held,
        raw: Option<RawDocument>,
        run_id: i64,
    ) -> Result<(), SyncError> {
        let documents: Vec<_> = raw.map(|r| (sha256_hex(&r.bytes), r)).into_iter().collect();
        let now = self.clock.now();
        self.store
            .call(move |s| s.hold(&held, &documents, Some(run_id), now))
            .await?;
        Ok(())
    }
}

/// A failure of one attachment of a project version (the version the record's content names).
fn attachment_failure(
    code: &str,
    content: &serde_json::Value,
    kind: &str,
    fjid: &str,
    category: String,
    e: &ApprovalError,
) -> Held {
    Held {
        source: SOURCE.into(),
        key: Some(code.to_string()),
        version: content["source"]["version"].as_i64(),
        step: "attachment".into(),
        field: Some(format!("attachments ({kind} {fjid})")),
        category,
        reason: e.to_string(),
        detail: None,
        document_sha256: None,
    }
}
