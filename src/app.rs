//! Wiring: from a configuration to a ready store, mapping set, client and syncer.

use std::sync::Arc;

use anyhow::Context as _;
use shuiwu_approval::ApprovalClient;
use shuiwu_wire::Clock;

use crate::calendar::Calendar;
use crate::config::Config;
use crate::joint::deliver::Deliverer;
use crate::joint::poll::Poller;
use crate::mapping::MappingSet;
use crate::policy::{PolicySet, Rules};
use crate::store::lock::WriterLock;
use crate::store::{AsyncStore, Store};
use crate::sync::Syncer;

/// The name of the mapping that turns an approval-platform project detail into facts.
pub const PROJECT_MAPPING: &str = "approval.project";

/// The name of the mapping that turns a power-side application resource into facts.
pub const POWER_MAPPING: &str = "power.application";

/// The name of the mapping that reads the licence library's QueryLicence answer.
pub const LICENCE_MAPPING: &str = "licences.query";

/// Calls to the power side in flight at once (of different records); the client's limiter
/// paces them.
const DELIVERY_CONCURRENCY: usize = 4;

/// How far back each poll of the power side's listing starts before the last change it
/// landed: a batch of changes sharing a millisecond, or committed late on the power side,
/// is read again and recognised by (application, version).
const POLL_OVERLAP_SECS: i64 = 60;

/// A gateway ready to sync.
pub struct Gateway {
    /// Held by `run` and `sync --once` for as long as the gateway lives: one writer per
    /// database.
    pub writer: Option<WriterLock>,
    pub store: Arc<Store>,
    pub mappings: MappingSet,
    pub calendar: Calendar,
    pub rules: Arc<Rules>,
    pub syncer: Syncer,
    /// The delivery of calls to the power side, when `[power]` is configured.
    pub deliverer: Option<Arc<Deliverer>>,
}

