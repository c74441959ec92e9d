//! Deterministic generated projects.
//!
//! Project `i` of a generator is a pure function of `(seed, i)`: the simulator keeps no per-project
//! state for projects nobody changed, so it serves 100,000 projects in constant memory, and two
//! runs with one seed see the same platform. The mix covers every policy category, every
//! threshold edge, the three spellings of `JSKJ`, empty figures, withdrawn projects, sites outside
//! Kunming and about 2 % malformed records.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use shuiwu_wire::format_beijing;
use shuiwu_wire::ids::{CREDIT_ALPHABET, KUNMING_DISTRICTS, credit_code_check};

/// Which projects a generator makes: `count` projects whose base `GXSJ` spread evenly over
/// `[start, end)`, so that many share one second when `count` is large.
#[derive(Debug, Clone)]
pub struct Generator {
    pub seed: u64,
    pub count: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// How a generated record breaks the contract's formats, when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformation {
    CreditCheck,
    NegativeArea,
    UnknownUse,
    FutureCodeYear,
    BadDiameter,
    BadHeight,
}

/// splitmix64: a fast, well-mixed, seedable hash; enough for test data.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stream of pseudo-random choices for one project.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

const SURNAMES: &[&str] = &[
    "张", "王", "李", "赵", "刘", "陈", "杨", "黄", "周", "吴", "段", "普",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "敏", "静", "磊", "洋", "丽", "强", "云华", "海燕", "建国", "春梅",
];
const COMPANIES: &[&str] = &["科技", "建设", "实业", "物流", "置业", "食品", "医药", "机械"];
const OUTSIDE: &[&str] = &["530302", "532301", "530402", "532901"];

impl Generator {
    /// The base update time of project `i`, truncated to the second.
    pub fn gxsj(&self, i: u64) -> DateTime<Utc> {
        let span_ms = (self.end - self.start).num_milliseconds().max(0) as u128;
        let offset_ms = span_ms * i as u128 / self.count.max(1) as u128;
        let t = self.start + Duration::milliseconds(offset_ms as i64);
        t - Duration::nanoseconds(t.timestamp_subsec_nanos() as i64)
    }

