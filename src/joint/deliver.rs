//! The delivery worker: sends the outbox's calls to the power side and writes back how each
//! ended.
//!
//! At least once on our side, exactly once on theirs: a call is sent until an answer says it
//! took effect or can never take effect, and every repeat is harmless there — a create carries
//! the same key and body (a lost answer comes back as a 200 replay), a status report the
//! application already has is a no-op, a link to the same record is a no-op. Calls of one
//! record go in order (the store hands out only the oldest pending call of each record);
//! calls of different records go side by side, under the client's rate limit.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::Rng;
use serde::Serialize;
use shuiwu_power::{Application, CreateApplication, PowerClient, PowerError, WaterStatusReport};
use shuiwu_wire::{Clock, RawDocument};
use tokio_util::sync::CancellationToken;

use super::poll::{PollError, PollReport, Poller};
use crate::store::{AsyncStore, CallKind, DeliveryResult, OutboxCall, StoreError};

/// What one round of deliveries did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// The poll of the power side's listing that opened the round, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polled: Option<PollReport>,
    pub attempted: u64,
    pub created: u64,
    pub replayed: u64,
    pub adopted: u64,
    pub linked: u64,
    pub applied: u64,
    pub no_op: u64,
    pub replaced_by_link: u64,
    pub retried: u64,
    /// Calls that could not be sent yet (a status report before its application exists, a
    /// create before a fresh poll).
    pub waiting: u64,
    pub held: u64,
}

