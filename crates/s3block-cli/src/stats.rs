//! `s3block stats MOUNTPOINT`: a running mount's statistics, formatted.
//!
//! A mount publishes its counters as a text file (named `stats` unless the
//! mount was given `--stats-filename`) at the root of its mount point. The
//! file has `[section]` headings and one statistic per line: a name, then
//! the value after two or more spaces (names may contain single spaces, as
//! in `bytes sent      4K`), or after a colon or an equals sign. A JSON
//! object is also accepted. Counts get thousands separators and byte counts
//! a size.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value};

use s3block_core::Error;

use crate::exit::{CliResult, OK};
use crate::format::{self, Align, Table};

/// Default name of the statistics file at the root of a mount.
pub const STATS_FILE: &str = "stats";

/// One statistic: its name and value as the mount wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Name, such as `PUT` or `bytes sent`.
    pub name: String,
    /// Value as text, such as `1234` or `$0.0104 (...)`.
    pub value: String,
}

/// A titled group of statistics; the first may have no title.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// The `[title]`, if any.
    pub title: Option<String>,
    /// Its statistics in file order.
    pub stats: Vec<Stat>,
}

/// Parses the text of a stats file. Blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Vec<Section> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) {
            return from_json(&map);
        }
    }
    let mut sections = vec![Section::default()];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(title) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push(Section { title: Some(title.trim().to_owned()), stats: Vec::new() });
            continue;
        }
        let stat = parse_line(line);
        if let Some(last) = sections.last_mut() {
            last.stats.push(stat);
        }
    }
    sections.retain(|s| s.title.is_some() || !s.stats.is_empty());
    sections
}

fn parse_line(line: &str) -> Stat {
    let bytes = line.as_bytes();
    let wide_gap =
        (1..bytes.len()).find(|&i| bytes[i].is_ascii_whitespace() && bytes[i - 1].is_ascii_whitespace());
    let split = match wide_gap {
        Some(i) => i - 1,
        None => line.find([':', '=']).or_else(|| line.find(char::is_whitespace)).unwrap_or(line.len()),
    };
    let (name, rest) = line.split_at(split);
    let rest = rest.trim_start();
    let value = rest.strip_prefix([':', '=']).unwrap_or(rest);
    Stat {
        name: name.trim().trim_end_matches([':', '=']).trim_end().to_owned(),
        value: value.trim().to_owned(),
    }
}

fn from_json(map: &Map<String, Value>) -> Vec<Section> {
    let mut top = Section::default();
    let mut sections = Vec::new();
    for (key, value) in map {
        match value {
            Value::Object(inner) => {
                let mut section = Section { title: Some(key.clone()), stats: Vec::new() };
                flatten("", inner, &mut section.stats);
                sections.push(section);
            }
            other => top.stats.push(Stat { name: key.clone(), value: json_text(other) }),
        }
    }
    if !top.stats.is_empty() {
        sections.insert(0, top);
    }
    sections
}

fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<Stat>) {
    for (key, value) in map {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            Value::Object(inner) => flatten(&name, inner, out),
            other => out.push(Stat { name, value: json_text(other) }),
        }
    }
}

fn json_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value for people: integers with separators, and for byte counts the
/// size too (`1,048,576 (1M)`).
fn human_value(stat: &Stat) -> String {
    match stat.value.parse::<u64>() {
        Ok(n) if stat.name.contains("bytes") => format!("{} ({})", format::count(n), format::bytes(n)),
        Ok(n) => format::count(n),
        Err(_) => stat.value.clone(),
    }
}

/// A value for JSON: a number when it is one, text otherwise.
fn json_value(value: &str) -> Value {
    if let Ok(n) = value.parse::<u64>() {
        return Value::from(n);
    }
    if let Ok(n) = value.parse::<i64>() {
        return Value::from(n);
    }
    match value.parse::<f64>() {
        Ok(f) if f.is_finite() => Value::from(f),
        _ => Value::from(value),
    }
}