    /// The first index whose base `GXSJ` is at or after `t`.
    pub fn first_at_or_after(&self, t: DateTime<Utc>) -> u64 {
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.gxsj(mid) < t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn draw(&self, i: u64) -> Draw {
        Draw(mix(self.seed ^ mix(i.wrapping_add(0x5157_5755))))
    }

    /// The malformation of project `i`, if it is one of the ~2 % malformed records.
    pub fn malformation(&self, i: u64) -> Option<Malformation> {
        let mut d = self.draw(i);
        d.next();
        if d.below(50) != 0 {
            return None;
        }
        Some(*d.pick(&[
            Malformation::CreditCheck,
            Malformation::NegativeArea,
            Malformation::UnknownUse,
            Malformation::FutureCodeYear,
            Malformation::BadDiameter,
            Malformation::BadHeight,
        ]))
    }

    /// The project code of project `i`. The serial is `i` itself, so codes are unique and the
    /// simulator finds a project from its code without an index.
    pub fn xmdm(&self, i: u64) -> String {
        let mut d = self.draw(i);
        d.next();
        d.next();
        let region = KUNMING_DISTRICTS[d.below(KUNMING_DISTRICTS.len() as u64) as usize].0;
        let year = if self.malformation(i) == Some(Malformation::FutureCodeYear) {
            2099
        } else {
            2019 + d.below(7)
        };
        let industry = 10 + d.below(80);
        let kind = 1 + d.below(4);
        format!("{year}-{region}-{industry:02}-{kind:02}-{i:06}")
    }

    /// The index of a generated project code, if it is one of this generator's.
    pub fn index_of(&self, xmdm: &str) -> Option<u64> {
        let serial: u64 = xmdm.rsplit('-').next()?.parse().ok()?;
        (serial < self.count && self.xmdm(serial) == xmdm).then_some(serial)
    }

    /// The base version number of project `i`.
    pub fn bbh(&self, i: u64) -> u64 {
        1 + mix(self.seed ^ i.wrapping_mul(31)) % 4
    }

    /// The full detail record of project `i`'s base version.
    pub fn project(&self, i: u64) -> Value {
        let mut d = self.draw(i);
        d.next();
        d.next();
        let region = KUNMING_DISTRICTS[d.below(KUNMING_DISTRICTS.len() as u64) as usize].0;
        let malformed = self.malformation(i);
        let xmdm = self.xmdm(i);
        let outside = d.percent(3);
        let site = if outside { *d.pick(OUTSIDE) } else { region };
        let authority = if outside { "530100" } else { region };
        let withdrawn = d.percent(3);

        let gcyt = *d.pick(&[
            "0201", "0201", "0201", "0202", "0202", "0101", "0101", "0301", "0401", "0501", "0900",
        ]);
        let gcyt = if malformed == Some(Malformation::UnknownUse) {
            "0999"
        } else {
            gcyt
        };
        let area = *d.pick(&[
            "8650.50", "10000", "10000.00", "10000.01", "3200.5", "12500", "", "560", "9999.99",
        ]);
        let area = if malformed == Some(Malformation::NegativeArea) {
            "-120.5"
        } else {
            area
        };
        let height = *d.pick(&["18.6", "24", "24.0", "24.1", "", "12", "36.5", "23.9"]);
        let height = if malformed == Some(Malformation::BadHeight) {
            "约20米"
        } else {
            height
        };
        let hazardous = if d.percent(8) { "1" } else { "0" };
        let diameter = *d.pick(&[
            "DN40", "40", "Φ40", "DN25", "DN50", "DN100", "DN200", "DN250", "DN15", "DN20", "DN32", "DN40",
        ]);
        let diameter = if malformed == Some(Malformation::BadDiameter) {
            "DN四十"
        } else {
            diameter
        };
        let pipe = *d.pick(&["0", "120", "200", "201", "", "35", "0", "450"]);
        let use_ = *d.pick(&["生产", "生活", "消防", "施工临时"]);
        let stage = 1 + d.below(4);
        // A bad diameter needs a water request to be bad in.
        let stage = if malformed == Some(Malformation::BadDiameter) {
            stage.max(2)
        } else {
            stage
        };
        let nature = 1 + d.below(3);
        let company = format!(
            "昆明{}{}有限公司",
            ["滇池", "金马", "碧鸡", "螺峰", "盘龙", "呈贡"][d.below(6) as usize],
            d.pick(COMPANIES)
        );
        let mut credit = format!("9153{}", &region[2..]);
        for _ in 0..9 {
            credit.push(CREDIT_ALPHABET[d.below(31) as usize] as char);
        }
        let check = credit_code_check(&credit).unwrap_or('0');
        if malformed == Some(Malformation::CreditCheck) {
            let wrong = CREDIT_ALPHABET
                .iter()
                .map(|&c| c as char)
                .find(|&c| c != check)
                .unwrap_or('0');
            credit.push(wrong);
        } else {
            credit.push(check);
        }
        let contact = format!("{}{}", d.pick(SURNAMES), d.pick(GIVEN));
        let phone = format!(
            "1{}{:09}",
            [3, 5, 8, 9][d.below(4) as usize],
            d.below(1_000_000_000)
        );
        let power = d.percent(40);
        let bbh = self.bbh(i);
        let gxsj = format_beijing(self.gxsj(i));

        let kind_name = *d.pick(&["标准厂房建设", "仓储中心", "住宅小区", "综合楼", "生产线技改"]);
        let mut record = json!({
            "XMDM": xmdm,
            "XMMC": format!("{}{}项目", company.trim_end_matches("有限公司"), kind_name),
            "XMLX": *d.pick(&["01", "01", "01", "02", "03"]),
            "JSXZ": nature.to_string(),
            "GCYT": gcyt,
            "LXLX": (1 + d.below(3)).to_string(),
            "XZQHDM": authority,
            "JSDDXZQH": site,
            "JSDD": format!("昆明市{}某某路{}号", region_name(site), 1 + d.below(300)),
            "JZMJ": area,
            "JZGD": height,
            "SFSJWXP": hazardous,
            "SFJYDFX": if d.percent(30) { "1" } else { "0" },
            "JSDW": company,
            "JSDWDM": credit,
            "JSDWLXR": {"LXR": contact, "LXDH": phone},
            "SPJD": stage.to_string(),
            "SPJG": approvals(&mut d, region, stage),
            "FJ": attachments(&mut d, i, stage),
            "ZT": if withdrawn { "0" } else { "1" },
            "BBH": bbh,
            "GXSJ": gxsj,
        });
        if stage >= 2 {
            let mut water = json!({"JSKJ": diameter, "YSXZ": use_, "YJRYSL": format!("{}.0", 5 + d.below(200)), "WXGDCD": pipe});
            if d.percent(5) {
                // Migrated records sometimes lack the use entirely.
                if let Some(o) = water.as_object_mut() {
                    o.remove("YSXZ");
                }
            }
            let mut block = json!({"YS": water});
            if power {
                let capacity = *d.pick(&["200", "400", "630", "1000"]);
                block["YD"] = json!({"BZRL": capacity});
            }
            record["SZGYBZ"] = block;
        }
        record
    }
}

fn region_name(code: &str) -> &'static str {
    KUNMING_DISTRICTS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
        .unwrap_or("（市外）")
}