impl DeliveryReport {
    /// Adds another round's counts to these.
    pub fn merge(&mut self, other: DeliveryReport) {
        match (&mut self.polled, other.polled) {
            (Some(mine), Some(theirs)) => mine.merge(&theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
        self.attempted += other.attempted;
        self.created += other.created;
        self.replayed += other.replayed;
        self.adopted += other.adopted;
        self.linked += other.linked;
        self.applied += other.applied;
        self.no_op += other.no_op;
        self.replaced_by_link += other.replaced_by_link;
        self.retried += other.retried;
        self.waiting += other.waiting;
        self.held += other.held;
    }

    fn add(&mut self, outcome: &Outcome) {
        self.attempted += 1;
        match outcome {
            Outcome::Done(o) => match *o {
                "created" => self.created += 1,
                "replayed" => self.replayed += 1,
                "adopted" => self.adopted += 1,
                "linked" => self.linked += 1,
                "applied" => self.applied += 1,
                _ => self.no_op += 1,
            },
            Outcome::Retry => self.retried += 1,
            Outcome::Waiting => self.waiting += 1,
            Outcome::Held => self.held += 1,
            Outcome::Replaced => self.replaced_by_link += 1,
        }
    }
}

enum Outcome {
    Done(&'static str),
    Retry,
    Waiting,
    Held,
    Replaced,
}

/// Sends the outbox's calls.
pub struct Deliverer {
    client: Arc<PowerClient>,
    store: AsyncStore,
    clock: Arc<dyn Clock>,
    /// Calls in flight at once (of different records).
    concurrency: usize,
    /// The power side's listing, read at the start of every round.
    poller: Option<Poller>,
    /// When the last poll that read the listing to its end started: a create planned before
    /// it knows every power-origin application that named its project by then.
    polled_at: std::sync::Mutex<Option<DateTime<Utc>>>,
}

/// How many times a call re-reads after a version conflict before it is tried again later.
const CONFLICT_ROUNDS: usize = 3;

impl Deliverer {
    pub fn new(
        client: Arc<PowerClient>,
        store: AsyncStore,
        clock: Arc<dyn Clock>,
        concurrency: usize,
    ) -> Self {
        Deliverer {
            client,
            store,
            clock,
            concurrency: concurrency.max(1),
            poller: None,
            polled_at: std::sync::Mutex::new(None),
        }
    }

    /// Opens every round with a poll of the power side's listing, and sends a create only
    /// once a poll that started after it was planned has read the listing to its end: "unless
    /// a power-origin application already names the project" is judged on what the power side
    /// showed, not on what the gateway happened to have read.
    pub fn with_poller(mut self, poller: Poller) -> Self {
        self.poller = Some(poller);
        self
    }

    fn polled_at(&self) -> Option<DateTime<Utc>> {
        *self.polled_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers every call that is due, and the calls that become due as earlier calls of
    /// their records end, until none is due or `cancel` fires.
    pub async fn round(&self, cancel: &CancellationToken) -> Result<DeliveryReport, StoreError> {
        let mut report = DeliveryReport::default();
        if let Some(p) = &self.poller {
            let started = self.clock.now();
            match p.poll(cancel).await {
                Ok(r) => {
                    if r.complete {
                        *self.polled_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
                    }
                    report.polled = Some(r);
                }
                Err(PollError::Store(e)) => return Err(e),
                // The listing is unreachable for now: creates wait, other calls go on.
                Err(e) => tracing::warn!("polling the power side failed: {e}"),
            }
        }
        while !cancel.is_cancelled() {
            let now = self.clock.now();
            let due = self.store.call(move |s| s.due_calls(now, 256)).await?;
            if due.is_empty() {
                break;
            }
            let mut sent = futures::stream::iter(due.into_iter().map(|c| self.deliver(c)))
                .buffer_unordered(self.concurrency);
            loop {
                let next = tokio::select! {
                    next = sent.next() => next,
                    () = cancel.cancelled() => break,
                };
                match next {
                    Some(outcome) => report.add(&outcome?),
                    None => break,
                }
            }
        }
        Ok(report)
    }

    async fn deliver(&self, call: OutboxCall) -> Result<Outcome, StoreError> {
        let id = call.id;
        let attempts = call.attempts;
        let result = match call.kind {
            CallKind::Create => self.create(&call).await?,
            CallKind::Link => self.link(&call).await?,
            CallKind::WaterStatus => self.water_status(&call).await?,
        };
        let now = self.clock.now();
        let written = match result {
            Step::Done(outcome, app, raw) => (
                Outcome::Done(outcome),
                Written::Done {
                    outcome,
                    application: app,
                    answer: raw,
                },
            ),
            Step::Fail(e, app) => {
                if e.is_transient() || matches!(e, PowerError::InvalidClient { .. }) {
                    if let PowerError::InvalidClient { .. } = &e {
                        tracing::error!(error = %e, "the power side refuses the gateway's credentials");
                    }
                    let wait = backoff(attempts, &e);
                    (
                        Outcome::Retry,
                        Written::Retry {
                            error: e.to_string(),
                            next: now + chrono::Duration::from_std(wait).unwrap_or_default(),
                            application: app,
                            answer: e.raw().cloned(),
                        },
                    )
                } else {
                    (
                        Outcome::Held,
                        Written::Held {
                            reason: e.to_string(),
                            category: format!("power: {}", e.code().unwrap_or("refused")),
                            application: app,
                            answer: e.raw().cloned(),
                        },
                    )
                }
            }
            Step::Wait(why) => (
                Outcome::Waiting,
                Written::Wait {
                    why,
                    next: now + chrono::Duration::seconds(WAIT_SECS),
                },
            ),
            Step::HeldBecause(reason, app, raw) => (
                Outcome::Held,
                Written::Held {
                    reason,
                    category: "power: conflict".into(),
                    application: app,
                    answer: raw,
                },
            ),
            Step::Replace(app_id) => (Outcome::Replaced, Written::Replace(app_id)),
        };
        let (tally, w) = written;
        self.store
            .call(move |s| {
                let result = match &w {
                    Written::Done {
                        outcome,
                        application,
                        answer,
                    } => DeliveryResult::Done {
                        outcome,
                        application: application.as_ref(),
                        answer: answer.as_ref(),
                    },
                    Written::Retry {
                        error,
                        next,
                        application,
                        answer,
                    } => DeliveryResult::Retry {
                        error,
                        next_attempt_at: *next,
                        application: application.as_ref(),
                        answer: answer.as_ref(),
                    },
                    Written::Held {
                        reason,
                        category,
                        application,
                        answer,
                    } => DeliveryResult::Held {
                        reason,
                        category,
                        application: application.as_ref(),
                        answer: answer.as_ref(),
                    },
                    Written::Replace(app) => DeliveryResult::ReplacedByLink { application_id: app },
                    Written::Wait { why, next } => DeliveryResult::Wait {
                        why,
                        next_attempt_at: *next,
                    },
                };
                s.call_result(id, result, now)
            })
            .await?;
        Ok(tally)
    }

    async fn create(&self, call: &OutboxCall) -> Result<Step, StoreError> {
        let body: CreateApplication = serde_json::from_str(&call.body)
            .map_err(|e| StoreError::Corrupt(format!("outbox {}: create body: {e}", call.id)))?;
        if self.poller.is_some() && self.polled_at().is_none_or(|t| t < call.created_at) {
            return Ok(Step::Wait(
                "waiting for a poll of the power side newer than this create".into(),
            ));
        }
        // A power-origin application that names the project by now is linked instead.
        if let Some(code) = body.project_code.clone() {
            let existing = self
                .store
                .call(move |s| s.unlinked_power_application(&code))
                .await?;
            if let Some(app) = existing {
                return Ok(Step::Replace(app.application_id));
            }
        }
        let step = match self.client.create(&call.idempotency_key, &body).await {
            Ok(c) => Step::Done(
                if c.replayed { "replayed" } else { "created" },
                Some(c.application),
                Some(c.raw),
            ),
            // Made under another key (by an earlier gateway, or by hand): adopted as ours.
            Err(PowerError::DuplicateExternalId { existing, .. }) => match self.client.get(&existing).await {
                Ok(a) => Step::Done("adopted", Some(a.value), Some(a.raw)),
                Err(e) => Step::Fail(e, None),
            },
            Err(e) => Step::Fail(e, None),
        };
        Ok(step)
    }

    async fn link(&self, call: &OutboxCall) -> Result<Step, StoreError> {
        let Some(app_id) = call.application_id.clone() else {
            return Err(StoreError::Corrupt(format!(
                "outbox {}: a link without an application",
                call.id
            )));
        };
        let record = call.record_id.clone();
        let known = {
            let id = app_id.clone();
            self.store.call(move |s| s.joint_application(&id)).await?
        };
        let mut version = match known {
            Some(a) => a.version as u64,
            None => match self.client.get(&app_id).await {
                Ok(a) => a.value.version,
                Err(e) => return Ok(Step::Fail(e, None)),
            },
        };
        for _ in 0..CONFLICT_ROUNDS {
            match self.client.link(&app_id, &record, version).await {
                Ok(a) => {
                    let outcome = if a.value.version == version {
                        "no_op"
                    } else {
                        "linked"
                    };
                    return Ok(Step::Done(outcome, Some(a.value), Some(a.raw)));
                }
                Err(PowerError::VersionMismatch { current, raw }) => match current.external_id.as_deref() {
                    Some(e) if e == record => {
                        return Ok(Step::Done("no_op", Some(*current), Some(*raw)));
                    }
                    Some(other) => {
                        let reason = format!("application {app_id} is linked to {other} by now");
                        return Ok(Step::HeldBecause(reason, Some(*current), Some(*raw)));
                    }
                    None => version = current.version,
                },
                Err(e) => return Ok(Step::Fail(e, None)),
            }
        }
        Ok(Step::Wait(format!("application {app_id} kept changing")))
    }

    async fn water_status(&self, call: &OutboxCall) -> Result<Step, StoreError> {
        let report: WaterStatusReport = serde_json::from_str(&call.body)
            .map_err(|e| StoreError::Corrupt(format!("outbox {}: status body: {e}", call.id)))?;
        let record = call.record_id.clone();
        let Some(app) = self.store.call(move |s| s.joint_application_of(&record)).await? else {
            return Ok(Step::Wait("waiting for the record's joint application".into()));
        };
        let target = report.water_status;
        let mut version = app.version as u64;
        for _ in 0..CONFLICT_ROUNDS {
            match self
                .client
                .water_status(&app.application_id, &report, version)
                .await
            {
                Ok(a) => {
                    let outcome = if a.value.version == version {
                        "no_op"
                    } else {
                        "applied"
                    };
                    return Ok(Step::Done(outcome, Some(a.value), Some(a.raw)));
                }
                // Re-read (the answer carries the application as it is) and check that the
                // report still applies before trying again.
                Err(PowerError::VersionMismatch { current, raw }) => {
                    if current.water_status == Some(target) {
                        return Ok(Step::Done("no_op", Some(*current), Some(*raw)));
                    }
                    if !target.may_follow(current.water_status) {
                        let reason = format!(
                            "the power side shows water status {} by now; {} cannot follow it",
                            current.water_status.map_or("(none)", |w| w.as_str()),
                            target.as_str()
                        );
                        return Ok(Step::HeldBecause(reason, Some(*current), Some(*raw)));
                    }
                    version = current.version;
                }
                Err(e) => return Ok(Step::Fail(e, None)),
            }
        }
        Ok(Step::Wait(format!(
            "application {} kept changing",
            app.application_id
        )))
    }
}

/// What an attempt found, before it is written back.
enum Step {
    Done(&'static str, Option<Application>, Option<RawDocument>),
    Fail(PowerError, Option<Application>),
    /// Not possible yet (no application to report on, no fresh poll): looked at again
    /// shortly, not counted as an attempt.
    Wait(String),
    HeldBecause(String, Option<Application>, Option<RawDocument>),
    Replace(String),
}

/// An attempt's end, owned, to hand to the store's thread.
enum Written {
    Done {
        outcome: &'static str,
        application: Option<Application>,
        answer: Option<RawDocument>,
    },
    Retry {
        error: String,
        next: DateTime<Utc>,
        application: Option<Application>,
        answer: Option<RawDocument>,
    },
    Held {
        reason: String,
        category: String,
        application: Option<Application>,
        answer: Option<RawDocument>,
    },
    Replace(String),
    Wait {
        why: String,
        next: DateTime<Utc>,
    },
}

/// How long a call that cannot be sent yet waits before it is looked at again.
const WAIT_SECS: i64 = 5;

/// The wait before a call's next attempt after `attempts` failed ones: 5 s doubling to an
/// hour, with full jitter (so that calls that failed together do not retry together), and
/// never sooner than a `Retry-After`.
fn backoff(attempts: i64, e: &PowerError) -> Duration {
    let step = 5u64.saturating_mul(1u64 << attempts.clamp(0, 10)).min(3600);
    let jittered = Duration::from_millis(rand::rng().random_range(step * 500..=step * 1000));
    match e {
        PowerError::RateLimited { retry_after: Some(d) } => jittered.max(*d),
        _ => jittered,
    }
}
