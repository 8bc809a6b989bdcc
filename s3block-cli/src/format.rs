//! Human-readable output: aligned tables, counts with thousands separators,
//! dollar amounts and byte sizes.

use std::fmt::Write as _;

/// How a column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: flush left.
    Left,
    /// Numbers: flush right.
    Right,
}

/// A plain-text table: a header row, then rows, columns padded to fit.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these `(header, alignment)` columns.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            headers: columns.iter().map(|(h, _)| (*h).to_owned()).collect(),
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left blank and extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Number of rows added.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each line ending in `\n`.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                match self.aligns[i] {
                    Align::Left => {
                        text.push_str(cell);
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        text.extend(std::iter::repeat_n(' ', pad));
                        text.push_str(cell);
                    }
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        }
        out
    }
}

/// `7864320` as `7,864,320`.
pub fn count(n: u64) -> String {
    s3block_core::format_count(n)
}

/// A dollar amount: cents for amounts of a cent or more (`$78.64`,
/// `$1,234.50`), four decimals below that, and `<$0.0001` for smaller
/// amounts that are not zero.
pub fn money(dollars: f64) -> String {
    if !dollars.is_finite() {
        return "n/a".to_owned();
    }
    if dollars == 0.0 {
        return "$0".to_owned();
    }
    if dollars < 0.0001 {
        return "<$0.0001".to_owned();
    }
    if dollars < 0.01 {
        return format!("${dollars:.4}");
    }
    let cents = (dollars * 100.0).round() as u64;
    format!("${}.{:02}", count(cents / 100), cents % 100)
}

/// A byte count for people, in the largest unit it reaches: exact when it
/// is a whole number of that unit (`256K`, `30G`), otherwise with one
/// decimal (`3.9M`); below 1K in bytes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    let Some(exp) = (1..=UNITS.len() as u32).rev().find(|e| n >> (10 * e) > 0) else {
        return n.to_string();
    };
    let unit = 1u64 << (10 * exp);
    let suffix = UNITS[exp as usize - 1];
    if n.is_multiple_of(unit) {
        format!("{}{suffix}", n / unit)
    } else {
        format!("{:.1}{suffix}", n as f64 / unit as f64)
    }
}

/// Writes `value` as pretty JSON and a newline.
pub fn write_json<T: serde::Serialize>(out: &mut dyn std::io::Write, value: &T) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(7_864_320), "7,864,320");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn money_rounds_to_cents() {
        assert_eq!(money(78.6432), "$78.64");
        assert_eq!(money(1234.5), "$1,234.50");
        assert_eq!(money(0.0), "$0");
        assert_eq!(money(0.0042), "$0.0042");
        assert_eq!(money(0.00001), "<$0.0001");
        assert_eq!(money(f64::NAN), "n/a");
    }

    #[test]
    fn bytes_are_exact_when_possible() {
        assert_eq!(bytes(256 << 10), "256K");
        assert_eq!(bytes(4_096_000), "3.9M");
        assert_eq!(bytes(1000 << 20), "1000M");
        assert_eq!(bytes(30 << 30), "30G");
        assert_eq!(bytes(1000), "1000");
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(u64::MAX), "16.0E");
        assert_eq!(bytes(1536), "1.5K");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&[("name", Align::Left), ("n", Align::Right)]);
        t.row(vec!["a".into(), "1,000".into()]);
        t.row(vec!["longer".into(), "7".into()]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.render(), "name        n\na       1,000\nlonger      7\n");
    }
}