fn approvals(d: &mut Draw, region: &str, stage: u64) -> Value {
    let mut list = vec![];
    let year = 2022 + d.below(4);
    let number = format!("{region}{year}{:05}", d.below(100_000));
    list.push(json!({"SXMC": "建设用地规划许可证核发", "PFWH": number, "PFRQ": format!("{year}-0{}-1{}", 1 + d.below(9), d.below(10)), "ZZBH": number, "ZZLXDM": "JSYDGHXKZ"}));
    if stage >= 2 {
        let number = format!("{region}{year}{:05}", d.below(100_000));
        list.push(json!({"SXMC": "建设工程规划许可证核发", "PFWH": number, "PFRQ": format!("{year}-1{}-0{}", d.below(3), 1 + d.below(9)), "ZZBH": number, "ZZLXDM": "JSGCGHXKZ"}));
    }
    Value::Array(list)
}

/// The bytes of an attachment; its hash is what the detail record announces.
pub fn attachment_content(fjid: &str) -> Vec<u8> {
    format!("%PDF-1.4\n% simulated attachment {fjid}\n%%EOF\n").into_bytes()
}

fn attachments(d: &mut Draw, i: u64, stage: u64) -> Value {
    use sha2::{Digest, Sha256};
    let mut list = vec![];
    let mut add = |kind: &str, name: &str, n: u64| {
        let fjid = format!("{:016x}{:016x}", mix(i ^ 0xA77A), n);
        let content = attachment_content(&fjid);
        list.push(json!({
            "FJID": fjid,
            "FJMC": name,
            "FJLX": kind,
            "FJDX": content.len(),
            "SHA256": hex::encode(Sha256::digest(&content)),
        }));
    };
    if stage >= 2 && d.percent(85) {
        add("ZPMT", "总平面图.pdf", 1);
    }
    if stage >= 2 && d.percent(60) {
        add("GPSJ", "给排水设计说明.pdf", 2);
    }
    if d.percent(20) {
        add("QT", "其他材料.pdf", 3);
    }
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator() -> Generator {
        Generator {
            seed: 7,
            count: 10_000,
            start: Utc::now() - Duration::days(30),
            end: Utc::now(),
        }
    }

    #[test]
    fn deterministic_and_indexable() {
        let g = generator();
        for i in [0, 1, 17, 9_999] {
            assert_eq!(g.project(i), g.project(i));
            assert_eq!(g.index_of(&g.xmdm(i)), Some(i));
        }
        assert_eq!(g.index_of("2022-530112-47-01-587143"), None);
    }

    #[test]
    fn times_are_monotone_and_searchable() {
        let g = generator();
        for i in 1..g.count {
            assert!(g.gxsj(i - 1) <= g.gxsj(i));
        }
        let t = g.gxsj(5_000);
        let first = g.first_at_or_after(t);
        assert_eq!(g.gxsj(first), t);
        assert!(first == 0 || g.gxsj(first - 1) < t);
    }

    #[test]
    fn the_mix_covers_the_edges() {
        let g = generator();
        let docs: Vec<Value> = (0..2_000).map(|i| g.project(i)).collect();
        let has = |f: &dyn Fn(&Value) -> bool| docs.iter().any(f);
        assert!(has(&|p| p["JZMJ"] == "10000.01"));
        assert!(has(&|p| p["JZGD"] == "24.1"));
        assert!(has(&|p| p["SZGYBZ"]["YS"]["JSKJ"] == "Φ40"));
        assert!(has(&|p| p["SZGYBZ"]["YS"]["JSKJ"] == "40"));
        assert!(has(&|p| p["SZGYBZ"]["YS"]["WXGDCD"] == ""));
        assert!(has(&|p| p["ZT"] == "0"));
        assert!(has(&|p| p["JSDDXZQH"] == "530302" || p["JSDDXZQH"] == "532301"));
        let malformed = (0..2_000).filter(|&i| g.malformation(i).is_some()).count();
        assert!((20..=70).contains(&malformed), "{malformed} malformed of 2000");
    }
}
