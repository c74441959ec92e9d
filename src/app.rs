//! Wiring: from a configuration to a ready store, mapping set, client and syncer.

use std::sync::Arc;

use anyhow::Context as _;
use shuiwu_approval::ApprovalClient;
use shuiwu_wire::Clock;

use crate::calendar::Calendar;
use crate::config::Config;
use crate::mapping::MappingSet;
use crate::policy::{PolicySet, Rules};
use crate::store::Store;
use crate::sync::Syncer;

/// The name of the mapping that turns an approval-platform project detail into facts.
pub const PROJECT_MAPPING: &str = "approval.project";

/// The name of the mapping that reads the licence library's QueryLicence answer.
pub const LICENCE_MAPPING: &str = "licences.query";

/// A gateway ready to sync.
pub struct Gateway {
    pub store: Arc<Store>,
    pub mappings: MappingSet,
    pub calendar: Calendar,
    pub rules: Arc<Rules>,
    pub syncer: Syncer,
}

impl Gateway {
    pub fn open(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Gateway> {
        let mappings = MappingSet::load(cfg.mappings.dir.as_deref()).context("loading mapping files")?;
        let mapping = mappings
            .get(PROJECT_MAPPING)
            .with_context(|| format!("no mapping file defines {PROJECT_MAPPING:?}"))?;
        let calendar = Calendar::load(cfg.mappings.dir.as_deref()).context("loading holiday calendars")?;
        let today = clock.now().with_timezone(&shuiwu_wire::beijing()).date_naive();
        if let Some(warning) = calendar.coverage_warning(today) {
            tracing::warn!("{warning}");
        }
        let policies = PolicySet::load(cfg.mappings.dir.as_deref()).context("loading the policy")?;
        let store = Arc::new(Store::open(&cfg.store.path)?);
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
        if let Some(l) = &cfg.licences {
            let licence_mapping = mappings
                .get(LICENCE_MAPPING)
                .with_context(|| format!("no mapping file defines {LICENCE_MAPPING:?}"))?;
            let client = shuiwu_licences::LicenceClient::new(l.clone(), clock)?;
            syncer = syncer.with_licences(Arc::new(client), licence_mapping);
        }
        Ok(Gateway {
            store,
            mappings,
            calendar,
            rules,
            syncer,
        })
    }
}
