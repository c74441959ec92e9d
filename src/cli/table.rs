//! Plain text tables whose columns line up with Chinese text (two columns per character).

use unicode_width::UnicodeWidthStr;

/// Prints a table: a header row, a rule, then the rows.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    super::emit(&render(headers, rows));
}

pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.width()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.width());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                let width = widths.get(i).copied().unwrap_or(0);
                out.push_str(&" ".repeat(width.saturating_sub(cell.width()) + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Cuts text to at most `max` display columns, marking the cut with `…`.
pub fn clip(text: &str, max: usize) -> String {
    if text.width() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    for c in text.chars() {
        if out.width() + unicode_width::UnicodeWidthChar::width(c).unwrap_or(0) >= max {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_wide_characters() {
        let t = super::render(
            &["id", "name"],
            &[vec!["1".into(), "西山区".into()], vec!["22".into(), "x".into()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "id  name");
        assert_eq!(lines[2], "1   西山区");
        assert_eq!(super::clip("昆明某科技有限公司", 9), "昆明某科…");
    }
}
