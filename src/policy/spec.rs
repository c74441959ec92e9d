//! Policy files: their TOML form and every consistency check, with file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shuiwu_wire::ids::KUNMING_DISTRICTS;
use toml::Spanned;

use super::{Applicant, CategoryRule, Company, Limit, Policy, PolicyError, Table, Works};
use crate::datafiles::line_of;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    policy: Spanned<Header>,
    thresholds: Spanned<Thresholds>,
    #[serde(rename = "category")]
    categories: Vec<Spanned<CategorySpec>>,
    #[serde(rename = "limit")]
    limits: Vec<Spanned<LimitSpec>>,
    mode_11000: Spanned<ModeSpec>,
    fee_exemption: FeeSpec,
    materials: Spanned<MaterialsSpec>,
    districts: Spanned<BTreeMap<String, String>>,
    #[serde(rename = "company")]
    companies: Vec<Spanned<CompanySpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    version: String,
    effective: Spanned<String>,
    title: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    warning_left_numerator: u32,
    warning_left_denominator: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategorySpec {
    id: String,
    name: String,
    applicant: Applicant,
    residential: Option<bool>,
    natures: Option<Vec<String>>,
    building_uses: Option<Vec<String>>,
    max_floor_area_m2: Option<Spanned<String>>,
    max_height_m: Option<Spanned<String>>,
    hazardous_goods: Option<bool>,
    min_diameter_dn_above: Option<i64>,
    min_diameter_dn: Option<i64>,
    max_diameter_dn: Option<i64>,
    max_external_pipe_m: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSpec {
    table: Table,
    category: String,
    external_works: Works,
    survey: Option<u32>,
    connection: Option<u32>,
    #[serde(default)]
    standard_terms: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeSpec {
    category: String,
    table: Table,
    external_works: Works,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeeSpec {
    max_diameter_dn: i64,
    max_external_pipe_m: Spanned<String>,
}

/// Category id → materials; unknown keys are caught by the category check, not by serde
/// (`deny_unknown_fields` does not combine with `flatten`).
#[derive(Deserialize)]
struct MaterialsSpec {
    zero_materials_promised: Vec<String>,
    #[serde(flatten)]
    per_category: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompanySpec {
    id: String,
    name: String,
    managers: Vec<String>,
}

pub fn compile(file: &str, content: &str) -> Result<Policy, PolicyError> {
    let err = |span: Option<std::ops::Range<usize>>, message: String| PolicyError::Invalid {
        file: file.to_string(),
        line: span.map_or(1, |s| line_of(content, s.start)),
        message,
    };
    let spec: FileSpec = toml::from_str(content).map_err(|e| err(e.span(), e.message().to_string()))?;
    let decimal = |s: &Spanned<String>| -> Result<Decimal, PolicyError> {
        Decimal::from_str(s.get_ref().trim())
            .ok()
            .filter(|d| !d.is_sign_negative())
            .ok_or_else(|| {
                err(
                    Some(s.span()),
                    format!("{:?} is not a non-negative decimal", s.get_ref()),
                )
            })
    };

    let header_span = spec.policy.span();
    let header = spec.policy.into_inner();
    let effective = NaiveDate::parse_from_str(header.effective.get_ref(), "%Y-%m-%d").map_err(|_| {
        err(
            Some(header.effective.span()),
            "effective must be a date yyyy-MM-dd".into(),
        )
    })?;
    if header.version.trim().is_empty() {
        return Err(err(Some(header_span), "policy.version must not be empty".into()));
    }

    let t_span = spec.thresholds.span();
    let t = spec.thresholds.into_inner();
    if t.warning_left_denominator == 0
        || t.warning_left_numerator == 0
        || t.warning_left_numerator >= t.warning_left_denominator
    {
        return Err(err(
            Some(t_span),
            "the warning fraction must be between 0 and 1".into(),
        ));
    }

    let mut categories = Vec::new();
    let mut ids = BTreeSet::new();
    for c in &spec.categories {
        let span = c.span();
        let c = c.get_ref();
        if !ids.insert(c.id.clone()) {
            return Err(err(Some(span), format!("category {} is defined twice", c.id)));
        }
        let low = c
            .min_diameter_dn_above
            .map(|d| d + 1)
            .into_iter()
            .chain(c.min_diameter_dn)
            .max();
        if let (Some(low), Some(high)) = (low, c.max_diameter_dn)
            && low > high
        {
            return Err(err(
                Some(span),
                format!(
                    "category {}: the diameter range DN{low}..=DN{high} is empty",
                    c.id
                ),
            ));
        }
        categories.push(CategoryRule {
            id: c.id.clone(),
            name: c.name.clone(),
            applicant: c.applicant,
            residential: c.residential,
            natures: c.natures.clone(),
            building_uses: c.building_uses.clone(),
            max_floor_area_m2: c.max_floor_area_m2.as_ref().map(decimal).transpose()?,
            max_height_m: c.max_height_m.as_ref().map(decimal).transpose()?,
            hazardous_goods: c.hazardous_goods,
            min_diameter_dn_above: c.min_diameter_dn_above,
            min_diameter_dn: c.min_diameter_dn,
            max_diameter_dn: c.max_diameter_dn,
            max_external_pipe_m: c.max_external_pipe_m.as_ref().map(decimal).transpose()?,
            line: line_of(content, span.start),
        });
    }
    if categories.is_empty() {
        return Err(err(None, "the policy defines no category".into()));
    }

    let mut limits = Vec::new();
    let mut seen: BTreeMap<(Table, String), Vec<Works>> = BTreeMap::new();
    for l in &spec.limits {
        let span = l.span();
        let l = l.get_ref();
        if !ids.contains(&l.category) {
            return Err(err(
                Some(span),
                format!("limit for unknown category {}", l.category),
            ));
        }
        let works = seen.entry((l.table, l.category.clone())).or_default();
        let overlaps = works
            .iter()
            .any(|w| *w == l.external_works || *w == Works::Any || l.external_works == Works::Any);
        if overlaps {
            return Err(err(
                Some(span),
                format!(
                    "a second table {:?} row for {} overlaps the first",
                    l.table, l.category
                ),
            ));
        }
        works.push(l.external_works);
        match (l.standard_terms, l.survey, l.connection) {
            (true, None, None) | (false, Some(_), Some(_)) => {}
            _ => {
                return Err(err(
                    Some(span),
                    "a row gives either survey and connection, or standard_terms = true".into(),
                ));
            }
        }
        limits.push(Limit {
            table: l.table,
            category: l.category.clone(),
            works: l.external_works,
            survey: l.survey.filter(|&d| d > 0),
            connection: l.connection,
            standard_terms: l.standard_terms,
        });
    }
    // Every category needs rows in both tables covering both cases of external works.
    for c in &categories {
        for table in [Table::A, Table::B] {
            let works = seen.get(&(table, c.id.clone())).cloned().unwrap_or_default();
            let covered =
                works.contains(&Works::Any) || (works.contains(&Works::None) && works.contains(&Works::Yes));
            if !covered {
                return Err(PolicyError::Invalid {
                    file: file.to_string(),
                    line: c.line,
                    message: format!(
                        "category {} has no table {table:?} row for every case of external works",
                        c.id
                    ),
                });
            }
        }
    }

    let m_span = spec.mode_11000.span();
    let m = spec.mode_11000.into_inner();
    if !ids.contains(&m.category) || m.external_works == Works::Any {
        return Err(err(
            Some(m_span),
            "mode_11000 needs a known category and external_works none or yes".into(),
        ));
    }

    let fee_pipe = decimal(&spec.fee_exemption.max_external_pipe_m)?;

    let mat_span = spec.materials.span();
    let materials = spec.materials.into_inner();
    for (category, items) in &materials.per_category {
        if !ids.contains(category) {
            return Err(err(
                Some(mat_span.clone()),
                format!("materials for unknown category {category}"),
            ));
        }
        if let Some(bad) = items
            .iter()
            .find(|i| !crate::materials::ITEMS.contains(&i.as_str()))
        {
            return Err(err(
                Some(mat_span.clone()),
                format!(
                    "unknown material {bad:?} (known: {})",
                    crate::materials::ITEMS.join(", ")
                ),
            ));
        }
    }
    for c in &categories {
        if !materials.per_category.contains_key(&c.id) {
            return Err(err(
                Some(mat_span.clone()),
                format!("no materials listed for category {}", c.id),
            ));
        }
    }
    if let Some(bad) = materials
        .zero_materials_promised
        .iter()
        .find(|c| !ids.contains(*c))
    {
        return Err(err(
            Some(mat_span),
            format!("zero_materials_promised names unknown category {bad}"),
        ));
    }

    let mut companies = BTreeMap::new();
    for c in &spec.companies {
        let span = c.span();
        let c = c.get_ref();
        if c.managers.is_empty() {
            return Err(err(
                Some(span),
                format!("company {} has no customer manager", c.id),
            ));
        }
        if companies
            .insert(
                c.id.clone(),
                Company {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    managers: c.managers.clone(),
                },
            )
            .is_some()
        {
            return Err(err(Some(span), format!("company {} is defined twice", c.id)));
        }
    }
    let d_span = spec.districts.span();
    let districts = spec.districts.into_inner();
    for (code, name) in KUNMING_DISTRICTS {
        match districts.get(code) {
            None => {
                return Err(err(
                    Some(d_span),
                    format!("district {code} ({name}) has no company"),
                ));
            }
            Some(company) if !companies.contains_key(company) => {
                return Err(err(
                    Some(d_span),
                    format!("district {code} names unknown company {company}"),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = districts
        .keys()
        .find(|k| !KUNMING_DISTRICTS.iter().any(|(c, _)| c == k))
    {
        return Err(err(Some(d_span), format!("{extra} is not a Kunming district")));
    }

    Ok(Policy {
        version: header.version,
        effective,
        title: header.title,
        file: file.to_string(),
        sha256: hex::encode(Sha256::digest(content.as_bytes())),
        content: content.to_string(),
        warning_left: (t.warning_left_numerator, t.warning_left_denominator),
        categories,
        limits,
        mode_11000: (m.category, m.table, m.external_works),
        fee_max_diameter_dn: spec.fee_exemption.max_diameter_dn,
        fee_max_external_pipe_m: fee_pipe,
        materials: materials.per_category,
        zero_materials_promised: materials.zero_materials_promised,
        districts,
        companies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = include_str!("../../mappings/policy/2022.toml");

    fn line_with(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn the_2022_policy_loads() {
        let p = compile("policy/2022.toml", FILE).unwrap();
        assert_eq!(p.version, "2022");
        assert_eq!(p.effective, NaiveDate::from_ymd_opt(2022, 4, 30).unwrap());
        assert_eq!(p.categories.len(), 5);
        assert_eq!(p.limits.len(), 16);
        assert_eq!(p.warning_left, (1, 3));
    }

    #[test]
    fn a_category_without_a_row_is_refused_at_its_line() {
        // Drop table B's rows for general.
        let text = FILE.replace(
            "[[limit]]\ntable = \"B\"\ncategory = \"general\"\nexternal_works = \"none\"\nsurvey = 0\nconnection = 2\n",
            "",
        );
        assert_ne!(text, FILE);
        let e = compile("policy/2022.toml", &text).unwrap_err();
        let line = line_with(&text, "id = \"general\"") - 1;
        assert_eq!(
            e.to_string(),
            format!(
                "policy/2022.toml:{line}: category general has no table B row for every case of external works"
            )
        );
    }

    #[test]
    fn overlapping_rows_and_empty_ranges_are_refused() {
        let text = FILE.replacen(
            "external_works = \"none\"\nsurvey = 1\nconnection = 1",
            "external_works = \"any\"\nsurvey = 1\nconnection = 1",
            1,
        );
        let e = compile("policy/2022.toml", &text).unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
        let text = FILE.replacen("min_diameter_dn_above = 40", "min_diameter_dn_above = 200", 1);
        let e = compile("policy/2022.toml", &text).unwrap_err().to_string();
        assert!(e.contains("DN201..=DN200 is empty"), "{e}");
        let text = FILE.replace("\"530181\" = \"qingyuan\"\n", "");
        let e = compile("policy/2022.toml", &text).unwrap_err().to_string();
        assert!(e.contains("530181"), "{e}");
        let text = FILE.replace(
            "max_floor_area_m2 = \"10000\"",
            "max_floor_area_m2 = \"ten thousand\"",
        );
        let e = compile("policy/2022.toml", &text).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "policy/2022.toml:{}:",
                line_with(FILE, "max_floor_area_m2")
            )),
            "{e}"
        );
    }
}