/// Prints the statistics in the file `file_name` of the mount at `mountpoint`.
pub fn run(mountpoint: &Path, file_name: &str, json: bool, out: &mut dyn Write) -> CliResult {
    let path = mountpoint.join(file_name);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: format!("{} (is an s3block volume mounted at {}?)", path.display(), mountpoint.display()),
        source,
    })?;
    let sections = parse(&text);
    if json {
        let mut map = Map::new();
        for section in &sections {
            let stats = section.stats.iter().map(|s| (s.name.clone(), json_value(&s.value)));
            match &section.title {
                Some(title) => {
                    map.insert(title.clone(), Value::Object(stats.collect()));
                }
                None => map.extend(stats),
            }
        }
        serde_json::to_writer_pretty(&mut *out, &Value::Object(map)).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(OK);
    }
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        if let Some(title) = &section.title {
            writeln!(out, "{title}")?;
        }
        let mut table = Table::new(&[("", Align::Left), ("", Align::Left)]);
        for stat in &section.stats {
            table.row(vec![format!("  {}", stat.name), human_value(stat)]);
        }
        // The header row of an untitled two-column table is blank: skip it.
        let rendered = table.render();
        write!(out, "{}", rendered.split_once('\n').map_or("", |(_, rows)| rows))?;
    }
    Ok(OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(sections: &[Section]) -> Vec<(Option<&str>, &str, &str)> {
        sections
            .iter()
            .flat_map(|sec| {
                sec.stats.iter().map(move |s| (sec.title.as_deref(), s.name.as_str(), s.value.as_str()))
            })
            .collect()
    }

    #[test]
    fn parses_the_line_forms() {
        let sections =
            parse("# comment\nhttp_gets   1234\ncache_bytes: 1048576\nhit_ratio = 0.25\n\nstate clean\n");
        assert_eq!(
            flat(&sections),
            vec![
                (None, "http_gets", "1234"),
                (None, "cache_bytes", "1048576"),
                (None, "hit_ratio", "0.25"),
                (None, "state", "clean")
            ]
        );
        let stats = &sections[0].stats;
        assert_eq!(human_value(&stats[0]), "1,234");
        assert_eq!(human_value(&stats[1]), "1,048,576 (1M)");
        assert_eq!(human_value(&stats[3]), "clean");
    }

    #[test]
    fn parses_the_mount_stats_layout() {
        // The layout the mount writes: sections, names padded to 16 columns,
        // names with spaces, values with text after them.
        let text = "[cache]\nhits 7\n[store requests]\nGET             1000\nbulk DELETE     2\n\
                    bytes sent      4K\nrequest cost    $0.0104 (PUT/LIST $0.005/1000, GET $0.0004/1000)\n";
        let sections = parse(text);
        assert_eq!(
            flat(&sections),
            vec![
                (Some("cache"), "hits", "7"),
                (Some("store requests"), "GET", "1000"),
                (Some("store requests"), "bulk DELETE", "2"),
                (Some("store requests"), "bytes sent", "4K"),
                (Some("store requests"), "request cost", "$0.0104 (PUT/LIST $0.005/1000, GET $0.0004/1000)"),
            ]
        );
    }

    #[test]
    fn parses_json_objects() {
        let sections = parse(r#"{"requests": {"puts": 5, "gets": 7}, "state": "clean"}"#);
        assert_eq!(
            flat(&sections),
            vec![(None, "state", "clean"), (Some("requests"), "gets", "7"), (Some("requests"), "puts", "5")]
        );
    }

    #[test]
    fn reads_the_mount_stats_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(STATS_FILE),
            "[store requests]\nPUT             7864320\nbytes_sent 4096\n",
        )
        .unwrap();
        let mut out = Vec::new();
        assert_eq!(run(dir.path(), STATS_FILE, false, &mut out).unwrap(), OK);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("store requests\n"), "{text}");
        assert!(text.contains("7,864,320"), "{text}");
        assert!(text.contains("4,096 (4K)"), "{text}");
        let mut out = Vec::new();
        run(dir.path(), STATS_FILE, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["store requests"]["PUT"], 7_864_320);
    }

    #[test]
    fn a_missing_stats_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(dir.path(), "counters", false, &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::LOCAL_IO);
        assert!(err.to_string().contains("counters"), "{err}");
        assert!(err.to_string().contains("mounted"), "{err}");
    }
}
