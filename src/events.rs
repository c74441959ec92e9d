//! Internal events: what the gateway tells operators, each as one typed value whose `emit` writes
//! its log line and updates its metrics together, so the two never disagree (vector's model:
//! `<Noun><Verb>` names, one struct per event). `docs/metrics.md` lists every event with its
//! metrics; `GET /metrics` renders them in the Prometheus text format through the `metrics`
//! crate's recorder.
//!
//! Emitting without a recorder installed (commands other than `gateway run`, tests) only logs.

use metrics::{counter, gauge};

/// Something worth telling operators.
pub trait InternalEvent {
    fn emit(self);
}

/// A sync pass ended.
pub struct PassFinished<'a> {
    pub report: &'a crate::sync::PassReport,
    pub seconds: f64,
}

impl InternalEvent for PassFinished<'_> {
    fn emit(self) {
        let r = self.report;
        tracing::info!(
            run = r.run_id,
            cursor_before = %r.cursor_before,
            cursor_after = %r.cursor_after,
            windows = r.windows,
            list_requests = r.list_requests,
            details = r.details_fetched,
            outcomes = ?r.outcomes,
            materials_checked = r.materials_checked,
            materials_unchecked = r.materials_unchecked,
            materials_stopped = r.materials_stopped.as_deref().unwrap_or(""),
            end = ?r.end,
            seconds = self.seconds,
            "sync pass finished"
        );
        let outcome = match r.end {
            crate::sync::PassEnd::CaughtUp => "caught_up",
            crate::sync::PassEnd::Incomplete { .. } => "incomplete",
            crate::sync::PassEnd::Interrupted => "interrupted",
        };
        counter!("gateway_passes_total", "outcome" => outcome).increment(1);
        gauge!("gateway_last_pass_seconds").set(self.seconds);
        gauge!("gateway_last_pass_end_timestamp_seconds").set(chrono::Utc::now().timestamp() as f64);
        for (outcome, n) in &r.outcomes {
            counter!("gateway_project_versions_total", "outcome" => *outcome).increment(*n);
        }
        counter!("gateway_materials_checks_total").increment(r.materials_checked);
        counter!("gateway_notices_issued_total").increment(r.notices_issued);
    }
}

/// A sync pass failed (a refused account, a database error): nothing of the failed unit was
/// committed, and the loop tries again later.
pub struct PassFailed<'a> {
    pub error: &'a str,
}

impl InternalEvent for PassFailed<'_> {
    fn emit(self) {
        tracing::error!("sync pass failed: {}", self.error);
        counter!("gateway_passes_total", "outcome" => "failed").increment(1);
    }
}

/// A deadline warning or alarm was raised (once per stage and kind).
pub struct DeadlineAlertRaised<'a> {
    pub record_id: &'a str,
    pub stage: &'a str,
    /// `warning` or `alarm`.
    pub kind: &'static str,
    pub due: &'a str,
    pub manager: &'a str,
}

impl InternalEvent for DeadlineAlertRaised<'_> {
    fn emit(self) {
        tracing::warn!(
            record = %self.record_id,
            stage = %self.stage,
            due = %self.due,
            manager = self.manager,
            "{}",
            if self.kind == "alarm" {
                "deadline ALARM: the stage is overdue"
            } else {
                "deadline warning: a third or less of the working time is left"
            }
        );
        counter!("gateway_deadline_alerts_total", "kind" => self.kind).increment(1);
    }
}

/// The joint-application calls of one delivery round were settled.
pub struct CallsDelivered<'a> {
    pub report: &'a crate::joint::deliver::DeliveryReport,
}

impl InternalEvent for CallsDelivered<'_> {
    fn emit(self) {
        let r = self.report;
        if r.attempted > 0 {
            tracing::info!(
                attempted = r.attempted,
                created = r.created,
                replayed = r.replayed,
                adopted = r.adopted,
                linked = r.linked,
                applied = r.applied,
                no_op = r.no_op,
                retried = r.retried,
                held = r.held,
                "joint-application calls delivered"
            );
        }
        for (outcome, n) in [
            ("created", r.created),
            ("replayed", r.replayed),
            ("adopted", r.adopted),
            ("linked", r.linked),
            ("applied", r.applied),
            ("no_op", r.no_op),
            ("retried", r.retried),
            ("held", r.held),
        ] {
            counter!("gateway_joint_calls_total", "outcome" => outcome).increment(n);
        }
    }
}

/// What the store holds now, sampled at each scrape: lag, queues and backlogs.
pub struct StoreSampled<'a> {
    pub sample: &'a crate::store::Sample,
}

impl InternalEvent for StoreSampled<'_> {
    fn emit(self) {
        let s = self.sample;
        tracing::trace!("store sampled for metrics");
        for (source, lag) in &s.cursor_lag_seconds {
            gauge!("gateway_cursor_lag_seconds", "source" => source.clone()).set(*lag);
        }
        for (category, n) in &s.failures_held {
            gauge!("gateway_failures_held", "category" => category.clone()).set(*n as f64);
        }
        gauge!("gateway_outbox_pending").set(s.outbox_pending as f64);
        gauge!("gateway_outbox_oldest_pending_age_seconds").set(s.outbox_oldest_age_seconds);
        gauge!("gateway_materials_backlog").set(s.materials_backlog as f64);
        gauge!("gateway_records").set(s.records as f64);
        gauge!("gateway_audit_log_entries").set(s.audit_log_entries as f64);
        gauge!("gateway_audit_log_unsigned_entries").set(s.audit_log_unsigned as f64);
    }
}

/// The audit log's signing key was made (the writer's first start without one).
pub struct AuditKeyMade<'a> {
    pub path: &'a std::path::Path,
    /// The public key, for auditors.
    pub public: &'a str,
}

impl InternalEvent for AuditKeyMade<'_> {
    fn emit(self) {
        tracing::info!(path = %self.path.display(), key = self.public, "made the audit log's signing key; give auditors its public key (gateway audit key)");
        counter!("gateway_audit_keys_made_total").increment(1);
    }
}