impl Gateway {
    /// Opens the gateway as the database's one writer (the daemon, a sync pass): refused with
    /// a [`crate::store::lock::LockError::Held`] naming the holder when another one runs.
    pub fn open_writer(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Gateway> {
        let since = shuiwu_wire::format_beijing(clock.now());
        let lock = WriterLock::acquire(&cfg.store.path, &since)?;
        // Whatever went wrong before (a kill, a power cut) ended the passes it left open.
        let mut gateway = Gateway::open(cfg, clock.clone())?;
        // A damaged page is found now, before a pass builds on it.
        let problems = gateway.store.quick_check()?;
        if !problems.is_empty() {
            anyhow::bail!(
                "the database {} is damaged (PRAGMA quick_check): {}; restore it from a backup",
                cfg.store.path.display(),
                problems.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            );
        }
        // Which rules this writer runs with, for whoever reads the log of a pass later.
        for m in gateway.mappings.all() {
            tracing::info!(file = %m.file, sha256 = %m.sha256, "mapping in force");
        }
        for p in gateway.rules.policies.versions() {
            tracing::info!(file = %p.file, version = %p.version, effective = %p.effective, sha256 = %p.sha256, "policy in force");
        }
        gateway.say_stale_records()?;
        let closed = gateway.store.close_abandoned_runs(clock.now())?;
        if closed > 0 {
            tracing::warn!(
                runs = closed,
                "passes left unfinished by a stopped gateway are marked interrupted"
            );
        }
        if gateway.deliverer.is_some() {
            // Records stored before the power side was configured get their calls now.
            let planned = gateway.store.plan_missing_joint_calls(clock.now())?;
            if planned > 0 {
                tracing::info!(
                    records = planned,
                    "joint applications planned for records stored before [power]"
                );
            }
        }
        gateway.writer = Some(lock);
        Ok(gateway)
    }

    /// Says how many current record versions were made with mapping or policy files other
    /// than those in force (a new version of a record uses the files in force; the others stay
    /// as they are until `gateway remap`), and which remaps a kill left unfinished.
    fn say_stale_records(&self) -> anyhow::Result<()> {
        let mappings: Vec<&str> = self.mappings.all().map(|m| m.sha256.as_str()).collect();
        let policies: Vec<&str> = self
            .rules
            .policies
            .versions()
            .iter()
            .map(|p| p.sha256.as_str())
            .collect();
        let (mut by_mapping, mut by_policy) = (0, 0);
        let (mut mapping_files, mut policy_files) = (Vec::new(), Vec::new());
        for used in self.store.rules_in_use()? {
            let (mapping, policy, n) = (used.mapping_sha256, used.policy_sha256, used.records);
            if let Some(m) = mapping.filter(|m| !mappings.contains(&m.as_str())) {
                by_mapping += n;
                mapping_files.push(m);
            }
            if let Some(p) = policy.filter(|p| !policies.contains(&p.as_str())) {
                by_policy += n;
                policy_files.push(p);
            }
        }
        for files in [&mut mapping_files, &mut policy_files] {
            files.sort();
            files.dedup();
        }
        let rules = crate::remap::rules_json(&self.mappings, &self.rules.policies);
        let remapped = self.store.remapped_with(&rules)?;
        if let Some(r) = remapped.as_ref().filter(|_| by_mapping > 0 || by_policy > 0) {
            tracing::info!(
                remap = r.id,
                finished_by = %r.by,
                records_by_other_mappings = by_mapping,
                records_by_other_policies = by_policy,
                "records made with other mapping or policy files were remapped with these files and found unchanged"
            );
        } else if by_mapping > 0 || by_policy > 0 {
            tracing::warn!(
                records_by_other_mappings = by_mapping,
                mapping_sha256 = %mapping_files.join(","),
                records_by_other_policies = by_policy,
                policy_sha256 = %policy_files.join(","),
                "stored records were made with mapping or policy files that are not in force; `gateway remap --dry-run` shows what remapping them would change"
            );
        }
        for r in self.store.unfinished_remaps()? {
            tracing::warn!(
                remap = r.id,
                by = %r.by,
                started = %r.started_at,
                after = r.last_record_id.as_deref().unwrap_or("-"),
                "a remap was stopped before it finished; run the same `gateway remap` again to resume it"
            );
        }
        Ok(())
    }

    /// Opens the gateway without the writer lock, for commands that act on one item.
    pub fn open(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Gateway> {
        let mappings = MappingSet::load(cfg.mappings.dir.as_deref()).context("loading mapping files")?;
        let mapping = mappings
            .get(PROJECT_MAPPING)
            .with_context(|| format!("no mapping file defines {PROJECT_MAPPING:?}"))?;
        let calendar = Calendar::load(cfg.mappings.dir.as_deref()).context("loading holiday calendars")?;
        let today = crate::worktime::date_of(clock.now());
        if let Some(warning) = calendar.coverage_warning(today) {
            tracing::warn!("{warning}");
        }
        let policies = PolicySet::load(cfg.mappings.dir.as_deref()).context("loading the policy")?;
        let existed = cfg.store.path.exists();
        let store = Arc::new(Store::open(&cfg.store.path)?);
        if existed && crate::store::readable_by_others(&cfg.store.path) {
            tracing::warn!(
                db = %cfg.store.path.display(),
                "the database holds personal data and is readable by other users: chmod 600 it (and its -wal and -shm files)"
            );
        }
        if let Some(signer) =
            crate::audit::key::load(&cfg.audit, &cfg.store.path, crate::audit::key::Missing::Create)?
        {
            store.set_signer(signer).context("the audit log's signing key")?;
        }
        store.save_rules(&mappings, &policies, clock.now())?;
        let rules = Arc::new(Rules {
            policies,
            calendar: calendar.clone(),
        });
        let client = Arc::new(ApprovalClient::new(cfg.approval.clone(), clock.clone())?);
        let mut syncer = Syncer::new(
            client,
            store.clone(),
            mapping,
            rules.clone(),
            cfg.sync.clone(),
            clock.clone(),
        );
        if let Some(power) = mappings.get(POWER_MAPPING) {
            syncer = syncer.with_power_mapping(power);
        }
        if let Some(l) = &cfg.licences {
            let licence_mapping = mappings
                .get(LICENCE_MAPPING)
                .with_context(|| format!("no mapping file defines {LICENCE_MAPPING:?}"))?;
            let client = shuiwu_licences::LicenceClient::new(l.clone(), clock.clone())?;
            syncer = syncer.with_licences(Arc::new(client), licence_mapping);
        }
        let deliverer = match &cfg.power {
            Some(p) => {
                store.set_joint(true);
                let client = Arc::new(shuiwu_power::PowerClient::new(p.clone(), clock.clone())?);
                // The power side's listing is read from where the approval sync starts.
                let poller = Poller::new(
                    client.clone(),
                    AsyncStore::new(store.clone()),
                    syncer.rebuilder().clone(),
                    clock.clone(),
                    cfg.sync.start_at()?,
                    chrono::Duration::seconds(POLL_OVERLAP_SECS),
                );
                Some(Arc::new(
                    Deliverer::new(
                        client,
                        AsyncStore::new(store.clone()),
                        clock,
                        DELIVERY_CONCURRENCY,
                    )
                    .with_poller(poller),
                ))
            }
            None => None,
        };
        Ok(Gateway {
            writer: None,
            store,
            mappings,
            calendar,
            rules,
            syncer,
            deliverer,
        })
    }
}
