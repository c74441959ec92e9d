//! The identifier formats of `contracts/ids.md`.
//!
//! They live here, beside the wire, because both sides need them: the gateway validates what the
//! platforms send, and the simulators must generate codes that are valid (and, on purpose,
//! some that are not).

use chrono::{Datelike, NaiveDate};

/// The 31 characters of a unified social credit code, in value order.
pub const CREDIT_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const CREDIT_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: &[u8; 11] = b"10X98765432";

/// Why an identifier is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected {expected} characters, found {found}")]
    Length { expected: usize, found: usize },
    #[error("character {position} ({found:?}) is not allowed here")]
    Character { position: usize, found: char },
    #[error("check character is {found:?}, expected {expected:?}")]
    Check { found: char, expected: char },
    #[error("{0}")]
    Format(String),
}

/// The check character for the first 17 characters of a credit code, or `None` when one of
/// them is outside the alphabet.
pub fn credit_code_check(first17: &str) -> Option<char> {
    let mut sum = 0u32;
    for (i, c) in first17.bytes().enumerate().take(17) {
        let value = CREDIT_ALPHABET.iter().position(|&a| a == c)? as u32;
        sum += value * CREDIT_WEIGHTS[i];
    }
    let c = (31 - sum % 31) % 31;
    Some(CREDIT_ALPHABET[c as usize] as char)
}

/// Validates a 统一社会信用代码 (GB 32100-2015).
pub fn validate_credit_code(code: &str) -> Result<(), IdError> {
    let chars: Vec<char> = code.chars().collect();
    if chars.len() != 18 {
        return Err(IdError::Length {
            expected: 18,
            found: chars.len(),
        });
    }
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii() || !CREDIT_ALPHABET.contains(&(c as u8)) {
            return Err(IdError::Character {
                position: i + 1,
                found: c,
            });
        }
    }
    // All 18 characters are ASCII, so byte slicing is on character boundaries.
    let expected = credit_code_check(&code[..17]).ok_or_else(|| IdError::Format("bad character".into()))?;
    if chars[17] != expected {
        return Err(IdError::Check {
            found: chars[17],
            expected,
        });
    }
    Ok(())
}

/// The check character of a resident identity number's first 17 digits.
pub fn id_card_check(first17: &str) -> Option<char> {
    let mut sum = 0u32;
    for (i, c) in first17.chars().enumerate().take(17) {
        sum += c.to_digit(10)? * ID_WEIGHTS[i];
    }
    Some(ID_CHECK[(sum % 11) as usize] as char)
}

/// Validates a 居民身份证号 (GB 11643-1999), including its birth date.
pub fn validate_id_card(number: &str) -> Result<(), IdError> {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() != 18 {
        return Err(IdError::Length {
            expected: 18,
            found: chars.len(),
        });
    }
    for (i, &c) in chars[..17].iter().enumerate() {
        if !c.is_ascii_digit() {
            return Err(IdError::Character {
                position: i + 1,
                found: c,
            });
        }
    }
    let birth = &number[6..14];
    if NaiveDate::parse_from_str(birth, "%Y%m%d").is_err() {
        return Err(IdError::Format(format!("birth date {birth} is not a real date")));
    }
    // The first 17 are ASCII digits (checked above).
    let expected = id_card_check(&number[..17]).ok_or_else(|| IdError::Format("bad digit".into()))?;
    if chars[17] != expected {
        return Err(IdError::Check {
            found: chars[17],
            expected,
        });
    }
    Ok(())
}

/// Validates a 项目代码 `YYYY-AAAAAA-BB-CC-NNNNNN`; the year may not be before 2000 nor after
/// `current_year`.
pub fn validate_project_code(code: &str, current_year: i32) -> Result<(), IdError> {
    let parts: Vec<&str> = code.split('-').collect();
    let widths = [4, 6, 2, 2, 6];
    if parts.len() != 5
        || parts
            .iter()
            .zip(widths)
            .any(|(p, w)| p.len() != w || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(IdError::Format(format!(
            "{code:?} is not YYYY-AAAAAA-BB-CC-NNNNNN"
        )));
    }
    // Four ASCII digits always parse.
    let year: i32 = parts[0].parse().map_err(|_| IdError::Format("year".into()))?;
    if !(2000..=current_year).contains(&year) {
        return Err(IdError::Format(format!(
            "year {year} is outside 2000..={current_year}"
        )));
    }
    Ok(())
}

/// The year of a date, for [`validate_project_code`].
pub fn year_of(date: NaiveDate) -> i32 {
    date.year()
}

/// Kunming's districts (a site is always one of these) with their names.
pub const KUNMING_DISTRICTS: [(&str, &str); 14] = [
    ("530102", "五华区"),
    ("530103", "盘龙区"),
    ("530111", "官渡区"),
    ("530112", "西山区"),
    ("530113", "东川区"),
    ("530114", "呈贡区"),
    ("530115", "晋宁区"),
    ("530124", "富民县"),
    ("530125", "宜良县"),
    ("530126", "石林彝族自治县"),
    ("530127", "嵩明县"),
    ("530128", "禄劝彝族苗族自治县"),
    ("530129", "寻甸回族彝族自治县"),
    ("530181", "安宁市"),
];

/// The city's own code: a registering authority may be the city itself.
pub const KUNMING_CITY: &str = "530100";

pub fn is_kunming_district(code: &str) -> bool {
    KUNMING_DISTRICTS.iter().any(|(c, _)| *c == code)
}

pub fn is_kunming_authority(code: &str) -> bool {
    code == KUNMING_CITY || is_kunming_district(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_codes() {
        // A published example of GB 32100 (the check character is the standard's own).
        assert_eq!(validate_credit_code("91350100M000100Y43"), Ok(()));
        assert!(matches!(
            validate_credit_code("91350100M000100Y44"),
            Err(IdError::Check { expected: '3', .. })
        ));
        assert!(matches!(
            validate_credit_code("91350100M000100Y4"),
            Err(IdError::Length { .. })
        ));
        assert!(matches!(
            validate_credit_code("91350100M000100I43"),
            Err(IdError::Character { position: 16, .. })
        ));
    }

    #[test]
    fn id_cards() {
        // GB 11643's own example.
        assert_eq!(validate_id_card("11010519491231002X"), Ok(()));
        assert!(matches!(
            validate_id_card("110105194912310021"),
            Err(IdError::Check { .. })
        ));
        assert!(matches!(
            validate_id_card("110105194902300026"),
            Err(IdError::Format(_))
        ));
    }

    #[test]
    fn project_codes() {
        assert_eq!(validate_project_code("2022-530112-47-01-587143", 2026), Ok(()));
        assert!(validate_project_code("1999-530112-47-01-587143", 2026).is_err());
        assert!(validate_project_code("2027-530112-47-01-587143", 2026).is_err());
        assert!(validate_project_code("2022-530112-47-01-58714", 2026).is_err());
        assert!(validate_project_code("2022-53011a-47-01-587143", 2026).is_err());
        assert!(validate_project_code("2022_530112-47-01-587143", 2026).is_err());
    }
}
