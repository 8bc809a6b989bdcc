//! `s3block stats MOUNTPOINT`: a running mount's statistics, formatted.
//!
//! A mount publishes its counters as a text file named `stats` at the root
//! of its mount point (as s3backer does). Each line is a name and a value,
//! separated by spaces, a colon or an equals sign; a JSON object is also
//! accepted. Counts get thousands separators and byte counts a size.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value};

use s3block_core::Error;

use crate::exit::{CliResult, OK};
use crate::format::{self, Align, Table};

/// Name of the statistics file at the root of a mount.
pub const STATS_FILE: &str = "stats";

/// One statistic: its name and value as the mount wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Name, such as `http_gets`.
    pub name: String,
    /// Value as text, such as `1234` or `0.25s`.
    pub value: String,
}

/// Parses the text of a stats file. Blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Vec<Stat> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) {
            let mut stats = Vec::new();
            flatten("", &map, &mut stats);
            return stats;
        }
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let end = line.find(|c: char| c.is_whitespace() || c == ':' || c == '=').unwrap_or(line.len());
            let (name, rest) = line.split_at(end);
            let rest = rest.trim_start();
            let value = rest.strip_prefix([':', '=']).unwrap_or(rest);
            Stat { name: name.trim().to_owned(), value: value.trim().to_owned() }
        })
        .collect()
}

fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<Stat>) {
    for (key, value) in map {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            Value::Object(inner) => flatten(&name, inner, out),
            Value::String(s) => out.push(Stat { name, value: s.clone() }),
            other => out.push(Stat { name, value: other.to_string() }),
        }
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

/// Prints the statistics of the mount at `mountpoint`.
pub fn run(mountpoint: &Path, json: bool, out: &mut dyn Write) -> CliResult {
    let path = mountpoint.join(STATS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: format!("{} (is an s3block volume mounted at {}?)", path.display(), mountpoint.display()),
        source,
    })?;
    let stats = parse(&text);
    if json {
        let map: Map<String, Value> = stats.iter().map(|s| (s.name.clone(), json_value(&s.value))).collect();
        serde_json::to_writer_pretty(&mut *out, &Value::Object(map)).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        let mut table = Table::new(&[("statistic", Align::Left), ("value", Align::Right)]);
        for stat in &stats {
            table.row(vec![stat.name.clone(), human_value(stat)]);
        }
        write!(out, "{}", table.render())?;
    }
    Ok(OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_line_forms() {
        let stats = parse(
            "# comment\nhttp_gets   1234\ncache_bytes: 1048576\nhit_ratio = 0.25\n\nstate clean mounted\n",
        );
        let pairs: Vec<(&str, &str)> = stats.iter().map(|s| (s.name.as_str(), s.value.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("http_gets", "1234"),
                ("cache_bytes", "1048576"),
                ("hit_ratio", "0.25"),
                ("state", "clean mounted")
            ]
        );
        assert_eq!(human_value(&stats[0]), "1,234");
        assert_eq!(human_value(&stats[1]), "1,048,576 (1M)");
        assert_eq!(human_value(&stats[3]), "clean mounted");
    }

    #[test]
    fn parses_json_objects() {
        let stats = parse(r#"{"requests": {"puts": 5, "gets": 7}, "state": "clean"}"#);
        assert!(stats.contains(&Stat { name: "requests.puts".into(), value: "5".into() }));
        assert!(stats.contains(&Stat { name: "state".into(), value: "clean".into() }));
        assert_eq!(stats.len(), 3);
    }

    #[test]
    fn reads_the_mount_stats_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATS_FILE), "puts 7864320\nbytes_sent 4096\n").unwrap();
        let mut out = Vec::new();
        assert_eq!(run(dir.path(), false, &mut out).unwrap(), OK);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("7,864,320"), "{text}");
        assert!(text.contains("4,096 (4K)"), "{text}");
        let mut out = Vec::new();
        run(dir.path(), true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["puts"], 7_864_320);
    }

    #[test]
    fn a_missing_stats_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(dir.path(), false, &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::LOCAL_IO);
        assert!(err.to_string().contains("stats"), "{err}");
        assert!(err.to_string().contains("mounted"), "{err}");
    }
}
