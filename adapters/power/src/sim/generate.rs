//! Power-origin applications as the power platform takes them, generated from a seed: the
//! cases the water side must tell apart.
//!
//! Out of every ten: four households (a person with a valid identity number, DN15 or DN20, no
//! project code), three companies naming a project the approval platform knows, one company
//! naming a project code it does not know, one company giving no project code, and one
//! application whose site is outside Kunming.

use chrono::{DateTime, Duration, Utc};
use shuiwu_wire::ids::{KUNMING_DISTRICTS, credit_code_check, id_card_check};

use crate::wire::{Applicant, ApplicantKind, Application, Origin, PowerNeeds, PowerStatus, Site, WaterNeeds};

/// SplitMix64 step, the simulators' shared way to draw from a seed.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Draw(u64);

impl Draw {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = mix(self.0);
        self.0 % n.max(1)
    }
}

/// `count` power-origin applications submitted over the `days` before `now`. `known` are
/// project codes the approval platform has (companies name some of them).
pub fn power_origin(
    seed: u64,
    count: u64,
    known: &[String],
    now: DateTime<Utc>,
    days: i64,
) -> Vec<Application> {
    let mut d = Draw(seed ^ 0x005E_ED0F_90E7);
    (0..count)
        .map(|i| {
            let kind = i % 10;
            let district = KUNMING_DISTRICTS[d.below(KUNMING_DISTRICTS.len() as u64) as usize].0;
            let region = if kind == 9 {
                "530402".to_string()
            } else {
                district.to_string()
            };
            let submitted = now - Duration::minutes(d.below((days.max(1) * 24 * 60) as u64) as i64);
            let household = kind < 4;
            let project_code = match kind {
                4..=6 if !known.is_empty() => Some(known[d.below(known.len() as u64) as usize].clone()),
                7 => Some(format!("2025-{district}-47-01-{:06}", 900_000 + i)),
                _ => None,
            };
            let applicant = if household {
                let first17 = format!(
                    "{district}19{:02}0{}1{}{:03}",
                    50 + d.below(50),
                    1 + d.below(9),
                    d.below(9),
                    d.below(999)
                );
                let check = id_card_check(&first17).unwrap_or('0');
                Applicant {
                    kind: ApplicantKind::Person,
                    name: format!("住户{i}"),
                    credit_code: Some(format!("{first17}{check}")),
                    contact_name: None,
                    contact_phone: Some(format!("139{:08}", d.below(100_000_000))),
                }
            } else {
                let first17 = format!("91{district}MA{:07}", d.below(10_000_000));
                let check = credit_code_check(&first17).unwrap_or('0');
                Applicant {
                    kind: ApplicantKind::Organisation,
                    name: format!("昆明某{i}有限公司"),
                    credit_code: Some(format!("{first17}{check}")),
                    contact_name: Some(format!("联系人{i}")),
                    contact_phone: Some(format!("138{:08}", d.below(100_000_000))),
                }
            };
            Application {
                application_id: String::new(),
                external_id: None,
                origin: Origin::Power,
                status: PowerStatus::Submitted,
                water_status: None,
                version: 1,
                project_code,
                project_name: None,
                applicant,
                site: Site {
                    region_code: region,
                    address: Some(format!("昆明市某某路{}号", 1 + d.below(300))),
                },
                power: Some(PowerNeeds {
                    capacity_kva: Some(if household {
                        8.0
                    } else {
                        100.0 * (1 + d.below(8)) as f64
                    }),
                }),
                water: Some(WaterNeeds {
                    diameter_dn: Some(if household {
                        [15, 20][d.below(2) as usize]
                    } else {
                        [25, 40, 50, 100][d.below(4) as usize]
                    }),
                    use_: Some(if household { "生活" } else { "生产" }.into()),
                    daily_m3: Some(if household { 0.5 } else { 20.0 }),
                }),
                submitted_at: submitted,
                updated_at: submitted,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cases_come_in_their_proportions_with_valid_identifiers() {
        let now = Utc::now();
        let known = vec!["2022-530112-47-01-587143".to_string()];
        let apps = power_origin(7, 100, &known, now, 10);
        assert_eq!(apps.len(), 100);
        let households: Vec<_> = apps
            .iter()
            .filter(|a| a.applicant.kind == ApplicantKind::Person)
            .collect();
        assert_eq!(households.len(), 40);
        for h in &households {
            let id = h.applicant.credit_code.as_deref().unwrap();
            shuiwu_wire::ids::validate_id_card(id).unwrap();
            assert!(h.project_code.is_none());
            assert!(matches!(
                h.water.as_ref().and_then(|w| w.diameter_dn),
                Some(15 | 20)
            ));
        }
        for c in apps
            .iter()
            .filter(|a| a.applicant.kind == ApplicantKind::Organisation)
        {
            shuiwu_wire::ids::validate_credit_code(c.applicant.credit_code.as_deref().unwrap()).unwrap();
        }
        assert_eq!(
            apps.iter()
                .filter(|a| a.project_code.as_deref() == Some(&known[0]))
                .count(),
            30
        );
        assert_eq!(
            apps.iter().filter(|a| a.site.region_code == "530402").count(),
            10,
            "outside Kunming"
        );
        assert_eq!(
            power_origin(7, 100, &known, now, 10),
            apps,
            "the same seed gives the same applications"
        );
    }
}
